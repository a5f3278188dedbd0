package tftp

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// cleanPath turns the filename of a read request into a slash-separated path
// relative to the served root, or returns an error wrapping ErrAccess.
//
//   - Backslashes become slashes: some PXE ROMs and Windows-minded configs
//     send "pxelinux\\file". A file whose name holds a backslash is therefore
//     unreachable.
//   - One leading slash is dropped, so "/undionly.kpxe" names the file in the
//     root. Only one: "//etc/passwd" stays absolute and is refused.
//   - The rest is cleaned lexically and must be local (filepath.IsLocal): not
//     empty, not absolute, no ".." that climbs out, no NUL byte.
//
// Symbolic links are not resolved here; os.Root refuses those that leave the
// root when the file is opened.
func cleanPath(name string) (string, error) {
	p := strings.ReplaceAll(name, `\`, "/")
	p = strings.TrimPrefix(p, "/")
	if p == "" || strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("%w: invalid file name %q", ErrAccess, name)
	}
	p = path.Clean(p)
	if !filepath.IsLocal(p) {
		return "", fmt.Errorf("%w: file name %q leaves the root", ErrAccess, name)
	}
	return p, nil
}

// open opens the regular file that a request names, confined to s.root, and
// returns it with its size. Errors wrap ErrNotFound or ErrAccess.
func (s *Server) open(name string) (*os.File, int64, error) {
	p, err := cleanPath(name)
	if err != nil {
		return nil, 0, err
	}
	// O_NONBLOCK so that a FIFO in the root cannot block the open; it has no
	// effect on the regular files we go on to read.
	f, err := s.root.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, 0, fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return nil, 0, fmt.Errorf("%w: %w", ErrAccess, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %w", ErrAccess, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %s is not a regular file (%v)", ErrAccess, p, fi.Mode().Type())
	}
	return f, fi.Size(), nil
}
