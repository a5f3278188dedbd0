package identity

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

const (
	testEd25519Pub  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4 ops@example.com"
	testHostPub     = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhvc3Rob3N0aG9zdGhvc3Rob3N0aG9zdGhvc3Rob3N0 root@n1"
	testHostPrivate = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n"
)

// fixtures are the identities rendered to golden files and checked with
// cloud-init.
var fixtures = map[string]Identity{
	"dhcp": {
		Hostname: "n1", MAC: "52:54:00:12:34:56", Image: "sha256:abc",
		MachineID: "0f3c2a9e1b7d4c5a8e6f1a2b3c4d5e6f", Generation: 3,
	},
	"static": {
		Hostname: "rack1-n07", Domain: "dc1.example.com",
		MAC: "52-54-00-12-34-56", MACs: []string{"52:54:00:12:34:57"},
		Addresses: []string{"10.0.0.5/24", "2001:db8::5/64"}, Gateway: "10.0.0.1",
		DNS:               []string{"10.0.0.53", "2001:db8::53"},
		SSHAuthorizedKeys: []string{testEd25519Pub},
		SSHHostKeys:       map[string]SSHKeyPair{"ed25519": {Private: testHostPrivate, Public: testHostPub}},
		Labels:            map[string]string{"rack": "r1", "role": "worker"},
		MachineID:         "rack1-n07", Generation: 12, Image: "sha256:def",
	},
}

// TestGolden compares every rendering with testdata/golden/<fixture>.<kind>.
func TestGolden(t *testing.T) {
	for name, id := range fixtures {
		for kind, render := range map[string]func() ([]byte, error){
			"meta-data":      id.MetaData,
			"user-data":      id.UserData,
			"network-config": id.NetworkConfig,
			"json":           id.JSON,
			"cmdline": func() ([]byte, error) {
				s, err := id.Cmdline("http://10.0.0.1:8080/nocloud/" + id.MAC)
				return []byte(s + "\n"), err
			},
		} {
			t.Run(name+"/"+kind, func(t *testing.T) {
				got, err := render()
				if err != nil {
					t.Fatalf("rendering %s of %s: %v", kind, name, err)
				}
				p := filepath.Join("testdata", "golden", name+"."+kind)
				if *update {
					if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(p, got, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(p)
				if err != nil {
					t.Fatalf("golden file (go test -run TestGolden -update writes it): %v", err)
				}
				if diff := cmp.Diff(string(want), string(got)); diff != "" {
					t.Errorf("%s of %s mismatch (-want +got):\n%s", kind, name, diff)
				}
			})
		}
	}
}

func TestRenderNeedsMachineID(t *testing.T) {
	id := fixtures["dhcp"]
	id.MachineID = ""
	for kind, render := range map[string]func() ([]byte, error){
		"meta-data": id.MetaData, "user-data": id.UserData, "network-config": id.NetworkConfig,
	} {
		if _, err := render(); err == nil || !strings.Contains(err.Error(), "machine_id") {
			t.Errorf("%s without machine_id: err = %v, want one naming machine_id", kind, err)
		}
	}
	if _, err := id.Cmdline("http://10.0.0.1/"); err == nil {
		t.Errorf("Cmdline without machine_id succeeded")
	}
}

func TestCmdlineBaseURL(t *testing.T) {
	id := fixtures["dhcp"]
	for _, tc := range []struct {
		base, want string // want "" = error
	}{
		{"http://10.0.0.1:8080/nocloud/x", "ds=nocloud-net;s=http://10.0.0.1:8080/nocloud/x/ kiln.hostname=n1 kiln.machine_id=0f3c2a9e1b7d4c5a8e6f1a2b3c4d5e6f kiln.generation=3"},
		{"https://[2001:db8::1]/n/", "ds=nocloud-net;s=https://[2001:db8::1]/n/ kiln.hostname=n1 kiln.machine_id=0f3c2a9e1b7d4c5a8e6f1a2b3c4d5e6f kiln.generation=3"},
		{"http://10.0.0.1/a b", ""},
		{"http://10.0.0.1/a;b", ""},
		{"http://10.0.0.1/a\"b", ""},
		{"http://10.0.0.1/a\nroot=/dev/sda", ""},
		{"file:///etc/", ""},
		{"/relative", ""},
		{"", ""},
	} {
		got, err := id.Cmdline(tc.base)
		if tc.want == "" {
			if err == nil {
				t.Errorf("Cmdline(%q) = %q, want error", tc.base, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("Cmdline(%q): %v", tc.base, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("Cmdline(%q) mismatch (-want +got):\n%s", tc.base, diff)
		}
	}
}
