package web

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
)

var (
	formHeader = http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	jsonHeader = http.Header{"Content-Type": {"application/json"}}
)

func TestPhoneHome(t *testing.T) {
	wrongInputs := images.DigestOf([]byte("other inputs"))
	for _, tc := range []struct {
		name       string
		header     http.Header
		body       func(e *env) string
		wantState  fleet.State
		wantImage  func(e *env) string
		wantReason string // substring
	}{
		{
			name: "inputs form", header: formHeader,
			body:      func(e *env) string { return url.Values{"inputs": {string(testInputs)}}.Encode() },
			wantState: fleet.Ready, wantImage: func(e *env) string { return string(e.image) },
		},
		{
			name: "inputs JSON", header: jsonHeader,
			body:      func(e *env) string { return `{"inputs":"` + string(testInputs) + `","uptime":3}` },
			wantState: fleet.Ready, wantImage: func(e *env) string { return string(e.image) },
		},
		{
			name: "image form", header: formHeader,
			body:      func(e *env) string { return "image=" + url.QueryEscape(string(e.image)) },
			wantState: fleet.Ready, wantImage: func(e *env) string { return string(e.image) },
		},
		{
			name: "wrong inputs", header: formHeader,
			body:       func(e *env) string { return "inputs=" + url.QueryEscape(string(wrongInputs)) },
			wantState:  fleet.Failed,
			wantImage:  func(e *env) string { return "unknown image (inputs " + string(wrongInputs) + ")" },
			wantReason: "unknown image (inputs " + string(wrongInputs) + ")",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.addMachine(testMAC, testHostname, e.image)
			token := e.boot(testMAC)
			resp, body := e.do(http.MethodPost, "/phone-home/"+testMAC+"?token="+token, tc.header, tc.body(e))
			wantStatus(t, resp, body, http.StatusOK)
			var got fleet.Machine
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("reply %q: %v", body, err)
			}
			stored := e.machine(testMAC)
			for _, m := range []fleet.Machine{got, stored} {
				if m.State != tc.wantState || m.ReportedImage != tc.wantImage(e) || !strings.Contains(m.Reason, tc.wantReason) {
					t.Errorf("after phone-home: state %s, reported %q, reason %q; want %s, %q, reason containing %q",
						m.State, m.ReportedImage, m.Reason, tc.wantState, tc.wantImage(e), tc.wantReason)
				}
			}
		})
	}
}

func TestPhoneHomeErrors(t *testing.T) {
	e := newEnv(t)
	e.addMachine(testMAC, testHostname, e.image)
	e.addMachine("52:54:00:00:00:0b", "never-booted", e.image)
	token := e.boot(testMAC)
	good := "inputs=" + url.QueryEscape(string(testInputs))
	for _, tc := range []struct {
		name   string
		mac    string
		token  string
		header http.Header
		body   string
		want   int
	}{
		{"before the script", "52:54:00:00:00:0b", token, formHeader, good, http.StatusForbidden},
		{"no token", testMAC, "", formHeader, good, http.StatusForbidden},
		{"unknown machine", "52:54:00:99:99:99", token, formHeader, good, http.StatusForbidden},
		{"bad MAC", "nonsense", token, formHeader, good, http.StatusBadRequest},
		{"bad inputs", testMAC, token, formHeader, "inputs=md5:0", http.StatusBadRequest},
		{"bad image", testMAC, token, formHeader, "image=node-1", http.StatusBadRequest},
		{"nothing reported", testMAC, token, formHeader, "", http.StatusBadRequest},
		{"bad JSON", testMAC, token, jsonHeader, "{", http.StatusBadRequest},
		{"too big", testMAC, token, formHeader, good + "&pad=" + strings.Repeat("x", maxBody), http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do(http.MethodPost, "/phone-home/"+tc.mac+"?token="+tc.token, tc.header, tc.body)
			wantStatus(t, resp, body, tc.want)
			errorMessage(t, body)
		})
	}
	if m := e.machine(testMAC); m.State != fleet.Booting {
		t.Errorf("state after refused phone-homes = %s, want %s", m.State, fleet.Booting)
	}
	if m := e.machine("52:54:00:00:00:0b"); m.State != fleet.Assigned {
		t.Errorf("state of the machine that never booted = %s, want %s", m.State, fleet.Assigned)
	}
	resp, body := e.get("/phone-home/" + testMAC)
	wantStatus(t, resp, body, http.StatusMethodNotAllowed)
}
