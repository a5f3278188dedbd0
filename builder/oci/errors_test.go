package oci

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestDetect(t *testing.T) {
	img := imageOf(t, "amd64", layerOf(t, baseLayer()))
	empty := t.TempDir()
	noIndex := t.TempDir()
	mustWrite(t, filepath.Join(noIndex, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`))
	text := filepath.Join(t.TempDir(), "hello.txt")
	mustWrite(t, text, []byte("hello\n"))
	plainTar := filepath.Join(t.TempDir(), "root.tar")
	mustWrite(t, plainTar, tarOf(t, baseLayer()))
	gz := filepath.Join(t.TempDir(), "image.tar.gz")
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	zw.Write(tarOf(t, baseLayer()))
	zw.Close()
	mustWrite(t, gz, zbuf.Bytes())
	for _, tc := range []struct {
		name string
		path string
		want Kind
		err  string
	}{
		{"layout", writeLayout(t, []v1.Image{img}, []string{""}), Layout, ""},
		{"archive", writeArchive(t, map[string]v1.Image{"example.com/x:1": img}), DockerArchive, ""},
		{"empty dir", empty, Unknown, "directory has no oci-layout"},
		{"no index", noIndex, Unknown, "directory has no index.json"},
		{"text file", text, Unknown, "reading as tar"},
		{"plain tar", plainTar, Unknown, "tar has no manifest.json"},
		{"gzipped", gz, Unknown, "gzip-compressed file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Detect(tc.path)
			if got != tc.want {
				t.Errorf("Detect(%s) = %v, want %v", tc.path, got, tc.want)
			}
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("Detect(%s) error = %v", tc.path, err)
			case tc.err != "" && (!errors.Is(err, ErrNotImage) || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("Detect(%s) error = %v, want ErrNotImage with %q", tc.path, err, tc.err)
			}
		})
	}
	if _, err := Detect(filepath.Join(empty, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Detect(missing) error = %v, want fs.ErrNotExist", err)
	}
	if _, err := Flatten(context.Background(), empty, Options{}, io.Discard); !errors.Is(err, ErrNotImage) {
		t.Errorf("Flatten(empty dir) error = %v, want ErrNotImage", err)
	}
}

func mustWrite(t *testing.T, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// blobPath returns the path of a blob in the layout dir.
func blobPath(t *testing.T, dir string, h v1.Hash, err error) string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "blobs", h.Algorithm, h.Hex)
}

// TestTampered changes stored blobs and checks that Flatten notices.
func TestTampered(t *testing.T) {
	img := imageOf(t, "amd64", layerOf(t, baseLayer()), layerOf(t, upperLayer()))
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	other := layerOf(t, []entry{file("./evil", 0o755, "evil")})
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, dir string)
		err    string
	}{
		{"layer blob replaced", func(t *testing.T, dir string) {
			rc, err := other.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(rc)
			h, err := layers[1].Digest()
			mustWrite(t, blobPath(t, dir, h, err), b)
		}, "blob digest mismatch"},
		{"layer blob truncated", func(t *testing.T, dir string) {
			h, err := layers[0].Digest()
			p := blobPath(t, dir, h, err)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			mustWrite(t, p, b[:len(b)/2])
		}, "unexpected EOF"},
		{"manifest changed", func(t *testing.T, dir string) {
			h, err := img.Digest()
			p := blobPath(t, dir, h, err)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			mustWrite(t, p, append(b, ' '))
		}, "digest mismatch"},
		{"config changed", func(t *testing.T, dir string) {
			h, err := img.ConfigName()
			p := blobPath(t, dir, h, err)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			mustWrite(t, p, bytes.Replace(b, []byte("amd64"), []byte("arm64"), 1))
		}, "digest mismatch"},
		{"layer blob missing", func(t *testing.T, dir string) {
			h, err := layers[1].Digest()
			if err := os.Remove(blobPath(t, dir, h, err)); err != nil {
				t.Fatal(err)
			}
		}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeLayout(t, []v1.Image{img}, []string{""})
			tc.tamper(t, dir)
			_, err := Flatten(context.Background(), dir, Options{}, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Flatten(tampered layout) = %v, want an error with %q", err, tc.err)
			}
		})
	}
	t.Run("archive layer changed", func(t *testing.T) {
		file := writeLegacyArchive(t, "x:1", [][]entry{baseLayer()})
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		// Change file content inside the layer, so its tar still parses.
		b = bytes.Replace(b, []byte("BUSYBOX"), []byte("EVILBOX"), 1)
		mustWrite(t, file, b)
		_, err = Flatten(context.Background(), file, Options{}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "diff ID mismatch") {
			t.Errorf("Flatten(tampered archive) = %v, want a diff ID mismatch", err)
		}
	})
}

// TestBadLayers checks layers a runtime could not unpack.
func TestBadLayers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []entry
		err     string
	}{
		{"escape", []entry{file("../etc/passwd", 0o644, "x")}, `entry "../etc/passwd" points outside the root`},
		{"escape link", []entry{file("a", 0o644, "x"), hardlink("b", "../../a", 0o644)}, "points outside the root"},
		{"missing link target", []entry{hardlink("b", "a", 0o644)}, "hard link to missing a"},
		{"link to directory", []entry{dir("d/", 0o755), hardlink("b", "d", 0o644)}, "hard link to directory d"},
		{"parent is a file", []entry{file("a", 0o644, "x"), file("a/b", 0o644, "y")}, "a: not a directory"},
		{"symlink loop", []entry{symlink("a", "b"), symlink("b", "a"), file("a/c", 0o644, "x")}, "too many levels of symbolic links"},
		{"root is a file", []entry{file(".", 0o644, "")}, "root entry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeLayout(t, []v1.Image{imageOf(t, "amd64", layerOf(t, tc.entries))}, []string{""})
			_, err := Flatten(context.Background(), dir, Options{}, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Flatten(%s) = %v, want an error with %q", tc.name, err, tc.err)
			}
		})
	}
}

// TestSymlinkParents checks that a dangling symlink parent is followed
// (and its target made), and that ".." in a symlink stops at the root.
func TestSymlinkParents(t *testing.T) {
	img := imageOf(t, "amd64",
		layerOf(t, []entry{symlink("sbin", "usr/sbin"), symlink("up", "../../..")}),
		layerOf(t, []entry{file("sbin/init", 0o755, "init"), file("up/etc/x", 0o644, "x")}))
	out, _ := flattenOK(t, writeLayout(t, []v1.Image{img}, []string{""}), Options{})
	var names []string
	for _, e := range readTar(t, out) {
		names = append(names, string(e.Type)+" "+e.Name)
	}
	want := "5 ./etc/|5 ./usr/|5 ./usr/sbin/|2 ./sbin|2 ./up|0 ./usr/sbin/init|0 ./etc/x"
	if got := strings.Join(names, "|"); got != want {
		t.Errorf("Flatten() entries = %s, want %s", got, want)
	}
}

func TestFlattenCanceled(t *testing.T) {
	dir := writeLayout(t, []v1.Image{imageOf(t, "amd64", layerOf(t, baseLayer()))}, []string{""})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Flatten(ctx, dir, Options{}, io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("Flatten(canceled) = %v, want context.Canceled", err)
	}
}

// TestWhiteoutSameLayer checks that a whiteout hides lower layers only: a
// layer may delete a path and create it anew, in either order.
func TestWhiteoutSameLayer(t *testing.T) {
	img := imageOf(t, "amd64",
		layerOf(t, []entry{dir("d/", 0o755), file("d/old", 0o644, "old"), file("f", 0o644, "1")}),
		layerOf(t, []entry{file("f", 0o600, "2"), file(".wh.f", 0, ""), dir("d/", 0o700), file("d/new", 0o644, "new"), file(".wh.d", 0, "")}))
	out, _ := flattenOK(t, writeLayout(t, []v1.Image{img}, []string{""}), Options{})
	var got []string
	for _, e := range readTar(t, out) {
		got = append(got, e.Name+"="+e.Body)
	}
	if want := "./d/=|./f=2|./d/new=new"; strings.Join(got, "|") != want {
		t.Errorf("Flatten() = %s, want %s", strings.Join(got, "|"), want)
	}
}
