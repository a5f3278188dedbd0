package squashfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// testInit is the init the boot test adds to the Debian root: it shows
// what the switched root sees, then powers off.
const testInit = `#!/bin/sh
# kiln squashfs boot test: init of the booted image.
echo KILN-ROOT-OK
cat /proc/mounts
busybox ip -4 addr show
cat /etc/resolv.conf
echo KILN-ROOT-DONE
busybox poweroff -f
`

// TestBootDebian makes a squashfs and a stage 1 from a Debian root and
// boots them in QEMU: once with the right digest, expecting the root to be
// an overlay and the network still configured; once with a wrong one,
// expecting stage 1 to refuse the squashfs.
func TestBootDebian(t *testing.T) {
	tarball := os.Getenv("KILN_TEST_DEBIAN_ROOT_TAR")
	if tarball == "" {
		t.Skip("KILN_TEST_DEBIAN_ROOT_TAR is not set: set it to a tarball of a Debian root with busybox-static and a kernel (for example one mmdebstrap made) to boot a squashfs image in QEMU")
	}
	testenv.NeedRoot(t)
	testenv.NeedTool(t, "tar")
	testenv.NeedTool(t, "cpio")
	testenv.NeedTool(t, "mksquashfs")
	testenv.NeedTool(t, "qemu-system-x86_64")
	tmp := t.TempDir()

	root := filepath.Join(tmp, "root")
	mustDo(t, os.Mkdir(root, 0o755))
	run(t, "tar", "--numeric-owner", "-xpf", tarball, "-C", root)
	mustDo(t, os.WriteFile(filepath.Join(root, "kiln-test-init"), []byte(testInit), 0o755))
	kver, err := KernelVersion(root, "")
	mustDo(t, err)
	kernel := filepath.Join(root, "boot", "vmlinuz-"+kver)
	mustDo(t, copyFile(kernel, filepath.Join(tmp, "vmlinuz")))
	kernel = filepath.Join(tmp, "vmlinuz")

	files, err := Stage1(root, kver)
	mustDo(t, err)
	initrd := filepath.Join(tmp, "stage1.cpio")
	writeCPIO(t, files, filepath.Join(tmp, "stage1"), initrd)

	img := filepath.Join(tmp, "root.squashfs")
	start := time.Now()
	mustDo(t, Make(context.Background(), root, img, Options{Log: testLogger(t)}))
	took := time.Since(start)
	b, err := os.ReadFile(img)
	mustDo(t, err)
	sum := sha256.Sum256(b)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	fi, err := os.Stat(initrd)
	mustDo(t, err)
	t.Logf("kernel %s; squashfs %d bytes in %v, %s; stage 1 %d files, %d bytes", kver, len(b), took.Round(time.Millisecond), digest, len(files), fi.Size())

	var mu sync.Mutex
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.Path+"?"+r.URL.RawQuery)
		mu.Unlock()
		http.ServeContent(w, r, "root.squashfs", time.Time{}, bytes.NewReader(b))
	}))
	t.Cleanup(srv.Close) // the subtests run after this function returns
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	url := fmt.Sprintf("http://10.0.2.2:%d/x?mac=1&y=2", port)

	t.Run("right digest", func(t *testing.T) {
		t.Parallel()
		c := bootQEMU(t, kernel, initrd, fmt.Sprintf("kiln.squashfs=%s kiln.squashfs.digest=%s kiln.init=/kiln-test-init", url, digest),
			"kiln: stage-1 init", "kiln: modules loaded", "kiln: dhcp: ", "kiln: squashfs verified "+digest, "kiln: switching root", "KILN-ROOT-OK", "KILN-ROOT-DONE")
		if !c.saw("KILN-ROOT-DONE") {
			t.Fatalf("the image's init did not finish")
		}
		after := c.after("KILN-ROOT-OK")
		for _, want := range []string{"overlay / overlay rw", "inet 10.0.2.15/24", "nameserver 10.0.2.3"} {
			if !strings.Contains(after, want) {
				t.Errorf("the image's init did not see %q", want)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(queries, "/x?mac=1&y=2") {
			t.Errorf("requests = %q, want /x?mac=1&y=2 among them", queries)
		}
	})
	t.Run("wrong digest", func(t *testing.T) {
		t.Parallel()
		wrong := "sha256:" + strings.Repeat("0", 64)
		c := bootQEMU(t, kernel, initrd, fmt.Sprintf("kiln.squashfs=%s kiln.squashfs.digest=%s kiln.init=/kiln-test-init", url, wrong),
			"kiln: FAILED", "KILN-ROOT-OK")
		want := fmt.Sprintf("kiln: FAILED squashfs from %s has digest %s, want %s", url, digest, wrong)
		if !strings.Contains(c.String(), want) {
			t.Errorf("console has no %q", want)
		}
		if c.saw("KILN-ROOT-OK") || strings.Contains(c.String(), "kiln: squashfs verified") {
			t.Errorf("stage 1 switched to a squashfs with the wrong digest")
		}
	})
}

// bootQEMU boots kernel and initrd with a virtio NIC on QEMU's user
// network and returns the console once the VM ends. It logs when each of
// marks first appeared.
func bootQEMU(t *testing.T, kernel, initrd, cmdline string, marks ...string) *console {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1",
		"-nodefaults", "-display", "none", "-vga", "none", "-serial", "stdio", "-no-reboot",
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 "+cmdline)
	cmd.WaitDelay = 5 * time.Second // after ctx ends, QEMU is killed by PID
	c := &console{start: time.Now(), marks: marks, seen: map[string]time.Duration{}}
	cmd.Stdout, cmd.Stderr = c, c
	err := cmd.Run()
	t.Logf("qemu ran %v (%v)", time.Since(c.start).Round(time.Millisecond), err)
	for _, m := range marks {
		if d, ok := c.seen[m]; ok {
			t.Logf("  %6.1fs %s", d.Seconds(), m)
		}
	}
	if ctx.Err() != nil {
		t.Errorf("qemu timed out")
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("console tail:\n%s", lastLines(c.String(), 40))
	}
	return c
}

// console collects a VM's console and when marks first appear in it.
type console struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	start time.Time
	marks []string
	seen  map[string]time.Duration
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	for _, m := range c.marks {
		if _, ok := c.seen[m]; !ok && bytes.Contains(c.buf.Bytes(), []byte(m)) {
			c.seen[m] = time.Since(c.start)
		}
	}
	return len(p), nil
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

func (c *console) saw(m string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.seen[m]
	return ok
}

// after returns the console after the first m.
func (c *console) after(m string) string {
	_, s, _ := strings.Cut(c.String(), m)
	return s
}

// writeCPIO lays files out under dir and archives them as a newc cpio at
// out with GNU cpio, every entry owned by root.
func writeCPIO(t *testing.T, files []File, dir, out string) {
	t.Helper()
	mustDo(t, os.Mkdir(dir, 0o755))
	var names []string
	for _, f := range files {
		p := filepath.Join(dir, f.Path)
		switch {
		case f.Dir:
			mustDo(t, os.Mkdir(p, 0o755))
		case f.Link != "":
			mustDo(t, os.Symlink(f.Link, p))
		case f.Source != "":
			mustDo(t, copyFile(f.Source, p))
		default:
			mustDo(t, os.WriteFile(p, f.Content, 0o644))
		}
		if f.Link == "" {
			mustDo(t, os.Chmod(p, os.FileMode(f.Mode)))
		}
		names = append(names, strings.TrimPrefix(f.Path, "/"))
	}
	o, err := os.Create(out)
	mustDo(t, err)
	defer o.Close()
	cmd := exec.Command("cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(strings.Join(names, "\n") + "\n")
	cmd.Stdout = o
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cpio: %v\n%s", err, stderr.String())
	}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}
