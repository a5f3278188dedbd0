package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// quick is how long Flatten may take to reject a crafted image. Each
// case takes at most a second (most take milliseconds); before the
// bounds, several ran for minutes or never returned.
const quick = 2 * time.Second * raceSlowdown

// returnsQuickly runs fn and fails t if it takes longer than quick. It
// does not wait for a hung fn, so a regression fails instead of hanging
// the test binary.
func returnsQuickly(t *testing.T, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- fn() }()
	select {
	case err := <-done:
		d := time.Since(start)
		t.Logf("returned in %v", d)
		if d > quick {
			t.Errorf("took %v, want under %v", d, quick)
		}
		return err
	case <-time.After(5 * quick):
		t.Fatalf("did not return within %v", 5*quick)
		return nil
	}
}

// wantError fails t unless err says want.
func wantError(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error = %v, want one with %q", err, want)
	}
}

// member is one member of an archive the tests write.
type tarMember struct {
	name string
	typ  byte
	link string
	body []byte
}

// writeTar writes the members as a tar file and returns its path.
func writeTar(t *testing.T, members []tarMember) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, m := range members {
		if m.typ == 0 {
			m.typ = tar.TypeReg
		}
		h := &tar.Header{Name: m.name, Typeflag: m.typ, Linkname: m.link, Mode: 0o644, Size: int64(len(m.body))}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// imageMembers returns the layer and config members of an image whose n
// layers are all the tar of entries, and the manifest.json entry for it.
// pad is added to the config as a label, to make it larger.
func imageMembers(t *testing.T, n int, entries []entry, pad int) ([]tarMember, tarball.Descriptor) {
	t.Helper()
	lb := tarOf(t, entries)
	diffID, err := v1.NewHash(sha256Of(lb))
	if err != nil {
		t.Fatal(err)
	}
	cfg := v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"}}
	cfg.Config.Labels = map[string]string{"pad": strings.Repeat("x", pad)}
	d := tarball.Descriptor{}
	for range n {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, diffID)
		d.Layers = append(d.Layers, "layer.tar")
	}
	cb, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.Config = "blobs/sha256/" + strings.TrimPrefix(sha256Of(cb), "sha256:")
	return []tarMember{{name: "layer.tar", body: lb}, {name: d.Config, body: cb}}, d
}

// manifestMember returns the manifest.json member listing the images.
func manifestMember(t *testing.T, images ...tarball.Descriptor) tarMember {
	t.Helper()
	b, err := json.Marshal(tarball.Manifest(images))
	if err != nil {
		t.Fatal(err)
	}
	return tarMember{name: "manifest.json", body: b}
}

// padding returns n empty members, which an archive scan must step over.
func padding(n int) []tarMember {
	out := make([]tarMember, n)
	for i := range out {
		out[i] = tarMember{name: fmt.Sprintf("pad/%d", i)}
	}
	return out
}

// TestArchiveBounds checks that crafted docker save archives fail, or
// flatten, quickly, with an error that says what is wrong.
func TestArchiveBounds(t *testing.T) {
	layer := []entry{file("a", 0o644, "a")}
	for _, tc := range []struct {
		name    string
		archive func(t *testing.T) string
		err     string // "" for success
	}{
		{"many layers in a long archive", func(t *testing.T) string {
			// Looking each layer up by scanning the archive read
			// maxLayers*2*20000 tar headers.
			ms, d := imageMembers(t, maxLayers, layer, 0)
			return writeTar(t, append(append(padding(20000), ms...), manifestMember(t, d)))
		}, ""},
		{"too many layers", func(t *testing.T) string {
			ms, d := imageMembers(t, maxLayers+1, layer, 0)
			return writeTar(t, append(ms, manifestMember(t, d)))
		}, "image has 257 layers, more than 256"},
		{"too many images", func(t *testing.T) string {
			ms, d := imageMembers(t, 1, layer, 0)
			ds := make([]tarball.Descriptor, maxImages+1)
			for i := range ds {
				ds[i] = d
			}
			return writeTar(t, append(ms, manifestMember(t, ds...)))
		}, "manifest.json lists 1025 images, more than 1024"},
		{"images share a large config", func(t *testing.T) string {
			// Each image's platform comes from its config: read
			// once, not once per image.
			ms, d := imageMembers(t, 1, layer, 1<<20)
			ds := make([]tarball.Descriptor, maxImages)
			for i := range ds {
				ds[i] = d
				ds[i].RepoTags = []string{fmt.Sprintf("x:%d", i)}
			}
			return writeTar(t, append(ms, manifestMember(t, ds...)))
		}, "1024 images for platform linux/amd64"},
		{"too many members", func(t *testing.T) string {
			ms, d := imageMembers(t, 1, layer, 0)
			return writeTar(t, append(append(ms, manifestMember(t, d)), padding(maxArchiveMembers)...))
		}, "archive has more than 65536 members"},
		{"manifest.json too large", func(t *testing.T) string {
			return writeTar(t, []tarMember{{name: "manifest.json", body: make([]byte, maxManifestSize+1)}})
		}, "manifest.json is larger than 16777216 bytes"},
		{"member size beyond the file", func(t *testing.T) string {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			tw.WriteHeader(&tar.Header{Name: "manifest.json", Typeflag: tar.TypeReg, Size: 1 << 40})
			tw.Flush() // fails: the content is missing, as intended
			p := filepath.Join(t.TempDir(), "image.tar")
			mustWrite(t, p, buf.Bytes())
			return p
		}, "unexpected EOF"},
		{"symlink loop", func(t *testing.T) string {
			ms, d := imageMembers(t, 1, layer, 0)
			d.Layers = []string{"a"}
			return writeTar(t, append(ms,
				tarMember{name: "a", typ: tar.TypeSymlink, link: "b"},
				tarMember{name: "b", typ: tar.TypeSymlink, link: "a"},
				manifestMember(t, d)))
		}, "a: more than 8 links"},
		{"layer is a directory", func(t *testing.T) string {
			ms, d := imageMembers(t, 1, layer, 0)
			d.Layers = []string{"dir"}
			return writeTar(t, append(ms, tarMember{name: "dir/", typ: tar.TypeDir}, manifestMember(t, d)))
		}, "dir: archive member is not a file"},
		{"member name too long", func(t *testing.T) string {
			return writeTar(t, []tarMember{{name: strings.Repeat("n", maxPathLen+1)}, {name: "manifest.json"}})
		}, "name or link longer than 4096 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.archive(t)
			err := returnsQuickly(t, func() error {
				_, err := Flatten(context.Background(), p, Options{}, io.Discard)
				return err
			})
			if tc.err == "" {
				if err != nil {
					t.Errorf("Flatten() = %v, want success", err)
				}
				return
			}
			wantError(t, err, tc.err)
		})
	}
}

// layoutBlob writes b as a blob of the layout in dir and returns its
// descriptor.
func layoutBlob(t *testing.T, dir string, mt types.MediaType, b []byte) v1.Descriptor {
	t.Helper()
	h, err := v1.NewHash(sha256Of(b))
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(dir, "blobs", "sha256", h.Hex), b)
	return v1.Descriptor{MediaType: mt, Digest: h, Size: int64(len(b))}
}

// writeIndex writes the index of the descriptors as a blob of the layout
// in dir, or as its index.json if top.
func writeIndex(t *testing.T, dir string, top bool, ds ...v1.Descriptor) v1.Descriptor {
	t.Helper()
	b, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: ds})
	if err != nil {
		t.Fatal(err)
	}
	if top {
		mustWrite(t, filepath.Join(dir, "index.json"), b)
		return v1.Descriptor{}
	}
	return layoutBlob(t, dir, types.OCIImageIndex, b)
}

// emptyLayout returns a layout directory with no index.json yet.
func emptyLayout(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`))
	return dir
}

// TestLayoutBounds checks that crafted OCI layouts fail quickly.
func TestLayoutBounds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		layout func(t *testing.T) string
		err    string
	}{
		{"index fan-out", func(t *testing.T) string {
			// 64 references at each of 4 levels: 16 million
			// manifests if walked without a bound.
			dir := emptyLayout(t)
			d := layoutBlob(t, dir, types.OCIManifestSchema1, []byte("{}"))
			for range 3 {
				ds := make([]v1.Descriptor, 64)
				for i := range ds {
					ds[i] = d
				}
				d = writeIndex(t, dir, false, ds...)
			}
			ds := make([]v1.Descriptor, 64)
			for i := range ds {
				ds[i] = d
			}
			writeIndex(t, dir, true, ds...)
			return dir
		}, "indexes list more than 1024 manifests"},
		{"manifest too large", func(t *testing.T) string {
			dir := emptyLayout(t)
			writeIndex(t, dir, true, layoutBlob(t, dir, types.OCIManifestSchema1, make([]byte, maxBlobSize+1)))
			return dir
		}, "larger than 16777216 bytes"},
		{"index.json too large", func(t *testing.T) string {
			dir := emptyLayout(t)
			mustWrite(t, filepath.Join(dir, "index.json"), make([]byte, maxBlobSize+1))
			return dir
		}, "index.json: larger than 16777216 bytes"},
		{"index.json is a FIFO", func(t *testing.T) string {
			// Reading it blocked until a writer came.
			dir := emptyLayout(t)
			if err := syscall.Mkfifo(filepath.Join(dir, "index.json"), 0o644); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "index.json: not a regular file"},
		// Blobs come from go-containerregistry's layout.Path.Blob,
		// which refuses these: with a plain os.Open, a device's reads
		// never end and opening a FIFO blocks.
		{"layer blob is a device", func(t *testing.T) string {
			dir := writeLayout(t, []v1.Image{imageOf(t, "amd64", layerOf(t, baseLayer()))}, []string{""})
			replaceLayerBlob(t, dir, func(p string) error { return os.Symlink("/dev/zero", p) })
			return dir
		}, "is a symlink"},
		{"layer blob is a FIFO", func(t *testing.T) string {
			dir := writeLayout(t, []v1.Image{imageOf(t, "amd64", layerOf(t, baseLayer()))}, []string{""})
			replaceLayerBlob(t, dir, func(p string) error { return syscall.Mkfifo(p, 0o644) })
			return dir
		}, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.layout(t)
			err := returnsQuickly(t, func() error {
				_, err := Flatten(context.Background(), dir, Options{}, io.Discard)
				return err
			})
			wantError(t, err, tc.err)
		})
	}
}

// replaceLayerBlob replaces the first layer blob of the lone image of the
// layout in dir by what mk makes at its path.
func replaceLayerBlob(t *testing.T, dir string, mk func(p string) error) {
	t.Helper()
	l, err := layoutCandidates(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	img, err := l[0].load()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "blobs", "sha256", img.layers[0].blob.Hex)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := mk(p); err != nil {
		t.Fatal(err)
	}
}

// memLayer returns a layer of the tar of entries, held in memory.
func memLayer(t *testing.T, entries []entry) layer {
	t.Helper()
	b := tarOf(t, entries)
	h, err := v1.NewHash(sha256Of(b))
	if err != nil {
		t.Fatal(err)
	}
	return layer{name: "mem", diffID: h, open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}}
}

// TestTreeBounds checks that crafted layers fail quickly.
func TestTreeBounds(t *testing.T) {
	long := strings.Repeat("d/", 1500) // 3000 bytes
	many := make([]entry, 200)
	for i := range many {
		many[i] = file(fmt.Sprintf("f%d", i), 0o644, "")
	}
	throughLink := []entry{symlink("l", long)}
	for i := range 200 {
		throughLink = append(throughLink, file(fmt.Sprintf("l/f%d", i), 0o644, ""))
	}
	for _, tc := range []struct {
		name    string
		entries []entry
		lim     limits
		err     string
	}{
		{"entry name too long", []entry{file(strings.Repeat("n", maxPathLen+1), 0o644, "")}, defaultLimits,
			"name or link target longer than 4096 bytes"},
		{"link target too long", []entry{symlink("l", strings.Repeat("n", maxPathLen+1))}, defaultLimits,
			"name or link target longer than 4096 bytes"},
		{"path through a symlink too long", []entry{symlink("l", long), file("l/"+strings.Repeat("e/", 600)+"f", 0o644, "")}, defaultLimits,
			"lands at a path longer than 4096 bytes"},
		{"lookup walks too far", []entry{symlink("s", strings.Repeat("./", 2000)), file("s/s/s/x", 0o644, "")}, defaultLimits,
			"resolving takes more than 4096 path components"},
		{"too many entries", many, limits{entries: 100, metadata: 1 << 20}, "too many entries"},
		{"too many implied directories", []entry{file("a/b/c/d/e/f/g/h/i/j/k", 0o644, "")}, limits{entries: 5, metadata: 1 << 20}, "too many entries"},
		{"too much metadata", many, limits{entries: 1000, metadata: 100}, "too much metadata"},
		// The names are short, but each path is 3000 bytes long: 2.25
		// MB for the implied directories, 600 kB for the files.
		{"long paths through a symlink", throughLink, limits{entries: 10000, metadata: 2_500_000}, "too much metadata"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := memLayer(t, tc.entries)
			err := returnsQuickly(t, func() error {
				return flatten(context.Background(), []layer{l}, tc.lim, io.Discard)
			})
			wantError(t, err, tc.err)
		})
	}
}

// cancelingReader cancels its context on its first read.
type cancelingReader struct {
	r      io.Reader
	cancel context.CancelFunc
}

func (c cancelingReader) Read(p []byte) (int, error) {
	c.cancel()
	return c.r.Read(p)
}

// TestFlattenCanceledMidLayer cancels Flatten during the first read of a
// gzip layer, 4 KiB of which hold hundreds of entries: it must stop at the
// next entry, not at the layer's next read.
func TestFlattenCanceledMidLayer(t *testing.T) {
	entries := make([]entry, 2000)
	for i := range entries {
		entries[i] = file(fmt.Sprintf("f%d", i), 0o644, "")
	}
	l := memLayer(t, entries)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(tarOf(t, entries)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.open = func() (io.ReadCloser, error) {
		return io.NopCloser(cancelingReader{r: bytes.NewReader(gz.Bytes()), cancel: cancel}), nil
	}
	var visited int
	err := eachEntry(ctx, l, nil, func(int, *tar.Header, io.Reader) error { visited++; return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("eachEntry(canceled) = %v, want context.Canceled", err)
	}
	if visited > 1 {
		t.Errorf("eachEntry visited %d entries after its context was canceled, want at most 1", visited)
	}
}
