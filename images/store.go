package images

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Store is a content-addressed image store rooted at one directory. It is
// safe for concurrent use by several goroutines and several processes: every
// write goes to a private temporary file that is renamed into place.
type Store struct {
	root string
	// verified caches manifests whose bytes were checked against their ID.
	// Published manifests never change; Get still checks that the file is
	// there, since Remove and GC (maybe in another process) unpublish.
	verified sync.Map // Digest → Manifest
	// gcHook, if set, is called by GC between reading the manifests and
	// removing anything (tests only).
	gcHook func()
}

// Image is a published image as listed by the store.
type Image struct {
	ID       Digest    `json:"id"`
	Manifest Manifest  `json:"manifest"`
	Created  time.Time `json:"created"` // when it was published into this store
	Size     int64     `json:"size"`
	Pinned   bool      `json:"pinned"` // kept by GC and Remove until unpinned
}

// Open opens (creating if needed) the store at dir.
func Open(dir string) (*Store, error) {
	for _, sub := range []string{"blobs/sha256", "manifests/sha256", "pins", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("opening image store: %w", err)
		}
	}
	return &Store{root: dir}, nil
}

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

func (s *Store) blobPath(d Digest) string {
	return filepath.Join(s.root, "blobs", "sha256", d.Hex())
}

func (s *Store) manifestPath(id Digest) string {
	return filepath.Join(s.root, "manifests", "sha256", id.Hex()+".json")
}

// lock takes the store's lock, shared or exclusive. Publish and Pin hold it
// shared; GC and Remove hold it exclusively, so a manifest is never published
// between GC deciding which blobs are referenced and removing the others.
func (s *Store) lock(exclusive bool) (func(), error) {
	return lockFile(filepath.Join(s.root, "lock"), exclusive)
}

// BlobWriter streams a new blob into the store. Commit makes it visible under
// its digest; Abort (or a crash) leaves nothing behind but a temporary file
// in tmp/.
type BlobWriter struct {
	s    *Store
	f    *os.File
	h    hash.Hash
	n    int64
	hole int64 // zero bytes counted in n but not yet skipped in f
	done bool
}

// NewBlob starts writing a blob.
func (s *Store) NewBlob() (*BlobWriter, error) {
	f, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "blob-*")
	if err != nil {
		return nil, fmt.Errorf("creating blob: %w", err)
	}
	return &BlobWriter{s: s, f: f, h: sha256.New()}, nil
}

// holeBlock is the granularity of holes: Write leaves every block-aligned
// run of zero blocks as a hole in the file instead of writing it. Disk
// images are mostly zeros; a sparse blob costs neither the writes nor the
// space, and reads back the same bytes.
const holeBlock = 4096

var zeroBlock [holeBlock]byte

// Write implements io.Writer.
func (w *BlobWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if off := int(w.n % holeBlock); off != 0 || len(p) < holeBlock {
			// Up to the next block boundary, or a tail shorter than a
			// block: written as it is.
			n := len(p)
			if off != 0 {
				n = min(n, holeBlock-off)
			}
			if err := w.write(p[:n]); err != nil {
				return total - len(p), err
			}
			p = p[n:]
			continue
		}
		// A run of whole blocks, all zero or all not.
		zero := bytes.Equal(p[:holeBlock], zeroBlock[:])
		i := holeBlock
		for i+holeBlock <= len(p) && bytes.Equal(p[i:i+holeBlock], zeroBlock[:]) == zero {
			i += holeBlock
		}
		if zero {
			w.hole += int64(i)
			w.h.Write(p[:i])
			w.n += int64(i)
		} else if err := w.write(p[:i]); err != nil {
			return total - len(p), err
		}
		p = p[i:]
	}
	return total, nil
}

// write writes b after the pending hole.
func (w *BlobWriter) write(b []byte) error {
	if w.hole > 0 {
		if _, err := w.f.Seek(w.hole, io.SeekCurrent); err != nil {
			return err
		}
		w.hole = 0
	}
	n, err := w.f.Write(b)
	w.h.Write(b[:n])
	w.n += int64(n)
	return err
}

// Digest returns the digest of the bytes written so far, so that a caller
// who was told the digest can check it before Commit.
func (w *BlobWriter) Digest() Digest {
	return Digest("sha256:" + hex.EncodeToString(w.h.Sum(nil)))
}

// Commit fsyncs the blob and renames it to its digest. If a blob with the
// same digest already exists the new copy is discarded and the existing
// blob's mtime is set to now: GC's grace period counts from the last time a
// blob was written, so a build that reuses an old blob is protected while it
// runs, just as one that writes a new blob is.
func (w *BlobWriter) Commit() (Artifact, error) {
	if w.done {
		return Artifact{}, errors.New("blob already committed or aborted")
	}
	w.done = true
	d := w.Digest()
	tmp := w.f.Name()
	// A trailing hole has no bytes yet: set the size.
	if err := w.f.Truncate(w.n); err != nil {
		w.f.Close()
		os.Remove(tmp)
		return Artifact{}, fmt.Errorf("sizing blob %s: %w", d, err)
	}
	if err := w.f.Sync(); err != nil {
		w.f.Close()
		os.Remove(tmp)
		return Artifact{}, fmt.Errorf("syncing blob %s: %w", d, err)
	}
	if err := w.f.Close(); err != nil {
		os.Remove(tmp)
		return Artifact{}, fmt.Errorf("closing blob %s: %w", d, err)
	}
	if err := os.Chmod(tmp, 0o444); err != nil {
		os.Remove(tmp)
		return Artifact{}, fmt.Errorf("sealing blob %s: %w", d, err)
	}
	existed, err := renameNoReplace(tmp, w.s.blobPath(d))
	if err != nil {
		return Artifact{}, fmt.Errorf("publishing blob %s: %w", d, err)
	}
	if existed {
		// Best effort: a blob owned by another user keeps its mtime, and
		// then only the grace period since it was first written protects it.
		now := time.Now()
		_ = os.Chtimes(w.s.blobPath(d), now, now)
	}
	if err := syncDir(filepath.Dir(w.s.blobPath(d))); err != nil {
		return Artifact{}, err
	}
	return Artifact{Digest: d, Size: w.n}, nil
}

// Abort discards the blob. It is safe to call after Commit.
func (w *BlobWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
}

// PutBlob copies r into the store and returns its digest and size.
func (s *Store) PutBlob(r io.Reader) (Artifact, error) {
	w, err := s.NewBlob()
	if err != nil {
		return Artifact{}, err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Abort()
		return Artifact{}, fmt.Errorf("writing blob: %w", err)
	}
	return w.Commit()
}

// OpenBlob opens the blob d for reading.
func (s *Store) OpenBlob(d Digest) (*os.File, error) {
	if _, err := ParseDigest(string(d)); err != nil {
		return nil, err
	}
	f, err := os.Open(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	return f, err
}

// HasBlob reports whether blob d is stored with the given size.
func (s *Store) HasBlob(d Digest, size int64) bool {
	fi, err := os.Stat(s.blobPath(d))
	return err == nil && fi.Mode().IsRegular() && fi.Size() == size
}

// BlobSize returns the size of blob d, or an error wrapping ErrNotFound if
// the store does not have it.
func (s *Store) BlobSize(d Digest) (int64, error) {
	if _, err := ParseDigest(string(d)); err != nil {
		return 0, err
	}
	fi, err := os.Stat(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) || err == nil && !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", d, err)
	}
	return fi.Size(), nil
}

// Publish validates m, checks that every artifact is stored with its size,
// and writes the manifest. It returns the image ID. Publishing the same
// manifest twice returns the same ID and leaves the first file untouched,
// its time (Image.Created) included.
// A missing artifact is an error wrapping ErrMissingBlob.
func (s *Store) Publish(m Manifest) (Digest, error) {
	if err := m.Validate(); err != nil {
		return "", err
	}
	b, err := m.Canonical()
	if err != nil {
		return "", err
	}
	id := DigestOf(b)
	// Held shared until the manifest is in place: GC, which holds it
	// exclusively, either sees this manifest or runs before the blobs are
	// checked.
	unlock, err := s.lock(false)
	if err != nil {
		return "", err
	}
	defer unlock()
	for _, a := range m.Artifacts {
		if !s.HasBlob(a.Digest, a.Size) {
			return "", fmt.Errorf("publishing %s: artifact %s (%s, %d bytes): %w", m.Name, a.Name, a.Digest, a.Size, ErrMissingBlob)
		}
	}
	if _, err := os.Stat(s.manifestPath(id)); err == nil {
		return id, nil
	}
	f, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "manifest-*")
	if err != nil {
		return "", fmt.Errorf("writing manifest: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o444)
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("writing manifest %s: %w", id, err)
	}
	if _, err := renameNoReplace(tmp, s.manifestPath(id)); err != nil {
		return "", fmt.Errorf("publishing manifest %s: %w", id, err)
	}
	return id, syncDir(filepath.Dir(s.manifestPath(id)))
}

// Get returns the manifest of image id, verifying that the bytes on disk
// still hash to id.
func (s *Store) Get(id Digest) (Manifest, error) {
	if _, err := ParseDigest(string(id)); err != nil {
		return Manifest{}, fmt.Errorf("image id: %w", err)
	}
	if m, ok := s.verified.Load(id); ok {
		// Another process (kiln images rm or gc) may have removed it.
		_, err := os.Lstat(s.manifestPath(id))
		if err == nil {
			return m.(Manifest), nil
		}
		s.verified.Delete(id)
		if errors.Is(err, fs.ErrNotExist) {
			return Manifest{}, fmt.Errorf("image %s: %w", id, ErrNotFound)
		}
		return Manifest{}, fmt.Errorf("reading manifest %s: %w", id, err)
	}
	b, err := s.ManifestBytes(id)
	if err != nil {
		return Manifest{}, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("decoding manifest %s: %w", id, err)
	}
	s.verified.Store(id, m)
	return m, nil
}

// ManifestBytes returns the manifest of image id exactly as stored: its
// canonical encoding, verified to hash to id. These are the bytes to send
// when copying the image to another store.
func (s *Store) ManifestBytes(id Digest) ([]byte, error) {
	if _, err := ParseDigest(string(id)); err != nil {
		return nil, fmt.Errorf("image id: %w", err)
	}
	b, err := os.ReadFile(s.manifestPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading manifest %s: %w", id, err)
	}
	if got := DigestOf(b); got != id {
		return nil, fmt.Errorf("manifest %s is corrupt: its bytes hash to %s", id, got)
	}
	return b, nil
}

// Stat returns the listing entry of image id.
func (s *Store) Stat(id Digest) (Image, error) {
	m, err := s.Get(id)
	if err != nil {
		return Image{}, err
	}
	fi, err := os.Stat(s.manifestPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return Image{}, fmt.Errorf("image %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", id, err)
	}
	pinned, err := s.Pinned(id)
	if err != nil {
		return Image{}, err
	}
	return Image{ID: id, Manifest: m, Created: fi.ModTime().UTC(), Size: m.Size(), Pinned: pinned}, nil
}

// List returns every published image, newest first. A manifest that cannot
// be read or fails verification is left out of the list rather than hiding
// every other image; Get on its ID reports the problem.
func (s *Store) List() ([]Image, error) {
	entries, err := os.ReadDir(filepath.Join(s.root, "manifests", "sha256"))
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	var out []Image
	for _, e := range entries {
		name := e.Name()
		if filepath.Ext(name) != ".json" {
			continue
		}
		id, err := ParseDigest("sha256:" + name[:len(name)-len(".json")])
		if err != nil {
			continue
		}
		img, err := s.Stat(id)
		if err != nil {
			continue
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// FindByInputs returns the image built from inputs, if one is published.
func (s *Store) FindByInputs(inputs Digest) (Image, error) {
	imgs, err := s.List()
	if err != nil {
		return Image{}, err
	}
	for _, img := range imgs {
		if img.Manifest.Inputs == inputs {
			return img, nil
		}
	}
	return Image{}, fmt.Errorf("image with inputs %s: %w", inputs, ErrNotFound)
}
