package web

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
)

func TestBootScriptKnownMachine(t *testing.T) {
	for _, tc := range []struct {
		name    string
		macPath string // the MAC as written in the URL
		base    string // configured BaseURL; empty uses the Host header
	}{
		{"colons", testMAC, ""},
		{"hyphens upper case", "52-54-00-12-34-56", ""},
		{"upper case colons", strings.ToUpper(testMAC), ""},
		{"configured base URL", testMAC, "http://10.77.0.1:8080/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []envOption
			if tc.base != "" {
				opts = append(opts, withBaseURL(tc.base))
			}
			e := newEnv(t, opts...)
			e.addMachine(testMAC, testHostname, e.image)
			base := strings.TrimSuffix(tc.base, "/")
			if base == "" {
				base = e.srv.URL
			}
			kernel, _ := e.man.Artifact("kernel")
			initrd, _ := e.man.Artifact("initrd")

			resp, raw := e.get("/boot/" + tc.macPath + ".ipxe")
			wantStatus(t, resp, raw, http.StatusOK)
			body := withoutToken(raw)
			mid := e.machine(testMAC).MachineID
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type = %q, want text/plain", ct)
			}
			want := strings.Join([]string{
				"#!ipxe",
				fmt.Sprintf("echo kiln: booting %s into %s", testHostname, e.image),
				fmt.Sprintf("kernel %s/blobs/%s?mac=%s initrd=initrd %s kiln.identity=%s/identity/%s?token=T kiln.phonehome=%s/phone-home/%s?token=T kiln.image=%s ds=nocloud-net;s=%s/nocloud/%s/T/ kiln.hostname=%s kiln.machine_id=%s kiln.generation=1",
					base, kernel.Digest, testMAC, testCmdline, base, testMAC, base, testMAC, e.image, base, testMAC, testHostname, mid),
				fmt.Sprintf("initrd --name initrd %s/blobs/%s?mac=%s", base, initrd.Digest, testMAC),
				"boot",
				"",
			}, "\n")
			if diff := cmp.Diff(want, string(body)); diff != "" {
				t.Errorf("boot script mismatch (-want +got):\n%s", diff)
			}
			m := e.machine(testMAC)
			if m.State != fleet.Booting || !hasEvent(m, fleet.EventScript) {
				t.Errorf("after the script: state %s, events %v; want booting with a script event", m.State, m.Events)
			}
		})
	}
}

// noKernel fails unless script is a script that boots nothing.
func noKernel(t *testing.T, script []byte) {
	t.Helper()
	if !strings.HasPrefix(string(script), "#!ipxe\n") {
		t.Errorf("script %q does not start with #!ipxe", script)
	}
	for _, line := range strings.Split(string(script), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && (f[0] == "kernel" || f[0] == "initrd" || f[0] == "boot" || f[0] == "chain") {
			t.Errorf("script boots something: line %q in\n%s", line, script)
		}
	}
	if !strings.Contains(string(script), "\nexit 1\n") {
		t.Errorf("script does not exit:\n%s", script)
	}
}

func TestBootScriptUnknownMachine(t *testing.T) {
	e := newEnv(t)
	resp, body := e.get("/boot/52-54-00-99-99-99.ipxe")
	wantStatus(t, resp, body, http.StatusOK)
	noKernel(t, body)
	if want := "kiln: unknown machine 52:54:00:99:99:99: register it with kiln machines add"; !strings.Contains(string(body), want) {
		t.Errorf("script does not say %q:\n%s", want, body)
	}
}

func TestBootScriptMissingImage(t *testing.T) {
	e := newEnv(t)
	missing := images.DigestOf([]byte("no such manifest"))
	e.addMachine(testMAC, testHostname, missing)
	resp, body := e.get("/boot/" + testMAC + ".ipxe")
	wantStatus(t, resp, body, http.StatusOK)
	noKernel(t, body)
	if !strings.Contains(string(body), string(missing)) {
		t.Errorf("script does not name the missing image %s:\n%s", missing, body)
	}
	if m := e.machine(testMAC); m.State != fleet.Assigned {
		t.Errorf("state after a non-booting script = %s, want %s", m.State, fleet.Assigned)
	}
}

func TestBootScriptHead(t *testing.T) {
	e := newEnv(t)
	e.addMachine(testMAC, testHostname, e.image)
	resp, body := e.do(http.MethodHead, "/boot/"+testMAC+".ipxe", nil, "")
	wantStatus(t, resp, body, http.StatusOK)
	if len(body) != 0 || resp.ContentLength <= 0 {
		t.Errorf("HEAD: body %d bytes, Content-Length %d; want no body and a length", len(body), resp.ContentLength)
	}
	if m := e.machine(testMAC); m.State != fleet.Assigned {
		t.Errorf("state after HEAD = %s, want %s (HEAD records nothing)", m.State, fleet.Assigned)
	}
}

func TestBootScriptErrors(t *testing.T) {
	e := newEnv(t)
	// A recipe's cmdline must not be able to add a command to the script.
	evil := e.man
	evil.Name, evil.Cmdline = "evil", "quiet\nshell"
	e.addMachine(testMAC, testHostname, e.publish(evil))
	noKernelArtifact := e.man
	noKernelArtifact.Name, noKernelArtifact.Artifacts = "no-kernel", e.man.Artifacts[1:]
	e.addMachine("52:54:00:00:00:02", "node-2", e.publish(noKernelArtifact))

	for _, tc := range []struct {
		path string
		want int
	}{
		{"/boot/not-a-mac.ipxe", http.StatusBadRequest},
		{"/boot/" + testMAC + ".ipxe", http.StatusInternalServerError},
		{"/boot/52:54:00:00:00:02.ipxe", http.StatusInternalServerError},
	} {
		resp, body := e.get(tc.path)
		wantStatus(t, resp, body, tc.want)
		errorMessage(t, body)
		if strings.Contains(string(body), "shell") {
			t.Errorf("GET %s leaks the bad value: %s", tc.path, body)
		}
	}
	if m := e.machine(testMAC); m.State != fleet.Assigned {
		t.Errorf("state after a failed render = %s, want %s", m.State, fleet.Assigned)
	}
}

// TestBootScriptSquashfs checks that an image with a squashfs root boots
// its stage-1 initramfs and names the root by URL and digest, and that the
// fetches of the stage-1 and the root are recorded.
func TestBootScriptSquashfs(t *testing.T) {
	e := newEnv(t)
	kernel, _ := e.man.Artifact("kernel")
	initrd, _ := e.man.Artifact("initrd")
	stage1 := e.putBlob("stage1", []byte("stage-1 initramfs"))
	root := e.putBlob("squashfs", []byte("squashfs root"))
	man := images.Manifest{
		SchemaVersion: 1, Name: "sq", Inputs: testInputs, Cmdline: testCmdline,
		Artifacts: []images.Artifact{kernel, initrd, root, stage1},
	}
	id := e.publish(man)
	e.addMachine(testMAC, testHostname, id)
	base := e.srv.URL

	resp, raw := e.get("/boot/" + testMAC + ".ipxe")
	wantStatus(t, resp, raw, http.StatusOK)
	body := withoutToken(raw)
	want := strings.Join([]string{
		"#!ipxe",
		fmt.Sprintf("echo kiln: booting %s into %s", testHostname, id),
		fmt.Sprintf("kernel %s/blobs/%s?mac=%s initrd=initrd %s kiln.squashfs=%s/blobs/%s?mac=%s kiln.squashfs.digest=%s kiln.identity=%s/identity/%s?token=T kiln.phonehome=%s/phone-home/%s?token=T kiln.image=%s ds=nocloud-net;s=%s/nocloud/%s/T/ kiln.hostname=%s kiln.machine_id=%s kiln.generation=1",
			base, kernel.Digest, testMAC, testCmdline, base, root.Digest, testMAC, root.Digest, base, testMAC, base, testMAC, id, base, testMAC, testHostname, e.machine(testMAC).MachineID),
		fmt.Sprintf("initrd --name initrd %s/blobs/%s?mac=%s", base, stage1.Digest, testMAC),
		"boot",
		"",
	}, "\n")
	if diff := cmp.Diff(want, string(body)); diff != "" {
		t.Errorf("boot script mismatch (-want +got):\n%s", diff)
	}
	for _, a := range []images.Artifact{stage1, root} {
		resp, body := e.get(fmt.Sprintf("/blobs/%s?mac=%s", a.Digest, testMAC))
		wantStatus(t, resp, body, http.StatusOK)
	}
	m := e.machine(testMAC)
	if !hasEvent(m, fleet.EventInitrd) || !hasEvent(m, fleet.EventRoot) {
		t.Errorf("events %v: want initrd and root fetches recorded", m.Events)
	}

	// A squashfs without its stage-1 cannot boot: a 500, not a broken script.
	broken := man
	broken.Name, broken.Artifacts = "broken", []images.Artifact{kernel, root}
	e.addMachine("52:54:00:00:00:03", "node-3", e.publish(broken))
	resp, raw = e.get("/boot/52:54:00:00:00:03.ipxe")
	wantStatus(t, resp, raw, http.StatusInternalServerError)
}

var (
	tokenParam = regexp.MustCompile(`token=[A-Za-z0-9_-]+`)
	tokenPath  = regexp.MustCompile(`/nocloud/([0-9a-f:]+)/[A-Za-z0-9_-]+/`)
)

// withoutToken returns a script with its boot token replaced by T.
func withoutToken(script []byte) string {
	s := tokenParam.ReplaceAllString(string(script), "token=T")
	return tokenPath.ReplaceAllString(s, "/nocloud/$1/T/")
}
