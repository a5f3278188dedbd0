package squashfs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

const testKver = "6.1.0-test-amd64"

// testModulesDep is a modules.dep shaped like Debian's: virtio_net is
// xz-compressed, squashfs zstd-compressed, failover listed as .ko but
// stored gzip-compressed; zstd_decompress and virtio_pci_legacy_dev are
// built in; unrelated is never needed.
const testModulesDep = `kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/fs/squashfs/squashfs.ko.zst: kernel/lib/zstd/zstd_decompress.ko
kernel/drivers/block/loop.ko:
kernel/fs/overlayfs/overlay.ko:
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
kernel/drivers/net/ethernet/mellanox/mlx4/mlx4_en.ko: kernel/drivers/net/ethernet/mellanox/mlx4/mlx4_core.ko
kernel/drivers/net/ethernet/mellanox/mlx4/mlx4_core.ko:
kernel/drivers/scsi/unrelated.ko: kernel/drivers/block/loop.ko
`

const testModulesBuiltin = `kernel/lib/zstd/zstd_decompress.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko
`

// wantModules is the load list Stage1 must make from testModulesDep.
const wantModules = `virtio required
virtio_ring required
failover required
net_failover required
virtio_net required
virtio_pci_modern_dev required
virtio_pci required
loop required
squashfs required
overlay required
e1000 optional
mlx4_core optional
mlx4_en optional
`

// writeRoot makes a root tree in a temp dir with Debian's merged /usr
// (lib -> usr/lib, bin -> usr/bin), busybox copied from the host path
// busybox, and the modules of testModulesDep, each module's content its
// name. It returns the root.
func writeRoot(t *testing.T, busybox, modulesDep string) string {
	t.Helper()
	root := t.TempDir()
	mods := filepath.Join(root, "usr/lib/modules", testKver)
	mustDo(t, os.MkdirAll(mods, 0o755))
	mustDo(t, os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755))
	mustDo(t, os.Symlink("usr/lib", filepath.Join(root, "lib")))
	mustDo(t, os.Symlink("usr/bin", filepath.Join(root, "bin")))
	if busybox != "" {
		b, err := os.ReadFile(busybox)
		mustDo(t, err)
		mustDo(t, os.WriteFile(filepath.Join(root, "usr/bin/busybox"), b, 0o755))
	}
	mustDo(t, os.WriteFile(filepath.Join(mods, "modules.dep"), []byte(modulesDep), 0o644))
	mustDo(t, os.WriteFile(filepath.Join(mods, "modules.builtin"), []byte(testModulesBuiltin), 0o644))
	for _, line := range strings.Split(modulesDep, "\n") {
		p, _, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		content := []byte(modName(p) + " module")
		if p == "kernel/net/core/failover.ko" {
			p += ".gz"
		}
		mustDo(t, os.MkdirAll(filepath.Join(mods, path.Dir(p)), 0o755))
		mustDo(t, os.WriteFile(filepath.Join(mods, p), compress(t, p, content), 0o644))
	}
	return root
}

// compress compresses b as the ending of name says.
func compress(t *testing.T, name string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch path.Ext(name) {
	case ".xz":
		w, err := xz.NewWriter(&buf)
		mustDo(t, err)
		w.Write(b)
		mustDo(t, w.Close())
	case ".zst":
		w, err := zstd.NewWriter(&buf)
		mustDo(t, err)
		w.Write(b)
		mustDo(t, w.Close())
	case ".gz":
		w := gzip.NewWriter(&buf)
		w.Write(b)
		mustDo(t, w.Close())
	default:
		return b
	}
	return buf.Bytes()
}

// staticBusyboxPath returns the host's static busybox (Debian's
// busybox-static), skipping the test when there is none.
func staticBusyboxPath(t *testing.T) string {
	t.Helper()
	const p = "/bin/busybox"
	if err := checkStatic(p); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("need a static %s (busybox-static): %v", p, err)
		}
		t.Skipf("need a static %s (busybox-static): %v", p, err)
	}
	return p
}

func TestStage1(t *testing.T) {
	bb := staticBusyboxPath(t)
	root := writeRoot(t, bb, testModulesDep)
	files, err := Stage1(root, testKver)
	if err != nil {
		t.Fatalf("Stage1 = %v", err)
	}
	byPath := map[string]File{}
	for _, f := range files {
		if _, dup := byPath[f.Path]; dup {
			t.Errorf("%s twice", f.Path)
		}
		byPath[f.Path] = f
	}
	if !slices.IsSortedFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) }) {
		t.Errorf("files not sorted by path")
	}
	for _, f := range files {
		if dir := path.Dir(f.Path); dir != "/" && !byPath[dir].Dir {
			t.Errorf("%s: parent %s is not a directory of the list", f.Path, dir)
		}
	}

	if diff := cmp.Diff(wantModules, string(byPath["/etc/kiln/modules"].Content)); diff != "" {
		t.Errorf("/etc/kiln/modules (-want +got):\n%s", diff)
	}
	// Each module ships as /lib/modules/<name>.ko, uncompressed.
	var mods []string
	for _, f := range files {
		if name, ok := strings.CutPrefix(f.Path, "/lib/modules/"); ok && !f.Dir {
			mods = append(mods, name)
			content := f.Content
			if f.Source != "" {
				content, err = os.ReadFile(f.Source)
				mustDo(t, err)
			}
			if want := strings.TrimSuffix(name, ".ko") + " module"; string(content) != want {
				t.Errorf("%s has %q, want %q", f.Path, content, want)
			}
		}
	}
	var wantMods []string
	for _, line := range strings.Fields(wantModules) {
		if line != "required" && line != "optional" {
			wantMods = append(wantMods, line+".ko")
		}
	}
	slices.Sort(wantMods)
	if diff := cmp.Diff(wantMods, mods); diff != "" {
		t.Errorf("module files (-want +got):\n%s", diff)
	}

	if f := byPath["/bin/busybox"]; f.Source != filepath.Join(root, "usr/bin/busybox") || f.Mode != 0o755 {
		t.Errorf("/bin/busybox = %+v, want the root's usr/bin/busybox, mode 0755", f)
	}
	for _, a := range append([]string{"sh"}, applets...) {
		if f := byPath["/bin/"+a]; f.Link != "busybox" {
			t.Errorf("/bin/%s = %+v, want a symlink to busybox", a, f)
		}
	}
	if f := byPath["/init"]; !bytes.Equal(f.Content, initScript) || f.Mode != 0o755 {
		t.Errorf("/init is not the embedded init.sh, mode 0755")
	}
	for _, d := range []string{"/dev", "/proc", "/sys", "/run", "/newroot"} {
		if !byPath[d].Dir {
			t.Errorf("no directory %s", d)
		}
	}

	again, err := Stage1(root, testKver)
	mustDo(t, err)
	if diff := cmp.Diff(files, again); diff != "" {
		t.Errorf("Stage1 changed between two calls (-first +second):\n%s", diff)
	}
}

// TestStage1DepsFirst checks on testModulesDep, independently of the order
// wantModules spells out, that every module comes after its dependencies
// and that no built-in one is loaded.
func TestStage1DepsFirst(t *testing.T) {
	idx := &modIndex{deps: map[string][]string{}, byName: map[string]string{}, builtin: map[string]bool{}}
	mustDo(t, parseModulesDep(strings.NewReader(testModulesDep), idx))
	mustDo(t, parseModulesBuiltin(strings.NewReader(testModulesBuiltin), idx))
	mods, err := idx.loadOrder(requiredModules, optionalModules)
	mustDo(t, err)
	pos := map[string]int{}
	for i, m := range mods {
		pos[m.path] = i
	}
	for i, m := range mods {
		for _, d := range idx.deps[m.path] {
			j, ok := pos[d]
			switch {
			case idx.builtin[modName(d)] && ok:
				t.Errorf("built-in %s is in the load list", d)
			case !idx.builtin[modName(d)] && (!ok || j > i):
				t.Errorf("%s is loaded before its dependency %s", m.name, d)
			}
		}
	}
}

func TestStage1Errors(t *testing.T) {
	bb := staticBusyboxPath(t)
	without := func(name string) string {
		var lines []string
		for _, l := range strings.Split(testModulesDep, "\n") {
			if !strings.Contains(l, "/"+name+".ko") {
				lines = append(lines, l)
			}
		}
		return strings.Join(lines, "\n")
	}
	for _, tc := range []struct {
		name       string
		busybox    string
		modulesDep string
		change     func(root string)
		want       []string
		is         error
	}{
		{
			name: "required module missing", busybox: bb, modulesDep: without("overlay"),
			want: []string{"module overlay", "neither in modules.dep nor built in"},
		},
		{
			name: "module file missing", busybox: bb, modulesDep: testModulesDep,
			change: func(root string) {
				mustDo(t, os.Remove(filepath.Join(root, "usr/lib/modules", testKver, "kernel/drivers/block/loop.ko")))
			},
			want: []string{"module loop", "no file", "kernel/drivers/block/loop.ko"},
		},
		{
			name: "dependency cycle", busybox: bb,
			modulesDep: testModulesDep + "kernel/drivers/virtio/virtio.ko: kernel/drivers/net/virtio_net.ko.xz\n",
			want:       []string{"cycle", "virtio_net -> ", "-> virtio_net"},
		},
		{
			name: "bad compressed module", busybox: bb, modulesDep: testModulesDep,
			change: func(root string) {
				p := filepath.Join(root, "usr/lib/modules", testKver, "kernel/fs/squashfs/squashfs.ko.zst")
				mustDo(t, os.WriteFile(p, []byte("not zstd"), 0o644))
			},
			want: []string{"decompressing", "squashfs.ko.zst"},
		},
		{
			name: "no busybox", modulesDep: testModulesDep,
			want: []string{"no /usr/bin/busybox or /bin/busybox"}, is: ErrNoStaticBusybox,
		},
		{
			name: "dynamic busybox", busybox: "/bin/ls", modulesDep: testModulesDep,
			want: []string{"/usr/bin/busybox: dynamically linked"}, is: ErrNoStaticBusybox,
		},
		{
			name: "busybox not ELF", busybox: "/etc/passwd", modulesDep: testModulesDep,
			want: []string{"/usr/bin/busybox: not an ELF executable"}, is: ErrNoStaticBusybox,
		},
		{
			name: "no modules for the kernel", busybox: bb, modulesDep: testModulesDep,
			change: func(root string) {
				mustDo(t, os.Remove(filepath.Join(root, "usr/lib/modules", testKver, "modules.dep")))
			},
			want: []string{"no modules.dep for kernel " + testKver},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := writeRoot(t, tc.busybox, tc.modulesDep)
			if tc.change != nil {
				tc.change(root)
			}
			files, err := Stage1(root, testKver)
			if err == nil {
				t.Fatalf("Stage1 = %d files, want an error", len(files))
			}
			t.Logf("Stage1 = %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Stage1 = %q, want it to mention %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("Stage1 = %v, want errors.Is %v", err, tc.is)
			}
		})
	}
}

// TestStage1BuiltinRequired: a kernel with everything built in needs no
// required modules; the optional ones it has as modules still ship.
func TestStage1BuiltinRequired(t *testing.T) {
	bb := staticBusyboxPath(t)
	root := writeRoot(t, bb, "kernel/drivers/net/ethernet/intel/igb/igb.ko:\n")
	var builtin strings.Builder
	for _, m := range requiredModules {
		builtin.WriteString("kernel/x/" + m + ".ko\n")
	}
	mustDo(t, os.WriteFile(filepath.Join(root, "usr/lib/modules", testKver, "modules.builtin"), []byte(builtin.String()), 0o644))
	files, err := Stage1(root, testKver)
	mustDo(t, err)
	for _, f := range files {
		if f.Path == "/etc/kiln/modules" {
			if got, want := string(f.Content), "igb optional\n"; got != want {
				t.Errorf("/etc/kiln/modules = %q, want %q", got, want)
			}
			return
		}
	}
	t.Errorf("no /etc/kiln/modules")
}

func TestKernelVersion(t *testing.T) {
	mk := func(t *testing.T, dirs ...string) string {
		root := t.TempDir()
		for _, d := range dirs {
			mustDo(t, os.MkdirAll(filepath.Join(root, d), 0o755))
			if !strings.HasSuffix(d, "-empty") {
				mustDo(t, os.WriteFile(filepath.Join(root, d, "modules.dep"), nil, 0o644))
			}
		}
		return root
	}
	for _, tc := range []struct {
		name, want, got string
		dirs            []string
		err             string
	}{
		{name: "one", dirs: []string{"lib/modules/6.1.0-1"}, got: "6.1.0-1"},
		{name: "one under usr", dirs: []string{"usr/lib/modules/6.1.0-1", "lib/modules/5.0-empty"}, got: "6.1.0-1"},
		{name: "none", dirs: []string{"lib/modules/5.0-empty"}, err: "no kernel modules"},
		{name: "several", dirs: []string{"lib/modules/6.1.0-1", "usr/lib/modules/6.1.0-2"}, err: "several kernels in"},
		{name: "several, one named", dirs: []string{"lib/modules/6.1.0-1", "usr/lib/modules/6.1.0-2"}, want: "6.1.0-2", got: "6.1.0-2"},
		{name: "named but absent", dirs: []string{"lib/modules/6.1.0-1"}, want: "6.2", err: "no modules.dep for kernel 6.2"},
		{name: "named with a slash", dirs: []string{"lib/modules/6.1.0-1"}, want: "../x", err: "bad kernel version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := mk(t, tc.dirs...)
			got, err := KernelVersion(root, tc.want)
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("KernelVersion(%q) = %v", tc.want, err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("KernelVersion(%q) = %q, %v, want error %q", tc.want, got, err, tc.err)
			case got != tc.got:
				t.Errorf("KernelVersion(%q) = %q, want %q", tc.want, got, tc.got)
			}
		})
	}
}

// TestScriptsParse runs busybox sh -n, the shell stage 1 runs them with,
// on the embedded scripts.
func TestScriptsParse(t *testing.T) {
	bb := staticBusyboxPath(t)
	dir := t.TempDir()
	for name, s := range map[string][]byte{"init.sh": initScript, "udhcpc.sh": udhcpcScript} {
		p := filepath.Join(dir, name)
		mustDo(t, os.WriteFile(p, s, 0o755))
		if out, err := exec.Command(bb, "sh", "-n", p).CombinedOutput(); err != nil {
			t.Errorf("busybox sh -n %s: %v\n%s", name, err, out)
		}
	}
}

func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	mustDo(t, os.MkdirAll(filepath.Join(root, "usr/lib/modules"), 0o755))
	mustDo(t, os.Symlink("usr/lib", filepath.Join(root, "lib")))
	mustDo(t, os.Symlink("/usr/lib", filepath.Join(root, "abslib")))
	mustDo(t, os.Symlink("../../../../..", filepath.Join(root, "usr/up")))
	mustDo(t, os.Symlink("loop", filepath.Join(root, "loop")))
	for _, tc := range []struct{ in, want, err string }{
		{in: "lib/modules", want: "usr/lib/modules"},
		{in: "abslib/modules", want: "usr/lib/modules"},
		{in: "usr/up/usr/lib", want: "usr/lib"},
		{in: "/../lib/./modules/", want: "usr/lib/modules"},
		{in: "loop/x", err: "too many levels"},
		{in: "lib/nothing", err: "no such file"},
	} {
		got, err := resolveIn(root, tc.in)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("resolveIn(%q) = %q, %v, want error %q", tc.in, got, err, tc.err)
			}
		case err != nil || got != filepath.Join(root, tc.want):
			t.Errorf("resolveIn(%q) = %q, %v, want %q", tc.in, got, err, filepath.Join(root, tc.want))
		}
	}
}
