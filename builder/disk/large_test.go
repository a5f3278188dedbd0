package disk

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestLargeRoot writes an image of the root tree in directory
// $KILN_TEST_DISK_ROOT (for example a Debian root from mmdebstrap), twice,
// and checks the root file system with e2fsck and that both images are
// the same. It logs how long Write takes.
func TestLargeRoot(t *testing.T) {
	root := os.Getenv("KILN_TEST_DISK_ROOT")
	if root == "" {
		t.Skip("set KILN_TEST_DISK_ROOT to a root tree directory to run this test")
	}
	testenv.NeedTools(t, "mke2fs", "e2fsck", "sfdisk")
	s := testSpec(t, root)
	var outs []string
	for i := range 2 {
		out := filepath.Join(t.TempDir(), "disk.img")
		start := time.Now()
		if err := Write(context.Background(), out, s); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		fi, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("write %d took %v: image of %d MiB", i+1, took, fi.Size()>>20)
		outs = append(outs, out)
	}
	p := readTable(t, outs[0]).PartitionTable.Partitions[1]
	part := extract(t, outs[0], p.Start*512, p.Size*512)
	t.Log(run(t, "e2fsck", "-fn", part))
	if a, b := fileSHA256(t, outs[0]), fileSHA256(t, outs[1]); a != b {
		t.Errorf("two writes differ: sha256 %s and %s", a, b)
	}
}
