package builder

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/ulikunitz/xz"
)

// layerOf returns a layer holding the given tar entries.
func layerOf(t *testing.T, entries ...*tar.Header) v1.Layer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range entries {
		body := h.Linkname // regular files carry their content in Linkname here
		if h.Typeflag == tar.TypeReg {
			h.Linkname, h.Size = "", int64(len(body))
		}
		mustDo(t, tw.WriteHeader(h))
		if h.Typeflag == tar.TypeReg {
			_, err := io.WriteString(tw, body)
			mustDo(t, err)
		}
	}
	mustDo(t, tw.Close())
	data := b.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	mustDo(t, err)
	return l
}

// TestBuildContainerBases builds the same tree from a plain tar, an OCI
// image layout and a docker save tarball whose second layer deletes a file
// (whiteout) and empties a directory (opaque whiteout): all three must give
// the same image.
func TestBuildContainerBases(t *testing.T) {
	reg := func(p, content string, mode int64) *tar.Header {
		return &tar.Header{Name: p, Typeflag: tar.TypeReg, Mode: mode, Linkname: content}
	}
	dir := func(p string) *tar.Header { return &tar.Header{Name: p, Typeflag: tar.TypeDir, Mode: 0o755} }
	lower := layerOf(t, dir("etc/"), reg("etc/os-release", "ID=test\n", 0o644), reg("etc/gone", "x", 0o644),
		dir("var/"), dir("var/cache/"), reg("var/cache/old", "stale", 0o644), dir("bin/"), reg("bin/tool", "v1", 0o755))
	upper := layerOf(t, reg("etc/.wh.gone", "", 0o644), dir("var/cache/"), reg("var/cache/.wh..wh..opq", "", 0o644),
		reg("var/cache/new", "fresh", 0o644), reg("bin/tool", "v2", 0o755))
	img, err := mutate.AppendLayers(empty.Image, lower, upper)
	mustDo(t, err)
	cfg, err := img.ConfigFile()
	mustDo(t, err)
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	img, err = mutate.ConfigFile(img, cfg)
	mustDo(t, err)

	base := t.TempDir()
	ociDir := filepath.Join(base, "oci")
	lp, err := layout.Write(ociDir, empty.Index)
	mustDo(t, err)
	mustDo(t, lp.AppendImage(img))
	ref, err := name.NewTag("kiln.test/base:1")
	mustDo(t, err)
	mustDo(t, tarball.WriteToFile(filepath.Join(base, "docker.tar"), ref, img))
	// The flattened tree, as a plain tar.
	f, err := os.Create(filepath.Join(base, "flat.tar"))
	mustDo(t, err)
	tw := tar.NewWriter(f)
	for _, h := range []*tar.Header{dir("etc/"), reg("etc/os-release", "ID=test\n", 0o644), dir("var/"), dir("var/cache/"),
		reg("var/cache/new", "fresh", 0o644), dir("bin/"), reg("bin/tool", "v2", 0o755)} {
		body := h.Linkname
		if h.Typeflag == tar.TypeReg {
			h.Linkname, h.Size = "", int64(len(body))
		}
		mustDo(t, tw.WriteHeader(h))
		_, err := io.WriteString(tw, body)
		mustDo(t, err)
	}
	mustDo(t, tw.Close())
	mustDo(t, f.Close())

	var results []Result
	for _, b := range []string{"flat.tar", "oci", "docker.tar"} {
		t.Run(b, func(t *testing.T) {
			d := t.TempDir()
			recipe := writeFixture(t, d, time.Now())
			mustDo(t, editFile(recipe, "base: rootfs", "base: "+filepath.Join(base, b)))
			res, _ := build(t, recipe)
			results = append(results, res)
		})
	}
	if len(results) != 3 {
		t.Fatalf("only %d of 3 builds succeeded", len(results))
	}
	for i, b := range []string{"oci", "docker.tar"} {
		if diff := cmp.Diff(results[0], results[i+1]); diff != "" {
			t.Errorf("image from %s differs from the flattened tar's (-tar +%s):\n%s", b, b, diff)
		}
	}
}

// tarDir archives the directory dir as an uncompressed tar stream with
// numeric owners 0:0 (what the recipe's owner gives a directory base).
func tarDir(t *testing.T, dir string, w io.Writer) {
	t.Helper()
	tw := tar.NewWriter(w)
	mustDo(t, filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name, h.Uid, h.Gid, h.Uname, h.Gname = rel, 0, 0, "", ""
		if fi.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	}))
	mustDo(t, tw.Close())
}

// TestBuildAllOutputsEveryBase bakes every output from each kind of base
// holding the same tree: a directory, a .tar.xz, an OCI layout and a
// docker save tarball must all give the same image, byte for byte.
func TestBuildAllOutputsEveryBase(t *testing.T) {
	dir := t.TempDir()
	recipe := writeOutputsFixture(t, dir, time.Now())
	want, _ := build(t, recipe)

	var flat bytes.Buffer
	tarDir(t, filepath.Join(dir, "root"), &flat)
	xzFile, err := os.Create(filepath.Join(dir, "root.tar.xz"))
	mustDo(t, err)
	xw, err := xz.NewWriter(xzFile)
	mustDo(t, err)
	_, err = xw.Write(flat.Bytes())
	mustDo(t, err)
	mustDo(t, xw.Close())
	mustDo(t, xzFile.Close())

	data := flat.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	mustDo(t, err)
	img, err := mutate.AppendLayers(empty.Image, layer)
	mustDo(t, err)
	cfg, err := img.ConfigFile()
	mustDo(t, err)
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	img, err = mutate.ConfigFile(img, cfg)
	mustDo(t, err)
	lp, err := layout.Write(filepath.Join(dir, "oci"), empty.Index)
	mustDo(t, err)
	mustDo(t, lp.AppendImage(img))
	ref, err := name.NewTag("kiln.test/root:1")
	mustDo(t, err)
	mustDo(t, tarball.WriteToFile(filepath.Join(dir, "docker.tar"), ref, img))

	for _, base := range []string{"root.tar.xz", "oci", "docker.tar"} {
		t.Run(base, func(t *testing.T) {
			mustDo(t, editFile(recipe, "base: root\n", "base: "+base+"\n"))
			defer func() { mustDo(t, editFile(recipe, "base: "+base+"\n", "base: root\n")) }()
			got, _ := build(t, recipe)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("image from %s differs from the directory's (-dir +%s):\n%s", base, base, diff)
			}
		})
	}
}
