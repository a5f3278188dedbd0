package squashfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// node is one entry of the synthetic tree that writeTree makes.
type node struct {
	path     string
	kind     byte   // 'd' directory, 'f' file, 'l' symlink, 'h' hard link, 'c' char device, 'p' FIFO
	perm     uint32 // mode bits 07777
	uid, gid int
	data     string // file content, symlink target, hard link target, or "major,minor"
	ls       string // expected mode column of unsquashfs -lln
}

// bigData is a file spanning several 128 KiB blocks that does not compress.
var bigData = func() string {
	r := rand.New(rand.NewChaCha8([32]byte{'k', 'i', 'l', 'n'}))
	b := make([]byte, 300_000)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}()

var testTree = []node{
	{"bin", 'd', 0o755, 0, 0, "", "drwxr-xr-x"},
	{"bin/busybox", 'f', 0o755, 0, 0, "not really busybox", "-rwxr-xr-x"},
	{"bin/sh", 'l', 0, 0, 0, "busybox", "lrwxrwxrwx"},
	{"bin/su", 'f', 0o4755, 0, 0, "setuid", "-rwsr-xr-x"},
	{"dev", 'd', 0o755, 0, 0, "", "drwxr-xr-x"},
	{"dev/null", 'c', 0o666, 0, 0, "1,3", "crw-rw-rw-"},
	{"etc", 'd', 0o755, 0, 0, "", "drwxr-xr-x"},
	{"etc/motd", 'f', 0o644, 0, 0, "hello\n", "-rw-r--r--"},
	{"etc/shadow", 'f', 0o640, 0, 42, "root:*:1::::::\n", "-rw-r-----"},
	{"home", 'd', 0o755, 0, 0, "", "drwxr-xr-x"},
	{"home/user", 'd', 0o700, 1000, 1000, "", "drwx------"},
	{"home/user/notes", 'f', 0o600, 1000, 1000, "mine", "-rw-------"},
	{"run", 'd', 0o755, 0, 0, "", "drwxr-xr-x"},
	{"run/fifo", 'p', 0o620, 0, 5, "", "prw--w----"},
	{"tmp", 'd', 0o1777, 0, 0, "", "drwxrwxrwt"},
	{"usr", 'd', 0o755, 0, 0, "", "drwxr-xr-x"},
	{"usr/lib", 'd', 0o755, 0, 0, "", "drwxr-xr-x"},
	{"usr/lib/big", 'f', 0o644, 0, 0, bigData, "-rw-r--r--"},
	{"usr/lib/big-again", 'h', 0, 0, 0, "usr/lib/big", "-rw-r--r--"},
	{"usr/lib/dangling", 'l', 0, 0, 0, "/nowhere/at/all", "lrwxrwxrwx"},
	{"usr/lib/empty", 'f', 0o644, 0, 0, "", "-rw-r--r--"},
	{"usr/lib/owned", 'l', 0, 7, 8, "empty", "lrwxrwxrwx"},
}

// writeTree makes testTree in a new directory dir (mode 0700, as
// os.MkdirTemp makes them), every file and directory with mtime.
func writeTree(t *testing.T, dir string, mtime time.Time) {
	t.Helper()
	mustDo(t, os.MkdirAll(filepath.Dir(dir), 0o755))
	mustDo(t, os.Mkdir(dir, 0o700))
	mustDo(t, os.Chmod(dir, 0o700))
	for _, n := range testTree {
		p := filepath.Join(dir, n.path)
		switch n.kind {
		case 'd':
			mustDo(t, os.Mkdir(p, 0o700))
		case 'f':
			mustDo(t, os.WriteFile(p, []byte(n.data), 0o600))
		case 'l':
			mustDo(t, os.Symlink(n.data, p))
		case 'h':
			mustDo(t, os.Link(filepath.Join(dir, n.data), p))
			continue
		case 'c':
			var major, minor int
			fmt.Sscanf(n.data, "%d,%d", &major, &minor)
			mustDo(t, syscall.Mknod(p, syscall.S_IFCHR|0o600, major<<8|minor))
		case 'p':
			mustDo(t, syscall.Mkfifo(p, 0o600))
		}
		mustDo(t, os.Lchown(p, n.uid, n.gid))
		if n.kind != 'l' {
			mustDo(t, syscall.Chmod(p, n.perm))
		}
	}
	// An extended attribute, where the file system has them.
	if err := syscall.Setxattr(filepath.Join(dir, "etc/motd"), "user.kiln", []byte("yes"), 0); err != nil {
		t.Logf("no extended attribute: %v", err)
	}
	mustDo(t, filepath.Walk(dir, func(p string, fi fs.FileInfo, err error) error {
		if err != nil || fi.Mode()&fs.ModeSymlink != 0 {
			return err
		}
		return os.Chtimes(p, mtime, mtime)
	}))
}

// TestMakeReproducible builds the same tree, written at different paths
// with different mtimes, with one and with two processors, and expects the
// same bytes; then checks the listing and the extraction with unsquashfs.
func TestMakeReproducible(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.NeedTool(t, "mksquashfs")
	testenv.NeedTool(t, "unsquashfs")
	tmp := t.TempDir()
	dirA := filepath.Join(tmp, "a")
	dirB := filepath.Join(tmp, "b", "somewhere", "else")
	writeTree(t, dirA, time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC))
	writeTree(t, dirB, time.Now().Add(time.Hour))
	outA := filepath.Join(tmp, "a.squashfs")
	outB := filepath.Join(tmp, "b.squashfs")
	ctx := context.Background()
	mustDo(t, Make(ctx, dirA, outA, Options{Processors: 1, Log: testLogger(t)}))
	mustDo(t, Make(ctx, dirB, outB, Options{Processors: 2, Log: testLogger(t)}))
	a, err := os.ReadFile(outA)
	mustDo(t, err)
	b, err := os.ReadFile(outB)
	mustDo(t, err)
	if !bytes.Equal(a, b) {
		i := 0
		for i < len(a) && i < len(b) && a[i] == b[i] {
			i++
		}
		t.Fatalf("Make gave different bytes for the same tree: %d and %d bytes, first difference at %d", len(a), len(b), i)
	}
	t.Logf("%d bytes, sha256 %x", len(a), sha256.Sum256(a))

	if s := run(t, "unsquashfs", "-s", outA); !strings.Contains(s, "Compression zstd") || !strings.Contains(s, "Block size 131072") {
		t.Errorf("unsquashfs -s: not zstd with 128 KiB blocks:\n%s", s)
	}
	if got := strings.TrimSpace(run(t, "unsquashfs", "-mkfs-time", outA)); got != "0" {
		t.Errorf("unsquashfs -mkfs-time = %s, want 0", got)
	}

	want := []lsEntry{{Path: "", Mode: "drwxr-xr-x", Owner: "0/0", Time: epoch}}
	for _, n := range testTree {
		e := lsEntry{Path: "/" + n.path, Mode: n.ls, Owner: fmt.Sprintf("%d/%d", n.uid, n.gid), Time: epoch}
		switch n.kind {
		case 'f':
			e.Size = fmt.Sprint(len(n.data))
		case 'h':
			e.Size = fmt.Sprint(len(bigData))
		case 'l':
			e.Size, e.Link = fmt.Sprint(len(n.data)), n.data
		case 'c':
			e.Size = n.data
		case 'p':
			e.Size = "0"
		}
		want = append(want, e)
	}
	got := parseLLN(t, run(t, "unsquashfs", "-lln", "-UTC", outA))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("unsquashfs -lln (-want +got):\n%s", diff)
	}

	x := filepath.Join(tmp, "x")
	run(t, "unsquashfs", "-q", "-n", "-d", x, outA)
	if diff := cmp.Diff(describe(t, dirA), describe(t, x)); diff != "" {
		t.Errorf("unsquashfs -d: extracted tree differs from the source (-source +extracted):\n%s", diff)
	}
}

// epoch is how unsquashfs -UTC shows time 0.
const epoch = "1970-01-01 00:00"

// lsEntry is one line of unsquashfs -lln. Size is the size for files and
// symlinks, "major,minor" for devices, and empty for directories (whose
// size depends on the squashfs layout).
type lsEntry struct {
	Path, Mode, Owner, Size, Time, Link string
}

var llnLine = regexp.MustCompile(`^(\S{10}) (\d+/\d+) +(\d+|\d+, *\d+) (\d{4}-\d\d-\d\d \d\d:\d\d) squashfs-root(.*)$`)

// parseLLN parses the output of unsquashfs -lln -UTC.
func parseLLN(t *testing.T, out string) []lsEntry {
	t.Helper()
	var es []lsEntry
	for _, line := range strings.Split(out, "\n") {
		m := llnLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		e := lsEntry{Mode: m[1], Owner: m[2], Size: strings.ReplaceAll(m[3], " ", ""), Time: m[4], Path: m[5]}
		if e.Mode[0] == 'd' {
			e.Size = ""
		}
		if e.Mode[0] == 'l' {
			e.Path, e.Link, _ = strings.Cut(e.Path, " -> ")
		}
		es = append(es, e)
	}
	if len(es) == 0 {
		t.Fatalf("no entries in unsquashfs -lln output:\n%s", out)
	}
	return es
}

// describe returns, for each entry under dir but dir itself, its type and
// mode bits, owner, and content digest, symlink target or device number.
func describe(t *testing.T, dir string) map[string]string {
	t.Helper()
	d := map[string]string{}
	mustDo(t, filepath.Walk(dir, func(p string, fi fs.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		s := fmt.Sprintf("%o %d:%d", st.Mode, st.Uid, st.Gid)
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s += fmt.Sprintf(" sha256:%x nlink %d", sha256.Sum256(b), st.Nlink)
			x := make([]byte, 64)
			if n, err := syscall.Getxattr(p, "user.kiln", x); err == nil {
				s += fmt.Sprintf(" user.kiln=%s", x[:n])
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			s += " -> " + l
		case fi.Mode()&fs.ModeDevice != 0:
			s += fmt.Sprintf(" dev %d", st.Rdev)
		}
		rel, _ := filepath.Rel(dir, p)
		d[rel] = s
		return nil
	}))
	return d
}

// TestMakeErrors checks that Make names what failed and leaves no file
// at out, nor a temporary file beside it.
func TestMakeErrors(t *testing.T) {
	testenv.NeedTool(t, "mksquashfs")
	tmp := t.TempDir()
	tree := filepath.Join(tmp, "tree")
	mustDo(t, os.MkdirAll(filepath.Join(tree, "etc"), 0o755))
	mustDo(t, os.WriteFile(filepath.Join(tree, "etc", "big"), []byte(bigData), 0o644))
	file := filepath.Join(tmp, "file")
	mustDo(t, os.WriteFile(file, nil, 0o644))
	fake := filepath.Join(tmp, "fake-mksquashfs")
	mustDo(t, os.WriteFile(fake, []byte("#!/bin/sh\necho 'FATAL ERROR: no can do' >&2\nexit 1\n"), 0o755))

	// full is a tmpfs too small for the tree: the real mksquashfs fails.
	full := filepath.Join(tmp, "full")
	mustDo(t, os.Mkdir(full, 0o755))
	fullErr := syscall.Mount("kiln-test", full, "tmpfs", 0, "size=64k")
	if fullErr == nil {
		t.Cleanup(func() { syscall.Unmount(full, 0) })
	}

	for _, tc := range []struct {
		name, dir, outDir, cmd string
		want                   []string
	}{
		{name: "missing dir", dir: filepath.Join(tmp, "nope"), want: []string{"nope", "no such file"}},
		{name: "not a directory", dir: file, want: []string{file, "not a directory"}},
		{name: "output inside", dir: tree, outDir: tree, want: []string{"inside"}},
		{name: "mksquashfs fails", dir: tree, cmd: fake, want: []string{"fake-mksquashfs", "exit status 1", "FATAL ERROR: no can do"}},
		{name: "disk full", dir: tree, outDir: full, want: []string{"running mksquashfs for " + tree, "exit status"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.outDir == full && fullErr != nil {
				if os.Getenv("CI") == "true" {
					t.Fatalf("mounting a small tmpfs: %v", fullErr)
				}
				t.Skipf("mounting a small tmpfs: %v", fullErr)
			}
			if tc.cmd != "" {
				old := mksquashfs
				mksquashfs = tc.cmd
				defer func() { mksquashfs = old }()
			}
			outDir := tc.outDir
			if outDir == "" {
				outDir = t.TempDir()
			}
			out := filepath.Join(outDir, "out.squashfs")
			err := Make(context.Background(), tc.dir, out, Options{Log: testLogger(t)})
			if err == nil {
				t.Fatalf("Make(%s) = nil, want an error", tc.dir)
			}
			t.Logf("Make(%s) = %v", tc.dir, err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Make(%s) = %q, want it to mention %q", tc.dir, err, w)
				}
			}
			if _, err := os.Lstat(out); err == nil {
				t.Errorf("%s exists after a failed Make", out)
			}
			ents, _ := filepath.Glob(filepath.Join(outDir, ".out.squashfs.tmp-*"))
			if len(ents) != 0 {
				t.Errorf("temporary files left behind: %v", ents)
			}
		})
	}
}

// TestMakeCanceled checks that Make stops mksquashfs when ctx ends.
func TestMakeCanceled(t *testing.T) {
	tmp := t.TempDir()
	fake := filepath.Join(tmp, "slow-mksquashfs")
	mustDo(t, os.WriteFile(fake, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755))
	old := mksquashfs
	mksquashfs = fake
	defer func() { mksquashfs = old }()
	mustDo(t, os.Mkdir(filepath.Join(tmp, "tree"), 0o755))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	out := filepath.Join(tmp, "out.squashfs")
	start := time.Now()
	err := Make(ctx, filepath.Join(tmp, "tree"), out, Options{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Make = %v, want %v", err, context.DeadlineExceeded)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Make returned %v after ctx ended", d)
	}
	if _, err := os.Lstat(out); err == nil {
		t.Errorf("%s exists after a canceled Make", out)
	}
}
