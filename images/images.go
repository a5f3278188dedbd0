// Package images is kiln's content-addressed image store.
//
// Blobs (kernels, initramfs archives, root filesystems) are stored by the
// sha256 of their bytes. An image is a Manifest naming its blobs; its ID is
// the sha256 of the manifest's canonical JSON encoding. Nothing published is
// ever rewritten: publishing writes a temporary file, fsyncs it and renames
// it into place, so a crashed or interrupted build leaves nothing visible.
//
// Deleting is garbage collection: Remove unpublishes one image, GC removes
// the images no machine uses and then the blobs no image references, never
// a pinned image and never anything written within its grace period. A
// file lock makes GC exclusive with Publish, so no image is ever published
// with a blob GC is removing.
//
// On disk, under the store's root:
//
//	blobs/sha256/<hex>          blob bytes
//	manifests/sha256/<hex>.json canonical manifest bytes
//	pins/<hex>                  pinned images
//	tmp/                        partial writes, removed on failure
//	lock                        flock(2): shared by Publish, exclusive for GC
package images

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Errors callers match with errors.Is.
var (
	// ErrNotFound is returned when an image or blob is not in the store.
	ErrNotFound = errors.New("not found")
	// ErrInvalidDigest is returned for a string that is not a sha256 digest.
	ErrInvalidDigest = errors.New("invalid digest")
	// ErrInvalidManifest is wrapped by every error of Manifest.Validate.
	ErrInvalidManifest = errors.New("invalid manifest")
	// ErrMissingBlob is returned by Publish when an artifact is not stored
	// with its digest and size.
	ErrMissingBlob = errors.New("blob is not in the store with that size")
	// ErrPinned is returned by Remove for a pinned image.
	ErrPinned = errors.New("image is pinned")
)

// Digest is a content address of the form "sha256:<64 lowercase hex>".
type Digest string

// DigestOf returns the digest of b.
func DigestOf(b []byte) Digest {
	sum := sha256.Sum256(b)
	return Digest("sha256:" + hex.EncodeToString(sum[:]))
}

// ParseDigest validates s as a sha256 digest and returns it.
func ParseDigest(s string) (Digest, error) {
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		return "", fmt.Errorf("%w %q: want sha256:<64 hex digits>", ErrInvalidDigest, s)
	}
	if len(hexPart) != sha256.Size*2 {
		return "", fmt.Errorf("%w %q: want 64 hex digits, have %d", ErrInvalidDigest, s, len(hexPart))
	}
	for _, c := range hexPart {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", fmt.Errorf("%w %q: %q is not a lowercase hex digit", ErrInvalidDigest, s, c)
		}
	}
	return Digest(s), nil
}

// Hex returns the hex part of d.
func (d Digest) Hex() string { return strings.TrimPrefix(string(d), "sha256:") }

// String implements fmt.Stringer.
func (d Digest) String() string { return string(d) }

// Artifact is one blob of an image.
type Artifact struct {
	// Name says what the blob is for: "kernel", "initrd", later "squashfs", "disk", ...
	Name   string `json:"name"`
	Digest Digest `json:"digest"`
	Size   int64  `json:"size"`
}

// Manifest describes one image. Its canonical encoding is encoding/json's
// output for the struct, which is deterministic; the image ID is its digest.
// It holds nothing that varies between two builds of the same inputs (no
// build time, no host name).
type Manifest struct {
	SchemaVersion int    `json:"schemaVersion"`
	Name          string `json:"name"`
	// Inputs is the digest of everything the image was built from. The image
	// carries it too (in /etc/kiln/image), so a booted machine can prove what
	// it runs.
	Inputs    Digest     `json:"inputs"`
	Cmdline   string     `json:"cmdline,omitempty"`
	Artifacts []Artifact `json:"artifacts"`
}

// Artifact returns the artifact called name.
func (m Manifest) Artifact(name string) (Artifact, bool) {
	for _, a := range m.Artifacts {
		if a.Name == name {
			return a, true
		}
	}
	return Artifact{}, false
}

// Size is the sum of the artifact sizes.
func (m Manifest) Size() int64 {
	var n int64
	for _, a := range m.Artifacts {
		n += a.Size
	}
	return n
}

// Canonical returns the manifest's canonical encoding: the bytes whose
// sha256 is the image ID.
func (m Manifest) Canonical() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding manifest: %w", err)
	}
	return b, nil
}

// Validate checks the manifest's own fields. Its errors wrap
// ErrInvalidManifest.
func (m Manifest) Validate() error {
	if m.SchemaVersion != 1 {
		return fmt.Errorf("%w: schemaVersion %d, want 1", ErrInvalidManifest, m.SchemaVersion)
	}
	if m.Name == "" {
		return fmt.Errorf("%w: name is empty", ErrInvalidManifest)
	}
	if _, err := ParseDigest(string(m.Inputs)); err != nil {
		return fmt.Errorf("%w: inputs: %w", ErrInvalidManifest, err)
	}
	if len(m.Artifacts) == 0 {
		return fmt.Errorf("%w: no artifacts", ErrInvalidManifest)
	}
	seen := map[string]bool{}
	for i, a := range m.Artifacts {
		if a.Name == "" {
			return fmt.Errorf("%w: artifacts[%d]: name is empty", ErrInvalidManifest, i)
		}
		if seen[a.Name] {
			return fmt.Errorf("%w: artifacts[%d]: duplicate name %q", ErrInvalidManifest, i, a.Name)
		}
		seen[a.Name] = true
		if _, err := ParseDigest(string(a.Digest)); err != nil {
			return fmt.Errorf("%w: artifacts[%d] (%s): %w", ErrInvalidManifest, i, a.Name, err)
		}
		if a.Size < 0 {
			return fmt.Errorf("%w: artifacts[%d] (%s): negative size %d", ErrInvalidManifest, i, a.Name, a.Size)
		}
	}
	return nil
}
