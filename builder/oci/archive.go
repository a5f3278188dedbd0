package oci

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// maxConfigSize bounds the config file read from an archive.
const maxConfigSize = 16 << 20

// archiveCandidates lists the images of the docker save archive file.
func archiveCandidates(file string) ([]*candidate, error) {
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(file) })
	if err != nil {
		return nil, fmt.Errorf("reading manifest.json: %w", err)
	}
	out := make([]*candidate, 0, len(m))
	for _, d := range m {
		out = append(out, archiveImage(file, d))
	}
	return out, nil
}

// archiveImage makes the candidate for one manifest.json entry. Its config
// is read on first use.
func archiveImage(file string, d tarball.Descriptor) *candidate {
	var (
		once sync.Once
		cfg  *v1.ConfigFile
		id   v1.Hash
		rerr error
	)
	read := func() error {
		once.Do(func() { cfg, id, rerr = readArchiveConfig(file, d.Config) })
		return rerr
	}
	c := &candidate{desc: d.Config, names: d.RepoTags}
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
		layers, err := layersOf(cfg, len(d.Layers), func(i int) layer {
			p := d.Layers[i]
			h, _ := digestFromName(p, false)
			return layer{
				name: p,
				blob: h,
				open: func() (io.ReadCloser, error) { return openArchiveFile(file, p) },
			}
		})
		if err != nil {
			return nil, err
		}
		return &image{digest: id.String(), layers: layers}, nil
	}
	return c
}

func readArchiveConfig(file, name string) (*v1.ConfigFile, v1.Hash, error) {
	rc, err := openArchiveFile(file, name)
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("reading config %s: %w", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxConfigSize+1))
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("reading config %s: %w", name, err)
	}
	if len(b) > maxConfigSize {
		return nil, v1.Hash{}, fmt.Errorf("config %s is larger than %d bytes", name, maxConfigSize)
	}
	if h, ok := digestFromName(name, true); ok {
		if err := checkDigest(b, h, "config "+name); err != nil {
			return nil, v1.Hash{}, err
		}
	}
	id, _, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		return nil, v1.Hash{}, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(b))
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("parsing config %s: %w", name, err)
	}
	return cfg, id, nil
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

// maxArchiveLinks bounds the links followed to find an archive member.
const maxArchiveLinks = 8

// openArchiveFile opens the member name of the tar file, following
// symlinks and hard links (newer docker save archives link legacy names to
// blobs/sha256/…).
func openArchiveFile(file, name string) (io.ReadCloser, error) {
	want := path.Clean(name)
	for range maxArchiveLinks {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		tr := tar.NewReader(f)
		var h *tar.Header
		for {
			h, err = tr.Next()
			if err != nil || path.Clean(h.Name) == want {
				break
			}
		}
		switch {
		case err == io.EOF:
			f.Close()
			return nil, fmt.Errorf("%s: not in archive", want)
		case err != nil:
			f.Close()
			return nil, fmt.Errorf("finding %s in archive: %w", want, err)
		case h.Typeflag == tar.TypeSymlink:
			f.Close()
			want = path.Join(path.Dir(want), h.Linkname)
		case h.Typeflag == tar.TypeLink:
			f.Close()
			want = path.Clean(h.Linkname)
		case h.Typeflag == tar.TypeReg:
			return struct {
				io.Reader
				io.Closer
			}{tr, f}, nil
		default:
			f.Close()
			return nil, fmt.Errorf("%s: archive member is not a file", want)
		}
	}
	return nil, fmt.Errorf("%s: more than %d links", name, maxArchiveLinks)
}
