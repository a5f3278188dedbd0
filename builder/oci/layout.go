package oci

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// maxIndexDepth bounds how deep indexes may nest in a layout.
const maxIndexDepth = 4

// layoutCandidates lists the images of the OCI layout in dir, walking
// nested indexes. Names given to an index apply to the images under it.
func layoutCandidates(dir string) ([]*candidate, error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading index.json: %w", err)
	}
	var out []*candidate
	if err := walkIndex(lp, im, nil, 0, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func walkIndex(lp layout.Path, im *v1.IndexManifest, names []string, depth int, out *[]*candidate) error {
	if depth > maxIndexDepth {
		return fmt.Errorf("indexes nest deeper than %d", maxIndexDepth)
	}
	for _, d := range im.Manifests {
		n := append(slices.Clone(names), refNames(d.Annotations)...)
		switch {
		case d.MediaType.IsIndex():
			b, err := lp.Bytes(d.Digest)
			if err != nil {
				return fmt.Errorf("reading index %s: %w", d.Digest, err)
			}
			if err := checkDigest(b, d.Digest, "index "+d.Digest.String()); err != nil {
				return err
			}
			child, err := v1.ParseIndexManifest(bytes.NewReader(b))
			if err != nil {
				return fmt.Errorf("parsing index %s: %w", d.Digest, err)
			}
			if err := walkIndex(lp, child, n, depth+1, out); err != nil {
				return err
			}
		case d.MediaType.IsImage():
			*out = append(*out, layoutImage(lp, d, n))
		}
	}
	return nil
}

// refNames returns the names an index descriptor's annotations give.
func refNames(a map[string]string) []string {
	var out []string
	for _, k := range []string{annotationRefName, annotationImageName} {
		if v := a[k]; v != "" {
			out = append(out, v)
		}
	}
	return out
}

// layoutImage makes the candidate for the image manifest d. Its manifest
// and config are read, and checked against their digests, on first use.
func layoutImage(lp layout.Path, d v1.Descriptor, names []string) *candidate {
	var (
		once sync.Once
		m    *v1.Manifest
		cfg  *v1.ConfigFile
		rerr error
	)
	read := func() error {
		once.Do(func() { m, cfg, rerr = readLayoutImage(lp, d.Digest) })
		return rerr
	}
	c := &candidate{
		desc:   d.Digest.String(),
		digest: d.Digest.String(),
		names:  names,
		skip:   d.Annotations[annotationRefType] == attestationReference,
	}
	if p := d.Platform; p != nil && p.OS != "" {
		c.platform = &v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
		c.skip = c.skip || p.OS == "unknown"
	}
	c.config = func() (*v1.ConfigFile, error) {
		if err := read(); err != nil {
			return nil, err
		}
		return cfg, nil
	}
	c.load = func() (*image, error) {
		if err := read(); err != nil {
			return nil, err
		}
		for i, l := range m.Layers {
			if !l.MediaType.IsLayer() {
				return nil, fmt.Errorf("layer %d (%s) has media type %q, not a filesystem layer", i, l.Digest, l.MediaType)
			}
		}
		layers, err := layersOf(cfg, len(m.Layers), func(i int) layer {
			h := m.Layers[i].Digest
			return layer{
				name: h.String(),
				blob: h,
				open: func() (io.ReadCloser, error) { return lp.Blob(h) },
			}
		})
		if err != nil {
			return nil, err
		}
		return &image{digest: d.Digest.String(), layers: layers}, nil
	}
	return c
}

func readLayoutImage(lp layout.Path, h v1.Hash) (*v1.Manifest, *v1.ConfigFile, error) {
	b, err := lp.Bytes(h)
	if err != nil {
		return nil, nil, fmt.Errorf("reading manifest %s: %w", h, err)
	}
	if err := checkDigest(b, h, "manifest "+h.String()); err != nil {
		return nil, nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(b))
	if err != nil {
		return nil, nil, fmt.Errorf("parsing manifest %s: %w", h, err)
	}
	cb, err := lp.Bytes(m.Config.Digest)
	if err != nil {
		return nil, nil, fmt.Errorf("reading config %s: %w", m.Config.Digest, err)
	}
	if err := checkDigest(cb, m.Config.Digest, "config "+m.Config.Digest.String()); err != nil {
		return nil, nil, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(cb))
	if err != nil {
		return nil, nil, fmt.Errorf("parsing config %s: %w", m.Config.Digest, err)
	}
	return m, cfg, nil
}
