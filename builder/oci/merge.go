package oci

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strings"
	"time"
)

// Whiteout names (OCI image spec, layer.md "Whiteouts").
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueWhiteout = ".wh..wh..opq"
)

// maxSymlinks bounds the symlinks followed to resolve one path, as the
// kernel's ELOOP limit does.
const maxSymlinks = 40

// maxPathLen bounds an entry's name, a link's target and a path in the
// tree: Linux's PATH_MAX, so no runtime could create a longer one. It
// also bounds the path components one lookup walks, symlinks included,
// which keeps every entry's cost small.
const maxPathLen = 4096

// limits bound the memory the tree of a crafted image may take: a small
// layer can decompress to millions of entries.
type limits struct {
	// entries bounds the tar entries of all layers plus the parent
	// directories they imply.
	entries int
	// metadata bounds the bytes kept for them: each entry's name, link
	// target and PAX records, and the full path of each node made.
	metadata int64
}

// defaultLimits are far above real images: a Debian root holds some 30k
// files, large images some hundreds of thousands.
var defaultLimits = limits{entries: 1 << 21, metadata: 512 << 20}

// implicitDirMode is the mode of a parent directory no layer creates.
const implicitDirMode = 0o755

// node is a path in the merged tree.
type node struct {
	name   string
	parent *node
	hdr    *tar.Header      // the entry that set it; nil for an implicit dir
	kids   map[string]*node // non-nil exactly for directories
	ino    *inode           // non-directories: the file this path shares
	plen   int              // length of the path from the root
}

func (n *node) isDir() bool { return n.kids != nil }

// pos is where an entry sits: its layer and its index in that layer's tar.
type pos struct{ layer, entry int }

// inode is a non-directory file: the entry that created it, which holds its
// content, and the paths that link to it in the final tree.
type inode struct {
	src   pos
	hdr   *tar.Header
	owner *node    // the path the creating entry named
	paths []string // final paths, filled by plan
	first string   // the path written with the content, filled by plan
}

// tree is the merged filesystem as layers are applied.
type tree struct {
	root *node
	left limits // what the tree may still take
}

func newTree(lim limits) *tree {
	return &tree{root: &node{kids: map[string]*node{}}, left: lim}
}

// charge counts entries and bytes of metadata against the tree's limits.
func (t *tree) charge(entries int, bytes int64) error {
	if t.left.entries -= entries; t.left.entries < 0 {
		return errors.New("too many entries: the layers hold more entries and implied directories than Flatten accepts")
	}
	if t.left.metadata -= bytes; t.left.metadata < 0 {
		return errors.New("too much metadata: the layers' names, link targets, PAX records and paths are larger than Flatten accepts")
	}
	return nil
}

// headerSize returns the bytes of h's strings, as charged to the tree.
func headerSize(h *tar.Header) int64 {
	n := len(h.Name) + len(h.Linkname)
	for k, v := range h.PAXRecords {
		n += len(k) + len(v)
	}
	return int64(n)
}

// flatten applies the layers to plan the final tree, then reads them again
// to write it to w. lim bounds the tree.
func flatten(ctx context.Context, layers []layer, lim limits, w io.Writer) error {
	t := newTree(lim)
	for i, l := range layers {
		if err := eachEntry(ctx, l, t, func(k int, h *tar.Header, _ io.Reader) error {
			return t.add(i, k, h)
		}); err != nil {
			return err
		}
	}
	dirs, inodes := t.plan()
	tw := tar.NewWriter(w)
	for _, h := range dirs {
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("writing %s: %w", h.Name, err)
		}
	}
	for i, l := range layers {
		err := eachEntry(ctx, l, nil, func(k int, _ *tar.Header, r io.Reader) error {
			ino := inodes[pos{i, k}]
			if ino == nil {
				return nil
			}
			delete(inodes, pos{i, k})
			return writeInode(tw, ino, r)
		})
		if err != nil {
			return err
		}
	}
	if len(inodes) != 0 {
		return errors.New("layers changed while being read")
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("writing tar: %w", err)
	}
	return nil
}

// eachEntry reads layer l and calls fn for each entry other than
// whiteouts, with its index among all the layer's tar entries. If plan is
// not nil, each entry is charged to it, and the layer's whiteouts and
// opaque directories are applied to it before any fn call. The layer's
// digests are checked at its end.
func eachEntry(ctx context.Context, l layer, plan *tree, fn func(k int, h *tar.Header, r io.Reader) error) error {
	s, err := openLayer(ctx, l)
	if err != nil {
		return err
	}
	defer s.close()
	type entry struct {
		k int
		h *tar.Header
	}
	var (
		staged          []entry
		deleted, opaque []string
	)
	tr := tar.NewReader(s)
	for k := 0; ; k++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading layer %s: %w", l.name, err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		if plan != nil {
			if err := plan.charge(1, headerSize(h)); err != nil {
				return fmt.Errorf("layer %s: %w", l.name, err)
			}
		}
		if len(h.Name) > maxPathLen || len(h.Linkname) > maxPathLen {
			return fmt.Errorf("layer %s: entry %.64q…: name or link target longer than %d bytes", l.name, h.Name, maxPathLen)
		}
		name, err := cleanName(h.Name)
		if err != nil {
			return fmt.Errorf("layer %s: %w", l.name, err)
		}
		dir, base := path.Split(name)
		switch {
		case base == opaqueWhiteout:
			opaque = append(opaque, dir)
			continue
		case strings.HasPrefix(base, whiteoutMeta):
			continue // aufs bookkeeping, such as .wh..wh.plnk
		case strings.HasPrefix(base, whiteoutPrefix):
			deleted = append(deleted, dir+strings.TrimPrefix(base, whiteoutPrefix))
			continue
		}
		h.Name = name
		if plan != nil {
			// Whiteouts hide lower layers only, wherever they sit in
			// this layer's tar, so apply them before its entries.
			staged = append(staged, entry{k, h})
			continue
		}
		if err := fn(k, h, tr); err != nil {
			return fmt.Errorf("layer %s: %s: %w", l.name, name, err)
		}
	}
	if plan != nil {
		if err := plan.whiteouts(deleted, opaque); err != nil {
			return fmt.Errorf("layer %s: %w", l.name, err)
		}
		for _, e := range staged {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(e.k, e.h, nil); err != nil {
				return fmt.Errorf("layer %s: %s: %w", l.name, e.h.Name, err)
			}
		}
	}
	return s.finish()
}

// cleanName turns a tar entry name into a slash-separated path relative to
// the root ("" for the root itself). Names that climb out of the root are
// an error.
func cleanName(name string) (string, error) {
	p := path.Clean(strings.TrimLeft(name, "/"))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("entry %q points outside the root", name)
	}
	if p == "." {
		return "", nil
	}
	return p, nil
}

// whiteouts deletes the paths and empties the opaque directories, as far as
// they exist.
func (t *tree) whiteouts(deleted, opaque []string) error {
	for _, d := range opaque {
		n, err := t.resolve(t.root, d, false, new(walk))
		if err != nil {
			return fmt.Errorf("opaque directory %s: %w", d, err)
		}
		if n != nil {
			n.kids = map[string]*node{}
		}
	}
	for _, p := range deleted {
		dir, base := path.Split(p)
		n, err := t.resolve(t.root, dir, false, new(walk))
		if err != nil {
			return fmt.Errorf("whiteout %s: %w", p, err)
		}
		if n != nil {
			delete(n.kids, base)
		}
	}
	return nil
}

// add applies one entry, at index k of layer i, to the tree.
func (t *tree) add(i, k int, h *tar.Header) error {
	if h.Name == "" {
		if h.Typeflag != tar.TypeDir {
			return fmt.Errorf("root entry of type %q, not a directory", h.Typeflag)
		}
		t.root.hdr = h
		return nil
	}
	dir, base := path.Split(h.Name)
	parent, err := t.resolve(t.root, dir, true, new(walk))
	if err != nil {
		return err
	}
	old := parent.kids[base]
	n := &node{name: base, parent: parent, hdr: h, plen: parent.plen + 1 + len(base)}
	if n.plen > maxPathLen {
		return errPathTooLong
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if old != nil && old.isDir() {
			old.hdr = h // a directory over a directory keeps its children
			return nil
		}
		n.kids = map[string]*node{}
	case tar.TypeLink:
		target, err := t.lookup(h.Linkname)
		if err != nil {
			return fmt.Errorf("hard link to %s: %w", h.Linkname, err)
		}
		if target == nil {
			return fmt.Errorf("hard link to missing %s", h.Linkname)
		}
		if target.isDir() {
			return fmt.Errorf("hard link to directory %s", h.Linkname)
		}
		if target == old {
			return nil // a link to itself changes nothing
		}
		n.ino = target.ino
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		n.ino = &inode{src: pos{i, k}, hdr: h, owner: n}
	default:
		return fmt.Errorf("unsupported entry type %q", h.Typeflag)
	}
	if err := t.charge(0, int64(n.plen)); err != nil {
		return err
	}
	parent.kids[base] = n
	return nil
}

// lookup finds the node a hard link names, following symlinks in its
// parent directories but not in its last component. It returns nil if
// there is no such node.
func (t *tree) lookup(name string) (*node, error) {
	p, err := cleanName(name)
	if err != nil {
		return nil, err
	}
	if p == "" {
		return t.root, nil
	}
	dir, base := path.Split(p)
	parent, err := t.resolve(t.root, dir, false, new(walk))
	if parent == nil || err != nil {
		return nil, err
	}
	return parent.kids[base], nil
}

// walk counts what one lookup has walked through.
type walk struct {
	links int // symlinks followed
	steps int // path components walked
}

// errPathTooLong is returned for an entry that would land at a path longer
// than maxPathLen.
var errPathTooLong = fmt.Errorf("lands at a path longer than %d bytes", maxPathLen)

// resolve walks the directory path p from cur the way a runtime unpacking
// a layer does: ".." stops at the root, and symlinks are followed inside
// the root, absolute ones from the root. With create, missing directories
// are made (as implicit ones); without, a missing one gives nil. w counts
// the symlinks followed and components walked, both bounded.
func (t *tree) resolve(cur *node, p string, create bool, w *walk) (*node, error) {
	for c := range strings.SplitSeq(p, "/") {
		if w.steps++; w.steps > maxPathLen {
			return nil, fmt.Errorf("resolving takes more than %d path components", maxPathLen)
		}
		switch c {
		case "", ".":
			continue
		case "..":
			if cur.parent != nil {
				cur = cur.parent
			}
			continue
		}
		kid := cur.kids[c]
		switch {
		case kid == nil && !create:
			return nil, nil
		case kid == nil:
			kid = &node{name: c, parent: cur, kids: map[string]*node{}, plen: cur.plen + 1 + len(c)}
			if kid.plen > maxPathLen {
				return nil, errPathTooLong
			}
			if err := t.charge(1, int64(kid.plen)); err != nil {
				return nil, err
			}
			cur.kids[c] = kid
		case kid.isDir():
		case kid.ino.hdr.Typeflag == tar.TypeSymlink:
			if w.links++; w.links > maxSymlinks {
				return nil, fmt.Errorf("%s: too many levels of symbolic links", kid.path())
			}
			from := cur
			if strings.HasPrefix(kid.ino.hdr.Linkname, "/") {
				from = t.root
			}
			next, err := t.resolve(from, kid.ino.hdr.Linkname, create, w)
			if next == nil || err != nil {
				return nil, err
			}
			kid = next
		default:
			return nil, fmt.Errorf("%s: not a directory", kid.path())
		}
		cur = kid
	}
	return cur, nil
}

// path returns the node's path relative to the root.
func (n *node) path() string {
	if n.parent == nil {
		return ""
	}
	if n.parent.parent == nil {
		return n.name
	}
	return n.parent.path() + "/" + n.name
}

// plan walks the final tree. It returns the directory headers, parents
// first and siblings sorted, and the inodes by the position of the entry
// holding their content, each with its final paths.
func (t *tree) plan() ([]*tar.Header, map[pos]*inode) {
	var dirs []*tar.Header
	inodes := map[pos]*inode{}
	if t.root.hdr != nil {
		dirs = append(dirs, outHeader(t.root.hdr, "./"))
	}
	var walk func(n *node, p string)
	walk = func(n *node, p string) {
		for _, name := range slices.Sorted(maps.Keys(n.kids)) {
			kid, kp := n.kids[name], p+name
			if kid.isDir() {
				h := kid.hdr
				if h == nil {
					h = &tar.Header{Typeflag: tar.TypeDir, Mode: implicitDirMode, ModTime: time.Unix(0, 0)}
				}
				dirs = append(dirs, outHeader(h, "./"+kp+"/"))
				walk(kid, kp+"/")
				continue
			}
			ino := kid.ino
			ino.paths = append(ino.paths, kp)
			if kid == ino.owner {
				ino.first = kp
			}
			inodes[ino.src] = ino
		}
	}
	walk(t.root, "")
	for _, ino := range inodes {
		if ino.first == "" {
			ino.first = ino.paths[0] // paths are in walk order, sorted
		}
	}
	return dirs, inodes
}

// writeInode writes the inode's first path with its content from r, then
// its other paths as hard links to it.
func writeInode(tw *tar.Writer, ino *inode, r io.Reader) error {
	h := outHeader(ino.hdr, "./"+ino.first)
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("writing %s: %w", h.Name, err)
	}
	if h.Typeflag == tar.TypeReg {
		if _, err := io.CopyN(tw, r, h.Size); err != nil {
			return fmt.Errorf("copying %s: %w", h.Name, err)
		}
	}
	for _, p := range ino.paths {
		if p == ino.first {
			continue
		}
		l := outHeader(ino.hdr, "./"+p)
		l.Typeflag, l.Linkname, l.Size, l.Devmajor, l.Devminor, l.PAXRecords = tar.TypeLink, h.Name, 0, 0, 0, nil
		if err := tw.WriteHeader(l); err != nil {
			return fmt.Errorf("writing %s: %w", l.Name, err)
		}
	}
	return nil
}

// outHeader returns the output header for src at name: type, mode bits,
// owner, mtime, link target, device numbers and extended attributes.
func outHeader(src *tar.Header, name string) *tar.Header {
	h := &tar.Header{
		Typeflag: src.Typeflag,
		Name:     name,
		Mode:     src.Mode & 0o7777,
		Uid:      src.Uid,
		Gid:      src.Gid,
		Uname:    src.Uname,
		Gname:    src.Gname,
		ModTime:  src.ModTime,
	}
	switch src.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse:
		h.Typeflag, h.Size = tar.TypeReg, src.Size
	case tar.TypeSymlink:
		h.Linkname = src.Linkname
	case tar.TypeChar, tar.TypeBlock:
		h.Devmajor, h.Devminor = src.Devmajor, src.Devminor
	}
	for k, v := range src.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords[k] = v
		}
	}
	return h
}
