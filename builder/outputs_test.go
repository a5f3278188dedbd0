package builder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// fakeKver is the kernel version of the module tree in the outputs fixture.
const fakeKver = "6.1.0-kiln-test"

// writeOutputsFixture writes a recipe baking every output from a small but
// real root: the tiny image's static busybox and kernel, a module tree with
// the modules stage 1 loads (their content does not matter to the build),
// a systemd unit, a user and a template. It returns the recipe's path.
func writeOutputsFixture(t *testing.T, dir string, mtime time.Time) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the squashfs and disk outputs write the root with its owners: needs root")
	}
	for _, f := range []string{"../.cache/tiny/vmlinuz", "../.cache/tiny/rootfs/bin/busybox"} {
		if _, err := os.Stat(f); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("no tiny inputs: %v (run make tiny-inputs)", err)
			}
			t.Skipf("no tiny inputs (run scripts/fetch-tiny-inputs.sh): %v", err)
		}
	}
	testenv.NeedTools(t, "mksquashfs", "mkfs.ext4")
	root := filepath.Join(dir, "root")
	busybox, err := os.ReadFile("../.cache/tiny/rootfs/bin/busybox")
	mustDo(t, err)
	mods := "kernel/" // modules.dep paths are relative to its directory
	files := map[string]string{
		"bin/busybox":                          string(busybox),
		"etc/passwd":                           "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":                            "root:x:0:\nshadow:x:42:\nwheel:x:10:\n",
		"etc/shadow":                           "root:*:19000:0:99999:7:::\n",
		"init":                                 "#!/bin/sh\nexec /bin/sh\n",
		"boot/.keep":                           "",
		"usr/lib/systemd/system/hello.service": "[Unit]\nDescription=hello\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
		"lib/modules/" + fakeKver + "/modules.dep": strings.Join([]string{
			mods + "drivers/virtio/virtio.ko:",
			mods + "drivers/virtio/virtio_ring.ko:",
			mods + "drivers/virtio/virtio_pci.ko: " + mods + "drivers/virtio/virtio.ko " + mods + "drivers/virtio/virtio_ring.ko",
			mods + "drivers/net/virtio_net.ko: " + mods + "drivers/virtio/virtio.ko " + mods + "drivers/virtio/virtio_ring.ko",
			mods + "drivers/block/loop.ko:",
			mods + "fs/squashfs/squashfs.ko:",
			mods + "fs/overlayfs/overlay.ko:",
		}, "\n") + "\n",
		"lib/modules/" + fakeKver + "/modules.builtin": "",
	}
	for _, m := range []string{"drivers/virtio/virtio", "drivers/virtio/virtio_ring", "drivers/virtio/virtio_pci", "drivers/net/virtio_net", "drivers/block/loop", "fs/squashfs/squashfs", "fs/overlayfs/overlay"} {
		files["lib/modules/"+fakeKver+"/kernel/"+m+".ko"] = "module " + m
	}
	for p, content := range files {
		full := filepath.Join(root, p)
		mustDo(t, os.MkdirAll(filepath.Dir(full), 0o755))
		mode := os.FileMode(0o644)
		if p == "bin/busybox" || p == "init" {
			mode = 0o755
		}
		mustDo(t, os.WriteFile(full, []byte(content), mode))
	}
	mustDo(t, os.Symlink("busybox", filepath.Join(root, "bin/sh")))
	kernel, err := os.ReadFile("../.cache/tiny/vmlinuz")
	mustDo(t, err)
	mustDo(t, os.WriteFile(filepath.Join(dir, "vmlinuz"), kernel, 0o644))
	recipe := filepath.Join(dir, "all.yaml")
	mustDo(t, os.WriteFile(recipe, []byte(`name: all-outputs
kernel: vmlinuz
base: root
cmdline: console=ttyS0 quiet
outputs: [initramfs, squashfs, disk, iso, uki]
users:
  - {name: ops, uid: 1000, groups: [wheel], ssh_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f ops"]}
env: {GREETING: hello}
files:
  - {path: /etc/motd, mode: "0644", content: "{{ .Env.GREETING }} from {{ .Name }}\n", template: true}
services: [hello.service]
`), 0o644))
	mustDo(t, filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.Mode()&os.ModeSymlink != 0 {
			return err
		}
		return os.Chtimes(p, mtime, mtime)
	}))
	return recipe
}

// TestBuildAllOutputs bakes every output from one recipe and checks each
// with the real tool that would read it.
func TestBuildAllOutputs(t *testing.T) {
	testenv.NeedTools(t, "unsquashfs", "sfdisk", "xorriso", "objdump")
	recipe := writeOutputsFixture(t, t.TempDir(), time.Now())
	res, st := build(t, recipe)
	var names []string
	for _, a := range res.Artifacts {
		names = append(names, a.Name)
	}
	want := []string{ArtifactKernel, ArtifactInitrd, ArtifactSquashfs, ArtifactStage1, ArtifactDisk, ArtifactISO, ArtifactUKI}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Fatalf("artifacts (-want +got):\n%s", diff)
	}
	file := func(name string) string {
		p := filepath.Join(t.TempDir(), name)
		mustDo(t, os.WriteFile(p, artifact(t, st, res, name), 0o644))
		return p
	}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	// The root tree, with what the recipe added, is in the squashfs.
	lls := run("unsquashfs", "-lln", file(ArtifactSquashfs))
	for _, want := range []string{
		"squashfs-root/etc/kiln/image",
		"squashfs-root/etc/motd",
		"squashfs-root/home/ops/.ssh/authorized_keys",
		"squashfs-root/etc/systemd/system/multi-user.target.wants/hello.service -> /usr/lib/systemd/system/hello.service",
		"drwxr-x--- 1000/1000",
	} {
		if !strings.Contains(lls, want) {
			t.Errorf("unsquashfs -lln lacks %q:\n%s", want, lls)
		}
	}
	// The stage-1 initramfs carries busybox and the modules, in order.
	var stage1 []string
	for _, e := range readCPIO(t, unzstd(t, artifact(t, st, res, ArtifactStage1))) {
		stage1 = append(stage1, e.Name)
	}
	for _, want := range []string{"init", "bin/busybox"} {
		if !slices.Contains(stage1, want) {
			t.Errorf("stage1 lacks /%s: %v", want, stage1)
		}
	}
	// The disk is a GPT with an ESP and a root.
	var table struct {
		PartitionTable struct {
			Label      string `json:"label"`
			Partitions []struct {
				Type string `json:"type"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	mustDo(t, json.Unmarshal([]byte(run("sfdisk", "--json", file(ArtifactDisk))), &table))
	if table.PartitionTable.Label != "gpt" || len(table.PartitionTable.Partitions) != 2 ||
		!strings.EqualFold(table.PartitionTable.Partitions[0].Type, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B") {
		t.Errorf("disk partition table = %+v, want gpt with an ESP and a root", table.PartitionTable)
	}
	// The iso boots BIOS and UEFI.
	report := run("xorriso", "-indev", file(ArtifactISO), "-report_el_torito", "plain")
	if !strings.Contains(report, "BIOS") || !strings.Contains(report, "UEFI") {
		t.Errorf("xorriso -report_el_torito lacks a BIOS or a UEFI entry:\n%s", report)
	}
	// The UKI holds the kernel, the initramfs and the command line.
	sections := run("objdump", "-h", file(ArtifactUKI))
	for _, s := range []string{".linux", ".initrd", ".cmdline", ".osrel"} {
		if !strings.Contains(sections, s) {
			t.Errorf("objdump -h of the uki lacks %s:\n%s", s, sections)
		}
	}
	// The initramfs has the rendered template and the user.
	got := map[string]string{}
	for _, e := range readCPIO(t, unzstd(t, artifact(t, st, res, ArtifactInitrd))) {
		got[e.Name] = e.Data
	}
	for name, want := range map[string]string{
		"etc/motd":   "hello from all-outputs\n",
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nops:x:1000:1000::/home/ops:/bin/sh\n",
		"etc/group":  "root:x:0:\nshadow:x:42:\nwheel:x:10:ops\nops:x:1000:\n",
		"etc/shadow": "root:*:19000:0:99999:7:::\nops:!::0:99999:7:::\n",
	} {
		if got[name] != want {
			t.Errorf("/%s = %q, want %q", name, got[name], want)
		}
	}
}

// TestBuildReproducibleAcrossDirsAndDays builds the same recipe from two
// folders whose files have different mtimes, the second under faketime
// three days later in another time zone, so every tool the builder runs
// sees another date: the image ID must be the same.
func TestBuildReproducibleAcrossDirsAndDays(t *testing.T) {
	testenv.NeedTools(t, "faketime")
	a := writeOutputsFixture(t, filepath.Join(t.TempDir(), "monday"), time.Now())
	b := writeOutputsFixture(t, filepath.Join(t.TempDir(), "elsewhere", "thursday"), time.Now().Add(-400*24*time.Hour))
	resA, _ := build(t, a)

	// kiln itself is Go and reads no clock into the image; the tools it
	// runs (mksquashfs, mkfs.ext4, ...) are C and see faketime's date.
	lib, err := filepath.Glob("/usr/lib/*/faketime/libfaketime.so.1")
	if err != nil || len(lib) == 0 {
		t.Fatalf("libfaketime not found (%v): run make deps", err)
	}
	t.Setenv("LD_PRELOAD", lib[0])
	t.Setenv("FAKETIME", "+3d")
	t.Setenv("TZ", "Pacific/Kiritimati")
	if out, err := exec.Command("date", "+%F").Output(); err != nil || strings.TrimSpace(string(out)) == time.Now().Format("2006-01-02") {
		t.Fatalf("faketime does not shift the date of child processes: date says %q (%v)", out, err)
	}
	resB, _ := build(t, b)
	if diff := cmp.Diff(resA, resB); diff != "" {
		t.Errorf("builds in other folders on other days differ (-first +second):\n%s", diff)
	}
}

// TestBuildCache checks that a rebuild with the same inputs reuses every
// output, and that a rebuild after a one-file change bakes the outputs
// that depend on it and reuses the others.
func TestBuildCache(t *testing.T) {
	dir := t.TempDir()
	recipe := writeOutputsFixture(t, dir, time.Now())
	r, err := LoadRecipe(recipe)
	mustDo(t, err)
	st, err := images.Open(t.TempDir())
	mustDo(t, err)
	bake := func(opt Options) (Result, time.Duration) {
		t.Helper()
		r, err := LoadRecipe(recipe)
		mustDo(t, err)
		start := time.Now()
		res, err := Build(context.Background(), r, st, opt)
		if err != nil {
			t.Fatal(err)
		}
		return res, time.Since(start)
	}
	_ = r
	cold, coldTime := bake(Options{})
	if len(cold.Cached) != 0 {
		t.Errorf("first build reused %v, want nothing", cold.Cached)
	}
	warm, warmTime := bake(Options{})
	all := []string{ArtifactInitrd, ArtifactSquashfs, ArtifactStage1, ArtifactDisk, ArtifactISO, ArtifactUKI}
	if diff := cmp.Diff(all, warm.Cached); diff != "" || warm.ID != cold.ID {
		t.Errorf("rebuild with the same inputs: ID %s (first %s), cached (-want +got):\n%s", warm.ID, cold.ID, diff)
	}
	mustDo(t, os.WriteFile(filepath.Join(dir, "root", "etc", "issue"), []byte("one changed file\n"), 0o644))
	inc, incTime := bake(Options{})
	if diff := cmp.Diff([]string{ArtifactStage1}, inc.Cached); diff != "" || inc.ID == cold.ID {
		t.Errorf("rebuild after one changed file: ID %s (first %s), cached (-want +got):\n%s", inc.ID, cold.ID, diff)
	}
	fresh, _ := bake(Options{NoCache: true})
	if len(fresh.Cached) != 0 || fresh.ID != inc.ID {
		t.Errorf("--no-cache: ID %s cached %v, want %s and nothing cached", fresh.ID, fresh.Cached, inc.ID)
	}
	t.Logf("cold %v, same inputs %v, one file changed %v", coldTime, warmTime, incTime)

	// A cache entry whose blob was collected is a miss, not an error.
	mustDo(t, os.RemoveAll(filepath.Join(st.Root(), "blobs")))
	mustDo(t, os.MkdirAll(filepath.Join(st.Root(), "blobs", "sha256"), 0o755))
	again, _ := bake(Options{})
	if len(again.Cached) != 0 || again.ID != inc.ID {
		t.Errorf("after the blobs were removed: ID %s cached %v, want %s baked afresh", again.ID, again.Cached, inc.ID)
	}
}

// TestBuildKernelFromBase takes the kernel from the base by glob.
func TestBuildKernelFromBase(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   map[string]string
		wantErr string
	}{
		{"one match", map[string]string{"boot/vmlinuz-6.1.0-9-amd64": "kernel 9"}, ""},
		{"symlinked", map[string]string{"boot/vmlinuz-6.1.0-9-amd64": "kernel 9", "boot/vmlinuz": "-> vmlinuz-6.1.0-9-amd64"}, ""},
		{"none", map[string]string{"boot/config-6.1.0-9-amd64": "x"}, "matches nothing in the base"},
		{"two", map[string]string{"boot/vmlinuz-6.1.0-9-amd64": "a", "boot/vmlinuz-6.1.0-10-amd64": "b"}, "matches 2 files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			recipe := writeFixture(t, dir, time.Now())
			for p, c := range tc.files {
				full := filepath.Join(dir, "rootfs", p)
				mustDo(t, os.MkdirAll(filepath.Dir(full), 0o755))
				if target, ok := strings.CutPrefix(c, "-> "); ok {
					mustDo(t, os.Symlink(target, full))
				} else {
					mustDo(t, os.WriteFile(full, []byte(c), 0o644))
				}
			}
			glob := "/boot/vmlinuz-*"
			if tc.name == "symlinked" {
				glob = "/boot/vmlinuz"
			}
			mustDo(t, editFile(recipe, "kernel: vmlinuz", fmt.Sprintf("kernel: {base: %q}", glob)))
			r, err := LoadRecipe(recipe)
			mustDo(t, err)
			st, err := images.Open(t.TempDir())
			mustDo(t, err)
			res, err := Build(context.Background(), r, st, Options{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "kernel.base") {
					t.Fatalf("Build = %v, want a kernel.base error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := string(artifact(t, st, res, ArtifactKernel)); got != "kernel 9" {
				t.Errorf("kernel = %q, want the base's", got)
			}
		})
	}
}

// TestBuildCachedRootUpdate changes the tree in every way between builds
// (a file removed, one rewritten, a mode and an owner changed, a file
// turned into a directory, a symlink retargeted) and checks that the
// squashfs and disk baked from the incrementally updated root are the
// bytes baked from a root written afresh.
func TestBuildCachedRootUpdate(t *testing.T) {
	dir := t.TempDir()
	recipe := writeOutputsFixture(t, dir, time.Now())
	mustDo(t, editFile(recipe, "outputs: [initramfs, squashfs, disk, iso, uki]", "outputs: [squashfs, disk]"))
	root := filepath.Join(dir, "root")
	mustDo(t, os.WriteFile(filepath.Join(root, "etc/hosts"), []byte("127.0.0.1 localhost\n"), 0o644))
	mustDo(t, os.Symlink("busybox", filepath.Join(root, "bin/ls")))
	st, err := images.Open(t.TempDir())
	mustDo(t, err)
	bake := func(opt Options) Result {
		t.Helper()
		r, err := LoadRecipe(recipe)
		mustDo(t, err)
		res, err := Build(context.Background(), r, st, opt)
		mustDo(t, err)
		return res
	}
	bake(Options{})

	mustDo(t, os.Remove(filepath.Join(root, "etc/hosts")))
	mustDo(t, os.WriteFile(filepath.Join(root, "init"), []byte("#!/bin/sh\nexec /bin/sh -l\n"), 0o755))
	mustDo(t, os.Chmod(filepath.Join(root, "etc/group"), 0o600))
	mustDo(t, os.Remove(filepath.Join(root, "boot/.keep")))
	mustDo(t, os.MkdirAll(filepath.Join(root, "boot/.keep/now-a-dir"), 0o755))
	mustDo(t, os.Remove(filepath.Join(root, "bin/ls")))
	mustDo(t, os.Symlink("/bin/busybox", filepath.Join(root, "bin/ls")))
	mustDo(t, editFile(recipe, "{name: ops, uid: 1000,", "{name: ops, uid: 1001,"))
	updated := bake(Options{})
	if slices.Contains(updated.Cached, ArtifactSquashfs) || slices.Contains(updated.Cached, ArtifactDisk) {
		t.Fatalf("the tree changed but outputs came from the cache: %v", updated.Cached)
	}
	fresh := bake(Options{NoCache: true})
	updated.Cached = nil // stage-1 depends on busybox and modules only: reused
	if diff := cmp.Diff(fresh, updated); diff != "" {
		t.Errorf("outputs from the updated root differ from a root written afresh (-fresh +updated):\n%s", diff)
	}

	// An update that never finished leaves no index: the next build does
	// not trust the directory and writes it all again.
	idx := filepath.Join(st.Root(), "cache", "build", "roots", "all-outputs.index.json")
	mustDo(t, os.Remove(idx))
	mustDo(t, os.WriteFile(filepath.Join(st.Root(), "cache", "build", "roots", "all-outputs", "stray"), []byte("x"), 0o644))
	again := bake(Options{NoCache: true})
	if again.ID != fresh.ID {
		t.Errorf("after an interrupted update: ID %s, want %s", again.ID, fresh.ID)
	}
	if _, err := os.Stat(idx); err != nil {
		t.Errorf("index not written again: %v", err)
	}
}

// TestBuildDamagedDebianCache plants a truncated archive where the build
// cache keeps the recipe's Debian base: the build must fail as a build
// failure naming the archive and --no-cache, not bake a partial root.
func TestBuildDamagedDebianCache(t *testing.T) {
	dir := t.TempDir()
	recipe := writeFixture(t, dir, time.Now())
	mustDo(t, editFile(recipe, "base: rootfs", "base: {debian: {suite: bookworm, variant: essential}}"))
	r, err := LoadRecipe(recipe)
	mustDo(t, err)
	st, err := images.Open(t.TempDir())
	mustDo(t, err)
	var whole bytes.Buffer
	tarDir(t, filepath.Join(dir, "rootfs"), &whole)
	cached := filepath.Join(st.Root(), "cache", "build", "debian", r.debianSpec().Key()+".tar")
	mustDo(t, os.MkdirAll(filepath.Dir(cached), 0o755))
	// Cut inside a file's content: the archive ends mid-entry.
	cut := bytes.Index(whole.Bytes(), []byte("root:x:0:0")) + 4
	if cut < 4 {
		t.Fatal("fixture archive lacks /etc/passwd's content")
	}
	mustDo(t, os.WriteFile(cached, whole.Bytes()[:cut], 0o644))

	_, err = Build(context.Background(), r, st, Options{})
	if err == nil || !strings.Contains(err.Error(), cached) || !strings.Contains(err.Error(), "--no-cache") {
		t.Fatalf("Build = %v, want an error naming %s and --no-cache", err, cached)
	}
	if errors.As(err, new(*RecipeError)) {
		t.Errorf("Build = %v: a damaged cache is a build failure, not a recipe error", err)
	}
	if ims, _ := st.List(); len(ims) != 0 {
		t.Errorf("an image was published: %v", ims)
	}

	// The whole archive builds.
	mustDo(t, os.WriteFile(cached, whole.Bytes(), 0o644))
	res, err := Build(context.Background(), r, st, Options{})
	mustDo(t, err)
	if !slices.Contains(res.Cached, "base") {
		t.Errorf("cached = %v, want the base from the cache", res.Cached)
	}
}
