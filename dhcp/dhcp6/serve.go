package dhcp6

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// maxPacket is the read buffer: the largest UDP payload.
const maxPacket = 1<<16 - 1

// ClientPort is the UDP port clients listen on (RFC 8415 section 7.2).
const ClientPort = dhcpv6.DefaultClientPort

// Serve reads messages from conn, handles up to a fixed number at once and
// sends the replies to the port and address each message came from (RFC
// 8415 section 18.3.10). While all handlers are busy it does not read:
// packets wait in the socket's receive buffer. Serve returns nil when ctx ends, or the read
// error that stopped it; either way it closes conn and waits for the
// handlers to finish.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, s.maxInFlight)
	buf := make([]byte, maxPacket)
	s.log.Info("serving dhcp6", "addr", conn.LocalAddr().String(), "pool", s.cfg.Pool.String(),
		"server_duid", s.duid.String())
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
		// With every handler busy, stop reading: the socket's receive
		// buffer queues a burst, where dropping costs a retransmission.
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		pkt := append([]byte(nil), buf[:n]...)
		wg.Go(func() {
			defer func() { <-sem }()
			s.handlePacket(conn, pkt, peer)
		})
	}
}

// handlePacket parses, handles and answers one packet.
func (s *Server) handlePacket(conn net.PacketConn, pkt []byte, peer net.Addr) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("BUG: panic handling packet", "peer", peer, "panic", r)
		}
	}()
	var src netip.Addr
	if u, ok := peer.(*net.UDPAddr); ok {
		src = u.AddrPort().Addr()
	}
	req, err := dhcpv6.FromBytes(pkt)
	if err != nil {
		s.log.Debug("malformed: unparseable packet", "peer", peer, "err", err)
		s.report(Decision{Outcome: "malformed", Reason: err.Error()}, s.now())
		return
	}
	resp, err := s.Handle(req, src.WithZone(""))
	if err != nil {
		s.log.Error("no reply", "err", err)
		return
	}
	if resp == nil {
		return
	}
	if _, err := conn.WriteTo(resp.ToBytes(), peer); err != nil {
		s.log.Warn("sending reply", "peer", peer.String(), "xid", resp.TransactionID.String(), "err", err)
	}
}
