package dhcp

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// memConn is an in-memory net.PacketConn: the test writes requests to in
// and reads replies from out. Nothing touches a real network.
type memConn struct {
	in     chan []byte
	out    chan sent
	closed chan struct{}
	once   sync.Once
}

type sent struct {
	pkt *dhcpv4.DHCPv4
	dst string
}

func newMemConn() *memConn {
	return &memConn{in: make(chan []byte), out: make(chan sent, 16), closed: make(chan struct{})}
}

func (c *memConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-c.in:
		return copy(b, p), &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ClientPort}, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *memConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	p, err := dhcpv4.FromBytes(b)
	if err != nil {
		return 0, err
	}
	c.out <- sent{p, addr.String()}
	return len(b), nil
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *memConn) LocalAddr() net.Addr              { return &net.UDPAddr{Port: dhcpv4.ServerPort} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// serve runs s.Serve on a memConn until the test ends.
func serve(t *testing.T, s *Server) *memConn {
	conn := newMemConn()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve() = %v, want nil after cancel", err)
		}
	})
	return conn
}

func (c *memConn) exchange(t *testing.T, req *dhcpv4.DHCPv4) sent {
	t.Helper()
	c.in <- req.ToBytes()
	select {
	case r := <-c.out:
		return r
	case <-time.After(5 * time.Second):
		t.Fatalf("no reply to %s", req.MessageType())
		return sent{}
	}
}

func TestServeReplyDestinations(t *testing.T) {
	e := newEnv(t)
	conn := serve(t, e.s)
	type dest struct{ Type, Dst string }
	var got []dest
	record := func(r sent) { got = append(got, dest{r.pkt.MessageType().String(), r.dst}) }

	first := conn.exchange(t, packet(t, dhcpv4.MessageTypeDiscover, macA))
	record(first)
	offer := first.pkt
	record(conn.exchange(t, packet(t, dhcpv4.MessageTypeRequest, macA,
		withRequested(offer.YourIPAddr), withServerID(testServerIP))))
	record(conn.exchange(t, packet(t, dhcpv4.MessageTypeRequest, macA,
		dhcpv4.WithClientIP(offer.YourIPAddr))))
	record(conn.exchange(t, packet(t, dhcpv4.MessageTypeRequest, macA,
		dhcpv4.WithClientIP(ip("10.77.0.107")))))
	record(conn.exchange(t, packet(t, dhcpv4.MessageTypeInform, macB,
		dhcpv4.WithClientIP(ip("10.77.0.20")))))
	want := []dest{
		{"OFFER", "255.255.255.255:68"},
		{"ACK", "255.255.255.255:68"},
		{"ACK", "10.77.0.100:68"},
		{"NAK", "255.255.255.255:68"},
		{"ACK", "10.77.0.20:68"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reply destinations (-want +got):\n%s", diff)
	}
}

// TestServeQueuesWhenBusy checks that a packet arriving while every handler
// is busy waits (in the socket) instead of being dropped.
func TestServeQueuesWhenBusy(t *testing.T) {
	block := make(chan struct{})
	e := newEnv(t)
	e.s = e.newServer(func(c *Config) { c.Observer = func(Event) { <-block } })
	e.s.maxInFlight = 1
	conn := serve(t, e.s)
	conn.in <- packet(t, dhcpv4.MessageTypeDiscover, macA).ToBytes() // blocks in Observer
	conn.in <- packet(t, dhcpv4.MessageTypeDiscover, macB).ToBytes() // read once A is done
	select {
	case r := <-conn.out:
		t.Fatalf("reply to %s while the only handler is blocked", r.pkt.ClientHWAddr)
	case <-time.After(100 * time.Millisecond):
	}
	close(block)
	for _, want := range []string{macA, macB} {
		select {
		case r := <-conn.out:
			if got := r.pkt.ClientHWAddr.String(); got != want {
				t.Fatalf("reply to %s, want %s", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no reply to %s: the queued packet was dropped", want)
		}
	}
	if got := len(e.s.Leases()); got != 2 {
		t.Errorf("%d leases, want 2", got)
	}
}

func TestServeClosesConnOnCancel(t *testing.T) {
	e := newEnv(t)
	conn := newMemConn()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.s.Serve(ctx, conn) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve() = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	select {
	case <-conn.closed:
	default:
		t.Error("conn not closed")
	}
}
