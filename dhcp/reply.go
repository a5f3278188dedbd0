package dhcp

import (
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// newReply starts a BOOTREPLY to req of type mt, with the fields RFC 2131
// section 4.3.1 table 3 copies from the request, our server identifier
// (option 54) and the client identifier echoed (RFC 6842).
func (s *Server) newReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	resp := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  ipOf(netip.Addr{}),
		YourIPAddr:    ipOf(netip.Addr{}),
		ServerIPAddr:  ipOf(netip.Addr{}),
		GatewayIPAddr: ipOf(netip.Addr{}),
		ClientHWAddr:  append(net.HardwareAddr(nil), req.ClientHWAddr...),
		Options:       dhcpv4.Options{},
	}
	resp.UpdateOption(dhcpv4.OptMessageType(mt))
	resp.UpdateOption(dhcpv4.OptServerIdentifier(ipOf(s.server)))
	if id := req.Options.Get(dhcpv4.OptionClientIdentifier); id != nil {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientIdentifier, id))
	}
	return resp
}

// addConfig adds the subnet mask (option 1), router (3), DNS servers (6) and,
// if withLease, the lease time (51).
func (s *Server) addConfig(resp *dhcpv4.DHCPv4, withLease bool) {
	resp.UpdateOption(dhcpv4.OptSubnetMask(net.CIDRMask(s.subnet.Bits(), 32)))
	if s.cfg.Router != nil {
		resp.UpdateOption(dhcpv4.OptRouter(s.cfg.Router.To4()))
	}
	if len(s.cfg.DNS) > 0 {
		dns := make([]net.IP, len(s.cfg.DNS))
		for i, ip := range s.cfg.DNS {
			dns[i] = ip.To4()
		}
		resp.UpdateOption(dhcpv4.OptDNS(dns...))
	}
	if withLease {
		resp.UpdateOption(dhcpv4.OptIPAddressLeaseTime(s.cfg.LeaseTime))
	}
}

// leaseReply builds an OFFER or ACK of addr (RFC 2131 section 4.3.1 table 3)
// with configuration and boot information. kind names the decision.
func (s *Server) leaseReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, addr netip.Addr, kind string) decision {
	resp := s.newReply(req, mt)
	resp.YourIPAddr = ipOf(addr)
	if mt == dhcpv4.MessageTypeAck {
		ci, _ := addr4(req.ClientIPAddr)
		resp.ClientIPAddr = ipOf(ci)
	}
	s.addConfig(resp, true)
	b := s.bootFor(req)
	b.apply(resp, s.server)
	return decision{reply: resp, msg: kind, ip: addr, reason: b.reason, bootfile: b.file, event: kind}
}

// nak builds a DHCPNAK: no addresses, no configuration, no boot information
// (RFC 2131 section 4.3.2 and table 3).
func (s *Server) nak(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	return s.newReply(req, dhcpv4.MessageTypeNak)
}

// ipOf converts an address for dhcpv4; the zero Addr becomes 0.0.0.0.
func ipOf(a netip.Addr) net.IP {
	if !a.Is4() {
		return net.IP{0, 0, 0, 0}
	}
	b := a.As4()
	return net.IP(b[:])
}

func ipString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
