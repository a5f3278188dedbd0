package installer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ErrChecksum is wrapped by Write when the streamed image does not match
// the plan's sha256.
var ErrChecksum = errors.New("sha256 mismatch")

// Target is the disk Write writes to. *os.File (a block device or a
// regular file) satisfies it.
type Target interface {
	io.WriterAt
	// Sync flushes what was written to stable storage (fsync).
	Sync() error
}

// Options tune Write. The zero value is usable.
type Options struct {
	// Retries is how many failed attempts in a row without a new byte
	// received Write makes before giving up; 0 means 8. An attempt that
	// received something starts the count again. Every attempt after the
	// first resumes where the last one stopped.
	Retries int
	// Backoff is the wait before the first retry, doubled after each
	// failed attempt in a row up to MaxBackoff; 0 means 1 s.
	Backoff time.Duration
	// MaxBackoff caps Backoff; 0 means 30 s.
	MaxBackoff time.Duration
	// Stall aborts an attempt (and retries) when no byte arrives for this
	// long; 0 means 60 s.
	Stall time.Duration
	// Progress, if set, is called after each chunk with the bytes of the
	// image received and hashed so far (it drops back to 0 if a server
	// restarts the image) and the image size.
	Progress func(done, total int64)
	// OnRetry, if set, is called before each retry with its number (1, 2,
	// ...), the offset it resumes at and the error that ended the last
	// attempt.
	OnRetry func(n int, offset int64, err error)
}

func (o Options) withDefaults() Options {
	if o.Retries <= 0 {
		o.Retries = 8
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.Stall <= 0 {
		o.Stall = 60 * time.Second
	}
	return o
}

// BUG(kiln): Write puts the image's backup GPT where the image ends, not at
// the end of a larger disk, and the seed in the disk's last MiB, outside
// any partition. Linux boots from the primary GPT (with a warning), but a
// tool that moves the backup GPT to the end of the disk (sgdisk -e,
// growpart, systemd-repart) overwrites the seed: the installed system must
// read the seed before it grows its partitions.

// maxAttempts bounds the attempts of one Write, progress or not, so that a
// server trickling a few bytes per connection cannot keep it forever.
const maxAttempts = 1000

// chunkSize is the read and write unit of the stream.
const chunkSize = 1 * MiB

// Write streams the image p.DiskURL to target, whose size is targetSize
// bytes, and makes it bootable only once it is verified:
//
//  1. target must hold the image plus the seed area: targetSize >=
//     p.DiskSize + SeedAreaSize, else an error before anything is written.
//  2. The target's first MiB, the image's last MiB and the seed area (the
//     target's last MiB) are zeroed and synced, so no old boot entry or
//     old seed survives a failed install.
//  3. The image is streamed and hashed; the bytes between its first and
//     last MiB go to the target as they come, the first and last MiB stay
//     in memory. A broken or stalled body is retried with
//     "Range: bytes=N-" (N = bytes received), which must be answered 206
//     with a Content-Range "bytes N-(size-1)/size". A 200 to a resume
//     request (a server ignoring Range, or If-Range finding the blob
//     changed) restarts the image from byte 0. 4xx answers are final;
//     network errors, short bodies and 5xx answers are retried with
//     exponential backoff (see Options).
//  4. If the sha256 differs from p.DiskSHA256, Write returns an error
//     wrapping ErrChecksum and the held-back regions are never written:
//     the target has no partition table.
//  5. Otherwise: sync; the seed area gets p.Seed (WriteSeed); the image's
//     last MiB is written; sync; the first MiB last; sync.
func Write(ctx context.Context, client *http.Client, p Plan, target Target, targetSize int64, opts Options) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if need := p.DiskSize + SeedAreaSize; targetSize < need {
		return fmt.Errorf("writing image: target is %d bytes, the image (%d) and the seed area need %d", targetSize, p.DiskSize, need)
	}
	if client == nil {
		client = http.DefaultClient
	}
	opts = opts.withDefaults()
	want, _ := hex.DecodeString(p.DiskSHA256)

	// 2. No old boot entry, no old seed.
	zero := make([]byte, HoldBack)
	for _, off := range []int64{0, p.DiskSize - HoldBack, targetSize - SeedAreaSize} {
		if _, err := target.WriteAt(zero[:min(HoldBack, targetSize-off)], off); err != nil {
			return fmt.Errorf("zeroing target at %d: %w", off, err)
		}
	}
	if err := target.Sync(); err != nil {
		return fmt.Errorf("syncing target: %w", err)
	}

	// 3. Stream.
	s := &stream{
		ctx: ctx, client: client, p: p, target: target, opts: opts,
		head: make([]byte, HoldBack),
		tail: make([]byte, HoldBack),
		buf:  make([]byte, chunkSize),
	}
	if err := s.run(); err != nil {
		return err
	}

	// 4. Verify.
	if got := s.hash.Sum(nil); !bytes.Equal(got, want) {
		return fmt.Errorf("writing image %s: %w: got %x, want %s", p.Image, ErrChecksum, got, strings.ToLower(p.DiskSHA256))
	}

	// 5. Commit: seed, then the backup GPT, then the start of the disk.
	if err := target.Sync(); err != nil {
		return fmt.Errorf("syncing target: %w", err)
	}
	if err := WriteSeed(target, targetSize, p.Seed); err != nil {
		return err
	}
	if _, err := target.WriteAt(s.tail, p.DiskSize-HoldBack); err != nil {
		return fmt.Errorf("writing the image's last MiB: %w", err)
	}
	if err := target.Sync(); err != nil {
		return fmt.Errorf("syncing target: %w", err)
	}
	if _, err := target.WriteAt(s.head, 0); err != nil {
		return fmt.Errorf("writing the image's first MiB: %w", err)
	}
	if err := target.Sync(); err != nil {
		return fmt.Errorf("syncing target: %w", err)
	}
	return nil
}

// stream is the state of one image download.
type stream struct {
	ctx    context.Context
	client *http.Client
	p      Plan
	target Target
	opts   Options

	hash       hash.Hash
	off        int64 // bytes received, hashed and placed
	head, tail []byte
	buf        []byte
	validator  string // ETag or Last-Modified of the first answer, for If-Range
}

// permanentError ends the stream without a retry.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// run makes attempts until the image is complete or retries are exhausted.
func (s *stream) run() error {
	s.hash = sha256.New()
	failures, retry := 0, 0
	backoff := s.opts.Backoff
	for attempt := 1; ; attempt++ {
		before := s.off
		err := s.attempt()
		if err == nil {
			return nil
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return fmt.Errorf("downloading %s: %w", redact(s.p.DiskURL), perm.err)
		}
		if ctxErr := s.ctx.Err(); ctxErr != nil {
			return fmt.Errorf("downloading %s: %w", redact(s.p.DiskURL), ctxErr)
		}
		if s.off > before {
			failures, backoff = 0, s.opts.Backoff
		} else {
			failures++
		}
		if failures >= s.opts.Retries || attempt >= maxAttempts {
			return fmt.Errorf("downloading %s: giving up after %d attempts (%d in a row without progress) at byte %d: %w", redact(s.p.DiskURL), attempt, failures, s.off, err)
		}
		retry++
		if s.opts.OnRetry != nil {
			s.opts.OnRetry(retry, s.off, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return fmt.Errorf("downloading %s: %w", redact(s.p.DiskURL), s.ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, s.opts.MaxBackoff)
	}
}

// attempt makes one request from s.off and consumes its body.
func (s *stream) attempt() error {
	ctx, cancel := context.WithCancelCause(s.ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.p.DiskURL, nil)
	if err != nil {
		return permanentError{err}
	}
	if s.off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", s.off))
		if s.validator != "" {
			req.Header.Set("If-Range", s.validator)
		}
	}
	// The stall timer covers the wait for headers and every read.
	stall := time.AfterFunc(s.opts.Stall, func() {
		cancel(fmt.Errorf("no data for %v", s.opts.Stall))
	})
	defer stall.Stop()
	resp, err := s.client.Do(req)
	if err != nil {
		err = scrub(err)
		if cause := context.Cause(ctx); cause != nil && s.ctx.Err() == nil {
			return cause
		}
		return err
	}
	defer resp.Body.Close()
	if err := s.checkResponse(resp); err != nil {
		return err
	}
	for s.off < s.p.DiskSize {
		stall.Reset(s.opts.Stall)
		n, err := io.ReadFull(resp.Body, s.buf[:min(int64(len(s.buf)), s.p.DiskSize-s.off)])
		if n > 0 {
			if werr := s.place(s.buf[:n]); werr != nil {
				return permanentError{werr}
			}
		}
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && s.ctx.Err() == nil {
				err = cause
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("body ended at byte %d of %d: %w", s.off, s.p.DiskSize, err)
		}
	}
	// The image is complete; a longer body means the plan's size is wrong.
	var one [1]byte
	if n, _ := resp.Body.Read(one[:]); n > 0 {
		return permanentError{fmt.Errorf("the body is longer than disk_size %d", s.p.DiskSize)}
	}
	return nil
}

// checkResponse accepts 200 (from byte 0) or, for a resume, a 206 whose
// Content-Range starts at s.off and covers the rest of the image.
func (s *stream) checkResponse(resp *http.Response) error {
	switch {
	case resp.StatusCode == http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != s.p.DiskSize {
			return permanentError{fmt.Errorf("server sends %d bytes, the plan's disk_size is %d", resp.ContentLength, s.p.DiskSize)}
		}
		if s.off > 0 {
			// The server ignored Range or the blob changed: start over.
			s.off = 0
			s.hash.Reset()
		}
		s.validator = resp.Header.Get("ETag")
		if s.validator == "" || strings.HasPrefix(s.validator, "W/") {
			s.validator = resp.Header.Get("Last-Modified")
		}
		return nil
	case resp.StatusCode == http.StatusPartialContent:
		if s.off == 0 {
			return permanentError{fmt.Errorf("%s to a request without Range", resp.Status)}
		}
		want := fmt.Sprintf("bytes %d-%d/%d", s.off, s.p.DiskSize-1, s.p.DiskSize)
		if got := resp.Header.Get("Content-Range"); got != want {
			return permanentError{fmt.Errorf("resume at byte %d: Content-Range %q, want %q", s.off, got, want)}
		}
		return nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests:
		return permanentError{fmt.Errorf("%s%s", resp.Status, rangeNote(s.off))}
	default:
		return fmt.Errorf("%s%s", resp.Status, rangeNote(s.off))
	}
}

func rangeNote(off int64) string {
	if off == 0 {
		return ""
	}
	return " (resuming at byte " + strconv.FormatInt(off, 10) + ")"
}

// place hashes b, the image bytes at s.off, and writes them to the target
// or to the held-back buffers.
func (s *stream) place(b []byte) error {
	s.hash.Write(b)
	start, end := s.off, s.off+int64(len(b))
	tailStart := s.p.DiskSize - HoldBack
	// Head: [0, HoldBack).
	if start < HoldBack {
		copy(s.head[start:], b[:min(end, HoldBack)-start])
	}
	// Tail: [tailStart, DiskSize).
	if end > tailStart {
		from := max(start, tailStart)
		copy(s.tail[from-tailStart:], b[from-start:])
	}
	// Middle: straight to the target.
	if from, to := max(start, HoldBack), min(end, tailStart); from < to {
		if _, err := s.target.WriteAt(b[from-start:to-start], from); err != nil {
			return fmt.Errorf("writing target at byte %d: %w", from, err)
		}
	}
	s.off = end
	if s.opts.Progress != nil {
		s.opts.Progress(s.off, s.p.DiskSize)
	}
	return nil
}
