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
