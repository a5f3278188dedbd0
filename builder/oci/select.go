package oci

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// defaultPlatform is the platform Flatten picks when Options.Platform is "".
const defaultPlatform = "linux/amd64"

// Bounds on what a layout or archive may list. Reading each image or layer
// costs a read of its blobs, so without them a small crafted manifest could
// make Flatten read the same blob without end.
const (
	// maxImages bounds the images (and indexes) a layout or archive lists.
	maxImages = 1024
	// maxLayers bounds the layers of an image: twice the 128 that
	// Docker's overlay2 storage driver accepts.
	maxLayers = 256
)

// Annotations that name an image in an OCI layout's index.
const (
	annotationRefName    = "org.opencontainers.image.ref.name"
	annotationImageName  = "io.containerd.image.name"
	annotationRefType    = "vnd.docker.reference.type"
	attestationReference = "attestation-manifest"
)

// image is a chosen image, ready to flatten.
type image struct {
	digest string
	layers []layer
}

// candidate is one image of a layout or archive that Flatten may pick.
type candidate struct {
	desc     string       // how errors name it: a digest or archive entry
	digest   string       // manifest digest, for a Ref of "sha256:…"
	names    []string     // names a Ref may match
	platform *v1.Platform // from the index, if it said; else from config
	skip     bool         // an attestation, never an image to run
	config   func() (*v1.ConfigFile, error)
	load     func() (*image, error)
}

// parsePlatform parses Options.Platform; explicit says it was set.
func parsePlatform(s string) (p v1.Platform, explicit bool, err error) {
	explicit = s != ""
	if !explicit {
		s = defaultPlatform
	}
	pp, err := v1.ParsePlatform(s)
	if err != nil || pp.OS == "" || pp.Architecture == "" || pp.OSVersion != "" {
		return v1.Platform{}, false, fmt.Errorf("parsing platform %q: want os/arch[/variant], such as linux/amd64", s)
	}
	return *pp, explicit, nil
}

// platformOf returns the candidate's platform, reading its config if the
// index did not say. It returns nil if the config does not say either.
func (c *candidate) platformOf() (*v1.Platform, error) {
	if c.platform != nil {
		return c.platform, nil
	}
	cfg, err := c.config()
	if err != nil {
		return nil, fmt.Errorf("reading config of image %s: %w", c.desc, err)
	}
	if cfg.OS == "" && cfg.Architecture == "" {
		return nil, nil
	}
	c.platform = &v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
	return c.platform, nil
}

// matches reports whether have runs where want is asked for.
func matches(have *v1.Platform, want v1.Platform) bool {
	return have.OS == want.OS && have.Architecture == want.Architecture &&
		(want.Variant == "" || have.Variant == want.Variant)
}

// choose picks the one candidate that ref and the platform select.
func choose(cands []*candidate, ref string, want v1.Platform, explicit bool) (*candidate, error) {
	cands = slices.DeleteFunc(slices.Clone(cands), func(c *candidate) bool { return c.skip })
	if len(cands) == 0 {
		return nil, fmt.Errorf("%w: no images", ErrNoImage)
	}
	if ref != "" {
		var named []*candidate
		for _, c := range cands {
			if refMatches(ref, c) {
				named = append(named, c)
			}
		}
		if len(named) == 0 {
			return nil, fmt.Errorf("%w: no image named %q (have %s)", ErrNoImage, ref, listNames(cands))
		}
		cands = named
	}
	if len(cands) == 1 {
		c := cands[0]
		if !explicit {
			return c, nil
		}
		p, err := c.platformOf()
		if err != nil {
			return nil, err
		}
		if p != nil && !matches(p, want) {
			return nil, fmt.Errorf("%w: image %s is for %s, not %s", ErrNoImage, c.desc, p, want)
		}
		return c, nil
	}
	var found []*candidate
	var have []string
	for _, c := range cands {
		p, err := c.platformOf()
		if err != nil {
			return nil, err
		}
		if p == nil {
			have = append(have, "unknown")
			continue
		}
		have = append(have, p.String())
		if matches(p, want) {
			found = append(found, c)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%w: no image for platform %s (have %s)", ErrNoImage, want, strings.Join(have, ", "))
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%w: %d images for platform %s; pick one by ref (have %s)", ErrNoImage, len(found), want, listNames(found))
}

// refMatches reports whether ref names the candidate: as a manifest
// digest, literally, or as the same normalised reference.
func refMatches(ref string, c *candidate) bool {
	if strings.HasPrefix(ref, "sha256:") {
		return ref == c.digest
	}
	want, err := name.ParseReference(ref)
	for _, n := range c.names {
		if n == ref {
			return true
		}
		if err != nil {
			continue
		}
		if have, err := name.ParseReference(n); err == nil && have.Name() == want.Name() {
			return true
		}
	}
	return false
}

// listNames lists the candidates' names (or descriptions) for errors.
func listNames(cands []*candidate) string {
	var out []string
	for _, c := range cands {
		if len(c.names) == 0 {
			out = append(out, c.desc)
			continue
		}
		out = append(out, strings.Join(c.names, " "))
	}
	return strings.Join(out, ", ")
}

// checkDigest checks that b hashes to want.
func checkDigest(b []byte, want v1.Hash, what string) error {
	if want.Algorithm != "sha256" {
		return fmt.Errorf("%s %s: unsupported digest algorithm", what, want)
	}
	got, _, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%s: digest mismatch: content hashes to %s, want %s", what, got, want)
	}
	return nil
}

// layersOf builds the layer list from a config's diff IDs and the opener
// of each layer's blob.
func layersOf(cfg *v1.ConfigFile, n int, mk func(i int) layer) ([]layer, error) {
	if cfg.RootFS.Type != "" && cfg.RootFS.Type != "layers" {
		return nil, fmt.Errorf("config rootfs type %q: want \"layers\"", cfg.RootFS.Type)
	}
	if n > maxLayers {
		return nil, fmt.Errorf("image has %d layers, more than %d", n, maxLayers)
	}
	if len(cfg.RootFS.DiffIDs) != n {
		return nil, fmt.Errorf("config lists %d diff IDs for %d layers", len(cfg.RootFS.DiffIDs), n)
	}
	out := make([]layer, n)
	for i := range n {
		out[i] = mk(i)
		out[i].diffID = cfg.RootFS.DiffIDs[i]
	}
	return out, nil
}

// onceMap computes the value of each key once, however many callers ask.
// The zero value is ready to use.
type onceMap[K comparable, V any] struct {
	mu sync.Mutex
	m  map[K]*onceValue[V]
}

type onceValue[V any] struct {
	once sync.Once
	v    V
	err  error
}

// get returns the value for k, calling f to compute it on the first call.
func (o *onceMap[K, V]) get(k K, f func() (V, error)) (V, error) {
	o.mu.Lock()
	if o.m == nil {
		o.m = map[K]*onceValue[V]{}
	}
	e := o.m[k]
	if e == nil {
		e = &onceValue[V]{}
		o.m[k] = e
	}
	o.mu.Unlock()
	e.once.Do(func() { e.v, e.err = f() })
	return e.v, e.err
}
