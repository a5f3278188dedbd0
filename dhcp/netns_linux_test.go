//go:build linux

package dhcp

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// newNetns creates a network namespace named kiln-dhcp-<pid> holding a veth
// pair, srv (10.77.0.1/24) and cli, and deletes it when the test ends.
// Nothing is created outside the namespace.
func newNetns(t *testing.T) (ns, srv, cli string) {
	t.Helper()
	n := testenv.NewNetns(t, fmt.Sprintf("kiln-dhcp-%d", os.Getpid()))
	srv, cli = "kiln-srv", "kiln-cli"
	n.IP(t, "link", "add", srv, "type", "veth", "peer", "name", cli)
	n.IP(t, "addr", "add", "10.77.0.1/24", "dev", srv)
	n.IP(t, "link", "set", srv, "up")
	n.IP(t, "link", "set", cli, "up")
	return n.Name, srv, cli
}

// inNetns runs fn on a thread switched into namespace ns. Sockets fn opens
// stay in ns after the thread switches back.
func inNetns(t *testing.T, ns string, fn func()) {
	t.Helper()
	if err := testenv.InNetns(ns, func() error { fn(); return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestServeInNetns(t *testing.T) {
	ns, srv, cli := newNetns(t)
	e := newEnv(t, func(c *Config) { c.Interface = srv })
	var (
		conn   net.PacketConn
		client *nclient4.Client
	)
	inNetns(t, ns, func() {
		var err error
		if conn, err = ListenInterface(srv); err != nil {
			t.Fatalf("ListenInterface(%q): %v", srv, err)
		}
		if second, err := ListenInterface(srv); err == nil {
			second.Close()
			t.Errorf("second ListenInterface(%q) succeeded, want address in use", srv)
		}
		if _, err := ListenInterface("kiln-none"); err == nil {
			t.Error("ListenInterface of a missing interface succeeded")
		}
		client, err = nclient4.New(cli, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		if err != nil {
			conn.Close()
			t.Fatalf("nclient4.New(%q): %v", cli, err)
		}
	})
	t.Cleanup(func() { client.Close() })

	serveConns(t, e.s, conn)

	reqCtx, reqCancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer reqCancel()
	lease, err := client.Request(reqCtx, pxeBIOS...)
	if err != nil {
		t.Fatalf("DORA over %s: %v", cli, err)
	}
	got := summarize(lease.ACK)
	want := plainReply("ACK", "10.77.0.100")
	want.SIAddr, want.File, want.TFTPServer, want.BootFile = "10.77.0.1", "undionly.kpxe", "10.77.0.1", "undionly.kpxe"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ACK over the wire (-want +got):\n%s", diff)
	}
	wantLeases := []Lease{{MAC: client.InterfaceAddr().String(), IP: "10.77.0.100",
		Expires: testEpoch.Add(DefaultLeaseTime), State: StateBound}}
	if diff := cmp.Diff(wantLeases, e.s.Leases()); diff != "" {
		t.Errorf("Leases() (-want +got):\n%s", diff)
	}
	if lease.Offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Errorf("offer type %s", lease.Offer.MessageType())
	}
}

// nsCount makes namespace names unique within the test binary.
var nsCount atomic.Int32

// twoNetns is a server namespace and a client namespace joined by a veth
// pair: srv (10.77.0.1/24, with a route to 10.78.0.0/24 via 10.77.0.2) and
// cli (10.77.0.2/24, 10.77.0.60/24, 10.78.0.1/24 and 10.78.0.100/24): the
// client side plays PXE clients with addresses, a relay agent at 10.78.0.1
// and a client behind it. Both are deleted when the test ends.
type twoNetns struct{ srvNS, cliNS string }

func newTwoNetns(t *testing.T) twoNetns {
	t.Helper()
	name := fmt.Sprintf("kiln-dhcp-%d-%d", os.Getpid(), nsCount.Add(1))
	srv, cli := testenv.NewNetns(t, name+"-s"), testenv.NewNetns(t, name+"-c")
	srv.IP(t, "link", "add", "srv", "type", "veth", "peer", "name", "cli", "netns", cli.Name)
	srv.IP(t, "addr", "add", "10.77.0.1/24", "dev", "srv")
	srv.IP(t, "link", "set", "srv", "up")
	for _, a := range []string{"10.77.0.2/24", "10.77.0.60/24", "10.78.0.1/24", "10.78.0.100/24"} {
		cli.IP(t, "addr", "add", a, "dev", "cli")
	}
	cli.IP(t, "link", "set", "cli", "up")
	srv.IP(t, "route", "add", "10.78.0.0/24", "via", "10.77.0.2")
	return twoNetns{srv.Name, cli.Name}
}

// serveConns runs s.Serve on each conn until the test ends.
func serveConns(t *testing.T, s *Server, conns ...net.PacketConn) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, len(conns))
	for _, c := range conns {
		go func() { done <- s.Serve(ctx, c) }()
	}
	t.Cleanup(func() {
		cancel()
		for range conns {
			if err := <-done; err != nil {
				t.Errorf("Serve() = %v", err)
			}
		}
	})
}

// udpIn opens a UDP socket at addr inside namespace ns.
func udpIn(t *testing.T, ns, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	inNetns(t, ns, func() {
		a, err := net.ResolveUDPAddr("udp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		if c, err = net.ListenUDP("udp4", a); err != nil {
			t.Fatalf("listening on %s in %s: %v", addr, ns, err)
		}
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// exchangeUDP sends req from c to dst and returns the first reply and where
// it came from.
func exchangeUDP(t *testing.T, c *net.UDPConn, dst string, req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, string) {
	t.Helper()
	to, err := net.ResolveUDPAddr("udp4", dst)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, maxPacket)
	for try := range 3 {
		if _, err := c.WriteToUDP(req.ToBytes(), to); err != nil {
			t.Fatalf("sending %s to %s: %v", req.MessageType(), dst, err)
		}
		c.SetReadDeadline(time.Now().Add(time.Duration(try+1) * time.Second))
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			continue
		}
		resp, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			t.Fatalf("reply from %s does not parse: %v", from, err)
		}
		return resp, from.String()
	}
	t.Fatalf("no reply to %s sent to %s from %s", req.MessageType(), dst, c.LocalAddr())
	return nil, ""
}

// TestRelayOverSockets runs a relayed DORA, a unicast renewal from behind
// the relay and a relayed NAK over real sockets: replies must reach the
// relay at giaddr:67 with option 82 echoed, and the renewing client at
// ciaddr:68.
func TestRelayOverSockets(t *testing.T) {
	ns := newTwoNetns(t)
	e := newEnv(t, remoteSubnet, func(c *Config) { c.Interface = "srv" })
	var conn net.PacketConn
	inNetns(t, ns.srvNS, func() {
		var err error
		if conn, err = ListenInterface("srv"); err != nil {
			t.Fatal(err)
		}
	})
	serveConns(t, e.s, conn)

	relay := udpIn(t, ns.cliNS, "10.78.0.1:67")
	mods := []dhcpv4.Modifier{withRelay("10.78.0.1"), opt82(nil)}
	disc := packet(t, dhcpv4.MessageTypeDiscover, macA, mods...)
	offer, from := exchangeUDP(t, relay, "10.77.0.1:67", disc)
	if offer.MessageType() != dhcpv4.MessageTypeOffer || offer.YourIPAddr.String() != "10.78.0.100" || from != "10.77.0.1:67" {
		t.Fatalf("relayed DISCOVER: %v from %s, want OFFER of 10.78.0.100 from 10.77.0.1:67", summarize(offer), from)
	}
	checkReply(t, e.s, disc, offer)
	req := packet(t, dhcpv4.MessageTypeRequest, macA, append(mods, withRequested(offer.YourIPAddr), withServerID(testServerIP))...)
	ack, _ := exchangeUDP(t, relay, "10.77.0.1:67", req)
	if ack.MessageType() != dhcpv4.MessageTypeAck || ack.YourIPAddr.String() != "10.78.0.100" {
		t.Fatalf("relayed REQUEST: %v, want ACK", summarize(ack))
	}
	checkReply(t, e.s, req, ack)

	client := udpIn(t, ns.cliNS, "10.78.0.100:68")
	renew := packet(t, dhcpv4.MessageTypeRequest, macA, dhcpv4.WithClientIP(ip("10.78.0.100")))
	ack, _ = exchangeUDP(t, client, "10.77.0.1:67", renew)
	if ack.MessageType() != dhcpv4.MessageTypeAck || ack.ClientIPAddr.String() != "10.78.0.100" {
		t.Errorf("unicast renewal: %v, want ACK to ciaddr", summarize(ack))
	}

	nakReq := packet(t, dhcpv4.MessageTypeRequest, macB, withRelay("10.78.0.1"), withRequested(ip("10.77.0.100")))
	nak, _ := exchangeUDP(t, relay, "10.77.0.1:67", nakReq)
	if nak.MessageType() != dhcpv4.MessageTypeNak || !nak.IsBroadcast() || nak.GatewayIPAddr.String() != "10.78.0.1" {
		t.Errorf("relayed NAK: %v broadcast %v giaddr %s", summarize(nak), nak.IsBroadcast(), nak.GatewayIPAddr)
	}
	want := []Lease{{MAC: macA, IP: "10.78.0.100", Expires: testEpoch.Add(2 * time.Hour), State: StateBound}}
	if diff := cmp.Diff(want, e.s.Leases()); diff != "" {
		t.Errorf("Leases() (-want +got):\n%s", diff)
	}
}

// TestProxyOverSockets runs a proxyDHCP server on ports 67 and 4011: a UEFI
// PXE client's broadcast DISCOVER gets a proxy offer, and its boot server
// request from ciaddr:4011 (as EDK2 sends it) an ACK back there.
func TestProxyOverSockets(t *testing.T) {
	ns := newTwoNetns(t)
	cfg := testConfig(t, nil, &clock{t: testEpoch})
	cfg.Interface, cfg.Proxy, cfg.Subnets, cfg.Leases = "srv", true, nil, nil
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var dhcpConn, bootConn, primary net.PacketConn
	var client *nclient4.Client
	inNetns(t, ns.srvNS, func() {
		// The DHCP server on the same host holds port 67 first, shared
		// (as dnsmasq does); a plain ListenInterface must fail, the shared
		// one must work and still see the broadcasts.
		if primary, err = ListenInterfaceShared("srv", 67); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { primary.Close() })
		if c, err := ListenInterface("srv"); err == nil {
			c.Close()
			t.Error("ListenInterface succeeded next to a server on port 67")
		}
		if dhcpConn, err = ListenInterfaceShared("srv", 67); err != nil {
			t.Fatal(err)
		}
		if bootConn, err = ListenInterfacePort("srv", PXEPort); err != nil {
			t.Fatal(err)
		}
	})
	serveConns(t, s, dhcpConn, bootConn)
	inNetns(t, ns.cliNS, func() {
		if client, err = nclient4.New("cli", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3)); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { client.Close() })

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	offer, err := client.DiscoverOffer(ctx, pxeUEFI...)
	if err != nil {
		t.Fatalf("DISCOVER: %v", err)
	}
	mac := client.InterfaceAddr()
	wantOffer := &proxySummary{Type: "OFFER", YIAddr: "0.0.0.0", CIAddr: "0.0.0.0", SIAddr: "10.77.0.1", File: "snponly.efi",
		ServerID: "10.77.0.1", BootFile: "snponly.efi", Class: "PXEClient", NoConfig: true}
	if diff := cmp.Diff(wantOffer, summarizeProxy(offer)); diff != "" {
		t.Errorf("proxy offer (-want +got):\n%s", diff)
	}

	boot := udpIn(t, ns.cliNS, "10.77.0.60:4011")
	req := packet(t, dhcpv4.MessageTypeRequest, mac.String(), append(pxeUEFI,
		dhcpv4.WithClientIP(ip("10.77.0.60")), withServerID(testServerIP))...)
	ack, from := exchangeUDP(t, boot, "10.77.0.1:4011", req)
	wantAck := *wantOffer
	wantAck.Type, wantAck.CIAddr = "ACK", "10.77.0.60"
	if diff := cmp.Diff(&wantAck, summarizeProxy(ack)); diff != "" || from != "10.77.0.1:4011" {
		t.Errorf("boot server ack from %s (-want +got):\n%s", from, diff)
	}
}
