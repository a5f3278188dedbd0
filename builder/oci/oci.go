// Package oci flattens a container image, read offline from an OCI image
// layout directory or a `docker save` archive, into one uncompressed tar
// stream of its root filesystem.
//
// Layers are applied in order the way a container runtime unpacks them:
// whiteouts (.wh.name) and opaque markers (.wh..wh..opq) hide entries of
// lower layers only; a later entry replaces an earlier one of the same path
// (a directory over a directory keeps its children); symlinks in the parent
// path of an entry are followed inside the root, so a layer entry
// lib/x.so lands at usr/lib/x.so when lib is a symlink to usr/lib; parents
// that no layer creates are made as 0755 root-owned directories.
//
// Every blob read is checked against its digest: the manifest and config of
// a layout, each layer blob against the manifest, and each uncompressed
// layer against the config's diff ID. A mismatch fails the flatten.
//
// The output holds directories first, parents before children and each
// directory's entries sorted by name, then every other entry in the order
// its content appears in the layers. Names start with "./". Modes (with
// setuid, setgid and sticky bits), owners, mtimes, symlinks, device nodes,
// FIFOs and extended attributes (PAX SCHILY.xattr records) are kept. Paths
// that share a file through hard links come out as one file and hard links
// to it, each link after its target, even when the file came from a lower
// layer; a hard link whose original target a later layer replaced or
// deleted keeps the old content, as on disk.
//
// An image is untrusted input, so Flatten bounds the work it may cause,
// each bound far above real images, and fails with an error naming the one
// exceeded: 16 MiB for index.json, manifest.json and each index, manifest
// and config; 65536 members in an archive; 1024 images in a layout or
// archive; 256 layers in an image; 4096 bytes (PATH_MAX) for a name, link
// target or resolved path; 40 symlinks and 4096 path components for one
// lookup; 2Mi entries and implied directories, and 512 MiB of names, link
// targets, PAX records and paths, over all layers. It reads each index,
// manifest and config once, however often they are named, finds archive
// members through an index made in one pass, and stops soon after ctx is
// done.
package oci

// BUG(oci): Flatten does not bound the size of file contents, which a
// small compressed layer can expand into without limit; cancel ctx, or
// bound w, to stop it.

// BUG(oci): A `docker save` archive has no manifest of its own, so its layer
// files are checked only against the config's diff IDs (and against their
// names when those are blob digests), and the config only against its name.

// BUG(oci): Archives must be uncompressed tar files; gunzip a saved
// image.tar.gz first.

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
)

// Kind is the on-disk format of an image.
type Kind int

// Image formats that Detect recognises.
const (
	// Unknown is neither format.
	Unknown Kind = iota
	// Layout is an OCI image layout directory: an oci-layout file, an
	// index.json and a blobs directory.
	Layout
	// DockerArchive is a tar file written by `docker save`, with a
	// manifest.json at its top.
	DockerArchive
)

// String returns the format's name.
func (k Kind) String() string {
	switch k {
	case Layout:
		return "oci-layout"
	case DockerArchive:
		return "docker-archive"
	}
	return "unknown"
}

// ErrNotImage is wrapped by Detect's (and Flatten's) errors for a path that
// holds neither an OCI image layout nor a docker save archive.
var ErrNotImage = errors.New("not a container image")

// ErrNoImage is wrapped by Flatten's errors when no image in the layout or
// archive matches the requested platform and ref, or several do.
var ErrNoImage = errors.New("no matching image")

// Detect reports whether p is an OCI image layout directory (an
// "oci-layout" file and an index.json) or a `docker save` tarball (a tar
// with manifest.json). For anything else it returns Unknown and an error
// that wraps ErrNotImage and says what was expected.
func Detect(p string) (Kind, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return Unknown, fmt.Errorf("detecting image format: %w", err)
	}
	if fi.IsDir() {
		for _, name := range []string{"oci-layout", "index.json"} {
			if _, err := os.Stat(filepath.Join(p, name)); err != nil {
				return Unknown, fmt.Errorf("%s: %w: directory has no %s; want an OCI image layout (oci-layout and index.json)", p, ErrNotImage, name)
			}
		}
		return Layout, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return Unknown, fmt.Errorf("detecting image format: %w", err)
	}
	defer f.Close()
	magic := make([]byte, 4)
	n, _ := f.ReadAt(magic, 0)
	if c := compressed(magic[:n]); c != "" {
		return Unknown, fmt.Errorf("%s: %w: %s-compressed file; want an uncompressed docker save tar, decompress it first", p, ErrNotImage, c)
	}
	// The tar reader seeks over member contents, so finding
	// manifest.json costs a read per member, not of every byte.
	tr := tar.NewReader(f)
	for range maxArchiveMembers {
		h, err := tr.Next()
		if err == io.EOF {
			return Unknown, fmt.Errorf("%s: %w: tar has no manifest.json; want a docker save archive", p, ErrNotImage)
		}
		if err != nil {
			return Unknown, fmt.Errorf("%s: %w: reading as tar: %v; want a docker save archive or an OCI layout directory", p, ErrNotImage, err)
		}
		if path.Clean(h.Name) == "manifest.json" {
			return DockerArchive, nil
		}
	}
	return Unknown, fmt.Errorf("%s: %w: no manifest.json in the first %d members of the tar; want a docker save archive", p, ErrNotImage, maxArchiveMembers)
}

// Options select the image to flatten. The zero value picks linux/amd64.
type Options struct {
	// Platform is the wanted "os/arch[/variant]"; "" means linux/amd64.
	// It decides between the images of a layout or archive that holds
	// several. A lone image is taken whatever its platform, unless
	// Platform is set and the image's config names a different one.
	Platform string
	// Ref, if set, picks images by name before the platform does: a tag
	// or reference such as "bookworm", "debian:bookworm" or
	// "docker.io/library/debian:bookworm", matched against a layout's
	// org.opencontainers.image.ref.name and io.containerd.image.name
	// annotations or an archive's RepoTags; or a manifest digest
	// "sha256:…" in a layout.
	Ref string
}

// Info describes the flattened image.
type Info struct {
	// Digest is the image manifest's digest ("sha256:…") for an OCI
	// layout. A docker save archive has no manifest of its own, so for it
	// Digest is the image ID, the digest of its config.
	Digest string
	// Layers is the number of layers applied.
	Layers int
}

// Flatten writes the filesystem of the image at path (a layout directory
// or docker save archive, see Detect) to w as an uncompressed tar stream,
// all layers applied in order. It reads each layer twice: once to plan the
// tree, once to copy file contents. On error, w may hold part of a stream.
func Flatten(ctx context.Context, path string, opt Options, w io.Writer) (Info, error) {
	kind, err := Detect(path)
	if err != nil {
		return Info{}, err
	}
	if kind == Layout {
		return flattenFrom(ctx, kind, path, opt, w, func() ([]*candidate, error) {
			return layoutCandidates(ctx, path)
		})
	}
	f, err := os.Open(path)
	if err != nil {
		return Info{}, fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Info{}, fmt.Errorf("opening %s: %w", path, err)
	}
	return flattenArchive(ctx, f, fi.Size(), path, opt, w)
}

// flattenArchive flattens the docker save archive held in the first size
// bytes of r. name is how errors call the archive.
func flattenArchive(ctx context.Context, r io.ReaderAt, size int64, name string, opt Options, w io.Writer) (Info, error) {
	return flattenFrom(ctx, DockerArchive, name, opt, w, func() ([]*candidate, error) {
		return archiveCandidates(ctx, r, size)
	})
}

// flattenFrom flattens the image that opt picks from those list returns.
func flattenFrom(ctx context.Context, kind Kind, name string, opt Options, w io.Writer, list func() ([]*candidate, error)) (Info, error) {
	want, explicit, err := parsePlatform(opt.Platform)
	if err != nil {
		return Info{}, err
	}
	cands, err := list()
	if err != nil {
		return Info{}, fmt.Errorf("reading %s %s: %w", kind, name, err)
	}
	c, err := choose(cands, opt.Ref, want, explicit)
	if err != nil {
		return Info{}, fmt.Errorf("choosing image in %s: %w", name, err)
	}
	img, err := c.load()
	if err != nil {
		return Info{}, fmt.Errorf("reading image %s in %s: %w", c.desc, name, err)
	}
	if err := flatten(ctx, img.layers, defaultLimits, w); err != nil {
		return Info{}, fmt.Errorf("flattening image %s in %s: %w", img.digest, name, err)
	}
	return Info{Digest: img.digest, Layers: len(img.layers)}, nil
}
