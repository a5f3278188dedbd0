package installer

import (
	"debug/elf"
	"fmt"
	"io"
	"os"
	"strings"
)

// The newc ("SVR4 portable, no CRC") cpio format the kernel unpacks
// (Documentation/driver-api/early-userspace/buffer-format.rst): a 110-byte
// header, "070701" and 13 fields of 8 hex digits, the NUL-terminated name
// padded to a multiple of 4, the data padded to a multiple of 4; an entry
// named "TRAILER!!!" ends the archive.
const (
	newcMagic   = "070701"
	newcTrailer = "TRAILER!!!"

	modeDir  = 0o040000
	modeFile = 0o100000
	modeChar = 0o020000
)

// newcEntry is one archive member.
type newcEntry struct {
	name         string // no leading slash
	mode         uint32 // type and permission bits
	rmajor, rmin uint32 // device number of a device node
	data         io.Reader
	size         int64
}

// InitPath is where Initramfs puts the installer; the install boot runs it
// with rdinit=/kiln-installer.
const InitPath = "/kiln-installer"

// Initramfs writes to w an uncompressed newc initramfs holding the
// installer: /kiln-installer (the file installerBinary, mode 0755), the
// directories /dev, /proc, /sys, /tmp and /etc, and /dev/console
// (character device 5:1, so the kernel can give the installer a console
// before devtmpfs is mounted). Entries have uid/gid 0 and mtime 0, so equal
// binaries give equal archives.
//
// kiln passes it to the kernel as the first initrd, before the image's own
// (which carries the kernel modules under /lib/modules), and starts it
// with rdinit=/kiln-installer: the kernel unpacks both into one rootfs, and
// the image's /init stays unused. First, because an uncompressed archive
// followed by a compressed one is the layout every kernel unpacks (early
// microcode uses it), while a compressed archive followed by another is
// refused by some ("Initramfs unpacking failed: invalid magic at start of
// compressed archive", Debian 12's kernel with a zstd initrd).
func Initramfs(w io.Writer, installerBinary string) error {
	f, err := os.Open(installerBinary)
	if err != nil {
		return fmt.Errorf("building installer initramfs: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("building installer initramfs: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("building installer initramfs: %s is not a regular file", installerBinary)
	}
	if fi.Size() > 1<<32-1 {
		return fmt.Errorf("building installer initramfs: %s is too large for newc", installerBinary)
	}
	entries := []newcEntry{
		{name: "dev", mode: modeDir | 0o755},
		{name: "dev/console", mode: modeChar | 0o600, rmajor: 5, rmin: 1},
		{name: "etc", mode: modeDir | 0o755},
		{name: "proc", mode: modeDir | 0o555},
		{name: "sys", mode: modeDir | 0o555},
		{name: "tmp", mode: modeDir | 0o1777},
		{name: strings.TrimPrefix(InitPath, "/"), mode: modeFile | 0o755, data: f, size: fi.Size()},
	}
	for i, e := range entries {
		if err := writeNewc(w, uint32(i+1), e); err != nil {
			return fmt.Errorf("building installer initramfs: %s: %w", e.name, err)
		}
	}
	if err := writeNewc(w, 0, newcEntry{name: newcTrailer}); err != nil {
		return fmt.Errorf("building installer initramfs: trailer: %w", err)
	}
	return nil
}

// writeNewc writes one entry with inode ino.
func writeNewc(w io.Writer, ino uint32, e newcEntry) error {
	nlink := uint32(1)
	if e.mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := []byte(newcMagic)
	for _, v := range []uint32{
		ino, e.mode, 0, 0, nlink,
		0,              // mtime
		uint32(e.size), // filesize
		0, 0,           // devmajor, devminor
		e.rmajor, e.rmin, // rdevmajor, rdevminor
		uint32(len(e.name) + 1), // namesize, NUL included
		0,                       // check
	} {
		hdr = fmt.Appendf(hdr, "%08x", v)
	}
	hdr = append(hdr, e.name...)
	hdr = append(hdr, 0)
	hdr = append(hdr, make([]byte, pad4(int64(len(hdr))))...)
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	if e.size == 0 {
		return nil
	}
	n, err := io.Copy(w, io.LimitReader(e.data, e.size))
	if err != nil {
		return err
	}
	if n != e.size {
		return fmt.Errorf("%d bytes, expected %d (file changed?)", n, e.size)
	}
	_, err = w.Write(make([]byte, pad4(e.size)))
	return err
}

// pad4 is how many bytes pad n to a multiple of 4.
func pad4(n int64) int { return int((4 - n%4) % 4) }

// CheckStatic refuses, with the reason, a file that cannot run as the
// first process of an initramfs without libc: anything but an ELF
// executable without a program interpreter. Initramfs itself packs any
// file.
func CheckStatic(path string) error {
	ef, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable: %w", path, err)
	}
	defer ef.Close()
	if ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN {
		return fmt.Errorf("%s is an ELF file of type %s, not an executable", path, ef.Type)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (it has a program interpreter): build it with CGO_ENABLED=0, as make build does", path)
		}
	}
	return nil
}
