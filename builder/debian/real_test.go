package debian

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// realSpec is the smallest useful root: the Essential:yes set and a
// static busybox.
var realSpec = Spec{Suite: "bookworm", Variant: "essential", Packages: []string{"busybox-static"}}

// needMirror skips the test when Debian's mirror is out of reach, unless
// CI is "true".
func needMirror(t *testing.T) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Head("http://deb.debian.org/debian/dists/bookworm/InRelease")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return
		}
		err = errors.New(resp.Status)
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("deb.debian.org is required in CI: %v", err)
	}
	t.Skipf("deb.debian.org out of reach: %v", err)
}

// fastTempDir returns a directory on tmpfs if there is one (mmdebstrap
// runs about a third faster there), else a test temporary directory.
func fastTempDir(t *testing.T) string {
	t.Helper()
	if dir, err := os.MkdirTemp("/dev/shm", "kiln-debian-test-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return t.TempDir()
}

// rootFile is one entry of a bootstrapped root.
type rootFile struct {
	hdr  *tar.Header
	sum  string
	body []byte // for files under 64 KiB
}

// readRoot reads the archive at name into a map by entry name.
func readRoot(t *testing.T, name string) map[string]rootFile {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]rootFile{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading %s: %v", name, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		rf := rootFile{hdr: h, sum: fmt.Sprintf("%x", sum[:8])}
		if len(b) < 64<<10 {
			rf.body = b
		}
		if _, dup := out[h.Name]; dup {
			t.Errorf("%s: %s appears twice", name, h.Name)
		}
		out[h.Name] = rf
	}
}

// summary describes every entry by name: type, mode, owner, mtime, link,
// device, content hash and extended attributes.
func summary(root map[string]rootFile) map[string]string {
	out := map[string]string{}
	for name, f := range root {
		h := f.hdr
		var xattrs []string
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				xattrs = append(xattrs, k+"="+v)
			}
		}
		out[name] = fmt.Sprintf("%c %o %d:%d t=%d l=%q d=%d,%d sha=%s x=%q",
			h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime.Unix(), h.Linkname, h.Devmajor, h.Devminor, f.sum, xattrs)
	}
	return out
}

// resolve follows symlinks (relative or absolute, inside the root) to a
// regular file's entry.
func resolve(root map[string]rootFile, name string) (rootFile, bool) {
	for range 10 {
		f, ok := root[name]
		if !ok {
			return rootFile{}, false
		}
		switch f.hdr.Typeflag {
		case tar.TypeSymlink:
			if strings.HasPrefix(f.hdr.Linkname, "/") {
				name = "." + path.Clean(f.hdr.Linkname)
			} else {
				name = "./" + path.Join(path.Dir(name), f.hdr.Linkname)
			}
		case tar.TypeLink:
			name = "./" + path.Clean(f.hdr.Linkname)
		default:
			return f, true
		}
	}
	return rootFile{}, false
}

// checkRoot checks the bootstrapped root's content.
func checkRoot(t *testing.T, root map[string]rootFile, epoch int64) {
	t.Helper()
	// busybox runs: it is the static binary, not a stub.
	bb, ok := resolve(root, "./usr/bin/busybox")
	if !ok {
		bb, ok = resolve(root, "./bin/busybox")
	}
	if !ok || bb.hdr.Typeflag != tar.TypeReg || bb.hdr.Size < 500<<10 {
		t.Errorf("no busybox binary in the root (./usr/bin/busybox or ./bin/busybox)")
	}
	if osr, ok := resolve(root, "./etc/os-release"); !ok || !strings.Contains(string(osr.body), "\nVERSION_CODENAME=bookworm\n") {
		t.Errorf("./etc/os-release = %q, want VERSION_CODENAME=bookworm", osr.body)
	}
	if f, ok := root["./etc/hostname"]; !ok || string(f.body) != "localhost\n" || f.hdr.Mode != 0o644 {
		t.Errorf("./etc/hostname = %q, want \"localhost\\n\" with mode 0644", f.body)
	}
	if f, ok := root["./dev/null"]; !ok || f.hdr.Typeflag != tar.TypeChar || f.hdr.Devmajor != 1 || f.hdr.Devminor != 3 {
		t.Errorf("./dev/null missing or not the 1,3 character device")
	}
	for name, f := range root {
		switch {
		case f.hdr.ModTime.Unix() > epoch:
			t.Errorf("%s: mtime %v after SOURCE_DATE_EPOCH %d", name, f.hdr.ModTime, epoch)
		case name == "./etc/resolv.conf":
			t.Errorf("%s: copied from the host", name)
		case name == "./etc/machine-id" && f.hdr.Size != 0:
			t.Errorf("%s: %d bytes, want empty", name, f.hdr.Size)
		case strings.HasPrefix(name, "./var/lib/apt/lists/") && name != "./var/lib/apt/lists/" &&
			name != "./var/lib/apt/lists/lock" && name != "./var/lib/apt/lists/partial/":
			t.Errorf("%s: apt lists left in the root", name)
		case strings.HasPrefix(name, "./var/cache/apt/") &&
			(strings.HasSuffix(name, ".deb") || strings.HasSuffix(name, ".bin")):
			t.Errorf("%s: apt cache left in the root", name)
		case strings.HasPrefix(name, "./var/log/") && f.hdr.Typeflag == tar.TypeReg && f.hdr.Size != 0:
			t.Errorf("%s: log of %d bytes, want empty", name, f.hdr.Size)
		}
	}
}

// runBusybox runs the root's busybox on the host.
func runBusybox(t *testing.T, archive string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no regular busybox in %s: %v", archive, err)
		}
		if h.Typeflag != tar.TypeReg || path.Base(h.Name) != "busybox" {
			continue
		}
		bin := filepath.Join(t.TempDir(), "busybox")
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "echo", "kiln").CombinedOutput()
		if err != nil || string(out) != "kiln\n" {
			t.Errorf("busybox echo kiln = %q, %v", out, err)
		}
		return
	}
}

// TestBootstrapReal bootstraps bookworm twice, in parallel, checks the
// root and that both runs wrote the same archive; and cancels a third run
// midway. It downloads about 40 MB from deb.debian.org and takes about a
// minute, so -short skips it.
func TestBootstrapReal(t *testing.T) {
	testenv.NeedTool(t, "mmdebstrap")
	if testing.Short() {
		t.Skip("-short: a real bootstrap takes about a minute")
	}
	needMirror(t)
	// Three runs at once (not parallel subtests, which -parallel, by
	// default GOMAXPROCS, may serialise).
	var roots [2]string
	var wg sync.WaitGroup
	for i := range roots {
		out := filepath.Join(t.TempDir(), "root.tar")
		tmp := fastTempDir(t)
		wg.Go(func() {
			start := time.Now()
			err := Bootstrap(context.Background(), realSpec, out, Options{
				TempDir: tmp,
				Log:     slog.New(slog.NewTextHandler(t.Output(), nil)).With("run", i),
			})
			if err != nil {
				t.Errorf("Bootstrap(%+v) = %v", realSpec, err)
				return
			}
			t.Logf("run %d: Bootstrap took %v", i, time.Since(start).Round(time.Millisecond))
			roots[i] = out
		})
	}
	cancelDir, cancelTmp := t.TempDir(), fastTempDir(t)
	wg.Go(func() { testCancelReal(t, cancelDir, cancelTmp) })
	wg.Wait()
	if roots[0] == "" || roots[1] == "" {
		return
	}
	first, second := readRoot(t, roots[0]), readRoot(t, roots[1])
	checkRoot(t, first, 0)
	runBusybox(t, roots[0])
	if diff := cmp.Diff(summary(first), summary(second)); diff != "" {
		t.Errorf("two bootstraps of %+v differ (-first +second):\n%s", realSpec, diff)
	}
	a, _ := os.ReadFile(roots[0])
	b, _ := os.ReadFile(roots[1])
	t.Logf("archives: %d entries, %d bytes, bit-identical: %v", len(first), len(a), string(a) == string(b))
	if string(a) != string(b) {
		t.Errorf("two bootstraps of %+v wrote different bytes, though the same entries", realSpec)
	}
}

// testCancelReal cancels a real bootstrap, writing into dir with TempDir
// tmp, while dpkg installs the essential packages, and checks that it
// stops, leaving nothing behind. It runs off the test's goroutine.
func testCancelReal(t *testing.T, dir, tmp string) {
	out := filepath.Join(dir, "root.tar")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var canceled time.Time
	err := Bootstrap(ctx, realSpec, out, Options{TempDir: tmp, Progress: func(l string) {
		if strings.HasPrefix(l, "I: installing essential packages") && canceled.IsZero() {
			canceled = time.Now()
			cancel()
		}
	}})
	if canceled.IsZero() {
		t.Errorf("Bootstrap() = %v before installing packages", err)
		return
	}
	took := time.Since(canceled)
	t.Logf("Bootstrap returned %v after cancel", took.Round(time.Millisecond))
	if took > 2*killGrace+5*time.Second {
		t.Errorf("Bootstrap returned %v after cancel, want about %v at most", took, killGrace)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Bootstrap(canceled) = %v, want context.Canceled", err)
	}
	for _, d := range []string{dir, tmp} {
		if des, err := os.ReadDir(d); err != nil || len(des) != 0 {
			t.Errorf("canceled Bootstrap left %v in %s (%v)", des, d, err)
		}
	}
	// No process of the run is left: mmdebstrap and apt had TMPDIR
	// under tmp, dpkg and maintainer scripts run chrooted below it.
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		env, _ := os.ReadFile(p + "/environ")
		root, _ := os.Readlink(p + "/root")
		if strings.Contains(string(env), "TMPDIR="+tmp+"/") || strings.HasPrefix(root, tmp+"/") {
			cmdline, _ := os.ReadFile(p + "/cmdline")
			t.Errorf("%s (%q) of the canceled bootstrap still runs", p, strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	mounts, err := mountsUnder(tmp)
	if err != nil || len(mounts) != 0 {
		t.Errorf("mounts under %s after cancel: %v, %v", tmp, mounts, err)
	}
}
