package dhcp6

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

// decision is the outcome of one request: the reply, if any, and what the
// log line and Decision say about it.
type decision struct {
	reply    *dhcpv6.Message
	outcome  string
	reason   string
	addrs    []netip.Addr
	bootfile string
	event    string // Event.Kind for Config.Observer, or ""
	err      error
}

func ignored(why string) decision { return decision{outcome: "ignored", reason: why} }

// request is what every handler needs to know about the message.
type request struct {
	msg       *dhcpv6.Message
	duid      []byte // client identifier option data, nil if absent
	mac       net.HardwareAddr
	macSource string
	now       time.Time
}

// Handle decides the reply to one message received from src (the client's
// source address, link-local for clients on the link): a reply, or nil when
// the message is ignored. Every decision is logged once at Info (malformed
// messages at Debug) and reported to Config.OnDecision. Leases are persisted
// before Handle returns a reply that depends on them; an error means the
// store failed and nothing was changed. Handle never panics, whatever req
// holds, and is safe for concurrent use.
func (s *Server) Handle(req dhcpv6.DHCPv6, src netip.Addr) (*dhcpv6.Message, error) {
	start := time.Now()
	dec := Decision{}
	msg, ok := req.(*dhcpv6.Message)
	if req != nil {
		dec.MsgType = strings.ToUpper(req.Type().String())
	}
	if !ok || msg == nil {
		dec.Outcome, dec.Reason = "ignored", "relayed or empty message"
		if req == nil {
			dec.Outcome, dec.Reason = "malformed", "no message"
		}
		s.log.Debug(dec.Outcome+": "+dec.Reason, "msgtype", dec.MsgType, "src", src.String())
		s.report(dec, start)
		return nil, nil
	}
	r := request{msg: msg, now: s.now()}
	if o := msg.Options.GetOne(dhcpv6.OptionClientID); o != nil {
		r.duid = o.ToBytes()
	}
	r.mac, r.macSource = macOf(msg, src)
	dec.XID = "0x" + hex.EncodeToString(msg.TransactionID[:])
	dec.DUID = hex.EncodeToString(r.duid)
	dec.Arch = archOf(msg)
	dec.MACSource = r.macSource
	if r.mac != nil {
		dec.MAC = r.mac.String()
	}
	log := s.log.With("mac", dec.MAC, "mac_source", dec.MACSource, "xid", dec.XID, "arch", dec.Arch,
		"msgtype", dec.MsgType, "duid", dec.DUID, "src", src.String())
	log.Debug("received", "options", msg.Options.Options.LongString(1))
	d := s.decide(r)
	if d.err != nil {
		dec.Outcome, dec.Reason = "error", d.err.Error()
		s.report(dec, start)
		return nil, fmt.Errorf("handling %s from %s (xid %s): %w", dec.MsgType, dec.DUID, dec.XID, d.err)
	}
	dec.Outcome, dec.Reason, dec.BootFile = d.outcome, d.reason, d.bootfile
	ips := make([]string, len(d.addrs))
	for i, a := range d.addrs {
		ips[i] = a.String()
	}
	dec.IP = strings.Join(ips, ",")
	attrs := []any{"ip", dec.IP}
	if d.reason != "" {
		attrs = append(attrs, "reason", d.reason)
	}
	if d.bootfile != "" {
		attrs = append(attrs, "bootfile", d.bootfile)
	}
	if d.reply != nil {
		log.Debug("replying", "type", d.reply.MessageType.String(), "options", d.reply.Options.Options.LongString(1))
	}
	if d.outcome == "malformed" {
		log.Debug(d.outcome, attrs...)
	} else {
		log.Info(d.outcome, attrs...)
	}
	if d.event != "" && r.mac != nil && len(d.addrs) > 0 && s.cfg.Observer != nil {
		s.cfg.Observer(Event{Kind: d.event, MAC: r.mac, IP: d.addrs[0], Arch: dec.Arch,
			BootFile: d.bootfile, XID: dec.XID})
	}
	s.report(dec, start)
	return d.reply, nil
}

func (s *Server) report(d Decision, start time.Time) {
	if s.cfg.OnDecision != nil {
		d.Duration = time.Since(start)
		s.cfg.OnDecision(d)
	}
}

// serverIDRule is what RFC 8415 section 16 asks of a message's Server
// Identifier option.
type serverIDRule int

const (
	sidMustNot serverIDRule = iota // Solicit, Confirm, Rebind
	sidMust                        // Request, Renew, Release, Decline
	sidMay                         // Information-request
)

func (s *Server) decide(r request) decision {
	var rule serverIDRule
	needClient := true
	switch r.msg.MessageType {
	case dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeConfirm, dhcpv6.MessageTypeRebind:
		rule = sidMustNot
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
		rule = sidMust
	case dhcpv6.MessageTypeInformationRequest:
		rule, needClient = sidMay, false
	default:
		return ignored("not a client message type")
	}
	sid := r.msg.Options.GetOne(dhcpv6.OptionServerID)
	switch {
	case needClient && len(r.duid) == 0:
		return decision{outcome: "malformed", reason: "no client identifier"}
	case rule == sidMustNot && sid != nil:
		return decision{outcome: "malformed", reason: "server identifier not allowed"}
	case rule == sidMust && sid == nil:
		return decision{outcome: "malformed", reason: "no server identifier"}
	case sid != nil && string(sid.ToBytes()) != string(s.duid.ToBytes()):
		return ignored("message for another server")
	}
	switch r.msg.MessageType {
	case dhcpv6.MessageTypeSolicit:
		return s.solicit(r)
	case dhcpv6.MessageTypeRequest:
		return s.request(r)
	case dhcpv6.MessageTypeConfirm:
		return s.confirm(r)
	case dhcpv6.MessageTypeRenew:
		return s.extend(r, false)
	case dhcpv6.MessageTypeRebind:
		return s.extend(r, true)
	case dhcpv6.MessageTypeRelease:
		return s.release(r)
	case dhcpv6.MessageTypeDecline:
		return s.decline(r)
	}
	return s.inform(r)
}

// newReply starts a reply of type mt to r: transaction ID, client and
// server identifiers (RFC 8415 section 18.3).
func (s *Server) newReply(r request, mt dhcpv6.MessageType) *dhcpv6.Message {
	resp := &dhcpv6.Message{MessageType: mt, TransactionID: r.msg.TransactionID}
	if o := r.msg.Options.GetOne(dhcpv6.OptionClientID); o != nil {
		resp.AddOption(o)
	}
	resp.AddOption(dhcpv6.OptServerID(s.duid))
	return resp
}

// addConfig adds the configuration every Advertise and Reply that carries
// configuration gets: DNS and the boot file URL. It returns the URL.
func (s *Server) addConfig(resp *dhcpv6.Message, r request) (string, string) {
	if len(s.cfg.DNS) > 0 {
		ips := make([]net.IP, len(s.cfg.DNS))
		for i, a := range s.cfg.DNS {
			ips[i] = net.IP(a.AsSlice())
		}
		resp.AddOption(dhcpv6.OptDNS(ips...))
	}
	b := s.bootFor(r.msg, r.mac)
	b.apply(resp)
	return b.url, b.reason
}

// iaReply is one IA_NA of a reply.
func (s *Server) iaReply(iaid [4]byte, addrs []*dhcpv6.OptIAAddress, status *dhcpv6.OptStatusCode) *dhcpv6.OptIANA {
	ia := &dhcpv6.OptIANA{IaId: iaid}
	for _, a := range addrs {
		ia.Options.Add(a)
		if a.ValidLifetime > 0 {
			// RFC 8415 section 21.4: T1 and T2 at 0.5 and 0.8 of the
			// shortest preferred lifetime; every address has the same.
			ia.T1 = s.cfg.PreferredLifetime / 2
			ia.T2 = s.cfg.PreferredLifetime * 4 / 5
		}
	}
	if status != nil {
		ia.Options.Add(status)
	}
	return ia
}

func (s *Server) iaAddr(a netip.Addr) *dhcpv6.OptIAAddress {
	return &dhcpv6.OptIAAddress{IPv6Addr: net.IP(a.AsSlice()),
		PreferredLifetime: s.cfg.PreferredLifetime, ValidLifetime: s.cfg.ValidLifetime}
}

func zeroAddr(a netip.Addr) *dhcpv6.OptIAAddress {
	return &dhcpv6.OptIAAddress{IPv6Addr: net.IP(a.AsSlice())}
}

func status(code iana.StatusCode, msg string) *dhcpv6.OptStatusCode {
	return &dhcpv6.OptStatusCode{StatusCode: code, StatusMessage: msg}
}

// iaAddrs returns the valid unicast addresses a client put in ia.
func iaAddrs(ia *dhcpv6.OptIANA) []netip.Addr {
	var out []netip.Addr
	for _, o := range ia.Options.Addresses() {
		if a, ok := netip.AddrFromSlice(o.IPv6Addr); ok && a.Is6() && !a.Is4In6() {
			out = append(out, a)
		}
	}
	return out
}

func (r request) key(ia *dhcpv6.OptIANA) iaKey {
	return iaKey{duid: string(r.duid), iaid: ia.IaId}
}

func (r request) macString() string {
	if r.mac == nil {
		return ""
	}
	return r.mac.String()
}
