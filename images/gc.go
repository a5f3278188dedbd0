package images

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// A pin is a file DIR/pins/<hex> holding the image ID. A pinned image is
// never removed, by Remove or by GC.

func (s *Store) pinPath(id Digest) string {
	return filepath.Join(s.root, "pins", id.Hex())
}

// Pin pins the published image id. Pinning a pinned image does nothing.
func (s *Store) Pin(id Digest) error {
	if _, err := ParseDigest(string(id)); err != nil {
		return fmt.Errorf("image id: %w", err)
	}
	// Shared with Publish, exclusive with GC and Remove: the image cannot
	// disappear between the check and the pin.
	unlock, err := s.lock(false)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := s.Get(id); err != nil {
		return fmt.Errorf("pinning: %w", err)
	}
	f, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "pin-*")
	if err != nil {
		return fmt.Errorf("pinning %s: %w", id, err)
	}
	tmp := f.Name()
	_, err = f.WriteString(string(id) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pinning %s: %w", id, err)
	}
	if _, err := renameNoReplace(tmp, s.pinPath(id)); err != nil {
		return fmt.Errorf("pinning %s: %w", id, err)
	}
	return syncDir(filepath.Dir(s.pinPath(id)))
}

// Unpin removes the pin of image id. Unpinning an image that is not pinned,
// or no longer published, does nothing.
func (s *Store) Unpin(id Digest) error {
	if _, err := ParseDigest(string(id)); err != nil {
		return fmt.Errorf("image id: %w", err)
	}
	if err := os.Remove(s.pinPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unpinning %s: %w", id, err)
	}
	return syncDir(filepath.Dir(s.pinPath(id)))
}

// Pinned reports whether image id is pinned.
func (s *Store) Pinned(id Digest) (bool, error) {
	if _, err := ParseDigest(string(id)); err != nil {
		return false, fmt.Errorf("image id: %w", err)
	}
	_, err := os.Lstat(s.pinPath(id))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("reading pin of %s: %w", id, err)
}

// pins returns the set of pinned image IDs.
func (s *Store) pins() (map[Digest]bool, error) {
	entries, err := os.ReadDir(filepath.Join(s.root, "pins"))
	if err != nil {
		return nil, fmt.Errorf("reading pins: %w", err)
	}
	out := make(map[Digest]bool, len(entries))
	for _, e := range entries {
		if id, err := ParseDigest("sha256:" + e.Name()); err == nil {
			out[id] = true
		}
	}
	return out, nil
}

// Remove unpublishes image id: its manifest is renamed into tmp/, then
// deleted, so readers see it either whole or gone. Its blobs stay until GC.
// A pinned image is refused with an error wrapping ErrPinned; an unknown one
// with ErrNotFound.
func (s *Store) Remove(id Digest) error {
	if _, err := ParseDigest(string(id)); err != nil {
		return fmt.Errorf("image id: %w", err)
	}
	unlock, err := s.lock(true)
	if err != nil {
		return err
	}
	defer unlock()
	if pinned, err := s.Pinned(id); err != nil {
		return err
	} else if pinned {
		return fmt.Errorf("removing image %s: %w", id, ErrPinned)
	}
	if _, err := os.Lstat(s.manifestPath(id)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("image %s: %w", id, ErrNotFound)
	}
	return s.removeManifest(id)
}

// removeManifest renames the manifest of id into tmp/ and deletes it there.
// The caller holds the store's lock exclusively.
func (s *Store) removeManifest(id Digest) error {
	f, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "removed-*")
	if err != nil {
		return fmt.Errorf("removing image %s: %w", id, err)
	}
	tmp := f.Name()
	f.Close()
	if err := os.Rename(s.manifestPath(id), tmp); err != nil {
		os.Remove(tmp)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("image %s: %w", id, ErrNotFound)
		}
		return fmt.Errorf("removing image %s: %w", id, err)
	}
	s.verified.Delete(id)
	if err := syncDir(filepath.Dir(s.manifestPath(id))); err != nil {
		return err
	}
	// Unpublished already; should this fail, GC removes the leftover.
	os.Remove(tmp)
	return nil
}

// BUG(kiln): Publishing an image that is already published keeps its first
// time (Image.Created), so GC's grace period does not protect an old image
// no machine uses that is rebuilt or pushed again: pin it, or assign it,
// before running GC.

// BUG(kiln): The set of images machines use (GCOptions.InUse) is taken
// before GC locks the store; a machine assigned an unused, unpinned image
// older than the grace period while GC runs may be left with an image that
// is gone. The fleet does not know the store's lock.

// minTempAge is the age from which GC removes a file in tmp/, whatever
// the grace period.
const minTempAge = time.Hour

// GCOptions say what GC may remove.
type GCOptions struct {
	// CollectImages makes GC remove every image that is not in InUse, not
	// pinned and not published within Grace. When false, every image is
	// kept and only blobs no image references are removed.
	CollectImages bool
	// InUse holds the IDs of the images machines reference.
	InUse map[Digest]bool
	// Grace protects recent writes: an image published, or a blob written
	// (or rewritten by a build that reuses it), less than Grace ago is kept
	// even if nothing references it, because a build or an upload may be
	// about to publish the manifest that references it. Temporary files are
	// kept for Grace, and at least an hour.
	Grace time.Duration
	// DryRun reports what would be removed and removes nothing.
	DryRun bool
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// BlobInfo is one blob GC removed.
type BlobInfo struct {
	Digest Digest `json:"digest"`
	Size   int64  `json:"size"`
}

// GCReport says what GC removed, or would remove in a dry run.
type GCReport struct {
	DryRun bool       `json:"dry_run"`
	Images []Digest   `json:"images"` // images removed
	Blobs  []BlobInfo `json:"blobs"`  // blobs removed
	Bytes  int64      `json:"bytes"`  // the size of the blobs removed
	Temp   int        `json:"tmp"`    // leftover temporary files removed
	// Young counts images and blobs kept only because they are younger
	// than the grace period.
	Young int `json:"young"`
}

// GC removes, in this order, the images opt allows it to remove, then the
// blobs no remaining image references, then leftover temporary files. It
// never removes an image in opt.InUse, a pinned image, a blob a remaining
// image references, or anything younger than opt.Grace. It holds the store's
// lock exclusively, so no image is published while it runs.
//
// A manifest GC cannot decode stops it before anything is removed: the
// blobs it references are unknown.
func (s *Store) GC(opt GCOptions) (GCReport, error) {
	now := time.Now
	if opt.Now != nil {
		now = opt.Now
	}
	unlock, err := s.lock(true)
	if err != nil {
		return GCReport{}, err
	}
	defer unlock()
	cutoff := now().Add(-opt.Grace)
	young := func(fi fs.FileInfo) bool { return fi.ModTime().After(cutoff) }
	rep := GCReport{DryRun: opt.DryRun, Images: []Digest{}, Blobs: []BlobInfo{}}

	pinned, err := s.pins()
	if err != nil {
		return GCReport{}, err
	}
	manifests, err := s.readManifests()
	if err != nil {
		return GCReport{}, err
	}
	referenced := map[Digest]bool{}
	for _, m := range manifests {
		remove := opt.CollectImages && !opt.InUse[m.id] && !pinned[m.id]
		if remove && young(m.info) {
			rep.Young++
			remove = false
		}
		if !remove {
			for _, a := range m.man.Artifacts {
				referenced[a.Digest] = true
			}
			continue
		}
		rep.Images = append(rep.Images, m.id)
	}
	if s.gcHook != nil {
		s.gcHook()
	}
	if !opt.DryRun {
		for _, id := range rep.Images {
			if err := s.removeManifest(id); err != nil {
				return rep, err
			}
		}
	}

	blobDir := filepath.Join(s.root, "blobs", "sha256")
	entries, err := os.ReadDir(blobDir)
	if err != nil {
		return rep, fmt.Errorf("gc: listing blobs: %w", err)
	}
	for _, e := range entries {
		d, err := ParseDigest("sha256:" + e.Name())
		if err != nil || referenced[d] {
			continue // not a blob kiln wrote, or in use
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("gc: blob %s: %w", d, err)
		}
		if young(fi) {
			rep.Young++
			continue
		}
		if !opt.DryRun {
			if err := os.Remove(filepath.Join(blobDir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return rep, fmt.Errorf("gc: removing blob %s: %w", d, err)
			}
		}
		rep.Blobs = append(rep.Blobs, BlobInfo{Digest: d, Size: fi.Size()})
		rep.Bytes += fi.Size()
	}
	if !opt.DryRun && len(rep.Blobs) > 0 {
		if err := syncDir(blobDir); err != nil {
			return rep, err
		}
	}

	// A temporary file is being written until it is renamed; even with no
	// grace, only one left alone for an hour counts as abandoned.
	tempCutoff := now().Add(-max(opt.Grace, minTempAge))
	n, err := s.removeTemp(func(fi fs.FileInfo) bool { return fi.ModTime().After(tempCutoff) }, opt.DryRun)
	rep.Temp = n
	return rep, err
}

// storedManifest is one manifest file as GC reads it.
type storedManifest struct {
	id   Digest
	man  Manifest
	info fs.FileInfo
}

// readManifests decodes every manifest file. Unlike List, it fails on a
// manifest it cannot decode, since its blobs would look unreferenced. A
// manifest whose bytes no longer hash to its name still counts: its blobs
// are kept.
func (s *Store) readManifests() ([]storedManifest, error) {
	dir := filepath.Join(s.root, "manifests", "sha256")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("gc: listing images: %w", err)
	}
	var out []storedManifest
	for _, e := range entries {
		hexPart, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		id, err := ParseDigest("sha256:" + hexPart)
		if err != nil {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("gc: image %s: %w", id, err)
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("gc: reading manifest %s: %w", id, err)
		}
		var m Manifest
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("gc: manifest %s cannot be decoded, so the blobs it references are unknown; nothing was removed: %w", id, err)
		}
		out = append(out, storedManifest{id: id, man: m, info: info})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out, nil
}

// removeTemp removes the files in tmp/ that are not young: leftovers of
// interrupted writes. A write in progress is younger than any sane grace.
func (s *Store) removeTemp(young func(fs.FileInfo) bool, dryRun bool) (int, error) {
	dir := filepath.Join(s.root, "tmp")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("gc: listing %s: %w", dir, err)
	}
	n := 0
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || young(fi) {
			continue
		}
		if !dryRun {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return n, fmt.Errorf("gc: removing %s: %w", e.Name(), err)
			}
		}
		n++
	}
	return n, nil
}
