package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// Config is what Install needs besides the network, which the caller has
// configured.
type Config struct {
	// Cmdline holds the plan URL and an optional disk override.
	Cmdline Cmdline
	// Client makes every HTTP request; nil means http.DefaultClient.
	Client *http.Client
	// SysBlock is where PickDisk looks; "" means /sys/block.
	SysBlock string
	// OpenDisk opens the target; nil means OpenDisk.
	OpenDisk func(path string) (Disk, int64, error)
	// Log prints one console line; nil discards.
	Log func(format string, args ...any)
	// Write tunes the download; its Progress is set by Install.
	Write Options
	// PlanAttempts is how many times a plan fetch that fails on the
	// network (not a 403 or a bad plan) is tried; 0 means 10, 2 s apart.
	PlanAttempts int
}

// Disk is an opened install target.
type Disk interface {
	Target
	io.ReaderAt
	io.Closer
}

// OpenDisk opens a block device (or a file) read-write and exclusively
// for Install, and returns it with its size.
func OpenDisk(path string) (Disk, int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_EXCL, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("opening disk: %w", err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("sizing disk %s: %w", path, err)
	}
	return f, size, nil
}

// Install runs steps 1-5 of the install protocol over a configured
// network: fetch the plan, pick and open the disk, Write the image and the
// seed, report. Once a plan is in hand, any failure is reported to kiln as
// "failed" with the error as reason (when the network still works) and
// returned; the caller then syncs and reboots either way. A failed Report
// of a successful install is returned as an error too (kiln will install
// again on the next boot).
func Install(ctx context.Context, cfg Config) error {
	logf := cfg.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	p, err := fetchPlanRetrying(ctx, cfg, logf)
	if err != nil {
		return err
	}
	logf("plan mac=%s generation=%d image=%s size=%d sha256=%s seed=%dB", p.MAC, p.Generation, p.Image, p.DiskSize, p.DiskSHA256, len(p.Seed))
	if err := installPlan(ctx, cfg, p, logf); err != nil {
		if rerr := Report(ctx, cfg.Client, p.ReportURL, false, err.Error()); rerr != nil {
			logf("could not report the failure: %v", rerr)
		}
		return err
	}
	if err := Report(ctx, cfg.Client, p.ReportURL, true, ""); err != nil {
		return fmt.Errorf("image installed, but %w", err)
	}
	return nil
}

// fetchPlanRetrying retries FetchPlan while the failure may be the network
// still settling.
func fetchPlanRetrying(ctx context.Context, cfg Config, logf func(string, ...any)) (Plan, error) {
	attempts := cfg.PlanAttempts
	if attempts <= 0 {
		attempts = 10
	}
	for i := 1; ; i++ {
		p, err := FetchPlan(ctx, cfg.Client, cfg.Cmdline.InstallURL)
		if err == nil || errors.Is(err, ErrForbidden) || errors.Is(err, ErrInvalidPlan) || i >= attempts || ctx.Err() != nil {
			return p, err
		}
		logf("plan: %v (attempt %d of %d)", err, i, attempts)
		select {
		case <-ctx.Done():
			return Plan{}, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// installPlan picks the disk and writes the plan's image and seed to it.
func installPlan(ctx context.Context, cfg Config, p Plan, logf func(string, ...any)) error {
	path := cfg.Cmdline.Disk
	if path == "" {
		sys := cfg.SysBlock
		if sys == "" {
			sys = "/sys/block"
		}
		var err error
		if path, err = PickDisk(sys, p.DiskSize+SeedAreaSize+MiB); err != nil {
			return err
		}
	}
	open := cfg.OpenDisk
	if open == nil {
		open = OpenDisk
	}
	disk, size, err := open(path)
	if err != nil {
		return err
	}
	defer disk.Close()
	logf("disk %s (%d bytes)", path, size)

	opts := cfg.Write
	decile := int64(0)
	opts.Progress = func(done, total int64) {
		if d := done * 10 / total; d > decile {
			decile = d
			logf("progress %d%% (%d of %d MiB)", d*10, done>>20, total>>20)
		}
	}
	userRetry := cfg.Write.OnRetry
	opts.OnRetry = func(n int, off int64, err error) {
		logf("retry %d at byte %d: %v", n, off, err)
		if userRetry != nil {
			userRetry(n, off, err)
		}
	}
	start := time.Now()
	if err := Write(ctx, cfg.Client, p, disk, size, opts); err != nil {
		return err
	}
	logf("wrote and verified %d bytes in %.1fs", p.DiskSize, time.Since(start).Seconds())
	return nil
}
