package identity

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestValidateFields changes one field of a valid identity at a time and
// checks the error names the field and the value.
func TestValidateFields(t *testing.T) {
	base := fixtures["static"]
	for _, tc := range []struct {
		name   string
		change func(*Identity)
		want   string // "" = valid; else substrings of the error, |-separated
	}{
		{"valid", func(*Identity) {}, ""},
		{"legacy minimal", func(id *Identity) { *id = Identity{Hostname: "n1", MAC: "52:54:00:00:00:01", Image: "x"} }, ""},
		{"hostname", func(id *Identity) { id.Hostname = "no_de" }, `hostname "no_de"`},
		{"hostname with domain and domain", func(id *Identity) { id.Hostname = "n1.example.com" }, `hostname "n1.example.com"|domain "dc1.example.com"`},
		{"domain", func(id *Identity) { id.Domain = "-x.example" }, `domain: hostname "-x.example"`},
		{"fqdn too long", func(id *Identity) { id.Domain = strings.Repeat("a.", 124) + "aaaa" }, "fqdn"},
		{"mac", func(id *Identity) { id.MAC = "52:54:00" }, `mac "52:54:00"`},
		{"macs", func(id *Identity) { id.MACs = []string{"zz"} }, `macs[0]: mac "zz"`},
		{"macs duplicate of mac", func(id *Identity) { id.MACs = []string{"52:54:00:12:34:56"} }, `macs[0] "52:54:00:12:34:56" is listed twice`},
		{"ip", func(id *Identity) { id.IP = "fe80::1" }, `ip "fe80::1"`},
		{"address not cidr", func(id *Identity) { id.Addresses = []string{"10.0.0.5"} }, `addresses[0] "10.0.0.5"`},
		{"address network", func(id *Identity) { id.Addresses = []string{"10.0.0.0/24"} }, `addresses[0] "10.0.0.0/24" is a network`},
		{"address /32", func(id *Identity) { id.Addresses = []string{"10.0.0.0/32"} }, ""},
		{"address zone", func(id *Identity) { id.Addresses = []string{"fe80::1%eth0/64"}; id.Gateway = "" }, `addresses[0] "fe80::1%eth0/64"`},
		{"gateway", func(id *Identity) { id.Gateway = "gw" }, `gateway "gw"`},
		{"gateway without addresses", func(id *Identity) { id.Addresses = nil }, `gateway "10.0.0.1" needs static addresses`},
		{"gateway family", func(id *Identity) { id.Addresses = []string{"2001:db8::5/64"} }, `gateway "10.0.0.1": no static address of its family`},
		{"gateway6", func(id *Identity) { id.Gateway = "2001:db8::1" }, ""},
		{"dns", func(id *Identity) { id.DNS = []string{"10.0.0.53", "ns1"} }, `dns[1] "ns1"`},
		{"authorized key type", func(id *Identity) { id.SSHAuthorizedKeys = []string{"ssh-foo AAAAx"} }, `ssh_authorized_keys[0]: key "ssh-foo AAAAx": type "ssh-foo"`},
		{"authorized key data", func(id *Identity) { id.SSHAuthorizedKeys = []string{"ssh-rsa notbase64!"} }, `ssh_authorized_keys[0]`},
		{"authorized key two lines", func(id *Identity) { id.SSHAuthorizedKeys = []string{testEd25519Pub + "\n" + testEd25519Pub} }, "spans lines"},
		{"host key type", func(id *Identity) { id.SSHHostKeys = map[string]SSHKeyPair{"dsa": id.SSHHostKeys["ed25519"]} }, `ssh_host_keys: type "dsa"`},
		{"host key public type", func(id *Identity) {
			id.SSHHostKeys = map[string]SSHKeyPair{"rsa": id.SSHHostKeys["ed25519"]}
		}, `ssh_host_keys[rsa].public`},
		{"host key private", func(id *Identity) {
			id.SSHHostKeys = map[string]SSHKeyPair{"ed25519": {Private: "secret", Public: testHostPub}}
		}, `ssh_host_keys[ed25519].private`},
		{"label key", func(id *Identity) { id.Labels = map[string]string{"a b": "x"} }, `labels: key "a b"`},
		{"label value", func(id *Identity) { id.Labels = map[string]string{"a": "x\ny"} }, `labels[a]: value "x\ny"`},
		{"machine id", func(id *Identity) { id.MachineID = "Rack 1" }, `machine_id "Rack 1"`},
		{"machine id long", func(id *Identity) { id.MachineID = strings.Repeat("a", 65) }, `machine_id`},
		{"generation", func(id *Identity) { id.Generation = -1 }, "generation -1"},
		{"image", func(id *Identity) { id.Image = "" }, "image is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := clone(base)
			tc.change(&id)
			err := id.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want error with %q", tc.want)
			}
			for _, w := range strings.Split(tc.want, "|") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func clone(id Identity) Identity {
	b, err := id.JSON()
	if err != nil {
		panic(err)
	}
	c, err := Decode(b)
	if err != nil {
		panic(err)
	}
	return c
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Identity
		err      string
	}{
		{"minimal", `{"hostname":"n1","mac":"52:54:00:00:00:01","image":"x"}`,
			Identity{Hostname: "n1", MAC: "52:54:00:00:00:01", Image: "x"}, ""},
		{"empty lists are nil", `{"hostname":"n1","mac":"52:54:00:00:00:01","image":"x","macs":[],"labels":{},"dns":[]}`,
			Identity{Hostname: "n1", MAC: "52:54:00:00:00:01", Image: "x"}, ""},
		{"full", `{"hostname":"n1","domain":"example.com","mac":"52:54:00:00:00:01","addresses":["10.0.0.5/24"],"gateway":"10.0.0.1",
			"labels":{"rack":"r1"},"machine_id":"m1","generation":2,"image":"x"}`,
			Identity{Hostname: "n1", Domain: "example.com", MAC: "52:54:00:00:00:01", Addresses: []string{"10.0.0.5/24"}, Gateway: "10.0.0.1",
				Labels: map[string]string{"rack": "r1"}, MachineID: "m1", Generation: 2, Image: "x"}, ""},
		{"packages", `{"hostname":"n1","mac":"52:54:00:00:00:01","image":"x","packages":["vim"]}`, Identity{}, `"packages" is not identity: put it in the image`},
		{"users", `{"users":[],"hostname":"n1"}`, Identity{}, `"users" is not identity: put it in the image`},
		{"runcmd", `{"runcmd":["reboot"],"files":{}}`, Identity{}, `"files" is not identity: put it in the image`},
		{"case matters", `{"Hostname":"n1","mac":"52:54:00:00:00:01","image":"x"}`, Identity{}, `"Hostname" is not identity`},
		{"invalid", `{"hostname":"n_1","mac":"52:54:00:00:00:01","image":"x"}`, Identity{}, `invalid identity: hostname "n_1"`},
		{"wrong type", `{"hostname":"n1","mac":"52:54:00:00:00:01","image":"x","generation":"2"}`, Identity{}, `decoding identity`},
		{"trailing data", `{"hostname":"n1","mac":"52:54:00:00:00:01","image":"x"} {}`, Identity{}, `decoding identity`},
		{"not an object", `[]`, Identity{}, `decoding identity`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Decode = %+v, %v; want error with %q", got, err, tc.err)
				}
				var ni *NotIdentityError
				if errors.As(err, &ni) != strings.Contains(tc.err, "not identity") {
					t.Errorf("Decode error %v: errors.As NotIdentityError = %v", err, !strings.Contains(tc.err, "not identity"))
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Decode mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzDecode checks that Decode never panics, that whatever it accepts
// renders in every form without error, and that it survives a round trip
// through JSON unchanged.
func FuzzDecode(f *testing.F) {
	for _, id := range fixtures {
		b, err := id.JSON()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := Decode(data)
		if err != nil {
			return
		}
		b, err := id.JSON()
		if err != nil {
			t.Fatalf("JSON of decoded %+v: %v", id, err)
		}
		again, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(JSON(Decode(%q))) = %v; JSON was %s", data, err, b)
		}
		if diff := cmp.Diff(id, again); diff != "" {
			t.Fatalf("round trip mismatch (-first +second):\n%s", diff)
		}
		if id.MachineID == "" {
			return
		}
		for kind, render := range map[string]func() ([]byte, error){
			"meta-data": id.MetaData, "user-data": id.UserData, "network-config": id.NetworkConfig,
		} {
			if _, err := render(); err != nil {
				t.Fatalf("%s of valid %+v: %v", kind, id, err)
			}
		}
		if _, err := id.Cmdline("http://10.0.0.1/nocloud/"); err != nil {
			t.Fatalf("Cmdline of valid %+v: %v", id, err)
		}
	})
}
