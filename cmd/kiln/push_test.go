package main

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

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/images"
)

// runOK runs kiln with args and fails the test unless it exits 0. It
// returns stdout.
func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != exitOK {
		t.Fatalf("kiln %s = %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out.String(), errb.String())
	}
	return out.String()
}

// runCode runs kiln with args and fails the test unless it exits with
// code and says want (a substring) on stderr.
func runCode(t *testing.T, code int, want string, args ...string) {
	t.Helper()
	var out, errb bytes.Buffer
	if got := run(args, &out, &errb); got != code || !strings.Contains(errb.String(), want) {
		t.Errorf("kiln %s = %d, stderr %q; want %d saying %q", strings.Join(args, " "), got, errb.String(), code, want)
	}
}

// httpGet returns the status and body of GET url.
func httpGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// TestPush bakes an image with kiln build into one local store, publishes
// another that shares its kernel into a second local store, and pushes
// both to a running kiln serve: blobs the server has are skipped, and what
// the server then serves is byte for byte what was built.
func TestPush(t *testing.T) {
	url, _ := startServe(t, t.TempDir())
	dir := t.TempDir()
	storeA, storeB := filepath.Join(dir, "a"), filepath.Join(dir, "b")

	var built struct {
		ID        images.Digest     `json:"id"`
		Artifacts []images.Artifact `json:"artifacts"`
	}
	out := runOK(t, "build", writeRecipe(t, dir, "recipe.yaml", ""), "--images", storeA, "--json")
	if err := json.Unmarshal([]byte(out), &built); err != nil {
		t.Fatalf("build --json printed %q: %v", out, err)
	}
	var all []images.Digest
	for _, a := range built.Artifacts {
		all = append(all, a.Digest)
	}

	push := func(store string, id images.Digest) pushJSON {
		t.Helper()
		var res pushJSON
		out := runOK(t, "push", "--server", url, "--images", store, "--json", string(id))
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("push --json printed %q: %v", out, err)
		}
		return res
	}
	if diff := cmp.Diff(pushJSON{ID: built.ID, Uploaded: all, Skipped: []images.Digest{}}, push(storeA, built.ID)); diff != "" {
		t.Errorf("first push (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(pushJSON{ID: built.ID, Uploaded: []images.Digest{}, Skipped: all}, push(storeA, built.ID)); diff != "" {
		t.Errorf("second push (-want +got):\n%s", diff)
	}

	status, body := httpGet(t, url+"/api/v1/images/"+string(built.ID))
	if status != http.StatusOK {
		t.Fatalf("GET /api/v1/images/%s after push = %d: %s", built.ID, status, body)
	}
	var served struct {
		ID        images.Digest     `json:"id"`
		Name      string            `json:"name"`
		Artifacts []images.Artifact `json:"artifacts"`
	}
	if err := json.Unmarshal(body, &served); err != nil {
		t.Fatal(err)
	}
	if served.ID != built.ID || served.Name != "cli" {
		t.Errorf("server shows %s %q, want %s cli", served.ID, served.Name, built.ID)
	}
	if diff := cmp.Diff(built.Artifacts, served.Artifacts); diff != "" {
		t.Errorf("served artifacts (-built +served):\n%s", diff)
	}
	local, err := images.Open(storeA)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range built.Artifacts {
		f, err := local.OpenBlob(a.Digest)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := io.ReadAll(f)
		f.Close()
		if status, got := httpGet(t, url+"/blobs/"+string(a.Digest)); status != http.StatusOK || !bytes.Equal(got, want) {
			t.Errorf("GET /blobs/%s (%s) = %d, %d bytes; want the %d bytes built", a.Digest, a.Name, status, len(got), len(want))
		}
	}

	// A second store with an image sharing the kernel: only the new initrd
	// goes up. Text output says which.
	kernel := built.Artifacts[slices.IndexFunc(built.Artifacts, func(a images.Artifact) bool { return a.Name == "kernel" })]
	kernelBytes, err := os.ReadFile(filepath.Join(dir, "vmlinuz"))
	if err != nil {
		t.Fatal(err)
	}
	idB, initrdB := publishImage(t, storeB, "other", map[string]string{"kernel": string(kernelBytes), "initrd": "another initrd"})
	out = runOK(t, "push", "--server", url, "--images", storeB, string(idB))
	for _, want := range []string{"skip   " + string(kernel.Digest) + " kernel", "upload " + string(initrdB) + " initrd", "pushed " + string(idB) + " (other): 1 uploaded, 1 skipped"} {
		if !strings.Contains(out, want) {
			t.Errorf("push output %q does not say %q", out, want)
		}
	}
	if status, body := httpGet(t, url+"/api/v1/images/"+string(idB)); status != http.StatusOK {
		t.Errorf("GET /api/v1/images/%s after push = %d: %s", idB, status, body)
	}

	absent := string(images.DigestOf([]byte("absent")))
	runCode(t, exitUsage, "not found", "push", "--server", url, "--images", storeA, absent)
	runCode(t, exitUsage, "--server", "push", "--images", storeA, string(built.ID))
	runCode(t, exitUsage, "invalid digest", "push", "--server", url, "--images", storeA, "latest")
	runCode(t, exitFailure, "connect", "push", "--server", "http://127.0.0.1:1", "--images", storeA, string(built.ID))
}

// TestPushRefusedByServer corrupts a local blob: the server finds that its
// bytes do not hash to its digest, refuses it (4xx, exit 2) with its
// reason, and publishes nothing.
func TestPushRefusedByServer(t *testing.T) {
	url, _ := startServe(t, t.TempDir())
	store := filepath.Join(t.TempDir(), "images")
	id, initrd := publishImage(t, store, "corrupt", map[string]string{"kernel": "kernel", "initrd": "initrd!"})
	p := filepath.Join(store, "blobs", "sha256", initrd.Hex())
	os.Chmod(p, 0o644)
	if err := os.WriteFile(p, []byte("INITRD!"), 0o644); err != nil {
		t.Fatal(err)
	}
	runCode(t, exitUsage, "digest mismatch: got "+string(images.DigestOf([]byte("INITRD!"))), "push", "--server", url, "--images", store, string(id))
	if status, _ := httpGet(t, url+"/api/v1/images/"+string(id)); status != http.StatusNotFound {
		t.Errorf("GET image after a refused push = %d, want 404", status)
	}
}

// publishImage publishes an image named name whose artifacts hold the
// given contents into the store at dir, and returns its ID and the digest
// of its initrd.
func publishImage(t *testing.T, dir, name string, contents map[string]string) (images.Digest, images.Digest) {
	t.Helper()
	st, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := images.Manifest{SchemaVersion: 1, Name: name, Inputs: images.DigestOf([]byte(name))}
	var initrd images.Digest
	for _, n := range []string{"kernel", "initrd"} {
		a, err := st.PutBlob(strings.NewReader(contents[n]))
		if err != nil {
			t.Fatal(err)
		}
		a.Name = n
		m.Artifacts = append(m.Artifacts, a)
		if n == "initrd" {
			initrd = a.Digest
		}
	}
	id, err := st.Publish(m)
	if err != nil {
		t.Fatal(err)
	}
	return id, initrd
}
