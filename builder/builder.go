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
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kiln-dev/kiln/images"
)

// Options tune a build. The zero value is ready to use.
type Options struct {
	// Log receives the build's progress lines; nil discards them.
	Log *slog.Logger
	// Progress, if set, is called as the build advances, from Build's
	// goroutine. Stages, in order: "kernel" (bytes stored of total),
	// "scan" (tree entries read; total is -1, unknown) and "initrd" (file
	// bytes written of total).
	Progress func(stage string, done, total int64)
}

// Result describes a published image.
type Result struct {
	ID        images.Digest     `json:"id"`
	Name      string            `json:"name"`
	Inputs    images.Digest     `json:"inputs"`
	Artifacts []images.Artifact `json:"artifacts"`
}

// Artifact names in the manifests Build publishes.
const (
	ArtifactKernel = "kernel"
	ArtifactInitrd = "initrd"
)

// Build validates r, bakes it and publishes the image into st. The kernel
// is copied as is; the initrd is the tree, with /etc/kiln/image added
// (KILN_IMAGE_NAME and KILN_INPUTS, shell assignments), as a
// zstd-compressed newc cpio archive, streamed into the store. On error
// nothing is published and no partial blob is left behind (the kernel blob,
// complete and content-addressed, may stay until garbage collection).
func Build(ctx context.Context, r *Recipe, st *images.Store, opt Options) (Result, error) {
	if err := r.Validate(); err != nil {
		return Result{}, err
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("image", r.Name)
	progress := func(stage string, done, total int64) {
		if opt.Progress != nil {
			opt.Progress(stage, done, total)
		}
	}
	start := time.Now()

	kernel, err := putKernel(ctx, st, r.resolve(r.Kernel), func(done, total int64) { progress("kernel", done, total) })
	if err != nil {
		return Result{}, r.errorf("kernel", "%s: %w", r.Kernel, err)
	}
	log.Info("kernel stored", "digest", kernel.Digest, "size", kernel.Size)

	t := newTree()
	defer t.close()
	sc := &scanner{
		ctx:      ctx,
		owner:    r.Owner,
		spoolDir: filepath.Join(st.Root(), "tmp"),
		progress: func(n int64) { progress("scan", n, -1) },
	}
	if err := sc.scanBase(t, r.resolve(r.Base)); err != nil {
		return Result{}, r.errorf("base", "%s: %w", r.Base, err)
	}
	if err := t.complete(r.Owner); err != nil {
		return Result{}, r.errorf("base", "%s: %w", r.Base, err)
	}
	if len(t.skipped) > 0 {
		log.Warn("left out special files of the base", "count", len(t.skipped), "first", t.skipped[0])
	}
	if err := t.addFiles(ctx, r); err != nil {
		return Result{}, err
	}
	if e := t.entries["init"]; e == nil {
		log.Warn("the tree has no /init: the kernel will not run it from this initrd")
	}

	inputs, err := inputsDigest(r, kernel.Digest, t)
	if err != nil {
		return Result{}, err
	}
	if err := t.addImageInfo(r, inputs); err != nil {
		return Result{}, err
	}
	log.Info("tree scanned", "entries", len(t.entries), "inputs", inputs)

	initrd, err := putInitrd(ctx, st, t, func(done, total int64) { progress("initrd", done, total) })
	if err != nil {
		return Result{}, fmt.Errorf("baking initrd of %s: %w", r.Name, err)
	}
	log.Info("initrd stored", "digest", initrd.Digest, "size", initrd.Size)

	m := images.Manifest{
		SchemaVersion: 1,
		Name:          r.Name,
		Inputs:        inputs,
		Cmdline:       r.Cmdline,
		Artifacts:     []images.Artifact{kernel, initrd},
	}
	id, err := st.Publish(m)
	if err != nil {
		return Result{}, fmt.Errorf("publishing %s: %w", r.Name, err)
	}
	log.Info("image published", "id", id, "duration", time.Since(start).Round(time.Millisecond))
	return Result{ID: id, Name: r.Name, Inputs: inputs, Artifacts: m.Artifacts}, nil
}

// putKernel copies the kernel file into the store.
func putKernel(ctx context.Context, st *images.Store, p string, progress func(done, total int64)) (images.Artifact, error) {
	f, err := os.Open(p)
	if err != nil {
		return images.Artifact{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return images.Artifact{}, err
	}
	a, err := st.PutBlob(&progressReader{r: ctxReader{ctx, f}, total: fi.Size(), progress: progress})
	if err != nil {
		return images.Artifact{}, err
	}
	a.Name = ArtifactKernel
	return a, nil
}

// putInitrd streams the tree's initrd into a new blob.
func putInitrd(ctx context.Context, st *images.Store, t *tree, progress func(done, total int64)) (images.Artifact, error) {
	bw, err := st.NewBlob()
	if err != nil {
		return images.Artifact{}, err
	}
	if err := writeInitrd(ctx, t, bw, progress); err != nil {
		bw.Abort()
		return images.Artifact{}, err
	}
	a, err := bw.Commit()
	if err != nil {
		return images.Artifact{}, err
	}
	a.Name = ArtifactInitrd
	return a, nil
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
