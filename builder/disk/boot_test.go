package disk

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/testenv"
)

const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	marker   = "KILN-DISK-BOOT-OK"
)

// bootInit is the /init of the test initrd: it prints the marker and the
// kernel command line, mounts the root partition and shows a file of it,
// and powers off.
const bootInit = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /mnt
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
echo "` + marker + ` cmdline=[$(/bin/busybox cat /proc/cmdline)]"
for i in 1 2 3 4 5; do
	[ -e /dev/nvme0n1p2 ] && break
	/bin/busybox sleep 1
done
/bin/busybox mount -t ext4 -o ro /dev/nvme0n1p2 /mnt
echo "` + marker + ` passwd=[$(/bin/busybox cat /mnt/etc/passwd)]"
/bin/busybox poweroff -f
`

// rootInit is /sbin/init of the root tree when booting without an
// initrd: the kernel found and mounted the root partition by PARTUUID.
const rootInit = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "` + marker + ` cmdline=[$(/bin/busybox cat /proc/cmdline)]"
echo "` + marker + ` mount=[$(/bin/busybox grep ' / ' /proc/mounts)]"
echo "` + marker + ` su=[$(/bin/busybox stat -c '%a %u:%g' /bin/su)] profile=[$(/bin/busybox stat -c '%a %u:%g' /home/user/.profile)] link=[$(/bin/busybox readlink /etc/link)]"
/bin/busybox poweroff -f
`

// newc writes a newc cpio archive of entries: mode (with type bits),
// name and, for files, data; devices get rdev 5:1 (/dev/console).
type cpioEntry struct {
	name string
	mode uint32
	data []byte
}

func newc(entries []cpioEntry) []byte {
	var b bytes.Buffer
	pad := func() {
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	for i, e := range append(entries, cpioEntry{name: "TRAILER!!!"}) {
		var rmaj, rmin int
		if e.mode&0o170000 == 0o020000 {
			rmaj, rmin = 5, 1
		}
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			i+1, e.mode, 0, 0, 1, 0, len(e.data), 0, 0, rmaj, rmin, len(e.name)+1, 0)
		b.WriteString(e.name + "\x00")
		pad()
		b.Write(e.data)
		pad()
	}
	return b.Bytes()
}

// TestBootQEMU boots images in QEMU with OVMF and the disk on NVMe (the
// test kernel has NVMe built in, virtio-blk only as a module):
// systemd-boot must load the entry, with an initrd that prints a marker
// and reads the root partition, and without one, when the kernel mounts
// the root partition by its PARTUUID and runs /sbin/init from it.
func TestBootQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU boot is slow; skipped with -short")
	}
	testenv.NeedTools(t, "mke2fs", "qemu-system-x86_64")
	for _, p := range []string{ovmfCode, ovmfVars, "/bin/busybox"} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal(err)
			}
			t.Skip(err)
		}
	}
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	rootGUID := RootPartitionGUID(testSeed)

	t.Run("initrd", func(t *testing.T) {
		t.Parallel()
		initrd := newc([]cpioEntry{
			{name: "bin", mode: 0o040755},
			{name: "bin/busybox", mode: 0o100755, data: busybox},
			{name: "dev", mode: 0o040755},
			{name: "dev/console", mode: 0o020600},
			{name: "init", mode: 0o100755, data: []byte(bootInit)},
		})
		s := testSpec(t, makeRoot(t, time.Unix(0, 0), false))
		s.Initrd = writeFile(t, "initrd.cpio", initrd)
		s.Cmdline = "console=ttyS0 panic=-1"
		log := boot(t, s)
		for _, want := range []string{
			marker + " cmdline=[initrd=\\kiln\\initrd console=ttyS0 panic=-1 root=PARTUUID=" + rootGUID + " rw]",
			marker + " passwd=[root:x:0:0:root:/root:/bin/sh]",
		} {
			if !strings.Contains(log, want) {
				t.Errorf("serial console has no %q", want)
			}
		}
	})
	t.Run("no initrd", func(t *testing.T) {
		t.Parallel()
		root := makeRoot(t, time.Unix(0, 0), false)
		for _, d := range []string{"dev", "proc", "sbin"} {
			if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := syscall.Mknod(filepath.Join(root, "dev/console"), syscall.S_IFCHR|0o600, 5<<8|1); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "bin/busybox"), busybox, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "sbin/init"), []byte(rootInit), 0o755); err != nil {
			t.Fatal(err)
		}
		s := testSpec(t, root)
		s.Initrd = ""
		s.Cmdline = "console=ttyS0 panic=-1 rootwait"
		log := boot(t, s)
		for _, want := range []string{
			marker + " cmdline=[console=ttyS0 panic=-1 rootwait root=PARTUUID=" + rootGUID + " rw]",
			marker + " mount=[/dev/root / ext4 rw,",
			marker + " su=[4755 0:0] profile=[600 1000:1000] link=[passwd]",
		} {
			if !strings.Contains(log, want) {
				t.Errorf("serial console has no %q", want)
			}
		}
	})
}

// boot writes the image of s, boots it in QEMU with OVMF and returns what
// the serial console printed.
func boot(t *testing.T, s Spec) string {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := Write(context.Background(), img, s); err != nil {
		t.Fatal(err)
	}
	vars := filepath.Join(dir, "vars.fd")
	if b, err := os.ReadFile(ovmfVars); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(vars, b, 0o644); err != nil {
		t.Fatal(err)
	}
	serial := filepath.Join(dir, "serial.log")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1",
		"-nodefaults", "-display", "none", "-vga", "none", "-no-reboot", "-nic", "none",
		"-serial", "file:"+serial,
		"-global", "driver=cfi.pflash01,property=secure,value=off",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
		"-drive", "if=pflash,format=raw,unit=1,file="+vars,
		"-drive", "if=none,id=disk,format=raw,file="+img,
		"-device", "nvme,drive=disk,serial=kiln")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	log, rerr := os.ReadFile(serial)
	if rerr != nil {
		t.Fatal(rerr)
	}
	t.Logf("qemu ran %v (%v) %s; serial tail:\n%s", time.Since(start), err, out.String(), tail(string(log), 12))
	return string(log)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
