package images

import (
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
	// Published manifests never change, so an entry never goes stale.
	verified sync.Map // Digest → Manifest
}

// Image is a published image as listed by the store.
type Image struct {
	ID       Digest    `json:"id"`
	Manifest Manifest  `json:"manifest"`
	Created  time.Time `json:"created"` // when it was published into this store
	Size     int64     `json:"size"`
}

// Open opens (creating if needed) the store at dir.
func Open(dir string) (*Store, error) {
	for _, sub := range []string{"blobs/sha256", "manifests/sha256", "tmp"} {
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

// BlobWriter streams a new blob into the store. Commit makes it visible under
// its digest; Abort (or a crash) leaves nothing behind but a temporary file
// in tmp/.
type BlobWriter struct {
	s    *Store
	f    *os.File
	h    hash.Hash
	n    int64
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

// Write implements io.Writer.
func (w *BlobWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	return n, err
}

// Commit fsyncs the blob and renames it to its digest. If a blob with the
// same digest already exists the new copy is discarded.
func (w *BlobWriter) Commit() (Artifact, error) {
	if w.done {
		return Artifact{}, errors.New("blob already committed or aborted")
	}
	w.done = true
	d := Digest("sha256:" + hex.EncodeToString(w.h.Sum(nil)))
	tmp := w.f.Name()
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
	if err := renameNoReplace(tmp, w.s.blobPath(d)); err != nil {
		return Artifact{}, fmt.Errorf("publishing blob %s: %w", d, err)
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

// Publish validates m, checks that every artifact is stored with its size,
// and writes the manifest. It returns the image ID. Publishing the same
// manifest twice returns the same ID and leaves the first file untouched.
func (s *Store) Publish(m Manifest) (Digest, error) {
	if err := m.Validate(); err != nil {
		return "", err
	}
	for _, a := range m.Artifacts {
		if !s.HasBlob(a.Digest, a.Size) {
			return "", fmt.Errorf("publishing %s: artifact %s (%s, %d bytes) is not in the store", m.Name, a.Name, a.Digest, a.Size)
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encoding manifest: %w", err)
	}
	id := DigestOf(b)
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
	if err := renameNoReplace(tmp, s.manifestPath(id)); err != nil {
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
		return m.(Manifest), nil
	}
	b, err := os.ReadFile(s.manifestPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return Manifest{}, fmt.Errorf("image %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("reading manifest %s: %w", id, err)
	}
	if got := DigestOf(b); got != id {
		return Manifest{}, fmt.Errorf("manifest %s is corrupt: its bytes hash to %s", id, got)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("decoding manifest %s: %w", id, err)
	}
	s.verified.Store(id, m)
	return m, nil
}

// Stat returns the listing entry of image id.
func (s *Store) Stat(id Digest) (Image, error) {
	m, err := s.Get(id)
	if err != nil {
		return Image{}, err
	}
	fi, err := os.Stat(s.manifestPath(id))
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", id, err)
	}
	return Image{ID: id, Manifest: m, Created: fi.ModTime().UTC(), Size: m.Size()}, nil
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
