package dhcp

import (
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// proxyDHCP (PXE 2.1 section 2.2.5): another server hands out addresses; we
// answer the boot part only.
//
//   - Port 67: a PXE, HTTP Boot or iPXE client's DHCPDISCOVER gets a proxy
//     offer: yiaddr 0.0.0.0, option 54, option 60 "PXEClient" (or
//     "HTTPClient"), the client's UUID (option 97) echoed, siaddr and the
//     boot file. Every other message on 67 belongs to the DHCP server.
//   - Port 4011: the boot server request (a DHCPREQUEST, or whatever EDK2's
//     seed packet is, with ciaddr set) gets a DHCPACK with the same boot
//     information, unicast back to where it came from.
//
// What each firmware needs to take the proxy offer:
//
//   - BIOS PXE ROMs and iPXE: option 43 with PXE discovery control
//     (sub-option 6) = 8, "use the boot file in this reply", so they neither
//     look for boot servers nor show a menu. iPXE then still sends its
//     ProxyDHCPREQUEST to option 54 on port 4011.
//   - UEFI PXE (EDK2 PxeBcDhcp4.c): an offer with "PXEClient" and no
//     option 43 is a "ProxyBinl" offer; EDK2 pairs it with the DHCP server's
//     address-only offer and asks siaddr:4011 for the boot file
//     (PxeBcRetryBinlOffer), listening on port 4011 itself. An option 43 with
//     discovery sub-options would make it a "ProxyPxe10" offer and send the
//     firmware into boot server discovery, so UEFI gets none.
//   - UEFI HTTP Boot: "HTTPClient" and a URL.
//
// Option 175/176 (no-pxedhcp) is never sent: we are the proxy iPXE waits
// for. No address is offered and no lease is written.

// proxy answers a request to port 67 in proxyDHCP mode.
func (s *Server) proxy(req *dhcpv4.DHCPv4) result {
	if req.MessageType() != dhcpv4.MessageTypeDiscover {
		return ignored("proxy: only DISCOVER is answered on port 67")
	}
	b := s.bootFor(req)
	if b.file == "" {
		return ignored(b.reason)
	}
	return result{reply: s.proxyReply(req, dhcpv4.MessageTypeOffer, b), outcome: "offered", bootfile: b.file}
}

// bootServer answers a request to PXEPort, in either mode.
func (s *Server) bootServer(req *dhcpv4.DHCPv4) result {
	switch req.MessageType() {
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeInform:
	default:
		return ignored("boot server: not a request")
	}
	b := s.bootFor(req)
	if b.file == "" {
		return ignored(b.reason)
	}
	resp := s.proxyReply(req, dhcpv4.MessageTypeAck, b)
	ci, _ := addr4(req.ClientIPAddr)
	resp.ClientIPAddr = ipOf(ci)
	return result{reply: resp, outcome: "acked", ip: ci, bootfile: b.file}
}

// proxyReply builds a proxy offer or boot server ack: boot information only,
// no address and no configuration.
func (s *Server) proxyReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, b bootInfo) *dhcpv4.DHCPv4 {
	resp := s.newReply(req, mt)
	b.ipxe = false // no option 175/176: we are the proxy
	b.apply(resp, s.server)
	if !b.http {
		resp.UpdateOption(dhcpv4.OptClassIdentifier(pxeClientClass))
	}
	if uuid := req.Options.Get(dhcpv4.OptionClientMachineIdentifier); uuid != nil {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, uuid))
	}
	if !b.http && !b.uefi {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation,
			[]byte{pxeVendorDiscoveryControl, 1, pxeDiscoveryUseBootFile, pxeVendorEnd}))
	}
	return resp
}
