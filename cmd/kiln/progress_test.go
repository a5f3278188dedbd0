package main

import (
	"bytes"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestBuildProgressPlain checks the plain-line display a log gets: one line
// when a stage starts, one when a stage with a known size ends, nothing
// for the updates in between.
func TestBuildProgressPlain(t *testing.T) {
	var b bytes.Buffer
	bp := newBuildProgress(&b, false)
	if bp.p != nil {
		t.Fatal("a bytes.Buffer is not a terminal, want plain lines")
	}
	for _, u := range []struct {
		stage       string
		done, total int64
	}{
		{"base", 1, -1}, {"base", 2, -1}, {"scan", 10, -1}, {"scan", 20, -1},
		{"kernel", 0, 2048}, {"kernel", 1024, 2048}, {"kernel", 2048, 2048}, {"kernel", 2048, 2048},
		{"initrd", 512, 4096}, {"initrd", 4096, 4096},
	} {
		bp.update(u.stage, u.done, u.total)
	}
	bp.close()
	want := "base...\nscan...\nkernel...\nkernel: done (2.0 KiB)\ninitrd...\ninitrd: done (4.0 KiB)\n"
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("progress lines (-want +got):\n%s", diff)
	}
	if newBuildProgress(&b, true) != nil {
		t.Error("--json must show no progress")
	}
	var nilProgress *buildProgress
	nilProgress.update("scan", 1, -1) // a nil display ignores updates
	nilProgress.close()
}

// TestBuildProgressTerminal drives the bar display on a real terminal (a
// pty's character device is what isTerminal sees; /dev/null is one too).
func TestBuildProgressTerminal(t *testing.T) {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bp := newBuildProgress(f, false)
	if bp.p == nil {
		t.Fatal("a character device should get progress bars")
	}
	bp.update("scan", 5, -1)
	bp.update("initrd", 10, 100)
	bp.update("initrd", 100, 100)
	bp.close() // must not hang with bars of unknown and known size
}
