package iso

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// mtype reads the file p of the FAT image img with mtools.
func mtype(t *testing.T, img, p string) []byte {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "file")
	cmd := exec.Command(testenv.NeedTool(t, "mcopy"), "-n", "-i", img, "::"+p, dst)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mcopy %s: %v\n%s", p, err, out)
	}
	return mustRead(t, dst)
}

// fsck runs `fsck.vfat -n` on img and fails the test on any complaint.
func fsck(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command(testenv.NeedTool(t, "fsck.vfat"), "-n", "-v", img).CombinedOutput()
	if err != nil {
		t.Errorf("fsck.vfat -n %s: %v\n%s", img, err, out)
	}
	return string(out)
}

// checkEFIImage checks the FAT image img of spec s with fsck.vfat and
// mtools.
func checkEFIImage(t *testing.T, img string, s efiSpec) {
	t.Helper()
	fsck(t, img)
	for _, c := range []struct {
		path string
		want []byte
	}{
		{"/EFI/BOOT/BOOTX64.EFI", mustRead(t, s.bootloader)},
		{"/loader/loader.conf", s.loaderConf},
		{"/loader/entries/kiln.conf", s.entry},
		{"/kiln/vmlinuz", mustRead(t, s.kernel)},
		{"/kiln/initrd", mustRead(t, s.initrd)},
	} {
		if got := mtype(t, img, c.path); !bytes.Equal(got, c.want) {
			t.Errorf("%s: %d bytes differ from the %d expected", c.path, len(got), len(c.want))
		}
	}
}

// TestEFIImage checks the FAT image inside the ISO.
func TestEFIImage(t *testing.T) {
	needLoaders(t)
	s := fakeSpec(t)
	iso := write(t, s)
	img := filepath.Join(t.TempDir(), "efi.img")
	if err := os.WriteFile(img, extract(t, iso, "/efi/efiboot.img"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkEFIImage(t, img, efiSpec{
		kernel: s.Kernel, initrd: s.Initrd, bootloader: DefaultBootloader,
		loaderConf: []byte("default kiln.conf\ntimeout 0\n"),
		entry: []byte("title TINY_IMAGE_V1\nlinux /kiln/vmlinuz\ninitrd /kiln/initrd\n" +
			"options console=ttyS0 root=live:LABEL=x quiet\n"),
	})
	out := fsck(t, img)
	if !strings.Contains(out, "2 FATs, 16 bit entries") {
		t.Errorf("efi image is not FAT16:\n%s", out)
	}
	mdir := exec.Command(testenv.NeedTool(t, "mdir"), "-i", img, "-/", "::")
	mdir.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	listing, err := mdir.CombinedOutput()
	if err != nil {
		t.Fatalf("mdir: %v\n%s", err, listing)
	}
	// Every entry carries the fixed time, and the volume the seed's id.
	if strings.Count(string(listing), "1980-01-01   0:00") < 14 {
		t.Errorf("mdir shows times other than 1980-01-01 0:00:\n%s", listing)
	}
	if !strings.Contains(string(listing), "Volume Serial Number is ") {
		t.Errorf("mdir shows no serial:\n%s", listing)
	}
}

// TestEFIImageFAT32 forces FAT32, used above 1 GiB, on a small image.
func TestEFIImageFAT32(t *testing.T) {
	needLoaders(t)
	dir := t.TempDir()
	s := efiSpec{
		kernel:     randomFile(t, dir, "k", 2*mib+1),
		initrd:     randomFile(t, dir, "i", 5*mib+3),
		bootloader: DefaultBootloader,
		loaderConf: loaderConf(),
		entry:      loaderEntry("T", "quiet", true),
		label:      "FAT32TEST",
		volumeID:   []byte{1, 2, 3, 4},
		fat32:      true,
	}
	var sums []string
	for i := range 2 {
		img := filepath.Join(t.TempDir(), "efi.img")
		info, err := writeEFIImage(context.Background(), img, s)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(fatInfo{fsType: "fat32", size: minFAT32}, info, cmp.AllowUnexported(fatInfo{})); diff != "" {
			t.Errorf("writeEFIImage (-want +got):\n%s", diff)
		}
		checkEFIImage(t, img, s)
		out := fsck(t, img)
		if !strings.Contains(out, "32 bit entries") {
			t.Errorf("efi image is not FAT32:\n%s", out)
		}
		sums = append(sums, sha(t, img))
		if i == 0 {
			b := mustRead(t, img)
			if got := b[67:71]; !bytes.Equal(got, s.volumeID) {
				t.Errorf("volume id %x, want %x", got, s.volumeID)
			}
			if got := b[6*512+67 : 6*512+71]; !bytes.Equal(got, s.volumeID) {
				t.Errorf("backup boot sector volume id %x, want %x", got, s.volumeID)
			}
			sleep()
		}
	}
	if sums[0] != sums[1] {
		t.Errorf("two FAT32 images differ")
	}
}

func TestFATSize(t *testing.T) {
	for _, tc := range []struct {
		sizes []int64
		want  int64
	}{
		{[]int64{100}, minFAT},
		{[]int64{14 * mib, 140000, 30, 80}, 16 * mib},
		{[]int64{900 * mib}, 906 * mib},
	} {
		var files []fatFile
		for _, n := range tc.sizes {
			files = append(files, fatFile{size: n})
		}
		if got := fatSize(files); got != tc.want {
			t.Errorf("fatSize(%v) = %d MiB, want %d MiB", tc.sizes, got/mib, tc.want/mib)
		}
	}
}

// smallFAT is the first 256 KiB of a FAT16 image of small files: boot
// sector, FATs, root directory and every allocated cluster.
func smallFAT(t testing.TB) []byte {
	dir := t.TempDir()
	k := filepath.Join(dir, "k")
	if err := os.WriteFile(k, bytes.Repeat([]byte("k"), 5000), 0o600); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "efi.img")
	_, err := writeEFIImage(context.Background(), img, efiSpec{
		kernel: k, bootloader: k, loaderConf: loaderConf(), entry: loaderEntry("T", "", false),
		label: "SMALL", volumeID: []byte{1, 2, 3, 4},
	})
	if err != nil {
		t.Fatal(err)
	}
	return mustRead(t, img)[:256*kib]
}

// FuzzNormalizeFAT feeds mutated images to normalizeFAT: it must not
// panic, and what it accepts it leaves unchanged the second time.
func FuzzNormalizeFAT(f *testing.F) {
	f.Add(smallFAT(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		id := []byte{9, 8, 7, 6}
		if normalizeFAT(&memFile{b}, id) != nil {
			return
		}
		again := bytes.Clone(b)
		if err := normalizeFAT(&memFile{again}, id); err != nil {
			t.Fatalf("second normalizeFAT: %v", err)
		}
		if !bytes.Equal(b, again) {
			t.Fatal("normalizeFAT is not idempotent")
		}
	})
}
