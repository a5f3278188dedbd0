package dhcp

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// pxeClientClass prefixes the class identifier (option 60) of PXE clients,
// e.g. "PXEClient:Arch:00000:UNDI:002001" (PXE 2.1 spec, RFC 4578 section 2).
const pxeClientClass = "PXEClient"

// httpClientClass prefixes the class identifier of UEFI HTTP Boot clients,
// e.g. "HTTPClient:Arch:00016:UNDI:003001" (UEFI 2.x section 24.7.2). The
// reply must echo "HTTPClient" in option 60 and carry a URL as the boot
// file, or the firmware ignores the offer.
const httpClientClass = "HTTPClient"

// ipxeUserClass is the user class (option 77) iPXE sends. iPXE sends it raw
// rather than in RFC 3004 form, so it is matched as a substring.
const ipxeUserClass = "iPXE"

// ipxeNoPXEDHCP is iPXE's sub-option "no-pxedhcp" of its encapsulated option
// 175 (dhcpv4.OptionEtherboot). Set to 1 it stops iPXE waiting for proxyDHCP
// offers. dhcpv4 names code 176 only in the top-level space, as IP Telephone.
const ipxeNoPXEDHCP = dhcpv4.GenericOptionCode(176)

// pxeVendorDiscoveryControl is PXE vendor sub-option 6 of option 43 (PXE 2.1
// section 2.4.2.3). Value 8 (bit 3) says "use the boot file in this reply":
// no boot server discovery, no menu.
const (
	pxeVendorDiscoveryControl = 6
	pxeVendorEnd              = 255
	pxeDiscoveryUseBootFile   = 8
)

// bootInfo is what a client is told to boot.
type bootInfo struct {
	file   string // boot file name or script URL; "" means address only
	ipxe   bool   // iPXE: send option 175 with no-pxedhcp (not as a proxy)
	http   bool   // a UEFI HTTP Boot client: echo option 60 HTTPClient
	uefi   bool   // UEFI PXE firmware (EDK2): no option 43 in proxy replies
	reason string // why file is empty
}

// bootFor decides the boot file for req by the firmware table:
//
//	iPXE (option 77 contains "iPXE")      -> Boot.ScriptURL
//	PXEClient, arch 0 (BIOS)              -> Boot.BIOSFile
//	PXEClient, arch 7, 9 (UEFI x64)       -> Boot.UEFIFile
//	PXEClient, arch 11 (UEFI ARM64)       -> Boot.ARM64File
//	HTTPClient, arch 16 (x64), 19 (ARM64) -> Boot.HTTPBootURL, option 60 HTTPClient
//
// Anything else gets no boot file, and the reason says why. The first entry
// of option 93 is the client's preferred architecture (RFC 4578 section 2.1).
func (s *Server) bootFor(req *dhcpv4.DHCPv4) bootInfo {
	class := req.ClassIdentifier()
	pxe := strings.HasPrefix(class, pxeClientClass)
	httpBoot := strings.HasPrefix(class, httpClientClass)
	var b bootInfo
	if bytes.Contains(req.Options.Get(dhcpv4.OptionUserClassInformation), []byte(ipxeUserClass)) {
		// iPXE already runs: hand it its script, which does not chain again.
		b.ipxe = true
		b.file = s.cfg.Boot.ScriptURL(req.ClientHWAddr)
		if b.file == "" {
			b.reason = "no script URL"
		}
		return b
	}
	if !pxe && !httpBoot {
		b.reason = "not a PXE client"
		return b
	}
	archs := req.ClientArch()
	if len(archs) == 0 {
		b.reason = "no client architecture"
		return b
	}
	arch := archs[0]
	switch {
	case httpBoot && (arch == iana.EFI_X86_64_HTTP || arch == iana.EFI_ARM64_HTTP):
		if s.cfg.Boot.HTTPBootURL == nil {
			b.reason = "HTTP Boot is not configured"
			break
		}
		b.file, b.http = s.cfg.Boot.HTTPBootURL(req.ClientHWAddr), true
		if b.file == "" {
			b.reason = "no HTTP Boot URL"
		}
	case httpBoot:
		b.reason = fmt.Sprintf("no HTTP Boot URL for arch %d", uint16(arch))
	case arch == iana.INTEL_X86PC:
		b.file = s.cfg.Boot.BIOSFile
	case arch == iana.EFI_X86_64 || arch == iana.EFI_BC:
		b.file, b.uefi = s.cfg.Boot.UEFIFile, true
	case arch == iana.EFI_ARM64:
		b.file, b.uefi = s.cfg.Boot.ARM64File, true
	default:
		b.reason = fmt.Sprintf("no boot file for arch %d", uint16(arch))
	}
	// Option 60 is deliberately not echoed to PXE clients of a plain
	// server. A reply carrying "PXEClient" but no option 43 is a "BINL"
	// offer to UEFI firmware (EDK2 PxeBcParseDhcp4Packet), which then asks a
	// boot server on port 4011 for the file instead of using ours. A plain
	// DHCP offer with a boot file is used as is by BIOS and UEFI PXE alike.
	return b
}

// apply adds the boot information to resp: siaddr and file in the header,
// options 66 and 67, the HTTPClient class and, for iPXE, option 175.
func (b bootInfo) apply(resp *dhcpv4.DHCPv4, server netip.Addr) {
	if b.file != "" {
		resp.ServerIPAddr = ipOf(server)
		// The header field holds 127 bytes and a NUL; a longer name only
		// travels in option 67.
		if len(b.file) < 128 {
			resp.BootFileName = b.file
		}
		resp.UpdateOption(dhcpv4.OptTFTPServerName(server.String()))
		resp.UpdateOption(dhcpv4.OptBootFileName(b.file))
	}
	if b.http && b.file != "" {
		resp.UpdateOption(dhcpv4.OptClassIdentifier(httpClientClass))
	}
	if b.ipxe {
		sub := dhcpv4.OptionsFromList(dhcpv4.OptGeneric(ipxeNoPXEDHCP, []byte{1}))
		resp.UpdateOption(dhcpv4.Option{Code: dhcpv4.OptionEtherboot, Value: sub})
	}
}

// archOf names the client's preferred architecture (option 93) for logs and
// events: the IANA name, "arch N" if unnamed, "" if absent.
func archOf(req *dhcpv4.DHCPv4) string {
	archs := req.ClientArch()
	if len(archs) == 0 {
		return ""
	}
	if name := archs[0].String(); name != "unknown" {
		return name
	}
	return fmt.Sprintf("arch %d", uint16(archs[0]))
}
