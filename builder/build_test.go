package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/images"
)

func TestBuildReproducible(t *testing.T) {
	// Two copies of the inputs in different folders, with different mtimes.
	r1 := writeFixture(t, t.TempDir(), time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC))
	r2 := writeFixture(t, filepath.Join(t.TempDir(), "deeper", "elsewhere"), time.Now())
	res1, st1 := build(t, r1)
	res2, st2 := build(t, r2)
	if diff := cmp.Diff(res1, res2); diff != "" {
		t.Errorf("two builds of the same inputs differ (-first +second):\n%s", diff)
	}
	if !bytes.Equal(artifact(t, st1, res1, "initrd"), artifact(t, st2, res2, "initrd")) {
		t.Errorf("two builds of the same inputs baked different initrd bytes")
	}
	m1, err := st1.Get(res1.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := images.Manifest{SchemaVersion: 1, Name: "demo", Inputs: res1.Inputs, Cmdline: "console=ttyS0", Artifacts: res1.Artifacts}
	if diff := cmp.Diff(want, m1); diff != "" {
		t.Errorf("published manifest (-want +got):\n%s", diff)
	}
	if got := artifact(t, st1, res1, "kernel"); string(got) != "not really a kernel" {
		t.Errorf("kernel artifact = %q, want the kernel file", got)
	}
}

func TestBuildChangesID(t *testing.T) {
	baseline, _ := build(t, writeFixture(t, t.TempDir(), time.Now()))
	for _, tc := range []struct {
		name   string
		change func(dir string) error
	}{
		{"base file content", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "rootfs/etc/passwd"), []byte("root:x:0:0::/:/bin/sh\n"), 0o644)
		}},
		{"base file mode", func(dir string) error { return os.Chmod(filepath.Join(dir, "rootfs/etc/passwd"), 0o600) }},
		{"source content", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "init.sh"), []byte("#!/bin/sh\n"), 0o644)
		}},
		{"symlink target", func(dir string) error {
			p := filepath.Join(dir, "rootfs/bin/sh")
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.Symlink("/bin/busybox", p)
		}},
		{"kernel", func(dir string) error { return os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("another"), 0o644) }},
		{"recipe mode", func(dir string) error {
			return editFile(filepath.Join(dir, "demo.yaml"), `mode: "0750"`, `mode: "0700"`)
		}},
		{"recipe cmdline", func(dir string) error {
			return editFile(filepath.Join(dir, "demo.yaml"), "console=ttyS0", "console=tty0")
		}},
		{"new empty dir", func(dir string) error { return os.Mkdir(filepath.Join(dir, "rootfs/srv"), 0o755) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			recipe := writeFixture(t, dir, time.Now())
			mustDo(t, tc.change(dir))
			got, _ := build(t, recipe)
			if got.ID == baseline.ID || got.Inputs == baseline.Inputs {
				t.Errorf("after changing the %s: ID %s, inputs %s; want both to differ from the baseline", tc.name, got.ID, got.Inputs)
			}
		})
	}
}

func editFile(p, old, new string) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if !bytes.Contains(b, []byte(old)) {
		return fmt.Errorf("%s has no %q", p, old)
	}
	return os.WriteFile(p, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644)
}

func TestBuildTree(t *testing.T) {
	res, st := build(t, writeFixture(t, t.TempDir(), time.Now()))
	entries := readCPIO(t, unzstd(t, artifact(t, st, res, "initrd")))
	type ent struct {
		Name           string
		Mode, UID, GID uint32
		Data           string
	}
	var got []ent
	for i, e := range entries {
		if e.Ino != uint32(i+1) || e.Mtime != 0 || e.Dev != 0 || e.RDev != 0 {
			t.Errorf("%s: ino %d mtime %d dev %d rdev %d, want ino %d and zeros", e.Name, e.Ino, e.Mtime, e.Dev, e.RDev, i+1)
		}
		got = append(got, ent{e.Name, e.Mode, e.UID, e.GID, e.Data})
	}
	info := fmt.Sprintf("KILN_IMAGE_NAME='demo'\nKILN_INPUTS='%s'\n", res.Inputs)
	want := []ent{
		{"bin", 0o40755, 0, 0, ""},
		{"bin/busybox", 0o100755, 0, 0, "busybox binary"},
		{"bin/copy", 0o100755, 0, 0, "busybox binary"},
		{"bin/sh", 0o120777, 0, 0, "busybox"},
		{"empty", 0o100600, 0, 0, ""},
		{"etc", 0o40755, 0, 0, ""},
		{"etc/kiln", 0o40755, 0, 0, ""},
		{"etc/kiln/image", 0o100644, 0, 0, info},
		{"etc/motd", 0o100644, 0, 0, "hello\n"},
		{"etc/passwd", 0o100644, 0, 0, "root:x:0:0:root:/root:/bin/sh\n"},
		{"init", 0o100755, 0, 0, "#!/bin/sh\necho hi\n"},
		{"lib", 0o40755, 0, 0, ""},
		{"lib/modules", 0o40755, 0, 0, ""},
		{"lib/modules/virtio.ko", 0o100644, 0, 0, "module"},
		{"sbin", 0o40755, 0, 0, ""},
		{"sbin/suid", 0o104755, 0, 0, "setuid"},
		{"tmp", 0o41777, 0, 0, ""},
		{"usr", 0o40755, 0, 0, ""},
		{"usr/local", 0o40755, 0, 0, ""},
		{"usr/local/bin", 0o40755, 0, 0, ""},
		{"usr/local/bin/tool", 0o100750, 1000, 100, "#!/bin/sh\n"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("initrd entries (-want +got):\n%s", diff)
	}
}

func TestBuildOwner(t *testing.T) {
	dir := t.TempDir()
	recipe := writeFixture(t, dir, time.Now())
	mustDo(t, editFile(recipe, "cmdline:", "owner: {uid: 7, gid: 8}\ncmdline:"))
	res, st := build(t, recipe)
	for _, e := range readCPIO(t, unzstd(t, artifact(t, st, res, "initrd"))) {
		wantUID, wantGID := uint32(7), uint32(8)
		if e.Name == "usr/local/bin/tool" {
			wantUID, wantGID = 1000, 100
		}
		if e.UID != wantUID || e.GID != wantGID {
			t.Errorf("%s: owner %d:%d, want %d:%d", e.Name, e.UID, e.GID, wantUID, wantGID)
		}
	}
}

// TestBuildSystemTools checks the initrd with the system's zstd and cpio.
func TestBuildSystemTools(t *testing.T) {
	for _, tool := range []string{"zstd", "cpio"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s binary: %v", tool, err)
		}
	}
	res, st := build(t, writeFixture(t, t.TempDir(), time.Now()))
	blob := filepath.Join(st.Root(), "blobs", "sha256", artifactDigest(t, res, "initrd").Hex())
	// zstd -t checks the frame, its checksum and the window the kernel needs.
	if out, err := exec.Command("zstd", "-t", "-q", "--memory=8MB", blob).CombinedOutput(); err != nil {
		t.Fatalf("zstd -t --memory=8MB: %v\n%s", err, out)
	}
	out, err := exec.Command("sh", "-c", `zstd -dc "$1" | cpio -it --quiet`, "sh", blob).CombinedOutput()
	if err != nil {
		t.Fatalf("zstd -dc | cpio -it: %v\n%s", err, out)
	}
	got := strings.Fields(string(out))
	want := []string{"bin", "bin/busybox", "bin/copy", "bin/sh", "empty", "etc", "etc/kiln", "etc/kiln/image",
		"etc/motd", "etc/passwd", "init", "lib", "lib/modules", "lib/modules/virtio.ko", "sbin", "sbin/suid",
		"tmp", "usr", "usr/local", "usr/local/bin", "usr/local/bin/tool"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cpio -it (-want +got):\n%s", diff)
	}
}

func artifactDigest(t *testing.T, res Result, name string) images.Digest {
	for _, a := range res.Artifacts {
		if a.Name == name {
			return a.Digest
		}
	}
	t.Fatalf("no %s artifact", name)
	return ""
}

// TestBuildFailureLeavesNothing changes a file after the scan hashed it:
// the build fails, and no initrd, manifest or temporary file is left.
func TestBuildFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	r, err := LoadRecipe(writeFixture(t, dir, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	st, err := images.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	changed := false
	opt := Options{Log: testLogger(t), Progress: func(stage string, done, total int64) {
		if stage == "initrd" && !changed {
			changed = true // bin/busybox is written; sbin/suid is not yet
			mustDo(t, os.WriteFile(filepath.Join(dir, "rootfs/sbin/suid"), []byte("SETUID"), 0o755))
		}
	}}
	_, err = Build(context.Background(), r, st, opt)
	if !errors.Is(err, errChanged) {
		t.Fatalf("Build with a file changed mid-build = %v, want %v", err, errChanged)
	}
	t.Logf("Build: %v", err)
	for sub, want := range map[string]int{"tmp": 0, "manifests/sha256": 0, "blobs/sha256": 1} { // the kernel blob
		ents, err := os.ReadDir(filepath.Join(st.Root(), sub))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != want {
			t.Errorf("%s holds %d files after a failed build, want %d", sub, len(ents), want)
		}
	}
}

func TestBuildCanceled(t *testing.T) {
	r, err := LoadRecipe(writeFixture(t, t.TempDir(), time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	st, err := images.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Build(ctx, r, st, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Build(canceled) = %v, want %v", err, context.Canceled)
	}
	if imgs, err := st.List(); err != nil || len(imgs) != 0 {
		t.Errorf("store after a canceled build: %v, %v; want no images", imgs, err)
	}
}

func TestBuildConflicts(t *testing.T) {
	for _, tc := range []struct {
		name, file, wantField, wantErr string
	}{
		{"file over a base directory", "/lib/modules", "files[3].path", "/lib/modules is a directory in the base"},
		{"file under a base symlink", "/bin/sh/x", "files[3].path", "parent /bin/sh is a symlink in the base"},
		{"file under a base file", "/etc/passwd/x", "files[3].path", "parent /etc/passwd is a file in the base"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recipe := writeFixture(t, t.TempDir(), time.Now())
			b, err := os.ReadFile(recipe)
			mustDo(t, err)
			b = append(b, fmt.Sprintf("  - {path: %s, mode: \"0644\", content: x}\n", tc.file)...)
			mustDo(t, os.WriteFile(recipe, b, 0o644))
			r, err := LoadRecipe(recipe)
			mustDo(t, err)
			st, err := images.Open(t.TempDir())
			mustDo(t, err)
			_, err = Build(context.Background(), r, st, Options{})
			var re *RecipeError
			if !errors.As(err, &re) || re.Field != tc.wantField || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Build = %v, want a %s error containing %q", err, tc.wantField, tc.wantErr)
			}
			if re.Line != 17 {
				t.Errorf("error line = %d, want 17", re.Line)
			}
		})
	}
}

// TestBuildSkipsSpecialFiles checks that a FIFO in a directory base is left
// out: the image is the one built without it.
func TestBuildSkipsSpecialFiles(t *testing.T) {
	want, _ := build(t, writeFixture(t, t.TempDir(), time.Now()))
	dir := t.TempDir()
	recipe := writeFixture(t, dir, time.Now())
	mustDo(t, syscall.Mkfifo(filepath.Join(dir, "rootfs/tmp/fifo"), 0o644))
	got, _ := build(t, recipe)
	if got.ID != want.ID {
		t.Errorf("with a FIFO in the base: ID %s, want %s as without it", got.ID, want.ID)
	}
}
