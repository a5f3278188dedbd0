package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/identity"
	"github.com/kiln-dev/kiln/images"
)

// FuzzCreateMachineBody posts arbitrary bodies to POST /api/v1/machines.
// No body may cause a 5xx, and a 201 must mean that the body was one JSON
// object whose fields are what was stored, and that the machine can be read
// back through the API.
func FuzzCreateMachineBody(f *testing.F) {
	e := newEnv(f)
	f.Add([]byte(machineBody("52:54:00:00:00:01", "fuzz-1", e.image)))
	f.Add([]byte(machineBody("52-54-00-00-00-02", "fuzz-2.rack1", e.image)))
	f.Add([]byte(`{"mac":"5254.0000.0003","hostname":"fuzz-3","image":"` + string(e.image) + `"}` + "\n"))
	f.Add([]byte(`{"MAC":"52:54:00:00:00:04","Hostname":"fuzz-4","Image":"` + string(e.image) + `"}`))
	f.Add([]byte(`{"mac":"52:54:00:00:00:05","hostname":"fuzz-5","image":"` + string(e.image) + `","x":1}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{}{}`))

	f.Fuzz(func(t *testing.T, body []byte) {
		e := e.withT(t)
		resp, reply := e.do(http.MethodPost, "/api/v1/machines", jsonHeader, string(body))
		if resp.StatusCode >= 500 {
			t.Fatalf("POST %q: status %d: %s", body, resp.StatusCode, reply)
		}
		if resp.StatusCode != http.StatusCreated {
			errorMessage(t, reply)
			return
		}
		var sent fleet.NewMachine
		if err := json.Unmarshal(body, &sent); err != nil {
			t.Fatalf("POST %q: 201 for a body that is not one JSON object: %v", body, err)
		}
		var created fleet.Machine
		if err := json.Unmarshal(reply, &created); err != nil {
			t.Fatalf("POST %q: 201 reply %q: %v", body, reply, err)
		}
		mac, err := identity.NormalizeMAC(sent.MAC)
		if err != nil || created.MAC != mac || created.Hostname != sent.Hostname || created.Image != sent.Image {
			t.Fatalf("POST %q: created %+v, want mac %q (%v), hostname %q, image %q", body, created, mac, err, sent.Hostname, sent.Image)
		}
		resp, reply = e.get("/api/v1/machines/" + url.PathEscape(created.MAC))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %q: 201, then GET %s: status %d: %s", body, created.MAC, resp.StatusCode, reply)
		}
		var got fleet.Machine
		if err := json.Unmarshal(reply, &got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(created, got); diff != "" {
			t.Fatalf("POST %q: GET differs from the 201 reply (-created +got):\n%s", body, diff)
		}
	})
}

// FuzzPutManifest puts arbitrary bodies to PUT /api/v1/images/{id}, where
// {id} is the body's own sha256, so that the fuzzer gets past the digest
// check and explores the decoder. No body may cause a 5xx; a refusal must
// leave no image with that ID; a 2xx must mean that the body was a canonical
// manifest, stored byte for byte, retrievable through the API under that ID
// with the artifacts it named, each of them stored. The same body under
// another ID is always refused. Seeds: testdata/fuzz/FuzzPutManifest.
func FuzzPutManifest(f *testing.F) {
	e := newEnv(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		e := e.withT(t)
		id := images.DigestOf(body)
		resp, reply := e.do(http.MethodPut, "/api/v1/images/"+string(id), jsonHeader, string(body))
		if resp.StatusCode >= 500 {
			t.Fatalf("PUT %q: status %d: %s", body, resp.StatusCode, reply)
		}
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
			errorMessage(t, reply)
			if _, err := e.images.Get(id); !errors.Is(err, images.ErrNotFound) {
				t.Fatalf("PUT %q: refused with %d, yet Get(%s) = %v", body, resp.StatusCode, id, err)
			}
			return
		}
		var sent images.Manifest
		if err := json.Unmarshal(body, &sent); err != nil {
			t.Fatalf("PUT %q: %d for a body that is not a manifest: %v", body, resp.StatusCode, err)
		}
		if again, err := sent.Canonical(); err != nil || !bytes.Equal(again, body) {
			t.Fatalf("PUT %q: %d for a body that is not canonical (re-encoded %q, %v)", body, resp.StatusCode, again, err)
		}
		stored, err := e.images.ManifestBytes(id)
		if err != nil || !bytes.Equal(stored, body) {
			t.Fatalf("PUT %q: %d, but the store holds %q (%v)", body, resp.StatusCode, stored, err)
		}
		resp, reply = e.get("/api/v1/images/" + string(id))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT %q: 2xx, then GET %s: status %d: %s", body, id, resp.StatusCode, reply)
		}
		var got imageJSON
		if err := json.Unmarshal(reply, &got); err != nil {
			t.Fatal(err)
		}
		if got.ID != id || got.Name != sent.Name || got.Inputs != sent.Inputs || got.Cmdline != sent.Cmdline {
			t.Fatalf("PUT %q: GET shows %+v", body, got)
		}
		if diff := cmp.Diff(sent.Artifacts, got.Artifacts); diff != "" {
			t.Fatalf("PUT %q: artifacts (-sent +stored):\n%s", body, diff)
		}
		for _, a := range got.Artifacts {
			if !e.images.HasBlob(a.Digest, a.Size) {
				t.Fatalf("PUT %q: published with artifact %s not stored", body, a.Name)
			}
		}
		other := images.DigestOf(append(bytes.Clone(body), ' '))
		resp, reply = e.do(http.MethodPut, "/api/v1/images/"+string(other), jsonHeader, string(body))
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("PUT %q under ID %s: status %d, want 400: %s", body, other, resp.StatusCode, reply)
		}
	})
}

// TestPutManifestSeeds checks that the seed corpus reaches every outcome
// it is meant to: an existing image, new ones, a missing blob and refusals.
func TestPutManifestSeeds(t *testing.T) {
	e := newEnv(t)
	for name, want := range map[string]int{
		"existing":               http.StatusOK,
		"new_name":               http.StatusCreated,
		"kernel_only":            http.StatusCreated,
		"html_escaped_canonical": http.StatusCreated,
		"missing_blob":           http.StatusConflict,
		"wrong_size":             http.StatusConflict,
		"negative_size":          http.StatusBadRequest,
		"indented":               http.StatusBadRequest,
		"html_escape":            http.StatusBadRequest,
		"duplicate_key":          http.StatusBadRequest,
		"key_case":               http.StatusBadRequest,
		"empty":                  http.StatusBadRequest,
	} {
		t.Run(name, func(t *testing.T) {
			body := readSeed(t, "testdata/fuzz/FuzzPutManifest/"+name)
			resp, reply := e.do(http.MethodPut, "/api/v1/images/"+string(images.DigestOf(body)), jsonHeader, string(body))
			wantStatus(t, resp, reply, want)
		})
	}
}

// readSeed returns the []byte of a one-value fuzz corpus file.
func readSeed(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, lit, ok := bytes.Cut(bytes.TrimSpace(b), []byte("\n[]byte("))
	if !ok || !bytes.HasSuffix(lit, []byte(")")) {
		t.Fatalf("%s is not a go test fuzz v1 file of one []byte", path)
	}
	s, err := strconv.Unquote(string(lit[:len(lit)-1]))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(s)
}

// FuzzInstallReport posts arbitrary bodies as an installer's report, with
// the boot's valid token: nothing may be a 5xx, and a 200 must be exactly
// the two states the body can name, with the reason kept for failed.
func FuzzInstallReport(f *testing.F) {
	for _, s := range []string{`{"state":"installed"}`, `{"state":"failed","reason":"sha256 mismatch"}`,
		`{"state":"failed"}`, `{"state":"installed","reason":""}`, `{"state":"Installed"}`, `{}`, `[]`, "\x00"} {
		f.Add([]byte(s))
	}
	base := installEnv(f)
	var n atomic.Uint32
	f.Fuzz(func(t *testing.T, body []byte) {
		e := base.withT(t)
		i := n.Add(1)
		mac := fmt.Sprintf("52:54:01:%02x:%02x:%02x", byte(i>>16), byte(i>>8), byte(i))
		if _, err := e.fleet.Create(fleet.NewMachine{MAC: mac, Hostname: fmt.Sprintf("fuzz-%d", i), Image: string(e.image), Mode: fleet.Install}, "fuzz"); err != nil {
			t.Fatal(err)
		}
		_, script := e.get("/boot/" + mac + ".ipxe")
		m := installToken.FindStringSubmatch(string(script))
		if m == nil {
			t.Fatalf("no install token in\n%s", script)
		}
		resp, reply := e.do(http.MethodPost, "/install/"+mac+"/report?token="+m[3], jsonHeader, string(body))
		got := e.machine(mac)
		switch resp.StatusCode {
		case http.StatusOK:
			var rep installReport
			if err := json.Unmarshal(body, &rep); err != nil {
				t.Fatalf("200 for %q, which is not a report: %v", body, err)
			}
			if want := map[string]fleet.State{"installed": fleet.Installed, "failed": fleet.Failed}[rep.State]; got.State != want {
				t.Fatalf("report %q: state %s, want %s", body, got.State, want)
			}
			if rep.State == "failed" && got.Reason == "" {
				t.Fatalf("report %q: failed without its reason", body)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			errorMessage(t, reply)
			if got.State != fleet.Installing || got.Installed != 0 {
				t.Fatalf("refused report %q changed the machine: state %s installed %d", body, got.State, got.Installed)
			}
		default:
			t.Fatalf("report %q: status %d: %s", body, resp.StatusCode, reply)
		}
	})
}
