package builder

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/kiln-dev/kiln/images"
)

// writeTar archives the directory dir the way distribution tarballs look:
// a "./" root entry and prefix, foreign owner names and mtimes, bin/copy as a
// hard link, device nodes and a FIFO (which the builder leaves out), and a
// stale etc/passwd that a later entry replaces.
func writeTar(t *testing.T, dir string, w io.Writer) {
	t.Helper()
	tw := tar.NewWriter(w)
	add := func(h *tar.Header, body string) {
		// The fixture's directory base is owned by the recipe's owner,
		// 0:0; the archive records the same owners under foreign names.
		h.Uid, h.Gid, h.Uname, h.ModTime = 0, 0, "someone", time.Unix(999999999, 0)
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		mustDo(t, tw.WriteHeader(h))
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	add(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o700}, "")
	add(&tar.Header{Name: "./etc/passwd", Typeflag: tar.TypeReg, Mode: 0o600}, "stale")
	add(&tar.Header{Name: "./dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}, "")
	add(&tar.Header{Name: "./dev/sda", Typeflag: tar.TypeBlock, Mode: 0o660, Devmajor: 8}, "")
	add(&tar.Header{Name: "./run/fifo", Typeflag: tar.TypeFifo, Mode: 0o644}, "")
	mustDo(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		name := "./" + filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = name
		switch {
		case d.IsDir():
			h.Name += "/"
			add(h, "")
		case d.Type()&fs.ModeSymlink != 0:
			h.Linkname, err = os.Readlink(p)
			add(h, "")
		case rel == "bin/copy":
			add(&tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: "./bin/busybox", Mode: h.Mode}, "")
		default:
			b, rerr := os.ReadFile(p)
			if rerr != nil {
				return rerr
			}
			add(h, string(b))
		}
		return err
	}))
	mustDo(t, tw.Close())
}

func TestBuildTarBase(t *testing.T) {
	dirRes, _ := build(t, writeFixture(t, t.TempDir(), time.Now()))
	for _, tc := range []struct {
		name     string
		compress func(io.Writer) io.WriteCloser
	}{
		{"rootfs.tar", nil},
		{"rootfs.tar.gz", func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) }},
		{"rootfs.tgz", func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) }},
		{"rootfs.tar.zst", func(w io.Writer) io.WriteCloser {
			zw, err := zstd.NewWriter(w)
			mustDo(t, err)
			return zw
		}},
		{"rootfs.tar.xz", func(w io.Writer) io.WriteCloser {
			zw, err := xz.NewWriter(w)
			mustDo(t, err)
			return zw
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			recipe := writeFixture(t, dir, time.Now())
			f, err := os.Create(filepath.Join(dir, tc.name))
			mustDo(t, err)
			var w io.Writer = f
			var cw io.WriteCloser
			if tc.compress != nil {
				cw = tc.compress(f)
				w = cw
			}
			writeTar(t, filepath.Join(dir, "rootfs"), w)
			if cw != nil {
				mustDo(t, cw.Close())
			}
			mustDo(t, f.Close())
			mustDo(t, os.RemoveAll(filepath.Join(dir, "rootfs")))
			mustDo(t, editFile(recipe, "base: rootfs", "base: "+tc.name))

			tarRes, _ := build(t, recipe)
			if diff := cmp.Diff(dirRes, tarRes); diff != "" {
				t.Errorf("image from %s differs from the one from the directory (-dir +tar):\n%s", tc.name, diff)
			}
		})
	}
}

func TestBuildTarErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []*tar.Header
		wantErr string
	}{
		{"escaping name", []*tar.Header{{Name: "../evil", Typeflag: tar.TypeReg}}, `"../evil": has a .. element`},
		{"dangling hard link", []*tar.Header{{Name: "a", Typeflag: tar.TypeLink, Linkname: "b"}}, "hard link to b, which is not an earlier regular file"},
		{"file under a file", []*tar.Header{{Name: "a", Typeflag: tar.TypeReg}, {Name: "a/b", Typeflag: tar.TypeReg}}, "/a/b: its parent /a is a file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			recipe := writeFixture(t, dir, time.Now())
			f, err := os.Create(filepath.Join(dir, "base.tar"))
			mustDo(t, err)
			tw := tar.NewWriter(f)
			for _, h := range tc.entries {
				mustDo(t, tw.WriteHeader(h))
			}
			mustDo(t, tw.Close())
			mustDo(t, f.Close())
			mustDo(t, editFile(recipe, "base: rootfs", "base: base.tar"))
			r, err := LoadRecipe(recipe)
			mustDo(t, err)
			st, err := images.Open(t.TempDir())
			mustDo(t, err)
			_, err = Build(context.Background(), r, st, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "base: base.tar") {
				t.Errorf("Build = %v, want a base error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestBuildTarKeepsOwners checks that an archive base keeps the owners it
// records (a Debian root has files of man, mail, shadow...), while the
// recipe's files take the recipe's owner.
func TestBuildTarKeepsOwners(t *testing.T) {
	dir := t.TempDir()
	recipe := writeFixture(t, dir, time.Now())
	f, err := os.Create(filepath.Join(dir, "base.tar"))
	mustDo(t, err)
	tw := tar.NewWriter(f)
	mustDo(t, tw.WriteHeader(&tar.Header{Name: "var/mail/", Typeflag: tar.TypeDir, Mode: 0o2775, Uid: 0, Gid: 8}))
	mustDo(t, tw.WriteHeader(&tar.Header{Name: "usr/bin/chage", Typeflag: tar.TypeReg, Mode: 0o2755, Uid: 0, Gid: 42, Size: 2}))
	_, err = tw.Write([]byte("x\n"))
	mustDo(t, err)
	mustDo(t, tw.WriteHeader(&tar.Header{Name: "home/ops/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 1000, Gid: 1000}))
	mustDo(t, tw.Close())
	mustDo(t, f.Close())
	mustDo(t, editFile(recipe, "base: rootfs", "base: base.tar"))
	res, st := build(t, recipe)
	got := map[string][3]uint32{}
	for _, e := range readCPIO(t, unzstd(t, artifact(t, st, res, ArtifactInitrd))) {
		got[e.Name] = [3]uint32{e.Mode & 0o7777, e.UID, e.GID}
	}
	for name, want := range map[string][3]uint32{
		"var/mail":      {0o2775, 0, 8},
		"usr/bin/chage": {0o2755, 0, 42},
		"home/ops":      {0o750, 1000, 1000},
		"init":          {0o755, 0, 0},
	} {
		if got[name] != want {
			t.Errorf("%s: mode, uid, gid = %o, want %o", name, got[name], want)
		}
	}
}
