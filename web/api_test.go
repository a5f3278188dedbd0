package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
)

func machineBody(mac, hostname string, image images.Digest) string {
	return fmt.Sprintf(`{"mac":%q,"hostname":%q,"image":%q}`, mac, hostname, image)
}

func TestCreateMachine(t *testing.T) {
	e := newEnv(t)
	resp, body := e.do(http.MethodPost, "/api/v1/machines", jsonHeader, machineBody("52-54-00-12-34-56", testHostname, e.image))
	wantStatus(t, resp, body, http.StatusCreated)
	var got fleet.Machine
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("reply %q: %v", body, err)
	}
	if got.MAC != testMAC || got.Hostname != testHostname || got.Image != string(e.image) || got.State != fleet.Assigned {
		t.Errorf("created %+v, want %s %s %s assigned", got, testMAC, testHostname, e.image)
	}
	if loc := resp.Header.Get("Location"); loc != "/api/v1/machines/"+testMAC {
		t.Errorf("Location = %q", loc)
	}
	if diff := cmp.Diff(got, e.machine(testMAC)); diff != "" {
		t.Errorf("stored machine differs from the reply (-reply +stored):\n%s", diff)
	}
}

func TestCreateMachineErrors(t *testing.T) {
	e := newEnv(t)
	e.addMachine(testMAC, testHostname, e.image)
	missing := images.DigestOf([]byte("missing"))
	for _, tc := range []struct {
		name    string
		body    string
		want    int
		wantMsg string // substring of the error message
	}{
		{"duplicate MAC", machineBody("52-54-00-12-34-56", "node-2", e.image), http.StatusConflict, "52:54:00:12:34:56"},
		{"duplicate hostname", machineBody("52:54:00:00:00:02", testHostname, e.image), http.StatusConflict, "hostname node-1"},
		{"bad MAC", machineBody("52:54:00:zz", "node-2", e.image), http.StatusBadRequest, `mac "52:54:00:zz"`},
		{"bad hostname", machineBody("52:54:00:00:00:02", "node_2", e.image), http.StatusBadRequest, `hostname "node_2"`},
		{"empty hostname", machineBody("52:54:00:00:00:02", "", e.image), http.StatusBadRequest, "hostname is empty"},
		{"missing image", machineBody("52:54:00:00:00:02", "node-2", missing), http.StatusBadRequest, "image " + string(missing) + " is not in the image store"},
		{"image not an ID", machineBody("52:54:00:00:00:02", "node-2", "ubuntu"), http.StatusBadRequest, `"ubuntu"`},
		{"no image", `{"mac":"52:54:00:00:00:02","hostname":"node-2"}`, http.StatusBadRequest, "image is empty"},
		{"unknown field", `{"mac":"52:54:00:00:00:02","hostname":"node-2","image":"` + string(e.image) + `","labels":{}}`, http.StatusBadRequest, `unknown field "labels"`},
		{"wrong type", `{"mac":52,"hostname":"node-2"}`, http.StatusBadRequest, `field "mac"`},
		{"not an object", `["52:54:00:00:00:02"]`, http.StatusBadRequest, "JSON object"},
		{"trailing garbage", machineBody("52:54:00:00:00:02", "node-2", e.image) + "x", http.StatusBadRequest, "single JSON object"},
		{"two objects", machineBody("52:54:00:00:00:02", "node-2", e.image) + machineBody("52:54:00:00:00:03", "node-3", e.image), http.StatusBadRequest, "single JSON object"},
		{"syntax error", `{"mac":}`, http.StatusBadRequest, "not valid JSON"},
		{"truncated", `{"mac":"52:54:00:00:00:02"`, http.StatusBadRequest, "not valid JSON"},
		{"empty", ``, http.StatusBadRequest, "empty"},
		{"too big", `{"mac":"` + strings.Repeat(" ", maxBody) + `"}`, http.StatusRequestEntityTooLarge, "64 KiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do(http.MethodPost, "/api/v1/machines", jsonHeader, tc.body)
			wantStatus(t, resp, body, tc.want)
			if msg := errorMessage(t, body); !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error %q does not contain %q", msg, tc.wantMsg)
			}
		})
	}
	ms, err := e.fleet.List()
	if err != nil || len(ms) != 1 {
		t.Errorf("after refused creates: %d machines (%v), want 1", len(ms), err)
	}
}

func TestMachinesGetListDelete(t *testing.T) {
	e := newEnv(t)

	resp, body := e.get("/api/v1/machines")
	wantStatus(t, resp, body, http.StatusOK)
	if got := strings.Join(strings.Fields(string(body)), ""); got != `{"machines":[]}` {
		t.Errorf("empty list = %s, want {\"machines\":[]}", body)
	}

	m1 := e.addMachine(testMAC, testHostname, e.image)
	m2 := e.addMachine("52:54:00:00:00:02", "node-2", e.image)

	resp, body = e.get("/api/v1/machines")
	wantStatus(t, resp, body, http.StatusOK)
	var list struct {
		Machines []fleet.Machine `json:"machines"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]fleet.Machine{m2, m1}, list.Machines); diff != "" {
		t.Errorf("list mismatch (-want +got):\n%s", diff)
	}

	resp, body = e.get("/api/v1/machines/52-54-00-12-34-56")
	wantStatus(t, resp, body, http.StatusOK)
	var got fleet.Machine
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m1, got); diff != "" {
		t.Errorf("GET one mismatch (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodDelete, "/api/v1/machines/" + testMAC, http.StatusNoContent},
		{http.MethodGet, "/api/v1/machines/" + testMAC, http.StatusNotFound},
		{http.MethodDelete, "/api/v1/machines/" + testMAC, http.StatusNotFound},
		{http.MethodGet, "/api/v1/machines/nonsense", http.StatusBadRequest},
		{http.MethodPatch, "/api/v1/machines/52:54:00:00:00:02", http.StatusMethodNotAllowed},
		{http.MethodPut, "/api/v1/machines/52:54:00:00:00:99", http.StatusNotFound}, // replace of an unknown machine
		{http.MethodPut, "/api/v1/machines", http.StatusMethodNotAllowed},
	} {
		resp, body := e.do(tc.method, tc.path, jsonHeader, `{"hostname":"x"}`)
		wantStatus(t, resp, body, tc.want)
		if tc.want == http.StatusNoContent {
			if len(body) != 0 {
				t.Errorf("%s %s: 204 with body %q", tc.method, tc.path, body)
			}
			continue
		}
		errorMessage(t, body)
	}
	if m := e.machine("52:54:00:00:00:02"); m.Hostname != "node-2" {
		t.Errorf("PATCH/PUT changed the machine: %+v", m)
	}
}

func TestImagesAPI(t *testing.T) {
	e := newEnv(t)
	resp, body := e.get("/api/v1/images")
	wantStatus(t, resp, body, http.StatusOK)
	var list struct {
		Images []map[string]any `json:"images"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Images) != 1 {
		t.Fatalf("images = %s, want one", body)
	}
	img := list.Images[0]
	created, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(img["created"]))
	for k, want := range map[string]any{
		"id":      string(e.image),
		"name":    "test-image",
		"size":    float64(len(testKernel) + len(testInitrd)),
		"inputs":  string(testInputs),
		"cmdline": testCmdline,
	} {
		if img[k] != want {
			t.Errorf("image %s = %v, want %v", k, img[k], want)
		}
	}
	if created.IsZero() || len(img["artifacts"].([]any)) != 2 {
		t.Errorf("image created %v, artifacts %v; want a time and two artifacts", img["created"], img["artifacts"])
	}

	resp, body = e.get("/api/v1/images/" + string(e.image))
	wantStatus(t, resp, body, http.StatusOK)
	var one map[string]any
	if err := json.Unmarshal(body, &one); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(img, one); diff != "" {
		t.Errorf("GET one image differs from its list entry (-list +one):\n%s", diff)
	}

	resp, body = e.get("/api/v1/images/" + string(images.DigestOf([]byte("missing"))))
	wantStatus(t, resp, body, http.StatusNotFound)
	resp, body = e.get("/api/v1/images/latest")
	wantStatus(t, resp, body, http.StatusBadRequest)
}
