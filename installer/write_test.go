package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// checkInstalled checks that target holds the image, zeros up to the seed
// area and the plan's seed.
func checkInstalled(t *testing.T, target *os.File, image []byte, seed string) {
	t.Helper()
	got := readAll(t, target)
	if !bytes.Equal(got[:len(image)], image) {
		t.Errorf("target does not hold the image (first difference at byte %d)", firstDiff(got, image))
	}
	gotSeed, err := ReadSeed(target, int64(len(got)))
	if err != nil {
		t.Fatalf("ReadSeed: %v", err)
	}
	if gotSeed != seed {
		t.Errorf("seed = %q, want %q", gotSeed, seed)
	}
	area := got[len(got)-SeedAreaSize:]
	if want := SeedMagic + seed + "\n"; !bytes.HasPrefix(area, []byte(want)) || !allBytes(area[len(want):], 0) {
		t.Errorf("seed area is not %q + zeros", want)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func allBytes(b []byte, v byte) bool {
	for _, c := range b {
		if c != v {
			return false
		}
	}
	return true
}

// TestInstallHappyPath runs Install end to end against a real HTTP server:
// plan, disk picked from a sysfs tree, image streamed into a file, seed,
// report.
func TestInstallHappyPath(t *testing.T) {
	path, image, sum := testImage(t)
	srv := newDiskServer(t, path)
	srv.plan = srv.planFor(sum, imageSize)
	targetSize := int64(imageSize + 4*MiB)
	target := garbageTarget(t, targetSize)

	sys := t.TempDir()
	makeBlock(t, sys, "sda", blockAttrs{size: 64 * MiB, removable: "1"})
	makeBlock(t, sys, "vda", blockAttrs{size: targetSize})
	var opened string
	var lines []string
	cfg := Config{
		Cmdline:  Cmdline{InstallURL: srv.URL + "/install/52:54:00:12:34:56?token=good"},
		SysBlock: sys,
		OpenDisk: func(p string) (Disk, int64, error) {
			opened = p
			return noClose{target}, targetSize, nil
		},
		Log:   func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) },
		Write: fastOpts(),
	}
	if err := Install(context.Background(), cfg); err != nil {
		t.Fatalf("Install: %v", err)
	}
	if opened != "/dev/vda" {
		t.Errorf("opened %q, want /dev/vda (sda is removable)", opened)
	}
	checkInstalled(t, target, image, srv.plan.Seed)
	ranges, reports := srv.snapshot()
	if diff := cmp.Diff([]string{""}, ranges); diff != "" {
		t.Errorf("disk requests' Range (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]map[string]string{{"state": "installed"}}, reports); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
	// Progress: 10 % steps, each printed once, ending at 100 %.
	var progress []string
	for _, l := range lines {
		if strings.HasPrefix(l, "progress ") {
			progress = append(progress, strings.Fields(l)[1])
		}
	}
	if diff := cmp.Diff([]string{"10%", "20%", "30%", "40%", "50%", "60%", "70%", "80%", "90%", "100%"}, progress); diff != "" {
		t.Errorf("progress lines (-want +got):\n%s\nall lines: %q", diff, lines)
	}
	if !strings.HasPrefix(lines[0], "plan mac=52:54:00:12:34:56 generation=3 ") {
		t.Errorf("first line = %q, want the plan", lines[0])
	}
}

// TestInstallForbidden: a 403 on the plan is an error wrapping
// ErrForbidden that carries kiln's message; nothing is reported.
func TestInstallForbidden(t *testing.T) {
	path, _, sum := testImage(t)
	srv := newDiskServer(t, path)
	srv.plan = srv.planFor(sum, imageSize)
	err := Install(context.Background(), Config{
		Cmdline: Cmdline{InstallURL: srv.URL + "/install/52:54:00:12:34:56?token=stolen"},
		OpenDisk: func(string) (Disk, int64, error) {
			t.Error("disk opened after a 403")
			return nil, 0, errors.New("no")
		},
	})
	if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "token does not match") {
		t.Errorf("Install = %v, want ErrForbidden with kiln's reason", err)
	}
	if strings.Contains(err.Error(), "stolen") {
		t.Errorf("error %q shows the token", err)
	}
	if _, reports := srv.snapshot(); len(reports) != 0 {
		t.Errorf("reports = %v, want none", reports)
	}
}

// TestWriteResume cuts the body at several offsets (inside the held-back
// head, in the middle, inside the held-back tail): every retry resumes at
// the bytes received, and the result is exact.
func TestWriteResume(t *testing.T) {
	path, image, sum := testImage(t)
	srv := newDiskServer(t, path)
	// Request i is cut after cuts[i] bytes of its body.
	srv.cuts = []int64{100 << 10, 3 * MiB, 0, imageSize - 3*MiB - (100 << 10) - 1000}
	p := srv.planFor(sum, imageSize)
	targetSize := int64(imageSize + MiB) // the smallest accepted
	target := garbageTarget(t, targetSize)
	var retries []int64
	opts := fastOpts()
	opts.OnRetry = func(n int, off int64, err error) {
		if n != len(retries)+1 {
			t.Errorf("retry number %d, want %d", n, len(retries)+1)
		}
		retries = append(retries, off)
	}
	if err := Write(context.Background(), nil, p, target, targetSize, opts); err != nil {
		t.Fatalf("Write: %v", err)
	}
	checkInstalled(t, target, image, p.Seed)
	o1 := int64(100 << 10)
	o2 := o1 + 3*MiB
	o3 := o2
	o4 := o3 + imageSize - 3*MiB - (100 << 10) - 1000
	if diff := cmp.Diff([]int64{o1, o2, o3, o4}, retries); diff != "" {
		t.Errorf("retry offsets (-want +got):\n%s", diff)
	}
	ranges, _ := srv.snapshot()
	want := []string{"", fmt.Sprintf("bytes=%d-", o1), fmt.Sprintf("bytes=%d-", o2), fmt.Sprintf("bytes=%d-", o3), fmt.Sprintf("bytes=%d-", o4)}
	if diff := cmp.Diff(want, ranges); diff != "" {
		t.Errorf("Range headers (-want +got):\n%s", diff)
	}
}

// TestWriteGivesUp: a server that cuts every body without progress is
// given up after Retries failures in a row, and nothing is committed.
func TestWriteGivesUp(t *testing.T) {
	path, _, sum := testImage(t)
	srv := newDiskServer(t, path)
	srv.cuts = []int64{2 * MiB, 0, 0, 0, 0, 0, 0, 0}
	p := srv.planFor(sum, imageSize)
	targetSize := int64(imageSize + MiB)
	target := garbageTarget(t, targetSize)
	err := Write(context.Background(), nil, p, target, targetSize, fastOpts())
	if err == nil || !strings.Contains(err.Error(), "giving up after 4 attempts (3 in a row without progress) at byte 2097152") {
		t.Fatalf("Write = %v, want giving up after 4 attempts", err)
	}
	checkNotCommitted(t, target)
}

// checkNotCommitted checks that the target's first MiB, the image's last
// MiB and the seed area are zero: the disk cannot boot and carries no seed.
func checkNotCommitted(t *testing.T, target *os.File) {
	t.Helper()
	got := readAll(t, target)
	if !allBytes(got[:HoldBack], 0) {
		t.Error("the target's first MiB is not zero")
	}
	if !allBytes(got[imageSize-HoldBack:imageSize], 0) {
		t.Error("the image's last MiB on the target is not zero")
	}
	if !allBytes(got[len(got)-SeedAreaSize:], 0) {
		t.Error("the seed area is not zero")
	}
	if _, err := ReadSeed(target, int64(len(got))); !errors.Is(err, ErrNoSeed) {
		t.Errorf("ReadSeed = %v, want ErrNoSeed", err)
	}
}

// TestWriteCorrupt: one flipped byte fails the sha256 check; the held-back
// regions are never written.
func TestWriteCorrupt(t *testing.T) {
	for _, at := range []int64{10, 5 * MiB, imageSize - 10} {
		t.Run(fmt.Sprint(at), func(t *testing.T) {
			path, image, sum := testImage(t)
			srv := newDiskServer(t, path)
			srv.corrupt = at
			p := srv.planFor(sum, imageSize)
			targetSize := int64(imageSize + 2*MiB)
			target := garbageTarget(t, targetSize)
			err := Write(context.Background(), nil, p, target, targetSize, fastOpts())
			if !errors.Is(err, ErrChecksum) {
				t.Fatalf("Write = %v, want ErrChecksum", err)
			}
			checkNotCommitted(t, target)
			// The middle was streamed: the check is on what arrived, not
			// on a second read.
			got := readAll(t, target)
			mid := got[HoldBack : imageSize-HoldBack]
			want := bytes.Clone(image[HoldBack : imageSize-HoldBack])
			if at >= HoldBack && at < imageSize-HoldBack {
				want[at-HoldBack] ^= 1
			}
			if !bytes.Equal(mid, want) {
				t.Error("the middle of the image is not what the server sent")
			}
			// Between the image and the seed area: untouched.
			if !allBytes(got[imageSize:len(got)-SeedAreaSize], 0xAA) {
				t.Error("bytes between the image and the seed area were written")
			}
		})
	}
}

// TestWriteResumeGets200: a server that ignores Range answers a resume with
// 200 and the whole image; Write restarts from byte 0 (documented choice)
// and the result is exact.
func TestWriteResumeGets200(t *testing.T) {
	path, image, sum := testImage(t)
	srv := newDiskServer(t, path)
	srv.noRange = true
	srv.cuts = []int64{5 * MiB}
	p := srv.planFor(sum, imageSize)
	targetSize := int64(imageSize + MiB)
	target := garbageTarget(t, targetSize)
	var progress []int64
	opts := fastOpts()
	opts.Progress = func(done, total int64) { progress = append(progress, done) }
	if err := Write(context.Background(), nil, p, target, targetSize, opts); err != nil {
		t.Fatalf("Write: %v", err)
	}
	checkInstalled(t, target, image, p.Seed)
	ranges, _ := srv.snapshot()
	if diff := cmp.Diff([]string{"", "bytes=5242880-"}, ranges); diff != "" {
		t.Errorf("Range headers (-want +got):\n%s", diff)
	}
	restarted := false
	for i := 1; i < len(progress); i++ {
		restarted = restarted || progress[i] < progress[i-1]
	}
	if !restarted || progress[len(progress)-1] != imageSize {
		t.Errorf("progress %v: want a restart from 0 and an end at %d", progress, imageSize)
	}
}

// TestWriteBadContentRange: a 206 whose Content-Range does not start where
// asked is a clear, final error.
func TestWriteBadContentRange(t *testing.T) {
	path, _, sum := testImage(t)
	srv := newDiskServer(t, path)
	srv.badCR = true
	srv.cuts = []int64{3 * MiB}
	p := srv.planFor(sum, imageSize)
	targetSize := int64(imageSize + MiB)
	target := garbageTarget(t, targetSize)
	err := Write(context.Background(), nil, p, target, targetSize, fastOpts())
	if err == nil || !strings.Contains(err.Error(), `resume at byte 3145728: Content-Range "bytes 0-9/`) {
		t.Fatalf("Write = %v, want a Content-Range error", err)
	}
	if ranges, _ := srv.snapshot(); len(ranges) != 2 {
		t.Errorf("%d requests, want 2 (no retry of a bad Content-Range)", len(ranges))
	}
	checkNotCommitted(t, target)
}

// TestWriteErrors: wrong inputs fail before or without committing.
func TestWriteErrors(t *testing.T) {
	path, _, sum := testImage(t)
	srv := newDiskServer(t, path)
	tests := []struct {
		name       string
		edit       func(*Plan)
		targetSize int64
		want       string
		requests   int
	}{
		{"target too small", nil, imageSize + MiB - 1, fmt.Sprintf("target is %d bytes, the image (%d) and the seed area need %d", imageSize+MiB-1, imageSize, imageSize+MiB), 0},
		{"404", func(p *Plan) { p.DiskURL = srv.URL + "/blobs/nothing" }, imageSize + MiB, "404 Not Found", 0},
		{"size differs", func(p *Plan) { p.DiskSize = imageSize + 1 }, imageSize + 2*MiB, fmt.Sprintf("server sends %d bytes, the plan's disk_size is %d", imageSize, imageSize+1), 1},
		{"invalid plan", func(p *Plan) { p.DiskSHA256 = "xyz" }, imageSize + MiB, "disk_sha256", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := srv.snapshot()
			p := srv.planFor(sum, imageSize)
			if tt.edit != nil {
				tt.edit(&p)
			}
			target := garbageTarget(t, tt.targetSize)
			err := Write(context.Background(), nil, p, target, tt.targetSize, fastOpts())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Write = %v, want an error containing %q", err, tt.want)
			}
			if after, _ := srv.snapshot(); len(after)-len(before) != tt.requests {
				t.Errorf("%d disk requests, want %d (4xx and bad sizes are not retried)", len(after)-len(before), tt.requests)
			}
		})
	}
}

// TestWriteStall: a server that stops sending without closing is detected
// by the stall timer and resumed.
func TestWriteStall(t *testing.T) {
	path, image, sum := testImage(t)
	data, _ := os.ReadFile(path)
	var requests atomic.Int32
	srv := newDiskServer(t, path)
	stalled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 1 {
			w.Header().Set("Content-Length", itoa(len(data)))
			w.Write(data[:2*MiB])
			w.(http.Flusher).Flush()
			<-r.Context().Done() // hang until the client gives up
			return
		}
		srv.serveDisk(w, r)
	}))
	defer stalled.Close()
	p := srv.planFor(sum, imageSize)
	p.DiskURL = stalled.URL + "/blobs/disk"
	targetSize := int64(imageSize + MiB)
	target := garbageTarget(t, targetSize)
	opts := fastOpts()
	opts.Stall = 300 * time.Millisecond
	var why error
	opts.OnRetry = func(n int, off int64, err error) { why = err }
	start := time.Now()
	if err := Write(context.Background(), nil, p, target, targetSize, opts); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if why == nil || !strings.Contains(why.Error(), "no data for 300ms") {
		t.Errorf("retry cause = %v, want the stall", why)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	checkInstalled(t, target, image, p.Seed)
}

// TestInstallReportsFailure: a failure after the plan is reported with
// its reason.
func TestInstallReportsFailure(t *testing.T) {
	path, _, sum := testImage(t)
	srv := newDiskServer(t, path)
	srv.corrupt = 4 * MiB
	srv.plan = srv.planFor(sum, imageSize)
	targetSize := int64(imageSize + 2*MiB)
	target := garbageTarget(t, targetSize)
	err := Install(context.Background(), Config{
		Cmdline:  Cmdline{InstallURL: srv.URL + "/install/52:54:00:12:34:56?token=good", Disk: "/dev/nvme0n1"},
		OpenDisk: func(string) (Disk, int64, error) { return noClose{target}, targetSize, nil },
		Write:    fastOpts(),
	})
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("Install = %v, want ErrChecksum", err)
	}
	_, reports := srv.snapshot()
	if len(reports) != 1 || reports[0]["state"] != "failed" || !strings.Contains(reports[0]["reason"], "sha256 mismatch") {
		t.Errorf("reports = %v, want one failed with the sha256 mismatch", reports)
	}
	checkNotCommitted(t, target)
}

// TestInstallNoDisk: no fitting disk is reported as a failure naming
// each disk.
func TestInstallNoDisk(t *testing.T) {
	path, _, sum := testImage(t)
	srv := newDiskServer(t, path)
	srv.plan = srv.planFor(sum, imageSize)
	sys := t.TempDir()
	makeBlock(t, sys, "vda", blockAttrs{size: imageSize})
	err := Install(context.Background(), Config{
		Cmdline:  Cmdline{InstallURL: srv.URL + "/install/52:54:00:12:34:56?token=good"},
		SysBlock: sys,
	})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("vda: %d bytes, too small", imageSize/512*512)) {
		t.Fatalf("Install = %v, want vda too small", err)
	}
	_, reports := srv.snapshot()
	if len(reports) != 1 || reports[0]["state"] != "failed" || !strings.Contains(reports[0]["reason"], "too small") {
		t.Errorf("reports = %v", reports)
	}
}

// TestOpenDisk opens a regular file and sizes it.
func TestOpenDisk(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(p, make([]byte, 3*MiB+512), 0o600); err != nil {
		t.Fatal(err)
	}
	d, size, err := OpenDisk(p)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if size != 3*MiB+512 {
		t.Errorf("size = %d, want %d", size, 3*MiB+512)
	}
	if _, _, err := OpenDisk(p + ".missing"); err == nil {
		t.Error("OpenDisk of a missing file succeeded")
	}
}

// noClose keeps the test's target open after Install closes its disk.
type noClose struct{ *os.File }

func (noClose) Close() error { return nil }

// TestInstallPlanRetry: a plan fetch that fails with a 5xx (kiln
// restarting) is tried again; Install then succeeds.
func TestInstallPlanRetry(t *testing.T) {
	path, image, sum := testImage(t)
	srv := newDiskServer(t, path)
	srv.plan = srv.planFor(sum, imageSize)
	var calls atomic.Int32
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		srv.Config.Handler.ServeHTTP(w, r)
	}))
	defer front.Close()
	targetSize := int64(imageSize + MiB)
	target := garbageTarget(t, targetSize)
	var lines []string
	err := Install(context.Background(), Config{
		Cmdline:  Cmdline{InstallURL: front.URL + "/install/52:54:00:12:34:56?token=good", Disk: "/dev/vda"},
		OpenDisk: func(string) (Disk, int64, error) { return noClose{target}, targetSize, nil },
		Log:      func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) },
		Write:    fastOpts(),
	})
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	if calls.Load() != 2 || !strings.Contains(lines[0], "503 Service Unavailable: starting (attempt 1 of 10)") {
		t.Errorf("%d plan requests, first line %q; want 2 and the 503", calls.Load(), lines[0])
	}
	checkInstalled(t, target, image, srv.plan.Seed)
}
