package dhcp

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var equateAddrs = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

const exampleConfig = `subnets:
  - subnet: 10.78.0.0/24
    pools: [10.78.0.100-10.78.0.199]
    router: 10.78.0.1
    dns: [10.78.0.1]
    domain: rack1.example
    lease_time: 1h
  - subnet: 10.79.0.0/16
    pools:
      - 10.79.1.0-10.79.1.255
      - 10.79.3.0 - 10.79.3.9
    offer_time: 30s
reservations:
  - {mac: "52:54:00:77:00:10", ip: 10.78.0.50, hostname: rack1-node10}
  - mac: 52:54:00:77:00:11
    ip: 10.79.1.7
`

func TestParseConfigFile(t *testing.T) {
	got, err := ParseConfigFile([]byte(exampleConfig))
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	want := File{
		Subnets: []Subnet{{
			Prefix: netip.MustParsePrefix("10.78.0.0/24"),
			Pools:  []Pool{{a("10.78.0.100"), a("10.78.0.199")}},
			Router: a("10.78.0.1"), DNS: []netip.Addr{a("10.78.0.1")}, Domain: "rack1.example", LeaseTime: time.Hour,
		}, {
			Prefix:    netip.MustParsePrefix("10.79.0.0/16"),
			Pools:     []Pool{{a("10.79.1.0"), a("10.79.1.255")}, {a("10.79.3.0"), a("10.79.3.9")}},
			OfferTime: 30 * time.Second,
		}},
		Reservations: []Reservation{
			{MAC: hw("52:54:00:77:00:10"), IP: a("10.78.0.50"), Hostname: "rack1-node10"},
			{MAC: hw("52:54:00:77:00:11"), IP: a("10.79.1.7")},
		},
	}
	if diff := cmp.Diff(want, got, equateAddrs); diff != "" {
		t.Fatalf("ParseConfigFile (-want +got):\n%s", diff)
	}
	// The file makes a working server.
	e := newEnv(t, func(c *Config) {
		c.Subnets = append(c.Subnets, got.Subnets...)
		c.Reservations = got.Reservations
	})
	if n := len(e.s.Usage()); n != 4 {
		t.Errorf("Usage() has %d pools, want 4", n)
	}
	out, err := got.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseConfigFile(out)
	if err != nil {
		t.Fatalf("ParseConfigFile(Marshal()) = %v\n%s", err, out)
	}
	if diff := cmp.Diff(got, again, equateAddrs); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestParseConfigFileErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown top-level key", "subnet: 10.0.0.0/24\n", `line 1: unknown field subnet`},
		{"unknown subnet key", "subnets:\n  - subnet: 10.0.0.0/24\n    gateway: 10.0.0.1\n", "line 3: unknown field gateway"},
		{"unknown reservation key", "subnets:\n  - subnet: 10.0.0.0/24\nreservations:\n  - {mac: 52:54:00:00:00:01, ip: 10.0.0.5, name: x}\n",
			"line 4: unknown field name"},
		{"bad subnet", "subnets:\n  - subnet: 10.0.0.0/33\n", `line 2: subnets[0].subnet "10.0.0.0/33": not an IPv4 subnet`},
		{"ipv6 subnet", "subnets:\n  - subnet: fd00::/64\n", `line 2: subnets[0].subnet "fd00::/64": not an IPv4 subnet`},
		{"missing subnet", "subnets:\n  - pools: [10.0.0.5-10.0.0.9]\n", "subnets[0].subnet is required"},
		{"host bits", "subnets:\n  - subnet: 10.0.0.1/24\n", "line 2: subnets[0].subnet 10.0.0.1/24: host bits set (want 10.0.0.0/24)"},
		{"overlapping subnets", "subnets:\n  - subnet: 10.0.0.0/16\n  - subnet: 10.0.5.0/24\n",
			"line 3: subnets[1].subnet 10.0.5.0/24: overlaps subnets[0] 10.0.0.0/16"},
		{"pool syntax", "subnets:\n  - subnet: 10.0.0.0/24\n    pools: [10.0.0.5]\n",
			`line 3: subnets[0].pools[0] "10.0.0.5": want FIRST-LAST IPv4 addresses`},
		{"pool outside subnet", "subnets:\n  - subnet: 10.0.0.0/24\n    pools:\n      - 10.0.0.5-10.0.0.9\n      - 10.0.1.5-10.0.1.9\n",
			"line 5: subnets[0].pools[1] 10.0.1.5-10.0.1.9: outside subnet 10.0.0.0/24"},
		{"overlapping pools", "subnets:\n  - subnet: 10.0.0.0/24\n    pools: [10.0.0.5-10.0.0.9, 10.0.0.9-10.0.0.20]\n",
			"line 3: subnets[0].pools[1] 10.0.0.9-10.0.0.20: overlaps pools[0] 10.0.0.5-10.0.0.9"},
		{"pool backwards", "subnets:\n  - subnet: 10.0.0.0/24\n    pools: [10.0.0.9-10.0.0.5]\n",
			"line 3: subnets[0].pools[0] 10.0.0.9-10.0.0.5: end is before start"},
		{"pool with broadcast", "subnets:\n  - subnet: 10.0.0.0/24\n    pools: [10.0.0.5-10.0.0.255]\n",
			"contains the network or broadcast address of 10.0.0.0/24"},
		{"bad router", "subnets:\n  - subnet: 10.0.0.0/24\n    router: gateway\n", `line 3: subnets[0].router "gateway": not an IPv4 address`},
		{"bad dns", "subnets:\n  - subnet: 10.0.0.0/24\n    dns: [10.0.0.1, fd00::1]\n", `line 3: subnets[0].dns[1] "fd00::1": not an IPv4 address`},
		{"dns not a list", "subnets:\n  - subnet: 10.0.0.0/24\n    dns: 10.0.0.1\n", "line 3: cannot unmarshal"},
		{"bad domain", "subnets:\n  - subnet: 10.0.0.0/24\n    domain: a b\n", `line 3: subnets[0].domain "a b": not a DNS name`},
		{"bad lease time", "subnets:\n  - subnet: 10.0.0.0/24\n    lease_time: forever\n",
			`line 3: subnets[0].lease_time "forever": not a duration`},
		{"lease time too short", "subnets:\n  - subnet: 10.0.0.0/24\n    lease_time: 10ms\n",
			"line 3: subnets[0].lease_time 10ms: out of range"},
		{"subnet as a list", "subnets:\n  - subnet: [10.0.0.0/24]\n", "line 2: subnets[0].subnet: want a single value"},
		{"bad mac", "subnets:\n  - subnet: 10.0.0.0/24\nreservations:\n  - {mac: nope, ip: 10.0.0.5}\n",
			`line 4: reservations[0].mac "nope": not a 6-byte MAC`},
		{"missing ip", "subnets:\n  - subnet: 10.0.0.0/24\nreservations:\n  - {mac: 52:54:00:00:00:01}\n", "reservations[0].ip is required"},
		{"duplicate mac", "subnets:\n  - subnet: 10.0.0.0/24\nreservations:\n  - {mac: 52:54:00:00:00:01, ip: 10.0.0.5}\n  - {mac: 52:54:00:00:00:01, ip: 10.0.0.6}\n",
			"line 5: reservations[1].mac 52:54:00:00:00:01: also reserved by reservations[0]"},
		{"duplicate ip", "subnets:\n  - subnet: 10.0.0.0/24\nreservations:\n  - {mac: 52:54:00:00:00:01, ip: 10.0.0.5}\n  - {mac: 52:54:00:00:00:02, ip: 10.0.0.5}\n",
			"line 5: reservations[1].ip 10.0.0.5: also reserved by reservations[0]"},
		{"reservation outside subnets", "subnets:\n  - subnet: 10.0.0.0/24\nreservations:\n  - {mac: 52:54:00:00:00:01, ip: 10.9.0.5}\n",
			"line 4: reservations[0].ip 10.9.0.5: outside all subnets"},
		{"reservation on broadcast", "subnets:\n  - subnet: 10.0.0.0/24\nreservations:\n  - {mac: 52:54:00:00:00:01, ip: 10.0.0.255}\n",
			"line 4: reservations[0].ip 10.0.0.255: network or broadcast address of 10.0.0.0/24"},
		{"bad hostname", "subnets:\n  - subnet: 10.0.0.0/24\nreservations:\n  - {mac: 52:54:00:00:00:01, ip: 10.0.0.5, hostname: \"a/b\"}\n",
			`line 4: reservations[0].hostname "a/b": not a DNS name`},
		{"duplicate key", "subnets:\n  - subnet: 10.0.0.0/24\n    subnet: 10.0.1.0/24\n", `line 3: mapping key "subnet" already defined`},
		{"two documents", "subnets: []\n---\nsubnets: []\n", "more than one YAML document"},
		{"not yaml", "subnets: [\n", "did not find expected node content"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseConfigFile([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseConfigFile(%q) = %+v, %v; want error containing %q", tt.yaml, f, err, tt.want)
			}
		})
	}
}

// FuzzParseConfigFile checks that whatever parses survives Marshal: parse,
// marshal and parse again give the same File.
func FuzzParseConfigFile(f *testing.F) {
	f.Add([]byte(exampleConfig))
	seeds, _ := filepath.Glob(filepath.Join("testdata", "config", "*.yaml"))
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := ParseConfigFile(b)
		if err != nil {
			return
		}
		out, err := file.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		again, err := ParseConfigFile(out)
		if err != nil {
			t.Fatalf("ParseConfigFile(Marshal()) = %v\n%s", err, out)
		}
		if diff := cmp.Diff(file, again, equateAddrs); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s\n%s", diff, out)
		}
	})
}
