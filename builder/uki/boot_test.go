package uki

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Inputs of the boot test, from scripts/fetch-tiny-inputs.sh, and the
// firmware from Debian's ovmf package.
const (
	tinyKernel  = "../../.cache/tiny/vmlinuz"
	tinyBusybox = "../../.cache/tiny/rootfs/bin/busybox"
	ovmfCode    = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars    = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

const (
	bootMarker  = "KILN-UKI-BOOTED"
	bootCmdline = "console=ttyS0 panic=-1 kiln.test=cmdline-from-uki"
	// bootInit is /init: the marker, then /proc/cmdline between brackets,
	// then power off (QEMU exits).
	bootInit = "#!/bin/sh\n" +
		"echo " + bootMarker + "\n" +
		"/bin/busybox mount -t proc proc /proc\n" +
		"echo \"KILN-PROC-CMDLINE=[$(/bin/busybox cat /proc/cmdline)]\"\n" +
		"/bin/busybox poweroff -f\n"
)

// TestBootOVMF boots a UKI of the tiny kernel and a busybox initrd as
// \EFI\BOOT\BOOTX64.EFI of a FAT drive in QEMU with OVMF (no network, no
// Secure Boot, no iPXE) and expects /init to run and to see the UKI's
// .cmdline as /proc/cmdline.
func TestBootOVMF(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM; skipped in -short mode")
	}
	for _, p := range []string{tinyKernel, tinyBusybox} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("no tiny inputs (run scripts/fetch-tiny-inputs.sh): %v", err)
		}
	}
	qemu := need(t, "qemu-system-x86_64")
	need(t, DefaultStub)
	need(t, ovmfCode)
	need(t, ovmfVars)

	dir := t.TempDir()
	initrd := writeFile(t, dir, "initrd.cpio", bootInitrd(t))
	esp := filepath.Join(dir, "esp")
	if err := os.MkdirAll(filepath.Join(esp, "EFI", "BOOT"), 0o755); err != nil {
		t.Fatal(err)
	}
	uki := filepath.Join(esp, "EFI", "BOOT", "BOOTX64.EFI")
	start := time.Now()
	err := Write(context.Background(), uki, Spec{
		Kernel: tinyKernel, Initrd: initrd, Cmdline: bootCmdline,
		OSRelease: []byte("NAME=kiln\nID=kiln\nVERSION_ID=boot-test\n"), Log: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Write took %v", time.Since(start))
	vars := writeFile(t, dir, "OVMF_VARS.fd", mustRead(t, ovmfVars))
	log := filepath.Join(dir, "serial.log")

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu,
		"-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1",
		"-nodefaults", "-display", "none", "-vga", "none", "-no-reboot", "-nic", "none",
		"-serial", "file:"+log,
		"-global", "driver=cfi.pflash01,property=secure,value=off",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
		"-drive", "if=pflash,format=raw,unit=1,file="+vars,
		"-drive", "file=fat:rw:"+esp+",format=raw")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.WaitDelay = 5 * time.Second
	start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// CommandContext kills QEMU, by its PID, when ctx ends.
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	seen := map[string]time.Duration{}
	milestones := []string{"EFI stub: ", "Linux version ", "Run /init", bootMarker, "KILN-PROC-CMDLINE=["}
	var out []byte
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	var werr error
wait:
	for {
		select {
		case werr = <-done:
			break wait
		case <-poll.C:
		}
		out, _ = os.ReadFile(log)
		for _, m := range milestones {
			if _, ok := seen[m]; !ok && bytes.Contains(out, []byte(m)) {
				seen[m] = time.Since(start)
			}
		}
	}
	total := time.Since(start)
	out, _ = os.ReadFile(log)
	for _, m := range milestones {
		t.Logf("%-22q seen after %v", m, seen[m].Round(100*time.Millisecond))
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "EFI stub: ") || strings.Contains(line, "Kernel command line: ") {
			t.Logf("console: %s", strings.TrimSpace(line))
		}
	}
	t.Logf("qemu ran %v (%v, ctx %v); stderr %q; console tail:\n%s", total.Round(100*time.Millisecond), werr, ctx.Err(), stderr.String(), tail(string(out), 25))

	if !bytes.Contains(out, []byte(bootMarker+"\n")) && !bytes.Contains(out, []byte(bootMarker+"\r\n")) {
		t.Errorf("console has no %q: /init did not run", bootMarker)
	}
	m := regexp.MustCompile(`KILN-PROC-CMDLINE=\[([^\]\r\n]*)\]`).FindSubmatch(out)
	switch {
	case m == nil:
		t.Errorf("console has no /proc/cmdline line")
	case !strings.Contains(string(m[1]), bootCmdline):
		t.Errorf("/proc/cmdline = %q, want it to contain the UKI's %q", m[1], bootCmdline)
	}
	if ctx.Err() != nil {
		t.Errorf("QEMU did not power off within the timeout")
	}
}

// bootInitrd returns a newc cpio archive with /init (bootInit), a static
// busybox as /bin/busybox and /bin/sh, /proc and /dev/console.
func bootInitrd(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	ino := 0
	add := func(name string, mode uint32, rdev [2]int, data []byte) {
		ino++
		fmt.Fprintf(&b, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name)+1, 0)
		b.WriteString(name + "\x00")
		b.Write(make([]byte, (4-b.Len()%4)%4))
		b.Write(data)
		b.Write(make([]byte, (4-b.Len()%4)%4))
	}
	none := [2]int{}
	add("bin", 0o040755, none, nil)
	add("bin/busybox", 0o100755, none, mustRead(t, tinyBusybox))
	add("bin/sh", 0o120777, none, []byte("busybox"))
	add("dev", 0o040755, none, nil)
	add("dev/console", 0o020600, [2]int{5, 1}, nil)
	add("proc", 0o040755, none, nil)
	add("init", 0o100755, none, []byte(bootInit))
	add("TRAILER!!!", 0, none, nil)
	return b.Bytes()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
