package oci

import (
	"archive/tar"
	"bytes"
	"io"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// mtime is the mtime of every entry the tests write.
var mtime = time.Unix(1700000000, 0)

// entry is one tar entry, as the tests write and compare them.
type entry struct {
	Name         string
	Type         byte
	Mode         int64
	UID, GID     int
	Link         string
	Body         string
	Major, Minor int64
	Mtime        int64
	Xattrs       map[string]string
}

// Shorthands for entry literals.
func dir(name string, mode int64) entry { return entry{Name: name, Type: tar.TypeDir, Mode: mode} }
func file(name string, mode int64, body string) entry {
	return entry{Name: name, Type: tar.TypeReg, Mode: mode, Body: body}
}
func symlink(name, target string) entry {
	return entry{Name: name, Type: tar.TypeSymlink, Mode: 0o777, Link: target}
}
func hardlink(name, target string, mode int64) entry {
	return entry{Name: name, Type: tar.TypeLink, Mode: mode, Link: target}
}
func owned(e entry, uid, gid int) entry { e.UID, e.GID = uid, gid; return e }

// tarOf writes the entries as a tar archive, each with mtime.
func tarOf(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Uid: e.UID, Gid: e.GID,
			Linkname: e.Link, Size: int64(len(e.Body)), Devmajor: e.Major, Devminor: e.Minor,
			ModTime: mtime, Format: tar.FormatPAX,
		}
		for k, v := range e.Xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if e.Type != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.Body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// readTar lists the entries of a tar stream.
func readTar(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading output tar: %v", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		e := entry{
			Name: h.Name, Type: h.Typeflag, Mode: h.Mode, UID: h.Uid, GID: h.Gid,
			Link: h.Linkname, Body: string(body), Major: h.Devmajor, Minor: h.Devminor,
			Mtime: h.ModTime.Unix(),
		}
		for k, v := range h.PAXRecords {
			if k, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if e.Xattrs == nil {
					e.Xattrs = map[string]string{}
				}
				e.Xattrs[k] = v
			}
		}
		out = append(out, e)
	}
}

// layerOf makes a layer of the entries (gzip-compressed unless opts say).
func layerOf(t *testing.T, entries []entry, opts ...tarball.LayerOption) v1.Layer {
	t.Helper()
	b := tarOf(t, entries)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// imageOf makes a linux image for arch of the layers.
func imageOf(t *testing.T, arch string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		OS: "linux", Architecture: arch, RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// writeLayout writes an OCI layout holding the images, each named by the
// ref.name annotation in names (if not "").
func writeLayout(t *testing.T, imgs []v1.Image, names []string) string {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for i, img := range imgs {
		var opts []layout.Option
		if names[i] != "" {
			opts = append(opts, layout.WithAnnotations(map[string]string{annotationRefName: names[i]}))
		}
		if err := p.AppendImage(img, opts...); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// writeArchive writes a docker save archive of the images by tag.
func writeArchive(t *testing.T, imgs map[string]v1.Image) string {
	t.Helper()
	file := t.TempDir() + "/image.tar"
	refs := map[name.Reference]v1.Image{}
	for tag, img := range maps.All(imgs) {
		ref, err := name.ParseReference(tag)
		if err != nil {
			t.Fatal(err)
		}
		refs[ref] = img
	}
	if err := tarball.MultiRefWriteToFile(file, refs); err != nil {
		t.Fatal(err)
	}
	return file
}
