package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Fuzz time bounds. One input takes well under a millisecond; these only
// turn a slow or hung input into a failure the fuzzer records, where it
// would otherwise stall the worker without a word.
const (
	fuzzDeadline = 10 * time.Second // Flatten's context ends
	fuzzHang     = 30 * time.Second // the process panics with all stacks
)

// FuzzFlattenArchive flattens docker save archives whose parts the fuzzer
// mangles: the manifest.json, a config and a layer blob, and a list of
// links to add. A container image is untrusted input: whatever it holds,
// Flatten must return an error or a well-formed tar stream, the same one
// every time, whose names never leave the root, and it must do so quickly.
//
// The fuzzer works on the parts, not on a whole tar: a tar is kilobytes
// of headers and padding that mutations mostly break, and minimizing each
// new input costs the fuzzer time quadratic in its size. The target
// assembles the archive (see fuzzArchive), so the parts can refer to each
// other by placeholder.
func FuzzFlattenArchive(f *testing.F) {
	f.Fuzz(func(t *testing.T, manifest, config, layer []byte, links string) {
		archive, ok := fuzzArchive(manifest, config, layer, links)
		if !ok {
			return
		}
		first, err := fuzzFlatten(t, archive)
		if err != nil {
			return
		}
		second, err := fuzzFlatten(t, archive)
		if err != nil {
			t.Fatalf("second Flatten failed after the first succeeded: %v", err)
		}
		if !bytes.Equal(first, second) {
			t.Fatal("Flatten is not deterministic")
		}
		tr := tar.NewReader(bytes.NewReader(first))
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("Flatten wrote a malformed tar: %v", err)
			}
			if n := filepath.Clean("/" + h.Name); n == "/.." || strings.HasPrefix(n, "/../") {
				t.Fatalf("entry %q leaves the root", h.Name)
			}
		}
	})
}

// fuzzFlatten flattens the archive in memory, failing t if that takes
// longer than fuzzDeadline.
func fuzzFlatten(t *testing.T, archive []byte) ([]byte, error) {
	hung := time.AfterFunc(fuzzHang, func() {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		panic(fmt.Sprintf("Flatten hung for %v:\n%s", fuzzHang, buf))
	})
	defer hung.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), fuzzDeadline)
	defer cancel()
	var out bytes.Buffer
	_, err := flattenArchive(ctx, bytes.NewReader(archive), int64(len(archive)), "fuzz.tar", Options{}, &out)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flatten ran for more than %v: %v", fuzzDeadline, err)
	}
	return out.Bytes(), err
}

// fuzzArchive assembles a docker save archive, the way docker 25 writes
// one, with the layer blob at blobs/sha256/<digest>, the config there too
// and manifest.json last. In config, "{diffid}" becomes the layer's diff
// ID (the digest of the gunzipped blob, or of the blob if that fails); in
// manifest and links, "{config}" and "{layer}" become the members' names.
// Each line of links "name -> target" adds a symlink, "name => target" a
// hard link. It reports false if tar cannot hold the names.
func fuzzArchive(manifest, config, layer []byte, links string) ([]byte, bool) {
	diffID := layer
	if zr, err := gzip.NewReader(bytes.NewReader(layer)); err == nil {
		if b, err := io.ReadAll(zr); err == nil {
			diffID = b
		}
	}
	config = bytes.ReplaceAll(config, []byte("{diffid}"), []byte(sha256Of(diffID)))
	layerName := "blobs/sha256/" + strings.TrimPrefix(sha256Of(layer), "sha256:")
	configName := "blobs/sha256/" + strings.TrimPrefix(sha256Of(config), "sha256:")
	names := strings.NewReplacer("{config}", configName, "{layer}", layerName)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body []byte) bool {
		h.Size = int64(len(body))
		return tw.WriteHeader(h) == nil && wrote(tw.Write(body))
	}
	ok := add(&tar.Header{Name: layerName, Typeflag: tar.TypeReg, Mode: 0o644}, layer) &&
		add(&tar.Header{Name: configName, Typeflag: tar.TypeReg, Mode: 0o644}, config)
	for line := range strings.Lines(links) {
		line = strings.TrimSuffix(line, "\n")
		typ := byte(tar.TypeSymlink)
		name, target, found := strings.Cut(line, " -> ")
		if !found {
			typ = tar.TypeLink
			if name, target, found = strings.Cut(line, " => "); !found {
				continue
			}
		}
		ok = ok && add(&tar.Header{Name: names.Replace(name), Typeflag: typ, Linkname: names.Replace(target), Mode: 0o777}, nil)
	}
	ok = ok && add(&tar.Header{Name: "manifest.json", Typeflag: tar.TypeReg, Mode: 0o644}, []byte(names.Replace(string(manifest))))
	return buf.Bytes(), ok && tw.Close() == nil
}

// wrote reports whether a write succeeded.
func wrote(_ int, err error) bool { return err == nil }

// sha256Of returns the digest of b as "sha256:<hex>".
func sha256Of(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
