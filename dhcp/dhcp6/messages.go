package dhcp6

import (
	"encoding/hex"
	"net/netip"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

// This file holds one handler per client message type (RFC 8415 section
// 18.3). Each returns the decision Handle logs and reports.

// solicit answers Solicit with an Advertise, or with a Reply that binds
// when the client asked for Rapid Commit (RFC 8415 sections 18.3.1, 18.3.9).
func (s *Server) solicit(r request) decision {
	rapid := r.msg.GetOneOption(dhcpv6.OptionRapidCommit) != nil
	mt, state, life, outcome := dhcpv6.MessageTypeAdvertise, StateOffered, s.cfg.OfferTime, "offered"
	if rapid {
		mt, state, life, outcome = dhcpv6.MessageTypeReply, StateBound, s.cfg.ValidLifetime, "acked"
	}
	resp := s.newReply(r, mt)
	if rapid {
		resp.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit})
	} else {
		// Preference 255: the client need not wait for other servers
		// (section 18.2.1), which saves a firmware boot about a second.
		resp.AddOption(dhcpv6.OptPreference(255))
	}
	d := decision{reply: resp, outcome: outcome, event: outcome}
	ias := r.msg.Options.IANA()
	if len(ias) == 0 {
		resp.AddOption(status(iana.StatusNoAddrsAvail, "only IA_NA is served"))
		d.outcome, d.reason, d.event = "nak", "no IA_NA", ""
		return d
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ia := range ias {
		key := r.key(ia)
		a, ok := s.pick(key, iaAddrs(ia), r.now)
		if !ok {
			resp.AddOption(s.iaReply(ia.IaId, nil, status(iana.StatusNoAddrsAvail, "pool exhausted")))
			d.reason = "pool exhausted"
			continue
		}
		cur := s.byIA[key]
		keep := !rapid && cur != nil && cur.addr == a && cur.state == StateBound && !cur.expired(r.now)
		if !keep {
			// Keep the binding of a client that solicits again (a
			// chain-loaded boot loader); else record the offer.
			var prev *record // an expired record of another IA for a
			if o := s.byAddr[a]; o != cur {
				prev = o
			}
			put := &record{key: key, mac: r.macString(), addr: a, expires: r.now.Add(life), state: state}
			if err := s.commit(put, cur, prev); err != nil {
				return decision{err: err}
			}
		}
		resp.AddOption(s.iaReply(ia.IaId, []*dhcpv6.OptIAAddress{s.iaAddr(a)}, nil))
		d.addrs = append(d.addrs, a)
	}
	if len(d.addrs) == 0 {
		d.outcome, d.event = "nak", ""
	}
	d.bootfile, _ = s.addConfig(resp, r)
	return d
}

// request binds the addresses a client requests after an Advertise (RFC
// 8415 section 18.3.2).
func (s *Server) request(r request) decision {
	resp := s.newReply(r, dhcpv6.MessageTypeReply)
	d := decision{reply: resp, outcome: "acked", event: "acked"}
	ias := r.msg.Options.IANA()
	if len(ias) == 0 {
		resp.AddOption(status(iana.StatusNoAddrsAvail, "only IA_NA is served"))
		d.outcome, d.reason, d.event = "nak", "no IA_NA", ""
		return d
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var reasons []string
	for _, ia := range ias {
		key := r.key(ia)
		hints := iaAddrs(ia)
		if off := s.offLink(hints); len(off) > 0 {
			resp.AddOption(s.iaReply(ia.IaId, nil, status(iana.StatusNotOnLink, off[0].String()+" is not on link")))
			reasons = append(reasons, "address "+off[0].String()+" not on link")
			continue
		}
		a, ok := s.pick(key, hints, r.now)
		if !ok {
			resp.AddOption(s.iaReply(ia.IaId, nil, status(iana.StatusNoAddrsAvail, "pool exhausted")))
			reasons = append(reasons, "pool exhausted")
			continue
		}
		if err := s.bind(r, key, a); err != nil {
			return decision{err: err}
		}
		resp.AddOption(s.iaReply(ia.IaId, []*dhcpv6.OptIAAddress{s.iaAddr(a)}, nil))
		d.addrs = append(d.addrs, a)
	}
	d.reason = strings.Join(reasons, "; ")
	if len(d.addrs) == 0 {
		d.outcome, d.event = "nak", ""
	}
	d.bootfile, _ = s.addConfig(resp, r)
	return d
}

// bind records a bound lease of a for key. The caller holds s.mu.
func (s *Server) bind(r request, key iaKey, a netip.Addr) error {
	cur := s.byIA[key]
	var prev *record
	if o := s.byAddr[a]; o != cur {
		prev = o
	}
	put := &record{key: key, mac: r.macString(), addr: a, expires: r.now.Add(s.cfg.ValidLifetime), state: StateBound}
	return s.commit(put, cur, prev)
}

func (s *Server) offLink(addrs []netip.Addr) []netip.Addr {
	var off []netip.Addr
	for _, a := range addrs {
		if !s.cfg.Prefix.Contains(a) {
			off = append(off, a)
		}
	}
	return off
}

// confirm tells a client whether its addresses are still on link (RFC 8415
// section 18.3.3).
func (s *Server) confirm(r request) decision {
	var addrs []netip.Addr
	for _, ia := range r.msg.Options.IANA() {
		addrs = append(addrs, iaAddrs(ia)...)
	}
	if len(addrs) == 0 {
		return ignored("confirm without addresses")
	}
	resp := s.newReply(r, dhcpv6.MessageTypeReply)
	if off := s.offLink(addrs); len(off) > 0 {
		resp.AddOption(status(iana.StatusNotOnLink, off[0].String()+" is not on link"))
		return decision{reply: resp, outcome: "nak", reason: "address " + off[0].String() + " not on link", addrs: addrs}
	}
	resp.AddOption(status(iana.StatusSuccess, "on link"))
	return decision{reply: resp, outcome: "confirmed", addrs: addrs}
}

// extend answers Renew (RFC 8415 section 18.3.4) and Rebind (section
// 18.3.5): a bound IA gets fresh lifetimes; any other address in it gets
// lifetimes 0. A Renew for an unknown IA gets NoBinding, so the client
// sends a Request; a Rebind for an unknown IA binds a free pool address it
// names (the client may have had it from a kiln that lost its store).
func (s *Server) extend(r request, rebind bool) decision {
	resp := s.newReply(r, dhcpv6.MessageTypeReply)
	d := decision{reply: resp, outcome: "acked", event: "acked"}
	s.mu.Lock()
	defer s.mu.Unlock()
	var reasons []string
	for _, ia := range r.msg.Options.IANA() {
		key := r.key(ia)
		hints := iaAddrs(ia)
		var bound netip.Addr
		if cur := s.byIA[key]; cur != nil && cur.state == StateBound && !cur.expired(r.now) && inPool(s.cfg.Pool, cur.addr) {
			bound = cur.addr
		} else if rebind {
			for _, h := range hints {
				if inPool(s.cfg.Pool, h) && s.free(h, key, r.now) {
					bound = h
					break
				}
			}
		}
		if !bound.IsValid() && (!rebind || len(hints) == 0) {
			resp.AddOption(s.iaReply(ia.IaId, nil, status(iana.StatusNoBinding, "no binding")))
			reasons = append(reasons, "no binding for IAID "+hex.EncodeToString(ia.IaId[:]))
			continue
		}
		var out []*dhcpv6.OptIAAddress
		if bound.IsValid() {
			if err := s.bind(r, key, bound); err != nil {
				return decision{err: err}
			}
			out = append(out, s.iaAddr(bound))
			d.addrs = append(d.addrs, bound)
		}
		for _, h := range hints {
			if h != bound {
				out = append(out, zeroAddr(h))
				reasons = append(reasons, h.String()+" withdrawn")
			}
		}
		resp.AddOption(s.iaReply(ia.IaId, out, nil))
	}
	d.reason = strings.Join(reasons, "; ")
	if len(d.addrs) == 0 {
		if len(r.msg.Options.IANA()) == 0 {
			return ignored("no IA_NA")
		}
		d.outcome, d.event = "nak", ""
	}
	d.bootfile, _ = s.addConfig(resp, r)
	return d
}

// release frees the client's addresses (RFC 8415 section 18.3.7).
func (s *Server) release(r request) decision {
	resp := s.newReply(r, dhcpv6.MessageTypeReply)
	d := decision{reply: resp, outcome: "released"}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ia := range r.msg.Options.IANA() {
		key := r.key(ia)
		found := false
		for _, a := range iaAddrs(ia) {
			if rec := s.byAddr[a]; rec != nil && rec.key == key && rec.state != StateDeclined {
				if err := s.commit(nil, rec); err != nil {
					return decision{err: err}
				}
				d.addrs = append(d.addrs, a)
				found = true
			}
		}
		if !found {
			resp.AddOption(s.iaReply(ia.IaId, nil, status(iana.StatusNoBinding, "no binding")))
		}
	}
	resp.AddOption(status(iana.StatusSuccess, "released"))
	if len(d.addrs) == 0 {
		d.reason = "no binding to release"
	}
	return d
}

// decline takes addresses the client found in use out of the pool for
// declineHold (RFC 8415 section 18.3.8).
func (s *Server) decline(r request) decision {
	resp := s.newReply(r, dhcpv6.MessageTypeReply)
	d := decision{reply: resp, outcome: "declined", reason: "address in use, held for " + declineHold.String()}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ia := range r.msg.Options.IANA() {
		key := r.key(ia)
		found := false
		for _, a := range iaAddrs(ia) {
			rec := s.byAddr[a]
			if rec == nil || rec.key != key || rec.state == StateDeclined {
				continue
			}
			put := &record{key: key, mac: rec.mac, addr: a, expires: r.now.Add(declineHold), state: StateDeclined}
			if err := s.commit(put, rec); err != nil {
				return decision{err: err}
			}
			d.addrs = append(d.addrs, a)
			found = true
		}
		if !found {
			resp.AddOption(s.iaReply(ia.IaId, nil, status(iana.StatusNoBinding, "no binding")))
		}
	}
	resp.AddOption(status(iana.StatusSuccess, "declined"))
	if len(d.addrs) == 0 {
		d.reason = "no binding to decline"
	}
	return d
}

// inform answers Information-request with configuration only (RFC 8415
// section 18.3.6).
func (s *Server) inform(r request) decision {
	resp := s.newReply(r, dhcpv6.MessageTypeReply)
	d := decision{reply: resp, outcome: "informed"}
	d.bootfile, d.reason = s.addConfig(resp, r)
	if d.bootfile != "" {
		d.reason = ""
	}
	return d
}
