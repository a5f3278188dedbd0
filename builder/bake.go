package builder

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-dev/kiln/builder/debian"
	"github.com/kiln-dev/kiln/builder/disk"
	"github.com/kiln-dev/kiln/builder/iso"
	"github.com/kiln-dev/kiln/builder/oci"
	"github.com/kiln-dev/kiln/builder/squashfs"
	"github.com/kiln-dev/kiln/builder/uki"
	"github.com/kiln-dev/kiln/images"
)

// bake is one run of Build.
type bake struct {
	r     *Recipe
	st    *images.Store
	opt   Options
	log   *slog.Logger
	cache *cache

	t     *tree
	work  string // scratch directory under the store's tmp/, removed at the end
	stage string // the tree written out, once an output needs it
	// unlockRoot releases the cached root that stage is, if it is one.
	unlockRoot func()
	inputs     images.Digest
	kernel     images.Artifact
	kver       string // the kernel's version, "" if unknown
	arts       []images.Artifact
	cached     []string

	progressMu sync.Mutex
}

func newBake(r *Recipe, st *images.Store, opt Options) *bake {
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := opt.CacheDir
	if dir == "" {
		dir = filepath.Join(st.Root(), "cache", "build")
	}
	return &bake{r: r, st: st, opt: opt, log: log.With("image", r.Name), cache: &cache{dir: dir, skip: opt.NoCache}, t: newTree()}
}

func (b *bake) close() {
	b.t.close()
	if b.unlockRoot != nil {
		b.unlockRoot()
	}
	if b.work != "" {
		os.RemoveAll(b.work)
	}
}

// progress reports to Options.Progress, one call at a time (mmdebstrap's
// lines arrive from another goroutine).
func (b *bake) progress(stage string, done, total int64) {
	if b.opt.Progress != nil {
		b.progressMu.Lock()
		defer b.progressMu.Unlock()
		b.opt.Progress(stage, done, total)
	}
}

// scratch returns the bake's scratch directory, making it on first use.
func (b *bake) scratch() (string, error) {
	if b.work == "" {
		dir, err := os.MkdirTemp(filepath.Join(b.st.Root(), "tmp"), "build-")
		if err != nil {
			return "", fmt.Errorf("making scratch directory: %w", err)
		}
		b.work = dir
	}
	return b.work, nil
}

func (b *bake) run(ctx context.Context) (Result, error) {
	start := time.Now()
	r, t := b.r, b.t
	sc := &scanner{
		ctx:      ctx,
		owner:    r.Owner,
		spoolDir: filepath.Join(b.st.Root(), "tmp"),
		progress: func(n int64) { b.progress("scan", n, -1) },
	}
	if err := b.scanBase(ctx, sc); err != nil {
		return Result{}, err
	}
	if len(t.skipped) > 0 {
		b.log.Warn("left out special files of the base", "count", len(t.skipped), "first", t.skipped[0])
	}
	if err := sc.addOverlays(t, r); err != nil {
		return Result{}, err
	}
	if err := t.addUsers(r); err != nil {
		return Result{}, err
	}
	if err := t.addFiles(ctx, r); err != nil {
		return Result{}, err
	}
	if err := t.enableServices(r); err != nil {
		return Result{}, err
	}
	if err := b.storeKernel(ctx); err != nil {
		return Result{}, err
	}
	inputs, err := inputsDigest(r, b.kernel.Digest, t)
	if err != nil {
		return Result{}, err
	}
	b.inputs = inputs
	if err := t.addImageInfo(r, inputs); err != nil {
		return Result{}, err
	}
	b.log.Info("tree scanned", "entries", len(t.entries), "inputs", inputs, "kernel", b.kver)
	if r.wants(OutputInitramfs) || r.wants(OutputISO) || r.wants(OutputUKI) {
		if e := t.entries["init"]; e == nil && (r.wants(OutputInitramfs) || r.wants(OutputISO)) {
			b.log.Warn("the tree has no /init: the kernel will not run it from the initramfs")
		}
	}
	b.arts = []images.Artifact{b.kernel}
	if err := b.bakeOutputs(ctx); err != nil {
		return Result{}, err
	}
	m := images.Manifest{
		SchemaVersion: 1,
		Name:          r.Name,
		Inputs:        inputs,
		Cmdline:       r.Cmdline,
		Artifacts:     b.arts,
	}
	id, err := b.st.Publish(m)
	if err != nil {
		return Result{}, fmt.Errorf("publishing %s: %w", r.Name, err)
	}
	b.log.Info("image published", "id", id, "cached", b.cached, "duration", time.Since(start).Round(time.Millisecond))
	return Result{ID: id, Name: r.Name, Inputs: inputs, Artifacts: m.Artifacts, Cached: b.cached}, nil
}

// scanBase reads the recipe's base into the tree: a directory, an archive,
// an OCI layout or docker save tarball, or a Debian bootstrap.
func (b *bake) scanBase(ctx context.Context, sc *scanner) error {
	r, t := b.r, b.t
	fail := func(err error) error {
		if r.Debian != nil {
			return r.errorf("base.debian", "%w", err)
		}
		return r.errorf("base", "%s: %w", r.Base, err)
	}
	var err error
	switch {
	case r.Debian != nil:
		// mmdebstrap failing (the mirror, the network, a package that
		// does not install) is a build failure, not a recipe error: the
		// spec itself was validated.
		p, berr := b.debianBase(ctx)
		if berr != nil {
			return fmt.Errorf("base.debian: %w", berr)
		}
		// The archive is the cache's, not the recipe's: reading it failing
		// is a build failure too.
		if err := sc.scanTar(t, p, "none"); err != nil {
			return fmt.Errorf("base.debian: reading %s (build with --no-cache to bootstrap it again): %w", p, err)
		}
	default:
		p := r.resolve(r.Base)
		var fi os.FileInfo
		if fi, err = os.Stat(p); err != nil {
			break
		}
		switch {
		case isContainerImage(p, fi):
			err = b.scanContainer(ctx, sc, p)
		case fi.IsDir():
			err = sc.scanDir(t, p)
		default:
			comp := tarCompression(p)
			if comp == "" {
				err = fmt.Errorf("not a directory or a .tar, .tar.gz, .tgz, .tar.zst or .tar.xz archive")
				break
			}
			err = sc.scanTar(t, p, comp)
		}
	}
	if err == nil {
		err = t.complete(r.Owner)
	}
	if err != nil {
		return fail(err)
	}
	return nil
}

// isContainerImage reports whether p is an OCI image layout directory or a
// docker save tarball.
func isContainerImage(p string, fi os.FileInfo) bool {
	if fi.IsDir() {
		_, err := os.Stat(filepath.Join(p, "oci-layout"))
		return err == nil
	}
	if tarCompression(p) != "none" {
		return false
	}
	_, err := oci.Detect(p)
	return err == nil
}

// scanContainer flattens a container image's layers and scans the result.
func (b *bake) scanContainer(ctx context.Context, sc *scanner, p string) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		info, err := oci.Flatten(ctx, p, oci.Options{Platform: "linux/" + b.r.arch()}, pw)
		if err == nil {
			b.log.Info("container image flattened", "manifest", info.Digest, "layers", info.Layers)
		}
		pw.CloseWithError(err)
		done <- err
	}()
	err := sc.scanTarStream(b.t, pr)
	pr.CloseWithError(fmt.Errorf("scan stopped"))
	if ferr := <-done; ferr != nil {
		return ferr
	}
	return err
}

// debianBase returns the path of the recipe's Debian base as a tar archive,
// bootstrapping it with mmdebstrap unless the cache has it.
func (b *bake) debianBase(ctx context.Context) (string, error) {
	d := b.r.Debian
	spec := b.r.debianSpec()
	p := b.cache.path("debian", spec.Key()+".tar")
	if !b.cache.skip {
		if _, err := os.Stat(p); err == nil {
			b.log.Info("debian base from the cache", "suite", d.Suite, "path", p)
			b.cached = append(b.cached, "base")
			return p, nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	b.log.Info("bootstrapping debian base", "suite", d.Suite, "packages", d.Packages)
	// Bootstrap next to the cache entry, then rename over it: with
	// NoCache an older archive of the same spec is replaced, and a build
	// reading it meanwhile keeps its open file.
	tmp := fmt.Sprintf("%s.%d-%d.new", p, os.Getpid(), time.Now().UnixNano())
	defer os.Remove(tmp)
	var lines atomic.Int64
	err := debian.Bootstrap(ctx, spec, tmp, debian.Options{
		Log:      b.log,
		Progress: func(string) { lines.Add(1); b.progress("base", lines.Load(), -1) },
	})
	if err != nil {
		return "", fmt.Errorf("mmdebstrap: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", err
	}
	return p, nil
}

// storeKernel puts the kernel into the store, from the host or the tree.
func (b *bake) storeKernel(ctx context.Context) error {
	r := b.r
	progress := func(done, total int64) { b.progress("kernel", done, total) }
	if r.KernelGlob == "" {
		a, err := putKernel(ctx, b.st, r.resolve(r.Kernel), progress)
		if err != nil {
			return r.errorf("kernel", "%s: %w", r.Kernel, err)
		}
		b.kernel = a
		b.kver = b.t.kernelVersion(r.Kernel)
		return nil
	}
	e, err := b.t.findKernel(r)
	if err != nil {
		return err
	}
	rc, err := e.open()
	if err != nil {
		return r.errorf("kernel.base", "/%s: %w", e.path, err)
	}
	defer rc.Close()
	a, err := b.st.PutBlob(&progressReader{r: ctxReader{ctx, rc}, total: e.size, progress: progress})
	if err != nil {
		return r.errorf("kernel.base", "/%s: %w", e.path, err)
	}
	if a.Digest != e.digest {
		return r.errorf("kernel.base", "/%s: %w", e.path, errChanged)
	}
	a.Name = ArtifactKernel
	b.kernel = a
	b.kver = b.t.kernelVersion(e.path)
	return nil
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

// bakeOutputs bakes the recipe's outputs, in order, each from the cache
// when its inputs are unchanged.
func (b *bake) bakeOutputs(ctx context.Context) error {
	r := b.r
	var initrd images.Artifact
	if r.wants(OutputInitramfs) || r.wants(OutputISO) || r.wants(OutputUKI) {
		a, err := b.output(ArtifactInitrd, []string{"initramfs", bakeFormat, string(b.inputs)}, func(w io.Writer) error {
			return writeInitrd(ctx, b.t, w, func(done, total int64) { b.progress("initrd", done, total) })
		})
		if err != nil {
			return fmt.Errorf("baking the initramfs of %s: %w", r.Name, err)
		}
		initrd = a
	}
	if r.wants(OutputSquashfs) {
		if err := b.bakeSquashfs(ctx); err != nil {
			return fmt.Errorf("baking the squashfs of %s: %w", r.Name, err)
		}
	}
	if r.wants(OutputDisk) {
		if err := b.bakeDisk(ctx); err != nil {
			return fmt.Errorf("baking the disk of %s: %w", r.Name, err)
		}
	}
	if r.wants(OutputISO) {
		_, err := b.fileOutput(ArtifactISO, []string{"iso", isoFormat, string(b.kernel.Digest), string(initrd.Digest), r.Cmdline, r.Name}, func(out string) error {
			return iso.Write(ctx, out, iso.Spec{
				Kernel:  b.blobPath(b.kernel.Digest),
				Initrd:  b.blobPath(initrd.Digest),
				Cmdline: r.Cmdline,
				Label:   r.Name,
				Seed:    []byte(b.inputs),
				Log:     b.log,
			})
		})
		if err != nil {
			return fmt.Errorf("baking the iso of %s: %w", r.Name, err)
		}
	}
	if r.wants(OutputUKI) {
		_, err := b.fileOutput(ArtifactUKI, []string{"uki", ukiFormat, string(b.kernel.Digest), string(initrd.Digest), r.Cmdline, r.Name}, func(out string) error {
			return uki.Write(ctx, out, uki.Spec{
				Kernel:    b.blobPath(b.kernel.Digest),
				Initrd:    b.blobPath(initrd.Digest),
				Cmdline:   r.Cmdline,
				OSRelease: osRelease(r, b.inputs),
				Log:       b.log,
			})
		})
		if err != nil {
			return fmt.Errorf("baking the uki of %s: %w", r.Name, err)
		}
	}
	return nil
}

// Format versions of the outputs baked by other packages and tools: part
// of their cache keys. Change one when the same inputs would bake other
// bytes.
const (
	squashfsFormat = "squashfs 2" // 2: zstd level 3
	stage1Format   = "stage1 1"
	diskFormat     = "disk 1"
	isoFormat      = "iso 1"
	ukiFormat      = "uki 1"
)

func osRelease(r *Recipe, inputs images.Digest) []byte {
	return fmt.Appendf(nil, "NAME=kiln\nID=kiln\nPRETTY_NAME=\"kiln image %s\"\nIMAGE_ID=%s\nIMAGE_VERSION=%s\n", r.Name, r.Name, inputs.Hex()[:12])
}

// blobPath returns the path of a stored blob, for tools that read files.
func (b *bake) blobPath(d images.Digest) string {
	f, err := b.st.OpenBlob(d)
	if err != nil {
		return ""
	}
	f.Close()
	return f.Name()
}

// root writes the tree out once, for the outputs that need a directory.
func (b *bake) root(ctx context.Context) (string, error) {
	if b.stage != "" {
		return b.stage, nil
	}
	start := time.Now()
	progress := func(done, total int64) { b.progress("root", done, total) }
	cr, err := b.cache.lockRoot(b.r.Name)
	if err != nil {
		b.log.Warn("build cache: cannot lock the cached root, writing a new one", "err", err)
	}
	if cr != nil {
		if b.opt.NoCache {
			os.Remove(cr.index) // write it all afresh
		}
		n, err := cr.update(ctx, b.t, progress)
		if err != nil {
			cr.unlock()
			return "", fmt.Errorf("writing the root tree: %w", err)
		}
		b.unlockRoot = cr.unlock
		b.stage = cr.dir
		b.log.Info("root tree updated", "dir", cr.dir, "written", n, "entries", len(b.t.entries), "duration", time.Since(start).Round(time.Millisecond))
		return cr.dir, nil
	}
	work, err := b.scratch()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(work, "root")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	if err := materialize(ctx, b.t, dir, progress); err != nil {
		return "", fmt.Errorf("writing the root tree: %w", err)
	}
	b.log.Info("root tree written", "dir", dir, "duration", time.Since(start).Round(time.Millisecond))
	b.stage = dir
	return dir, nil
}

func (b *bake) bakeSquashfs(ctx context.Context) error {
	_, err := b.fileOutput(ArtifactSquashfs, []string{"squashfs", squashfsFormat, string(b.inputs)}, func(out string) error {
		dir, err := b.root(ctx)
		if err != nil {
			return err
		}
		return squashfs.Make(ctx, dir, out, squashfs.Options{Log: b.log})
	})
	if err != nil {
		return err
	}
	// The stage-1 initramfs depends only on busybox and the kernel modules.
	_, err = b.output(ArtifactStage1, []string{"stage1", stage1Format, b.kver, b.t.digestOf("bin/busybox", "usr/bin/busybox", "lib/modules/"+b.kver, "usr/lib/modules/"+b.kver)}, func(w io.Writer) error {
		if b.kver == "" {
			return fmt.Errorf("cannot tell the kernel's version: name the kernel vmlinuz-VERSION or keep one directory in /lib/modules")
		}
		dir, err := b.root(ctx)
		if err != nil {
			return err
		}
		files, err := squashfs.Stage1(dir, b.kver)
		if err != nil {
			return err
		}
		t, err := stage1Tree(files)
		if err != nil {
			return err
		}
		defer t.close()
		return writeInitrd(ctx, t, w, func(done, total int64) { b.progress("stage1", done, total) })
	})
	return err
}

func (b *bake) bakeDisk(ctx context.Context) error {
	_, err := b.fileOutput(ArtifactDisk, []string{"disk", diskFormat, string(b.inputs)}, func(out string) error {
		dir, err := b.root(ctx)
		if err != nil {
			return err
		}
		// The disk boots the base's own initrd (Debian's initramfs-tools
		// finds root=PARTUUID=...), if it has one for this kernel.
		initrd := ""
		if b.kver != "" {
			for _, p := range []string{"boot/initrd.img-" + b.kver, "boot/initramfs-" + b.kver + ".img"} {
				if e, err := b.t.follow(p); err == nil && e != nil {
					initrd = filepath.Join(dir, p)
					break
				}
			}
		}
		if initrd == "" {
			b.log.Warn("the disk has no initrd: the kernel must mount its root without one", "kernel", b.kver)
		}
		return disk.Write(ctx, out, disk.Spec{
			Kernel:  b.blobPath(b.kernel.Digest),
			Initrd:  initrd,
			Cmdline: b.r.Cmdline,
			Root:    dir,
			Seed:    []byte(b.inputs),
			Log:     b.log,
		})
	})
	return err
}

// stage1Tree turns the squashfs package's file list into a tree.
func stage1Tree(files []squashfs.File) (*tree, error) {
	t := newTree()
	for _, f := range files {
		p := strings.TrimPrefix(f.Path, "/")
		if err := checkImagePath(f.Path); err != nil {
			return nil, fmt.Errorf("stage-1 file: %w", err)
		}
		e := &entry{path: p, perm: f.Mode & 0o7777}
		switch {
		case f.Dir:
			e.typ = typeDir
		case f.Link != "":
			e.typ, e.perm, e.link = typeSymlink, 0o777, f.Link
		case f.Source != "":
			e.typ = typeFile
			src := f.Source
			e.open = func() (io.ReadCloser, error) { return os.Open(src) }
			var err error
			if e.digest, e.size, err = hashContent(context.Background(), e.open); err != nil {
				return nil, fmt.Errorf("stage-1 file %s: %w", f.Path, err)
			}
		default:
			e.typ = typeFile
			setContent(e, f.Content)
		}
		t.entries[p] = e
	}
	if err := t.complete(Owner{}); err != nil {
		return nil, err
	}
	return t, nil
}

// digestOf returns a digest of the entries at or under the given paths.
func (t *tree) digestOf(prefixes ...string) string {
	h := newHashWriter(io.Discard)
	for _, e := range t.sorted() {
		for _, p := range prefixes {
			if e.path == p || strings.HasPrefix(e.path, p+"/") {
				fmt.Fprintf(h, "%q %s %o %d %d %q %s\n", e.path, e.typ, e.perm, e.uid, e.gid, e.link, e.digest)
				break
			}
		}
	}
	return string(h.digest())
}

// output bakes one streamed artifact, or takes it from the cache.
func (b *bake) output(name string, key []string, write func(io.Writer) error) (images.Artifact, error) {
	k := b.cache.key(key...)
	if a, ok := b.cache.artifact(b.st, k); ok {
		return b.keep(name, a, true), nil
	}
	start := time.Now()
	bw, err := b.st.NewBlob()
	if err != nil {
		return images.Artifact{}, err
	}
	if err := write(bw); err != nil {
		bw.Abort()
		return images.Artifact{}, err
	}
	a, err := bw.Commit()
	if err != nil {
		return images.Artifact{}, err
	}
	b.cache.putArtifact(k, a)
	b.log.Info("output baked", "artifact", name, "digest", a.Digest, "size", a.Size, "duration", time.Since(start).Round(time.Millisecond))
	return b.keep(name, a, false), nil
}

// fileOutput bakes one artifact that a tool writes to a file, or takes it
// from the cache.
func (b *bake) fileOutput(name string, key []string, write func(out string) error) (images.Artifact, error) {
	k := b.cache.key(key...)
	if a, ok := b.cache.artifact(b.st, k); ok {
		return b.keep(name, a, true), nil
	}
	start := time.Now()
	work, err := b.scratch()
	if err != nil {
		return images.Artifact{}, err
	}
	out := filepath.Join(work, name+".out")
	if err := write(out); err != nil {
		return images.Artifact{}, err
	}
	defer os.Remove(out)
	f, err := os.Open(out)
	if err != nil {
		return images.Artifact{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return images.Artifact{}, err
	}
	a, err := b.st.PutBlob(&progressReader{r: f, total: fi.Size(), progress: func(done, total int64) { b.progress(name, done, total) }})
	if err != nil {
		return images.Artifact{}, err
	}
	b.cache.putArtifact(k, a)
	b.log.Info("output baked", "artifact", name, "digest", a.Digest, "size", a.Size, "duration", time.Since(start).Round(time.Millisecond))
	return b.keep(name, a, false), nil
}

func (b *bake) keep(name string, a images.Artifact, cached bool) images.Artifact {
	a.Name = name
	b.arts = append(b.arts, a)
	if cached {
		b.cached = append(b.cached, name)
		b.log.Info("output from the cache", "artifact", name, "digest", a.Digest)
	}
	return a
}
