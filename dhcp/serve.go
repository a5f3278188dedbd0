package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// maxPacket is the read buffer: the largest UDP payload.
const maxPacket = 1<<16 - 1

// Serve reads requests from conn, handles up to a fixed number at once and
// sends the replies. While all handlers are busy it does not read: packets
// wait in the socket's receive buffer, and only the kernel drops them when
// that is full. A conn bound to PXEPort is served as a PXE boot
// server (proxyDHCP, see Config.Proxy); any other as port 67. Serve returns
// nil when ctx ends, or the read error that stopped it; either way it closes
// conn and waits for the handlers to finish.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	ua, ok := conn.LocalAddr().(*net.UDPAddr)
	return s.serve(ctx, conn, ok && ua.Port == PXEPort)
}

// serve is Serve; bootPort says conn is the PXE boot server socket.
func (s *Server) serve(ctx context.Context, conn net.PacketConn, bootPort bool) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, s.maxInFlight)
	buf := make([]byte, maxPacket)
	s.log.Info("serving dhcp", "addr", conn.LocalAddr().String(), "proxy", s.cfg.Proxy, "boot_server", bootPort)
	for {
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		arrived := time.Now()
		// With every handler busy (most wait for the disk), stop reading:
		// the socket's receive buffer (rcvBuf) queues a storm, where
		// dropping would cost each client a retransmission seconds later.
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		pkt := append([]byte(nil), buf[:n]...)
		wg.Go(func() {
			defer func() { <-sem }()
			s.handlePacket(conn, pkt, peer, bootPort, arrived)
		})
	}
}

// handlePacket parses, handles and answers one packet, and reports the
// decision to Config.OnDecision.
func (s *Server) handlePacket(conn net.PacketConn, pkt []byte, peer net.Addr, bootPort bool, arrived time.Time) {
	reported := false
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("BUG: panic handling packet", "peer", peer, "panic", r)
			if !reported {
				s.decided(Decision{Outcome: "error", Reason: fmt.Sprint("panic: ", r), Proxy: s.cfg.Proxy || bootPort,
					Duration: time.Since(arrived)})
			}
		}
	}()
	req, err := dhcpv4.FromBytes(pkt)
	if err != nil {
		s.log.Debug("malformed", "peer", peer, "reason", "unparseable", "err", err)
		reported = true
		s.decided(Decision{Outcome: "malformed", Reason: "unparseable: " + err.Error(), Proxy: s.cfg.Proxy || bootPort,
			Duration: time.Since(arrived)})
		return
	}
	resp, d, err := s.handle(req, bootPort)
	d.Duration = time.Since(arrived)
	reported = true
	s.decided(d)
	if err != nil || resp == nil {
		return // handle logged it
	}
	dst := replyAddr(req, resp, peer, bootPort)
	if _, err := conn.WriteTo(resp.ToBytes(), dst); err != nil {
		s.log.Warn("sending reply", "mac", d.MAC, "xid", d.XID, "dst", dst.String(), "err", err)
	}
}

// replyAddr says where a reply goes (RFC 2131 section 4.1):
//
//   - a boot server ack (PXEPort) goes back to the client's ciaddr, or
//     the packet's source, at the port it came from;
//   - a reply to a relayed request goes to the relay, giaddr:67;
//   - a DHCPNAK is broadcast;
//   - a client with an address (ciaddr) gets it unicast to ciaddr:68;
//   - everything else is broadcast, whether or not the broadcast flag is
//     set (see the BUG note on unicast to yiaddr). The socket is bound to
//     its interface, so the broadcast leaves there.
func replyAddr(req, resp *dhcpv4.DHCPv4, peer net.Addr, bootPort bool) *net.UDPAddr {
	if bootPort {
		p, _ := peer.(*net.UDPAddr)
		if p == nil {
			p = &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ClientPort}
		}
		if ci, ok := addr4(req.ClientIPAddr); ok {
			return &net.UDPAddr{IP: ipOf(ci), Port: p.Port}
		}
		return p
	}
	if gi, ok := addr4(req.GatewayIPAddr); ok {
		return &net.UDPAddr{IP: ipOf(gi), Port: dhcpv4.ServerPort}
	}
	if resp.MessageType() == dhcpv4.MessageTypeNak {
		return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
	}
	if ci, ok := addr4(req.ClientIPAddr); ok {
		return &net.UDPAddr{IP: ipOf(ci), Port: dhcpv4.ClientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}
