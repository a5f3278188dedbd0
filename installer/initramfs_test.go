package installer

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// cpioEntry is one member read back by readNewc.
type cpioEntry struct {
	Name         string
	Mode         uint32
	UID, GID     uint32
	NLink        uint32
	RMajor, RMin uint32
	Data         []byte
}

// readNewc is an independent newc reader: it checks magic, alignment and
// the trailer, and returns the members before it.
func readNewc(b []byte) ([]cpioEntry, error) {
	var out []cpioEntry
	off := 0
	for {
		if off%4 != 0 {
			return nil, fmt.Errorf("header at %d is not 4-aligned", off)
		}
		if len(b)-off < 110 {
			return nil, fmt.Errorf("truncated header at %d", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			return nil, fmt.Errorf("bad magic %q at %d", h[:6], off)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("field %d at %d: %v", i, off, err)
			}
			f[i] = uint32(v)
		}
		size, namesize := int(f[6]), int(f[11])
		nameEnd := off + 110 + namesize
		if namesize == 0 || nameEnd > len(b) || b[nameEnd-1] != 0 {
			return nil, fmt.Errorf("bad name at %d", off)
		}
		name := string(b[off+110 : nameEnd-1])
		data := nameEnd + pad4(int64(110+namesize))
		end := data + size
		if end > len(b) {
			return nil, fmt.Errorf("%s: truncated data", name)
		}
		if name == "TRAILER!!!" {
			if rest := b[end:]; len(rest) > 3 || !allBytes(rest, 0) {
				return nil, fmt.Errorf("%d bytes after the trailer", len(rest))
			}
			return out, nil
		}
		out = append(out, cpioEntry{Name: name, Mode: f[1], UID: f[2], GID: f[3], NLink: f[4], RMajor: f[9], RMin: f[10], Data: b[data:end]})
		off = end + pad4(int64(size))
	}
}

func TestInitramfs(t *testing.T) {
	for _, size := range []int{0, 1, 4097, 70001} { // every padding
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			bin := make([]byte, size)
			rand.Read(bin)
			p := filepath.Join(t.TempDir(), "kiln-installer")
			if err := os.WriteFile(p, bin, 0o755); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := Initramfs(&buf, p); err != nil {
				t.Fatal(err)
			}
			got, err := readNewc(buf.Bytes())
			if err != nil {
				t.Fatalf("reading the archive back: %v", err)
			}
			want := []cpioEntry{
				{Name: "dev", Mode: 0o40755, NLink: 2, Data: []byte{}},
				{Name: "dev/console", Mode: 0o20600, NLink: 1, RMajor: 5, RMin: 1, Data: []byte{}},
				{Name: "etc", Mode: 0o40755, NLink: 2, Data: []byte{}},
				{Name: "proc", Mode: 0o40555, NLink: 2, Data: []byte{}},
				{Name: "sys", Mode: 0o40555, NLink: 2, Data: []byte{}},
				{Name: "tmp", Mode: 0o41777, NLink: 2, Data: []byte{}},
				{Name: "kiln-installer", Mode: 0o100755, NLink: 1, Data: bin},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("archive (-want +got):\n%s", diff)
			}
			// Reproducible.
			var again bytes.Buffer
			if err := Initramfs(&again, p); err != nil || !bytes.Equal(again.Bytes(), buf.Bytes()) {
				t.Errorf("a second archive differs (err %v)", err)
			}
		})
	}
}

// TestInitramfsCpio lets GNU cpio (Debian package cpio) list the archive.
func TestInitramfsCpio(t *testing.T) {
	cpio := testenv.NeedTool(t, "cpio")
	p := filepath.Join(t.TempDir(), "bin")
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	var buf bytes.Buffer
	if err := Initramfs(&buf, p); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(cpio, "-t", "-v", "--quiet")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v: %s", err, out)
	}
	for _, want := range []string{"crw-------", "5,   1", "dev/console", "-rwxr-xr-x", "kiln-installer", "drwxrwxrwt", "tmp"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("cpio -tv output lacks %q:\n%s", want, out)
		}
	}
}

func TestInitramfsErrors(t *testing.T) {
	if err := Initramfs(io.Discard, filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Initramfs of a missing binary = %v, want ErrNotExist", err)
	}
	if err := Initramfs(io.Discard, t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Initramfs of a directory = %v", err)
	}
}
