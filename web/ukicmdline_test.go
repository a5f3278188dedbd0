package web

import (
	"bytes"
	"context"
	"debug/pe"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/builder/uki"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestHTTPBootUKIToken builds a real UKI (Debian's systemd-stub and the
// tiny kernel) and boots it over HTTP: every GET carries the boot's token
// on the UKI's command line, the UKI's own command line stays in front,
// HEAD gives the same size, and the token-less identity request a UKI
// without room would get is refused.
func TestHTTPBootUKIToken(t *testing.T) {
	kernel := filepath.Join("..", ".cache", "tiny", "vmlinuz")
	testenv.NeedFile(t, kernel)
	testenv.NeedFile(t, uki.DefaultStub)
	const own = "console=ttyS0 quiet panic=-1"
	path := filepath.Join(t.TempDir(), "kiln.efi")
	if err := uki.Write(context.Background(), path, uki.Spec{Kernel: kernel, Cmdline: own}); err != nil {
		t.Fatal(err)
	}
	stored, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	kernelArt, _ := e.man.Artifact("kernel")
	id := e.publish(images.Manifest{SchemaVersion: 1, Name: "uki", Inputs: testInputs, Artifacts: []images.Artifact{kernelArt, e.putBlob("uki", stored)}})
	m := e.addMachine(testMAC, testHostname, id)

	resp, err := http.Head(e.srv.URL + "/httpboot/" + testMAC + ".efi")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ContentLength != int64(len(stored)) {
		t.Errorf("HEAD: length %d, want the stored UKI's %d", resp.ContentLength, len(stored))
	}

	token := func() string {
		t.Helper()
		resp, body := e.get("/httpboot/" + testMAC + ".efi")
		wantStatus(t, resp, body, http.StatusOK)
		if len(body) != len(stored) {
			t.Fatalf("GET: %d bytes, want %d (patched in place)", len(body), len(stored))
		}
		f, err := pe.NewFile(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("the served UKI is not a PE file: %v", err)
		}
		var cmdline string
		var diff int
		for _, s := range f.Sections {
			data, err := s.Data()
			if err != nil {
				t.Fatal(err)
			}
			if s.Name == ".cmdline" {
				cmdline = string(data[:s.VirtualSize])
				continue
			}
			if !bytes.Equal(data, stored[s.Offset:s.Offset+s.Size]) {
				diff++
			}
		}
		if diff != 0 {
			t.Errorf("%d sections besides .cmdline changed", diff)
		}
		want := own + " kiln.identity=" + e.srv.URL + "/identity/" + testMAC + "?token="
		if !strings.HasPrefix(cmdline, want) || !strings.Contains(cmdline, "ds=nocloud-net;s="+e.srv.URL+"/nocloud/"+testMAC+"/") ||
			!strings.Contains(cmdline, "kiln.machine_id="+m.MachineID) {
			t.Fatalf("served .cmdline = %q, want it to start with %q and carry the NoCloud seed", cmdline, want)
		}
		return regexp.MustCompile(`\?token=([A-Za-z0-9_-]+)`).FindStringSubmatch(cmdline)[1]
	}
	first := token()
	resp, body := e.get("/identity/" + testMAC)
	wantStatus(t, resp, body, http.StatusForbidden)
	second := token()
	if first == second {
		t.Fatalf("two boots got the same token")
	}
	resp, body = e.get("/identity/" + testMAC + "?token=" + first)
	wantStatus(t, resp, body, http.StatusForbidden)
	resp, body = e.get("/identity/" + testMAC + "?token=" + second)
	wantStatus(t, resp, body, http.StatusOK)
}

// TestUKIWithCmdlineRoom checks the refusals of ukiWithCmdline: not a PE
// file, no .cmdline section, and a command line past the room.
func TestUKIWithCmdlineRoom(t *testing.T) {
	for _, b := range [][]byte{[]byte("MZ unified kernel image"), {}, bytes.Repeat([]byte{0}, 4096)} {
		if _, err := ukiWithCmdline(bytes.NewReader(b), int64(len(b)), "x"); err == nil {
			t.Errorf("ukiWithCmdline(%q) accepted it", b[:min(len(b), 16)])
		}
	}
	kernel := filepath.Join("..", ".cache", "tiny", "vmlinuz")
	testenv.NeedFile(t, kernel)
	testenv.NeedFile(t, uki.DefaultStub)
	dir := t.TempDir()
	for _, tc := range []struct {
		name, cmdline, extra string
		ok                   bool
	}{
		{"no .cmdline", "", "kiln.x=1", false},
		{"fits", "quiet", strings.Repeat("y", uki.MaxCmdline-len("quiet ")), true},
		{"one byte too many", "quiet", strings.Repeat("y", uki.MaxCmdline-len("quiet ")+1), false},
	} {
		path := filepath.Join(dir, tc.name+".efi")
		if err := uki.Write(context.Background(), path, uki.Spec{Kernel: kernel, Cmdline: tc.cmdline}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ukiWithCmdline(bytes.NewReader(b), int64(len(b)), tc.extra)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
