package dhcp

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// remoteSubnet is a second subnet, behind a relay at 10.78.0.1, with two
// pools of five and two addresses.
func remoteSubnet(c *Config) {
	c.Subnets = append(c.Subnets, Subnet{
		Prefix: netip.MustParsePrefix("10.78.0.0/24"),
		Pools: []Pool{
			{netip.MustParseAddr("10.78.0.100"), netip.MustParseAddr("10.78.0.104")},
			{netip.MustParseAddr("10.78.0.150"), netip.MustParseAddr("10.78.0.151")},
		},
		Router:    netip.MustParseAddr("10.78.0.1"),
		DNS:       []netip.Addr{netip.MustParseAddr("10.78.0.53")},
		Domain:    "rack2.example",
		LeaseTime: 2 * time.Hour,
		OfferTime: 30 * time.Second,
	})
}

// opt82 is option 82 as a relay adds it: circuit ID, remote ID and, if
// link is set, the RFC 3527 link-selection sub-option.
func opt82(link net.IP) dhcpv4.Modifier {
	subs := []dhcpv4.Option{
		dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(dhcpv4.AgentCircuitIDSubOption), []byte("eth0/7")),
		dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(dhcpv4.AgentRemoteIDSubOption), []byte{0xde, 0xad}),
	}
	if link != nil {
		subs = append(subs, dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(dhcpv4.LinkSelectionSubOption), link.To4()))
	}
	return dhcpv4.WithOption(dhcpv4.OptRelayAgentInfo(subs...))
}

func withRelay(giaddr string) dhcpv4.Modifier { return dhcpv4.WithGatewayIP(ip(giaddr)) }

func TestRelay(t *testing.T) {
	e := newEnv(t, remoteSubnet)
	var decisions []Decision
	var mu sync.Mutex
	e.s.cfg.OnDecision = func(d Decision) { mu.Lock(); decisions = append(decisions, d); mu.Unlock() }

	mods := []dhcpv4.Modifier{withRelay("10.78.0.1"), opt82(nil)}
	offer := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA, mods...))
	want := &summary{
		Type: "OFFER", YIAddr: "10.78.0.100", CIAddr: "0.0.0.0", SIAddr: "0.0.0.0", ServerID: "10.77.0.1",
		Mask: "255.255.255.0", Router: "10.78.0.1", DNS: "10.78.0.53", LeaseTime: 2 * time.Hour,
	}
	if diff := cmp.Diff(want, summarize(offer)); diff != "" {
		t.Fatalf("relayed OFFER (-want +got):\n%s", diff)
	}
	req := packet(t, dhcpv4.MessageTypeDiscover, macA, mods...)
	if got := offer.GatewayIPAddr.String(); got != "10.78.0.1" {
		t.Errorf("OFFER giaddr %s, want 10.78.0.1", got)
	}
	if got, want := offer.Options.Get(dhcpv4.OptionRelayAgentInformation), req.Options.Get(dhcpv4.OptionRelayAgentInformation); !bytes.Equal(got, want) {
		t.Errorf("OFFER option 82 = %x, want the request's %x", got, want)
	}
	if got := offer.DomainName(); got != "rack2.example" {
		t.Errorf("OFFER domain %q, want rack2.example", got)
	}
	if got := replyAddr(req, offer, nil, false).String(); got != "10.78.0.1:67" {
		t.Errorf("relayed OFFER goes to %s, want the relay at 10.78.0.1:67", got)
	}
	ack := e.handle(packet(t, dhcpv4.MessageTypeRequest, macA, append(mods,
		withRequested(offer.YourIPAddr), withServerID(testServerIP))...))
	if ack.MessageType() != dhcpv4.MessageTypeAck || ack.YourIPAddr.String() != "10.78.0.100" {
		t.Fatalf("relayed REQUEST: %v, want ACK of 10.78.0.100", summarize(ack))
	}
	if got := []time.Duration{ack.IPAddressLeaseTime(0), ack.IPAddressRenewalTime(0), ack.IPAddressRebindingTime(0)}; !cmp.Equal(got,
		[]time.Duration{2 * time.Hour, time.Hour, 105 * time.Minute}) {
		t.Errorf("ACK lease, T1, T2 = %v, want 2h, 1h, 1h45m", got)
	}
	// The client renews unicast, straight to us: ciaddr picks the subnet
	// and the ACK goes back to ciaddr.
	renew := packet(t, dhcpv4.MessageTypeRequest, macA, dhcpv4.WithClientIP(ip("10.78.0.100")))
	ack = e.handle(renew)
	if ack.MessageType() != dhcpv4.MessageTypeAck || replyAddr(renew, ack, nil, false).String() != "10.78.0.100:68" {
		t.Errorf("unicast renewal from the remote subnet: %v to %s", summarize(ack), replyAddr(renew, ack, nil, false))
	}
	if ack.Options.Has(dhcpv4.OptionRelayAgentInformation) || !ack.GatewayIPAddr.IsUnspecified() {
		t.Errorf("reply to a direct request carries option 82 or giaddr %s", ack.GatewayIPAddr)
	}
	// A relayed request for an address on another subnet is NAKed, with
	// the broadcast bit for the relay.
	nakReq := packet(t, dhcpv4.MessageTypeRequest, macA, withRelay("10.78.0.1"), withRequested(ip("10.77.0.100")))
	nak := e.handle(nakReq)
	if nak.MessageType() != dhcpv4.MessageTypeNak || !nak.IsBroadcast() || replyAddr(nakReq, nak, nil, false).String() != "10.78.0.1:67" {
		t.Errorf("relayed NAK: %v broadcast %v to %s", summarize(nak), nak.IsBroadcast(), replyAddr(nakReq, nak, nil, false))
	}

	mu.Lock()
	defer mu.Unlock()
	for i, d := range decisions {
		if d.Subnet != "10.78.0.0/24" || d.MAC != macA {
			t.Errorf("decision %d: %+v, want subnet 10.78.0.0/24", i, d)
		}
		if d.Relayed != (i != 2) {
			t.Errorf("decision %d: Relayed = %v", i, d.Relayed)
		}
	}
}

func TestRelaySubnetSelection(t *testing.T) {
	tests := []struct {
		name   string
		mods   []dhcpv4.Modifier
		yiaddr string // "" means ignored
	}{
		{"giaddr on remote subnet", []dhcpv4.Modifier{withRelay("10.78.0.1")}, "10.78.0.100"},
		{"giaddr on local subnet", []dhcpv4.Modifier{withRelay("10.77.0.254")}, "10.77.0.100"},
		{"unknown giaddr", []dhcpv4.Modifier{withRelay("10.99.0.1")}, ""},
		{"unknown giaddr, link selection", []dhcpv4.Modifier{withRelay("10.99.0.1"), opt82(ip("10.78.0.0"))}, "10.78.0.100"},
		{"link selection wins over giaddr", []dhcpv4.Modifier{withRelay("10.78.0.1"), opt82(ip("10.77.0.0"))}, "10.77.0.100"},
		{"link selection to unknown subnet", []dhcpv4.Modifier{withRelay("10.78.0.1"), opt82(ip("10.99.0.0"))}, ""},
		{"option 82 without link selection", []dhcpv4.Modifier{withRelay("10.78.0.1"), opt82(nil)}, "10.78.0.100"},
		{"direct", nil, "10.77.0.100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, remoteSubnet)
			req := packet(t, dhcpv4.MessageTypeDiscover, macA, tt.mods...)
			resp := e.handle(req)
			got := ""
			if resp != nil {
				got = resp.YourIPAddr.String()
				checkReply(t, e.s, req, resp)
			}
			if got != tt.yiaddr {
				t.Errorf("offer %q, want %q", got, tt.yiaddr)
			}
		})
	}
}

func TestNoLocalSubnet(t *testing.T) {
	// A relay-only server: ServerIP is on none of the subnets.
	e := newEnv(t, func(c *Config) { c.Subnets = nil; remoteSubnet(c) })
	if resp := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA)); resp != nil {
		t.Errorf("direct DISCOVER answered with %v; no subnet serves direct clients", summarize(resp))
	}
	if resp := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA, withRelay("10.78.0.1"))); resp == nil {
		t.Error("relayed DISCOVER not answered")
	}
}

func TestPoolsInOrder(t *testing.T) {
	e := newEnv(t, remoteSubnet)
	var got []string
	for i := range 8 {
		resp := e.handle(packet(t, dhcpv4.MessageTypeDiscover, fmt.Sprintf("52:54:00:00:05:%02x", i), withRelay("10.78.0.1")))
		if resp == nil {
			got = append(got, "none")
			continue
		}
		got = append(got, resp.YourIPAddr.String())
	}
	want := []string{"10.78.0.100", "10.78.0.101", "10.78.0.102", "10.78.0.103", "10.78.0.104", "10.78.0.150", "10.78.0.151", "none"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("offers across two pools (-want +got):\n%s", diff)
	}
	wantUsage := []PoolUsage{
		{Subnet: "10.77.0.0/24", Pool: "10.77.0.100-10.77.0.109", Size: 10},
		{Subnet: "10.78.0.0/24", Pool: "10.78.0.100-10.78.0.104", Size: 5, InUse: 5},
		{Subnet: "10.78.0.0/24", Pool: "10.78.0.150-10.78.0.151", Size: 2, InUse: 2},
	}
	if diff := cmp.Diff(wantUsage, e.s.Usage()); diff != "" {
		t.Errorf("Usage() (-want +got):\n%s", diff)
	}
	e.clk.Advance(30 * time.Second) // the remote subnet's OfferTime
	if got := e.s.Usage()[1].InUse; got != 0 {
		t.Errorf("InUse after the offers expired = %d, want 0", got)
	}
}

func reservations(c *Config) {
	c.Reservations = []Reservation{
		{MAC: hw(macA), IP: netip.MustParseAddr("10.77.0.105"), Hostname: "node-a"}, // inside the pool
		{MAC: hw(macB), IP: netip.MustParseAddr("10.77.0.50"), Hostname: "node-b"},  // outside the pool
		{MAC: hw("52:54:00:00:00:0c"), IP: netip.MustParseAddr("10.78.0.20")},       // on the remote subnet
	}
	remoteSubnet(c)
}

func TestReservations(t *testing.T) {
	e := newEnv(t, reservations)
	a := e.dora(macA)
	if a.YourIPAddr.String() != "10.77.0.105" || a.HostName() != "node-a" {
		t.Errorf("A: %s host %q, want its reservation 10.77.0.105 node-a", a.YourIPAddr, a.HostName())
	}
	b := e.dora(macB)
	if b.YourIPAddr.String() != "10.77.0.50" || b.HostName() != "node-b" {
		t.Errorf("B: %s host %q, want its reservation 10.77.0.50 node-b", b.YourIPAddr, b.HostName())
	}
	// C's reservation is on the remote subnet: locally it gets a pool
	// address, through the relay its reservation.
	if got := e.handle(packet(t, dhcpv4.MessageTypeDiscover, "52:54:00:00:00:0c")).YourIPAddr.String(); got != "10.77.0.100" {
		t.Errorf("C locally offered %s, want 10.77.0.100", got)
	}
	if got := e.handle(packet(t, dhcpv4.MessageTypeDiscover, "52:54:00:00:00:0c", withRelay("10.78.0.1"))).YourIPAddr.String(); got != "10.78.0.20" {
		t.Errorf("C via the relay offered %s, want its reservation 10.78.0.20", got)
	}
	// Nobody else ever gets a reserved address, asked for or not.
	e.clk.Advance(DefaultLeaseTime) // A's and B's leases expire
	d := "52:54:00:00:00:0d"
	if got := e.handle(packet(t, dhcpv4.MessageTypeDiscover, d, withRequested(ip("10.77.0.105")))).YourIPAddr.String(); got == "10.77.0.105" {
		t.Errorf("D was offered A's reserved address")
	}
	if resp := e.handle(packet(t, dhcpv4.MessageTypeRequest, d, withRequested(ip("10.77.0.50")), withServerID(testServerIP))); resp.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("D selecting B's reserved address: %v, want NAK", summarize(resp))
	}
	for i := range 12 {
		resp := e.handle(packet(t, dhcpv4.MessageTypeDiscover, fmt.Sprintf("52:54:00:00:06:%02x", i)))
		if resp != nil && (resp.YourIPAddr.String() == "10.77.0.105" || resp.YourIPAddr.String() == "10.77.0.50") {
			t.Errorf("client %d offered reserved %s", i, resp.YourIPAddr)
		}
	}
	// B, having lost its lease, reboots asking for its reservation: the
	// reservation is our record of it.
	if resp := e.handle(packet(t, dhcpv4.MessageTypeRequest, macB, withRequested(ip("10.77.0.50")))); resp == nil || resp.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("B init-reboot to its reservation: %v, want ACK", summarize(resp))
	}
	l, ok := e.s.LeaseFor(ip("10.77.0.50"))
	if want := (Lease{MAC: macB, IP: "10.77.0.50", Expires: e.clk.Now().Add(DefaultLeaseTime), State: StateBound, Hostname: "node-b"}); !ok || l != want {
		t.Errorf("LeaseFor(10.77.0.50) = %+v, %v; want %+v", l, ok, want)
	}
	l, ok = e.s.LeaseFor(ip("10.77.0.105")) // A's lease expired
	if want := (Lease{MAC: macA, IP: "10.77.0.105", State: StateReserved, Hostname: "node-a"}); !ok || l != want {
		t.Errorf("LeaseFor(10.77.0.105) = %+v, %v; want %+v", l, ok, want)
	}
	if l, ok := e.s.LeaseFor(ip("10.77.0.200")); ok {
		t.Errorf("LeaseFor(unused address) = %+v, want none", l)
	}
}

func TestLeaseForExpiry(t *testing.T) {
	e := newEnv(t)
	e.dora(macA)
	if l, ok := e.s.LeaseFor(ip("10.77.0.100")); !ok || l.MAC != macA || l.State != StateBound {
		t.Fatalf("LeaseFor = %+v, %v; want A's bound lease", l, ok)
	}
	e.clk.Advance(DefaultLeaseTime)
	if l, ok := e.s.LeaseFor(ip("10.77.0.100")); ok {
		t.Errorf("LeaseFor after expiry = %+v, want none", l)
	}
}

func TestReplyAddr(t *testing.T) {
	peer := &net.UDPAddr{IP: ip("10.77.0.60"), Port: 4011}
	tests := []struct {
		name     string
		mods     []dhcpv4.Modifier
		resp     dhcpv4.MessageType
		bootPort bool
		want     string
	}{
		{"offer, no address", nil, dhcpv4.MessageTypeOffer, false, "255.255.255.255:68"},
		{"offer, broadcast flag", []dhcpv4.Modifier{dhcpv4.WithBroadcast(true)}, dhcpv4.MessageTypeOffer, false, "255.255.255.255:68"},
		{"ack to renewing client", []dhcpv4.Modifier{dhcpv4.WithClientIP(ip("10.77.0.100"))}, dhcpv4.MessageTypeAck, false, "10.77.0.100:68"},
		{"ack to renewing client, broadcast flag", []dhcpv4.Modifier{dhcpv4.WithClientIP(ip("10.77.0.100")), dhcpv4.WithBroadcast(true)}, dhcpv4.MessageTypeAck, false, "10.77.0.100:68"},
		{"nak to renewing client", []dhcpv4.Modifier{dhcpv4.WithClientIP(ip("10.77.0.100"))}, dhcpv4.MessageTypeNak, false, "255.255.255.255:68"},
		{"relayed offer", []dhcpv4.Modifier{withRelay("10.78.0.1")}, dhcpv4.MessageTypeOffer, false, "10.78.0.1:67"},
		{"relayed nak", []dhcpv4.Modifier{withRelay("10.78.0.1"), dhcpv4.WithClientIP(ip("10.78.0.9"))}, dhcpv4.MessageTypeNak, false, "10.78.0.1:67"},
		{"relayed ack, ciaddr", []dhcpv4.Modifier{withRelay("10.78.0.1"), dhcpv4.WithClientIP(ip("10.78.0.9"))}, dhcpv4.MessageTypeAck, false, "10.78.0.1:67"},
		{"boot server ack to ciaddr", []dhcpv4.Modifier{dhcpv4.WithClientIP(ip("10.77.0.61"))}, dhcpv4.MessageTypeAck, true, "10.77.0.61:4011"},
		{"boot server ack without ciaddr", nil, dhcpv4.MessageTypeAck, true, "10.77.0.60:4011"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := packet(t, dhcpv4.MessageTypeRequest, macA, tt.mods...)
			resp := packet(t, tt.resp, macA)
			if got := replyAddr(req, resp, peer, tt.bootPort).String(); got != tt.want {
				t.Errorf("replyAddr = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestOnDecision(t *testing.T) {
	var got []Decision
	e := newEnv(t, remoteSubnet, func(c *Config) {
		c.OnDecision = func(d Decision) { got = append(got, d) }
	})
	e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA, pxeUEFI...))
	e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA, withRelay("10.99.0.1")))
	bad := packet(t, dhcpv4.MessageTypeDiscover, macA)
	bad.OpCode = dhcpv4.OpcodeBootReply
	e.handle(bad)
	e.handle(nil)
	e.s.handlePacket(newMemConn(), []byte("garbage"), &net.UDPAddr{}, false, time.Now())
	for i := range got {
		if got[i].Duration <= 0 {
			t.Errorf("decision %d: Duration %v, want > 0", i, got[i].Duration)
		}
		got[i].Duration = 0
	}
	want := []Decision{
		{MsgType: "DISCOVER", Outcome: "offered", MAC: macA, XID: "0xc0ffee0a", Arch: "EFI x86-64", Subnet: "10.77.0.0/24"},
		{MsgType: "DISCOVER", Outcome: "ignored", Reason: "no subnet for giaddr 10.99.0.1", MAC: macA, XID: "0xc0ffee0a", Relayed: true},
		{MsgType: "DISCOVER", Outcome: "malformed", Reason: "not a BOOTREQUEST", MAC: macA, XID: "0xc0ffee0a"},
		{Outcome: "malformed", Reason: "no packet"},
		{Outcome: "malformed", Reason: "unparseable: buffer too short at position 4: have 3 bytes, want 4 bytes"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decisions (-want +got):\n%s", diff)
	}
}

// TestPoolHints: the lowest free address is found again after a release,
// an expiry and a decline's shorter hold, though the scan skips taken
// addresses.
func TestPoolHints(t *testing.T) {
	e := newEnv(t)
	acks := map[string]string{}
	for i := range 10 {
		mac := fmt.Sprintf("52:54:00:00:07:%02x", i)
		acks[e.dora(mac).YourIPAddr.String()] = mac
	}
	next := func() string {
		t.Helper()
		resp := e.handle(packet(t, dhcpv4.MessageTypeDiscover, "52:54:00:00:08:00"))
		if resp == nil {
			return "none"
		}
		return resp.YourIPAddr.String()
	}
	var got []string
	got = append(got, next())
	e.handle(packet(t, dhcpv4.MessageTypeRelease, acks["10.77.0.103"], dhcpv4.WithClientIP(ip("10.77.0.103"))))
	got = append(got, next()) // takes .103
	e.clk.Advance(30 * time.Minute)
	// The client at .100 declines: held for 10 minutes, not its 1 h lease.
	e.handle(packet(t, dhcpv4.MessageTypeDecline, acks["10.77.0.100"], withRequested(ip("10.77.0.100"))))
	got = append(got, next()) // the new client keeps its offer of .103
	e.handle(packet(t, dhcpv4.MessageTypeRelease, "52:54:00:00:08:00", dhcpv4.WithClientIP(ip("10.77.0.103"))))
	e.clk.Advance(DefaultOfferTime)
	got = append(got, next(), next())
	e.clk.Advance(declineHold)
	e.handle(packet(t, dhcpv4.MessageTypeRelease, "52:54:00:00:08:00", dhcpv4.WithClientIP(ip("10.77.0.103"))))
	got = append(got, e.handle(packet(t, dhcpv4.MessageTypeDiscover, "52:54:00:00:08:01")).YourIPAddr.String())
	e.clk.Advance(DefaultLeaseTime)
	got = append(got, e.handle(packet(t, dhcpv4.MessageTypeDiscover, "52:54:00:00:08:02")).YourIPAddr.String())
	want := []string{"none", "10.77.0.103", "10.77.0.103", "10.77.0.103", "10.77.0.103", "10.77.0.100", "10.77.0.100"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("offers (-want +got):\n%s", diff)
	}
}
