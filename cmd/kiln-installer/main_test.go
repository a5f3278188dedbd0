package main

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/installer"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// buildInstaller builds this command as kiln should ship it: static
// (CGO_ENABLED=0) and stripped. No -trimpath here: it would rebuild every
// dependency outside the build cache the test run already filled.
func buildInstaller(t *testing.T) string {
	t.Helper()
	goCmd := testenv.NeedTool(t, "go")
	out := filepath.Join(t.TempDir(), "kiln-installer")
	cmd := exec.Command(goCmd, "build", "-ldflags=-s -w", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// TestStatic builds the installer and checks it is a static ELF (no
// PT_INTERP, no DT_NEEDED): it runs as /init with no libc around.
func TestStatic(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the installer is a Linux /init")
	}
	bin := buildInstaller(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the installer has a PT_INTERP program header: it is dynamically linked")
		}
		if p.Type == elf.PT_DYNAMIC {
			t.Error("the installer has a PT_DYNAMIC program header")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) != 0 {
		t.Errorf("imported libraries %v (%v), want none", libs, err)
	}
	fi, _ := os.Stat(bin)
	t.Logf("kiln-installer: %d bytes", fi.Size())
	// What kiln serve checks before packing it.
	if err := installer.CheckStatic(bin); err != nil {
		t.Errorf("CheckStatic(the installer) = %v", err)
	}
	for _, other := range []string{"/bin/sh", "main_test.go"} {
		if err := installer.CheckStatic(other); err == nil {
			t.Errorf("CheckStatic(%s) accepted it", other)
		}
	}

	// It refuses to run outside PID 1, so a mistaken start on a live
	// system overwrites nothing.
	out, err := exec.Command(bin).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "kiln-installer: refusing to run: not PID 1") {
		t.Errorf("running the installer as a normal process: %v, %s; want exit 2 and a refusal", err, out)
	}

	// And it packs itself into the initramfs as /init, the same archive
	// as installer.Initramfs.
	var buf bytes.Buffer
	if err := installer.Initramfs(&buf, bin); err != nil {
		t.Fatal(err)
	}
	cpio := filepath.Join(t.TempDir(), "installer.cpio")
	if out, err := exec.Command(bin, "initramfs", cpio).CombinedOutput(); err != nil {
		t.Fatalf("kiln-installer initramfs: %v: %s", err, out)
	}
	if b, _ := os.ReadFile(cpio); !bytes.Equal(b, buf.Bytes()) {
		t.Error("kiln-installer initramfs wrote another archive than installer.Initramfs")
	}
	body, _ := os.ReadFile(bin)
	i := bytes.Index(buf.Bytes(), []byte("kiln-installer\x00"))
	if i < 0 || !bytes.Contains(buf.Bytes()[i:], body) || !bytes.HasSuffix(bytes.TrimRight(buf.Bytes(), "\x00"), []byte("TRAILER!!!")) {
		t.Error("the initramfs does not carry the binary as kiln-installer, followed by the trailer")
	}
	t.Logf("initramfs: %d bytes", buf.Len())
}
