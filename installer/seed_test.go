package installer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSeedRoundTrip(t *testing.T) {
	for _, seed := range []string{"", "A=1", "KILN_IDENTITY_URL='http://x/'\nKILN_PHONEHOME_URL='http://y/'\n", strings.Repeat("é", MaxSeed/2)} {
		size := int64(3*MiB + 512)
		f, err := os.Create(filepath.Join(t.TempDir(), "disk"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.Truncate(size)
		if err := WriteSeed(f, size, seed); err != nil {
			t.Fatalf("WriteSeed: %v", err)
		}
		got, err := ReadSeed(f, size)
		if err != nil || got != seed {
			t.Errorf("ReadSeed = %.40q, %v; want %.40q", got, err, seed)
		}
		b, _ := os.ReadFile(f.Name())
		if !allBytes(b[:size-SeedAreaSize], 0) {
			t.Error("WriteSeed wrote before the seed area")
		}
		area := b[size-SeedAreaSize:]
		want := SeedMagic + seed + "\n"
		if !bytes.HasPrefix(area, []byte(want)) || !allBytes(area[len(want):], 0) {
			t.Errorf("seed area is not %.40q + zeros", want)
		}
	}
}

func TestSeedErrors(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "disk"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(2 * MiB)
	if err := WriteSeed(f, 2*MiB, strings.Repeat("x", MaxSeed+1)); err == nil {
		t.Error("WriteSeed accepted a seed over MaxSeed")
	}
	if err := WriteSeed(f, 2*MiB, "a\x00b"); err == nil {
		t.Error("WriteSeed accepted a NUL byte")
	}
	if err := WriteSeed(f, MiB-1, "a"); err == nil {
		t.Error("WriteSeed accepted a target smaller than the seed area")
	}
	if _, err := ReadSeed(f, 2*MiB); !errors.Is(err, ErrNoSeed) {
		t.Errorf("ReadSeed of zeros = %v, want ErrNoSeed", err)
	}
	f.WriteAt([]byte(SeedMagic+"no newline"), MiB)
	if _, err := ReadSeed(f, 2*MiB); err == nil || !strings.Contains(err.Error(), "newline") {
		t.Errorf("ReadSeed of an unterminated seed = %v", err)
	}
}
