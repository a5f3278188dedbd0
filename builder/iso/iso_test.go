package iso

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestWrite checks the El Torito catalog, the file tree, the file contents
// and the ISOLINUX configuration with xorriso.
func TestWrite(t *testing.T) {
	needLoaders(t)
	s := fakeSpec(t)
	iso := write(t, s)

	want := []bootImage{
		{Platform: "BIOS", Bootable: "y", Emulation: "none", LoadSize: "4",
			Path: "/isolinux/isolinux.bin", Opts: "boot-info-table isohybrid-suitable"},
		{Platform: "UEFI", Bootable: "y", Emulation: "none", Path: "/efi/efiboot.img"},
	}
	got := bootImages(t, iso)
	if len(got) == 2 {
		// The UEFI entry loads the whole FAT image, in 512-byte sectors.
		fi, err := os.Stat(iso)
		if err != nil {
			t.Fatal(err)
		}
		efi := extract(t, iso, "/efi/efiboot.img")
		want[1].LoadSize = strconv.Itoa(len(efi) / 512)
		if len(efi)%512 != 0 || int64(len(efi)) >= fi.Size() {
			t.Errorf("efi image is %d bytes", len(efi))
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("El Torito images (-want +got):\n%s", diff)
	}

	wantFiles := []string{
		"/efi/efiboot.img",
		"/isolinux/isolinux.bin",
		"/isolinux/isolinux.cfg",
		"/isolinux/ldlinux.c32",
		"/kiln/initrd",
		"/kiln/vmlinuz",
	}
	if diff := cmp.Diff(wantFiles, isoFiles(t, iso)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}

	for _, c := range []struct{ iso, host string }{
		{"/kiln/vmlinuz", s.Kernel},
		{"/kiln/initrd", s.Initrd},
		{"/isolinux/ldlinux.c32", filepath.Join(DefaultSyslinux, "ldlinux.c32")},
	} {
		if !bytes.Equal(extract(t, iso, c.iso), mustRead(t, c.host)) {
			t.Errorf("%s differs from %s", c.iso, c.host)
		}
	}

	// isolinux.bin carries the boot info table (bytes 8-63) and is
	// otherwise the host file.
	host := mustRead(t, filepath.Join(DefaultISOLinux, "isolinux.bin"))
	bin := extract(t, iso, "/isolinux/isolinux.bin")
	if len(bin) != len(host) || !bytes.Equal(bin[:8], host[:8]) || !bytes.Equal(bin[64:], host[64:]) {
		t.Errorf("isolinux.bin differs from the host file outside the boot info table")
	}
	if pvd := binary.LittleEndian.Uint32(bin[8:]); pvd != 16 {
		t.Errorf("boot info table: PVD at block %d, want 16", pvd)
	}
	if n := binary.LittleEndian.Uint32(bin[16:]); int(n) != len(host) {
		t.Errorf("boot info table: file length %d, want %d", n, len(host))
	}

	wantCfg := "PROMPT 0\nDEFAULT kiln\nLABEL kiln\n  KERNEL /kiln/vmlinuz\n  INITRD /kiln/initrd\n" +
		"  APPEND console=ttyS0 root=live:LABEL=x quiet\n"
	if diff := cmp.Diff(wantCfg, string(extract(t, iso, "/isolinux/isolinux.cfg"))); diff != "" {
		t.Errorf("isolinux.cfg (-want +got):\n%s", diff)
	}

	out := run(t, testenv.NeedTool(t, "xorriso"), "-indev", iso, "-pvd_info")
	for _, want := range []string{
		"Volume Id    : TINY_IMAGE_V1\n",
		"Creation Time: 1980010100000000\n",
		"Modif. Time  : 1980010100000000\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("xorriso -pvd_info has no %q:\n%s", want, out)
		}
	}
}

// TestWriteNoInitrd checks that a spec without initrd leaves it out of
// the image and of both boot configurations.
func TestWriteNoInitrd(t *testing.T) {
	needLoaders(t)
	s := fakeSpec(t)
	s.Initrd = ""
	s.Cmdline = ""
	iso := write(t, s)
	for _, f := range isoFiles(t, iso) {
		if strings.Contains(f, "initrd") {
			t.Errorf("iso has %s", f)
		}
	}
	wantCfg := "PROMPT 0\nDEFAULT kiln\nLABEL kiln\n  KERNEL /kiln/vmlinuz\n"
	if diff := cmp.Diff(wantCfg, string(extract(t, iso, "/isolinux/isolinux.cfg"))); diff != "" {
		t.Errorf("isolinux.cfg (-want +got):\n%s", diff)
	}
	efi := filepath.Join(t.TempDir(), "efi.img")
	if err := os.WriteFile(efi, extract(t, iso, "/efi/efiboot.img"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantEntry := "title TINY_IMAGE_V1\nlinux /kiln/vmlinuz\n"
	if diff := cmp.Diff(wantEntry, string(mtype(t, efi, "/loader/entries/kiln.conf"))); diff != "" {
		t.Errorf("kiln.conf (-want +got):\n%s", diff)
	}
}

// TestReproducible builds the same spec twice, from copies of the inputs
// with other paths and times, through other temporary directories, more
// than a second apart, and expects the same bytes.
func TestReproducible(t *testing.T) {
	needLoaders(t)
	s := fakeSpec(t)
	a := write(t, s)

	time.Sleep(1100 * time.Millisecond)
	dir := t.TempDir()
	s2 := s
	s2.Kernel = filepath.Join(dir, "k")
	s2.Initrd = filepath.Join(dir, "i")
	s2.TempDir = t.TempDir()
	for _, c := range [][2]string{{s2.Kernel, s.Kernel}, {s2.Initrd, s.Initrd}} {
		if err := os.WriteFile(c[0], mustRead(t, c[1]), 0o755); err != nil {
			t.Fatal(err)
		}
		old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
		if err := os.Chtimes(c[0], old, old); err != nil {
			t.Fatal(err)
		}
	}
	b := write(t, s2)
	if ha, hb := sha(t, a), sha(t, b); ha != hb {
		t.Errorf("two builds differ: sha256 %s and %s", ha, hb)
		diffBlocks(t, a, b)
	}
	if entries, err := os.ReadDir(s2.TempDir); err != nil || len(entries) != 0 {
		t.Errorf("TempDir holds %v (%v), want nothing", entries, err)
	}

	// Another seed changes the FAT volume id, and only that.
	s3 := s
	s3.Seed = []byte("another")
	ba, bc := mustRead(t, a), mustRead(t, write(t, s3))
	var diff []int
	for i := range min(len(ba), len(bc)) {
		if ba[i] != bc[i] {
			diff = append(diff, i)
		}
	}
	if len(ba) != len(bc) || len(diff) == 0 || diff[len(diff)-1]-diff[0] >= 4 {
		t.Fatalf("another seed changes %d bytes (sizes %d, %d), want some of one 4-byte volume id",
			len(diff), len(ba), len(bc))
	}
	// The FAT16 boot sector holds the volume id at byte 39.
	if bs := diff[0] - 39; bs%isoBlock != 0 || ba[bs+510] != 0x55 || ba[bs+511] != 0xaa {
		t.Errorf("another seed changes bytes at %d, not a FAT volume id", diff[0])
	}
}

// diffBlocks logs the first 2 KiB blocks where two files differ.
func diffBlocks(t *testing.T, a, b string) {
	ba, bb := mustRead(t, a), mustRead(t, b)
	n := 0
	for off := 0; off < min(len(ba), len(bb)) && n < 10; off += isoBlock {
		end := min(off+isoBlock, len(ba), len(bb))
		if !bytes.Equal(ba[off:end], bb[off:end]) {
			t.Logf("block %d differs", off/isoBlock)
			n++
		}
	}
	if len(ba) != len(bb) {
		t.Logf("sizes %d and %d", len(ba), len(bb))
	}
}

// TestWriteErrors checks that bad specs fail with clear errors and leave
// nothing at out nor in the temporary directory.
func TestWriteErrors(t *testing.T) {
	needLoaders(t)
	good := fakeSpec(t)
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(s *Spec)
		want string
	}{
		{"no kernel", func(s *Spec) { s.Kernel = "" }, "checking spec: no kernel"},
		{"missing kernel", func(s *Spec) { s.Kernel = filepath.Join(dir, "nope") }, "checking kernel: stat " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{"kernel is a directory", func(s *Spec) { s.Kernel = dir }, "checking kernel: " + dir + " is not a regular file"},
		{"empty initrd", func(s *Spec) { s.Initrd = empty }, "checking initrd: " + empty + " is empty"},
		{"no isolinux", func(s *Spec) { s.ISOLinux = dir }, "checking isolinux.bin: stat " + filepath.Join(dir, "isolinux.bin") + ": no such file or directory"},
		{"no ldlinux", func(s *Spec) { s.Syslinux = dir }, "checking ldlinux.c32: stat " + filepath.Join(dir, "ldlinux.c32") + ": no such file or directory"},
		{"no boot loader", func(s *Spec) { s.Bootloader = filepath.Join(dir, "b.efi") }, "checking boot loader: stat " + filepath.Join(dir, "b.efi") + ": no such file or directory"},
		{"newline in cmdline", func(s *Spec) { s.Cmdline = "quiet\nDEFAULT evil" }, `checking cmdline: control character '\n' at byte 5`},
		{"bad temp dir", func(s *Spec) { s.TempDir = filepath.Join(dir, "nope") }, "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.edit(&s)
			outDir := t.TempDir()
			out := filepath.Join(outDir, "image.iso")
			err := Write(context.Background(), out, s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Write() = %v, want an error with %q", err, tc.want)
			}
			if entries, _ := os.ReadDir(outDir); len(entries) != 0 {
				t.Errorf("Write left %v in the output directory", entries)
			}
		})
	}

	t.Run("out exists", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "image.iso")
		if err := os.WriteFile(out, []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := Write(context.Background(), out, good)
		if !errors.Is(err, os.ErrExist) {
			t.Errorf("Write() = %v, want os.ErrExist", err)
		}
		if b := mustRead(t, out); string(b) != "keep" {
			t.Errorf("Write changed the existing file to %d bytes", len(b))
		}
		if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 1 {
			t.Errorf("Write left %v", entries)
		}
	})

	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		outDir := t.TempDir()
		err := Write(ctx, filepath.Join(outDir, "image.iso"), good)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Write() = %v, want context.Canceled", err)
		}
		if entries, _ := os.ReadDir(outDir); len(entries) != 0 {
			t.Errorf("Write left %v", entries)
		}
	})
}

func TestVolumeLabel(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "KILN"},
		{"tiny", "TINY"},
		{"debian-12.cloud", "DEBIAN_12_CLOUD"},
		{"---", "KILN"},
		{"ünïcode", "_N_CODE"},
		{strings.Repeat("a", 40), strings.Repeat("A", 32)},
	} {
		if got := volumeLabel(tc.in); got != tc.want {
			t.Errorf("volumeLabel(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// sleep waits past the next second, so that a time stamp in seconds would
// change.
func sleep() { time.Sleep(1100 * time.Millisecond) }
