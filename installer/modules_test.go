package installer

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// fakeKernel loads modules whose image is "module NAME needs A B ...":
// like the kernel, it refuses a module whose dependencies are not loaded
// (ENOENT, "unknown symbol") and one already loaded (EEXIST).
type fakeKernel struct {
	loaded []string
	calls  int
}

func (k *fakeKernel) load(name string, image []byte) error {
	k.calls++
	f := strings.Fields(string(image))
	if len(f) < 2 || f[0] != "module" || f[1] != name {
		return fmt.Errorf("bad image %q: %w", image, syscall.ENOEXEC)
	}
	for _, dep := range f[2:] {
		if dep == "needs" {
			continue
		}
		found := false
		for _, l := range k.loaded {
			found = found || l == dep
		}
		if !found {
			return syscall.ENOENT
		}
	}
	for _, l := range k.loaded {
		if l == name {
			return syscall.EEXIST
		}
	}
	k.loaded = append(k.loaded, name)
	return nil
}

func writeModule(t *testing.T, p, content string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	var buf bytes.Buffer
	switch {
	case strings.HasSuffix(p, ".xz"):
		w, err := xz.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(content))
		w.Close()
	case strings.HasSuffix(p, ".zst"):
		w, _ := zstd.NewWriter(&buf)
		w.Write([]byte(content))
		w.Close()
	case strings.HasSuffix(p, ".gz"):
		w := gzip.NewWriter(&buf)
		w.Write([]byte(content))
		w.Close()
	default:
		buf.WriteString(content)
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLoadModules loads the virtio NIC chain of a Debian cloud kernel,
// spread flat and nested, plain and compressed, in an order where
// alphabetical is wrong: rounds must get them all in.
func TestLoadModules(t *testing.T) {
	root := t.TempDir()
	lib, usr := filepath.Join(root, "lib/modules"), filepath.Join(root, "usr/lib/modules")
	writeModule(t, lib+"/virtio_ring.ko", "module virtio_ring")
	writeModule(t, lib+"/virtio.ko", "module virtio needs virtio_ring")
	writeModule(t, lib+"/6.1.0-56-cloud-amd64/kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz", "module virtio_pci_legacy_dev")
	writeModule(t, lib+"/6.1.0-56-cloud-amd64/kernel/drivers/virtio/virtio_pci_modern_dev.ko.zst", "module virtio_pci_modern_dev")
	writeModule(t, lib+"/virtio_pci.ko.gz", "module virtio_pci needs virtio virtio_pci_legacy_dev virtio_pci_modern_dev")
	writeModule(t, lib+"/failover.ko", "module failover")
	writeModule(t, lib+"/net_failover.ko", "module net_failover needs failover")
	writeModule(t, usr+"/virtio_net.ko", "module virtio_net needs net_failover virtio_pci")
	writeModule(t, usr+"/virtio.ko", "module virtio needs virtio_ring") // the same module under /usr: once
	writeModule(t, lib+"/absent_hw.ko", "module absent_hw needs nothing_provides_this")
	os.WriteFile(lib+"/corrupt.ko.xz", []byte("not xz"), 0o644)
	os.WriteFile(lib+"/modules.dep", []byte("ignored"), 0o644)
	os.WriteFile(lib+"/README", []byte("ignored"), 0o644)

	k := &fakeKernel{loaded: []string{"failover"}} // built in or loaded before: EEXIST
	res := LoadModules([]string{lib, usr, filepath.Join(root, "missing")}, k.load)
	want := []string{"failover", "net_failover", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_ring", "virtio", "virtio_pci", "virtio_net"}
	if diff := cmp.Diff(want, res.Loaded); diff != "" {
		t.Errorf("loaded (-want +got):\n%s", diff)
	}
	if res.Rounds != 4 {
		t.Errorf("rounds = %d, want 4 (3 with progress, 1 without)", res.Rounds)
	}
	if len(res.Failed) != 2 || res.Failed["absent_hw"] == nil || res.Failed["corrupt"] == nil {
		t.Errorf("failed = %v, want absent_hw and corrupt", res.Failed)
	}
	if !strings.Contains(res.Failed["corrupt"].Error(), "corrupt.ko.xz") {
		t.Errorf("corrupt error %v does not name the file", res.Failed["corrupt"])
	}
	if diff := cmp.Diff(want, k.loaded); diff != "" {
		t.Errorf("kernel state (-want +got):\n%s", diff)
	}
}

func TestLoadModulesNone(t *testing.T) {
	k := &fakeKernel{}
	res := LoadModules([]string{filepath.Join(t.TempDir(), "none")}, k.load)
	if len(res.Loaded) != 0 || len(res.Failed) != 0 || k.calls != 0 {
		t.Errorf("LoadModules of nothing = %+v after %d calls", res, k.calls)
	}
}
