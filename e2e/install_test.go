//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// installTarget is the figure set for power-on to a machine installed and
// ready from its disk, under TCG. It is logged, not asserted: a timed
// assertion would make the suite flaky on a busy CI machine.
const installTarget = 3 * time.Minute

// TestInstallToDisk installs an image to a VM's NVMe disk and follows a
// machine through its generations, as an operator would:
//
//  1. generation 1, image A, mode install: power on → PXE → installer
//     (kiln is killed with SIGKILL and restarted once the installer
//     reported progress: the state survives and the installer resumes its
//     download with a Range request) → reboot →
//     iPXE hands back to the firmware → the disk boots → ready, from disk;
//  2. replace with image B: generation 2 is pending while the machine
//     still runs 1; power-cycle → installed again → ready with image B;
//  3. rollback: generation 3 is image A again; power-cycle → ready with A.
func TestInstallToDisk(t *testing.T) {
	requireLab(t)
	t.Parallel()
	l := newLab(t)
	l.startKiln()
	imageA := l.buildTinyDisk(t, "a")
	imageB := l.buildTinyDisk(t, "b")

	const mac = "52:54:00:77:00:20"
	const hostname = "e2e-install"
	if _, err := l.kilnCLI("machines", "add", "--server", serverURL, "--mac", mac,
		"--hostname", hostname, "--image", imageA, "--mode", "install"); err != nil {
		t.Fatal(err)
	}

	disk := filepath.Join(l.dir, "disk.raw")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil { // sparse, like a blank disk
		t.Fatal(err)
	}
	f.Close()
	vars := filepath.Join(l.dir, "OVMF_VARS.fd")
	copyFile(t, ovmfVars, vars) // the machine's NVRAM, kept across power cycles

	// 1. Install image A, with kiln killed and restarted mid-stream.
	start := time.Now()
	vm := l.powerOn(t, mac, disk, vars, "serial-1.log")
	if !waitFile(vm.serial, "kiln-installer: progress", 3*time.Minute) {
		t.Fatalf("the installer never started writing\n--- kiln log ---\n%s\n--- serial ---\n%s",
			tail(filepath.Join(l.dir, "kiln.log"), 40, "http request"), tail(vm.serial, 40, ""))
	}
	l.killKiln(t)
	l.restartKiln(t)
	if m := l.mustMachine(t, mac); m.State != "installing" || m.InstalledGeneration != 0 {
		t.Errorf("after kill -9 during the install: state %q, installed generation %d; want installing, 0", m.State, m.InstalledGeneration)
	}
	m := l.waitGeneration(t, vm, mac, 1)
	installed := time.Since(start)
	if b, _ := os.ReadFile(vm.serial); !strings.Contains(string(b), "kiln-installer: retry") {
		t.Errorf("the installer never retried its download across kiln's restart:\n%s", tail(vm.serial, 40, ""))
	}
	l.checkReadyFromDisk(t, vm, m, imageA, 1)
	t.Logf("E2E-TIMING install: power-on to installed and ready from disk %.1fs (target %s), with a kiln restart mid-install", installed.Seconds(), installTarget)

	// 2. Replace with image B: nothing happens to the running machine.
	out, err := l.kilnCLI("machines", "replace", "--server", serverURL, mac, "--hostname", hostname,
		"--image", imageB, "--mode", "install", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var replaced machine
	if err := json.Unmarshal(out, &replaced); err != nil {
		t.Fatal(err)
	}
	if replaced.Generation != 2 || !replaced.ReimagePending || replaced.RunningGeneration != 1 || replaced.State != "ready" {
		t.Errorf("after replace: generation %d pending %v running %d state %q; want 2, true, 1, ready",
			replaced.Generation, replaced.ReimagePending, replaced.RunningGeneration, replaced.State)
	}
	vm.powerOff(t)
	start = time.Now()
	vm = l.powerOn(t, mac, disk, vars, "serial-2.log")
	m = l.waitGeneration(t, vm, mac, 2)
	l.checkReadyFromDisk(t, vm, m, imageB, 2)
	t.Logf("E2E-TIMING reimage: power-on to generation 2 ready from disk %.1fs", time.Since(start).Seconds())

	// 3. Roll back to image A.
	if _, err := l.kilnCLI("machines", "rollback", "--server", serverURL, mac); err != nil {
		t.Fatal(err)
	}
	vm.powerOff(t)
	start = time.Now()
	vm = l.powerOn(t, mac, disk, vars, "serial-3.log")
	m = l.waitGeneration(t, vm, mac, 3)
	l.checkReadyFromDisk(t, vm, m, imageA, 3)
	t.Logf("E2E-TIMING rollback: power-on to generation 3 ready from disk %.1fs", time.Since(start).Seconds())

	var ops []string
	for _, a := range m.Audit {
		ops = append(ops, fmt.Sprintf("%s %d->%d", a.Op, a.From, a.To))
	}
	if got, want := strings.Join(ops, ", "), "create 0->1, replace 1->2, rollback 2->3"; got != want {
		t.Errorf("audit = %q, want %q", got, want)
	}
}

// vm is one power-on of the install test's machine.
type vm struct {
	serial string
	exited <-chan struct{}
	pid    int
}

// powerOn boots the machine: OVMF, NIC first, the NVMe disk second.
// The NIC boots QEMU's iPXE option ROM, with OVMF's own network stack off
// (otherwise its PXE and HTTP Boot entries for the NIC, each timing out,
// come before the disk). Without -no-reboot, the installer's reboot is a
// warm reset, as on a real machine.
func (l *lab) powerOn(t *testing.T, mac, disk, vars, serial string) vm {
	t.Helper()
	serial = filepath.Join(l.dir, serial)
	args := []string{
		"-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1",
		"-nodefaults", "-display", "none", "-vga", "none",
		"-serial", "file:" + serial,
		"-drive", "if=pflash,format=raw,readonly=on,file=" + ovmfCode,
		"-drive", "if=pflash,format=raw,file=" + vars,
		"-global", "driver=cfi.pflash01,property=secure,value=off",
		"-fw_cfg", "name=opt/org.tianocore/IPv4Support,string=n",
		"-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=n",
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + mac + ",bootindex=1",
		"-drive", "file=" + disk + ",if=none,id=d0,format=raw,cache=unsafe",
		"-device", "nvme,drive=d0,serial=kiln0,bootindex=2",
	}
	cmd, exited := l.runQEMUCmd(t, args)
	return vm{serial: serial, exited: exited, pid: cmd.Process.Pid}
}

// powerOff pulls the plug.
func (v vm) powerOff(t *testing.T) {
	t.Helper()
	syscall.Kill(v.pid, syscall.SIGKILL)
	select {
	case <-v.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("QEMU did not exit after SIGKILL")
	}
}

// killKiln kills kiln serve with SIGKILL, as a crash would.
func (l *lab) killKiln(t *testing.T) {
	t.Helper()
	l.kiln.Process.Kill()
	l.kiln.Wait()
	l.kiln = nil
}

// restartKiln starts kiln serve again on the same data directory.
func (l *lab) restartKiln(t *testing.T) {
	t.Helper()
	os.Rename(filepath.Join(l.dir, "kiln.log"), filepath.Join(l.dir, "kiln-before-kill.log"))
	l.startKiln()
}

func (l *lab) mustMachine(t *testing.T, mac string) machine {
	t.Helper()
	m, err := l.getMachine(mac)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// waitGeneration waits until the machine reports ready running generation
// gen, failing fast as waitReady does.
func (l *lab) waitGeneration(t *testing.T, v vm, mac string, gen int) machine {
	t.Helper()
	deadline := time.Now().Add(6 * time.Minute)
	var last machine
	for time.Now().Before(deadline) {
		m, err := l.getMachine(mac)
		if err == nil {
			last = m
			if m.State == "ready" && m.RunningGeneration == gen {
				return m
			}
			if m.State == "failed" {
				break
			}
		}
		if b, err := os.ReadFile(v.serial); err == nil {
			for _, bad := range append(firmwareGaveUp, "kiln-installer: FAILED") {
				if strings.Contains(string(b), bad) {
					t.Fatalf("boot gave up: console says %q (state %q)\n--- kiln log ---\n%s\n--- serial ---\n%s", bad, last.State,
						tail(filepath.Join(l.dir, "kiln.log"), 40, "http request"), tail(v.serial, 40, ""))
				}
			}
		}
		select {
		case <-v.exited:
			t.Fatalf("QEMU exited (state %q)\n--- serial ---\n%s", last.State, tail(v.serial, 40, ""))
		case <-time.After(time.Second):
		}
	}
	t.Fatalf("machine %s: state %q running generation %d (reason %q), want ready with generation %d\n--- kiln log ---\n%s\n--- serial ---\n%s",
		mac, last.State, last.RunningGeneration, last.Reason, gen,
		tail(filepath.Join(l.dir, "kiln.log"), 40, "http request"), tail(v.serial, 60, ""))
	return last
}

// checkReadyFromDisk checks that the machine is ready with image and
// generation gen, installed on its disk and booted from it.
func (l *lab) checkReadyFromDisk(t *testing.T, v vm, m machine, image string, gen int) {
	t.Helper()
	if m.ReportedImage != image || m.Image != image {
		t.Errorf("generation %d: image %s, reported %s; want %s", gen, m.Image, m.ReportedImage, image)
	}
	if m.InstalledGeneration != gen || m.ReimagePending {
		t.Errorf("generation %d: installed generation %d, pending %v", gen, m.InstalledGeneration, m.ReimagePending)
	}
	serial, _ := os.ReadFile(v.serial)
	for _, want := range []string{"kiln-installer: installed", fmt.Sprintf("kiln: booted from disk /dev/nvme0n1, generation %d", gen), "kiln: ready"} {
		if !strings.Contains(string(serial), want) {
			t.Errorf("generation %d: console lacks %q", gen, want)
		}
	}
}

// buildTinyDisk bakes the tiny image with a disk output; variant makes
// images that differ (a file /etc/kiln-variant).
func (l *lab) buildTinyDisk(t *testing.T, variant string) string {
	t.Helper()
	dir := filepath.Join(l.dir, "recipe-"+variant)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	recipes := filepath.Join(repoRoot, "testdata", "recipes")
	variantFile := filepath.Join(dir, "variant")
	if err := os.WriteFile(variantFile, []byte(variant+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	recipe := fmt.Sprintf(`name: tiny-disk-%s
kernel: %s
base: %s
cmdline: console=ttyS0 quiet panic=-1 init=/init
files:
  - path: /init
    mode: "0755"
    source: %s
  - path: /etc/udhcpc.script
    mode: "0755"
    source: %s
  - path: /etc/kiln-variant
    mode: "0644"
    source: %s
outputs: [initramfs, disk]
`, variant, filepath.Join(tinyCache, "vmlinuz"), filepath.Join(tinyCache, "rootfs"),
		filepath.Join(recipes, "tiny", "init.sh"), filepath.Join(recipes, "tiny", "udhcpc.sh"), variantFile)
	path := filepath.Join(dir, "tiny-disk.yaml")
	if err := os.WriteFile(path, []byte(recipe), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := l.kilnBuild(path)
	if err != nil {
		t.Fatal(err)
	}
	var built struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(out, &built); err != nil || !strings.HasPrefix(built.ID, "sha256:") {
		t.Fatalf("kiln build --json = %s (%v)", out, err)
	}
	t.Logf("E2E-TIMING install: build of tiny-disk-%s %.1fs", variant, time.Since(start).Seconds())
	return built.ID
}
