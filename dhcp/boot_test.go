package dhcp

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

func TestBoot(t *testing.T) {
	class := func(c string) dhcpv4.Modifier { return dhcpv4.WithOption(dhcpv4.OptClassIdentifier(c)) }
	arch := func(a ...iana.Arch) dhcpv4.Modifier { return dhcpv4.WithOption(dhcpv4.OptClientArch(a...)) }
	// tftp is the boot part of a reply that names file.
	tftp := func(file string) *summary {
		return &summary{SIAddr: "10.77.0.1", File: file, TFTPServer: "10.77.0.1", BootFile: file}
	}
	script := "http://10.77.0.1:8080/boot/52:54:00:00:00:0a.ipxe"
	tests := []struct {
		name string
		mods []dhcpv4.Modifier
		want *summary // boot fields only
	}{
		{"bios", pxeBIOS, tftp("undionly.kpxe")},
		{"uefi x64", pxeUEFI, tftp("snponly.efi")},
		{"uefi bc", []dhcpv4.Modifier{class("PXEClient:Arch:00009:UNDI:003016"), arch(iana.EFI_BC)}, tftp("snponly.efi")},
		{"first arch wins", []dhcpv4.Modifier{class("PXEClient"), arch(iana.EFI_X86_64, iana.INTEL_X86PC)}, tftp("snponly.efi")},
		{"ipxe", pxeIPXE, &summary{
			SIAddr: "10.77.0.1", File: script, TFTPServer: "10.77.0.1", BootFile: script,
			Etherboot: []byte{byte(ipxeNoPXEDHCP), 1, 1},
		}},
		{"ipxe rfc 3004 user class without class id", []dhcpv4.Modifier{dhcpv4.WithUserClass("iPXE", true)}, &summary{
			SIAddr: "10.77.0.1", File: script, TFTPServer: "10.77.0.1", BootFile: script,
			Etherboot: []byte{byte(ipxeNoPXEDHCP), 1, 1},
		}},
		{"not pxe", nil, &summary{SIAddr: "0.0.0.0"}},
		{"not pxe with arch", []dhcpv4.Modifier{class("MSFT 5.0"), arch(iana.INTEL_X86PC)}, &summary{SIAddr: "0.0.0.0"}},
		{"arm64", []dhcpv4.Modifier{class("PXEClient:Arch:00011:UNDI:003016"), arch(iana.EFI_ARM64)}, tftp("snponly-arm64.efi")},
		{"unknown arch", []dhcpv4.Modifier{class("PXEClient:Arch:00010:UNDI:003016"), arch(iana.EFI_ARM32)}, &summary{SIAddr: "0.0.0.0"}},
		{"pxe without arch", []dhcpv4.Modifier{class("PXEClient")}, &summary{SIAddr: "0.0.0.0"}},
		{"uefi http", []dhcpv4.Modifier{class("HTTPClient:Arch:00016:UNDI:003001"), arch(iana.EFI_X86_64_HTTP)}, &summary{
			SIAddr: "10.77.0.1", File: "http://10.77.0.1:8080/httpboot/52:54:00:00:00:0a.efi", TFTPServer: "10.77.0.1",
			BootFile: "http://10.77.0.1:8080/httpboot/52:54:00:00:00:0a.efi", Class: "HTTPClient",
		}},
		{"arm64 http", []dhcpv4.Modifier{class("HTTPClient:Arch:00019"), arch(iana.EFI_ARM64_HTTP)}, &summary{
			SIAddr: "10.77.0.1", File: "http://10.77.0.1:8080/httpboot/52:54:00:00:00:0a.efi", TFTPServer: "10.77.0.1",
			BootFile: "http://10.77.0.1:8080/httpboot/52:54:00:00:00:0a.efi", Class: "HTTPClient",
		}},
		{"http without arch", []dhcpv4.Modifier{class("HTTPClient")}, &summary{SIAddr: "0.0.0.0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck} {
				e := newEnv(t)
				var resp *dhcpv4.DHCPv4
				if mt == dhcpv4.MessageTypeOffer {
					resp = e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA, tt.mods...))
				} else {
					resp = e.dora(macA, tt.mods...)
				}
				got := summarize(resp)
				got = &summary{SIAddr: got.SIAddr, File: got.File, TFTPServer: got.TFTPServer,
					BootFile: got.BootFile, Class: got.Class, Etherboot: got.Etherboot}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("%s boot fields (-want +got):\n%s", mt, diff)
				}
				if ev := e.events[len(e.events)-1]; ev.BootFile != tt.want.BootFile {
					t.Errorf("%s event boot file = %q, want %q", mt, ev.BootFile, tt.want.BootFile)
				}
			}
		})
	}
}

func TestBootCustomFiles(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Boot.BIOSFile, c.Boot.UEFIFile = "ipxe.pxe", "ipxe.efi" })
	for _, tt := range []struct {
		name string
		mods []dhcpv4.Modifier
		want string
	}{{"bios", pxeBIOS, "ipxe.pxe"}, {"uefi", pxeUEFI, "ipxe.efi"}} {
		if got := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA, tt.mods...)).BootFileName; got != tt.want {
			t.Errorf("%s boot file = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestBootHTTPNotConfigured(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Boot.HTTPBootURL = nil })
	resp := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA,
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016")), dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64_HTTP))))
	if resp == nil {
		t.Fatal("no offer: an HTTP Boot client still gets an address")
	}
	if got := summarize(resp); got.BootFile != "" || got.Class != "" {
		t.Errorf("offer boot file %q class %q, want neither without HTTPBootURL", got.BootFile, got.Class)
	}
}

func TestBootLongScriptURL(t *testing.T) {
	long := "http://10.77.0.1:8080/boot/" + strings.Repeat("x", 150) + ".ipxe"
	e := newEnv(t, func(c *Config) { c.Boot.ScriptURL = func(net.HardwareAddr) string { return long } })
	resp := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA, pxeIPXE...))
	if resp.BootFileName != "" || resp.BootFileNameOption() != long {
		t.Errorf("file %q, option 67 %q; want empty header field and the whole URL in option 67", resp.BootFileName, resp.BootFileNameOption())
	}
	if _, err := dhcpv4.FromBytes(resp.ToBytes()); err != nil {
		t.Errorf("reply does not parse: %v", err)
	}
}

// TestFirmwareTable runs every architecture from 0 to 40 and 0xffff with
// both classes through the table: only the listed pairs get a file.
func TestFirmwareTable(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Boot.ARM64File = "arm64.efi" })
	http := "http://10.77.0.1:8080/httpboot/52:54:00:00:00:0a.efi"
	want := map[string]string{
		"PXEClient 0":   "undionly.kpxe",
		"PXEClient 7":   "snponly.efi",
		"PXEClient 9":   "snponly.efi",
		"PXEClient 11":  "arm64.efi",
		"HTTPClient 16": http,
		"HTTPClient 19": http,
	}
	archs := []iana.Arch{0xffff}
	for a := range iana.Arch(41) {
		archs = append(archs, a)
	}
	for _, class := range []string{"PXEClient", "HTTPClient"} {
		for _, a := range archs {
			key := fmt.Sprintf("%s %d", class, uint16(a))
			req := packet(t, dhcpv4.MessageTypeDiscover, macA,
				dhcpv4.WithOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("%s:Arch:%05d", class, uint16(a)))),
				dhcpv4.WithOption(dhcpv4.OptClientArch(a)))
			b := e.s.bootFor(req)
			if b.file != want[key] {
				t.Errorf("%s: boot file %q, want %q", key, b.file, want[key])
			}
			if (b.file == "") == (b.reason == "") {
				t.Errorf("%s: file %q with reason %q: want exactly one", key, b.file, b.reason)
			}
			if b.http != (class == "HTTPClient" && b.file != "") {
				t.Errorf("%s: http = %v", key, b.http)
			}
			if wantUEFI := key == "PXEClient 7" || key == "PXEClient 9" || key == "PXEClient 11"; b.uefi != wantUEFI {
				t.Errorf("%s: uefi = %v, want %v", key, b.uefi, wantUEFI)
			}
		}
	}
}
