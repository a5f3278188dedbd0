package web

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/installer"
)

var testDisk = []byte(strings.Repeat("disk image bytes ", 1000))

// withInstaller gives the server an installer initramfs.
func withInstaller(b []byte) envOption { return func(c *Config) { c.InstallerInitramfs = b } }

// installEnv is an env whose image also has a disk output, with one
// install-mode machine.
func installEnv(t testing.TB) *env {
	e := newEnv(t, withInstaller([]byte("070701 fake cpio")))
	m := e.man
	m.Name = "with-disk"
	m.Artifacts = append(append([]images.Artifact(nil), m.Artifacts...), e.putBlob("disk", testDisk))
	e.image = e.publish(m)
	if _, err := e.fleet.Create(fleet.NewMachine{MAC: testMAC, Hostname: testHostname, Image: string(e.image), Mode: fleet.Install}, "test"); err != nil {
		t.Fatal(err)
	}
	return e
}

var installToken = regexp.MustCompile(`kiln\.install=(\S+)/install/([0-9a-f:]+)\?token=([A-Za-z0-9_-]+)`)

// TestInstallFlow walks one install through kiln's HTTP side: the install
// script, the plan, the disk, the report, then the disk boot whose seed
// credential lets the installed system phone home, once.
func TestInstallFlow(t *testing.T) {
	e := installEnv(t)
	resp, script := e.get("/boot/" + testMAC + ".ipxe")
	wantStatus(t, resp, script, http.StatusOK)
	for _, want := range []string{"initrd --name installer " + e.srv.URL + "/install/initramfs.cpio\ninitrd --name image ", "initrd=installer initrd=image rdinit=/kiln-installer", testCmdline} {
		if !strings.Contains(string(script), want) {
			t.Errorf("install script lacks %q:\n%s", want, script)
		}
	}
	mm := installToken.FindStringSubmatch(string(script))
	if mm == nil || mm[2] != testMAC {
		t.Fatalf("install script has no kiln.install= for %s:\n%s", testMAC, script)
	}
	token := mm[3]
	if m := e.machine(testMAC); m.State != fleet.Installing || m.Installed != 0 {
		t.Fatalf("after the install script: state %s installed %d, want installing, 0", m.State, m.Installed)
	}
	resp, body := e.get("/install/initramfs.cpio")
	wantStatus(t, resp, body, http.StatusOK)

	resp, body = e.get("/install/" + testMAC)
	wantStatus(t, resp, body, http.StatusForbidden)
	resp, body = e.get("/install/" + testMAC + "?token=" + token)
	wantStatus(t, resp, body, http.StatusOK)
	var plan installer.Plan
	if err := json.Unmarshal(body, &plan); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(testDisk)
	if plan.DiskSHA256 != hex.EncodeToString(sum[:]) || plan.DiskSize != int64(len(testDisk)) || plan.Generation != 1 || plan.Image != string(e.image) {
		t.Errorf("plan = %+v", plan)
	}
	u, _ := url.Parse(plan.DiskURL)
	resp, body = e.get(u.RequestURI())
	wantStatus(t, resp, body, http.StatusOK)
	if string(body) != string(testDisk) {
		t.Errorf("disk_url serves %d bytes, not the disk", len(body))
	}
	seed := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(plan.Seed), "\n") {
		k, v, _ := strings.Cut(line, "=")
		seed[k] = strings.Trim(v, "'")
	}
	idURL, err := url.Parse(seed["KILN_IDENTITY_URL"])
	if err != nil || seed["KILN_PHONEHOME_URL"] == "" || seed["KILN_GENERATION"] != "1" {
		t.Fatalf("seed = %q", plan.Seed)
	}
	// The disk credential is not valid before the disk boots.
	resp, body = e.get(idURL.RequestURI())
	wantStatus(t, resp, body, http.StatusForbidden)

	for _, bad := range []string{`{"state":"done"}`, `{"state":"failed"}`, `{"state":"installed","extra":1}`, ``} {
		resp, body = e.do(http.MethodPost, "/install/"+testMAC+"/report?token="+token, jsonHeader, bad)
		wantStatus(t, resp, body, http.StatusBadRequest)
	}
	ru, _ := url.Parse(plan.ReportURL)
	resp, body = e.do(http.MethodPost, ru.RequestURI(), jsonHeader, `{"state":"installed"}`)
	wantStatus(t, resp, body, http.StatusOK)
	if m := e.machine(testMAC); m.State != fleet.Installed || m.Installed != 1 {
		t.Fatalf("after the report: state %s installed %d, want installed, 1", m.State, m.Installed)
	}

	// The reboot: kiln hands the machine to its disk.
	resp, script = e.get("/boot/" + testMAC + ".ipxe")
	wantStatus(t, resp, script, http.StatusOK)
	if !strings.Contains(string(script), "exit") || strings.Contains(string(script), "kernel ") {
		t.Fatalf("script after install is not a disk boot:\n%s", script)
	}
	resp, body = e.get(idURL.RequestURI() + "&format=env")
	wantStatus(t, resp, body, http.StatusOK)
	pu, _ := url.Parse(seed["KILN_PHONEHOME_URL"])
	resp, body = e.do(http.MethodPost, pu.RequestURI(), formHeader, "inputs="+url.QueryEscape(string(testInputs)))
	wantStatus(t, resp, body, http.StatusOK)
	if m := e.machine(testMAC); m.State != fleet.Ready || m.Running != 1 {
		t.Fatalf("after phone-home from disk: state %s running %d", m.State, m.Running)
	}
	// Replayed after ready: refused.
	resp, body = e.get(idURL.RequestURI())
	wantStatus(t, resp, body, http.StatusForbidden)
}

// TestInstallFailed: a failed install is recorded with its reason and the
// next boot installs again, never the disk.
func TestInstallFailed(t *testing.T) {
	e := installEnv(t)
	_, script := e.get("/boot/" + testMAC + ".ipxe")
	token := installToken.FindStringSubmatch(string(script))[3]
	resp, body := e.do(http.MethodPost, "/install/"+testMAC+"/report?token="+token, jsonHeader, `{"state":"failed","reason":"sha256 mismatch`+strings.Repeat(" and more", 1000)+`"}`)
	wantStatus(t, resp, body, http.StatusOK)
	m := e.machine(testMAC)
	// fleet words the reason ("install of generation 1 failed: ..."); what
	// the installer said is kept to maxReason bytes.
	if m.State != fleet.Failed || !strings.Contains(m.Reason, "sha256 mismatch") || len(m.Reason) > maxReason+100 || m.Installed != 0 {
		t.Errorf("after a failed install: state %s reason %q installed %d", m.State, m.Reason, m.Installed)
	}
	_, script = e.get("/boot/" + testMAC + ".ipxe")
	if !installToken.Match(script) {
		t.Errorf("the boot after a failed install is not an install:\n%s", script)
	}
}

func TestInstallerNotConfigured(t *testing.T) {
	e := newEnv(t)
	resp, body := e.get("/install/initramfs.cpio")
	wantStatus(t, resp, body, http.StatusNotFound)
	if msg := errorMessage(t, body); !strings.Contains(msg, "--installer") {
		t.Errorf("message %q does not say how to fix it", msg)
	}
	// A stateless boot's token does not open an install plan.
	e.addMachine(testMAC, testHostname, e.image)
	tok := e.boot(testMAC)
	resp, body = e.get("/install/" + testMAC + "?token=" + tok)
	wantStatus(t, resp, body, http.StatusConflict)
}
