package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-dev/kiln/images"
)

// The squashfs and disk outputs read the root from a directory. Writing a
// 300 MB root out takes seconds, so the cache keeps the last one written
// for each image name and a rebuild updates it: only entries that changed
// are rewritten. An index of what the directory holds is written after it
// is complete and removed before it is touched, so an interrupted update
// is never trusted: the next build writes the root afresh.

// rootEntry is what the index records of one entry.
type rootEntry struct {
	Type   entryType     `json:"t"`
	Perm   uint32        `json:"p"`
	UID    uint32        `json:"u"`
	GID    uint32        `json:"g"`
	Size   int64         `json:"s,omitempty"`
	Digest images.Digest `json:"d,omitempty"`
	Link   string        `json:"l,omitempty"`
}

func rootEntryOf(e *entry) rootEntry {
	return rootEntry{Type: e.typ, Perm: e.perm, UID: e.uid, GID: e.gid, Size: e.size, Digest: e.digest, Link: e.link}
}

// cachedRoot is a locked root directory in the cache.
type cachedRoot struct {
	dir    string // the root
	index  string // its index file
	unlock func()
}

// lockRoot takes the cached root of the image name for this build. It
// returns nil if another build holds it: the caller writes a root of its
// own instead.
func (c *cache) lockRoot(name string) (*cachedRoot, error) {
	base := c.path("roots")
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(base, name+".lock"), os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, err
	}
	return &cachedRoot{
		dir:    filepath.Join(base, name),
		index:  filepath.Join(base, name+".index.json"),
		unlock: func() { f.Close() },
	}, nil
}

// update makes the cached root hold exactly the tree, rewriting only what
// changed since the index was written. It reports how many entries it
// wrote.
func (cr *cachedRoot) update(ctx context.Context, t *tree, progress func(done, total int64)) (int, error) {
	old := map[string]rootEntry{}
	b, err := os.ReadFile(cr.index)
	if err == nil {
		err = json.Unmarshal(b, &old)
	}
	if err != nil || !isDir(cr.dir) {
		old = nil // no trustworthy index: start afresh
	}
	if err := os.Remove(cr.index); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	if old == nil {
		if err := os.RemoveAll(cr.dir); err != nil {
			return 0, err
		}
		if err := os.Mkdir(cr.dir, 0o755); err != nil {
			return 0, err
		}
		if err := materialize(ctx, t, cr.dir, progress); err != nil {
			return 0, err
		}
		return len(t.entries), cr.writeIndex(t)
	}

	root, err := os.OpenRoot(cr.dir)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	// Remove what is gone or changed type, deepest first.
	var gone []string
	for p, oe := range old {
		if e := t.entries[p]; e == nil || e.typ != oe.Type || (e.typ == typeSymlink && e.link != oe.Link) {
			gone = append(gone, p)
		}
	}
	slices.SortFunc(gone, func(a, b string) int { return strings.Compare(b, a) })
	for _, p := range gone {
		if err := root.RemoveAll(p); err != nil {
			return 0, fmt.Errorf("removing /%s: %w", p, err)
		}
		delete(old, p)
	}
	// Write what is new or changed, in tree order (parents first).
	var changed []*entry
	for _, e := range t.sorted() {
		oe, ok := old[e.path]
		if ok && oe == rootEntryOf(e) {
			continue
		}
		if ok && e.typ == typeFile && (oe.Digest != e.digest || oe.Size != e.size) {
			if err := root.Remove(e.path); err != nil {
				return 0, fmt.Errorf("replacing /%s: %w", e.path, err)
			}
			ok = false
		}
		changed = append(changed, e)
		if !ok {
			if err := writeMaterialized(ctx, root, e); err != nil {
				return 0, fmt.Errorf("writing /%s: %w", e.path, err)
			}
		}
		if err := setOwnerMode(root, e); err != nil {
			return 0, err
		}
	}
	// Directory mtimes moved with their children; set every time again.
	epoch := time.Unix(0, 0)
	for _, e := range t.sorted() {
		if e.typ != typeSymlink {
			if err := root.Chtimes(e.path, epoch, epoch); err != nil {
				return 0, err
			}
		}
	}
	if progress != nil {
		progress(1, 1)
	}
	return len(changed), cr.writeIndex(t)
}

func (cr *cachedRoot) writeIndex(t *tree) error {
	idx := make(map[string]rootEntry, len(t.entries))
	for p, e := range t.entries {
		idx[p] = rootEntryOf(e)
	}
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	tmp := cr.index + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, cr.index)
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
