package images

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// publishBlobs publishes an image named name whose artifacts hold the given
// contents, and returns its ID and manifest.
func publishBlobs(t *testing.T, s *Store, name string, contents ...string) (Digest, Manifest) {
	t.Helper()
	m := Manifest{SchemaVersion: 1, Name: name, Inputs: DigestOf([]byte(name))}
	for i, c := range contents {
		a, err := s.PutBlob(strings.NewReader(c))
		if err != nil {
			t.Fatal(err)
		}
		a.Name = string(rune('a' + i))
		m.Artifacts = append(m.Artifacts, a)
	}
	id, err := s.Publish(m)
	if err != nil {
		t.Fatal(err)
	}
	return id, m
}

// age sets the mtime of every file in the store to two hours ago.
func age(t *testing.T, s *Store) {
	t.Helper()
	old := time.Now().Add(-2 * time.Hour)
	err := filepath.WalkDir(s.Root(), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func blobs(t *testing.T, s *Store) []Digest {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Root(), "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var out []Digest
	for _, e := range entries {
		out = append(out, Digest("sha256:"+e.Name()))
	}
	return out
}

func imageIDs(t *testing.T, s *Store) []Digest {
	t.Helper()
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []Digest
	for _, img := range list {
		out = append(out, img.ID)
	}
	slices.Sort(out)
	return out
}

func sorted(ds ...Digest) []Digest {
	out := slices.Clone(ds)
	slices.Sort(out)
	return out
}

func TestRemove(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir)
	id, m := publishBlobs(t, s, "one", "kernel", "initrd")
	other, _ := Open(dir) // another process that has read the image
	if _, err := other.Get(id); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(id); err != nil {
		t.Fatalf("Remove(%s) = %v", id, err)
	}
	for _, st := range []*Store{s, other} {
		if _, err := st.Get(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get after Remove = %v, want ErrNotFound", err)
		}
		if _, err := st.Stat(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat after Remove = %v, want ErrNotFound", err)
		}
	}
	if ids := imageIDs(t, s); len(ids) != 0 {
		t.Errorf("List after Remove = %v", ids)
	}
	for _, a := range m.Artifacts {
		if !s.HasBlob(a.Digest, a.Size) {
			t.Errorf("Remove took blob %s; blobs are GC's", a.Digest)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(entries) != 0 {
		t.Errorf("Remove left %d files in tmp/", len(entries))
	}
	if err := s.Remove(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove = %v, want ErrNotFound", err)
	}
	// Publishing the same manifest again brings the same image back.
	if id2, err := s.Publish(m); err != nil || id2 != id {
		t.Errorf("Publish after Remove = %s, %v; want %s", id2, err, id)
	}
}

func TestPin(t *testing.T) {
	s, _ := Open(t.TempDir())
	id, _ := publishBlobs(t, s, "one", "kernel")
	if err := s.Pin(DigestOf([]byte("absent"))); !errors.Is(err, ErrNotFound) {
		t.Errorf("Pin(absent) = %v, want ErrNotFound", err)
	}
	for range 2 { // pinning twice is fine
		if err := s.Pin(id); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := s.Pinned(id); err != nil || !p {
		t.Errorf("Pinned = %v, %v; want true", p, err)
	}
	if img, err := s.Stat(id); err != nil || !img.Pinned {
		t.Errorf("Stat = %+v, %v; want Pinned", img, err)
	}
	if err := s.Remove(id); !errors.Is(err, ErrPinned) {
		t.Errorf("Remove(pinned) = %v, want ErrPinned", err)
	}
	for range 2 { // unpinning twice is fine
		if err := s.Unpin(id); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := s.Pinned(id); err != nil || p {
		t.Errorf("Pinned after Unpin = %v, %v; want false", p, err)
	}
	if err := s.Remove(id); err != nil {
		t.Errorf("Remove after Unpin = %v", err)
	}
}

func TestGC(t *testing.T) {
	type fixture struct {
		s                      *Store
		used, unused, pinned   Digest
		shared, usedOnly       Digest // blobs of used; shared is also unused's
		unusedOnly, pinnedOnly Digest
		stray                  Digest // a blob no image references
	}
	setup := func(t *testing.T) fixture {
		s, _ := Open(t.TempDir())
		var f fixture
		f.s = s
		var m Manifest
		f.used, m = publishBlobs(t, s, "used", "shared kernel", "used initrd")
		f.shared, f.usedOnly = m.Artifacts[0].Digest, m.Artifacts[1].Digest
		f.unused, m = publishBlobs(t, s, "unused", "shared kernel", "unused initrd")
		f.unusedOnly = m.Artifacts[1].Digest
		f.pinned, m = publishBlobs(t, s, "pinned", "pinned kernel")
		f.pinnedOnly = m.Artifacts[0].Digest
		if err := s.Pin(f.pinned); err != nil {
			t.Fatal(err)
		}
		stray, err := s.PutBlob(strings.NewReader("stray"))
		if err != nil {
			t.Fatal(err)
		}
		f.stray = stray.Digest
		age(t, s)
		return f
	}
	allBlobs := func(f fixture) []Digest {
		return sorted(f.shared, f.usedOnly, f.unusedOnly, f.pinnedOnly, f.stray)
	}

	for _, tc := range []struct {
		name       string
		opt        func(f fixture) GCOptions
		before     func(t *testing.T, f fixture) // after aging
		wantImages func(f fixture) []Digest      // removed
		wantBlobs  func(f fixture) []Digest      // removed
		wantYoung  int
	}{{
		name: "unreferenced removed, referenced, pinned and shared kept",
		opt: func(f fixture) GCOptions {
			return GCOptions{CollectImages: true, InUse: map[Digest]bool{f.used: true}, Grace: time.Hour}
		},
		wantImages: func(f fixture) []Digest { return []Digest{f.unused} },
		wantBlobs:  func(f fixture) []Digest { return sorted(f.unusedOnly, f.stray) },
	}, {
		name: "without CollectImages every image is kept",
		opt: func(f fixture) GCOptions {
			return GCOptions{Grace: time.Hour}
		},
		wantImages: func(f fixture) []Digest { return nil },
		wantBlobs:  func(f fixture) []Digest { return []Digest{f.stray} },
	}, {
		name: "nothing in use: only the pinned image survives",
		opt: func(f fixture) GCOptions {
			return GCOptions{CollectImages: true, Grace: time.Hour}
		},
		wantImages: func(f fixture) []Digest { return sorted(f.used, f.unused) },
		wantBlobs:  func(f fixture) []Digest { return sorted(f.shared, f.usedOnly, f.unusedOnly, f.stray) },
	}, {
		name: "young blob and young image survive",
		opt: func(f fixture) GCOptions {
			return GCOptions{CollectImages: true, InUse: map[Digest]bool{f.used: true}, Grace: time.Hour}
		},
		before: func(t *testing.T, f fixture) {
			now := time.Now()
			// A build wrote the stray blob again (reusing it) just now, and
			// the unused image was just published.
			if _, err := f.s.PutBlob(strings.NewReader("stray")); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(f.s.manifestPath(f.unused), now, now); err != nil {
				t.Fatal(err)
			}
		},
		wantImages: func(f fixture) []Digest { return nil },
		wantBlobs:  func(f fixture) []Digest { return nil },
		wantYoung:  2,
	}, {
		name: "grace 0 removes the young too",
		opt: func(f fixture) GCOptions {
			return GCOptions{CollectImages: true, InUse: map[Digest]bool{f.used: true}, Now: func() time.Time { return time.Now().Add(time.Second) }}
		},
		before: func(t *testing.T, f fixture) {
			if _, err := f.s.PutBlob(strings.NewReader("stray")); err != nil {
				t.Fatal(err)
			}
		},
		wantImages: func(f fixture) []Digest { return []Digest{f.unused} },
		wantBlobs:  func(f fixture) []Digest { return sorted(f.unusedOnly, f.stray) },
	}} {
		for _, dryRun := range []bool{false, true} {
			name := tc.name
			if dryRun {
				name += "/dry run"
			}
			t.Run(name, func(t *testing.T) {
				f := setup(t)
				if tc.before != nil {
					tc.before(t, f)
				}
				opt := tc.opt(f)
				opt.DryRun = dryRun
				beforeImages := imageIDs(t, f.s)
				rep, err := f.s.GC(opt)
				if err != nil {
					t.Fatalf("GC(%+v) = %v", opt, err)
				}
				var gotBlobs []Digest
				var bytes int64
				for _, b := range rep.Blobs {
					gotBlobs = append(gotBlobs, b.Digest)
					bytes += b.Size
				}
				if diff := cmp.Diff(tc.wantImages(f), rep.Images, cmpEmpty); diff != "" {
					t.Errorf("removed images (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(tc.wantBlobs(f), sorted(gotBlobs...), cmpEmpty); diff != "" {
					t.Errorf("removed blobs (-want +got):\n%s", diff)
				}
				if rep.Bytes != bytes || rep.Young != tc.wantYoung || rep.DryRun != dryRun {
					t.Errorf("report %+v: want bytes %d, young %d, dry run %v", rep, bytes, tc.wantYoung, dryRun)
				}
				wantImages, wantBlobs := beforeImages, allBlobs(f)
				if !dryRun {
					wantImages = slices.DeleteFunc(wantImages, func(d Digest) bool { return slices.Contains(rep.Images, d) })
					wantBlobs = slices.DeleteFunc(wantBlobs, func(d Digest) bool { return slices.Contains(gotBlobs, d) })
				}
				if diff := cmp.Diff(wantImages, imageIDs(t, f.s), cmpEmpty); diff != "" {
					t.Errorf("images left (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(wantBlobs, blobs(t, f.s), cmpEmpty); diff != "" {
					t.Errorf("blobs left (-want +got):\n%s", diff)
				}
				// Every image left can still be served whole.
				for _, id := range imageIDs(t, f.s) {
					m, err := f.s.Get(id)
					if err != nil {
						t.Fatal(err)
					}
					for _, a := range m.Artifacts {
						if !f.s.HasBlob(a.Digest, a.Size) {
							t.Errorf("image %s lost blob %s", m.Name, a.Digest)
						}
					}
				}
			})
		}
	}
}

var cmpEmpty = cmp.Comparer(func(a, b []Digest) bool { return slices.Equal(a, b) })

func TestGCRemovesOldTempFiles(t *testing.T) {
	s, _ := Open(t.TempDir())
	w, err := s.NewBlob()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("interrupted"))
	w.f.Close() // a crashed writer: the file stays
	age(t, s)
	fresh, err := s.NewBlob()
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Abort()
	rep, err := s.GC(GCOptions{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Temp != 1 {
		t.Errorf("GC removed %d temporary files, want 1", rep.Temp)
	}
	if _, err := os.Stat(fresh.f.Name()); err != nil {
		t.Errorf("GC removed a blob being written: %v", err)
	}
}

func TestGCRefusesUndecodableManifest(t *testing.T) {
	s, _ := Open(t.TempDir())
	publishBlobs(t, s, "one", "kernel")
	bad := DigestOf([]byte("garbage"))
	if err := os.WriteFile(s.manifestPath(bad), []byte("garbage"), 0o444); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutBlob(strings.NewReader("stray")); err != nil {
		t.Fatal(err)
	}
	age(t, s)
	before := blobs(t, s)
	if _, err := s.GC(GCOptions{CollectImages: true, Grace: time.Hour}); err == nil || !strings.Contains(err.Error(), bad.Hex()) {
		t.Fatalf("GC with an undecodable manifest = %v, want an error naming it", err)
	}
	if diff := cmp.Diff(before, blobs(t, s)); diff != "" || len(imageIDs(t, s)) != 1 {
		t.Errorf("GC removed something before refusing: blobs %s, images %v", diff, imageIDs(t, s))
	}
}

// TestGCBlocksPublish publishes an image whose only blob nothing
// references yet while GC, with no grace, has read the manifests and not yet
// removed anything. The publish must wait for GC and then fail, rather than
// publish an image whose blob GC is about to remove.
func TestGCBlocksPublish(t *testing.T) {
	s, _ := Open(t.TempDir())
	a, err := s.PutBlob(strings.NewReader("fresh"))
	if err != nil {
		t.Fatal(err)
	}
	a.Name = "kernel"
	m := Manifest{SchemaVersion: 1, Name: "race", Inputs: DigestOf([]byte("race")), Artifacts: []Artifact{a}}
	published := make(chan error, 1)
	s.gcHook = func() {
		go func() {
			_, err := s.Publish(m)
			published <- err
		}()
		select {
		case err := <-published:
			t.Errorf("Publish finished while GC held the store: %v", err)
			published <- err
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, err := s.GC(GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := <-published; !errors.Is(err, ErrMissingBlob) {
		t.Errorf("Publish after GC took its blob = %v, want ErrMissingBlob", err)
	}
	if ids := imageIDs(t, s); len(ids) != 0 {
		t.Errorf("an image was published without its blob: %v", ids)
	}
}
