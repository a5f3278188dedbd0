package squashfs

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// maxLinks bounds the symlinks resolveIn follows, as the kernel's
// MAXSYMLINKS does.
const maxLinks = 40

// resolveIn returns the host path of name (a path inside the tree at root)
// with every symlink on the way resolved as a chroot into root would: an
// absolute target starts again from root, and ".." never climbs above it.
// Debian's merged /usr (lib -> usr/lib, bin -> usr/bin) needs this; a
// plain filepath.Join would follow an absolute link out to the host.
func resolveIn(root, name string) (string, error) {
	done := "" // resolved so far, relative to root; "" is root itself
	rest := strings.Split(name, "/")
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if done = path.Dir(done); done == "." {
				done = ""
			}
			continue
		}
		next := path.Join(done, c)
		host := filepath.Join(root, next)
		fi, err := os.Lstat(host)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = next
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("resolving /%s in %s: too many levels of symbolic links", name, root)
		}
		target, err := os.Readlink(host)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			done = ""
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(root, done), nil
}
