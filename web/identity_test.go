package web

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/identity"
)

func TestIdentity(t *testing.T) {
	e := newEnv(t)
	added := e.addMachine(testMAC, testHostname, e.image)
	if len(added.MachineID) != 32 {
		t.Fatalf("machine ID %q, want 32 hex digits", added.MachineID)
	}
	want := identity.Identity{Hostname: testHostname, MAC: testMAC, Image: string(e.image), MachineID: added.MachineID, Generation: 1}
	token := e.boot(testMAC)

	resp, body := e.get("/identity/52-54-00-12-34-56?token=" + token)
	wantStatus(t, resp, body, http.StatusOK)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var got identity.Identity
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("identity %q: %v", body, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("identity JSON mismatch (-want +got):\n%s", diff)
	}

	resp, body = e.get("/identity/" + testMAC + "?format=env&token=" + token)
	wantStatus(t, resp, body, http.StatusOK)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("env Content-Type = %q, want text/plain", resp.Header.Get("Content-Type"))
	}
	if diff := cmp.Diff(string(want.Env()), string(body)); diff != "" {
		t.Errorf("identity env mismatch (-want +got):\n%s", diff)
	}
	if m := e.machine(testMAC); !hasEvent(m, fleet.EventIdentity) {
		t.Errorf("no identity event: %v", m.Events)
	}
}

func TestIdentityErrors(t *testing.T) {
	e := newEnv(t)
	e.addMachine(testMAC, testHostname, e.image)
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/identity/52:54:00:99:99:99", http.StatusForbidden}, // a 403 does not say which MACs exist
		{"/identity/" + testMAC, http.StatusForbidden},        // no token
		{"/identity/nonsense", http.StatusBadRequest},
		{"/identity/" + testMAC + "?format=yaml", http.StatusBadRequest},
	} {
		resp, body := e.get(tc.path)
		wantStatus(t, resp, body, tc.want)
		errorMessage(t, body)
	}
	if m := e.machine(testMAC); hasEvent(m, fleet.EventIdentity) {
		t.Errorf("identity event recorded for a refused request: %v", m.Events)
	}
}
