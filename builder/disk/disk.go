// Package disk writes the disk output of kiln images: a raw GPT disk image
// to copy onto a machine's disk, booting with UEFI.
//
// The image has a protective MBR, a GPT and two partitions, each aligned
// to 1 MiB:
//
//  1. "esp", an EFI System Partition (FAT32) holding systemd-boot as
//     /EFI/BOOT/BOOTX64.EFI, /loader/loader.conf, the boot entry
//     /loader/entries/kiln.conf, the kernel /kiln/vmlinuz and the initrd
//     /kiln/initrd;
//  2. "root", a Linux x86-64 root partition (type
//     4f68bce3-e8cd-4db1-96e7-fbcaf984b709) holding an ext4 file system
//     made from the root tree by mke2fs -d.
//
// The boot entry passes the kernel its command line plus
// root=PARTUUID=<root partition GUID> rw.
//
// Images are reproducible: the same Spec gives the same bytes, whatever
// the host paths, the mtimes in the root tree or the time of the build.
// The disk GUID, the partition GUIDs, the ext4 UUID and directory hash
// seed and the FAT volume serial number are derived from Spec.Seed; every
// timestamp on both file systems is 1980-01-01 00:00:00 UTC, the earliest
// FAT can hold. The image is a sparse file.
package disk

// BUG(disk): go-diskfs takes the time of FAT directory entries only from
// the SOURCE_DATE_EPOCH environment variable, so Write sets it for the
// process while it writes the ESP (serialized across calls) and restores
// it afterwards; other goroutines reading the environment meanwhile see it.

// BUG(disk): mke2fs -d copies the root tree's extended attributes as they
// are on the host; a root tree labelled differently gives different bytes.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultBootloader is the systemd-boot binary Write installs when
// Spec.Bootloader is empty.
const DefaultBootloader = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

// Partition names in the GPT.
const (
	ESPName  = "esp"
	RootName = "root"
)

// RootType is the GPT type of the root partition: Linux root (x86-64),
// from the Discoverable Partitions Specification.
const RootType = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"

const (
	mib = 1 << 20

	// epoch is the time of every file and file system in the image:
	// 1980-01-01T00:00:00Z, the earliest time FAT can record.
	epoch = 315532800

	// minESPSize is the smallest ESP Write accepts: FAT32 needs 65525
	// clusters, 32 MiB of 512-byte clusters plus its FATs.
	minESPSize = 36 * mib
	// defaultMinESPSize is the smallest ESP Write picks by itself.
	defaultMinESPSize = 64 * mib
)

// Spec describes a disk image to write.
type Spec struct {
	// Kernel is the host path of the kernel, a bzImage with an EFI stub.
	Kernel string
	// Initrd is the host path of the initrd; empty means no initrd.
	Initrd string
	// Cmdline is the kernel command line without root=: Write appends
	// root=PARTUUID=<root partition GUID> rw. It must not hold a newline
	// or a root= parameter.
	Cmdline string
	// Root is the host directory holding the root tree, ownership and
	// modes as they must be in the image. Its own mode and owner are not
	// used: the image's / is 0755, owned by 0:0.
	Root string
	// Seed, for example the digest of the image's inputs, determines
	// every GUID, UUID, serial number and hash seed in the image. It must
	// not be empty.
	Seed []byte
	// Bootloader is the host path of systemd-bootx64.efi; empty means
	// DefaultBootloader.
	Bootloader string
	// ESPSize is the size of the EFI System Partition in bytes, at least
	// 36 MiB. Write rounds it up to a whole MiB, and for a few sizes a MiB
	// or two more (see fat32Size). Zero picks one and a half times the
	// boot files plus 16 MiB, at least 64 MiB.
	ESPSize int64
	// RootSlack is the free space in bytes the root file system gets
	// beyond its content; zero means 10% of the content plus 64 MiB.
	RootSlack int64
	// MaxSize, if positive, limits the size of the image in bytes: Write
	// fails, before writing anything, when the image would be larger.
	MaxSize int64
	// Log receives progress lines; nil discards them.
	Log *slog.Logger
}

// layout describes where the partitions of an image lie, in bytes from
// the start of the image, and what identifies them.
type layout struct {
	size      int64 // of the whole image
	espStart  int64
	espSize   int64
	rootStart int64
	root      rootPlan
	// diskGUID is the GPT's disk GUID, espGUID and rootGUID the
	// partitions' unique GUIDs, all in lower case.
	diskGUID, espGUID, rootGUID string
}

// Write writes the disk image of s to out, a new file: it fails if out
// exists. On error nothing is left at out.
func Write(ctx context.Context, out string, s Spec) error {
	start := time.Now()
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("disk", out)
	if err := s.validate(); err != nil {
		return err
	}
	if _, err := os.Lstat(out); err == nil {
		return fmt.Errorf("writing disk image %s: file exists", out)
	}
	boot, err := s.bootFiles()
	if err != nil {
		return err
	}
	usage, err := scanRoot(ctx, s.Root, s.MaxSize)
	if err != nil {
		return err
	}
	l, err := s.layout(boot, usage)
	if err != nil {
		return err
	}
	log.Info("writing disk image", "size", l.size, "esp", l.espSize, "root", l.root.size,
		"files", usage.inodes, "content", usage.bytes)

	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing disk image %s: %w", out, err)
	}
	tmp := f.Name()
	err = writeImage(ctx, f, l, s, boot, log)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	// Link, unlike Rename, does not replace a file that appeared at out
	// meanwhile.
	if err == nil {
		err = os.Link(tmp, out)
	}
	os.Remove(tmp)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("writing disk image %s: %w", out, err)
	}
	log.Info("disk image written", "size", l.size, "root_guid", l.rootGUID, "took", time.Since(start))
	return nil
}

// writeImage writes the image laid out by l into f, a new empty file.
func writeImage(ctx context.Context, f *os.File, l layout, s Spec, boot []bootFile, log *slog.Logger) error {
	if err := f.Truncate(l.size); err != nil {
		return err
	}
	if err := makeRootFS(ctx, f, l, s.Root, s.Seed, log); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := writeGPTAndESP(f, l, s, boot, log); err != nil {
		return err
	}
	return f.Sync()
}

// RootPartitionGUID returns the unique GUID, in lower case, that Write
// gives the root partition of an image made with seed: the PARTUUID in
// its kernel command line.
func RootPartitionGUID(seed []byte) string { return deriveGUID(seed, "root") }

// validate checks s, and that its root is a directory, which it then
// names by its real path.
func (s *Spec) validate() error {
	switch {
	case s.Kernel == "":
		return errors.New("disk spec has no kernel")
	case s.Root == "":
		return errors.New("disk spec has no root directory")
	case len(s.Seed) == 0:
		return errors.New("disk spec has no seed")
	case strings.ContainsAny(s.Cmdline, "\n\r"):
		return fmt.Errorf("kernel command line %q holds a line break", s.Cmdline)
	case s.ESPSize < 0 || s.RootSlack < 0 || s.MaxSize < 0:
		return fmt.Errorf("disk spec has a negative size (esp %d, root slack %d, max %d)", s.ESPSize, s.RootSlack, s.MaxSize)
	case s.ESPSize > 0 && s.ESPSize < minESPSize:
		return fmt.Errorf("ESP size %d is below the FAT32 minimum of %d", s.ESPSize, minESPSize)
	}
	for _, p := range strings.Fields(s.Cmdline) {
		if strings.HasPrefix(p, "root=") {
			return fmt.Errorf("kernel command line %q already has %s: the disk sets root= itself", s.Cmdline, p)
		}
	}
	fi, err := os.Stat(s.Root)
	if err != nil {
		return fmt.Errorf("reading root directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("root %s is not a directory", s.Root)
	}
	// The walk that sizes the root does not follow a symlink at the top.
	s.Root, err = filepath.EvalSymlinks(s.Root)
	if err != nil {
		return fmt.Errorf("reading root directory: %w", err)
	}
	return nil
}

// bootFile is a host file to copy into the ESP.
type bootFile struct {
	path string // in the ESP
	src  string // host path
	size int64
}

// bootFiles lists the host files the ESP holds, checking they are
// regular files that FAT can hold.
func (s *Spec) bootFiles() ([]bootFile, error) {
	bl := s.Bootloader
	if bl == "" {
		bl = DefaultBootloader
	}
	files := []bootFile{
		{path: "/EFI/BOOT/BOOTX64.EFI", src: bl},
		{path: "/kiln/vmlinuz", src: s.Kernel},
	}
	if s.Initrd != "" {
		files = append(files, bootFile{path: "/kiln/initrd", src: s.Initrd})
	}
	for i, f := range files {
		fi, err := os.Stat(f.src)
		if err != nil {
			return nil, fmt.Errorf("reading boot file for %s: %w", f.path, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("boot file %s for %s is not a regular file", f.src, f.path)
		}
		if fi.Size() >= 1<<32 {
			return nil, fmt.Errorf("boot file %s for %s has %d bytes, more than FAT holds", f.src, f.path, fi.Size())
		}
		files[i].size = fi.Size()
	}
	return files, nil
}

// layout places the partitions: 1 MiB for the MBR and primary GPT, the
// ESP, the root partition, and 1 MiB for the backup GPT.
func (s *Spec) layout(boot []bootFile, usage rootUsage) (layout, error) {
	var need int64 = 64 << 10 // directories and loader files
	for _, f := range boot {
		need += f.size + 4096
	}
	esp := s.ESPSize
	if esp == 0 {
		esp = max(defaultMinESPSize, need+need/2+16*mib)
	}
	esp = fat32Size(esp)
	// FAT32 spends 8 bytes of FAT per 512-byte sector on two FATs.
	if need+esp/64 > esp {
		return layout{}, fmt.Errorf("ESP size %d is too small for %d bytes of boot files", esp, need)
	}
	root := planRoot(usage, s.RootSlack)
	l := layout{
		espStart:  mib,
		espSize:   esp,
		rootStart: mib + esp,
		root:      root,
		size:      mib + esp + root.size + mib,
		diskGUID:  deriveGUID(s.Seed, "disk"),
		espGUID:   deriveGUID(s.Seed, "esp"),
		rootGUID:  RootPartitionGUID(s.Seed),
	}
	if s.MaxSize > 0 && l.size > s.MaxSize {
		return layout{}, fmt.Errorf("disk image needs %d bytes (esp %d, root %d), more than the limit of %d", l.size, esp, root.size, s.MaxSize)
	}
	return l, nil
}

// alignMiB rounds n up to a multiple of 1 MiB.
func alignMiB(n int64) int64 { return (n + mib - 1) / mib * mib }
