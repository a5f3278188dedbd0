package dhcp

import (
	"context"
	"errors"
	"net"
	"sync"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// maxPacket is the read buffer: the largest UDP payload.
const maxPacket = 1<<16 - 1

// Serve reads requests from conn, handles up to a fixed number at once and
// sends the replies. A packet that arrives while all handlers are busy is
// dropped with a log line. Serve returns nil when ctx ends, or the read
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
	s.log.Info("serving dhcp", "addr", conn.LocalAddr().String())
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
		select {
		case sem <- struct{}{}:
		default:
			s.log.Warn("dropped packet: all handlers busy", "peer", peer, "max", s.maxInFlight)
			continue
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
	req, err := dhcpv4.FromBytes(pkt)
	if err != nil {
		s.log.Debug("ignored: malformed packet", "peer", peer, "err", err)
		return
	}
	resp, err := s.Handle(req)
	if err != nil {
		s.log.Error("no reply", "err", err)
		return
	}
	if resp == nil {
		return
	}
	dst := replyAddr(req, resp)
	if _, err := conn.WriteTo(resp.ToBytes(), dst); err != nil {
		s.log.Warn("sending reply", "mac", req.ClientHWAddr.String(), "xid", req.TransactionID.String(),
			"dst", dst.String(), "err", err)
	}
}

// replyAddr says where a reply goes (RFC 2131 section 4.1): to ciaddr if the
// client has an address and the reply is not a NAK, else broadcast. This is
// what PXE ROMs need; the socket is bound to its interface, so the broadcast
// leaves there. Relayed requests (giaddr) never reach this point.
func replyAddr(req, resp *dhcpv4.DHCPv4) *net.UDPAddr {
	if ci, ok := addr4(req.ClientIPAddr); ok && resp.MessageType() != dhcpv4.MessageTypeNak {
		return &net.UDPAddr{IP: ipOf(ci), Port: dhcpv4.ClientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}
