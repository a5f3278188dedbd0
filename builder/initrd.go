package builder

import (
	"context"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// zstdOptions make the initrd's compression deterministic and acceptable
// to the Linux kernel's decompressor (lib/decompress_unzstd.c): one frame,
// no dictionary, a window of at most 8 MiB (the kernel allocates the window
// the frame header asks for and refuses large ones), a content checksum
// (which the kernel verifies), and a fixed encoder concurrency and level.
// Changing any of them changes the output: update bakeFormat too.
var zstdOptions = []zstd.EOption{
	zstd.WithEncoderLevel(zstd.SpeedDefault),
	// Two goroutines, always: the stream is the same bytes as with one
	// (checked on a 320 MB Debian cpio) and 25% faster on two cores; a
	// fixed number keeps the output independent of the machine.
	zstd.WithEncoderConcurrency(2),
	zstd.WithWindowSize(8 << 20),
	zstd.WithEncoderCRC(true),
}

// writeInitrd streams the tree as a zstd-compressed newc cpio archive to w:
// entries sorted by path, mtimes 0, inodes numbered in order. It verifies
// that every file still has the content the inputs digest was computed
// from. progress, if set, is called with the file bytes written so far and
// their total.
func writeInitrd(ctx context.Context, t *tree, w io.Writer, progress func(done, total int64)) error {
	zw, err := zstd.NewWriter(w, zstdOptions...)
	if err != nil {
		return fmt.Errorf("starting zstd: %w", err)
	}
	cw := newCPIOWriter(zw)
	entries := t.sorted()
	var done, total int64
	for _, e := range entries {
		total += e.size
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			zw.Close()
			return err
		}
		if err := writeEntry(ctx, cw, e); err != nil {
			zw.Close()
			return fmt.Errorf("writing /%s: %w", e.path, err)
		}
		if e.typ == typeFile {
			done += e.size
			if progress != nil {
				progress(done, total)
			}
		}
	}
	if err := cw.Close(); err != nil {
		zw.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("finishing zstd: %w", err)
	}
	return nil
}

func writeEntry(ctx context.Context, cw *cpioWriter, e *entry) error {
	h := &cpioHeader{Name: e.path, UID: e.uid, GID: e.gid, NLink: 1}
	switch e.typ {
	case typeDir:
		h.Mode, h.NLink = cpioModeDir|e.perm, 2
		return cw.WriteHeader(h)
	case typeSymlink:
		h.Mode, h.Size = cpioModeSymlink|e.perm, int64(len(e.link))
		if err := cw.WriteHeader(h); err != nil {
			return err
		}
		_, err := io.WriteString(cw, e.link)
		return err
	case typeFile:
		h.Mode, h.Size = cpioModeFile|e.perm, e.size
		if err := cw.WriteHeader(h); err != nil {
			return err
		}
		return copyVerified(ctx, cw, e)
	}
	return fmt.Errorf("unknown entry type %v", e.typ)
}

// copyVerified copies e's content to w, checking it is e.size bytes that
// hash to e.digest.
func copyVerified(ctx context.Context, w io.Writer, e *entry) error {
	rc, err := e.open()
	if err != nil {
		return err
	}
	defer rc.Close()
	hw := newHashWriter(w)
	n, err := io.CopyN(hw, ctxReader{ctx, rc}, e.size)
	if err == io.EOF {
		return fmt.Errorf("%w: %d bytes long, was %d", errChanged, n, e.size)
	}
	if err != nil {
		return err
	}
	if d := hw.digest(); d != e.digest {
		return fmt.Errorf("%w: its content hashes to %s, was %s", errChanged, d, e.digest)
	}
	return nil
}
