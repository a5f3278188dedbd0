package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Bounds on a docker save archive, which is untrusted input. Each is far
// above what docker save writes, so that a crafted archive fails quickly
// instead of making Flatten scan, read or allocate without end.
const (
	// maxConfigSize bounds the config file read from an archive.
	maxConfigSize = 16 << 20
	// maxManifestSize bounds manifest.json.
	maxManifestSize = 16 << 20
	// maxArchiveMembers bounds the members of an archive; docker save
	// writes a few per layer.
	maxArchiveMembers = 1 << 16
	// maxArchiveLinks bounds the links followed to find an archive member.
	maxArchiveLinks = 8
)

// member is where an archive member sits: its type, its link target, and
// the offset and size of its content.
type member struct {
	typ       byte
	link      string
	sparse    bool
	off, size int64
}

// archive is a docker save archive, indexed in one pass so that finding a
// member does not scan the archive again.
type archive struct {
	r       io.ReaderAt
	members map[string]member           // by path.Clean name; the first of a name wins
	configs onceMap[string, archConfig] // by name as manifest.json gives it
}

// archConfig is a parsed config and the image ID, its digest.
type archConfig struct {
	cfg *v1.ConfigFile
	id  v1.Hash
}

// readArchive indexes the tar archive held in the first size bytes of r.
// It returns an error wrapping ErrNotImage if the tar has no manifest.json.
func readArchive(ctx context.Context, r io.ReaderAt, size int64) (*archive, error) {
	sr := io.NewSectionReader(r, 0, size)
	tr := tar.NewReader(sr)
	a := &archive{r: r, members: map[string]member{}}
	for n := 0; ; n++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading archive: %w", err)
		}
		if n == maxArchiveMembers {
			return nil, fmt.Errorf("archive has more than %d members", maxArchiveMembers)
		}
		if len(h.Name) > maxPathLen || len(h.Linkname) > maxPathLen {
			return nil, fmt.Errorf("archive member %.64q…: name or link longer than %d bytes", h.Name, maxPathLen)
		}
		name := path.Clean(h.Name)
		if _, dup := a.members[name]; dup {
			continue
		}
		// tar.Reader reads no further than the header, so the
		// member's content starts where the reader now stands.
		off, err := sr.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		a.members[name] = member{typ: h.Typeflag, link: h.Linkname, sparse: isSparse(h), off: off, size: h.Size}
	}
	if _, ok := a.members["manifest.json"]; !ok {
		return nil, fmt.Errorf("%w: tar has no manifest.json; want a docker save archive", ErrNotImage)
	}
	return a, nil
}

// isSparse reports whether h is a GNU sparse file, whose stored bytes are
// not its content.
func isSparse(h *tar.Header) bool {
	if h.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// open opens the member name, following symlinks and hard links (newer
// docker save archives link legacy names to blobs/sha256/…).
func (a *archive) open(name string) (*io.SectionReader, error) {
	want := path.Clean(name)
	for range maxArchiveLinks + 1 {
		m, ok := a.members[want]
		switch {
		case !ok:
			return nil, fmt.Errorf("%s: not in archive", want)
		case m.typ == tar.TypeSymlink:
			want = path.Join(path.Dir(want), m.link)
		case m.typ == tar.TypeLink:
			want = path.Clean(m.link)
		case m.typ == tar.TypeReg && !m.sparse:
			return io.NewSectionReader(a.r, m.off, m.size), nil
		default:
			return nil, fmt.Errorf("%s: archive member is not a file", want)
		}
	}
	return nil, fmt.Errorf("%s: more than %d links", name, maxArchiveLinks)
}

// readFile returns the content of the member name, which must hold at most
// limit bytes.
func (a *archive) readFile(name string, limit int64) ([]byte, error) {
	sr, err := a.open(name)
	if err != nil {
		return nil, err
	}
	if sr.Size() > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, limit)
	}
	b := make([]byte, sr.Size())
	if _, err := io.ReadFull(sr, b); err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return b, nil
}

// archiveCandidates lists the images of the docker save archive held in
// the first size bytes of r.
func archiveCandidates(ctx context.Context, r io.ReaderAt, size int64) ([]*candidate, error) {
	a, err := readArchive(ctx, r, size)
	if err != nil {
		return nil, err
	}
	b, err := a.readFile("manifest.json", maxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("reading manifest.json: %w", err)
	}
	var m tarball.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parsing manifest.json: %w", err)
	}
	if len(m) > maxImages {
		return nil, fmt.Errorf("manifest.json lists %d images, more than %d", len(m), maxImages)
	}
	out := make([]*candidate, 0, len(m))
	for _, d := range m {
		out = append(out, a.image(d))
	}
	return out, nil
}

// image makes the candidate for one manifest.json entry. Its config is
// read on first use.
func (a *archive) image(d tarball.Descriptor) *candidate {
	c := &candidate{desc: d.Config, names: d.RepoTags}
	c.config = func() (*v1.ConfigFile, error) {
		ac, err := a.config(d.Config)
		return ac.cfg, err
	}
	c.load = func() (*image, error) {
		ac, err := a.config(d.Config)
		if err != nil {
			return nil, err
		}
		layers, err := layersOf(ac.cfg, len(d.Layers), func(i int) layer {
			p := d.Layers[i]
			h, _ := digestFromName(p, false)
			return layer{
				name: p,
				blob: h,
				open: func() (io.ReadCloser, error) {
					sr, err := a.open(p)
					if err != nil {
						return nil, err
					}
					return io.NopCloser(sr), nil
				},
			}
		})
		if err != nil {
			return nil, err
		}
		return &image{digest: ac.id.String(), layers: layers}, nil
	}
	return c
}

// config reads, checks and parses the config member name, once however
// many images name it.
func (a *archive) config(name string) (archConfig, error) {
	return a.configs.get(name, func() (archConfig, error) { return a.readConfig(name) })
}

func (a *archive) readConfig(name string) (archConfig, error) {
	b, err := a.readFile(name, maxConfigSize)
	if err != nil {
		return archConfig{}, fmt.Errorf("reading config %s: %w", name, err)
	}
	if h, ok := digestFromName(name, true); ok {
		if err := checkDigest(b, h, "config "+name); err != nil {
			return archConfig{}, err
		}
	}
	id, _, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		return archConfig{}, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(b))
	if err != nil {
		return archConfig{}, fmt.Errorf("parsing config %s: %w", name, err)
	}
	return archConfig{cfg: cfg, id: id}, nil
}

var (
	blobName   = regexp.MustCompile(`^blobs/sha256/([0-9a-f]{64})$`)
	configName = regexp.MustCompile(`^([0-9a-f]{64})\.json$`)
)

// digestFromName returns the digest an archive member's name states: a
// blobs/sha256/<hex> path, or for a config also the legacy <hex>.json.
// Legacy <id>/layer.tar names are not content digests.
func digestFromName(name string, config bool) (v1.Hash, bool) {
	name = path.Clean(name)
	m := blobName.FindStringSubmatch(name)
	if m == nil && config {
		m = configName.FindStringSubmatch(name)
	}
	if m == nil {
		return v1.Hash{}, false
	}
	return v1.Hash{Algorithm: "sha256", Hex: m[1]}, true
}
