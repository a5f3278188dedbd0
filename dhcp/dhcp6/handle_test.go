package dhcp6

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

// addrA and addrB are the pool addresses hashed from the test DUIDs of macA
// and macB with IAID 1.
const (
	addrA = "fd77::100a"
	addrB = "fd77::100d"
	life  = "30m0s/1h0m0s"
)

func boundIA(addr string) []iaSummary {
	return []iaSummary{{IAID: 1, T1: 15 * time.Minute, T2: 24 * time.Minute, Addrs: []string{addr + " " + life}}}
}

func TestHandle(t *testing.T) {
	// solicitRequest binds an address to mac with the given flavour.
	solicitRequest := func(e *env, mac string, mods ...dhcpv6.Modifier) string {
		adv := e.handle(mac, msg(e.t, dhcpv6.MessageTypeSolicit, mac, append(mods, withIA())...))
		a := firstAddr(e.t, adv)
		rep := e.handle(mac, msg(e.t, dhcpv6.MessageTypeRequest, mac, append(mods, withIA(a), withServer(testDUID))...))
		if firstAddr(e.t, rep) != a {
			e.t.Fatalf("request got %s, want %s", firstAddr(e.t, rep), a)
		}
		return a
	}
	for _, tc := range []struct {
		name    string
		mutate  func(*Config)
		prep    func(e *env)
		mac     string
		req     func(t *testing.T) *dhcpv6.Message
		want    *summary
		outcome string
	}{
		{
			name: "UEFI HTTP Boot solicit",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeSolicit, macA, append(httpClient, withIA())...)
			},
			want: &summary{Type: "ADVERTISE", IAs: boundIA(addrA), Preference: 255, ServerID: true, ClientID: true,
				BootURL: "http://[fd77::1]:8080/httpboot/52:54:00:00:00:0a.efi", VendorClass: "HTTPClient"},
			outcome: "offered",
		},
		{
			name: "UEFI PXE solicit",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeSolicit, macA, append(pxeUEFI, withIA())...)
			},
			want: &summary{Type: "ADVERTISE", IAs: boundIA(addrA), Preference: 255, ServerID: true, ClientID: true,
				BootURL: "tftp://[fd77::1]/snponly.efi"},
			outcome: "offered",
		},
		{
			name:   "UEFI PXE solicit, own TFTP file",
			mutate: func(c *Config) { c.Boot.TFTPFile = "ipxe.efi" },
			mac:    macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeSolicit, macA, append(pxeUEFI, withIA())...)
			},
			want: &summary{Type: "ADVERTISE", IAs: boundIA(addrA), Preference: 255, ServerID: true, ClientID: true,
				BootURL: "tftp://[fd77::1]/ipxe.efi"},
			outcome: "offered",
		},
		{
			name: "iPXE solicit gets its script",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeSolicit, macA, append(ipxe, withIA())...)
			},
			want: &summary{Type: "ADVERTISE", IAs: boundIA(addrA), Preference: 255, ServerID: true, ClientID: true,
				BootURL: "http://[fd77::1]:8080/boot/52:54:00:00:00:0a.ipxe"},
			outcome: "offered",
		},
		{
			name: "ARM64 HTTP Boot gets an address only",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeSolicit, macA, dhcpv6.WithArchType(iana.EFI_ARM64_HTTP),
					dhcpv6.WithOption(&dhcpv6.OptVendorClass{EnterpriseNumber: 343, Data: [][]byte{[]byte("HTTPClient:Arch:00019")}}), withIA())
			},
			want:    &summary{Type: "ADVERTISE", IAs: boundIA(addrA), Preference: 255, ServerID: true, ClientID: true},
			outcome: "offered",
		},
		{
			name:    "plain solicit",
			mac:     macB,
			req:     func(t *testing.T) *dhcpv6.Message { return msg(t, dhcpv6.MessageTypeSolicit, macB, withIA()) },
			want:    &summary{Type: "ADVERTISE", IAs: boundIA(addrB), Preference: 255, ServerID: true, ClientID: true},
			outcome: "offered",
		},
		{
			name: "rapid commit",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeSolicit, macA, append(httpClient, withIA(), withRapid)...)
			},
			want: &summary{Type: "REPLY", IAs: boundIA(addrA), RapidCommit: true, ServerID: true, ClientID: true,
				BootURL: "http://[fd77::1]:8080/httpboot/52:54:00:00:00:0a.efi", VendorClass: "HTTPClient"},
			outcome: "acked",
		},
		{
			name:    "solicit without IA_NA",
			mac:     macA,
			req:     func(t *testing.T) *dhcpv6.Message { return msg(t, dhcpv6.MessageTypeSolicit, macA, httpClient...) },
			want:    &summary{Type: "ADVERTISE", Status: "NoAddrsAvail", Preference: 255, ServerID: true, ClientID: true},
			outcome: "nak",
		},
		{
			name: "solicit with a server identifier is dropped",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeSolicit, macA, withIA(), withServer(testDUID))
			},
			outcome: "malformed",
		},
		{
			name: "solicit without client identifier is dropped",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				m := msg(t, dhcpv6.MessageTypeSolicit, macA, withIA())
				m.Options.Del(dhcpv6.OptionClientID)
				return m
			},
			outcome: "malformed",
		},
		{
			name:   "pool exhausted",
			mutate: func(c *Config) { c.Pool.End = c.Pool.Start },
			prep:   func(e *env) { solicitRequest(e, macB) },
			mac:    macA,
			req:    func(t *testing.T) *dhcpv6.Message { return msg(t, dhcpv6.MessageTypeSolicit, macA, withIA()) },
			want: &summary{Type: "ADVERTISE", Preference: 255, ServerID: true, ClientID: true,
				IAs: []iaSummary{{IAID: 1, Status: "NoAddrsAvail"}}},
			outcome: "nak",
		},
		{
			name: "request binds the advertised address",
			prep: func(e *env) {
				e.handle(macA, msg(e.t, dhcpv6.MessageTypeSolicit, macA, append(httpClient, withIA())...))
			},
			mac: macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeRequest, macA, append(httpClient, withIA(addrA), withServer(testDUID))...)
			},
			want: &summary{Type: "REPLY", IAs: boundIA(addrA), ServerID: true, ClientID: true,
				BootURL: "http://[fd77::1]:8080/httpboot/52:54:00:00:00:0a.efi", VendorClass: "HTTPClient"},
			outcome: "acked",
		},
		{
			name: "request for another server is ignored",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeRequest, macA, withIA(addrA),
					withServer(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: []byte{2, 0, 0, 0, 0, 9}}))
			},
			outcome: "ignored",
		},
		{
			name:    "request without server identifier is dropped",
			mac:     macA,
			req:     func(t *testing.T) *dhcpv6.Message { return msg(t, dhcpv6.MessageTypeRequest, macA, withIA(addrA)) },
			outcome: "malformed",
		},
		{
			name: "request for an off-link address",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeRequest, macA, withIA("2001:db8::5"), withServer(testDUID))
			},
			want: &summary{Type: "REPLY", ServerID: true, ClientID: true,
				IAs: []iaSummary{{IAID: 1, Status: "NotOnLink"}}},
			outcome: "nak",
		},
		{
			name: "request for another client's address gets its own",
			prep: func(e *env) { solicitRequest(e, macB) },
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeRequest, macA, withIA(addrB), withServer(testDUID))
			},
			want:    &summary{Type: "REPLY", IAs: boundIA(addrA), ServerID: true, ClientID: true},
			outcome: "acked",
		},
		{
			name: "renew extends a binding",
			prep: func(e *env) { solicitRequest(e, macA); e.clk.Advance(20 * time.Minute) },
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeRenew, macA, withIA(addrA), withServer(testDUID))
			},
			want:    &summary{Type: "REPLY", IAs: boundIA(addrA), ServerID: true, ClientID: true},
			outcome: "acked",
		},
		{
			name: "renew without binding",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeRenew, macA, withIA(addrA), withServer(testDUID))
			},
			want: &summary{Type: "REPLY", ServerID: true, ClientID: true,
				IAs: []iaSummary{{IAID: 1, Status: "NoBinding"}}},
			outcome: "nak",
		},
		{
			name: "renew of a wrong address withdraws it",
			prep: func(e *env) { solicitRequest(e, macA) },
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeRenew, macA, withIA(addrA, "fd77::1009"), withServer(testDUID))
			},
			want: &summary{Type: "REPLY", ServerID: true, ClientID: true,
				IAs: []iaSummary{{IAID: 1, T1: 15 * time.Minute, T2: 24 * time.Minute,
					Addrs: []string{addrA + " " + life, "fd77::1009 0s/0s"}}}},
			outcome: "acked",
		},
		{
			name: "rebind of a free pool address binds it",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeRebind, macA, withIA("fd77::1007"))
			},
			want:    &summary{Type: "REPLY", IAs: boundIA("fd77::1007"), ServerID: true, ClientID: true},
			outcome: "acked",
		},
		{
			name: "rebind of an off-link address gets lifetime 0",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeRebind, macA, withIA("2001:db8::5"))
			},
			want: &summary{Type: "REPLY", ServerID: true, ClientID: true,
				IAs: []iaSummary{{IAID: 1, Addrs: []string{"2001:db8::5 0s/0s"}}}},
			outcome: "nak",
		},
		{
			name: "confirm on link",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeConfirm, macA, withIA("fd77::abcd"))
			},
			want:    &summary{Type: "REPLY", Status: "Success", ServerID: true, ClientID: true},
			outcome: "confirmed",
		},
		{
			name: "confirm off link",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeConfirm, macA, withIA("2001:db8::1"))
			},
			want:    &summary{Type: "REPLY", Status: "NotOnLink", ServerID: true, ClientID: true},
			outcome: "nak",
		},
		{
			name:    "confirm without addresses is ignored",
			mac:     macA,
			req:     func(t *testing.T) *dhcpv6.Message { return msg(t, dhcpv6.MessageTypeConfirm, macA, withIA()) },
			outcome: "ignored",
		},
		{
			name: "release",
			prep: func(e *env) { solicitRequest(e, macA) },
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeRelease, macA, withIA(addrA), withServer(testDUID))
			},
			want:    &summary{Type: "REPLY", Status: "Success", ServerID: true, ClientID: true},
			outcome: "released",
		},
		{
			name: "release without binding",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeRelease, macA, withIA(addrA), withServer(testDUID))
			},
			want: &summary{Type: "REPLY", Status: "Success", ServerID: true, ClientID: true,
				IAs: []iaSummary{{IAID: 1, Status: "NoBinding"}}},
			outcome: "released",
		},
		{
			name: "decline",
			prep: func(e *env) { solicitRequest(e, macA) },
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeDecline, macA, withIA(addrA), withServer(testDUID))
			},
			want:    &summary{Type: "REPLY", Status: "Success", ServerID: true, ClientID: true},
			outcome: "declined",
		},
		{
			name: "information-request",
			mac:  macA,
			req: func(t *testing.T) *dhcpv6.Message {
				return msg(t, dhcpv6.MessageTypeInformationRequest, macA, httpClient...)
			},
			want: &summary{Type: "REPLY", ServerID: true, ClientID: true,
				BootURL: "http://[fd77::1]:8080/httpboot/52:54:00:00:00:0a.efi", VendorClass: "HTTPClient"},
			outcome: "informed",
		},
		{
			name:    "advertise from a client is ignored",
			mac:     macA,
			req:     func(t *testing.T) *dhcpv6.Message { return msg(t, dhcpv6.MessageTypeAdvertise, macA, withIA()) },
			outcome: "ignored",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mutate []func(*Config)
			if tc.mutate != nil {
				mutate = append(mutate, tc.mutate)
			}
			e := newEnv(t, mutate...)
			if tc.prep != nil {
				tc.prep(e)
			}
			e.decs = nil
			got := summarize(e.handle(tc.mac, tc.req(t)))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
			if len(e.decs) != 1 {
				t.Fatalf("OnDecision called %d times, want once: %+v", len(e.decs), e.decs)
			}
			if d := e.decs[0]; d.Outcome != tc.outcome || d.MAC != tc.mac || d.MACSource != "link-local" || d.XID == "" {
				t.Errorf("decision = %+v, want outcome %q, MAC %s from link-local and an XID", d, tc.outcome, tc.mac)
			}
		})
	}
}

func TestLeaseLifecycle(t *testing.T) {
	e := newEnv(t)
	adv := e.handle(macA, msg(t, dhcpv6.MessageTypeSolicit, macA, append(httpClient, withIA())...))
	a := firstAddr(t, adv)
	if got := e.s.Leases(); len(got) != 1 || got[0].State != StateOffered || got[0].IP != a ||
		!got[0].Expires.Equal(testEpoch.Add(DefaultOfferTime)) || got[0].MAC != macA {
		t.Fatalf("after Advertise, Leases() = %+v, want one offered lease of %s for %s", got, a, macA)
	}
	e.handle(macA, msg(t, dhcpv6.MessageTypeRequest, macA, append(httpClient, withIA(a), withServer(testDUID))...))
	// The lease is durable: a new server on the reopened store knows it.
	e.restart()
	want := []Lease{{DUID: strings.TrimPrefix(e.leaseDUID(macA), ""), IAID: "00000001", MAC: macA, IP: a,
		Expires: testEpoch.Add(DefaultValidLifetime), State: StateBound}}
	if diff := cmp.Diff(want, e.s.Leases()); diff != "" {
		t.Fatalf("after restart, Leases() (-want +got):\n%s", diff)
	}
	// A chain-loaded loader (iPXE) solicits again: same address.
	if got := firstAddr(t, e.handle(macA, msg(t, dhcpv6.MessageTypeSolicit, macA, append(ipxe, withIA())...))); got != a {
		t.Errorf("second solicit got %s, want %s", got, a)
	}
	// Another client never gets a bound address.
	if got := firstAddr(t, e.handle(macB, msg(t, dhcpv6.MessageTypeSolicit, macB, withIA(a)))); got == a {
		t.Errorf("%s got %s, bound to %s", macB, got, macA)
	}
	// Declined addresses are held, then return to the pool.
	e.handle(macA, msg(t, dhcpv6.MessageTypeDecline, macA, withIA(a), withServer(testDUID)))
	if got := firstAddr(t, e.handle(macA, msg(t, dhcpv6.MessageTypeSolicit, macA, withIA()))); got == a {
		t.Errorf("after decline, solicit got the declined %s", a)
	}
	e.clk.Advance(declineHold + time.Second)
	e.handle(macA, msg(t, dhcpv6.MessageTypeRelease, macA, withIA(firstAddr(t, e.handle(macA,
		msg(t, dhcpv6.MessageTypeSolicit, macA, withIA())))), withServer(testDUID)))
	// Observer saw the offers and the ack, with the MAC from the link-local address.
	if len(e.events) < 2 || e.events[0].Kind != "offered" || e.events[1].Kind != "acked" ||
		e.events[1].MAC.String() != macA || e.events[1].IP.String() != a ||
		e.events[1].BootFile != httpBootURL(mustMAC(t, macA)) || e.events[1].Arch != "EFI x86-64 boot from HTTP" {
		t.Errorf("events = %+v", e.events)
	}
}

func (e *env) leaseDUID(mac string) string {
	b := clientDUID(e.t, mac).ToBytes()
	const hexdigits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, hexdigits[c>>4], hexdigits[c&15])
	}
	return string(out)
}
