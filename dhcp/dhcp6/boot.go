package dhcp6

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

// httpClientClass begins the vendor class (option 16) data of UEFI HTTP
// Boot clients, e.g. "HTTPClient:Arch:00016:UNDI:003001" (UEFI 2.x section
// 24.7.3). The reply must carry a vendor class whose first data item is
// "HTTPClient" (EDK2 HttpBootParseDhcp6Packet compares the 10 bytes after
// the enterprise number and item length) and a boot file URL, or the
// firmware ignores it.
const httpClientClass = "HTTPClient"

// edk2Enterprise is the enterprise number EDK2 puts in its vendor class
// option (Intel's, "temporarily" per its source); kiln echoes it.
const edk2Enterprise = 343

// ipxeUserClass is the user class (option 15) iPXE sends.
const ipxeUserClass = "iPXE"

// bootInfo is what a client is told to boot.
type bootInfo struct {
	url    string // option 59; "" means address only
	http   bool   // echo vendor class HTTPClient
	reason string // why url is empty
}

// bootFor decides the boot file URL for req from client mac (nil if
// unknown): iPXE gets its script, an HTTP Boot client its HTTP URL, a UEFI
// PXE client the TFTP URL of Boot.TFTPFile.
func (s *Server) bootFor(req *dhcpv6.Message, mac net.HardwareAddr) bootInfo {
	var b bootInfo
	archs := req.Options.ArchTypes()
	switch {
	case hasUserClass(req, ipxeUserClass):
		if s.cfg.Boot.ScriptURL == nil {
			b.reason = "iPXE scripts are not configured"
			break
		}
		// iPXE already runs: hand it its script, which does not chain again.
		if b.url = s.cfg.Boot.ScriptURL(mac); b.url == "" {
			b.reason = "no script URL"
		}
	case isHTTPClient(req):
		switch {
		case len(archs) == 0:
			b.reason = "HTTP Boot client without an architecture"
		case archs[0] != iana.EFI_X86_64_HTTP:
			b.reason = fmt.Sprintf("no HTTP Boot URL for arch %d", uint16(archs[0]))
		case s.cfg.Boot.HTTPBootURL == nil:
			b.reason = "HTTP Boot is not configured"
		default:
			b.url, b.http = s.cfg.Boot.HTTPBootURL(mac), true
			if b.url == "" {
				b.reason = "no HTTP Boot URL"
			}
		}
	case len(archs) == 0:
		b.reason = "not a network boot client"
	case archs[0] == iana.EFI_X86_64 || archs[0] == iana.EFI_BC:
		b.url = "tftp://[" + s.cfg.ServerIP.String() + "]/" + s.cfg.Boot.TFTPFile
	default:
		b.reason = fmt.Sprintf("no boot file for arch %d", uint16(archs[0]))
	}
	return b
}

// apply adds option 59 and, for HTTP Boot, the vendor class echo.
func (b bootInfo) apply(resp *dhcpv6.Message) {
	if b.url == "" {
		return
	}
	resp.AddOption(dhcpv6.OptBootFileURL(b.url))
	if b.http {
		resp.AddOption(&dhcpv6.OptVendorClass{EnterpriseNumber: edk2Enterprise, Data: [][]byte{[]byte(httpClientClass)}})
	}
}

func hasUserClass(req *dhcpv6.Message, class string) bool {
	for _, uc := range req.Options.UserClasses() {
		if bytes.Contains(uc, []byte(class)) {
			return true
		}
	}
	return false
}

func isHTTPClient(req *dhcpv6.Message) bool {
	for _, vc := range req.Options.VendorClasses() {
		for _, d := range vc.Data {
			if bytes.HasPrefix(d, []byte(httpClientClass)) {
				return true
			}
		}
	}
	return false
}

// archOf names the client's preferred architecture (option 61) for logs
// and events: the IANA name, "arch N" if unnamed, "" if absent.
func archOf(req *dhcpv6.Message) string {
	archs := req.Options.ArchTypes()
	if len(archs) == 0 {
		return ""
	}
	if name := archs[0].String(); name != "unknown" {
		return name
	}
	return fmt.Sprintf("arch %d", uint16(archs[0]))
}

// MAC sources, for Decision.MACSource and the log.
const (
	macFromOpt79     = "opt79"
	macFromLinkLocal = "link-local"
	macFromDUIDLL    = "duid-ll"
	macFromDUIDLLT   = "duid-llt"
)

// macOf finds the client's MAC. The client link-layer address option and
// the link-local source address describe the interface the request came
// in on; a DUID-LL names some interface of the client, a DUID-LLT some
// interface at some time, so they come last.
func macOf(req *dhcpv6.Message, src netip.Addr) (net.HardwareAddr, string) {
	if o := req.Options.GetOne(dhcpv6.OptionClientLinkLayerAddr); o != nil {
		b := o.ToBytes()
		if len(b) == 8 && binary.BigEndian.Uint16(b) == uint16(iana.HWTypeEthernet) {
			return net.HardwareAddr(bytes.Clone(b[2:])), macFromOpt79
		}
	}
	if mac := eui64MAC(src); mac != nil {
		return mac, macFromLinkLocal
	}
	switch d := req.Options.ClientID().(type) {
	case *dhcpv6.DUIDLL:
		if d.HWType == iana.HWTypeEthernet && len(d.LinkLayerAddr) == 6 {
			return bytes.Clone(d.LinkLayerAddr), macFromDUIDLL
		}
	case *dhcpv6.DUIDLLT:
		if d.HWType == iana.HWTypeEthernet && len(d.LinkLayerAddr) == 6 {
			return bytes.Clone(d.LinkLayerAddr), macFromDUIDLLT
		}
	}
	return nil, ""
}

// eui64MAC returns the MAC in the modified EUI-64 interface identifier of a
// link-local address (RFC 4291 appendix A), or nil if it has none.
func eui64MAC(a netip.Addr) net.HardwareAddr {
	if !a.Is6() || !a.IsLinkLocalUnicast() {
		return nil
	}
	b := a.As16()
	if b[11] != 0xff || b[12] != 0xfe {
		return nil
	}
	return net.HardwareAddr{b[8] ^ 0x02, b[9], b[10], b[13], b[14], b[15]}
}
