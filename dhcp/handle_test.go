package dhcp

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

func TestDORA(t *testing.T) {
	e := newEnv(t)
	offer := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA))
	if diff := cmp.Diff(plainReply("OFFER", "10.77.0.100"), summarize(offer)); diff != "" {
		t.Fatalf("DISCOVER reply (-want +got):\n%s", diff)
	}
	wantOffered := []Lease{{MAC: macA, IP: "10.77.0.100", Expires: testEpoch.Add(DefaultOfferTime), State: StateOffered}}
	if diff := cmp.Diff(wantOffered, e.s.Leases()); diff != "" {
		t.Fatalf("Leases() after OFFER (-want +got):\n%s", diff)
	}

	e.clk.Advance(3 * time.Second)
	ack := e.handle(packet(t, dhcpv4.MessageTypeRequest, macA,
		withRequested(offer.YourIPAddr), withServerID(offer.ServerIdentifier())))
	if diff := cmp.Diff(plainReply("ACK", "10.77.0.100"), summarize(ack)); diff != "" {
		t.Fatalf("REQUEST reply (-want +got):\n%s", diff)
	}
	bound := testEpoch.Add(3*time.Second + DefaultLeaseTime)
	wantBound := []Lease{{MAC: macA, IP: "10.77.0.100", Expires: bound, State: StateBound}}
	if diff := cmp.Diff(wantBound, e.s.Leases()); diff != "" {
		t.Fatalf("Leases() after ACK (-want +got):\n%s", diff)
	}
	if ack.TransactionID != offer.TransactionID || ack.OpCode != dhcpv4.OpcodeBootReply {
		t.Errorf("ACK xid %s op %s, want %s BootReply", ack.TransactionID, ack.OpCode, offer.TransactionID)
	}
	hw, _ := net.ParseMAC(macA)
	wantEvents := []Event{
		{Kind: "offered", MAC: hw, IP: ip("10.77.0.100"), XID: "0xc0ffee0a"},
		{Kind: "acked", MAC: hw, IP: ip("10.77.0.100"), XID: "0xc0ffee0a"},
	}
	if diff := cmp.Diff(wantEvents, e.events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestDiscoverAddresses(t *testing.T) {
	e := newEnv(t)
	first := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA)).YourIPAddr.String()
	again := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA)).YourIPAddr.String()
	other := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macB)).YourIPAddr.String()
	asked := e.handle(packet(t, dhcpv4.MessageTypeDiscover, "52:54:00:00:00:0c",
		withRequested(ip("10.77.0.105")))).YourIPAddr.String()
	taken := e.handle(packet(t, dhcpv4.MessageTypeDiscover, "52:54:00:00:00:0d",
		withRequested(ip("10.77.0.105")))).YourIPAddr.String()
	outside := e.handle(packet(t, dhcpv4.MessageTypeDiscover, "52:54:00:00:00:0e",
		withRequested(ip("10.77.0.50")))).YourIPAddr.String()
	got := []string{first, again, other, asked, taken, outside}
	want := []string{"10.77.0.100", "10.77.0.100", "10.77.0.101", "10.77.0.105", "10.77.0.102", "10.77.0.103"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("offered addresses for A, A again, B, C asks .105, D asks .105, E asks outside (-want +got):\n%s", diff)
	}
}

func TestDiscoverKeepsBinding(t *testing.T) {
	e := newEnv(t)
	e.dora(macA)
	e.clk.Advance(time.Minute)
	// A chain-loaded boot loader discovers again: the binding stays bound.
	offer := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA))
	want := []Lease{{MAC: macA, IP: "10.77.0.100", Expires: testEpoch.Add(DefaultLeaseTime), State: StateBound}}
	if diff := cmp.Diff(want, e.s.Leases()); diff != "" || offer.YourIPAddr.String() != "10.77.0.100" {
		t.Errorf("offer %s, Leases() (-want +got):\n%s", offer.YourIPAddr, diff)
	}
}

func TestPoolExhausted(t *testing.T) {
	e := newEnv(t)
	for i := range 10 {
		if resp := e.handle(packet(t, dhcpv4.MessageTypeDiscover, fmt.Sprintf("52:54:00:00:01:%02x", i))); resp == nil {
			t.Fatalf("DISCOVER %d: no offer", i)
		}
	}
	if resp := e.handle(packet(t, dhcpv4.MessageTypeDiscover, "52:54:00:00:02:00")); resp != nil {
		t.Fatalf("DISCOVER with the pool full = %v, want no reply", summarize(resp))
	}
	// Offers expire: the pool refills.
	e.clk.Advance(DefaultOfferTime)
	if resp := e.handle(packet(t, dhcpv4.MessageTypeDiscover, "52:54:00:00:02:00")); resp == nil {
		t.Fatal("DISCOVER after the offers expired: no offer")
	}
}

func TestExpiredLeaseReused(t *testing.T) {
	e := newEnv(t)
	e.dora(macA)
	e.clk.Advance(DefaultLeaseTime)
	offer := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macB))
	if got := offer.YourIPAddr.String(); got != "10.77.0.100" {
		t.Fatalf("DISCOVER from B after A's lease expired offered %s, want 10.77.0.100", got)
	}
	offer = e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA))
	if got := offer.YourIPAddr.String(); got != "10.77.0.101" {
		t.Fatalf("DISCOVER from A after B took its address offered %s, want 10.77.0.101", got)
	}
	want := []Lease{
		{MAC: macB, IP: "10.77.0.100", Expires: e.clk.Now().Add(DefaultOfferTime), State: StateOffered},
		{MAC: macA, IP: "10.77.0.101", Expires: e.clk.Now().Add(DefaultOfferTime), State: StateOffered},
	}
	if diff := cmp.Diff(want, e.s.Leases()); diff != "" {
		t.Errorf("Leases() (-want +got):\n%s", diff)
	}
}

func TestRequestOtherServerReleasesOffer(t *testing.T) {
	e := newEnv(t)
	e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA))
	resp := e.handle(packet(t, dhcpv4.MessageTypeRequest, macA,
		withRequested(ip("10.77.0.200")), withServerID(ip("10.77.0.2"))))
	if resp != nil {
		t.Fatalf("REQUEST to another server = %v, want no reply", summarize(resp))
	}
	if got := e.s.Leases(); len(got) != 0 {
		t.Fatalf("Leases() = %v, want our offer released", got)
	}
	if got := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macB)).YourIPAddr.String(); got != "10.77.0.100" {
		t.Errorf("next offer = %s, want the released 10.77.0.100", got)
	}
}

func TestRequest(t *testing.T) {
	ours := withServerID(testServerIP)
	tests := []struct {
		name  string
		setup func(e *testEnv)
		mods  []dhcpv4.Modifier
		want  *summary
		lease string // A's lease afterwards, as "ip state"
	}{{
		name:  "selecting wrong address",
		setup: func(e *testEnv) { e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA)) },
		mods:  []dhcpv4.Modifier{ours, withRequested(ip("10.77.0.105"))},
		want:  &summary{Type: "NAK", YIAddr: "0.0.0.0", CIAddr: "0.0.0.0", SIAddr: "0.0.0.0", ServerID: "10.77.0.1"},
		lease: "10.77.0.100 offered",
	}, {
		name: "selecting without offer",
		mods: []dhcpv4.Modifier{ours, withRequested(ip("10.77.0.100"))},
		want: &summary{Type: "NAK", YIAddr: "0.0.0.0", CIAddr: "0.0.0.0", SIAddr: "0.0.0.0", ServerID: "10.77.0.1"},
	}, {
		name: "init-reboot unknown client is silent",
		mods: []dhcpv4.Modifier{withRequested(ip("10.77.0.104"))},
	}, {
		name: "init-reboot wrong subnet",
		mods: []dhcpv4.Modifier{withRequested(ip("192.168.1.20"))},
		want: &summary{Type: "NAK", YIAddr: "0.0.0.0", CIAddr: "0.0.0.0", SIAddr: "0.0.0.0", ServerID: "10.77.0.1"},
	}, {
		name:  "init-reboot known client wrong address",
		setup: func(e *testEnv) { e.dora(macA) },
		mods:  []dhcpv4.Modifier{withRequested(ip("10.77.0.107"))},
		want:  &summary{Type: "NAK", YIAddr: "0.0.0.0", CIAddr: "0.0.0.0", SIAddr: "0.0.0.0", ServerID: "10.77.0.1"},
		lease: "10.77.0.100 bound",
	}, {
		name:  "init-reboot address of another client",
		setup: func(e *testEnv) { e.dora(macB) },
		mods:  []dhcpv4.Modifier{withRequested(ip("10.77.0.100"))},
		want:  &summary{Type: "NAK", YIAddr: "0.0.0.0", CIAddr: "0.0.0.0", SIAddr: "0.0.0.0", ServerID: "10.77.0.1"},
	}, {
		name:  "init-reboot known client",
		setup: func(e *testEnv) { e.dora(macA) },
		mods:  []dhcpv4.Modifier{withRequested(ip("10.77.0.100"))},
		want:  plainReply("ACK", "10.77.0.100"),
		lease: "10.77.0.100 bound",
	}, {
		name:  "renewing",
		setup: func(e *testEnv) { e.dora(macA) },
		mods:  []dhcpv4.Modifier{dhcpv4.WithClientIP(ip("10.77.0.100"))},
		want: func() *summary {
			s := plainReply("ACK", "10.77.0.100")
			s.CIAddr = "10.77.0.100"
			return s
		}(),
		lease: "10.77.0.100 bound",
	}, {
		name:  "renewing wrong address",
		setup: func(e *testEnv) { e.dora(macA) },
		mods:  []dhcpv4.Modifier{dhcpv4.WithClientIP(ip("10.77.0.30"))},
		want:  &summary{Type: "NAK", YIAddr: "0.0.0.0", CIAddr: "0.0.0.0", SIAddr: "0.0.0.0", ServerID: "10.77.0.1"},
		lease: "10.77.0.100 bound",
	}, {
		name: "renewing unknown client is silent",
		mods: []dhcpv4.Modifier{dhcpv4.WithClientIP(ip("10.77.0.30"))},
	}, {
		name: "no address named",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if tt.setup != nil {
				tt.setup(e)
			}
			got := e.handle(packet(t, dhcpv4.MessageTypeRequest, macA, tt.mods...))
			if diff := cmp.Diff(tt.want, summarize(got)); diff != "" {
				t.Errorf("REQUEST reply (-want +got):\n%s", diff)
			}
			lease := ""
			for _, l := range e.s.Leases() {
				if l.MAC == macA {
					lease = l.IP + " " + l.State
				}
			}
			if lease != tt.lease {
				t.Errorf("A's lease = %q, want %q", lease, tt.lease)
			}
		})
	}
}

func TestRelease(t *testing.T) {
	e := newEnv(t)
	ack := e.dora(macA)
	e.handle(packet(t, dhcpv4.MessageTypeRelease, macB, dhcpv4.WithClientIP(ack.YourIPAddr)))
	if got := len(e.s.Leases()); got != 1 {
		t.Fatalf("RELEASE from another MAC: %d leases, want 1", got)
	}
	resp := e.handle(packet(t, dhcpv4.MessageTypeRelease, macA,
		dhcpv4.WithClientIP(ack.YourIPAddr), withServerID(testServerIP)))
	if resp != nil {
		t.Fatalf("RELEASE reply = %v, want none", summarize(resp))
	}
	if got := e.s.Leases(); len(got) != 0 {
		t.Fatalf("Leases() after RELEASE = %v, want none", got)
	}
	e.restart()
	if got := e.s.Leases(); len(got) != 0 {
		t.Fatalf("Leases() after RELEASE and restart = %v, want none", got)
	}
}

func TestDecline(t *testing.T) {
	e := newEnv(t)
	ack := e.dora(macA)
	resp := e.handle(packet(t, dhcpv4.MessageTypeDecline, macA,
		withRequested(ack.YourIPAddr), withServerID(testServerIP)))
	if resp != nil {
		t.Fatalf("DECLINE reply = %v, want none", summarize(resp))
	}
	want := []Lease{{MAC: macA, IP: "10.77.0.100", Expires: testEpoch.Add(declineHold), State: StateDeclined}}
	if diff := cmp.Diff(want, e.s.Leases()); diff != "" {
		t.Fatalf("Leases() after DECLINE (-want +got):\n%s", diff)
	}
	if got := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA)).YourIPAddr.String(); got != "10.77.0.101" {
		t.Errorf("DISCOVER after DECLINE offered %s, want 10.77.0.101", got)
	}
	e.clk.Advance(declineHold)
	if got := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macB)).YourIPAddr.String(); got != "10.77.0.100" {
		t.Errorf("DISCOVER after the hold offered %s, want 10.77.0.100", got)
	}
}

func TestInform(t *testing.T) {
	e := newEnv(t)
	resp := e.handle(packet(t, dhcpv4.MessageTypeInform, macA, dhcpv4.WithClientIP(ip("10.77.0.20"))))
	want := plainReply("ACK", "0.0.0.0")
	want.CIAddr = "10.77.0.20"
	want.LeaseTime = 0
	if diff := cmp.Diff(want, summarize(resp)); diff != "" {
		t.Errorf("INFORM reply (-want +got):\n%s", diff)
	}
	if resp.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || len(e.s.Leases()) != 0 {
		t.Errorf("INFORM made a lease: option 51 %v, leases %v", resp.Options.Has(dhcpv4.OptionIPAddressLeaseTime), e.s.Leases())
	}
}

func TestRestartKeepsLease(t *testing.T) {
	e := newEnv(t)
	e.dora(macA)
	bound := e.s.Leases()
	e.handle(packet(t, dhcpv4.MessageTypeDiscover, macB))
	e.restart()
	// The lease is back; B's offer is not (offers are not written).
	if diff := cmp.Diff(bound, e.s.Leases()); diff != "" {
		t.Fatalf("Leases() after restart (-before +after):\n%s", diff)
	}
	// No one gets A's address, and A gets it back.
	if got := e.handle(packet(t, dhcpv4.MessageTypeDiscover, "52:54:00:00:00:0c")).YourIPAddr.String(); got != "10.77.0.101" {
		t.Errorf("new client offered %s, want 10.77.0.101", got)
	}
	if got := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA)).YourIPAddr.String(); got != "10.77.0.100" {
		t.Errorf("A offered %s after restart, want 10.77.0.100", got)
	}
	// B, requesting the offer the restart forgot, is told to start over.
	nak := e.handle(packet(t, dhcpv4.MessageTypeRequest, macB, withRequested(ip("10.77.0.101")), withServerID(ip("10.77.0.1"))))
	if nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("B requesting a forgotten offer: %v, want NAK", summarize(nak))
	}
}

func TestIgnored(t *testing.T) {
	tests := []struct {
		name string
		req  func(t *testing.T) *dhcpv4.DHCPv4
	}{
		{"nil", func(*testing.T) *dhcpv4.DHCPv4 { return nil }},
		{"bootreply", func(t *testing.T) *dhcpv4.DHCPv4 {
			p := packet(t, dhcpv4.MessageTypeDiscover, macA)
			p.OpCode = dhcpv4.OpcodeBootReply
			return p
		}},
		{"token ring", func(t *testing.T) *dhcpv4.DHCPv4 {
			return packet(t, dhcpv4.MessageTypeDiscover, macA, dhcpv4.WithHWType(iana.HWTypeIEEE802))
		}},
		{"short hardware address", func(t *testing.T) *dhcpv4.DHCPv4 {
			return packet(t, dhcpv4.MessageTypeDiscover, macA, dhcpv4.WithHwAddr(net.HardwareAddr{1, 2}))
		}},
		{"no hardware address", func(t *testing.T) *dhcpv4.DHCPv4 {
			p := rawPacket(t, dhcpv4.MessageTypeDiscover, macA)
			p.ClientHWAddr = nil
			return p
		}},
		{"no message type", func(t *testing.T) *dhcpv4.DHCPv4 {
			return packet(t, dhcpv4.MessageTypeDiscover, macA, dhcpv4.WithoutOption(dhcpv4.OptionDHCPMessageType))
		}},
		{"relayed", func(t *testing.T) *dhcpv4.DHCPv4 {
			return packet(t, dhcpv4.MessageTypeDiscover, macA, dhcpv4.WithGatewayIP(ip("10.9.0.1")))
		}},
		{"offer from a client", func(t *testing.T) *dhcpv4.DHCPv4 {
			return packet(t, dhcpv4.MessageTypeOffer, macA)
		}},
		{"empty struct", func(*testing.T) *dhcpv4.DHCPv4 { return &dhcpv4.DHCPv4{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if resp := e.handle(tt.req(t)); resp != nil {
				t.Errorf("Handle = %v, want no reply", summarize(resp))
			}
			if got := e.s.Leases(); len(got) != 0 {
				t.Errorf("Leases() = %v, want none", got)
			}
		})
	}
}

func TestConcurrentClients(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	acks := make([]string, 10)
	for i := range acks {
		wg.Go(func() {
			mac := fmt.Sprintf("52:54:00:00:03:%02x", i)
			offer, err := e.s.Handle(packet(t, dhcpv4.MessageTypeDiscover, mac))
			if err != nil || offer == nil {
				t.Errorf("DISCOVER %s: %v, %v", mac, offer, err)
				return
			}
			ack, err := e.s.Handle(packet(t, dhcpv4.MessageTypeRequest, mac,
				withRequested(offer.YourIPAddr), withServerID(testServerIP)))
			if err != nil || ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
				t.Errorf("REQUEST %s: %v, %v", mac, summarize(ack), err)
				return
			}
			acks[i] = ack.YourIPAddr.String()
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, a := range acks {
		if seen[a] {
			t.Errorf("address %s acked twice: %v", a, acks)
		}
		seen[a] = true
	}
}

// TestStorm: 400 clients run DORA at once (a rack powering on): every one
// is acked a different address, and all of them are on disk.
func TestStorm(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Subnets[0].Pools = []Pool{{netip.MustParseAddr("10.77.0.10"), netip.MustParseAddr("10.77.3.250")}}
		c.Subnets[0].Prefix = netip.MustParsePrefix("10.77.0.0/22")
	})
	const n = 400
	acks := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			mac := fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff)
			offer, err := e.s.Handle(packet(t, dhcpv4.MessageTypeDiscover, mac))
			if err != nil || offer == nil {
				t.Errorf("DISCOVER %s: %v, %v", mac, offer, err)
				return
			}
			ack, err := e.s.Handle(packet(t, dhcpv4.MessageTypeRequest, mac,
				withRequested(offer.YourIPAddr), withServerID(testServerIP)))
			if err != nil || ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
				t.Errorf("REQUEST %s: %v, %v", mac, summarize(ack), err)
				return
			}
			acks[i] = ack.YourIPAddr.String()
		})
	}
	wg.Wait()
	seen := map[string]int{}
	for i, a := range acks {
		if j, dup := seen[a]; dup {
			t.Errorf("address %s acked to clients %d and %d", a, j, i)
		}
		seen[a] = i
	}
	before := e.s.Leases()
	e.restart()
	if diff := cmp.Diff(before, e.s.Leases()); diff != "" || len(before) != n {
		t.Errorf("%d leases; after restart (-before +after):\n%s", len(before), diff)
	}
}
