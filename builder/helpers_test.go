package builder

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/kiln-dev/kiln/images"
)

// fixtureRecipe is the recipe writeFixture writes; %s is the base.
const fixtureRecipe = `name: demo
kernel: vmlinuz
base: %s
cmdline: console=ttyS0
files:
  - path: /init
    mode: "0755"
    source: init.sh
  - path: /etc/motd
    mode: "0644"
    content: "hello\n"
  - path: /usr/local/bin/tool
    mode: "0750"
    content: "#!/bin/sh\n"
    uid: 1000
    gid: 100
`

// fixtureBase describes the base tree writeFixture makes: path → mode and
// content ("-> target" for a symlink, "/" suffix for a directory).
var fixtureBase = []struct {
	path    string
	mode    os.FileMode
	content string
}{
	{"bin/", 0o755, ""},
	{"bin/busybox", 0o755, "busybox binary"},
	{"bin/copy", 0o755, "busybox binary"},
	{"bin/sh", 0, "-> busybox"},
	{"etc/", 0o755, ""},
	{"etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"},
	{"etc/motd", 0o644, "replaced by the recipe\n"},
	{"lib/modules/virtio.ko", 0o644, "module"},
	{"sbin/suid", 0o755 | os.ModeSetuid, "setuid"},
	{"tmp/", 0o777 | os.ModeSticky, ""},
	{"empty", 0o600, ""},
}

// writeFixture writes a recipe, its kernel, init.sh and a directory base
// into dir, every file with mtime, and returns the recipe's path.
func writeFixture(t *testing.T, dir string, mtime time.Time) string {
	t.Helper()
	base := filepath.Join(dir, "rootfs")
	for _, f := range fixtureBase {
		p := filepath.Join(base, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case f.path[len(f.path)-1] == '/':
			mustDo(t, os.MkdirAll(p, 0o755))
			mustDo(t, os.Chmod(p, f.mode))
		case len(f.content) > 3 && f.content[:3] == "-> ":
			mustDo(t, os.Symlink(f.content[3:], p))
		default:
			mustDo(t, os.WriteFile(p, []byte(f.content), 0o600))
			mustDo(t, os.Chmod(p, f.mode))
		}
	}
	mustDo(t, os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("not really a kernel"), 0o644))
	mustDo(t, os.WriteFile(filepath.Join(dir, "init.sh"), []byte("#!/bin/sh\necho hi\n"), 0o644))
	recipe := filepath.Join(dir, "demo.yaml")
	mustDo(t, os.WriteFile(recipe, []byte(fmt.Sprintf(fixtureRecipe, "rootfs")), 0o644))
	mustDo(t, filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.Mode()&os.ModeSymlink != 0 {
			return err
		}
		return os.Chtimes(p, mtime, mtime)
	}))
	return recipe
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// build loads and builds the recipe at path into a new store in a temp dir.
func build(t *testing.T, path string) (Result, *images.Store) {
	t.Helper()
	r, err := LoadRecipe(path)
	if err != nil {
		t.Fatalf("LoadRecipe(%q) = %v", path, err)
	}
	st, err := images.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res, err := Build(context.Background(), r, st, Options{Log: testLogger(t)})
	if err != nil {
		t.Fatalf("Build(%s) = %v", path, err)
	}
	return res, st
}

// artifact returns the bytes of res's artifact name.
func artifact(t *testing.T, st *images.Store, res Result, name string) []byte {
	t.Helper()
	for _, a := range res.Artifacts {
		if a.Name != name {
			continue
		}
		f, err := st.OpenBlob(a.Digest)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Fatalf("result has no %s artifact: %+v", name, res.Artifacts)
	return nil
}

// unzstd decompresses b.
func unzstd(t *testing.T, b []byte) []byte {
	t.Helper()
	d, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out, err := d.DecodeAll(b, nil)
	if err != nil {
		t.Fatalf("decompressing initrd: %v", err)
	}
	return out
}

// cpioEntry is one entry of a newc archive as readCPIO parses it.
type cpioEntry struct {
	Name                    string
	Ino, Mode, UID, GID     uint32
	NLink, Mtime, Dev, RDev uint32
	Data                    string
}

// readCPIO parses a newc archive independently of cpioWriter, checking
// magic, padding and the trailer. The trailer is not returned.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	for {
		if len(b)-off < cpioHdrLen {
			t.Fatalf("cpio: truncated header at %d", off)
		}
		h := b[off : off+cpioHdrLen]
		if string(h[:6]) != "070701" {
			t.Fatalf("cpio: bad magic %q at %d", h[:6], off)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("cpio: field %d at %d: %v", i, off, err)
			}
			f[i] = uint32(v)
		}
		nameSize, size := int(f[11]), int(f[6])
		nameEnd := off + cpioHdrLen + nameSize
		if nameSize == 0 || nameEnd > len(b) || b[nameEnd-1] != 0 {
			t.Fatalf("cpio: bad name at %d", off)
		}
		name := string(b[off+cpioHdrLen : nameEnd-1])
		dataOff := align4(nameEnd)
		if dataOff+size > len(b) {
			t.Fatalf("cpio: %s: truncated data", name)
		}
		if !bytes.Equal(b[nameEnd:dataOff], make([]byte, dataOff-nameEnd)) {
			t.Fatalf("cpio: %s: non-zero name padding", name)
		}
		data := string(b[dataOff : dataOff+size])
		off = align4(dataOff + size)
		if name == cpioTrailer {
			if off != len(b) {
				t.Fatalf("cpio: %d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, cpioEntry{
			Name: name, Ino: f[0], Mode: f[1], UID: f[2], GID: f[3], NLink: f[4], Mtime: f[5],
			Dev: f[7]<<8 | f[8], RDev: f[9]<<8 | f[10], Data: data,
		})
	}
}

func align4(n int) int { return (n + 3) &^ 3 }
