package dhcp

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// newProxy is a proxyDHCP server: no subnets, no store.
func newProxy(t *testing.T) *Server {
	t.Helper()
	cfg := testConfig(t, nil, &clock{t: testEpoch})
	cfg.Proxy, cfg.Subnets, cfg.Leases = true, nil, nil
	cfg.Observer = func(ev Event) { t.Errorf("proxy sent event %+v", ev) }
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// proxySummary is the part of a proxy reply the tests compare.
type proxySummary struct {
	Type, YIAddr, CIAddr, SIAddr, File, ServerID, BootFile, Class string
	Vendor                                                        []byte // option 43
	UUID                                                          bool   // option 97 echoed
	NoConfig                                                      bool   // no options 1, 3, 6, 51, 175
}

func summarizeProxy(p *dhcpv4.DHCPv4) *proxySummary {
	if p == nil {
		return nil
	}
	return &proxySummary{
		Type: p.MessageType().String(), YIAddr: p.YourIPAddr.String(), CIAddr: p.ClientIPAddr.String(),
		SIAddr: p.ServerIPAddr.String(), File: p.BootFileName, ServerID: p.ServerIdentifier().String(),
		BootFile: p.BootFileNameOption(), Class: p.ClassIdentifier(),
		Vendor: p.Options.Get(dhcpv4.OptionVendorSpecificInformation),
		UUID:   p.Options.Has(dhcpv4.OptionClientMachineIdentifier),
		NoConfig: !p.Options.Has(dhcpv4.OptionSubnetMask) && !p.Options.Has(dhcpv4.OptionRouter) &&
			!p.Options.Has(dhcpv4.OptionDomainNameServer) && !p.Options.Has(dhcpv4.OptionIPAddressLeaseTime) &&
			!p.Options.Has(dhcpv4.OptionEtherboot),
	}
}

func TestProxy(t *testing.T) {
	uuid := dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, make([]byte, 16)...))
	class := func(c string) dhcpv4.Modifier { return dhcpv4.WithOption(dhcpv4.OptClassIdentifier(c)) }
	arch := func(a iana.Arch) dhcpv4.Modifier { return dhcpv4.WithOption(dhcpv4.OptClientArch(a)) }
	ciaddr := dhcpv4.WithClientIP(ip("10.77.0.60"))
	bypass := []byte{6, 1, 8, 255} // PXE discovery control: use the boot file in this reply
	script := "http://10.77.0.1:8080/boot/52:54:00:00:00:0a.ipxe"
	httpURL := "http://10.77.0.1:8080/httpboot/52:54:00:00:00:0a.efi"
	reply := func(mt, ci, file, class string, vendor []byte) *proxySummary {
		return &proxySummary{Type: mt, YIAddr: "0.0.0.0", CIAddr: ci, SIAddr: "10.77.0.1", File: file,
			ServerID: "10.77.0.1", BootFile: file, Class: class, Vendor: vendor, UUID: true, NoConfig: true}
	}
	tests := []struct {
		name     string
		mt       dhcpv4.MessageType
		mods     []dhcpv4.Modifier
		bootPort bool
		want     *proxySummary // nil: ignored
	}{
		{"bios discover", dhcpv4.MessageTypeDiscover, pxeBIOS, false, reply("OFFER", "0.0.0.0", "undionly.kpxe", "PXEClient", bypass)},
		// UEFI gets no option 43: a ProxyBinl offer, so EDK2 asks port 4011.
		{"uefi discover", dhcpv4.MessageTypeDiscover, pxeUEFI, false, reply("OFFER", "0.0.0.0", "snponly.efi", "PXEClient", nil)},
		{"uefi bc discover", dhcpv4.MessageTypeDiscover, []dhcpv4.Modifier{class("PXEClient:Arch:00009"), arch(iana.EFI_BC)}, false,
			reply("OFFER", "0.0.0.0", "snponly.efi", "PXEClient", nil)},
		{"arm64 discover", dhcpv4.MessageTypeDiscover, []dhcpv4.Modifier{class("PXEClient:Arch:00011"), arch(iana.EFI_ARM64)}, false,
			reply("OFFER", "0.0.0.0", "snponly-arm64.efi", "PXEClient", nil)},
		{"http boot discover", dhcpv4.MessageTypeDiscover, []dhcpv4.Modifier{class("HTTPClient:Arch:00016"), arch(iana.EFI_X86_64_HTTP)}, false,
			reply("OFFER", "0.0.0.0", httpURL, "HTTPClient", nil)},
		// iPXE: the script, option 43, and no option 175 (we are the proxy
		// it waits for).
		{"ipxe discover", dhcpv4.MessageTypeDiscover, pxeIPXE, false, reply("OFFER", "0.0.0.0", script, "PXEClient", bypass)},
		{"plain client", dhcpv4.MessageTypeDiscover, nil, false, nil},
		{"unknown arch", dhcpv4.MessageTypeDiscover, []dhcpv4.Modifier{class("PXEClient:Arch:00002"), arch(iana.EFI_ITANIUM)}, false, nil},
		{"request on 67 belongs to the dhcp server", dhcpv4.MessageTypeRequest,
			append(pxeBIOS, withRequested(ip("10.77.0.60")), withServerID(ip("10.77.0.254"))), false, nil},
		{"inform on 67", dhcpv4.MessageTypeInform, append(pxeBIOS, ciaddr), false, nil},
		{"release on 67", dhcpv4.MessageTypeRelease, append(pxeBIOS, ciaddr), false, nil},
		{"uefi boot server request", dhcpv4.MessageTypeRequest, append(pxeUEFI, ciaddr, withServerID(testServerIP)), true,
			reply("ACK", "10.77.0.60", "snponly.efi", "PXEClient", nil)},
		{"uefi boot server discover", dhcpv4.MessageTypeDiscover, append(pxeUEFI, ciaddr), true,
			reply("ACK", "10.77.0.60", "snponly.efi", "PXEClient", nil)},
		{"bios boot server request", dhcpv4.MessageTypeRequest, append(pxeBIOS, ciaddr, withServerID(testServerIP)), true,
			reply("ACK", "10.77.0.60", "undionly.kpxe", "PXEClient", bypass)},
		{"ipxe proxydhcp request", dhcpv4.MessageTypeRequest, append(pxeIPXE, ciaddr, withServerID(testServerIP)), true,
			reply("ACK", "10.77.0.60", script, "PXEClient", bypass)},
		{"boot server release", dhcpv4.MessageTypeRelease, append(pxeUEFI, ciaddr), true, nil},
		{"boot server plain client", dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{ciaddr}, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newProxy(t)
			req := packet(t, tt.mt, macA, append(tt.mods, uuid)...)
			resp, d, err := s.handle(req, tt.bootPort)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, summarizeProxy(resp)); diff != "" {
				t.Errorf("proxy reply (-want +got):\n%s", diff)
			}
			if !d.Proxy || (resp == nil) != (d.Outcome == "ignored") || (resp == nil && d.Reason == "") {
				t.Errorf("decision %+v for reply %v: want Proxy, and ignored with a reason iff no reply", d, resp != nil)
			}
			if resp != nil {
				checkReply(t, s, req, resp)
			}
			if l := s.Leases(); len(l) != 0 {
				t.Errorf("proxy made leases %v", l)
			}
		})
	}
}

// TestPlainServerBootPort: a normal server's PXEPort socket answers boot
// server requests too, without leases.
func TestPlainServerBootPort(t *testing.T) {
	e := newEnv(t)
	resp, _, err := e.s.handle(packet(t, dhcpv4.MessageTypeRequest, macA, append(pxeUEFI, dhcpv4.WithClientIP(ip("10.77.0.100")))...), true)
	if err != nil || resp == nil || resp.BootFileName != "snponly.efi" || resp.ClientIPAddr.String() != "10.77.0.100" {
		t.Fatalf("boot server request: %v, %v", summarizeProxy(resp), err)
	}
	if l := e.s.Leases(); len(l) != 0 {
		t.Errorf("boot server request made leases %v", l)
	}
}
