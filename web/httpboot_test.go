package web

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
)

func TestHTTPBoot(t *testing.T) {
	ipxe := filepath.Join(t.TempDir(), "snponly.efi")
	if err := os.WriteFile(ipxe, []byte("MZ ipxe"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.HTTPBootFile = ipxe })
	kernel, _ := e.man.Artifact("kernel")
	uki := e.putBlob("uki", []byte("MZ unified kernel image"))
	withUKI := e.publish(images.Manifest{SchemaVersion: 1, Name: "uki", Inputs: testInputs, Artifacts: []images.Artifact{kernel, uki}})
	e.addMachine(testMAC, testHostname, withUKI)
	e.addMachine("52:54:00:00:00:02", "node-2", e.image)

	for _, tc := range []struct {
		name, path string
		status     int
		body       string
	}{
		{"uki", "/httpboot/" + testMAC + ".efi", http.StatusOK, "MZ unified kernel image"},
		{"no uki: ipxe", "/httpboot/52:54:00:00:00:02.efi", http.StatusOK, "MZ ipxe"},
		{"unknown machine", "/httpboot/52:54:00:00:00:09.efi", http.StatusNotFound, ""},
		{"bad mac", "/httpboot/nope.efi", http.StatusBadRequest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.get(tc.path)
			wantStatus(t, resp, body, tc.status)
			if tc.body != "" && string(body) != tc.body {
				t.Errorf("GET %s = %q, want %q", tc.path, body, tc.body)
			}
		})
	}
	if m := e.machine(testMAC); m.State != fleet.Booting || !hasEvent(m, fleet.EventScript) {
		t.Errorf("after HTTP Boot: state %s events %v, want booting", m.State, m.Events)
	}

	// HEAD answers without starting a boot (OVMF probes first).
	e.addMachine("52:54:00:00:00:03", "node-3", withUKI)
	req, _ := http.NewRequest(http.MethodHead, e.srv.URL+"/httpboot/52:54:00:00:00:03.efi", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len("MZ unified kernel image")) {
		t.Errorf("HEAD = %d length %d, want 200 with the UKI's length", resp.StatusCode, resp.ContentLength)
	}
	if m := e.machine("52:54:00:00:00:03"); m.State != fleet.Assigned {
		t.Errorf("after HEAD: state %s, want assigned", m.State)
	}

	// Without an iPXE binary, a machine without a UKI is refused.
	e2 := newEnv(t)
	e2.addMachine(testMAC, testHostname, e2.image)
	resp2, body := e2.get("/httpboot/" + testMAC + ".efi")
	wantStatus(t, resp2, body, http.StatusNotFound)
}
