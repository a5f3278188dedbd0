package images

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func testManifest(t *testing.T, s *Store) Manifest {
	t.Helper()
	k, err := s.PutBlob(strings.NewReader("kernel bytes"))
	if err != nil {
		t.Fatal(err)
	}
	k.Name = "kernel"
	i, err := s.PutBlob(strings.NewReader("initrd bytes"))
	if err != nil {
		t.Fatal(err)
	}
	i.Name = "initrd"
	return Manifest{SchemaVersion: 1, Name: "test", Inputs: DigestOf([]byte("in")), Cmdline: "quiet", Artifacts: []Artifact{k, i}}
}

func TestPublishGetList(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := testManifest(t, s)
	id, err := s.Publish(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseDigest(string(id)); err != nil {
		t.Fatalf("Publish returned bad id %q: %v", id, err)
	}
	got, err := s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != m.Name || len(got.Artifacts) != 2 || got.Artifacts[0].Digest != m.Artifacts[0].Digest {
		t.Fatalf("Get(%s) = %+v, want %+v", id, got, m)
	}
	id2, err := s.Publish(m)
	if err != nil || id2 != id {
		t.Fatalf("second Publish = %s, %v, want %s", id2, err, id)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].ID != id || list[0].Size != int64(len("kernel bytes")+len("initrd bytes")) {
		t.Fatalf("List() = %+v, %v", list, err)
	}
	f, err := s.OpenBlob(m.Artifacts[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "kernel bytes" {
		t.Fatalf("OpenBlob content = %q", b)
	}
	if img, err := s.FindByInputs(m.Inputs); err != nil || img.ID != id {
		t.Fatalf("FindByInputs = %v, %v, want %s", img.ID, err, id)
	}
}

// The same manifest published in two stores gets the same ID.
func TestIDIsContentAddress(t *testing.T) {
	var ids []Digest
	for range 2 {
		s, err := Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		id, err := s.Publish(testManifest(t, s))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if ids[0] != ids[1] {
		t.Fatalf("same manifest, different IDs: %s and %s", ids[0], ids[1])
	}
}

func TestPublishRefusesMissingBlob(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := testManifest(t, s)
	m.Artifacts[1].Size++ // right digest, wrong size: not what the store has
	if _, err := s.Publish(m); err == nil || !strings.Contains(err.Error(), "initrd") {
		t.Fatalf("Publish with wrong size = %v, want error naming initrd", err)
	}
	m = testManifest(t, s)
	m.Artifacts[0].Digest = DigestOf([]byte("absent"))
	if _, err := s.Publish(m); err == nil || !strings.Contains(err.Error(), "kernel") {
		t.Fatalf("Publish with absent blob = %v, want error naming kernel", err)
	}
	list, _ := s.List()
	if len(list) != 0 {
		t.Fatalf("failed Publish left %d images visible", len(list))
	}
}

func TestAbortedBlobLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.NewBlob()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("half"))
	w.Abort()
	for _, sub := range []string{"blobs/sha256", "tmp"} {
		entries, _ := os.ReadDir(filepath.Join(dir, sub))
		if len(entries) != 0 {
			t.Errorf("%s has %d entries after Abort, want 0", sub, len(entries))
		}
	}
}

func TestGetDetectsCorruption(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir)
	id, err := s.Publish(testManifest(t, s))
	if err != nil {
		t.Fatal(err)
	}
	p := s.manifestPath(id)
	os.Chmod(p, 0o644)
	b, _ := os.ReadFile(p)
	os.WriteFile(p, bytes.Replace(b, []byte("quiet"), []byte("QUIET"), 1), 0o644)
	s2, _ := Open(dir) // a fresh process: nothing verified yet
	if _, err := s2.Get(id); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Get of tampered manifest = %v, want corrupt error", err)
	}
	if list, err := s2.List(); err != nil || len(list) != 0 {
		t.Fatalf("List with a corrupt manifest = %v, %v; want it left out", list, err)
	}
}

func TestGetNotFound(t *testing.T) {
	s, _ := Open(t.TempDir())
	_, err := s.Get(DigestOf([]byte("nope")))
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
	}
	if _, err := s.Get("sha256:../../etc"); !errors.Is(err, ErrInvalidDigest) {
		t.Fatalf("Get(bad id) = %v, want a validation error", err)
	}
}

func TestParseDigest(t *testing.T) {
	good := string(DigestOf(nil))
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{good, true},
		{strings.ToUpper(good), false},
		{"md5:abc", false},
		{"sha256:" + strings.Repeat("a", 63), false},
		{"sha256:" + strings.Repeat("g", 64), false},
		{"sha256:../" + strings.Repeat("a", 61), false},
	} {
		if _, err := ParseDigest(tc.in); (err == nil) != tc.ok {
			t.Errorf("ParseDigest(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestManifestValidate(t *testing.T) {
	s, _ := Open(t.TempDir())
	base := testManifest(t, s)
	for name, mutate := range map[string]func(*Manifest){
		"schema":       func(m *Manifest) { m.SchemaVersion = 2 },
		"name":         func(m *Manifest) { m.Name = "" },
		"inputs":       func(m *Manifest) { m.Inputs = "x" },
		"no artifacts": func(m *Manifest) { m.Artifacts = nil },
		"dup":          func(m *Manifest) { m.Artifacts[1].Name = "kernel" },
		"digest":       func(m *Manifest) { m.Artifacts[0].Digest = "sha256:zz" },
	} {
		m := base
		m.Artifacts = append([]Artifact(nil), base.Artifacts...)
		mutate(&m)
		if err := m.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want error", name)
		}
	}
}

// TestBlobSparse writes a blob that is mostly zeros, in odd-sized writes:
// its bytes and digest must be exact, and the zero runs holes.
func TestBlobSparse(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	want.WriteString("head")
	want.Write(make([]byte, 8<<20))
	want.WriteString("middle")
	want.Write(make([]byte, 3<<20+17)) // a trailing run: the size must still be right
	w, err := s.NewBlob()
	if err != nil {
		t.Fatal(err)
	}
	data := want.Bytes()
	for len(data) > 0 {
		n := min(len(data), 100_003)
		if _, err := w.Write(data[:n]); err != nil {
			t.Fatal(err)
		}
		data = data[n:]
	}
	a, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != DigestOf(want.Bytes()) || a.Size != int64(want.Len()) {
		t.Errorf("Commit = %+v, want %s size %d", a, DigestOf(want.Bytes()), want.Len())
	}
	f, err := s.OpenBlob(a.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("blob bytes differ from what was written")
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 > 2<<20 {
		t.Errorf("blob of %d bytes, mostly zeros, uses %d bytes on disk: want holes", fi.Size(), st.Blocks*512)
	}
}
