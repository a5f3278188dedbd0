package images

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// renameNoReplace moves tmp to dst unless dst exists, in which case tmp is
// removed: content-addressed files with the same name have the same bytes, and
// a published file is never rewritten.
func renameNoReplace(tmp, dst string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) {
		os.Remove(tmp)
		return nil
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// Filesystem without RENAME_NOREPLACE: fall back to link+unlink,
		// which also refuses to replace.
		if lerr := os.Link(tmp, dst); lerr != nil && !errors.Is(lerr, os.ErrExist) {
			os.Remove(tmp)
			return lerr
		}
		os.Remove(tmp)
		return nil
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// syncDir fsyncs a directory so a rename in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
