package web

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/identity"
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
