package builder

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// scanner reads a recipe's base into a tree, hashing every file.
type scanner struct {
	ctx   context.Context
	owner Owner
	// spoolDir holds the temporary file that a tar base's contents are
	// copied to (a tar stream cannot be read in path order).
	spoolDir string
	// progress, if set, is called with the number of entries scanned.
	progress func(entries int64)
	n        int64
}

func (s *scanner) add(t *tree, e *entry) {
	t.entries[e.path] = e
	s.n++
	if s.progress != nil {
		s.progress(s.n)
	}
}

// scanBase reads the base at p, a directory or a tar archive, into t.
func (s *scanner) scanBase(t *tree, p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return s.scanDir(t, p)
	}
	comp := tarCompression(p)
	if comp == "" {
		return fmt.Errorf("%s: not a directory or a .tar, .tar.gz, .tgz or .tar.zst archive", p)
	}
	return s.scanTar(t, p, comp)
}

// scanDir walks the directory dir without following symlinks. Ownership
// comes from the recipe, never from the host; mtimes are ignored.
func (s *scanner) scanDir(t *tree, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	t.closers = append(t.closers, root)
	return fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := s.ctx.Err(); err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := &entry{path: p, perm: unixPerm(info.Mode()), uid: s.owner.UID, gid: s.owner.GID}
		switch {
		case d.IsDir():
			e.typ = typeDir
		case d.Type()&fs.ModeSymlink != 0:
			e.typ, e.perm = typeSymlink, 0o777
			if e.link, err = root.Readlink(p); err != nil {
				return err
			}
		case d.Type().IsRegular():
			e.typ = typeFile
			e.open = func() (io.ReadCloser, error) { return root.Open(p) }
			if e.digest, e.size, err = hashContent(s.ctx, e.open); err != nil {
				return err
			}
		default:
			t.skipped = append(t.skipped, "/"+p)
			return nil
		}
		s.add(t, e)
		return nil
	})
}

// tarCompression returns how the tar archive named name is compressed, by
// its extension: "none", "gzip", "zstd" or "xz"; "" if it is not a tar
// archive.
func tarCompression(name string) string {
	switch {
	case strings.HasSuffix(name, ".tar"):
		return "none"
	case strings.HasSuffix(name, ".tar.gz"), strings.HasSuffix(name, ".tgz"):
		return "gzip"
	case strings.HasSuffix(name, ".tar.zst"), strings.HasSuffix(name, ".tar.zstd"), strings.HasSuffix(name, ".tzst"):
		return "zstd"
	case strings.HasSuffix(name, ".tar.xz"), strings.HasSuffix(name, ".txz"):
		return "xz"
	}
	return ""
}

// scanTar reads the tar archive at p. File contents are copied to a spool
// file, unlinked at once, so nothing of it outlives the build. Later
// entries replace earlier ones at the same path, as tar extraction does;
// hard links become copies of the file they name; device nodes and FIFOs
// are left out. Entries keep the owners the archive records.
func (s *scanner) scanTar(t *tree, p, comp string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = bufio.NewReaderSize(f, 1<<20)
	switch comp {
	case "gzip":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		r = zr
	case "zstd":
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	case "xz":
		zr, err := xz.NewReader(r)
		if err != nil {
			return err
		}
		r = zr
	}
	return s.scanTarStream(t, r)
}

// scanTarStream reads an uncompressed tar stream into t, as scanTar does.
func (s *scanner) scanTarStream(t *tree, r io.Reader) error {
	spool, err := os.CreateTemp(s.spoolDir, "builder-spool-*")
	if err != nil {
		return fmt.Errorf("creating spool file: %w", err)
	}
	os.Remove(spool.Name())
	t.closers = append(t.closers, spool)
	sw := &spoolWriter{f: spool}

	tr := tar.NewReader(ctxReader{s.ctx, r})
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name, err := tarPath(h.Name)
		if err != nil {
			return err
		}
		if name == "" {
			continue // the root itself
		}
		if h.Uid < 0 || h.Uid > maxID || h.Gid < 0 || h.Gid > maxID {
			return fmt.Errorf("%s: owner %d:%d out of range", h.Name, h.Uid, h.Gid)
		}
		e := &entry{path: name, perm: uint32(h.Mode) & 0o7777, uid: uint32(h.Uid), gid: uint32(h.Gid)}
		switch h.Typeflag {
		case tar.TypeDir:
			e.typ = typeDir
		case tar.TypeSymlink:
			e.typ, e.perm, e.link = typeSymlink, 0o777, h.Linkname
		case tar.TypeReg, tar.TypeGNUSparse:
			e.typ = typeFile
			if err := sw.copy(e, tr); err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
		case tar.TypeLink:
			target, err := tarPath(h.Linkname)
			if err != nil {
				return err
			}
			te := t.entries[target]
			if te == nil || te.typ != typeFile {
				return fmt.Errorf("%s: hard link to %s, which is not an earlier regular file", h.Name, h.Linkname)
			}
			*e = *te
			e.path = name
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			t.skipped = append(t.skipped, "/"+name)
			continue
		case tar.TypeXGlobalHeader:
			continue
		default:
			return fmt.Errorf("%s: unsupported tar entry type %q", h.Name, h.Typeflag)
		}
		s.add(t, e)
	}
}

// tarPath returns the clean, root-relative form of a tar entry name ("" for
// the root itself), or an error if it escapes the root.
func tarPath(name string) (string, error) {
	p := path.Clean("/" + name)
	if strings.Contains(name, "\x00") {
		return "", fmt.Errorf("tar entry %q: contains a NUL byte", name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", fmt.Errorf("tar entry %q: has a .. element", name)
		}
	}
	return strings.TrimPrefix(p, "/"), nil
}

// spoolWriter appends file contents to a spool file.
type spoolWriter struct {
	f   *os.File
	off int64
}

// copy appends r to the spool, hashing it, and points e at its section.
func (w *spoolWriter) copy(e *entry, r io.Reader) error {
	h := newHashWriter(w.f)
	n, err := io.Copy(h, r)
	if err != nil {
		return err
	}
	sec := io.NewSectionReader(w.f, w.off, n)
	w.off += n
	e.size, e.digest = n, h.digest()
	e.open = func() (io.ReadCloser, error) {
		return io.NopCloser(io.NewSectionReader(sec, 0, sec.Size())), nil
	}
	return nil
}
