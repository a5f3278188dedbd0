package builder

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"
)

// materialize writes the tree into the empty directory dir, with the
// entries' modes and owners and every mtime at the Unix epoch, for the
// tools that read a root from a directory (mksquashfs, mkfs.ext4). Writes
// go through an os.Root, so no entry can reach outside dir. Setting owners
// other than the caller's needs root.
func materialize(ctx context.Context, t *tree, dir string, progress func(done, total int64)) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	entries := t.sorted()
	var done, total int64
	for _, e := range entries {
		total += e.size
	}
	epoch := time.Unix(0, 0)
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := writeMaterialized(ctx, root, e); err != nil {
			return fmt.Errorf("writing /%s: %w", e.path, err)
		}
		if err := setOwnerMode(root, e); err != nil {
			return err
		}
		done += e.size
		if progress != nil && e.typ == typeFile {
			progress(done, total)
		}
	}
	// Directory mtimes change as their children are written: set them
	// last, deepest first.
	for i := len(entries) - 1; i >= 0; i-- {
		if e := entries[i]; e.typ != typeSymlink {
			if err := root.Chtimes(e.path, epoch, epoch); err != nil {
				return err
			}
		}
	}
	return nil
}

// setOwnerMode gives the written entry its owner and mode.
func setOwnerMode(root *os.Root, e *entry) error {
	if uid, gid := os.Geteuid(), os.Getegid(); uid != 0 && (int(e.uid) != uid || int(e.gid) != gid) {
		return fmt.Errorf("/%s is owned by %d:%d: writing it needs root", e.path, e.uid, e.gid)
	}
	if err := root.Lchown(e.path, int(e.uid), int(e.gid)); err != nil {
		return err
	}
	if e.typ == typeSymlink {
		return nil
	}
	// chown clears the set-id bits: chmod after it.
	return root.Chmod(e.path, os.FileMode(e.perm&0o777)|setIDBits(e.perm))
}

func writeMaterialized(ctx context.Context, root *os.Root, e *entry) error {
	switch e.typ {
	case typeDir:
		return root.Mkdir(e.path, 0o700)
	case typeSymlink:
		return root.Symlink(e.link, e.path)
	}
	rc, err := e.open()
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := root.OpenFile(e.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	hw := newHashWriter(f)
	n, err := io.Copy(hw, ctxReader{ctx, rc})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if n != e.size || hw.digest() != e.digest {
		return errChanged
	}
	return nil
}

// setIDBits returns the setuid, setgid and sticky bits of perm as an
// os.FileMode.
func setIDBits(perm uint32) os.FileMode {
	var m os.FileMode
	if perm&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if perm&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if perm&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}
