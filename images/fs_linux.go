package images

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// renameNoReplace moves tmp to dst unless dst exists, in which case tmp is
// removed and existed is true: content-addressed files with the same name
// have the same bytes, and a published file is never rewritten.
func renameNoReplace(tmp, dst string) (existed bool, err error) {
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) {
		os.Remove(tmp)
		return true, nil
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// Filesystem without RENAME_NOREPLACE: fall back to link+unlink,
		// which also refuses to replace.
		lerr := os.Link(tmp, dst)
		os.Remove(tmp)
		if errors.Is(lerr, os.ErrExist) {
			return true, nil
		}
		return false, lerr
	}
	if err != nil {
		os.Remove(tmp)
	}
	return false, err
}

// lockFile takes a flock(2) on path, creating it if needed: shared, or
// exclusive if exclusive is set. It blocks until the lock is granted and
// returns the function that releases it. The file is opened read-only, so a
// user who may only read the store can still take a shared lock.
func lockFile(path string, exclusive bool) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking image store: %w", err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking image store: %w", err)
	}
	return func() { f.Close() }, nil
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
