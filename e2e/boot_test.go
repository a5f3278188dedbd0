//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bootTimeout bounds one boot from QEMU start to ready. The LAB.md reference
// paths take 5-21 s under TCG; a loaded CI machine gets a wide margin.
const bootTimeout = 4 * time.Minute

// TestBootToReady bakes the tiny image, registers a VM, boots it through
// each firmware path and checks, through kiln's API, that it reaches ready
// with the right image, and on its console that it took the hostname kiln
// gave it.
func TestBootToReady(t *testing.T) {
	requireLab(t)
	t.Parallel() // the other e2e boots run while the Debian image builds
	for _, tc := range []struct {
		name     string
		mac      string
		firmware firmware
		recipe   string   // under testdata/recipes
		memory   string   // QEMU -m; "" is 512
		events   []string // besides offered, acked, script, identity, ready
	}{
		// First, since its build (mmdebstrap, mksquashfs) is the longest:
		// the others boot meanwhile, two tests at a time.
		// A Debian base from mmdebstrap, booted through the squashfs
		// path: stage-1 fetches, verifies and mounts the root, systemd
		// runs kiln-ready.service.
		{name: "bios-squashfs-debian", mac: "52:54:00:77:00:04", firmware: bios, recipe: "debian.yaml", memory: "1024", events: []string{"kernel", "initrd", "root"}},
		// SeaBIOS with QEMU's iPXE option ROM: the first DHCP already
		// says user-class iPXE, so kiln hands out the script URL.
		{name: "bios-ipxe-rom", mac: "52:54:00:77:00:01", firmware: bios, recipe: "tiny.yaml", events: []string{"kernel", "initrd"}},
		// OVMF without an option ROM (romfile=): the firmware's own PXE
		// fetches snponly.efi over TFTP, which then fetches the script.
		{name: "uefi-pxe-tftp", mac: "52:54:00:77:00:02", firmware: uefiPXE, recipe: "tiny.yaml", events: []string{"kernel", "initrd"}},
		// OVMF's own HTTP Boot loads the image's UKI straight from kiln:
		// no TFTP, no iPXE.
		{name: "uefi-http-uki", mac: "52:54:00:77:00:03", firmware: uefiHTTP, recipe: "tiny-uki.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newLab(t)
			l.startKiln()

			buildStart := time.Now()
			out, err := l.kilnBuild(filepath.Join(repoRoot, "testdata/recipes", tc.recipe))
			if err != nil {
				t.Fatal(err)
			}
			var built struct {
				ID        string `json:"id"`
				Artifacts []struct {
					Name   string `json:"name"`
					Digest string `json:"digest"`
				} `json:"artifacts"`
			}
			if err := json.Unmarshal(out, &built); err != nil || !strings.HasPrefix(built.ID, "sha256:") {
				t.Fatalf("kiln build --json = %s (%v), want an object with id sha256:...", out, err)
			}
			t.Logf("E2E-TIMING %s: build of %s %.1fs", tc.name, tc.recipe, time.Since(buildStart).Seconds())
			blobs := map[string]string{}
			for _, a := range built.Artifacts {
				blobs[a.Name] = filepath.Join(l.dir, "data", "images", "blobs", "sha256", strings.TrimPrefix(a.Digest, "sha256:"))
			}
			if tc.recipe == "debian.yaml" {
				checkDiskISOUKI(t, blobs)
			}
			hostname := "e2e-" + tc.name
			if _, err := l.kilnCLI("machines", "add", "--server", serverURL, "--mac", tc.mac,
				"--hostname", hostname, "--image", built.ID); err != nil {
				t.Fatal(err)
			}

			serial := filepath.Join(l.dir, "serial.log")
			start := time.Now()
			exited := l.startQEMU(t, tc.mac, tc.firmware, tc.memory, serial)
			m, err := l.waitReady(tc.mac, exited, serial, bootTimeout)
			if err != nil {
				t.Fatalf("%v\n--- kiln log (tail) ---\n%s\n--- serial (tail) ---\n%s", err,
					tail(filepath.Join(l.dir, "kiln.log"), 40, "http request"), tail(serial, 40, ""))
			}
			if m.Image != built.ID || m.ReportedImage != built.ID {
				t.Errorf("machine image = %s, reported %s, want both %s", m.Image, m.ReportedImage, built.ID)
			}
			if want := "kiln: hostname is " + hostname; !waitFile(serial, want, 10*time.Second) {
				t.Errorf("serial console never printed %q:\n%s", want, tail(serial, 30, ""))
			}
			l.checkTokenUsed(t, tc.mac)
			seen := map[string]time.Time{}
			for _, ev := range m.Events {
				seen[ev.Kind] = ev.Time
			}
			for _, kind := range append([]string{"offered", "acked", "script", "identity", "ready"}, tc.events...) {
				if _, ok := seen[kind]; !ok {
					t.Errorf("machine events lack %q: %+v", kind, m.Events)
				}
			}
			if m.IP == "" {
				t.Errorf("machine record has no IP from its lease")
			}
			t.Logf("E2E-TIMING %s: QEMU start to ready %.1fs (ready event at +%.1fs)", tc.name,
				time.Since(start).Seconds(), seen["ready"].Sub(start).Seconds())
		})
	}
}

// checkDiskISOUKI checks the Debian image's other outputs with the tools
// that will read them: the disk's GPT with sfdisk, its ESP with fsck.vfat
// and its root with e2fsck; the iso's El Torito entries with xorriso; the
// uki's sections with objdump.
func checkDiskISOUKI(t *testing.T, blobs map[string]string) {
	t.Helper()
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	var table struct {
		PartitionTable struct {
			Label      string `json:"label"`
			SectorSize int64  `json:"sectorsize"`
			Partitions []struct {
				Start int64  `json:"start"`
				Size  int64  `json:"size"`
				Type  string `json:"type"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(run("sfdisk", "--json", blobs["disk"])), &table); err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	pt := table.PartitionTable
	if pt.Label != "gpt" || len(pt.Partitions) != 2 {
		t.Fatalf("disk: partition table %+v, want gpt with an ESP and a root", pt)
	}
	if pt.SectorSize == 0 {
		pt.SectorSize = 512
	}
	for i, check := range [][]string{{"fsck.vfat", "-n"}, {"e2fsck", "-fn"}} {
		p := pt.Partitions[i]
		part := filepath.Join(t.TempDir(), fmt.Sprintf("part%d", i+1))
		run("dd", "if="+blobs["disk"], "of="+part, "bs=1M", "iflag=skip_bytes,count_bytes", "conv=sparse",
			fmt.Sprintf("skip=%d", p.Start*pt.SectorSize), fmt.Sprintf("count=%d", p.Size*pt.SectorSize), "status=none")
		run(check[0], append(check[1:], part)...)
	}
	report := run("xorriso", "-indev", blobs["iso"], "-report_el_torito", "plain")
	if !strings.Contains(report, "BIOS") || !strings.Contains(report, "UEFI") {
		t.Errorf("iso: xorriso -report_el_torito lacks a BIOS or UEFI entry:\n%s", report)
	}
	sections := run("objdump", "-h", blobs["uki"])
	for _, s := range []string{".linux", ".initrd", ".cmdline", ".osrel"} {
		if !strings.Contains(sections, s) {
			t.Errorf("uki: objdump -h lacks %s:\n%s", s, sections)
		}
	}
}

// firmware is how a test VM boots.
type firmware int

const (
	bios     firmware = iota // SeaBIOS and QEMU's iPXE option ROM
	uefiPXE                  // OVMF's own PXE, then TFTP
	uefiHTTP                 // OVMF's own HTTP Boot, PXE switched off
)

// startQEMU boots a VM on the lab's tap device and returns a channel closed
// when QEMU exits. QEMU is killed at cleanup (before the namespace is
// removed: cleanups run in reverse order).
func (l *lab) startQEMU(t *testing.T, mac string, fw firmware, memory, serial string) <-chan struct{} {
	t.Helper()
	if memory == "" {
		memory = "512"
	}
	nic := "virtio-net-pci,netdev=n0,mac=" + mac + ",bootindex=1"
	args := []string{
		"-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", memory, "-smp", "1",
		"-nodefaults", "-display", "none", "-vga", "none", "-no-reboot",
		"-serial", "file:" + serial,
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-boot", "order=n,menu=off",
	}
	if fw != bios {
		vars := filepath.Join(l.dir, "OVMF_VARS.fd")
		copyFile(t, ovmfVars, vars)
		args = append(args,
			"-drive", "if=pflash,format=raw,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,file="+vars,
			"-global", "driver=cfi.pflash01,property=secure,value=off")
		nic += ",romfile="
	}
	if fw == uefiHTTP {
		// LAB.md: with PXE off, OVMF tries HTTP Boot.
		args = append(args,
			"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
			"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n")
	}
	args = append(args, "-device", nic)
	return l.runQEMU(t, args)
}

// runQEMU starts qemu-system-x86_64 with args in the lab's namespace, its
// output in qemu.log; the returned channel closes when it exits. Cleanup
// kills it.
func (l *lab) runQEMU(t *testing.T, args []string) <-chan struct{} {
	t.Helper()
	_, done := l.runQEMUCmd(t, args)
	return done
}

// runQEMUCmd is runQEMU that also returns the QEMU command.
func (l *lab) runQEMUCmd(t *testing.T, args []string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	logf, err := os.Create(filepath.Join(l.dir, "qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := l.inNS(context.Background(), "qemu-system-x86_64", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		logf.Close()
	})
	return cmd, done
}

// firmwareGaveUp are console lines that mean the firmware found nothing to
// boot: waiting longer cannot help.
var firmwareGaveUp = []string{"Shell> ", "No bootable device", "kiln: FAILED"}

// waitReady polls the API until the machine is ready, fails fast when it
// is failed, QEMU exits or the console says the boot gave up, and gives up
// after timeout.
func (l *lab) waitReady(mac string, exited <-chan struct{}, serial string, timeout time.Duration) (machine, error) {
	deadline := time.Now().Add(timeout)
	var last machine
	for time.Now().Before(deadline) {
		m, err := l.getMachine(mac)
		if err == nil {
			last = m
			switch m.State {
			case "ready":
				return m, nil
			case "failed":
				return m, fmt.Errorf("machine %s failed: %s", mac, m.Reason)
			}
		}
		if b, err := os.ReadFile(serial); err == nil {
			for _, bad := range firmwareGaveUp {
				if strings.Contains(string(b), bad) {
					return last, fmt.Errorf("boot gave up: console says %q (state %q)", bad, last.State)
				}
			}
		}
		select {
		case <-exited:
			return last, fmt.Errorf("QEMU exited before ready (state %q)", last.State)
		case <-time.After(500 * time.Millisecond):
		}
	}
	return last, fmt.Errorf("machine %s not ready after %s (state %q)", mac, timeout, last.State)
}

// waitFile waits until the file contains want.
func waitFile(path, want string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(path); err == nil && strings.Contains(string(b), want) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkTokenUsed checks in kiln's log that the machine fetched its identity
// with its boot's token (logged hidden, as "token=-"), and that no request
// was refused for a token.
func (l *lab) checkTokenUsed(t *testing.T, mac string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.dir, "kiln.log"))
	if err != nil {
		t.Fatal(err)
	}
	ok := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, `msg="http request"`) && strings.Contains(line, "path=/identity/"+mac) &&
			strings.Contains(line, "token=-") && strings.Contains(line, "status=200") {
			ok = true
		}
		if strings.Contains(line, "token refused") || strings.Contains(line, "cannot carry the boot's token") {
			t.Errorf("kiln log: %s", line)
		}
	}
	if !ok {
		t.Errorf("kiln's log shows no identity request of %s with a token", mac)
	}
}
