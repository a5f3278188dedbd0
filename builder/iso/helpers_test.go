package iso

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// needLoaders skips the test when the default boot loader files are
// missing (Debian packages isolinux, syslinux-common, systemd-boot-efi).
func needLoaders(t *testing.T) {
	t.Helper()
	for _, p := range []string{
		filepath.Join(DefaultISOLinux, "isolinux.bin"),
		filepath.Join(DefaultSyslinux, "ldlinux.c32"),
		DefaultBootloader,
	} {
		testenv.NeedFile(t, p)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// randomFile writes n random bytes to a new file in dir.
func randomFile(t testing.TB, dir, name string, n int) string {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeSpec is a Spec with a random kernel and initrd of odd sizes.
func fakeSpec(t *testing.T) Spec {
	dir := t.TempDir()
	return Spec{
		Kernel:  randomFile(t, dir, "bzImage", 3*mib+123),
		Initrd:  randomFile(t, dir, "initrd.img", 700*kib+5),
		Cmdline: "console=ttyS0 root=live:LABEL=x quiet",
		Label:   "tiny-image.v1",
		Seed:    []byte("sha256:0123"),
		Log:     testLogger(t),
	}
}

// write runs Write into a new file in a temporary directory.
func write(t *testing.T, s Spec) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "image.iso")
	if err := Write(context.Background(), out, s); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if entries, err := os.ReadDir(filepath.Dir(out)); err != nil || len(entries) != 1 {
		t.Errorf("Write left %v (%v) beside the image", entries, err)
	}
	if fi, err := os.Stat(out); err != nil {
		t.Error(err)
	} else if fi.Mode() != 0o644 {
		t.Errorf("image mode %v, want 0644", fi.Mode())
	}
	return out
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// extract copies the file p out of the ISO image iso with xorriso.
func extract(t *testing.T, iso, p string) []byte {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(p))
	run(t, testenv.NeedTool(t, "xorriso"), "-osirrox", "on", "-indev", iso, "-extract", p, dst)
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bootImage is an El Torito boot image as xorriso reports it.
type bootImage struct {
	Platform, Bootable, Emulation string
	LoadSize                      string
	Path                          string
	Opts                          string
}

var (
	elToritoImg  = regexp.MustCompile(`^El Torito boot img :\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)`)
	elToritoPath = regexp.MustCompile(`^El Torito img path :\s+(\d+)\s+(\S+)`)
	elToritoOpts = regexp.MustCompile(`^El Torito img opts :\s+(\d+)\s+(.*)$`)
)

// bootImages parses `xorriso -report_el_torito plain`.
func bootImages(t *testing.T, iso string) []bootImage {
	t.Helper()
	out := run(t, testenv.NeedTool(t, "xorriso"), "-indev", iso, "-report_el_torito", "plain")
	var imgs []bootImage
	idx := func(s string) int {
		var i int
		fmt.Sscan(s, &i)
		if i < 1 || i > len(imgs) {
			t.Fatalf("xorriso reports image %s of %d:\n%s", s, len(imgs), out)
		}
		return i - 1
	}
	for _, l := range strings.Split(out, "\n") {
		if m := elToritoImg.FindStringSubmatch(l); m != nil {
			imgs = append(imgs, bootImage{Platform: m[2], Bootable: m[3], Emulation: m[4], LoadSize: m[7]})
		} else if m := elToritoPath.FindStringSubmatch(l); m != nil {
			imgs[idx(m[1])].Path = m[2]
		} else if m := elToritoOpts.FindStringSubmatch(l); m != nil {
			imgs[idx(m[1])].Opts = strings.TrimSpace(m[2])
		}
	}
	return imgs
}

// isoFiles lists the ISO's files with `xorriso -find / -type f`.
func isoFiles(t *testing.T, iso string) []string {
	t.Helper()
	out := run(t, testenv.NeedTool(t, "xorriso"), "-indev", iso, "-find", "/", "-type", "f")
	var files []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "'/") {
			files = append(files, strings.Trim(l, "'"))
		}
	}
	return files
}

func sha(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
