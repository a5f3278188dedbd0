package builder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/kiln-dev/kiln/images"
)

// entryType is the kind of a tree entry. Device nodes, FIFOs and sockets
// are not entries: the builder leaves them out (the tiny image's /init
// mounts devtmpfs on /dev).
type entryType uint8

const (
	typeDir entryType = iota + 1
	typeFile
	typeSymlink
)

func (t entryType) String() string {
	switch t {
	case typeDir:
		return "dir"
	case typeFile:
		return "file"
	case typeSymlink:
		return "symlink"
	}
	return fmt.Sprintf("entryType(%d)", uint8(t))
}

// entry is one node of an image's root tree.
type entry struct {
	path     string // relative to the root, clean, without a leading slash: "bin/busybox"
	typ      entryType
	perm     uint32 // permission bits, 07777
	uid, gid uint32
	link     string        // symlink target, as is
	size     int64         // file size
	digest   images.Digest // sha256 of the file's content
	open     func() (io.ReadCloser, error)
}

// tree is an image's root tree: the base, the recipe's files laid over it,
// and the parent directories they imply. File contents stay where they are
// (the base directory, a spool file, the recipe) until the initrd is written.
type tree struct {
	entries map[string]*entry
	skipped []string    // special files of the base that were left out
	closers []io.Closer // what the entries' open functions read from
}

func newTree() *tree { return &tree{entries: map[string]*entry{}} }

func (t *tree) close() {
	for _, c := range t.closers {
		c.Close()
	}
	t.closers = nil
}

// sorted returns the entries by path. A byte-wise sort puts every directory
// before its children, as a cpio archive must.
func (t *tree) sorted() []*entry {
	out := make([]*entry, 0, len(t.entries))
	for _, e := range t.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *entry) int { return strings.Compare(a.path, b.path) })
	return out
}

// complete adds the missing parent directories (0755, owned by owner) and
// checks that every parent is a directory.
func (t *tree) complete(owner Owner) error {
	paths := make([]string, 0, len(t.entries))
	for p := range t.entries {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			pe := t.entries[d]
			if pe == nil {
				t.entries[d] = &entry{path: d, typ: typeDir, perm: 0o755, uid: owner.UID, gid: owner.GID}
				continue
			}
			if pe.typ != typeDir {
				return fmt.Errorf("/%s: its parent /%s is a %s, not a directory", p, d, pe.typ)
			}
			break
		}
	}
	return nil
}

// overlay checks that a file may be placed at p (no leading slash): p is
// not a directory and none of its parents is something other than one.
func (t *tree) overlay(p string) error {
	if e := t.entries[p]; e != nil && e.typ == typeDir {
		return fmt.Errorf("/%s is a directory in the base", p)
	}
	for d := path.Dir(p); d != "."; d = path.Dir(d) {
		if e := t.entries[d]; e != nil && e.typ != typeDir {
			return fmt.Errorf("/%s: parent /%s is a %s in the base", p, d, e.typ)
		}
	}
	return nil
}

// addFiles lays the recipe's files over the tree.
func (t *tree) addFiles(ctx context.Context, r *Recipe) error {
	for i, f := range r.Files {
		p := strings.TrimPrefix(f.Path, "/")
		if err := t.overlay(p); err != nil {
			return r.errorf(fmt.Sprintf("files[%d].path", i), "%w", err)
		}
		perm, err := parseMode(f.Mode)
		if err != nil {
			return r.errorf(fmt.Sprintf("files[%d].mode", i), "%w", err)
		}
		e := &entry{path: p, typ: typeFile, perm: perm, uid: r.Owner.UID, gid: r.Owner.GID}
		if f.UID != nil {
			e.uid = *f.UID
		}
		if f.GID != nil {
			e.gid = *f.GID
		}
		switch {
		case f.Template && f.Content != nil:
			b, err := render(r, i, []byte(*f.Content))
			if err != nil {
				return r.errorf(fmt.Sprintf("files[%d].content", i), "%w", err)
			}
			setContent(e, b)
		case f.Template:
			src := r.resolve(f.Source)
			b, err := renderSource(ctx, r, i, func() (io.ReadCloser, error) { return os.Open(src) })
			if err != nil {
				return r.errorf(fmt.Sprintf("files[%d].source", i), "%s: %w", f.Source, err)
			}
			setContent(e, b)
		case f.Content != nil:
			setContent(e, []byte(*f.Content))
		default:
			src := r.resolve(f.Source)
			e.open = func() (io.ReadCloser, error) { return os.Open(src) }
			if e.digest, e.size, err = hashContent(ctx, e.open); err != nil {
				return r.errorf(fmt.Sprintf("files[%d].source", i), "%w", err)
			}
		}
		t.entries[p] = e
	}
	return t.complete(r.Owner)
}

// addImageInfo writes /etc/kiln/image: shell assignments of the image's
// name and inputs digest, for the booted system to source.
func (t *tree) addImageInfo(r *Recipe, inputs images.Digest) error {
	p := strings.TrimPrefix(imageInfoPath, "/")
	if err := t.overlay(p); err != nil {
		return fmt.Errorf("writing %s: %w", imageInfoPath, err)
	}
	content := fmt.Sprintf("KILN_IMAGE_NAME='%s'\nKILN_INPUTS='%s'\n", r.Name, inputs)
	e := &entry{path: p, typ: typeFile, perm: 0o644, uid: r.Owner.UID, gid: r.Owner.GID}
	setContent(e, []byte(content))
	t.entries[p] = e
	return t.complete(r.Owner)
}

// setContent makes e a file holding b.
func setContent(e *entry, b []byte) {
	e.size = int64(len(b))
	e.digest = images.DigestOf(b)
	e.open = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// hashContent reads what open returns and returns its digest and size.
func hashContent(ctx context.Context, open func() (io.ReadCloser, error)) (images.Digest, int64, error) {
	rc, err := open()
	if err != nil {
		return "", 0, err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{ctx, rc})
	if err != nil {
		return "", 0, err
	}
	return digestOf(h.Sum(nil)), n, nil
}

func digestOf(sum []byte) images.Digest {
	return images.Digest("sha256:" + hex.EncodeToString(sum))
}

// unixPerm returns the permission bits of m as stat(2) has them.
func unixPerm(m fs.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		p |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// errChanged reports a file whose content changed between the scan that
// computed the inputs digest and the write of the initrd.
var errChanged = errors.New("changed during the build")
