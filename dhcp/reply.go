package dhcp

import (
	"net"
	"net/netip"
	"time"

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

// finishReply adds what every reply to a relayed request carries (RFC 2131
// section 4.1, RFC 3046 section 2.2): giaddr, option 82 echoed byte for
// byte, and for a DHCPNAK the broadcast bit, so the relay broadcasts it.
func (s *Server) finishReply(req, resp *dhcpv4.DHCPv4) {
	gi, relayed := addr4(req.GatewayIPAddr)
	if !relayed {
		return
	}
	resp.GatewayIPAddr = ipOf(gi)
	if rai := req.Options.Get(dhcpv4.OptionRelayAgentInformation); rai != nil {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionRelayAgentInformation, rai))
	}
	if resp.MessageType() == dhcpv4.MessageTypeNak {
		resp.SetBroadcast()
	}
}

// addConfig adds sn's configuration: the subnet mask (option 1), router (3),
// DNS servers (6), domain (15) and, if withLease, the lease time (51) with
// T1 (58) at 1/2 and T2 (59) at 7/8 of it (RFC 2131 section 4.4.5).
func (s *Server) addConfig(resp *dhcpv4.DHCPv4, sn *subnet, withLease bool) {
	resp.UpdateOption(dhcpv4.OptSubnetMask(net.CIDRMask(sn.Prefix.Bits(), 32)))
	if sn.Router.IsValid() {
		resp.UpdateOption(dhcpv4.OptRouter(ipOf(sn.Router)))
	}
	if len(sn.DNS) > 0 {
		dns := make([]net.IP, len(sn.DNS))
		for i, a := range sn.DNS {
			dns[i] = ipOf(a)
		}
		resp.UpdateOption(dhcpv4.OptDNS(dns...))
	}
	if sn.Domain != "" {
		resp.UpdateOption(dhcpv4.OptDomainName(sn.Domain))
	}
	if withLease {
		lt := sn.LeaseTime.Truncate(time.Second)
		resp.UpdateOption(dhcpv4.OptIPAddressLeaseTime(lt))
		resp.UpdateOption(dhcpv4.OptRenewTimeValue((lt / 2).Truncate(time.Second)))
		resp.UpdateOption(dhcpv4.OptRebindingTimeValue((lt / 8 * 7).Truncate(time.Second)))
	}
}

// leaseReply builds an OFFER or ACK of addr on sn (RFC 2131 section 4.3.1
// table 3) with configuration, the reservation's host name (option 12) and
// boot information. kind names the decision.
func (s *Server) leaseReply(req *dhcpv4.DHCPv4, sn *subnet, mt dhcpv4.MessageType, addr netip.Addr, kind string) result {
	resp := s.newReply(req, mt)
	resp.YourIPAddr = ipOf(addr)
	if mt == dhcpv4.MessageTypeAck {
		ci, _ := addr4(req.ClientIPAddr)
		resp.ClientIPAddr = ipOf(ci)
	}
	s.addConfig(resp, sn, true)
	if r, ok := s.resByIP[addr]; ok && r.Hostname != "" && r.MAC.String() == req.ClientHWAddr.String() {
		resp.UpdateOption(dhcpv4.OptHostName(r.Hostname))
	}
	b := s.bootFor(req)
	b.apply(resp, s.server)
	return result{reply: resp, outcome: kind, ip: addr, reason: b.reason, bootfile: b.file, event: kind}
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
