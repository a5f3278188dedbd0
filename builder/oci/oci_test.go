package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// capability is an xattr value the base layer sets on bin/busybox.
const capability = "\x01\x00\x00\x02\x00\x20\x00\x00"

// baseLayer is the first layer of the test image: a small root with a
// hard link, device nodes, a FIFO, a lib -> usr/lib symlink and files the
// second layer replaces or deletes.
func baseLayer() []entry {
	busybox := file("./bin/busybox", 0o4755, "BUSYBOX")
	busybox.Xattrs = map[string]string{"security.capability": capability}
	return []entry{
		dir("./", 0o755),
		dir("./etc/", 0o755),
		file("./etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\n"),
		owned(file("./etc/old", 0o600, "old"), 1000, 1000),
		dir("./bin/", 0o755),
		busybox,
		symlink("./bin/sh", "busybox"),
		hardlink("./bin/ash", "./bin/busybox", 0o4755),
		dir("./dev/", 0o755),
		{Name: "./dev/null", Type: tar.TypeChar, Mode: 0o666, Major: 1, Minor: 3},
		owned(entry{Name: "./dev/sda", Type: tar.TypeBlock, Mode: 0o660, Major: 8}, 0, 6),
		dir("./run/", 0o755),
		{Name: "./run/initctl", Type: tar.TypeFifo, Mode: 0o600},
		dir("./opt/", 0o755),
		file("./opt/a", 0o644, "a"),
		dir("./opt/sub/", 0o755),
		file("./opt/sub/b", 0o644, "b"),
		dir("./usr/", 0o755),
		dir("./usr/lib/", 0o755),
		file("./usr/lib/libc.so", 0o755, "LIBC"),
		symlink("./lib", "usr/lib"),
		owned(dir("./data/", 0o750), 1000, 1000),
		owned(file("./data/v1", 0o644, "one"), 1000, 1000),
		hardlink("./data/v1link", "data/v1", 0o644),
		dir("./var/", 0o755),
		dir("./var/gone/", 0o755),
		file("./var/gone/x", 0o644, "x"),
	}
}

// upperLayer deletes etc/old and var/gone, makes opt opaque, replaces
// data/v1 (which data/v1link still links to) and etc/passwd, adds a file
// through the lib symlink, links to a lower-layer file and adds a file in
// a directory no layer creates.
func upperLayer() []entry {
	return []entry{
		file("etc/.wh.old", 0o644, ""),
		dir("opt/", 0o700),
		file("opt/.wh..wh..opq", 0o644, ""),
		file("opt/c", 0o644, "c"),
		owned(file("data/v1", 0o644, "two"), 1000, 1000),
		file("lib/extra.so", 0o755, "EXTRA"),
		file("var/.wh.gone", 0o644, ""),
		file("etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"),
		hardlink("bin/ash2", "/bin/busybox", 0o4755),
		file("newdir/f", 0o644, "f"),
	}
}

// wantTree is what Flatten makes of baseLayer and upperLayer.
func wantTree() []entry {
	at := func(e entry) entry { e.Mtime = mtime.Unix(); return e }
	busybox := at(file("./bin/busybox", 0o4755, "BUSYBOX"))
	busybox.Xattrs = map[string]string{"security.capability": capability}
	link := func(name string) entry {
		return at(hardlink(name, "./bin/busybox", 0o4755))
	}
	return []entry{
		// Directories first, parents before children.
		at(dir("./", 0o755)),
		at(dir("./bin/", 0o755)),
		at(owned(dir("./data/", 0o750), 1000, 1000)),
		at(dir("./dev/", 0o755)),
		at(dir("./etc/", 0o755)),
		dir("./newdir/", 0o755), // implicit: mtime 0
		at(dir("./opt/", 0o700)),
		at(dir("./run/", 0o755)),
		at(dir("./usr/", 0o755)),
		at(dir("./usr/lib/", 0o755)),
		at(dir("./var/", 0o755)),
		// Then the base layer's files, in order, with their links.
		busybox,
		link("./bin/ash"),
		link("./bin/ash2"),
		at(symlink("./bin/sh", "busybox")),
		at(entry{Name: "./dev/null", Type: tar.TypeChar, Mode: 0o666, Major: 1, Minor: 3}),
		at(owned(entry{Name: "./dev/sda", Type: tar.TypeBlock, Mode: 0o660, Major: 8}, 0, 6)),
		at(entry{Name: "./run/initctl", Type: tar.TypeFifo, Mode: 0o600}),
		at(file("./usr/lib/libc.so", 0o755, "LIBC")),
		at(symlink("./lib", "usr/lib")),
		// data/v1 was replaced; its link keeps the old content.
		at(owned(file("./data/v1link", 0o644, "one"), 1000, 1000)),
		// Then the upper layer's.
		at(file("./opt/c", 0o644, "c")),
		at(owned(file("./data/v1", 0o644, "two"), 1000, 1000)),
		at(file("./usr/lib/extra.so", 0o755, "EXTRA")),
		at(file("./etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")),
		at(file("./newdir/f", 0o644, "f")),
	}
}

// flattenOK flattens path and returns the output entries and the info.
func flattenOK(t *testing.T, path string, opt Options) ([]byte, Info) {
	t.Helper()
	var out bytes.Buffer
	info, err := Flatten(context.Background(), path, opt, &out)
	if err != nil {
		t.Fatalf("Flatten(%s, %+v) = %v", path, opt, err)
	}
	return out.Bytes(), info
}

func TestFlatten(t *testing.T) {
	gz := imageOf(t, "amd64", layerOf(t, baseLayer()), layerOf(t, upperLayer()))
	zst := imageOf(t, "amd64",
		layerOf(t, baseLayer(), tarball.WithCompression(compression.ZStd)),
		layerOf(t, upperLayer(), tarball.WithCompression(compression.ZStd)))
	digest := func(img v1.Image) string {
		h, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return h.String()
	}
	configDigest := func(img v1.Image) string {
		h, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		return h.String()
	}
	for _, tc := range []struct {
		name, path, digest string
	}{
		{"layout gzip", writeLayout(t, []v1.Image{gz}, []string{"test:1"}), digest(gz)},
		{"layout zstd", writeLayout(t, []v1.Image{zst}, []string{""}), digest(zst)},
		{"docker archive gzip", writeArchive(t, map[string]v1.Image{"example.com/test:1": gz}), configDigest(gz)},
		{"docker archive legacy", writeLegacyArchive(t, "test:1", [][]entry{baseLayer(), upperLayer()}), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, info := flattenOK(t, tc.path, Options{})
			if diff := cmp.Diff(wantTree(), readTar(t, out)); diff != "" {
				t.Errorf("Flatten(%s) tree mismatch (-want +got):\n%s", tc.path, diff)
			}
			if info.Layers != 2 {
				t.Errorf("Flatten(%s).Layers = %d, want 2", tc.path, info.Layers)
			}
			if tc.digest != "" && info.Digest != tc.digest {
				t.Errorf("Flatten(%s).Digest = %s, want %s", tc.path, info.Digest, tc.digest)
			}
			if !strings.HasPrefix(info.Digest, "sha256:") {
				t.Errorf("Flatten(%s).Digest = %q, want a sha256 digest", tc.path, info.Digest)
			}
		})
	}
}

// TestFlattenExtracts unpacks the output with GNU tar, as root would, and
// checks that links share their file and device nodes exist.
func TestFlattenExtracts(t *testing.T) {
	testenv.NeedTool(t, "tar")
	img := imageOf(t, "amd64", layerOf(t, baseLayer()), layerOf(t, upperLayer()))
	out, _ := flattenOK(t, writeLayout(t, []v1.Image{img}, []string{""}), Options{})
	root := t.TempDir()
	args := []string{"-x", "--numeric-owner", "-p", "-C", root}
	if os.Geteuid() != 0 {
		args = append(args, "--exclude=./dev/*") // mknod needs root
	}
	cmd := exec.Command("tar", args...)
	cmd.Stdin = bytes.NewReader(out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar -x: %v\n%s", err, b)
	}
	same := func(a, b string) {
		fa, errA := os.Stat(filepath.Join(root, a))
		fb, errB := os.Stat(filepath.Join(root, b))
		if errA != nil || errB != nil || !os.SameFile(fa, fb) {
			t.Errorf("%s and %s are not one file (%v, %v)", a, b, errA, errB)
		}
	}
	same("bin/busybox", "bin/ash")
	same("bin/busybox", "bin/ash2")
	for p, want := range map[string]string{
		"lib/extra.so": "EXTRA", "data/v1": "two", "data/v1link": "one", "bin/sh": "BUSYBOX",
	} {
		if b, err := os.ReadFile(filepath.Join(root, p)); err != nil || string(b) != want {
			t.Errorf("extracted %s = %q, %v; want %q", p, b, err, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(root, "bin/busybox")); err != nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("extracted bin/busybox mode = %v, %v; want setuid", fi.Mode(), err)
	}
	if os.Geteuid() == 0 {
		if fi, err := os.Lstat(filepath.Join(root, "dev/null")); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
			t.Errorf("extracted dev/null = %v, %v; want a character device", fi, err)
		}
	}
	for _, p := range []string{"etc/old", "opt/a", "opt/sub", "var/gone"} {
		if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Errorf("extracted %s exists (%v); a whiteout deleted it", p, err)
		}
	}
}

// writeLegacyArchive writes a docker save archive the way docker before
// 25 did: uncompressed <id>/layer.tar files and a <config digest>.json.
func writeLegacyArchive(t *testing.T, tag string, layers [][]entry) string {
	t.Helper()
	cfg := v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"}}
	type member struct {
		name string
		body []byte
	}
	var members []member
	var layerNames []string
	for i, l := range layers {
		b := tarOf(t, l)
		sum := sha256.Sum256(b)
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])})
		id := strings.Repeat(string(rune('a'+i)), 64) // legacy IDs are not content digests
		layerNames = append(layerNames, id+"/layer.tar")
		members = append(members, member{id + "/layer.tar", b})
	}
	cb, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cb)
	cfgName := hex.EncodeToString(sum[:]) + ".json"
	mb, err := json.Marshal(tarball.Manifest{{Config: cfgName, RepoTags: []string{tag}, Layers: layerNames}})
	if err != nil {
		t.Fatal(err)
	}
	members = append(members, member{cfgName, cb}, member{"manifest.json", mb})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		if err := tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "legacy.tar")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}
