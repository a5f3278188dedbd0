// Package iso writes the iso output of kiln images: an ISO 9660 image with
// Rock Ridge names and two El Torito boot entries, for virtual media such as
// a BMC's virtual CD.
//
// The image holds:
//
//	/isolinux/isolinux.bin  BIOS boot image (no emulation, boot info table)
//	/isolinux/ldlinux.c32   ISOLINUX core module
//	/isolinux/isolinux.cfg  boots /kiln/vmlinuz with /kiln/initrd
//	/isolinux/boot.cat      El Torito boot catalog
//	/kiln/vmlinuz, /kiln/initrd
//	/efi/efiboot.img        FAT image of the UEFI boot entry (platform 0xEF)
//
// The FAT image holds systemd-boot as /EFI/BOOT/BOOTX64.EFI, its
// /loader/loader.conf and /loader/entries/kiln.conf, and its own copy of
// /kiln/vmlinuz and /kiln/initrd, since systemd-boot reads only the
// partition it was loaded from.
//
// Images are byte-reproducible: the same Spec gives the same bytes, whatever
// the host files' paths, times and owners, the temporary directories and the
// time of the build. Every time stamp in the ISO and in the FAT image is
// 1980-01-01 00:00:00 UTC, files belong to uid and gid 0, and the FAT volume
// id derives from Spec.Seed. go-diskfs stamps the current time and the
// builder's owner into both file systems, so Write rewrites those fields
// after go-diskfs is done; normalizeISO and normalizeFAT list them exactly.
package iso

// BUG(iso): There is no isohybrid MBR or GPT: the image boots as a CD
// (virtual or real), not when written to a USB stick.

// BUG(iso): Secure Boot is not handled: systemd-boot is not signed by a key
// that firmware trusts by default.

// BUG(iso): The kernel and initrd are stored twice, in the ISO for ISOLINUX
// and in the FAT image for systemd-boot.

// BUG(iso): blkid derives an ISO's UUID from its fixed dates, so every kiln
// ISO has the UUID 1980-01-01-00-00-00-00; find it by label instead.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Default host paths of the boot loaders (Debian's isolinux, syslinux-common
// and systemd-boot-efi packages).
const (
	DefaultISOLinux   = "/usr/lib/ISOLINUX"
	DefaultSyslinux   = "/usr/lib/syslinux/modules/bios"
	DefaultBootloader = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
)

// epoch is the time of every timestamp in the images Write makes, the
// earliest a FAT directory entry can hold.
var epoch = time.Date(1980, time.January, 1, 0, 0, 0, 0, time.UTC)

// Spec describes an ISO image. Zero fields take the documented defaults.
type Spec struct {
	// Kernel is the host path of the kernel, a bzImage with an EFI stub.
	Kernel string
	// Initrd is the host path of the initrd; "" means none.
	Initrd string
	// Cmdline is the kernel command line. It must fit on one line.
	Cmdline string
	// Label is the volume label, e.g. the image name. It is sanitized to
	// ISO 9660 d-characters (A-Z, 0-9, _) and 32 characters; "" means
	// "KILN".
	Label string
	// Seed makes the image's ids: the volume id of the FAT image is the
	// first 4 bytes of its SHA-256. Use stable bytes, such as the image ID.
	Seed []byte
	// ISOLinux is the directory holding isolinux.bin; "" means
	// DefaultISOLinux.
	ISOLinux string
	// Syslinux is the directory holding ldlinux.c32; "" means
	// DefaultSyslinux.
	Syslinux string
	// Bootloader is the path of systemd-bootx64.efi; "" means
	// DefaultBootloader.
	Bootloader string
	// TempDir is where Write stages files, about twice the size of kernel
	// and initrd; "" means the directory of the output file.
	TempDir string
	// Log receives progress lines; nil discards them.
	Log *slog.Logger
}

// inputs are the resolved host paths of a Spec.
type inputs struct {
	kernel, initrd          string
	isolinux, ldlinux, sdbt string
}

// resolve applies defaults and checks that every input is a regular file.
func (s *Spec) resolve() (inputs, error) {
	in := inputs{
		kernel:   s.Kernel,
		initrd:   s.Initrd,
		isolinux: filepath.Join(orDefault(s.ISOLinux, DefaultISOLinux), "isolinux.bin"),
		ldlinux:  filepath.Join(orDefault(s.Syslinux, DefaultSyslinux), "ldlinux.c32"),
		sdbt:     orDefault(s.Bootloader, DefaultBootloader),
	}
	if in.kernel == "" {
		return inputs{}, errors.New("checking spec: no kernel")
	}
	if err := checkCmdline(s.Cmdline); err != nil {
		return inputs{}, err
	}
	for _, f := range []struct{ what, path string }{
		{"kernel", in.kernel}, {"initrd", in.initrd}, {"isolinux.bin", in.isolinux},
		{"ldlinux.c32", in.ldlinux}, {"boot loader", in.sdbt},
	} {
		if f.path == "" {
			continue
		}
		fi, err := os.Stat(f.path)
		if err != nil {
			return inputs{}, fmt.Errorf("checking %s: %w", f.what, err)
		}
		if !fi.Mode().IsRegular() {
			return inputs{}, fmt.Errorf("checking %s: %s is not a regular file", f.what, f.path)
		}
		if fi.Size() == 0 {
			return inputs{}, fmt.Errorf("checking %s: %s is empty", f.what, f.path)
		}
	}
	return in, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Write makes the ISO image of s as the new file out. out must not exist;
// on error nothing is left at out, nor in the temporary directories.
func Write(ctx context.Context, out string, s Spec) error {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	in, err := s.resolve()
	if err != nil {
		return err
	}
	if _, err := os.Lstat(out); err == nil {
		return fmt.Errorf("writing iso %s: %w", out, os.ErrExist)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("writing iso %s: %w", out, err)
	}
	work, err := os.MkdirTemp(orDefault(s.TempDir, filepath.Dir(out)), ".kiln-iso-")
	if err != nil {
		return fmt.Errorf("writing iso %s: %w", out, err)
	}
	defer os.RemoveAll(work)

	label := volumeLabel(s.Label)
	seed := sha256.Sum256(s.Seed)
	efi := filepath.Join(work, "efiboot.img")
	fat, err := writeEFIImage(ctx, efi, efiSpec{
		kernel:     in.kernel,
		initrd:     in.initrd,
		bootloader: in.sdbt,
		loaderConf: loaderConf(),
		entry:      loaderEntry(label, s.Cmdline, in.initrd != ""),
		label:      fatLabel(label),
		volumeID:   seed[:4],
	})
	if err != nil {
		return fmt.Errorf("writing efi image: %w", err)
	}
	log.Debug("efi image written", "fs", fat.fsType, "size", fat.size)

	// The image is written beside out, to be linked or renamed into place.
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return fmt.Errorf("writing iso %s: %w", out, err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	if err := writeISO(ctx, f, filepath.Join(work, "tree"), in, efi, label, s.Cmdline); err != nil {
		return fmt.Errorf("writing iso %s: %w", out, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("writing iso %s: %w", out, err)
	}
	if err := publish(f, out); err != nil {
		return fmt.Errorf("writing iso %s: %w", out, err)
	}
	log.Info("iso written", "path", out, "label", label, "size", fi.Size(), "efi", fat.fsType,
		"duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// publish syncs f and gives it the name out, failing if out exists.
func publish(f *os.File, out string) error {
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	// A hard link creates out only if it does not exist; fall back to a
	// rename on file systems without hard links.
	if err := os.Link(f.Name(), out); err == nil {
		return nil
	} else if errors.Is(err, os.ErrExist) {
		return err
	}
	if _, err := os.Lstat(out); err == nil {
		return os.ErrExist
	}
	return os.Rename(f.Name(), out)
}

// copyFile copies the host file src to dst, a new file.
func copyFile(ctx context.Context, dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	o, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(o, ctxReader{ctx, in}); err != nil {
		o.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return o.Close()
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(b []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(b)
}

// checkCmdline rejects command lines that would break the boot loaders'
// one-line configuration.
func checkCmdline(c string) error {
	if i := strings.IndexFunc(c, func(r rune) bool { return r < ' ' || r == 0x7f }); i >= 0 {
		return fmt.Errorf("checking cmdline: control character %q at byte %d", c[i], i)
	}
	return nil
}
