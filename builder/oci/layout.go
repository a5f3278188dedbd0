package oci

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// Bounds on an OCI layout, which is untrusted input.
const (
	// maxIndexDepth bounds how deep indexes may nest in a layout.
	maxIndexDepth = 4
	// maxBlobSize bounds index.json and each index, manifest and config
	// blob read into memory.
	maxBlobSize = 16 << 20
)

// ociLayout reads the blobs of the OCI layout in dir. It reads each
// index, and each image's manifest and config, once however often they
// are named. Blobs are opened by go-containerregistry's layout.Path.Blob,
// which refuses symlinks and anything but regular files: a FIFO would
// block and a device might never end.
type ociLayout struct {
	lp      layout.Path
	indexes map[v1.Hash]*v1.IndexManifest
	images  onceMap[v1.Hash, layoutManifest]
	listed  int // descriptors walked, bounded by maxImages
}

// layoutManifest is an image manifest and its config.
type layoutManifest struct {
	m   *v1.Manifest
	cfg *v1.ConfigFile
}

// layoutCandidates lists the images of the OCI layout in dir, walking
// nested indexes. Names given to an index apply to the images under it.
func layoutCandidates(ctx context.Context, dir string) ([]*candidate, error) {
	b, err := readFileLimit(filepath.Join(dir, "index.json"), maxBlobSize)
	if err != nil {
		return nil, fmt.Errorf("reading index.json: %w", err)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parsing index.json: %w", err)
	}
	l := &ociLayout{lp: layout.Path(dir), indexes: map[v1.Hash]*v1.IndexManifest{}}
	var out []*candidate
	if err := l.walkIndex(ctx, im, nil, 0, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func (l *ociLayout) walkIndex(ctx context.Context, im *v1.IndexManifest, names []string, depth int, out *[]*candidate) error {
	if depth > maxIndexDepth {
		return fmt.Errorf("indexes nest deeper than %d", maxIndexDepth)
	}
	for _, d := range im.Manifests {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Indexes may name one child many times: bound the walk, not
		// just its depth, or it grows as the fan-out to the depth.
		if l.listed++; l.listed > maxImages {
			return fmt.Errorf("indexes list more than %d manifests", maxImages)
		}
		n := append(slices.Clone(names), refNames(d.Annotations)...)
		switch {
		case d.MediaType.IsIndex():
			child, err := l.index(d.Digest)
			if err != nil {
				return err
			}
			if err := l.walkIndex(ctx, child, n, depth+1, out); err != nil {
				return err
			}
		case d.MediaType.IsImage():
			*out = append(*out, l.image(d, n))
		}
	}
	return nil
}

// index reads and parses the index blob h.
func (l *ociLayout) index(h v1.Hash) (*v1.IndexManifest, error) {
	if im, ok := l.indexes[h]; ok {
		return im, nil
	}
	b, err := l.readBlob(h, "index")
	if err != nil {
		return nil, err
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parsing index %s: %w", h, err)
	}
	l.indexes[h] = im
	return im, nil
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

// image makes the candidate for the image manifest d. Its manifest and
// config are read, and checked against their digests, on first use.
func (l *ociLayout) image(d v1.Descriptor, names []string) *candidate {
	read := func() (layoutManifest, error) {
		return l.images.get(d.Digest, func() (layoutManifest, error) { return l.readImage(d.Digest) })
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
		im, err := read()
		return im.cfg, err
	}
	c.load = func() (*image, error) {
		im, err := read()
		if err != nil {
			return nil, err
		}
		for i, ld := range im.m.Layers {
			if !ld.MediaType.IsLayer() {
				return nil, fmt.Errorf("layer %d (%s) has media type %q, not a filesystem layer", i, ld.Digest, ld.MediaType)
			}
		}
		layers, err := layersOf(im.cfg, len(im.m.Layers), func(i int) layer {
			h := im.m.Layers[i].Digest
			return layer{
				name: h.String(),
				blob: h,
				open: func() (io.ReadCloser, error) { return l.lp.Blob(h) },
			}
		})
		if err != nil {
			return nil, err
		}
		return &image{digest: d.Digest.String(), layers: layers}, nil
	}
	return c
}

func (l *ociLayout) readImage(h v1.Hash) (layoutManifest, error) {
	b, err := l.readBlob(h, "manifest")
	if err != nil {
		return layoutManifest{}, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(b))
	if err != nil {
		return layoutManifest{}, fmt.Errorf("parsing manifest %s: %w", h, err)
	}
	cb, err := l.readBlob(m.Config.Digest, "config")
	if err != nil {
		return layoutManifest{}, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(cb))
	if err != nil {
		return layoutManifest{}, fmt.Errorf("parsing config %s: %w", m.Config.Digest, err)
	}
	return layoutManifest{m: m, cfg: cfg}, nil
}

// readBlob reads the blob h, at most maxBlobSize bytes, and checks it
// against h. what names the blob in errors.
func (l *ociLayout) readBlob(h v1.Hash, what string) ([]byte, error) {
	if h.Algorithm != "sha256" {
		return nil, fmt.Errorf("%s %s: unsupported digest algorithm", what, h)
	}
	rc, err := l.lp.Blob(h)
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", what, h, err)
	}
	defer rc.Close()
	b, err := readLimit(rc, maxBlobSize)
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", what, h, err)
	}
	if err := checkDigest(b, h, what+" "+h.String()); err != nil {
		return nil, err
	}
	return b, nil
}

// readFileLimit reads the file name, which must be a regular file (a FIFO
// would block) of at most limit bytes.
func readFileLimit(name string, limit int64) ([]byte, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if opened, err := f.Stat(); err != nil || !os.SameFile(fi, opened) {
		return nil, fmt.Errorf("%s: changed while opening", name)
	}
	b, err := readLimit(f, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return b, nil
}

// readLimit reads r to its end, which must come within limit bytes.
func readLimit(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}
