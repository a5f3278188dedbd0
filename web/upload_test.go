package web

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/images"
)

func withMaxBlob(n int64) envOption { return func(c *Config) { c.MaxBlobSize = n } }

// storeFiles lists the files under dir (a store's blobs/sha256, tmp, ...).
func storeFiles(t *testing.T, e *env, sub string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.images.Root(), sub))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	return names
}

// putBlobReq uploads b as blob d.
func (e *env) putBlobReq(d images.Digest, b []byte) (*http.Response, []byte) {
	e.t.Helper()
	return e.do(http.MethodPut, "/api/v1/blobs/"+string(d), http.Header{"Content-Type": {"application/octet-stream"}}, string(b))
}

func TestPutBlob(t *testing.T) {
	e := newEnv(t)
	content := []byte("a fresh squashfs")
	d := images.DigestOf(content)
	path := "/api/v1/blobs/" + string(d)

	resp, body := e.do(http.MethodHead, path, nil, "")
	wantStatus(t, resp, body, http.StatusNotFound)

	resp, body = e.putBlobReq(d, content)
	wantStatus(t, resp, body, http.StatusCreated)
	var got blobJSON
	if err := json.Unmarshal(body, &got); err != nil || got.Digest != d || got.Size != int64(len(content)) {
		t.Errorf("PUT reply %s (%v), want digest %s size %d", body, err, d, len(content))
	}
	if loc := resp.Header.Get("Location"); loc != "/blobs/"+string(d) {
		t.Errorf("Location = %q", loc)
	}

	resp, body = e.do(http.MethodHead, path, nil, "")
	wantStatus(t, resp, body, http.StatusOK)
	if resp.ContentLength != int64(len(content)) || len(body) != 0 {
		t.Errorf("HEAD: Content-Length %d, %d body bytes; want %d and 0", resp.ContentLength, len(body), len(content))
	}
	resp, body = e.get("/blobs/" + string(d))
	wantStatus(t, resp, body, http.StatusOK)
	if !bytes.Equal(body, content) {
		t.Errorf("GET /blobs/%s = %q, want %q", d, body, content)
	}

	// Again: 200, and the store is unchanged.
	resp, body = e.putBlobReq(d, content)
	wantStatus(t, resp, body, http.StatusOK)
	if tmp := storeFiles(t, e, "tmp"); len(tmp) != 0 {
		t.Errorf("tmp/ holds %q after uploads", tmp)
	}
}

// TestPutBlobRefused checks that no refused upload leaves anything in the
// store: not in blobs/, not in tmp/.
func TestPutBlobRefused(t *testing.T) {
	e := newEnv(t, withMaxBlob(64))
	good := []byte("the bytes the client meant")
	for _, tc := range []struct {
		name    string
		path    string
		body    string
		chunked bool // send without Content-Length
		want    int
		wantMsg string
	}{
		{"digest mismatch", "/api/v1/blobs/" + string(images.DigestOf(good)), "other bytes", false, http.StatusBadRequest,
			"digest mismatch: got " + string(images.DigestOf([]byte("other bytes")))},
		{"digest mismatch, chunked", "/api/v1/blobs/" + string(images.DigestOf(good)), "other bytes", true, http.StatusBadRequest, "digest mismatch"},
		{"truncated", "/api/v1/blobs/" + string(images.DigestOf(good)), string(good[:10]), false, http.StatusBadRequest, "digest mismatch"},
		{"too big", "/api/v1/blobs/" + string(images.DigestOf(bytes.Repeat([]byte("x"), 65))), strings.Repeat("x", 65), false, http.StatusRequestEntityTooLarge, "64 bytes"},
		{"too big, chunked", "/api/v1/blobs/" + string(images.DigestOf(bytes.Repeat([]byte("x"), 65))), strings.Repeat("x", 65), true, http.StatusRequestEntityTooLarge, "64 bytes"},
		{"bad digest", "/api/v1/blobs/sha256:abc", "x", false, http.StatusBadRequest, "64 hex digits"},
		{"not sha256", "/api/v1/blobs/md5:" + strings.Repeat("0", 32), "x", false, http.StatusBadRequest, "sha256:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := storeFiles(t, e, "blobs/sha256")
			var resp *http.Response
			var body []byte
			if tc.chunked {
				resp, body = e.doReader(http.MethodPut, tc.path, nil, io.MultiReader(strings.NewReader(tc.body)), -1)
			} else {
				resp, body = e.do(http.MethodPut, tc.path, nil, tc.body)
			}
			wantStatus(t, resp, body, tc.want)
			if msg := errorMessage(t, body); !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error %q does not contain %q", msg, tc.wantMsg)
			}
			if diff := cmp.Diff(before, storeFiles(t, e, "blobs/sha256")); diff != "" {
				t.Errorf("blobs/ changed (-before +after):\n%s", diff)
			}
			if tmp := storeFiles(t, e, "tmp"); len(tmp) != 0 {
				t.Errorf("tmp/ holds %q", tmp)
			}
		})
	}
	resp, body := e.do(http.MethodHead, "/api/v1/blobs/"+string(images.DigestOf(good)), nil, "")
	wantStatus(t, resp, body, http.StatusNotFound)
}

// doReader sends a request with a streamed body of the given length (-1:
// unknown, sent chunked).
func (e *env) doReader(method, path string, header http.Header, body io.Reader, length int64) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	req.ContentLength = length
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, b
}

// readSpy records whether anything read from it.
type readSpy struct {
	r    io.Reader
	read bool
}

func (s *readSpy) Read(p []byte) (int, error) {
	s.read = true
	return s.r.Read(p)
}

// A client that sends Expect: 100-continue does not send a blob the server
// already has.
func TestPutBlobExistingNotRead(t *testing.T) {
	e := newEnv(t)
	kernel, _ := e.man.Artifact("kernel")
	spy := &readSpy{r: bytes.NewReader(testKernel)}
	req, err := http.NewRequest(http.MethodPut, e.srv.URL+"/api/v1/blobs/"+string(kernel.Digest), spy)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(testKernel))
	req.Header.Set("Expect", "100-continue")
	client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantStatus(t, resp, body, http.StatusOK)
	if spy.read {
		t.Errorf("the client sent the body of a blob the server has")
	}
}

// manifestBody returns the canonical bytes of m and its image ID.
func manifestBody(t testing.TB, m images.Manifest) ([]byte, images.Digest) {
	t.Helper()
	b, err := m.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	return b, images.DigestOf(b)
}

func TestPutImage(t *testing.T) {
	e := newEnv(t)
	squash := []byte("squashfs bytes")
	resp, body := e.putBlobReq(images.DigestOf(squash), squash)
	wantStatus(t, resp, body, http.StatusCreated)
	kernel, _ := e.man.Artifact("kernel")
	m := images.Manifest{SchemaVersion: 1, Name: "pushed", Inputs: images.DigestOf([]byte("pushed")), Cmdline: "quiet",
		Artifacts: []images.Artifact{kernel, {Name: "squashfs", Digest: images.DigestOf(squash), Size: int64(len(squash))}}}
	b, id := manifestBody(t, m)

	resp, body = e.do(http.MethodPut, "/api/v1/images/"+string(id), jsonHeader, string(b))
	wantStatus(t, resp, body, http.StatusCreated)
	var created imageJSON
	if err := json.Unmarshal(body, &created); err != nil || created.ID != id || created.Name != "pushed" {
		t.Fatalf("PUT reply %s (%v), want image %s", body, err, id)
	}
	resp, body = e.get("/api/v1/images/" + string(id))
	wantStatus(t, resp, body, http.StatusOK)
	var got imageJSON
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(created, got); diff != "" {
		t.Errorf("GET differs from the PUT reply (-put +get):\n%s", diff)
	}
	if diff := cmp.Diff(m.Artifacts, got.Artifacts); diff != "" {
		t.Errorf("artifacts (-sent +stored):\n%s", diff)
	}
	stored, err := e.images.ManifestBytes(id)
	if err != nil || !bytes.Equal(stored, b) {
		t.Errorf("stored manifest %q (%v), want the bytes sent %q", stored, err, b)
	}

	resp, body = e.do(http.MethodPut, "/api/v1/images/"+string(id), jsonHeader, string(b))
	wantStatus(t, resp, body, http.StatusOK)
	// The image the environment published itself already exists too.
	own, ownID := manifestBody(t, e.man)
	if ownID != e.image {
		t.Fatalf("canonical bytes of the env's manifest hash to %s, not %s", ownID, e.image)
	}
	resp, body = e.do(http.MethodPut, "/api/v1/images/"+string(ownID), jsonHeader, string(own))
	wantStatus(t, resp, body, http.StatusOK)
}

func TestPutImageRefused(t *testing.T) {
	e := newEnv(t)
	kernel, _ := e.man.Artifact("kernel")
	missing := images.Artifact{Name: "squashfs", Digest: images.DigestOf([]byte("never uploaded")), Size: 14}
	base := images.Manifest{SchemaVersion: 1, Name: "refused", Inputs: images.DigestOf([]byte("refused")), Artifacts: []images.Artifact{kernel}}
	with := func(f func(*images.Manifest)) images.Manifest {
		m := base
		m.Artifacts = slices.Clone(base.Artifacts)
		f(&m)
		return m
	}
	canonical := func(m images.Manifest) (string, string) {
		b, id := manifestBody(t, m)
		return "/api/v1/images/" + string(id), string(b)
	}
	hashed := func(body string) (string, string) {
		return "/api/v1/images/" + string(images.DigestOf([]byte(body))), body
	}
	good, goodID := manifestBody(t, base)
	indented, _ := json.MarshalIndent(base, "", "  ")
	for _, tc := range []struct {
		name    string
		req     upReq
		want    int
		wantMsg string
	}{
		{"missing blob", tcReq(canonical(with(func(m *images.Manifest) { m.Artifacts = append(m.Artifacts, missing) }))),
			http.StatusConflict, "artifact squashfs (" + string(missing.Digest)},
		{"wrong size", tcReq(canonical(with(func(m *images.Manifest) { m.Artifacts[0].Size++ }))), http.StatusConflict, "artifact kernel"},
		{"body does not hash to the URL", upReq{"/api/v1/images/" + string(e.image), string(good)}, http.StatusBadRequest,
			"hashes to " + string(goodID) + ", not to the image ID " + string(e.image)},
		{"not canonical", tcReq(hashed(string(indented))), http.StatusBadRequest, "canonical encoding: re-encoded it is image " + string(goodID)},
		{"trailing newline", tcReq(hashed(string(good) + "\n")), http.StatusBadRequest, "canonical"},
		{"field case", tcReq(hashed(strings.Replace(string(good), `"name"`, `"Name"`, 1))), http.StatusBadRequest, "canonical"},
		{"unknown field", tcReq(hashed(strings.Replace(string(good), `{`, `{"created":"now",`, 1))), http.StatusBadRequest, `unknown field "created"`},
		{"invalid", tcReq(canonical(with(func(m *images.Manifest) { m.SchemaVersion = 2 }))), http.StatusBadRequest, "schemaVersion 2"},
		{"no artifacts", tcReq(canonical(with(func(m *images.Manifest) { m.Artifacts = nil }))), http.StatusBadRequest, "no artifacts"},
		{"not JSON", tcReq(hashed("kernel")), http.StatusBadRequest, "not valid JSON"},
		{"empty", tcReq(hashed("")), http.StatusBadRequest, "empty"},
		{"bad id", upReq{"/api/v1/images/latest", string(good)}, http.StatusBadRequest, "image id"},
		{"too big", tcReq(hashed(strings.Repeat(" ", maxBody+1))), http.StatusRequestEntityTooLarge, "64 KiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do(http.MethodPut, tc.req.path, jsonHeader, tc.req.body)
			wantStatus(t, resp, body, tc.want)
			if msg := errorMessage(t, body); !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error %q does not contain %q", msg, tc.wantMsg)
			}
		})
	}
	if list, err := e.images.List(); err != nil || len(list) != 1 {
		t.Errorf("after refused uploads the store lists %d images (%v), want 1", len(list), err)
	}
	if tmp := storeFiles(t, e, "tmp"); len(tmp) != 0 {
		t.Errorf("tmp/ holds %q", tmp)
	}
}

// upReq is a path and a body to PUT.
type upReq struct{ path, body string }

func tcReq(path, body string) upReq { return upReq{path, body} }

func TestUploadMethods(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/api/v1/blobs/" + string(images.DigestOf(testKernel)), http.StatusMethodNotAllowed},
		{http.MethodPost, "/api/v1/blobs/" + string(images.DigestOf(testKernel)), http.StatusMethodNotAllowed},
		{http.MethodDelete, "/api/v1/images/" + string(e.image), http.StatusMethodNotAllowed},
		{http.MethodPost, "/api/v1/images/" + string(e.image), http.StatusMethodNotAllowed},
	} {
		resp, body := e.do(tc.method, tc.path, nil, "")
		wantStatus(t, resp, body, tc.want)
	}
}

func TestSizeLimit(t *testing.T) {
	for n, want := range map[int64]string{
		64 << 10: "64 KiB", 64 << 30: "64 GiB", 1 << 20: "1 MiB", 1000: "1000 bytes", 1536: "1536 bytes", 3 << 40: "3 TiB",
	} {
		if got := sizeLimit(n); got != want {
			t.Errorf("sizeLimit(%d) = %q, want %q", n, got, want)
		}
	}
}
