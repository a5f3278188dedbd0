package disk

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// copyFile copies src to a new file in a new temp dir, named name.
func copyFile(t *testing.T, src, name string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, name, b)
}

// TestReproducible writes the same Spec twice from different copies of
// everything (host paths, a root named through a symlink, creation order,
// holes, mtimes, ctimes, temp dirs, environment, output names) and wants
// the same bytes; another seed must give other bytes.
func TestReproducible(t *testing.T) {
	testenv.NeedTools(t, "mke2fs", "sfdisk")
	rootA := makeRoot(t, time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), false)
	time.Sleep(20 * time.Millisecond) // other ctimes for the second tree
	rootB := makeRoot(t, time.Date(2024, 6, 7, 8, 9, 10, 11, time.UTC), true)

	a := testSpec(t, rootA)
	b := a
	b.Root = filepath.Join(t.TempDir(), "root-link") // a symlink to the tree
	if err := os.Symlink(rootB, b.Root); err != nil {
		t.Fatal(err)
	}
	b.Kernel = copyFile(t, a.Kernel, "bzImage")
	b.Initrd = copyFile(t, a.Initrd, "initrd.img")
	b.Bootloader = copyFile(t, DefaultBootloader, "sd-boot.efi")
	if err := os.Chtimes(b.Kernel, time.Unix(1e9, 0), time.Unix(2e9, 0)); err != nil {
		t.Fatal(err)
	}

	write := func(s Spec, name string, env map[string]string) string {
		t.Helper()
		for k, v := range env {
			t.Setenv(k, v)
		}
		out := filepath.Join(t.TempDir(), name)
		if err := Write(context.Background(), out, s); err != nil {
			t.Fatal(err)
		}
		return out
	}
	outA := write(a, "a.img", map[string]string{"TMPDIR": t.TempDir(), "TZ": "UTC"})
	outB := write(b, "other-name.raw", map[string]string{"TMPDIR": t.TempDir(), "TZ": "Asia/Tokyo", "SOURCE_DATE_EPOCH": "1700000000", "LC_ALL": "de_DE.UTF-8"})
	if got := os.Getenv("SOURCE_DATE_EPOCH"); got != "1700000000" {
		t.Errorf("after Write, SOURCE_DATE_EPOCH = %q, want it restored to 1700000000", got)
	}
	if ha, hb := fileSHA256(t, outA), fileSHA256(t, outB); ha != hb {
		t.Errorf("two writes of one spec differ: sha256 %s and %s", ha, hb)
	}

	c := a
	c.Seed = []byte("another seed")
	outC := write(c, "c.img", nil)
	if fileSHA256(t, outA) == fileSHA256(t, outC) {
		t.Errorf("writes with different seeds give the same bytes")
	}
	ta, tc := readTable(t, outA).PartitionTable, readTable(t, outC).PartitionTable
	if ta.ID == tc.ID || ta.Partitions[0].UUID == tc.Partitions[0].UUID || ta.Partitions[1].UUID == tc.Partitions[1].UUID {
		t.Errorf("different seeds give the same GUIDs: %+v and %+v", ta, tc)
	}
}

// TestRootPartitionGUID pins the derivation of identifiers: changing it
// changes every image.
func TestRootPartitionGUID(t *testing.T) {
	tests := []struct {
		seed string
		want string
	}{
		{"inputs digest of the test image", "5d94fdf1-db7a-495c-b723-c591f30b5a31"},
		{"another seed", deriveGUID([]byte("another seed"), "root")},
	}
	for _, tt := range tests {
		if got := RootPartitionGUID([]byte(tt.seed)); got != tt.want {
			t.Errorf("RootPartitionGUID(%q) = %s, want %s", tt.seed, got, tt.want)
		}
	}
	seen := map[string]string{}
	for _, purpose := range []string{"disk", "esp", "root", "ext4-uuid", "ext4-hash-seed"} {
		g := deriveGUID(testSeed, purpose)
		if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(g) {
			t.Errorf("deriveGUID(%q) = %s, not a version 4 GUID", purpose, g)
		}
		if p, ok := seen[g]; ok {
			t.Errorf("deriveGUID gives %s for both %q and %q", g, p, purpose)
		}
		seen[g] = purpose
	}
}
