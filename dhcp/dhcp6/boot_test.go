package dhcp6

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

func mustMAC(t testing.TB, s string) net.HardwareAddr {
	t.Helper()
	mac, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

func TestMACOf(t *testing.T) {
	mac := mustMAC(t, "52:54:00:12:34:56")
	other := mustMAC(t, "02:00:00:00:00:99")
	ll := netip.MustParseAddr("fe80::5054:ff:fe12:3456")
	privacy := netip.MustParseAddr("fe80::1c2d:3e4f:5a6b:7c8d")
	for _, tc := range []struct {
		name       string
		duid       dhcpv6.DUID
		opt79      net.HardwareAddr
		src        netip.Addr
		want, from string
	}{
		{"opt 79 first", &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: other}, mac, ll, mac.String(), "opt79"},
		{"link-local before DUID-LL", &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: other}, nil, ll, mac.String(), "link-local"},
		{"DUID-UUID with EUI-64 source (EDK2)", &dhcpv6.DUIDUUID{}, nil, ll, mac.String(), "link-local"},
		{"DUID-LL with privacy source", &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac}, nil, privacy, mac.String(), "duid-ll"},
		{"DUID-LLT", &dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac, Time: 5}, nil, privacy, mac.String(), "duid-llt"},
		{"nothing", &dhcpv6.DUIDUUID{}, nil, privacy, "", ""},
		{"global source is not used", &dhcpv6.DUIDUUID{}, nil, netip.MustParseAddr("fd77::5054:ff:fe12:3456"), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeSolicit}
			m.AddOption(dhcpv6.OptClientID(tc.duid))
			if tc.opt79 != nil {
				m.AddOption(dhcpv6.OptClientLinkLayerAddress(iana.HWTypeEthernet, tc.opt79))
			}
			got, from := macOf(m, tc.src)
			s := ""
			if got != nil {
				s = got.String()
			}
			if s != tc.want || from != tc.from {
				t.Errorf("macOf() = %q from %q, want %q from %q", s, from, tc.want, tc.from)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no interface", func(c *Config) { c.Interface = "" }, "Interface is required"},
		{"no store", func(c *Config) { c.Leases = nil }, "Leases is required"},
		{"no server", func(c *Config) { c.ServerIP = netip.Addr{} }, "ServerIP is required"},
		{"IPv4 server", func(c *Config) { c.ServerIP = netip.MustParseAddr("10.0.0.1") }, "not a global or unique-local IPv6"},
		{"link-local server", func(c *Config) { c.ServerIP = netip.MustParseAddr("fe80::1") }, "not a global or unique-local IPv6"},
		{"server off prefix", func(c *Config) { c.ServerIP = netip.MustParseAddr("fd78::1") }, "outside Prefix"},
		{"no prefix", func(c *Config) { c.Prefix = netip.Prefix{} }, "Prefix is required"},
		{"pool off prefix", func(c *Config) { c.Pool.End = netip.MustParseAddr("fd78::1") }, "Pool.End fd78::1 is outside Prefix"},
		{"pool reversed", func(c *Config) { c.Pool.Start, c.Pool.End = c.Pool.End, c.Pool.Start }, "before Pool.Start"},
		{"server in pool", func(c *Config) { c.ServerIP = netip.MustParseAddr("fd77::1001") }, "inside Pool"},
		{"pool wider than /64", func(c *Config) {
			c.Prefix = netip.MustParsePrefix("fd77::/48")
			c.Pool.End = netip.MustParseAddr("fd77:0:0:1::1")
		}, "spans more than one /64"},
		{"no pool", func(c *Config) { c.Pool = Pool{} }, "Pool Start and End are required"},
		{"tiny lifetime", func(c *Config) { c.ValidLifetime = time.Millisecond }, "ValidLifetime 1ms is out of range"},
		{"preferred > valid", func(c *Config) { c.PreferredLifetime = 2 * time.Hour }, "longer than ValidLifetime"},
		{"IPv4 DNS", func(c *Config) { c.DNS = []netip.Addr{netip.MustParseAddr("10.0.0.53")} }, "DNS 10.0.0.53"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &env{t: t, clk: &clock{t: testEpoch}, path: t.TempDir() + "/kiln.db"}
			e.open()
			cfg := e.config()
			tc.mutate(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New() = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestDefaultDUIDStable(t *testing.T) {
	a, b := defaultDUID("kiln-none0", testServer), defaultDUID("kiln-none0", testServer)
	if !a.Equal(b) || a.DUIDType() != dhcpv6.DUID_UUID {
		t.Errorf("defaultDUID = %v then %v, want the same DUID-UUID", a, b)
	}
	if c := defaultDUID("kiln-none0", netip.MustParseAddr("fd77::2")); c.Equal(a) {
		t.Errorf("defaultDUID is %v for two server addresses", c)
	}
}
