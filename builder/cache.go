package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/kiln-dev/kiln/images"
)

// cache remembers what earlier builds baked, keyed by the digests of the
// inputs of each output, so a rebuild reuses every output whose inputs did
// not change, and the unpacked Debian base. Entries only point at blobs
// in the image store; an entry whose blob is gone (garbage collected) is a
// miss. Losing the cache costs time, never correctness.
type cache struct {
	dir  string
	skip bool // look nothing up (still record)
}

// key returns the cache key of an output from the strings that determine
// it.
func (c *cache) key(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		b, _ := json.Marshal(p) // quoting keeps ("a b", "c") apart from ("a", "b c")
		h.Write(b)
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (c *cache) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

// artifact returns the artifact recorded under key, if its blob is stored.
func (c *cache) artifact(st *images.Store, key string) (images.Artifact, bool) {
	if c.skip {
		return images.Artifact{}, false
	}
	b, err := os.ReadFile(c.path("outputs", key+".json"))
	if err != nil {
		return images.Artifact{}, false
	}
	var a images.Artifact
	if json.Unmarshal(b, &a) != nil || !st.HasBlob(a.Digest, a.Size) {
		return images.Artifact{}, false
	}
	return a, true
}

// putArtifact records a under key. Failing to record only costs a later
// build some time, so errors are ignored.
func (c *cache) putArtifact(key string, a images.Artifact) {
	dir := c.path("outputs")
	if os.MkdirAll(dir, 0o755) != nil {
		return
	}
	b, err := json.Marshal(images.Artifact{Digest: a.Digest, Size: a.Size})
	if err != nil {
		return
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil && cerr == nil {
		if os.Rename(f.Name(), filepath.Join(dir, key+".json")) == nil {
			return
		}
	}
	os.Remove(f.Name())
}
