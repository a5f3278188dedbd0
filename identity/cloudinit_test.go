package identity

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/kiln-dev/kiln/internal/testenv"
	"go.yaml.in/yaml/v3"
)

// cloudInit returns a command running testdata/cloudinit-check.py with
// Debian's unpacked cloud-init (testenv.CloudInit).
func cloudInit(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	return testenv.CloudInit(t, "..", args...)
}

func runCloudInit(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := cloudInit(t, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cloud-init check %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCloudInitSchema validates every fixture's user-data with cloud-init's
// own cloud-config schema, and checks that the check rejects a bad one.
func TestCloudInitSchema(t *testing.T) {
	for name, id := range fixtures {
		t.Run(name, func(t *testing.T) {
			ud, err := id.UserData()
			if err != nil {
				t.Fatal(err)
			}
			runCloudInit(t, "schema", writeTemp(t, "user-data", ud))
		})
	}
	t.Run("bad", func(t *testing.T) {
		bad := writeTemp(t, "user-data", []byte("#cloud-config\nhostname: n1\nssh_authorized_keys: 5\n"))
		if out, err := cloudInit(t, "schema", bad).CombinedOutput(); err == nil {
			t.Fatalf("cloud-init accepted a bad user-data: %s", out)
		}
	})
}

type ciSubnet struct {
	Type    string `json:"type"`
	Address string `json:"address"`
	Prefix  int    `json:"prefix"`
	Gateway string `json:"gateway"`
}

type ciNetwork struct {
	Interfaces []struct {
		Name       string     `json:"name"`
		MACAddress string     `json:"mac_address"`
		Subnets    []ciSubnet `json:"subnets"`
	} `json:"interfaces"`
	DNS      []string          `json:"dns"`
	ENI      string            `json:"eni"`
	Networkd map[string]string `json:"networkd"`
}

// TestCloudInitNetwork parses each fixture's network-config with
// cloud-init's v2 parser (broken config is an error), renders it with its
// ENI and networkd renderers, and checks the interfaces, addresses, gateway
// and DNS that come out.
func TestCloudInitNetwork(t *testing.T) {
	type iface struct {
		Name, MAC string
		Subnets   []ciSubnet
	}
	for _, tc := range []struct {
		fixture  string
		want     []iface
		dns      []string
		networkd map[string][]string // file -> lines it must contain
	}{
		{
			fixture: "dhcp",
			want:    []iface{{"nic0", "52:54:00:12:34:56", []ciSubnet{{Type: "dhcp4"}}}},
			networkd: map[string][]string{
				"10-cloud-init-nic0.network": {"MACAddress=52:54:00:12:34:56", "DHCP=ipv4"},
			},
		},
		{
			fixture: "static",
			want: []iface{
				{"nic0", "52:54:00:12:34:56", []ciSubnet{
					{Type: "static", Address: "10.0.0.5", Prefix: 24, Gateway: "10.0.0.1"},
					{Type: "static", Address: "2001:db8::5", Prefix: 64},
				}},
				{"nic1", "52:54:00:12:34:57", []ciSubnet{{Type: "dhcp4"}}},
			},
			dns: []string{"10.0.0.53", "2001:db8::53"},
			networkd: map[string][]string{
				"10-cloud-init-nic0.network": {"MACAddress=52:54:00:12:34:56", "Address=10.0.0.5/24", "Address=2001:db8::5/64", "Gateway=10.0.0.1", "DNS=10.0.0.53 2001:db8::53", "Domains=dc1.example.com"},
				"10-cloud-init-nic1.network": {"MACAddress=52:54:00:12:34:57", "DHCP=ipv4"},
			},
		},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			nc, err := fixtures[tc.fixture].NetworkConfig()
			if err != nil {
				t.Fatal(err)
			}
			out := runCloudInit(t, "network", writeTemp(t, "network-config", nc))
			var got ciNetwork
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("cloud-init check output %q: %v", out, err)
			}
			var ifaces []iface
			for _, i := range got.Interfaces {
				ifaces = append(ifaces, iface{i.Name, i.MACAddress, i.Subnets})
			}
			if diff := cmp.Diff(tc.want, ifaces); diff != "" {
				t.Errorf("cloud-init's network state mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.dns, got.DNS, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("cloud-init's name servers mismatch (-want +got):\n%s", diff)
			}
			for file, lines := range tc.networkd {
				text, ok := got.Networkd[file]
				if !ok {
					t.Errorf("cloud-init rendered no %s; rendered %v", file, got.Networkd)
					continue
				}
				for _, l := range lines {
					if !strings.Contains("\n"+text+"\n", "\n"+l+"\n") {
						t.Errorf("cloud-init's %s lacks %q:\n%s", file, l, text)
					}
				}
			}
			for _, s := range tc.want[0].Subnets {
				if s.Type == "static" && !strings.Contains(got.ENI, "address "+s.Address) {
					t.Errorf("cloud-init's ENI lacks address %s:\n%s", s.Address, got.ENI)
				}
			}
		})
	}
}

// TestCloudInitNoCloud serves each fixture's meta-data and user-data over
// HTTP, as kiln will, and runs cloud-init's NoCloudNet datasource with the
// kernel command line Identity.Cmdline renders: cloud-init must find the
// seed URL on it, fetch both files and come back with the instance-id,
// hostname and user-data.
func TestCloudInitNoCloud(t *testing.T) {
	for name, id := range fixtures {
		t.Run(name, func(t *testing.T) {
			md, err := id.MetaData()
			if err != nil {
				t.Fatal(err)
			}
			ud, err := id.UserData()
			if err != nil {
				t.Fatal(err)
			}
			var requests []string
			prefix := "/nocloud/" + id.MAC + "/"
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests = append(requests, r.URL.Path)
				switch r.URL.Path {
				case prefix + "meta-data":
					w.Write(md)
				case prefix + "user-data":
					w.Write(ud)
				case prefix + "vendor-data":
					// Empty, as kiln serves it: a 404 makes cloud-init
					// retry for ten seconds.
				default:
					http.NotFound(w, r)
				}
			}))
			defer srv.Close()
			cmdline, err := id.Cmdline(srv.URL + "/nocloud/" + id.MAC)
			if err != nil {
				t.Fatal(err)
			}
			out := runCloudInit(t, "nocloud", "BOOT_IMAGE=/vmlinuz ro quiet "+cmdline+" console=ttyS0")
			srv.Close()
			var got struct {
				InstanceID    string `json:"instance_id"`
				LocalHostname string `json:"local_hostname"`
				UserData      string `json:"user_data"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("cloud-init check output %q: %v", out, err)
			}
			want := struct{ InstanceID, LocalHostname, UserData string }{id.MachineID + "-g" + itoa(id.Generation), id.Hostname, string(ud)}
			if diff := cmp.Diff(want, struct{ InstanceID, LocalHostname, UserData string }(got)); diff != "" {
				t.Errorf("cloud-init's NoCloud data mismatch (-want +got):\n%s\nrequests: %v", diff, requests)
			}
			if !slices.Contains(requests, prefix+"meta-data") || !slices.Contains(requests, prefix+"user-data") {
				t.Errorf("cloud-init requested %v, want %smeta-data and user-data", requests, prefix)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestCloudInitSeedDir writes each fixture's three NoCloud files into a seed
// directory, as on a cidata disk, and runs cloud-init's NoCloud datasource on
// it: instance-id, hostname, user-data and the network-config it hands on
// (which must equal the rendered one, MACs still strings) must come back.
func TestCloudInitSeedDir(t *testing.T) {
	for name, id := range fixtures {
		t.Run(name, func(t *testing.T) {
			seed := t.TempDir()
			dir := filepath.Join(seed, "nocloud")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			files := map[string][]byte{}
			for file, render := range map[string]func() ([]byte, error){
				"meta-data": id.MetaData, "user-data": id.UserData, "network-config": id.NetworkConfig,
			} {
				b, err := render()
				if err != nil {
					t.Fatal(err)
				}
				files[file] = b
				if err := os.WriteFile(filepath.Join(dir, file), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out := runCloudInit(t, "seeddir", seed)
			var got struct {
				InstanceID    string `json:"instance_id"`
				LocalHostname string `json:"local_hostname"`
				UserData      string `json:"user_data"`
				Network       any    `json:"network"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("cloud-init check output %q: %v", out, err)
			}
			var wantNet any
			if err := yaml.Unmarshal(files["network-config"], &wantNet); err != nil {
				t.Fatal(err)
			}
			// Through JSON, as the check script's output went.
			b, _ := json.Marshal(wantNet)
			json.Unmarshal(b, &wantNet)
			if diff := cmp.Diff(id.InstanceID(), got.InstanceID); diff != "" {
				t.Errorf("instance-id mismatch (-want +got):\n%s", diff)
			}
			if got.LocalHostname != id.Hostname {
				t.Errorf("local-hostname = %q, want %q", got.LocalHostname, id.Hostname)
			}
			if got.UserData != string(files["user-data"]) {
				t.Errorf("user-data = %q, want %q", got.UserData, files["user-data"])
			}
			if diff := cmp.Diff(wantNet, got.Network); diff != "" {
				t.Errorf("network-config as cloud-init read it mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
