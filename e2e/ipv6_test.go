//go:build linux

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The IPv6 side of the lab's segment: kiln's address on br0, and the URL
// DHCPv6 hands to UEFI HTTP Boot clients.
const (
	serverCIDR6 = "fd77::1/64"
	serverURL6  = "http://[fd77::1]:8080"
)

// TestBootIPv6 boots a VM through OVMF's own UEFI HTTP Boot over IPv6 into
// the tiny UKI and waits, through kiln's API, for it to be ready.
//
// The firmware's path is IPv6 only: kiln's router advertisements (M flag,
// on-link fd77::/64) and DHCPv6 (an IA_NA address and option 59,
// http://[fd77::1]:8080/httpboot/MAC.efi, with vendor class HTTPClient),
// then HEAD and GET of the UKI over IPv6. The segment is dual-stack: the
// UKI's tiny init then configures itself with IPv4 DHCP (udhcpc) and phones
// home over IPv4, as on any dual-stack rack.
//
// What OVMF (Debian 12, edk2 2022.11) needs, found by hand:
//   - IPv4 off in the firmware (opt/org.tianocore/IPv4Support=n), else it
//     tries HTTP Boot over IPv4 first; PXE off for both families.
//   - A boot menu wait (-boot menu=on,splash-time=5000). HttpBootDxe of
//     this edk2 starts DHCPv6 at once and gives up if Dhcp6->Start fails
//     with EFI_NO_MAPPING, which it does while an address of the NIC is in
//     duplicate address detection: the link-local one just after the
//     driver starts, and the one EDK2's own Ip6Config gets by DHCPv6 when
//     the RA has the M flag. It then prints "Error: Could not retrieve NBP
//     file size from HTTP server" without sending a packet. The wait lets
//     both finish: with 2 s, 2 of 7 boots failed so; with 5 s, 0 of 7.
//     Newer edk2 retries by itself (HandleDhcp6NoMappingRetry).
//   - The on-link prefix in the RA: EDK2 looks for a route to the server
//     before it connects (HttpBootCheckRouteTable); without one it waits
//     10 s, then tries on link anyway.
func TestBootIPv6(t *testing.T) {
	requireLab(t)
	t.Parallel()
	const mac = "52:54:00:77:00:06"
	l := newLab(t)
	run(t, "ip", "-n", l.ns, "addr", "add", serverCIDR6, "dev", "br0", "nodad")
	l.startKilnArgs("--dhcp6")

	out, err := l.kilnBuild(filepath.Join(repoRoot, "testdata/recipes/tiny-uki.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var built struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(out, &built); err != nil || !strings.HasPrefix(built.ID, "sha256:") {
		t.Fatalf("kiln build --json = %s (%v), want an object with id sha256:...", out, err)
	}
	hostname := "e2e-uefi-http-ipv6"
	if _, err := l.kilnCLI("machines", "add", "--server", serverURL, "--mac", mac,
		"--hostname", hostname, "--image", built.ID); err != nil {
		t.Fatal(err)
	}

	serial := filepath.Join(l.dir, "serial.log")
	start := time.Now()
	exited := l.startQEMUHTTP6(t, mac, serial)
	m, err := l.waitReady(mac, exited, serial, bootTimeout)
	kilnLog := filepath.Join(l.dir, "kiln.log")
	if err != nil {
		t.Fatalf("%v\n--- kiln log (tail) ---\n%s\n--- serial (tail) ---\n%s", err,
			tail(kilnLog, 40, "router advertisement"), tail(serial, 40, ""))
	}
	elapsed := time.Since(start)
	if m.Image != built.ID || m.ReportedImage != built.ID {
		t.Errorf("machine image = %s, reported %s, want both %s", m.Image, m.ReportedImage, built.ID)
	}
	if want := "kiln: hostname is " + hostname; !waitFile(serial, want, 10*time.Second) {
		t.Errorf("serial console never printed %q:\n%s", want, tail(serial, 30, ""))
	}
	l.checkTokenUsed(t, mac)

	// The firmware's half went over IPv6: the console shows it, kiln's
	// DHCPv6 acked the MAC (taken from the EUI-64 link-local address)
	// with the HTTP Boot URL, and the UKI was fetched from an fd77::
	// address.
	b, _ := os.ReadFile(serial)
	console := string(b)
	for _, want := range []string{"Start HTTP Boot over IPv6", "URI: " + serverURL6 + "/httpboot/" + mac + ".efi"} {
		if !strings.Contains(console, want) {
			t.Errorf("serial console lacks %q:\n%s", want, tail(serial, 30, ""))
		}
	}
	b, _ = os.ReadFile(kilnLog)
	log := string(b)
	acked := regexp.MustCompile(`msg=acked component=dhcp6 .*mac=` + mac + ` mac_source=link-local .*arch="EFI x86-64 boot from HTTP".*bootfile=` +
		regexp.QuoteMeta(serverURL6+"/httpboot/"+mac+".efi"))
	if !acked.MatchString(log) {
		t.Errorf("kiln log has no dhcp6 ack of %s with the HTTP Boot URL:\n%s", mac, grepLines(log, "dhcp6", 20))
	}
	fetched := regexp.MustCompile(`method=GET path=/httpboot/` + mac + `\.efi .*remote="?\[fd77::`)
	if !fetched.MatchString(log) {
		t.Errorf("kiln log shows no GET of the UKI over IPv6:\n%s", grepLines(log, "httpboot", 20))
	}
	seen := map[string]time.Time{}
	for _, ev := range m.Events {
		seen[ev.Kind] = ev.Time
	}
	for _, kind := range []string{"offered", "acked", "identity", "ready"} {
		if _, ok := seen[kind]; !ok {
			t.Errorf("machine events lack %q: %+v", kind, m.Events)
		}
	}
	// The UKI fetch is the "script" event, or "firsthop" once the boot
	// timeline records first-stage files.
	uki, ok := seen["firsthop"]
	if !ok {
		if uki, ok = seen["script"]; !ok {
			t.Errorf("machine events record no UKI fetch (script or firsthop): %+v", m.Events)
		}
	}
	t.Logf("E2E-TIMING uefi-http-ipv6: QEMU start to ready %.1fs (UKI fetched at +%.1fs, ready event at +%.1fs)",
		elapsed.Seconds(), uki.Sub(start).Seconds(), seen["ready"].Sub(start).Seconds())
}

// startQEMUHTTP6 boots a VM whose OVMF may only use UEFI HTTP Boot over
// IPv6, and returns a channel closed when QEMU exits. QEMU is killed at
// cleanup, before the namespace is removed.
func (l *lab) startQEMUHTTP6(t *testing.T, mac, serial string) <-chan struct{} {
	t.Helper()
	vars := filepath.Join(l.dir, "OVMF_VARS.fd")
	copyFile(t, ovmfVars, vars)
	args := []string{
		"-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1",
		"-nodefaults", "-display", "none", "-vga", "none", "-no-reboot",
		"-serial", "file:" + serial,
		"-drive", "if=pflash,format=raw,readonly=on,file=" + ovmfCode,
		"-drive", "if=pflash,format=raw,file=" + vars,
		"-global", "driver=cfi.pflash01,property=secure,value=off",
		"-fw_cfg", "name=opt/org.tianocore/IPv4Support,string=n",
		"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
		"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		// romfile= leaves the firmware's own network stack; the menu
		// wait lets its addresses pass DAD (see TestBootIPv6).
		"-device", "virtio-net-pci,netdev=n0,mac=" + mac + ",bootindex=1,romfile=",
		"-boot", "order=n,menu=on,splash-time=5000",
	}
	return l.runQEMU(t, args)
}

// grepLines returns up to n lines of s that contain sub, for failure
// messages.
func grepLines(s, sub string, n int) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, "\n")
}
