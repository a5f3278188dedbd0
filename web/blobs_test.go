package web

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
)

func TestBlobGet(t *testing.T) {
	e := newEnv(t)
	kernel, _ := e.man.Artifact("kernel")
	resp, body := e.get("/blobs/" + string(kernel.Digest))
	wantStatus(t, resp, body, http.StatusOK)
	if !bytes.Equal(body, testKernel) {
		t.Errorf("GET kernel = %q, want %q", body, testKernel)
	}
	for k, want := range map[string]string{
		"ETag":          `"` + string(kernel.Digest) + `"`,
		"Cache-Control": "public, max-age=31536000, immutable",
		"Content-Type":  "application/octet-stream",
		"Accept-Ranges": "bytes",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
}

func TestBlobHeadRangeConditional(t *testing.T) {
	e := newEnv(t)
	kernel, _ := e.man.Artifact("kernel")
	path := "/blobs/" + string(kernel.Digest)

	resp, body := e.do(http.MethodHead, path, nil, "")
	wantStatus(t, resp, body, http.StatusOK)
	if len(body) != 0 || resp.ContentLength != int64(len(testKernel)) {
		t.Errorf("HEAD: %d body bytes, Content-Length %d; want 0 and %d", len(body), resp.ContentLength, len(testKernel))
	}

	resp, body = e.do(http.MethodGet, path, http.Header{"Range": {"bytes=10-19"}}, "")
	wantStatus(t, resp, body, http.StatusPartialContent)
	if want := testKernel[10:20]; !bytes.Equal(body, want) {
		t.Errorf("GET Range bytes=10-19 = %q, want %q", body, want)
	}
	if got, want := resp.Header.Get("Content-Range"), "bytes 10-19/43"; got != want {
		t.Errorf("Content-Range = %q, want %q", got, want)
	}

	resp, body = e.do(http.MethodGet, path, http.Header{"If-None-Match": {`"` + string(kernel.Digest) + `"`}}, "")
	wantStatus(t, resp, body, http.StatusNotModified)
}

func TestBlobBadAndMissing(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/blobs/sha256:abc", http.StatusBadRequest},
		{"/blobs/md5:" + strings.Repeat("0", 32), http.StatusBadRequest},
		{"/blobs/" + strings.ToUpper(string(images.DigestOf([]byte("x")))), http.StatusBadRequest},
		{"/blobs/" + string(images.DigestOf([]byte("not stored"))), http.StatusNotFound},
		// A manifest is not a blob.
		{"/blobs/" + string(e.image), http.StatusNotFound},
	} {
		resp, body := e.get(tc.path)
		wantStatus(t, resp, body, tc.want)
		errorMessage(t, body)
	}
}

// TestBlobPathTricks checks that no path reaches a file outside the blob
// directory: mux cleans the path (301) or the digest check refuses it.
func TestBlobPathTricks(t *testing.T) {
	e := newEnv(t)
	secret := []byte("secret: not a blob")
	root := e.images.Root()
	if err := os.WriteFile(filepath.Join(filepath.Dir(root), "secret"), secret, 0o644); err != nil {
		t.Fatal(err)
	}
	kernel, _ := e.man.Artifact("kernel")
	manifest, err := os.ReadFile(filepath.Join(root, "manifests", "sha256", e.image.Hex()+".json"))
	if err != nil {
		t.Fatal(err)
	}
	passwd, _ := os.ReadFile("/etc/passwd")
	for _, path := range []string{
		"/blobs/../../etc/passwd",
		"/blobs/%2e%2e/%2e%2e/etc/passwd",
		"/blobs/sha256:..%2f..",
		"/blobs/sha256:..%2f..%2f..%2fsecret",
		"/blobs/..%2f..%2fsecret",
		"/blobs/%2e%2e%2f%2e%2e%2fsecret",
		"/blobs/sha256%3a" + kernel.Digest.Hex() + "%2f..%2f..%2f..%2fmanifests%2fsha256%2f" + e.image.Hex() + ".json",
		"/blobs/" + string(kernel.Digest) + "/../../../manifests/sha256/" + e.image.Hex() + ".json",
		"/blobs/sha256:" + strings.Repeat("..%2f", 10) + "etc%2fpasswd",
		"/blobs/%00",
	} {
		t.Run(path, func(t *testing.T) {
			resp, body := e.get(path)
			switch resp.StatusCode {
			case http.StatusBadRequest, http.StatusNotFound:
			case http.StatusMovedPermanently:
				// The cleaned path must not serve anything either.
				loc := resp.Header.Get("Location")
				resp, body = e.get(loc)
				if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusBadRequest {
					t.Errorf("GET %s -> %s: status %d, want 404 or 400", path, loc, resp.StatusCode)
				}
			default:
				t.Errorf("GET %s: status %d, want 400, 404 or 301; body %q", path, resp.StatusCode, body)
			}
			for _, foreign := range [][]byte{secret, manifest, passwd} {
				if len(foreign) > 0 && bytes.Contains(body, foreign) {
					t.Errorf("GET %s served a file outside the blob store: %q", path, body)
				}
			}
		})
	}
}

func TestBlobFetchEvents(t *testing.T) {
	e := newEnv(t)
	e.addMachine(testMAC, testHostname, e.image)
	kernel, _ := e.man.Artifact("kernel")
	initrd, _ := e.man.Artifact("initrd")

	// HEAD and unknown MACs record nothing, and still serve.
	resp, body := e.do(http.MethodHead, "/blobs/"+string(kernel.Digest)+"?mac="+testMAC, nil, "")
	wantStatus(t, resp, body, http.StatusOK)
	resp, body = e.get("/blobs/" + string(kernel.Digest) + "?mac=52:54:00:99:99:99")
	wantStatus(t, resp, body, http.StatusOK)
	resp, body = e.get("/blobs/" + string(kernel.Digest) + "?mac=garbage")
	wantStatus(t, resp, body, http.StatusOK)
	if m := e.machine(testMAC); hasEvent(m, fleet.EventKernel) {
		t.Fatalf("kernel event recorded without a GET by the machine: %v", m.Events)
	}

	resp, body = e.get("/blobs/" + string(kernel.Digest) + "?mac=52-54-00-12-34-56")
	wantStatus(t, resp, body, http.StatusOK)
	resp, body = e.get("/blobs/" + string(initrd.Digest) + "?mac=" + testMAC)
	wantStatus(t, resp, body, http.StatusOK)
	m := e.machine(testMAC)
	for _, kind := range []fleet.EventKind{fleet.EventKernel, fleet.EventInitrd} {
		if !hasEvent(m, kind) {
			t.Errorf("no %s event after GET with ?mac=: %v", kind, m.Events)
		}
	}
}
