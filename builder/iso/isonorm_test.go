package iso

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// memFile is a fixed-size readWriterAt in memory.
type memFile struct{ b []byte }

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, errors.New("write beyond the end")
	}
	return copy(m.b[off:], p), nil
}

// rawISO stages a tree of small fake inputs, owned by uid if it is not
// -1, and returns the ISO image go-diskfs makes of it, not normalized.
func rawISO(t testing.TB, uid int) []byte {
	dir := t.TempDir()
	file := func(name string, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	in := inputs{
		kernel:   file("k", strings.Repeat("kernel", 1000)),
		initrd:   file("i", "initrd"),
		isolinux: file("isolinux.bin", strings.Repeat("\xfa", 4096)),
		ldlinux:  file("ldlinux.c32", "ldlinux"),
	}
	efi := file("efi.img", strings.Repeat("\x00", 8192))
	tree := filepath.Join(dir, "tree")
	if err := stageTree(context.Background(), tree, in, efi, "quiet"); err != nil {
		t.Fatal(err)
	}
	if uid != -1 {
		err := filepath.WalkDir(tree, func(p string, _ os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, uid, uid)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(filepath.Join(dir, "raw.iso"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := finalizeISO(f, tree, "RAW"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNormalizeISO shows that go-diskfs output varies with the time and
// the owner of the staged files, and that normalizeISO removes both.
func TestNormalizeISO(t *testing.T) {
	a := rawISO(t, -1)
	sleep()
	uid := -1
	if os.Getuid() == 0 {
		uid = 4242
	} else {
		t.Log("not root: both trees have the same owner")
	}
	b := rawISO(t, uid)
	if bytes.Equal(a, b) {
		t.Fatal("go-diskfs made the same bytes twice; normalizeISO may no longer be needed")
	}
	for _, img := range [][]byte{a, b} {
		if err := normalizeISO(&memFile{img}); err != nil {
			t.Fatalf("normalizeISO: %v", err)
		}
	}
	if !bytes.Equal(a, b) {
		t.Fatal("normalized images differ")
	}
	again := bytes.Clone(a)
	if err := normalizeISO(&memFile{again}); err != nil || !bytes.Equal(a, again) {
		t.Errorf("normalizeISO is not idempotent (err %v)", err)
	}

	iso := filepath.Join(t.TempDir(), "n.iso")
	if err := os.WriteFile(iso, a, 0o600); err != nil {
		t.Fatal(err)
	}
	out := run(t, testenv.NeedTool(t, "xorriso"), "-indev", iso, "-find", "/", "-exec", "lsdl")
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, " '/") || strings.HasPrefix(l, "Drive") {
			continue
		}
		n++
		// mode, links, owner, group, size, date, name
		f := strings.Fields(l)
		if len(f) < 9 || f[2] != "0" || f[3] != "0" || strings.Join(f[5:8], " ") != "Jan 1 1980" {
			t.Errorf("xorriso lists %q, want owner 0:0 and Jan 1 1980", l)
		}
	}
	if n != 11 {
		t.Errorf("xorriso lists %d entries, want 11:\n%s", n, out)
	}
}

func TestISODates(t *testing.T) {
	tm := time.Date(2024, 2, 29, 23, 58, 7, 120_000_000, time.FixedZone("X", 3600))
	for _, tc := range []struct {
		name string
		got  []byte
		want []byte
	}{
		{"7 epoch", isoDate7(epoch), []byte{80, 1, 1, 0, 0, 0, 0}},
		{"7 zone", isoDate7(tm), []byte{124, 2, 29, 22, 58, 7, 0}},
		{"17 epoch", isoDate17(epoch), []byte("1980010100000000\x00")},
		{"17 zone", isoDate17(tm), []byte("2024022922580712\x00")},
		{"17 unset", isoDate17(time.Time{}), []byte("0000000000000000\x00")},
	} {
		if diff := cmp.Diff(tc.want, tc.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestRewriteTF(t *testing.T) {
	short := isoDate7(epoch)
	long := isoDate17(epoch)
	junk := func(n int) []byte { return bytes.Repeat([]byte{0xaa}, n) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tc := range []struct {
		name    string
		in      []byte
		want    []byte
		wantErr bool
	}{
		{"short, 3 stamps", cat([]byte("TF\x1a\x01\x0e"), junk(21)), cat([]byte("TF\x1a\x01\x0e"), short, short, short), false},
		{"long, 1 stamp", cat([]byte("TF\x16\x01\x82"), junk(17)), cat([]byte("TF\x16\x01\x82"), long), false},
		{"no stamps", []byte("TF\x05\x01\x00"), []byte("TF\x05\x01\x00"), false},
		{"short entry", cat([]byte("TF\x0c\x01\x06"), junk(7)), nil, true},
	} {
		e := bytes.Clone(tc.in)
		err := rewriteTF(e)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: rewriteTF() = %v, want error %v", tc.name, err, tc.wantErr)
			continue
		}
		if err == nil {
			if diff := cmp.Diff(tc.want, e); diff != "" {
				t.Errorf("%s (-want +got):\n%s", tc.name, diff)
			}
		}
	}
}

// FuzzNormalizeISO feeds mutated images to normalizeISO: it must not
// panic, and what it accepts it leaves unchanged the second time.
func FuzzNormalizeISO(f *testing.F) {
	f.Add(rawISO(f, -1))
	f.Add(make([]byte, 20*isoBlock))
	f.Fuzz(func(t *testing.T, b []byte) {
		if normalizeISO(&memFile{b}) != nil {
			return
		}
		again := bytes.Clone(b)
		if err := normalizeISO(&memFile{again}); err != nil {
			t.Fatalf("second normalizeISO: %v", err)
		}
		if !bytes.Equal(b, again) {
			t.Fatal("normalizeISO is not idempotent")
		}
	})
}
