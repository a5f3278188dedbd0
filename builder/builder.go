// Package builder bakes recipes into images: a recipe names a kernel, a
// base tree (a directory or a tar archive) and files to lay over it; Build
// turns the tree into a zstd-compressed newc cpio initramfs, stores it and
// the kernel in an images.Store, and publishes the manifest.
//
// Builds are reproducible: the same recipe content, kernel and tree bake
// the same bytes and the same image ID, whatever directory they live in,
// whoever owns the host files, whatever their mtimes and whenever the build
// runs. Entries are sorted, mtimes are 0, ownership comes from the recipe,
// inodes are numbered in order and the compressor is deterministic.
//
// The tree holds directories, regular files and symlinks. Hard links in a
// tar base become copies of their file. Device nodes, FIFOs and sockets in
// the base are left out, with a warning: an initramfs mounts devtmpfs.
package builder

// BUG(builder): Ownership in a tar base is replaced by the recipe's owner,
// like that of a directory base; per-entry owners are not kept yet.

// BUG(builder): Hard links in a directory base, and in a tar base, become
// separate copies of the file in the initrd.

// BUG(builder): Files of 4 GiB or more do not fit newc's 32-bit size field
// and fail the build.

import (
	"context"
	"io"
	"log/slog"

	"github.com/kiln-dev/kiln/images"
)

// Options tune a build. The zero value is ready to use.
type Options struct {
	// Log receives the build's progress lines; nil discards them.
	Log *slog.Logger
	// Progress, if set, is called as the build advances, one call at a
	// time, with a stage name and its bytes (or entries) done of total;
	// total is -1 when unknown. Stages: "base" (mmdebstrap output lines),
	// "scan" (tree entries), "kernel", then one per
	// output baked: "initrd", "root" (the tree written out for mksquashfs
	// and mkfs.ext4), "squashfs", "stage1", "disk", "iso", "uki".
	Progress func(stage string, done, total int64)
	// CacheDir holds the build cache: unpacked bases and baked outputs,
	// keyed by the digests of their inputs. Empty means the store's
	// cache/build directory. It may be deleted at any time.
	CacheDir string
	// NoCache bakes everything afresh (and still fills the cache).
	NoCache bool
}

// Result describes a published image.
type Result struct {
	ID        images.Digest     `json:"id"`
	Name      string            `json:"name"`
	Inputs    images.Digest     `json:"inputs"`
	Artifacts []images.Artifact `json:"artifacts"`
	// Cached names the artifacts that came from the build cache.
	Cached []string `json:"cached,omitempty"`
}

// Artifact names in the manifests Build publishes.
const (
	ArtifactKernel   = "kernel"
	ArtifactInitrd   = "initrd"   // the initramfs output: the whole root
	ArtifactSquashfs = "squashfs" // the squashfs output's root image
	ArtifactStage1   = "stage1"   // the squashfs output's initramfs that fetches and mounts it
	ArtifactDisk     = "disk"
	ArtifactISO      = "iso"
	ArtifactUKI      = "uki"
)

// Build validates r, bakes it and publishes the image into st.
//
// The base is unpacked (or bootstrapped) and scanned, the recipe's
// overlays, users, keys, files and services are laid over it, and
// /etc/kiln/image is added (KILN_IMAGE_NAME and KILN_INPUTS, shell
// assignments). Then every output is baked from that one tree: the kernel
// as is; initramfs, a zstd-compressed newc cpio; squashfs, the tree for
// mksquashfs plus a stage-1 initramfs; disk, a GPT image; iso; uki.
//
// On error nothing is published and no partial blob is left behind
// (complete, content-addressed blobs may stay until garbage collection).
func Build(ctx context.Context, r *Recipe, st *images.Store, opt Options) (Result, error) {
	if err := r.Validate(); err != nil {
		return Result{}, err
	}
	b := newBake(r, st, opt)
	defer b.close()
	return b.run(ctx)
}

// progressReader reports the bytes read through it.
type progressReader struct {
	r        io.Reader
	done     int64
	total    int64
	progress func(done, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	if n > 0 {
		p.progress(p.done, p.total)
	}
	return n, err
}
