package builder

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/kiln-dev/kiln/images"
)

// bakeFormat names how the builder turns a tree into artifacts. It is part
// of the inputs digest: change it whenever the same inputs would bake
// different bytes (cpio layout, compression settings).
const bakeFormat = "kernel=copy initrd=newc(sorted,mtime=0,ino=seq)+zstd(level=default,window=8MiB,crc,2 goroutines)"

// inputsDigest returns the sha256 of a canonical description of everything
// the image is baked from: the recipe's normalized content, the kernel's
// digest and every tree entry, sorted by path. It holds no host paths, host
// owners, mtimes or dates, so the same inputs give the same digest
// wherever and whenever they are built.
//
// The description is line-based; every string is Go-quoted, so no two
// different inputs share a description:
//
//	kiln-inputs 2
//	format "..."
//	name "tiny"
//	arch "amd64"
//	outputs "initramfs squashfs"
//	cmdline "console=ttyS0"
//	owner 0 0
//	kernel sha256:...
//	file "/init" 0755 0 0 sha256:...
//	entry "bin" dir 0755 0 0
//	entry "bin/busybox" file 0755 0 0 2193552 sha256:...
//	entry "bin/sh" symlink 0777 0 0 "busybox"
//	end
func inputsDigest(r *Recipe, kernel images.Digest, t *tree) (images.Digest, error) {
	h := sha256.New()
	if err := writeInputs(h, r, kernel, t); err != nil {
		return "", err
	}
	return digestOf(h.Sum(nil)), nil
}

func writeInputs(out io.Writer, r *Recipe, kernel images.Digest, t *tree) error {
	w := bufio.NewWriter(out)
	fmt.Fprintf(w, "kiln-inputs 2\nformat %q\nname %q\narch %q\noutputs %q\ncmdline %q\nowner %d %d\nkernel %s\n",
		bakeFormat, r.Name, r.arch(), strings.Join(r.outputs(), " "), r.Cmdline, r.Owner.UID, r.Owner.GID, kernel)
	for i, f := range r.Files {
		e := t.entries[strings.TrimPrefix(f.Path, "/")]
		if e == nil || e.typ != typeFile {
			return fmt.Errorf("files[%d] %s is not in the tree", i, f.Path)
		}
		fmt.Fprintf(w, "file %q %04o %d %d %s\n", f.Path, e.perm, e.uid, e.gid, e.digest)
	}
	for _, e := range t.sorted() {
		fmt.Fprintf(w, "entry %q %s %04o %d %d", e.path, e.typ, e.perm, e.uid, e.gid)
		switch e.typ {
		case typeFile:
			fmt.Fprintf(w, " %d %s", e.size, e.digest)
		case typeSymlink:
			fmt.Fprintf(w, " %q", e.link)
		}
		w.WriteString("\n")
	}
	w.WriteString("end\n")
	return w.Flush()
}

// hashWriter writes to w and hashes what was written.
type hashWriter struct {
	w io.Writer
	h hash.Hash
}

func newHashWriter(w io.Writer) *hashWriter { return &hashWriter{w: w, h: sha256.New()} }

func (hw *hashWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	return n, err
}

func (hw *hashWriter) digest() images.Digest { return digestOf(hw.h.Sum(nil)) }
