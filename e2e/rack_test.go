//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The rack behind a DHCP relay (TestBootRelay): its own subnet, routed to
// kiln's through the relay's uplink on kiln's bridge.
const (
	rackCIDR   = "10.78.0.1/24"
	rackUplink = "10.77.0.2/24" // the relay's (and in TestBootProxyDHCP, dnsmasq's) address on kiln's bridge
)

// rackPool is the relayed subnet's pool in kiln's --dhcp-config.
var rackPool = [2]netip.Addr{netip.MustParseAddr("10.78.0.100"), netip.MustParseAddr("10.78.0.199")}

// TestBootRelay boots a BIOS VM (SeaBIOS, QEMU's iPXE ROM) in a second
// namespace, a rack whose only way to kiln is a DHCP relay and a router:
// the relay (dnsmasq, or ISC dhcrelay adding option 82) forwards the VM's
// DHCP to kiln, kiln picks the rack's subnet from giaddr and answers the
// relay, and the script, kernel and initrd come over HTTP through the
// router. It checks through kiln's API that the VM reached ready with an
// address of the relayed subnet's pool.
func TestBootRelay(t *testing.T) {
	requireLab(t)
	t.Parallel() // with the other boots (the Debian build leaves a CPU free)
	for _, tc := range []struct {
		name  string
		mac   string
		relay string // program
	}{
		{name: "dnsmasq", mac: "52:54:00:77:00:21", relay: "dnsmasq"},
		{name: "dhcrelay-opt82", mac: "52:54:00:77:00:22", relay: "dhcrelay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			requireTool(t, "dnsmasq", "dnsmasq-base") // the rack's router advertisements
			requireTool(t, tc.relay, "dnsmasq-base or isc-dhcp-relay")
			l := newLab(t)
			rack := l.addRack()
			switch tc.relay {
			case "dnsmasq":
				// --interface limits whom it relays for; --port=0: no DNS.
				rack.startDaemon("relay.log", "DHCP relay from", "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
					"--port=0", "--interface=br0", "--dhcp-relay=10.78.0.1,10.77.0.1", "--log-dhcp", "--log-facility=-",
					"--pid-file="+filepath.Join(l.dir, "relay.pid"), "--user=root")
			case "dhcrelay":
				// -a adds option 82 (circuit id "br0"), which kiln must
				// echo (RFC 3046); dhcrelay strips it from the reply, so
				// tcpdump watches kiln's replies to the relay.
				requireTool(t, "tcpdump", "tcpdump")
				l.startDaemon("replies.log", "listening on", "tcpdump", "-i", "br0", "-n", "-v", "-l",
					"udp and src host 10.77.0.1 and src port 67 and dst host 10.78.0.1")
				rack.startDaemon("relay.log", "Sending on   Socket/fallback", "dhcrelay", "-4", "-d", "-a",
					"-id", "br0", "-iu", "uplink0", "--no-pid", "10.77.0.1")
			}
			config := filepath.Join(l.dir, "dhcp.yaml")
			writeFile(t, config, fmt.Sprintf(`subnets:
  - subnet: 10.78.0.0/24
    pools: [%s-%s]
    router: 10.78.0.1
`, rackPool[0], rackPool[1]))
			l.startKilnArgs("--dhcp-config", config)
			m, elapsed := l.bootTiny(t, rack, "relay-"+tc.name, tc.mac, bios, "offered", "acked", "script", "kernel", "initrd", "identity", "ready")
			ip, err := netip.ParseAddr(m.IP)
			if err != nil || ip.Less(rackPool[0]) || rackPool[1].Less(ip) {
				t.Errorf("machine IP %q, want one of the relayed subnet's pool %s-%s", m.IP, rackPool[0], rackPool[1])
			}
			if b, _ := os.ReadFile(filepath.Join(l.dir, "relay.log")); !relayForwarded[tc.relay].Match(b) {
				t.Errorf("the relay's log never says it forwarded a request:\n%s", tail(filepath.Join(l.dir, "relay.log"), 20, ""))
			}
			if tc.relay == "dhcrelay" {
				replies := readFile(t, filepath.Join(l.dir, "replies.log"))
				if !strings.Contains(replies, "Circuit-ID SubOption 1, length 3: br0") {
					t.Errorf("kiln's replies to the relay do not echo option 82 (circuit id br0):\n%s", replies)
				}
			}
			t.Logf("E2E-TIMING relay-%s: QEMU start to ready %.1fs", tc.name, elapsed.Seconds())
		})
	}
}

// relayForwarded matches a relay's log line for a request it forwarded to kiln.
var relayForwarded = map[string]*regexp.Regexp{
	"dnsmasq":  regexp.MustCompile(`DHCP relay at 10\.78\.0\.1 -> 10\.77\.0\.1`),
	"dhcrelay": regexp.MustCompile(`Forwarded BOOTREQUEST for .* to 10\.77\.0\.1`),
}

// TestBootProxyDHCP boots a UEFI VM (OVMF's own PXE) on a segment whose
// addresses come from another DHCP server, Debian's dnsmasq, that knows
// nothing of PXE; kiln serve --proxy answers only the PXE part (on 67 and
// 4011): the firmware TFTPs snponly.efi from kiln, iPXE gets its address from
// dnsmasq and its script from kiln. It checks that dnsmasq acked the VM's
// address and, through kiln's API, that the VM reached ready with kiln's
// script, kernel and initrd.
func TestBootProxyDHCP(t *testing.T) {
	requireLab(t)
	requireTool(t, "dnsmasq", "dnsmasq-base")
	t.Parallel()
	const mac = "52:54:00:77:00:31"
	l := newLab(t)
	primary := l.addPeer("dhcp", "dhcp0")
	// Addresses only: no boot file, no next server, no PXE options.
	primary.startDaemon("dnsmasq.log", "DHCP, IP range", "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
		"--port=0", "--interface=dhcp0", "--bind-interfaces", "--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,1h",
		"--no-ping", "--dhcp-leasefile="+filepath.Join(l.dir, "dnsmasq.leases"), "--log-dhcp", "--log-facility=-",
		"--pid-file="+filepath.Join(l.dir, "dnsmasq.pid"), "--user=root")
	l.startKilnArgs("--proxy")
	m, elapsed := l.bootTiny(t, l, "proxydhcp", mac, uefiPXE, "script", "kernel", "initrd", "identity", "ready")

	// The VM's address is dnsmasq's, for the firmware and for iPXE.
	acks := regexp.MustCompile(`DHCPACK\(dhcp0\) (10\.77\.0\.\d+) `+mac).FindAllStringSubmatch(readFile(t, filepath.Join(l.dir, "dnsmasq.log")), -1)
	if len(acks) < 2 {
		t.Errorf("dnsmasq acked %d requests of %s, want at least 2 (firmware and iPXE):\n%s", len(acks), mac, tail(filepath.Join(l.dir, "dnsmasq.log"), 30, ""))
	}
	for _, ack := range acks {
		if m.IP != "" && ack[1] != m.IP {
			t.Errorf("kiln records IP %s for %s, dnsmasq gave it %s", m.IP, mac, ack[1])
		}
	}
	t.Logf("E2E-TIMING proxydhcp: QEMU start to ready %.1fs", elapsed.Seconds())
}

// scriptTimeout bounds the time from QEMU start to the boot script (the
// machine leaves state "assigned"): 20-50 s on a loaded 2-CPU machine.
const scriptTimeout = 2 * time.Minute

// bootTiny bakes the tiny image into l's kiln, registers mac for it, boots a
// VM on vm's tap device (vm is l or a peer namespace of it), waits until kiln
// says the machine is ready and checks that the machine's events include
// want. It returns the machine record and the time from QEMU start to ready.
func (l *lab) bootTiny(t *testing.T, vm *lab, name, mac string, fw firmware, want ...string) (machine, time.Duration) {
	t.Helper()
	out, err := l.kilnBuild(filepath.Join(repoRoot, "testdata/recipes/tiny.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var built struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(out, &built); err != nil || !strings.HasPrefix(built.ID, "sha256:") {
		t.Fatalf("kiln build --json = %s (%v), want an object with id sha256:...", out, err)
	}
	id := built.ID
	hostname := "e2e-" + name
	if _, err := l.kilnCLI("machines", "add", "--server", serverURL, "--mac", mac, "--hostname", hostname, "--image", id); err != nil {
		t.Fatal(err)
	}
	serial := filepath.Join(l.dir, "serial.log")
	start := time.Now()
	exited := vm.startQEMU(t, mac, fw, "", serial)
	// A boot that has not fetched its script after scriptTimeout will not:
	// fail then rather than after bootTimeout (SeaBIOS's iPXE ROM retries
	// DHCP quietly, with nothing on the serial console).
	m, err := l.waitReady(mac, exited, serial, scriptTimeout)
	if err != nil && strings.Contains(err.Error(), "not ready after") && m.State != "assigned" {
		m, err = l.waitReady(mac, exited, serial, bootTimeout-scriptTimeout)
	}
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("%v\n--- kiln log (tail) ---\n%s\n--- serial (tail) ---\n%s", err,
			tailExcept(filepath.Join(l.dir, "kiln.log"), 40, "http request", "router advertisement"), tail(serial, 40, ""))
	}
	if m.Image != id || m.ReportedImage != id {
		t.Errorf("machine image = %s, reported %s, want both %s", m.Image, m.ReportedImage, id)
	}
	if want := "kiln: hostname is " + hostname; !waitFile(serial, want, 10*time.Second) {
		t.Errorf("serial console never printed %q:\n%s", want, tail(serial, 30, ""))
	}
	seen := map[string]bool{}
	for _, ev := range m.Events {
		seen[ev.Kind] = true
	}
	for _, kind := range want {
		if !seen[kind] {
			t.Errorf("machine events lack %q: %+v", kind, m.Events)
		}
	}
	return m, elapsed
}

// addPeer makes a namespace for another host on the lab's segment: a veth
// pair with one end enslaved to the lab's bridge and the other, named
// iface, in the new namespace with address rackUplink.
func (l *lab) addPeer(role, iface string) *lab {
	l.t.Helper()
	p := l.newPeerNS(role)
	for _, args := range [][]string{
		{"-n", l.ns, "link", "add", iface, "type", "veth", "peer", "name", iface, "netns", p.ns},
		{"-n", l.ns, "link", "set", iface, "master", "br0", "up"},
		{"-n", p.ns, "addr", "add", rackUplink, "dev", iface},
		{"-n", p.ns, "link", "set", iface, "up"},
	} {
		run(l.t, "ip", args...)
	}
	return p
}

// addRack makes the rack of TestBootRelay: a peer namespace (uplink0 on the
// lab's bridge) with its own bridge br0 (rackCIDR) and tap0 for the VM,
// forwarding between the two; kiln's namespace routes the rack's subnet
// through the uplink.
func (l *lab) addRack() *lab {
	l.t.Helper()
	r := l.addPeer("rack", "uplink0")
	for _, args := range [][]string{
		{"link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		{"addr", "add", rackCIDR, "dev", "br0"},
		{"link", "set", "br0", "up"},
		{"tuntap", "add", "dev", "tap0", "mode", "tap"},
		{"link", "set", "tap0", "master", "br0"},
		{"link", "set", "tap0", "up"},
	} {
		run(l.t, "ip", append([]string{"-n", r.ns}, args...)...)
	}
	run(l.t, "ip", "netns", "exec", r.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	run(l.t, "ip", "-n", l.ns, "route", "add", "10.78.0.0/24", "via", strings.TrimSuffix(rackUplink, "/24"))
	r.capture("br0", "rack")
	// The rack's router advertises IPv6 on the VM's segment, as real ones
	// do: without RAs iPXE waits ~14 s for IPv6 after DHCP (LAB.md), and
	// kiln's own RAs do not cross the router. Router lifetime 0, no DHCPv6.
	run(l.t, "ip", "-n", r.ns, "addr", "add", "fd00:78::1/64", "dev", "br0", "nodad")
	r.startDaemon("ra.log", "IPv6 router advertisement enabled", "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
		"--port=0", "--interface=br0", "--enable-ra", "--dhcp-range=::,constructor:br0,ra-only", "--ra-param=br0,10,0",
		"--log-facility=-", "--pid-file="+filepath.Join(l.dir, "ra.pid"), "--user=root")
	return r
}

// newPeerNS makes another namespace for the lab's test, sharing the lab's
// folder (logs are kept with the lab's), deleted at cleanup.
func (l *lab) newPeerNS(role string) *lab {
	l.t.Helper()
	p := &lab{t: l.t, ns: fmt.Sprintf("kiln-e2e-%s-%d-%d", role, os.Getpid(), nsSeq.Add(1)), dir: l.dir}
	run(l.t, "ip", "netns", "add", p.ns)
	l.t.Cleanup(p.destroy)
	run(l.t, "ip", "-n", p.ns, "link", "set", "lo", "up")
	return p
}

// startDaemon runs a program in the lab's namespace with its output in
// logName (in the lab's folder), waits until the log contains ready, and
// stops it, by PID, at cleanup. It fails the test when the program exits
// or does not get ready within 10 s.
func (l *lab) startDaemon(logName, ready, name string, args ...string) *exec.Cmd {
	l.t.Helper()
	path := filepath.Join(l.dir, logName)
	logf, err := os.Create(path)
	if err != nil {
		l.t.Fatal(err)
	}
	cmd := l.inNS(context.Background(), name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		l.t.Fatalf("starting %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	l.t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(readFile(l.t, path), ready) {
		select {
		case <-done:
			l.t.Fatalf("%s exited at start:\n%s", name, tail(path, 30, ""))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%s did not say %q within 10s:\n%s", name, ready, tail(path, 30, ""))
		}
	}
	return cmd
}

// captureDir, when set from KILN_E2E_CAPTURE (see capture.sh), makes every
// lab record its DHCP, DHCPv6 and TFTP request packets into
// captureDir/LABEL.pcap for the fuzzers' seed corpora. CI does not set it.
var captureDir = os.Getenv("KILN_E2E_CAPTURE")

// capture records the lab's DHCP/TFTP packets on iface while the test runs,
// when captureDir is set. The label names the pcap; "" is the test's own
// (last) name, and other labels are added to it.
func (l *lab) capture(iface, label string) {
	l.t.Helper()
	if captureDir == "" {
		return
	}
	// TestBootToReady/bios-ipxe-rom -> bios-ipxe-rom, TestBootRelay/dnsmasq
	// -> relay-dnsmasq, TestBootProxyDHCP -> proxydhcp.
	name := strings.ToLower(l.t.Name())
	name = strings.TrimPrefix(strings.TrimPrefix(name, "testboottoready/"), "testboot")
	name = strings.ReplaceAll(name, "/", "-")
	if label != "" {
		name += "-" + label
	}
	logPath := filepath.Join(l.dir, "tcpdump-"+name+".log")
	l.startDaemon(filepath.Base(logPath), "listening on", "tcpdump", "-i", iface, "-n", "-U", "-w", filepath.Join(captureDir, name+".pcap"),
		"udp and (port 67 or port 68 or port 4011 or port 69 or port 546 or port 547)")
}

// requireTool fails, naming the Debian package, when a program is missing.
func requireTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not found: install %s (`make deps`)", name, pkg)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tailExcept returns the last n lines of a file without those that contain
// any of skip, for failure messages.
func tailExcept(path string, n int, skip ...string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var lines []string
next:
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		for _, s := range skip {
			if strings.Contains(line, s) {
				continue next
			}
		}
		lines = append(lines, line)
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
