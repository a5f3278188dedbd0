package oci

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// markedImage is an image for arch whose one file, ./mark, holds mark.
func markedImage(t *testing.T, arch, mark string) v1.Image {
	t.Helper()
	return imageOf(t, arch, layerOf(t, []entry{file("./mark", 0o644, mark)}))
}

// markOf flattens path with opt and returns the content of ./mark and the
// digest, or the error.
func markOf(t *testing.T, path string, opt Options) (string, string, error) {
	t.Helper()
	var out bytes.Buffer
	info, err := Flatten(context.Background(), path, opt, &out)
	if err != nil {
		return "", "", err
	}
	for _, e := range readTar(t, out.Bytes()) {
		if e.Name == "./mark" {
			return e.Body, info.Digest, nil
		}
	}
	t.Fatalf("Flatten(%s, %+v): no ./mark in output", path, opt)
	return "", "", nil
}

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// writeMultiPlatform writes a layout whose one entry, named "multi:1", is
// an index of images for amd64, arm64/v8 and an attestation.
func writeMultiPlatform(t *testing.T, amd, arm v1.Image) string {
	t.Helper()
	attest := markedImage(t, "unknown", "attestation")
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: attest, Descriptor: v1.Descriptor{
			Platform:    &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{annotationRefType: attestationReference},
		}},
	)
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{annotationRefName: "multi:1"})); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestSelect(t *testing.T) {
	amd, arm := markedImage(t, "amd64", "amd64"), markedImage(t, "arm64", "arm64")
	a, b := markedImage(t, "amd64", "a"), markedImage(t, "amd64", "b")
	multi := writeMultiPlatform(t, amd, arm)
	// Two images without platforms in the index: configs decide.
	bare := writeLayout(t, []v1.Image{arm, amd}, []string{"", ""})
	named := writeLayout(t, []v1.Image{a, b}, []string{"a:1", "b:1"})
	lone := writeLayout(t, []v1.Image{arm}, []string{""})
	archive := writeArchive(t, map[string]v1.Image{"example.com/a:1": a, "example.com/b:1": b, "example.com/arm:1": arm})
	for _, tc := range []struct {
		name   string
		path   string
		opt    Options
		mark   string
		digest string
		err    string // substring of the error, if any
	}{
		{name: "index default amd64", path: multi, mark: "amd64", digest: digestOf(t, amd)},
		{name: "index arm64", path: multi, opt: Options{Platform: "linux/arm64"}, mark: "arm64", digest: digestOf(t, arm)},
		{name: "index arm64 variant", path: multi, opt: Options{Platform: "linux/arm64/v8"}, mark: "arm64"},
		{name: "index ref and platform", path: multi, opt: Options{Ref: "multi:1", Platform: "linux/amd64"}, mark: "amd64"},
		{name: "index missing platform", path: multi, opt: Options{Platform: "linux/s390x"}, err: "no image for platform linux/s390x (have linux/arm64/v8, linux/amd64)"},
		{name: "index wrong variant", path: multi, opt: Options{Platform: "linux/arm64/v7"}, err: "no image for platform linux/arm64/v7"},
		{name: "configs decide", path: bare, mark: "amd64"},
		{name: "configs decide arm64", path: bare, opt: Options{Platform: "linux/arm64"}, mark: "arm64"},
		{name: "lone image any platform", path: lone, mark: "arm64"},
		{name: "lone image wrong platform", path: lone, opt: Options{Platform: "linux/amd64"}, err: "is for linux/arm64, not linux/amd64"},
		{name: "same platform needs ref", path: named, err: "2 images for platform linux/amd64; pick one by ref (have a:1, b:1)"},
		{name: "ref by tag", path: named, opt: Options{Ref: "b:1"}, mark: "b", digest: digestOf(t, b)},
		{name: "ref normalised", path: named, opt: Options{Ref: "index.docker.io/library/a:1"}, mark: "a"},
		{name: "ref by digest", path: named, opt: Options{Ref: digestOf(t, b)}, mark: "b"},
		{name: "ref missing", path: named, opt: Options{Ref: "c:1"}, err: `no image named "c:1" (have a:1, b:1)`},
		{name: "archive ref", path: archive, opt: Options{Ref: "example.com/b:1"}, mark: "b"},
		{name: "archive platform", path: archive, opt: Options{Platform: "linux/arm64"}, mark: "arm64"},
		{name: "archive needs ref", path: archive, err: "2 images for platform linux/amd64"},
		{name: "archive ref missing", path: archive, opt: Options{Ref: "example.com/c:1"}, err: `no image named "example.com/c:1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mark, digest, err := markOf(t, tc.path, tc.opt)
			if tc.err != "" {
				if err == nil || !errors.Is(err, ErrNoImage) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Flatten(%+v) = %v, want ErrNoImage containing %q", tc.opt, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Flatten(%+v) = %v", tc.opt, err)
			}
			if mark != tc.mark {
				t.Errorf("Flatten(%+v) flattened image %q, want %q", tc.opt, mark, tc.mark)
			}
			if tc.digest != "" && digest != tc.digest {
				t.Errorf("Flatten(%+v).Digest = %s, want %s", tc.opt, digest, tc.digest)
			}
		})
	}
}

func TestParsePlatform(t *testing.T) {
	for _, s := range []string{"linux", "/amd64", "linux/amd64/v1/x", "linux/amd64:10.0"} {
		if _, _, err := parsePlatform(s); err == nil {
			t.Errorf("parsePlatform(%q) = nil error, want one", s)
		}
	}
	p, explicit, err := parsePlatform("")
	if err != nil || explicit || p.String() != "linux/amd64" {
		t.Errorf(`parsePlatform("") = %v, %v, %v; want linux/amd64, false, nil`, p, explicit, err)
	}
}
