package builder

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// cpioFixture is what TestCPIO* write: names of every padding length, an
// empty file, a symlink and data of every length modulo 4.
var cpioFixture = []struct {
	h    cpioHeader
	data string
}{
	{cpioHeader{Name: "d", Mode: cpioModeDir | 0o755, NLink: 2}, ""},
	{cpioHeader{Name: "d/ab", Mode: cpioModeFile | 0o644, NLink: 1, UID: 1000, GID: 100}, "x"},
	{cpioHeader{Name: "d/abc", Mode: cpioModeFile | 0o600, NLink: 1}, "xy"},
	{cpioHeader{Name: "d/abcd", Mode: cpioModeFile | 0o640, NLink: 1}, "xyz"},
	{cpioHeader{Name: "d/abcde", Mode: cpioModeFile | 0o4755, NLink: 1}, "wxyz"},
	{cpioHeader{Name: "d/empty", Mode: cpioModeFile | 0o644, NLink: 1}, ""},
	{cpioHeader{Name: "d/link", Mode: cpioModeSymlink | 0o777, NLink: 1}, "abcde"},
	{cpioHeader{Name: "d/sub", Mode: cpioModeDir | 0o1777, NLink: 2}, ""},
	{cpioHeader{Name: "d/sub/ünïcode name", Mode: cpioModeFile | 0o644, NLink: 1}, strings.Repeat("data\n", 1000)},
}

func writeCPIOFixture(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	cw := newCPIOWriter(&buf)
	for _, f := range cpioFixture {
		h := f.h
		h.Size = int64(len(f.data))
		mustDo(t, cw.WriteHeader(&h))
		if _, err := cw.Write([]byte(f.data)); err != nil {
			t.Fatal(err)
		}
	}
	mustDo(t, cw.Close())
	return buf.Bytes()
}

func TestCPIORoundTrip(t *testing.T) {
	b := writeCPIOFixture(t)
	if len(b)%4 != 0 {
		t.Errorf("archive is %d bytes, want a multiple of 4", len(b))
	}
	var want []cpioEntry
	for i, f := range cpioFixture {
		want = append(want, cpioEntry{
			Name: f.h.Name, Ino: uint32(i + 1), Mode: f.h.Mode, UID: f.h.UID, GID: f.h.GID,
			NLink: f.h.NLink, Data: f.data,
		})
	}
	if diff := cmp.Diff(want, readCPIO(t, b)); diff != "" {
		t.Errorf("read back (-want +got):\n%s", diff)
	}
	// A fixed vector: the first header, byte for byte.
	wantHdr := "070701" + "00000001" + "000041ed" + "00000000" + "00000000" + "00000002" +
		"00000000" + "00000000" + "00000000" + "00000000" + "00000000" + "00000000" + "00000002" + "00000000" + "d\x00"
	if got := string(b[:len(wantHdr)]); got != wantHdr {
		t.Errorf("first header = %q, want %q", got, wantHdr)
	}
}

// TestCPIOSystem extracts the archive with the system's cpio and compares
// the files it made.
func TestCPIOSystem(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skipf("no cpio binary: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-i", "--quiet", "--no-absolute-filenames", "--make-directories")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(writeCPIOFixture(t))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	for _, f := range cpioFixture {
		p := filepath.Join(dir, f.h.Name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("cpio -i made no %s: %v", f.h.Name, err)
			continue
		}
		switch f.h.Mode &^ 0o7777 {
		case cpioModeFile:
			got, err := os.ReadFile(p)
			if err != nil || string(got) != f.data {
				t.Errorf("%s: content %q, %v; want %q", f.h.Name, got, err, f.data)
			}
			if got, want := unixPerm(fi.Mode()), f.h.Mode&0o7777; got != want && os.Geteuid() == 0 {
				t.Errorf("%s: mode %04o, want %04o", f.h.Name, got, want)
			}
		case cpioModeSymlink:
			if got, err := os.Readlink(p); err != nil || got != f.data {
				t.Errorf("%s: link %q, %v; want %q", f.h.Name, got, err, f.data)
			}
		case cpioModeDir:
			if !fi.IsDir() {
				t.Errorf("%s: %v, want a directory", f.h.Name, fi.Mode())
			}
		}
	}
}

func TestCPIOWriterErrors(t *testing.T) {
	var buf bytes.Buffer
	cw := newCPIOWriter(&buf)
	mustDo(t, cw.WriteHeader(&cpioHeader{Name: "a", Mode: cpioModeFile | 0o644, Size: 3}))
	if _, err := cw.Write([]byte("abcd")); err == nil {
		t.Errorf("writing 4 bytes into a 3-byte entry succeeded, want an error")
	}
	mustDo(t, cw.WriteHeader(&cpioHeader{Name: "b", Mode: cpioModeFile | 0o644, Size: 3}))
	if err := cw.WriteHeader(&cpioHeader{Name: "c"}); err == nil {
		t.Errorf("starting an entry after a short one succeeded, want an error")
	}
	for _, h := range []cpioHeader{
		{Name: ""},
		{Name: "a\x00b"},
		{Name: strings.Repeat("a", cpioMaxName)},
		{Name: "big", Size: 1 << 32},
		{Name: "neg", Size: -1},
	} {
		if err := newCPIOWriter(&buf).WriteHeader(&h); err == nil {
			t.Errorf("WriteHeader(name %.10q, size %d) succeeded, want an error", h.Name, h.Size)
		}
	}
}
