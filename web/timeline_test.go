package web

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
)

// TestMachineTimelineAPI boots a machine over real HTTP (the DHCP events
// are recorded in the fleet directly, as kiln serve's DHCP observer does)
// and reads its timeline from GET /api/v1/machines/{mac} and
// GET /api/v1/machines/{mac}/timeline.
func TestMachineTimelineAPI(t *testing.T) {
	ipxe := filepath.Join(t.TempDir(), "snponly.efi")
	if err := os.WriteFile(ipxe, []byte("MZ ipxe"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.HTTPBootFile = ipxe })
	e.addMachine(testMAC, testHostname, e.image)

	// Before any boot: outcome none, no steps.
	var tl fleet.Timeline
	getJSON(t, e, "/api/v1/machines/"+testMAC+"/timeline", &tl)
	if tl.Outcome != fleet.BootNone || tl.Steps == nil || len(tl.Steps) != 0 {
		t.Errorf("timeline before a boot = %+v, want outcome none and steps []", tl)
	}

	dhcp := func(ip string) {
		for _, k := range []fleet.EventKind{fleet.EventOffered, fleet.EventAcked} {
			if _, err := e.fleet.Observe(testMAC, k, ip); err != nil {
				t.Fatal(err)
			}
		}
	}
	kernel, _ := e.man.Artifact("kernel")
	initrd, _ := e.man.Artifact("initrd")
	dhcp("10.77.0.100") // the firmware
	get := func(path string) {
		t.Helper()
		resp, body := e.get(path)
		wantStatus(t, resp, body, http.StatusOK)
	}
	get("/httpboot/" + testMAC + ".efi") // UEFI HTTP Boot: EFI iPXE
	if m := e.machine(testMAC); m.State != fleet.Assigned {
		t.Errorf("after the EFI iPXE: state %s, want assigned until the script", m.State)
	}
	dhcp("10.77.0.100") // iPXE
	token := e.boot(testMAC)
	get("/blobs/" + string(kernel.Digest) + "?mac=" + testMAC)
	get("/blobs/" + string(initrd.Digest) + "?mac=" + testMAC)
	dhcp("10.77.0.100") // the kernel
	get("/identity/" + testMAC + "?token=" + token)
	resp, body := e.do(http.MethodPost, "/phone-home/"+testMAC+"?token="+token, jsonHeader, `{"inputs":"`+string(testInputs)+`"}`)
	wantStatus(t, resp, body, http.StatusOK)

	// GET /api/v1/machines/{mac} keeps every field of the machine record
	// and adds the timeline.
	resp, body = e.get("/api/v1/machines/" + testMAC)
	wantStatus(t, resp, body, http.StatusOK)
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	want := []string{"audit", "created", "events", "generation", "generations", "hostname", "image", "ip", "last_seen", "mac", "machine_id", "mode",
		"reimage_pending", "reported_image", "running_generation", "running_image", "state", "timeline"}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Errorf("GET /api/v1/machines/{mac} fields (-want +got):\n%s", diff)
	}
	var m struct {
		fleet.Machine
		Timeline fleet.Timeline `json:"timeline"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	if m.State != fleet.Ready || m.IP != "10.77.0.100" || m.Hostname != testHostname || len(m.Events) != 13 {
		t.Errorf("machine = %+v, want ready at 10.77.0.100 with 13 events", m.Machine)
	}
	var kinds []fleet.EventKind
	for _, s := range m.Timeline.Steps {
		kinds = append(kinds, s.Kind)
	}
	wantKinds := []fleet.EventKind{
		fleet.EventOffered, fleet.EventAcked, fleet.EventFirstHop, fleet.EventOffered, fleet.EventAcked,
		fleet.EventScript, fleet.EventKernel, fleet.EventInitrd, fleet.EventOffered, fleet.EventAcked,
		fleet.EventIdentity, fleet.EventReady,
	}
	if diff := cmp.Diff(wantKinds, kinds); diff != "" {
		t.Errorf("timeline steps (-want +got):\n%s", diff)
	}
	if m.Timeline.Outcome != fleet.BootReady || m.Timeline.Steps[0].OffsetMS != 0 || !m.Timeline.Start.Equal(m.Timeline.Steps[0].Time) {
		t.Errorf("timeline = %+v, want ready, starting at offset 0", m.Timeline)
	}
	if d := m.Timeline.Steps[2].Detail; d != "httpboot snponly.efi" {
		t.Errorf("firsthop detail = %q, want %q", d, "httpboot snponly.efi")
	}
	for i := 1; i < len(m.Timeline.Steps); i++ {
		if a, b := m.Timeline.Steps[i-1], m.Timeline.Steps[i]; b.OffsetMS < a.OffsetMS || b.Time.Before(a.Time) {
			t.Errorf("step %d (%s at %v ms) is before step %d (%s at %v ms)", i, b.Kind, b.OffsetMS, i-1, a.Kind, a.OffsetMS)
		}
	}
	last := m.Timeline.Steps[len(m.Timeline.Steps)-1]
	if m.Timeline.DurationMS != last.OffsetMS || !m.Timeline.End.Equal(last.Time) {
		t.Errorf("duration %v ms end %v, want the ready step's %v ms %v", m.Timeline.DurationMS, m.Timeline.End, last.OffsetMS, last.Time)
	}

	// The timeline endpoint returns the same timeline.
	var only fleet.Timeline
	getJSON(t, e, "/api/v1/machines/"+testMAC+"/timeline", &only)
	if diff := cmp.Diff(m.Timeline, only); diff != "" {
		t.Errorf("GET .../timeline differs from the machine's timeline (-machine +timeline):\n%s", diff)
	}

	// The list keeps its shape: no timeline there.
	resp, body = e.get("/api/v1/machines")
	wantStatus(t, resp, body, http.StatusOK)
	var list struct {
		Machines []map[string]json.RawMessage `json:"machines"`
	}
	if err := json.Unmarshal(body, &list); err != nil || len(list.Machines) != 1 {
		t.Fatalf("list = %s (%v)", body, err)
	}
	if _, ok := list.Machines[0]["timeline"]; ok {
		t.Errorf("GET /api/v1/machines has a timeline field; the list's shape is a contract")
	}

	for _, tc := range []struct {
		path   string
		status int
	}{
		{"/api/v1/machines/52:54:00:00:00:99/timeline", http.StatusNotFound},
		{"/api/v1/machines/nope/timeline", http.StatusBadRequest},
	} {
		resp, body := e.get(tc.path)
		wantStatus(t, resp, body, tc.status)
		errorMessage(t, body)
	}
}

// TestHTTPBootEvents checks what HTTP Boot records: a UKI is the first hop,
// the script, the kernel and the initrd at once; the EFI iPXE only the
// first hop; HEAD nothing.
func TestHTTPBootEvents(t *testing.T) {
	ipxe := filepath.Join(t.TempDir(), "ipxe-x64.efi")
	if err := os.WriteFile(ipxe, []byte("MZ ipxe"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.HTTPBootFile = ipxe })
	kernel, _ := e.man.Artifact("kernel")
	uki := e.putBlob("uki", []byte("MZ unified kernel image"))
	withUKI := e.publish(images.Manifest{SchemaVersion: 1, Name: "uki", Inputs: testInputs, Artifacts: []images.Artifact{kernel, uki}})
	const ukiMAC, ipxeMAC = "52:54:00:00:00:01", "52:54:00:00:00:02"
	e.addMachine(ukiMAC, "node-uki", withUKI)
	e.addMachine(ipxeMAC, "node-ipxe", e.image)

	kindsOf := func(m fleet.Machine) []string {
		var out []string
		for _, ev := range m.Events {
			out = append(out, string(ev.Kind)+" "+ev.Detail)
		}
		return out
	}
	req, _ := http.NewRequest(http.MethodHead, e.srv.URL+"/httpboot/"+ukiMAC+".efi", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := kindsOf(e.machine(ukiMAC)); len(got) != 1 {
		t.Errorf("after HEAD: events %q, want only assigned", got)
	}
	for _, mac := range []string{ukiMAC, ipxeMAC} {
		resp, body := e.get("/httpboot/" + mac + ".efi")
		wantStatus(t, resp, body, http.StatusOK)
	}
	for _, tc := range []struct {
		mac   string
		state fleet.State
		want  []string
	}{
		{ukiMAC, fleet.Booting, []string{
			"assigned " + string(withUKI), "firsthop httpboot uki", "script " + string(withUKI),
			"kernel " + string(uki.Digest), "initrd " + string(uki.Digest),
		}},
		{ipxeMAC, fleet.Assigned, []string{"assigned " + string(e.image), "firsthop httpboot ipxe-x64.efi"}},
	} {
		m := e.machine(tc.mac)
		if diff := cmp.Diff(tc.want, kindsOf(m)); diff != "" {
			t.Errorf("%s: events (-want +got):\n%s", tc.mac, diff)
		}
		if m.State != tc.state {
			t.Errorf("%s: state %s, want %s", tc.mac, m.State, tc.state)
		}
		if tl := m.Timeline(); tl.Outcome != fleet.BootBooting || !slices.ContainsFunc(tl.Steps, func(s fleet.Step) bool { return s.Kind == fleet.EventFirstHop }) {
			t.Errorf("%s: timeline %+v, want a boot in progress with its first hop", tc.mac, tl)
		}
	}
}

func getJSON(t *testing.T, e *env, path string, v any) {
	t.Helper()
	resp, body := e.get(path)
	wantStatus(t, resp, body, http.StatusOK)
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
}
