package dhcp

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// result is the outcome of one request: the reply, if any, the store write
// to wait for before sending it, and what the log line and Decision say.
type result struct {
	reply    *dhcpv4.DHCPv4
	outcome  string // Decision.Outcome
	reason   string
	ip       netip.Addr
	bootfile string
	event    string       // Event.Kind for Config.Observer, or ""
	wait     func() error // the lease write the reply depends on, or nil
}

func ignored(why string) result { return result{outcome: "ignored", reason: why} }

// Handle decides the reply to one request received on port 67: a reply, or
// nil when the request is ignored. Every decision is logged once (malformed
// requests at Debug) and reported to Config.OnDecision. Leases are durable
// before Handle returns a reply that depends on them; an error means the
// store failed, the tables were reloaded from it, and nothing is to be
// sent. Handle never panics, whatever req holds, and is safe for concurrent
// use.
func (s *Server) Handle(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	start := time.Now()
	resp, d, err := s.handle(req, false)
	d.Duration = time.Since(start)
	s.decided(d)
	return resp, err
}

// decided reports d to Config.OnDecision.
func (s *Server) decided(d Decision) {
	if s.cfg.OnDecision != nil {
		s.cfg.OnDecision(d)
	}
}

// handle decides one request; bootPort says it came to PXEPort.
func (s *Server) handle(req *dhcpv4.DHCPv4, bootPort bool) (*dhcpv4.DHCPv4, Decision, error) {
	d := Decision{Outcome: "malformed", Proxy: s.cfg.Proxy || bootPort}
	if req == nil {
		d.Reason = "no packet"
		s.log.Debug("malformed", "reason", d.Reason)
		return nil, d, nil
	}
	d.MAC, d.XID, d.Arch = req.ClientHWAddr.String(), req.TransactionID.String(), archOf(req)
	if mt := req.MessageType(); mt != dhcpv4.MessageTypeNone {
		d.MsgType = mt.String()
	}
	_, d.Relayed = addr4(req.GatewayIPAddr)
	// The message type goes under "msgtype": "msg" is slog's message key.
	log := s.log.With("mac", d.MAC, "xid", d.XID, "arch", d.Arch, "msgtype", d.MsgType)
	if why := malformed(req); why != "" {
		d.Reason = why
		log.Debug("malformed", "reason", why)
		return nil, d, nil
	}
	now := s.now()
	var r result
	switch {
	case bootPort:
		r = s.bootServer(req)
	case s.cfg.Proxy:
		r = s.proxy(req)
	default:
		sn, why := s.selectSubnet(req)
		if sn == nil {
			r = ignored(why)
			break
		}
		d.Subnet = sn.name
		r = s.decide(req, sn, now)
	}
	if r.wait != nil {
		if err := r.wait(); err != nil {
			s.recoverTables()
			d.Outcome, d.Reason = "error", err.Error()
			log.Error("no reply", "subnet", d.Subnet, "ip", ipString(r.ip), "err", err)
			return nil, d, fmt.Errorf("handling %s from %s (xid %s): %w", d.MsgType, d.MAC, d.XID, err)
		}
	}
	d.Outcome, d.Reason = r.outcome, r.reason
	attrs := []any{"subnet", d.Subnet, "ip", ipString(r.ip)}
	if r.reason != "" {
		attrs = append(attrs, "reason", r.reason)
	}
	if r.bootfile != "" {
		attrs = append(attrs, "bootfile", r.bootfile)
	}
	if d.Relayed {
		attrs = append(attrs, "giaddr", req.GatewayIPAddr.String())
	}
	if d.Proxy {
		attrs = append(attrs, "proxy", true)
	}
	log.Info(r.outcome, attrs...)
	if r.event != "" && s.cfg.Observer != nil {
		s.cfg.Observer(Event{
			Kind: r.event, MAC: append([]byte(nil), req.ClientHWAddr...), IP: ipOf(r.ip),
			Arch: d.Arch, BootFile: r.bootfile, XID: d.XID,
		})
	}
	if r.reply != nil {
		s.finishReply(req, r.reply)
	}
	return r.reply, d, nil
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

// selectSubnet picks the subnet of a request: for a relayed request the one
// named by the RFC 3527 link-selection sub-option of option 82, else the one
// containing giaddr; for a client with an address the one containing ciaddr;
// else the subnet of ServerIP. It returns nil and the reason when none fits.
func (s *Server) selectSubnet(req *dhcpv4.DHCPv4) (*subnet, string) {
	if gi, ok := addr4(req.GatewayIPAddr); ok {
		if rai := req.RelayAgentInfo(); rai != nil {
			if ls := rai.Get(dhcpv4.LinkSelectionSubOption); ls != nil {
				if len(ls) != 4 {
					return nil, "malformed link-selection sub-option"
				}
				a := netip.AddrFrom4([4]byte(ls))
				if sn := s.subnetOf(a); sn != nil {
					return sn, ""
				}
				return nil, "no subnet for link selection " + a.String()
			}
		}
		if sn := s.subnetOf(gi); sn != nil {
			return sn, ""
		}
		return nil, "no subnet for giaddr " + gi.String()
	}
	if ci, ok := addr4(req.ClientIPAddr); ok {
		if sn := s.subnetOf(ci); sn != nil {
			return sn, ""
		}
	}
	if s.local == nil {
		return nil, "no subnet contains ServerIP " + s.server.String() + " for direct clients"
	}
	return s.local, ""
}

func (s *Server) decide(req *dhcpv4.DHCPv4, sn *subnet, now time.Time) result {
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		return s.discover(req, sn, now)
	case dhcpv4.MessageTypeRequest:
		return s.request(req, sn, now)
	case dhcpv4.MessageTypeRelease:
		return s.release(req)
	case dhcpv4.MessageTypeDecline:
		return s.decline(req, now)
	case dhcpv4.MessageTypeInform:
		return s.inform(req, sn)
	}
	return ignored("not a client message type")
}

// discover answers DHCPDISCOVER with an offer (RFC 2131 section 4.3.1).
func (s *Server) discover(req *dhcpv4.DHCPv4, sn *subnet, now time.Time) result {
	mac := req.ClientHWAddr.String()
	requested, _ := addr4(req.RequestedIPAddress())
	s.mu.Lock()
	addr, ok := s.pick(sn, mac, requested, now)
	if !ok {
		s.mu.Unlock()
		return ignored("pool exhausted")
	}
	cur := s.byMAC[mac]
	// A bound client that discovers again (a chain-loaded boot loader)
	// keeps its binding.
	if cur == nil || cur.addr != addr || cur.state != StateBound || cur.expired(now) {
		var prev *record // an expired record of another client for addr
		if r := s.byAddr[addr]; r != cur {
			prev = r
		}
		// In memory only: see apply.
		s.apply(&record{mac: mac, addr: addr, expires: now.Add(sn.OfferTime), state: StateOffered}, cur, prev)
	}
	s.mu.Unlock()
	return s.leaseReply(req, sn, dhcpv4.MessageTypeOffer, addr, "offered")
}

// request answers DHCPREQUEST in every client state of RFC 2131 section
// 4.3.2: SELECTING (option 54 set), INIT-REBOOT (option 50, no ciaddr) and
// RENEWING or REBINDING (ciaddr).
func (s *Server) request(req *dhcpv4.DHCPv4, sn *subnet, now time.Time) result {
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
	s.mu.Lock()
	v, why, wait := s.settle(sn, mac, want, selecting, now)
	s.mu.Unlock()
	switch v {
	case verdictAck:
		r := s.leaseReply(req, sn, dhcpv4.MessageTypeAck, want, "acked")
		r.wait = wait
		return r
	case verdictNak:
		return result{reply: s.newReply(req, dhcpv4.MessageTypeNak), outcome: "nak", ip: want, reason: why}
	}
	r := ignored(why)
	r.ip = want
	return r
}

type verdict int

const (
	verdictSilent verdict = iota
	verdictAck
	verdictNak
)

// settle decides a request for want on sn and binds the lease on an ack.
// The caller holds s.mu.
func (s *Server) settle(sn *subnet, mac string, want netip.Addr, selecting bool, now time.Time) (verdict, string, func() error) {
	cur := s.byMAC[mac]
	owner := s.byAddr[want]
	taken := owner != nil && owner != cur && !owner.expired(now)
	res, reserved := s.resByMAC[mac]
	bind := func(drop ...*record) (verdict, string, func() error) {
		put := &record{mac: mac, addr: want, expires: now.Add(sn.LeaseTime), state: StateBound}
		return verdictAck, "", s.change(put, drop...)
	}
	switch {
	case cur != nil && cur.addr == want && s.assignable(sn, want, mac):
		return bind(cur)
	case !sn.Prefix.Contains(want):
		return verdictNak, "address not on subnet " + sn.name, nil
	case reserved && res.IP == want && s.free(want, mac, now):
		// The reservation is our record of the client, in every state.
		var prev *record
		if owner != cur {
			prev = owner
		}
		return bind(cur, prev)
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
func (s *Server) withdraw(mac string, sid netip.Addr) result {
	r := ignored("client chose server " + sid.String())
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.byMAC[mac]
	if cur == nil || cur.state != StateOffered {
		return r
	}
	r.wait = s.change(nil, cur)
	r.ip = cur.addr
	r.reason += ", offer released"
	return r
}

// release frees the client's lease (RFC 2131 section 4.3.4). No reply.
func (s *Server) release(req *dhcpv4.DHCPv4) result {
	if sid, ok := addr4(req.ServerIdentifier()); ok && sid != s.server {
		return ignored("release for another server")
	}
	addr, _ := addr4(req.ClientIPAddr)
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.byMAC[req.ClientHWAddr.String()]
	if cur == nil || cur.addr != addr {
		r := ignored("no lease to release")
		r.ip = addr
		return r
	}
	return result{outcome: "released", ip: addr, wait: s.change(nil, cur)}
}

// decline takes an address the client found in use out of the pool for
// declineHold (RFC 2131 section 4.3.3). No reply.
func (s *Server) decline(req *dhcpv4.DHCPv4, now time.Time) result {
	if sid, ok := addr4(req.ServerIdentifier()); ok && sid != s.server {
		return ignored("decline for another server")
	}
	addr, _ := addr4(req.RequestedIPAddress())
	mac := req.ClientHWAddr.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.byMAC[mac]
	if cur == nil || cur.addr != addr {
		r := ignored("no lease to decline")
		r.ip = addr
		return r
	}
	put := &record{mac: mac, addr: addr, expires: now.Add(declineHold), state: StateDeclined}
	return result{outcome: "declined", ip: addr, reason: "address in use, held for " + declineHold.String(),
		wait: s.change(put, cur)}
}

// inform acknowledges DHCPINFORM with configuration only: no yiaddr, no
// lease time, and no lease check (RFC 2131 section 4.3.5).
func (s *Server) inform(req *dhcpv4.DHCPv4, sn *subnet) result {
	resp := s.newReply(req, dhcpv4.MessageTypeAck)
	ci, _ := addr4(req.ClientIPAddr)
	resp.ClientIPAddr = ipOf(ci)
	s.addConfig(resp, sn, false)
	b := s.bootFor(req)
	b.apply(resp, s.server)
	return result{reply: resp, outcome: "informed", ip: ci, bootfile: b.file, reason: b.reason}
}
