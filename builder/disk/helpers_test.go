package disk

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	tinyKernel = "../../.cache/tiny/vmlinuz"
	longTarget = "/usr/lib/a/very/long/symlink/target/that/does/not/fit/in/the/inode/itself"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// kernel returns the test kernel, skipping (failing in CI) without it.
func kernel(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(tinyKernel); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no test kernel: %v", err)
		}
		t.Skipf("no test kernel (run scripts/fetch-tiny-inputs.sh): %v", err)
	}
	return tinyKernel
}

// run runs a tool and returns its standard output, failing the test on
// error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	bin, err := findTool(name)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// rootEntry is one entry of the synthetic root tree.
type rootEntry struct {
	path     string
	mode     os.FileMode // type bits and permissions
	uid, gid int
	data     string // file content or symlink target
	hardlink string // for a hard link: the path it links to
}

// testRoot lists the synthetic root tree, parents before children.
func testRoot() []rootEntry {
	es := []rootEntry{
		{path: "bin", mode: os.ModeDir | 0o755},
		{path: "bin/tool", mode: 0o755, data: "#!/bin/sh\necho tool\n"},
		{path: "bin/tool2", hardlink: "bin/tool"},
		{path: "bin/su", mode: os.ModeSetuid | 0o755, data: "setuid"},
		{path: "etc", mode: os.ModeDir | 0o755},
		{path: "etc/passwd", mode: 0o644, data: "root:x:0:0:root:/root:/bin/sh\n"},
		{path: "etc/link", mode: os.ModeSymlink | 0o777, data: "passwd"},
		{path: "etc/long", mode: os.ModeSymlink | 0o777, data: longTarget},
		{path: "home", mode: os.ModeDir | 0o755},
		{path: "home/user", mode: os.ModeDir | 0o700, uid: 1000, gid: 1000},
		{path: "home/user/.profile", mode: 0o600, uid: 1000, gid: 1000, data: "PS1='$ '\n"},
		{path: "tmp", mode: os.ModeDir | os.ModeSticky | 0o777},
		{path: "var", mode: os.ModeDir | 0o755},
		{path: "var/empty", mode: os.ModeDir | 0o755},
		{path: "var/zeros", mode: 0o644, data: strings.Repeat("\x00", 1<<20) + "end"},
		{path: "usr", mode: os.ModeDir | 0o755},
		{path: "usr/share", mode: os.ModeDir | 0o755},
		{path: "usr/share/big", mode: 0o644, data: strings.Repeat("0123456789abcdef", 100000)},
		{path: "usr/share/many", mode: os.ModeDir | 0o755},
	}
	// Enough names for a directory of several blocks, hashed by ext4.
	for i := range 300 {
		es = append(es, rootEntry{path: fmt.Sprintf("usr/share/many/file-with-a-longish-name-%03d", i), mode: 0o644, data: fmt.Sprint(i)})
	}
	return es
}

// makeRoot creates the synthetic root tree in a new directory, in
// reverse order of names within each directory and with var/zeros
// sparse if reverse, and sets every mtime to mtime.
func makeRoot(t *testing.T, mtime time.Time, reverse bool) string {
	t.Helper()
	dir := t.TempDir()
	es := testRoot()
	if reverse {
		// Parents still come first: reverse only the files.
		var dirs, files []rootEntry
		for _, e := range es {
			if e.mode.IsDir() {
				dirs = append(dirs, e)
			} else {
				files = append([]rootEntry{e}, files...)
			}
		}
		// A hard link needs its target first.
		for i, e := range files {
			if e.hardlink != "" {
				files = append(files[:i], files[i+1:]...)
				files = append(files, e)
				break
			}
		}
		es = append(dirs, files...)
	}
	for _, e := range es {
		p := filepath.Join(dir, e.path)
		var err error
		switch {
		case e.hardlink != "":
			err = os.Link(filepath.Join(dir, e.hardlink), p)
		case e.mode.IsDir():
			err = os.Mkdir(p, 0o700)
		case e.mode&os.ModeSymlink != 0:
			err = os.Symlink(e.data, p)
		case reverse && e.path == "var/zeros":
			// The same bytes, but with a hole.
			err = os.WriteFile(p, nil, 0o600)
			if err == nil {
				err = os.Truncate(p, int64(len(e.data))-3)
			}
			if err == nil {
				err = appendFile(p, "end")
			}
		default:
			err = os.WriteFile(p, []byte(e.data), 0o600)
		}
		if err == nil && e.hardlink == "" {
			err = os.Lchown(p, e.uid, e.gid)
		}
		if err == nil && e.hardlink == "" && e.mode&os.ModeSymlink == 0 {
			err = os.Chmod(p, e.mode)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.Mode()&os.ModeSymlink != 0 {
			return err
		}
		return os.Chtimes(p, mtime, mtime)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func appendFile(p, data string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeFile writes data to a new file in a temp dir and returns its path.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// fileSHA256 returns the hex SHA-256 of the file at p.
func fileSHA256(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// extract copies size bytes at off of the image img into a new sparse
// file and returns its path.
func extract(t *testing.T, img string, off, size int64) string {
	t.Helper()
	in, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	p := filepath.Join(t.TempDir(), "part.img")
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Truncate(size); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for done := int64(0); done < size; done += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), size-done)]
		if _, err := in.ReadAt(b, off+done); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(b, zero[:len(b)]) {
			continue
		}
		if _, err := out.WriteAt(b, done); err != nil {
			t.Fatal(err)
		}
	}
	return p
}
