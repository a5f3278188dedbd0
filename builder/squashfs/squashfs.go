// Package squashfs makes the squashfs output of kiln images: how an image
// too large for an initramfs boots. Its root becomes a squashfs (Make),
// and a small stage-1 initramfs (Stage1) fetches that squashfs over HTTP,
// verifies its digest, mounts it read-only under a tmpfs overlay and
// switches root to it.
//
// Stage 1 reads these kernel parameters:
//
//	kiln.squashfs=<URL>                 where to fetch the squashfs (http; may have a query)
//	kiln.squashfs.digest=sha256:<hex>   its digest; any other content is refused
//	kiln.squashfs.timeout=<seconds>     bound of each of the 5 download tries (default 300)
//	kiln.init=<path>                    the init to run in the image (default /sbin/init)
//
// Values cannot contain spaces. Stage 1 prints "kiln: ..." progress lines
// on the console, "kiln: squashfs verified sha256:<hex>" and "kiln:
// switching root to <init>" on success, and "kiln: FAILED <why>" before it
// reboots on failure. The address and default route that DHCP gave stay
// configured in the booted system (nothing renews the lease: the system
// should run its own DHCP client), /etc/resolv.conf is written into the
// overlay unless the image's is a symlink, and the lease is recorded in
// /run/kiln/dhcp.env.
//
// Make drives mksquashfs from squashfs-tools (4.5 or later) rather than a
// Go writer: go-diskfs's squashfs writer produces broken images.
package squashfs

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// mksquashfs is the command Make runs; tests replace it.
var mksquashfs = "mksquashfs"

// Options tune Make. The zero value is ready to use.
type Options struct {
	// Processors is how many CPUs mksquashfs may use; 0 means all. It
	// changes how fast, never what, Make writes.
	Processors int
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

// Make writes the directory dir, a materialized root tree with the
// ownership and modes it must have, as a zstd-compressed squashfs at out.
// It runs as root, so that mksquashfs reads every file.
//
// The output is reproducible: the same tree gives the same bytes whatever
// the mtimes, the path of dir, the time of day and the processors. Every
// timestamp is 0, and the root directory is 0755 root:root whatever dir's
// own mode (often a 0700 temporary directory). Extended attributes (file
// capabilities) are kept. Mount points inside dir are left empty.
//
// Make writes a temporary file next to out and renames it into place: on
// error, out is as it was.
func Make(ctx context.Context, dir, out string, opt Options) error {
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("making squashfs of %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("making squashfs of %s: not a directory", dir)
	}
	if inside(dir, out) {
		return fmt.Errorf("making squashfs of %s: output %s is inside it", dir, out)
	}
	procs := opt.Processors
	if procs <= 0 {
		procs = runtime.NumCPU()
	}

	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("making squashfs of %s: %w", dir, err)
	}
	tmp := f.Name()
	f.Close()
	defer os.Remove(tmp) // after the rename, a no-op

	args := append([]string{dir, tmp}, reproducibleFlags...)
	args = append(args, "-processors", strconv.Itoa(procs))
	cmd := exec.CommandContext(ctx, mksquashfs, args...)
	cmd.Env = withoutSourceDateEpoch(os.Environ())
	cmd.WaitDelay = 5 * time.Second // bound the wait for output once ctx kills it
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	start := time.Now()
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("running %s for %s: %w: %s", mksquashfs, dir, err, lastLines(output.String(), 10))
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("making squashfs of %s: %w", dir, err)
	}
	size := int64(-1)
	if fi, err := os.Stat(out); err == nil {
		size = fi.Size()
	}
	log.Info("squashfs written", "dir", dir, "out", out, "bytes", size, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// reproducibleFlags are the mksquashfs flags for reproducible output.
// Changing any of them changes the output.
//
// zstd runs at level 3, not mksquashfs's default 15: on a 326 MB Debian
// root, level 3 took 7.8 s for 121 MB where 15 took 35 s (unloaded) to
// 168 s (load 10) for 108 MB, and 9 took 18 s for 114 MB (2 cores). A
// rebuild is on every change's path; 12% more bytes cost a fraction of a
// second on a rack's network, and zstd decompresses as fast at any level.
//
// The block size stays at mksquashfs's 128 KiB: 1 MiB blocks save about
// 2% on a Debian root, but every file under the block size goes into
// fragment blocks, and the kernel caches only a few (3 on Debian) of those,
// so reading many small files would decompress a MiB each time.
var reproducibleFlags = []string{
	"-noappend",
	"-comp", "zstd", "-Xcompression-level", "3",
	"-b", "128K",
	"-reproducible",
	"-mkfs-time", "0",
	"-all-time", "0",
	"-root-mode", "0755", "-root-uid", "0", "-root-gid", "0",
	"-one-file-system",
	"-exit-on-error",
	"-no-recovery",
	"-no-progress",
	"-quiet",
}

// withoutSourceDateEpoch returns env without SOURCE_DATE_EPOCH, which
// mksquashfs refuses alongside -mkfs-time and -all-time.
func withoutSourceDateEpoch(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "SOURCE_DATE_EPOCH=") {
			out = append(out, kv)
		}
	}
	return out
}

// inside reports whether the path p is dir or under it.
func inside(dir, p string) bool {
	d, err1 := filepath.Abs(dir)
	a, err2 := filepath.Abs(p)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(d, a)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// lastLines returns the last n lines of s, trimmed.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
