package iso

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/testenv"
)

const (
	tinyKernel = "../../.cache/tiny/vmlinuz"
	bootMarker = "KILN-ISO-BOOTED"
	bootLimit  = 120 * time.Second
	ovmfCode   = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars   = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// TestBoot boots the image in QEMU, through SeaBIOS and ISOLINUX and
// through OVMF and systemd-boot, and waits for the initrd's /init to print
// the marker on the serial console. "uefi-large" pads the initrd so that
// the FAT image passes 32 MiB and the El Torito entry's sector count, 16
// bits, is 0: firmware then reads the FAT image's own size.
func TestBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; not in -short")
	}
	needLoaders(t)
	qemu := testenv.NeedTool(t, "qemu-system-x86_64")
	if _, err := os.Stat(tinyKernel); err != nil {
		t.Skipf("no tiny kernel (run scripts/fetch-tiny-inputs.sh): %v", err)
	}
	busybox := "/bin/busybox"
	testenv.NeedFile(t, busybox)

	dir := t.TempDir()
	cpio := bootInitrd(t, busybox)
	small := bootISO(t, dir, "small", cpio)
	// The kernel skips zeros after the archive's trailer.
	large := bootISO(t, dir, "large", append(cpio, make([]byte, 34*mib)...))
	if got := bootImages(t, large); len(got) != 2 || got[1].LoadSize != "0" {
		t.Errorf("large image: El Torito images %+v, want a UEFI one of load size 0", got)
	}

	// ISOLINUX adds BOOT_IMAGE= and initrd=.
	bios := []string{"Command line: BOOT_IMAGE=/kiln/vmlinuz console=ttyS0 panic=-1 initrd=/kiln/initrd"}
	// systemd-boot adds initrd=, with backslashes.
	uefi := []string{
		`BdsDxe: loading Boot0001 "UEFI QEMU DVD-ROM`,
		`Command line: initrd=\kiln\initrd console=ttyS0 panic=-1`,
		"efi: EFI v",
	}
	t.Run("bios", func(t *testing.T) {
		t.Parallel()
		bootQEMU(t, qemu, small, bios, "-machine", "pc")
	})
	for name, iso := range map[string]string{"uefi": small, "uefi-large": large} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bootQEMU(t, qemu, iso, uefi, ovmf(t)...)
		})
	}
}

// bootISO writes the ISO image of the tiny kernel and initrd.
func bootISO(t *testing.T, dir, name string, initrd []byte) string {
	t.Helper()
	p := filepath.Join(dir, name+".cpio")
	if err := os.WriteFile(p, initrd, 0o644); err != nil {
		t.Fatal(err)
	}
	iso := filepath.Join(dir, name+".iso")
	start := time.Now()
	err := Write(context.Background(), iso, Spec{
		Kernel:  tinyKernel,
		Initrd:  p,
		Cmdline: "console=ttyS0 panic=-1",
		Label:   "boot-test",
		Seed:    []byte("boot-test"),
		Log:     testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Write %s took %v", name, time.Since(start))
	return iso
}

// ovmf is the QEMU machine for UEFI: q35 with OVMF and a copy of its
// variable store.
func ovmf(t *testing.T) []string {
	testenv.NeedFile(t, ovmfCode)
	testenv.NeedFile(t, ovmfVars)
	vars := filepath.Join(t.TempDir(), "vars.fd")
	if err := os.WriteFile(vars, mustRead(t, ovmfVars), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"-machine", "q35",
		"-global", "driver=cfi.pflash01,property=secure,value=off",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + ovmfCode,
		"-drive", "if=pflash,format=raw,unit=1,file=" + vars}
}

// bootQEMU boots iso as a CD without a network and waits for QEMU to
// stop, or kills it by its PID on timeout. The serial log must show the
// marker and each of want.
func bootQEMU(t *testing.T, qemu, iso string, want []string, machine ...string) {
	log := filepath.Join(t.TempDir(), "serial.log")
	args := append(slices.Clone(machine),
		"-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1", "-nodefaults",
		"-display", "none", "-vga", "none", "-nic", "none", "-no-reboot",
		"-serial", "file:"+log, "-cdrom", iso, "-boot", "d")
	cmd := exec.Command(qemu, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timer := time.NewTimer(bootLimit)
	defer timer.Stop()
	var err error
	select {
	case err = <-done:
	case <-timer.C:
		cmd.Process.Kill()
		<-done
		err = fmt.Errorf("killed QEMU (pid %d) after %v", cmd.Process.Pid, bootLimit)
	}
	serial, _ := os.ReadFile(log)
	t.Logf("QEMU ran %v (%v)", time.Since(start).Round(time.Millisecond), err)
	for _, w := range append(want, bootMarker) {
		if !strings.Contains(string(serial), w) {
			t.Errorf("no %q on the serial console; QEMU: %v %s\nserial tail:\n%s",
				w, err, stderr.String(), tail(string(serial), 30))
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// bootInitrd is a newc cpio archive: /dev/console, the static busybox
// and an /init that prints the marker and powers off.
func bootInitrd(t *testing.T, busybox string) []byte {
	init := "#!/bin/busybox sh\n" +
		"/bin/busybox echo " + bootMarker + "\n" +
		"/bin/busybox poweroff -f\n"
	var b bytes.Buffer
	ino := 1
	add := func(name string, mode, rdevMajor, rdevMinor int, data []byte) {
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
		ino++
		b.WriteString(name + "\x00")
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
		b.Write(data)
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	add("dev", 0o40755, 0, 0, nil)
	add("dev/console", 0o20600, 5, 1, nil)
	add("bin", 0o40755, 0, 0, nil)
	add("bin/busybox", 0o100755, 0, 0, mustRead(t, busybox))
	add("init", 0o100755, 0, 0, []byte(init))
	add("TRAILER!!!", 0, 0, 0, nil)
	return b.Bytes()
}
