package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/dhcp"
)

// TestDHCPSubnets checks how --dhcp-config, --range, --router, --dns and
// --proxy combine into the DHCP server's subnets.
func TestDHCPSubnets(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rack := write("rack.yaml", "subnets:\n  - subnet: 10.78.0.0/24\n    pools: [10.78.0.100-10.78.0.199]\n    router: 10.78.0.1\nreservations:\n  - {mac: \"52:54:00:77:00:10\", ip: 10.78.0.50}\n")
	own := write("own.yaml", "subnets:\n  - subnet: 10.77.0.0/24\n    pools: [10.77.0.10-10.77.0.20]\n")
	bad := write("bad.yaml", "subnets:\n  - subnet: 10.78.0.0/24\n    pool: [10.78.0.100-10.78.0.199]\n")
	ipnet := &net.IPNet{IP: net.IPv4(10, 77, 0, 1).To4(), Mask: net.CIDRMask(24, 32)}

	for _, tc := range []struct {
		name    string
		f       serveFlags
		subnets []string // "prefix pools"
		resv    int
		err     string
	}{
		{name: "interface only", f: serveFlags{dhcpRange: "10.77.0.100-10.77.0.110"},
			subnets: []string{"10.77.0.0/24 10.77.0.100-10.77.0.110"}},
		{name: "default pool", subnets: []string{"10.77.0.0/24 10.77.0.128-10.77.0.254"}},
		{name: "rack file adds a relayed subnet", f: serveFlags{dhcpConfig: rack, router: "10.77.0.254"},
			subnets: []string{"10.77.0.0/24 10.77.0.128-10.77.0.254", "10.78.0.0/24 10.78.0.100-10.78.0.199"}, resv: 1},
		{name: "file describes the interface's subnet", f: serveFlags{dhcpConfig: own},
			subnets: []string{"10.77.0.0/24 10.77.0.10-10.77.0.20"}},
		{name: "file and --range for the same subnet", f: serveFlags{dhcpConfig: own, dhcpRange: "10.77.0.100-10.77.0.110"},
			err: "describes the interface's subnet 10.77.0.0/24: drop --range"},
		{name: "unknown field", f: serveFlags{dhcpConfig: bad}, err: "bad.yaml: dhcp config: line 3: unknown field pool"},
		{name: "missing file", f: serveFlags{dhcpConfig: filepath.Join(dir, "nope.yaml")}, err: "nope.yaml: no such file"},
		{name: "proxy", f: serveFlags{proxy: true}},
		{name: "proxy with a range", f: serveFlags{proxy: true, dhcpRange: "10.77.0.100-10.77.0.110"}, err: "--proxy hands out no addresses"},
		{name: "bad router", f: serveFlags{router: "fe80::1"}, err: `--router "fe80::1" is not an IPv4 address`},
		{name: "bad dns", f: serveFlags{dns: "10.0.0.1,x"}, err: `"x" is not an IPv4 address`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg dhcp.Config
			err := dhcpSubnets(&cfg, tc.f, ipnet)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, sn := range cfg.Subnets {
				var pools []string
				for _, p := range sn.Pools {
					pools = append(pools, p.String())
				}
				got = append(got, sn.Prefix.String()+" "+strings.Join(pools, ","))
			}
			if strings.Join(got, ";") != strings.Join(tc.subnets, ";") {
				t.Errorf("subnets %q, want %q", got, tc.subnets)
			}
			if len(cfg.Reservations) != tc.resv {
				t.Errorf("%d reservations, want %d", len(cfg.Reservations), tc.resv)
			}
		})
	}
}
