package dhcp

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// protoICMPv6 is the IANA protocol number icmp.ParseMessage wants.
const protoICMPv6 = 58

func mustMAC(t testing.TB, s string) net.HardwareAddr {
	t.Helper()
	mac, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

func TestRouterAdvertMarshal(t *testing.T) {
	mac := mustMAC(t, "52:54:00:12:34:56")
	got := routerAdvert{SourceLLA: mac}.marshal()
	want := []byte{
		134, 0, 0, 0, // type, code, checksum (the kernel's)
		0, 0, 0, 0, // cur hop limit unspecified, M and O clear, router lifetime 0
		0, 0, 0, 0, // reachable time unspecified
		0, 0, 0, 0, // retrans timer unspecified
		1, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // source link-layer address, 1 unit
	}
	if !bytes.Equal(got, want) {
		t.Errorf("marshal() = % x, want % x", got, want)
	}
}

func TestRouterAdvertRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		ra   routerAdvert
	}{
		{"kiln", routerAdvert{SourceLLA: mustMAC(t, "52:54:00:12:34:56")}},
		{"no link-layer address", routerAdvert{}},
		{"all fields", routerAdvert{CurHopLimit: 64, Managed: true, Other: true, RouterLifetime: 1800,
			ReachableTime: 30000, RetransTimer: 1000, SourceLLA: mustMAC(t, "02:00:00:00:00:01")}},
		{"padded address", routerAdvert{SourceLLA: net.HardwareAddr{1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.ra.marshal()
			if len(b)%8 != 0 {
				t.Errorf("marshal() is %d bytes, not a multiple of 8", len(b))
			}
			m, err := icmp.ParseMessage(protoICMPv6, b)
			if err != nil {
				t.Fatalf("icmp.ParseMessage: %v", err)
			}
			if m.Type != ipv6.ICMPTypeRouterAdvertisement || m.Code != 0 {
				t.Errorf("icmp.ParseMessage: type %v code %d, want router advertisement code 0", m.Type, m.Code)
			}
			if body, ok := m.Body.(*icmp.RawBody); !ok || !bytes.Equal(body.Data, b[4:]) {
				t.Errorf("icmp.ParseMessage body = %#v, want raw % x", m.Body, b[4:])
			}
			got, err := parseRA(b)
			if err != nil {
				t.Fatalf("parseRA(% x): %v", b, err)
			}
			if diff := cmp.Diff(tc.ra, got); diff != "" {
				t.Errorf("parseRA(marshal()) (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRouterAdvertChecksum checks that the message the kernel checksums is
// what x/net/icmp builds from the same body.
func TestRouterAdvertChecksum(t *testing.T) {
	b := routerAdvert{SourceLLA: mustMAC(t, "52:54:00:12:34:56")}.marshal()
	src, dst := net.ParseIP("fe80::1"), allNodes
	m := icmp.Message{Type: ipv6.ICMPTypeRouterAdvertisement, Body: &icmp.RawBody{Data: b[4:]}}
	withSum, err := m.Marshal(icmp.IPv6PseudoHeader(src, dst))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(withSum[4:], b[4:]) || !bytes.Equal(withSum[:2], b[:2]) {
		t.Errorf("icmp.Message.Marshal = % x, want % x apart from the checksum", withSum, b)
	}
}

func TestParseRA(t *testing.T) {
	good := routerAdvert{SourceLLA: mustMAC(t, "52:54:00:12:34:56")}.marshal()
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", good[:15]},
		{"solicitation", append([]byte{133}, good[1:]...)},
		{"code 1", append([]byte{134, 1}, good[2:]...)},
		{"zero-length option", append(good[:16:16], 1, 0, 0, 0, 0, 0, 0, 0)},
		{"option past the end", append(good[:16:16], 1, 2, 0, 0, 0, 0, 0, 0)},
		{"odd byte", append(good[:24:24], 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ra, err := parseRA(tc.b); err == nil {
				t.Errorf("parseRA(% x) = %+v, want error", tc.b, ra)
			}
		})
	}
}

// rsBytes is a Router Solicitation (RFC 4861 section 4.1) with an optional
// source link-layer address option.
func rsBytes(lla net.HardwareAddr) []byte {
	b := []byte{byte(ipv6.ICMPTypeRouterSolicitation), 0, 0, 0, 0, 0, 0, 0}
	if lla != nil {
		b = appendLLAOption(b, ndOptSourceLLA, lla)
	}
	return b
}

func TestParseRS(t *testing.T) {
	mac := mustMAC(t, "52:54:00:ab:cd:ef")
	ll, unspec := net.ParseIP("fe80::5054:ff:feab:cdef"), net.IPv6unspecified
	withMTU := append(rsBytes(nil), 5, 1, 0, 0, 0, 0, 0x05, 0xdc) // unknown to RS, skipped
	for _, tc := range []struct {
		name    string
		b       []byte
		src     net.IP
		want    net.HardwareAddr
		wantErr bool
	}{
		{"with address", rsBytes(mac), ll, mac, false},
		{"without address", rsBytes(nil), ll, nil, false},
		{"unspecified source", rsBytes(nil), unspec, nil, false},
		{"other option", withMTU, ll, nil, false},
		{"address from unspecified", rsBytes(mac), unspec, nil, true},
		{"short", rsBytes(nil)[:7], ll, nil, true},
		{"advertisement", routerAdvert{}.marshal(), ll, nil, true},
		{"code 1", []byte{133, 1, 0, 0, 0, 0, 0, 0}, ll, nil, true},
		{"zero-length option", append(rsBytes(nil), 1, 0, 0, 0, 0, 0, 0, 0), ll, nil, true},
		{"truncated option", rsBytes(mac)[:14], ll, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRS(tc.b, tc.src)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseRS(% x, %v) error = %v, want error %v", tc.b, tc.src, err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parseRS(% x, %v) (-want +got):\n%s", tc.b, tc.src, diff)
			}
		})
	}
}

// FuzzParseRA checks that whatever parseRA accepts survives
// parse → marshal → parse unchanged.
func FuzzParseRA(f *testing.F) {
	f.Add(routerAdvert{SourceLLA: net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}}.marshal())
	f.Add(routerAdvert{CurHopLimit: 64, Managed: true, RouterLifetime: 1800}.marshal())
	f.Add(append(routerAdvert{}.marshal(), 3, 4, 64, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)) // prefix information
	f.Fuzz(func(t *testing.T, b []byte) {
		ra, err := parseRA(b)
		if err != nil {
			return
		}
		again, err := parseRA(ra.marshal())
		if err != nil {
			t.Fatalf("parseRA(marshal(%+v)): %v", ra, err)
		}
		if diff := cmp.Diff(ra, again); diff != "" {
			t.Errorf("parse → marshal → parse (-first +second):\n%s", diff)
		}
	})
}

// FuzzParseRS checks that parseRS never panics and keeps its promises.
func FuzzParseRS(f *testing.F) {
	f.Add(rsBytes(net.HardwareAddr{0x52, 0x54, 0, 0xab, 0xcd, 0xef}), true)
	f.Add(rsBytes(nil), false)
	f.Fuzz(func(t *testing.T, b []byte, linkLocal bool) {
		src := net.IPv6unspecified
		if linkLocal {
			src = net.ParseIP("fe80::1")
		}
		lla, err := parseRS(b, src)
		if err != nil {
			return
		}
		if len(b) < rsHeaderLen || b[0] != byte(ipv6.ICMPTypeRouterSolicitation) {
			t.Errorf("parseRS(% x) accepted a non-solicitation", b)
		}
		if lla != nil && !linkLocal {
			t.Errorf("parseRS(% x, ::) returned address %v", b, lla)
		}
	})
}

func TestServeRAConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  RAConfig
	}{
		{"no interface", RAConfig{}},
		{"missing interface", RAConfig{Interface: "kiln-none0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ServeRA(context.Background(), tc.cfg); err == nil {
				t.Errorf("ServeRA(%+v) = nil, want error", tc.cfg)
			}
		})
	}
}

func TestRouterAdvertPrefixMarshal(t *testing.T) {
	ra := routerAdvert{Managed: true, Prefixes: []prefixInfo{{
		Prefix: netip.MustParsePrefix("fd77::/64"), OnLink: true, ValidLifetime: 86400, PreferredLifetime: 3600,
	}}}
	got := ra.marshal()
	want := []byte{
		134, 0, 0, 0,
		0, 0x80, 0, 0, // M set, O clear, router lifetime 0
		0, 0, 0, 0,
		0, 0, 0, 0,
		3, 4, 64, 0x80, // prefix information, 4 units, /64, L set, A clear
		0, 1, 0x51, 0x80, // valid lifetime 86400
		0, 0, 0x0e, 0x10, // preferred lifetime 3600
		0, 0, 0, 0, // reserved
		0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	}
	if !bytes.Equal(got, want) {
		t.Errorf("marshal() = % x, want % x", got, want)
	}
	again, err := parseRA(got)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ra, again); diff != "" {
		t.Errorf("parseRA(marshal()) (-want +got):\n%s", diff)
	}
}

func TestRAPrefixes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []RAPrefix
		want    []prefixInfo
		wantErr bool
	}{
		{"none", nil, nil, false},
		{"defaults", []RAPrefix{{Prefix: netip.MustParsePrefix("fd77::1/64"), OnLink: true}},
			[]prefixInfo{{Prefix: netip.MustParsePrefix("fd77::/64"), OnLink: true, ValidLifetime: 86400, PreferredLifetime: 86400}}, false},
		{"infinite", []RAPrefix{{Prefix: netip.MustParsePrefix("2001:db8::/48"), Autonomous: true, ValidLifetime: 1 << 62}},
			[]prefixInfo{{Prefix: netip.MustParsePrefix("2001:db8::/48"), Autonomous: true, ValidLifetime: 1<<32 - 1, PreferredLifetime: 1<<32 - 1}}, false},
		{"ipv4", []RAPrefix{{Prefix: netip.MustParsePrefix("10.0.0.0/8")}}, nil, true},
		{"zero", []RAPrefix{{}}, nil, true},
		{"preferred past valid", []RAPrefix{{Prefix: netip.MustParsePrefix("fd77::/64"), ValidLifetime: time.Hour, PreferredLifetime: 2 * time.Hour}}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := raPrefixes(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("raPrefixes(%+v) error = %v, want error %v", tc.in, err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("raPrefixes(%+v) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}
