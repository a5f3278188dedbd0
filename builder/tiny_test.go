package builder

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/images"
)

const tinyRecipe = "../testdata/recipes/tiny.yaml"

// TestTinyImage builds the tiny test image from the cache that
// scripts/fetch-tiny-inputs.sh fills; it skips when the cache is missing.
// With KILN_TEST_QEMU=1 it also boots the image in QEMU without a network
// and expects /init to load the NIC modules and then fail at DHCP.
func TestTinyImage(t *testing.T) {
	if _, err := os.Stat("../.cache/tiny/rootfs/bin/busybox"); err != nil {
		t.Skipf("no tiny inputs (run scripts/fetch-tiny-inputs.sh): %v", err)
	}
	r, err := LoadRecipe(tinyRecipe)
	if err != nil {
		t.Fatal(err)
	}
	st, err := images.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := Build(context.Background(), r, st, Options{Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Build took %v: %+v", time.Since(start), res)

	names := map[string]bool{}
	for _, e := range readCPIO(t, unzstd(t, artifact(t, st, res, ArtifactInitrd))) {
		names[e.Name] = true
	}
	for _, want := range []string{"init", "bin/busybox", "bin/udhcpc", "etc/udhcpc.script", "etc/kiln/image", "lib/modules/virtio_net.ko", "proc", "dev"} {
		if !names[want] {
			t.Errorf("initrd has no %s", want)
		}
	}
	if os.Getenv("KILN_TEST_QEMU") != "1" {
		return
	}
	bootTiny(t, st, res)
}

// bootTiny boots the image directly (-kernel/-initrd) with no NIC.
func bootTiny(t *testing.T, st *images.Store, res Result) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skipf("no qemu-system-x86_64: %v", err)
	}
	blob := func(name string) string {
		return filepath.Join(st.Root(), "blobs", "sha256", artifactDigest(t, res, name).Hex())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "512", "-nodefaults",
		"-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", blob(ArtifactKernel), "-initrd", blob(ArtifactInitrd),
		"-append", "console=ttyS0 panic=-1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("qemu ran %v (%v); console tail:\n%s", time.Since(start), err, tail(out.String(), 15))
	for _, want := range []string{"kiln: init of image tiny, inputs " + string(res.Inputs), "kiln: modules loaded", "kiln: FAILED "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("console has no %q", want)
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
