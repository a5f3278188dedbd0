package dhcp

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// decision is the outcome of one request: the reply, if any, and the one log
// line that explains it.
type decision struct {
	reply    *dhcpv4.DHCPv4
	msg      string // "offered", "acked", "nak", "released", …, or "ignored: …"
	ip       netip.Addr
	reason   string
	bootfile string
	event    string // Event.Kind for Config.Observer, or ""
	err      error
}

func ignored(why string) decision { return decision{msg: "ignored: " + why} }

// Handle decides the reply to one request: a reply, or nil when the request
// is ignored. Every decision is logged once at Info, every malformed request
// at Debug. Leases are persisted before Handle returns a reply that depends
// on them; an error means the store failed and nothing was changed. Handle
// never panics, whatever req holds, and is safe for concurrent use.
func (s *Server) Handle(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	if req == nil {
		s.log.Debug("ignored: no packet")
		return nil, nil
	}
	arch := archOf(req)
	// The message type goes under "msgtype": "msg" is slog's message key.
	log := s.log.With("mac", req.ClientHWAddr.String(), "xid", req.TransactionID.String(),
		"arch", arch, "msgtype", req.MessageType().String())
	if why := malformed(req); why != "" {
		log.Debug("ignored: " + why)
		return nil, nil
	}
	now := s.now()
	var d decision
	if _, relayed := addr4(req.GatewayIPAddr); relayed {
		d = ignored("relayed request")
		d.reason = "giaddr " + req.GatewayIPAddr.String()
	} else {
		d = s.decide(req, now)
	}
	if d.err != nil {
		return nil, fmt.Errorf("handling %s from %s (xid %s): %w",
			req.MessageType(), req.ClientHWAddr, req.TransactionID, d.err)
	}
	attrs := []any{"ip", ipString(d.ip)}
	if d.reason != "" {
		attrs = append(attrs, "reason", d.reason)
	}
	if d.bootfile != "" {
		attrs = append(attrs, "bootfile", d.bootfile)
	}
	log.Info(d.msg, attrs...)
	if d.event != "" && s.cfg.Observer != nil {
		s.cfg.Observer(Event{
			Kind: d.event, MAC: append([]byte(nil), req.ClientHWAddr...), IP: ipOf(d.ip),
			Arch: arch, BootFile: d.bootfile, XID: req.TransactionID.String(),
		})
	}
	return d.reply, nil
}

// malformed says why req cannot be a client request we answer, or "".
func malformed(req *dhcpv4.DHCPv4) string {
	switch {
	case req.OpCode != dhcpv4.OpcodeBootRequest:
		return "not a BOOTREQUEST"
	case req.HWType != iana.HWTypeEthernet:
		return "hardware type is not Ethernet"
	case len(req.ClientHWAddr) != 6:
		return "hardware address is not 6 bytes"
	case req.MessageType() == dhcpv4.MessageTypeNone:
		return "no message type"
	}
	return ""
}

func (s *Server) decide(req *dhcpv4.DHCPv4, now time.Time) decision {
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		return s.discover(req, now)
	case dhcpv4.MessageTypeRequest:
		return s.request(req, now)
	case dhcpv4.MessageTypeRelease:
		return s.release(req)
	case dhcpv4.MessageTypeDecline:
		return s.decline(req, now)
	case dhcpv4.MessageTypeInform:
		return s.inform(req)
	}
	return ignored("not a client message type")
}

// discover answers DHCPDISCOVER with an offer (RFC 2131 section 4.3.1).
func (s *Server) discover(req *dhcpv4.DHCPv4, now time.Time) decision {
	mac := req.ClientHWAddr.String()
	requested, _ := addr4(req.RequestedIPAddress())
	addr, ok, err := s.reserve(mac, requested, now)
	switch {
	case err != nil:
		return decision{err: err}
	case !ok:
		return ignored("pool exhausted")
	}
	return s.leaseReply(req, dhcpv4.MessageTypeOffer, addr, "offered")
}

// reserve picks the address to offer mac and records the offer.
func (s *Server) reserve(mac string, requested netip.Addr, now time.Time) (netip.Addr, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	addr, ok := s.pick(mac, requested, now)
	if !ok {
		return addr, false, nil
	}
	cur := s.byMAC[mac]
	if cur != nil && cur.addr == addr && cur.state == StateBound && !cur.expired(now) {
		// Keep the binding: a chain-loaded boot loader discovers again.
		return addr, true, nil
	}
	var prev *record // an expired record of another client for addr
	if r := s.byAddr[addr]; r != cur {
		prev = r
	}
	put := &record{mac: mac, addr: addr, expires: now.Add(s.cfg.OfferTime), state: StateOffered}
	return addr, true, s.commit(put, cur, prev)
}

// request answers DHCPREQUEST in every client state of RFC 2131 section
// 4.3.2: SELECTING (option 54 set), INIT-REBOOT (option 50, no ciaddr) and
// RENEWING or REBINDING (ciaddr).
func (s *Server) request(req *dhcpv4.DHCPv4, now time.Time) decision {
	mac := req.ClientHWAddr.String()
	sid, selecting := addr4(req.ServerIdentifier())
	if selecting && sid != s.server {
		return s.withdraw(mac, sid)
	}
	want, ok := addr4(req.RequestedIPAddress())
	if !ok {
		if want, ok = addr4(req.ClientIPAddr); !ok {
			return ignored("request names no address")
		}
	}
	v, why, err := s.settle(mac, want, selecting, now)
	switch {
	case err != nil:
		return decision{err: err}
	case v == verdictAck:
		return s.leaseReply(req, dhcpv4.MessageTypeAck, want, "acked")
	case v == verdictNak:
		return decision{reply: s.nak(req), msg: "nak", ip: want, reason: why}
	}
	d := ignored(why)
	d.ip = want
	return d
}

type verdict int

const (
	verdictSilent verdict = iota
	verdictAck
	verdictNak
)

// settle decides a request for want and binds the lease on an ack.
func (s *Server) settle(mac string, want netip.Addr, selecting bool, now time.Time) (verdict, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.byMAC[mac]
	owner := s.byAddr[want]
	taken := owner != nil && owner != cur && !owner.expired(now)
	switch {
	case cur != nil && cur.addr == want && s.inRange(want):
		put := &record{mac: mac, addr: want, expires: now.Add(s.cfg.LeaseTime), state: StateBound}
		return verdictAck, "", s.commit(put, cur)
	case !s.subnet.Contains(want):
		return verdictNak, "address on wrong subnet", nil
	case !selecting && cur == nil && !taken:
		// "If the DHCP server has no record of this client, then it MUST
		// remain silent" (INIT-REBOOT); RENEWING and REBINDING alike.
		return verdictSilent, "no record of client", nil
	case cur != nil && cur.addr == want:
		return verdictNak, "address outside pool", nil
	case cur != nil:
		return verdictNak, "client's lease is " + cur.addr.String(), nil
	case taken:
		// Silence would let the client keep a duplicate address.
		return verdictNak, "address belongs to another client", nil
	}
	return verdictNak, "no offer for client", nil
}

// withdraw releases our offer to a client that chose server sid (RFC 2131
// section 4.3.2, SELECTING). A bound lease is kept.
func (s *Server) withdraw(mac string, sid netip.Addr) decision {
	d := ignored("client chose another server")
	d.reason = "server " + sid.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.byMAC[mac]
	if cur == nil || cur.state != StateOffered {
		return d
	}
	if err := s.commit(nil, cur); err != nil {
		return decision{err: err}
	}
	d.ip = cur.addr
	d.reason += ", offer released"
	return d
}

// release frees the client's lease (RFC 2131 section 4.3.4). No reply.
func (s *Server) release(req *dhcpv4.DHCPv4) decision {
	if sid, ok := addr4(req.ServerIdentifier()); ok && sid != s.server {
		return ignored("release for another server")
	}
	addr, _ := addr4(req.ClientIPAddr)
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.byMAC[req.ClientHWAddr.String()]
	if cur == nil || cur.addr != addr {
		d := ignored("no lease to release")
		d.ip = addr
		return d
	}
	if err := s.commit(nil, cur); err != nil {
		return decision{err: err}
	}
	return decision{msg: "released", ip: addr}
}

// decline takes an address the client found in use out of the pool for
// declineHold (RFC 2131 section 4.3.3). No reply.
func (s *Server) decline(req *dhcpv4.DHCPv4, now time.Time) decision {
	if sid, ok := addr4(req.ServerIdentifier()); ok && sid != s.server {
		return ignored("decline for another server")
	}
	addr, _ := addr4(req.RequestedIPAddress())
	mac := req.ClientHWAddr.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.byMAC[mac]
	if cur == nil || cur.addr != addr {
		d := ignored("no lease to decline")
		d.ip = addr
		return d
	}
	put := &record{mac: mac, addr: addr, expires: now.Add(declineHold), state: StateDeclined}
	if err := s.commit(put, cur); err != nil {
		return decision{err: err}
	}
	return decision{msg: "declined", ip: addr, reason: "address in use, held for " + declineHold.String()}
}

// inform acknowledges DHCPINFORM with configuration only: no yiaddr, no
// lease time, and no lease check (RFC 2131 section 4.3.5).
func (s *Server) inform(req *dhcpv4.DHCPv4) decision {
	resp := s.newReply(req, dhcpv4.MessageTypeAck)
	ci, _ := addr4(req.ClientIPAddr)
	resp.ClientIPAddr = ipOf(ci)
	s.addConfig(resp, false)
	b := s.bootFor(req)
	b.apply(resp, s.server)
	return decision{reply: resp, msg: "informed", ip: ci, bootfile: b.file}
}
