package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/images"
)

// TestImagesRmPinGC runs kiln images against the store of a running kiln
// serve with a machine assigned one image: rm and gc never remove that
// image or a pinned one, gc removes the rest and their blobs (but not a
// blob an image left still uses), dry runs and the grace period remove
// nothing, and the server stops serving what was removed.
func TestImagesRmPinGC(t *testing.T) {
	data := t.TempDir()
	url, _ := startServe(t, data)
	store := filepath.Join(data, "images")
	used, _ := publishImage(t, store, "used", map[string]string{"kernel": "shared kernel", "initrd": "used initrd"})
	unused, unusedInitrd := publishImage(t, store, "unused", map[string]string{"kernel": "shared kernel", "initrd": "unused initrd"})
	pinned, pinnedInitrd := publishImage(t, store, "pinned", map[string]string{"kernel": "pinned kernel", "initrd": "pinned initrd"})
	pinnedKernel := images.DigestOf([]byte("pinned kernel"))
	runOK(t, "machines", "add", "--server", url, "--mac", "52:54:00:00:00:01", "--hostname", "gc-1", "--image", string(used))
	// The server has read every image; removing one must not leave it in
	// the server's cache.
	for _, id := range []images.Digest{used, unused, pinned} {
		if status, body := httpGet(t, url+"/api/v1/images/"+string(id)); status != http.StatusOK {
			t.Fatalf("GET image %s = %d: %s", id, status, body)
		}
	}

	// rm refuses: without --server or --force, an assigned image, a pinned one.
	runCode(t, exitUsage, "--server URL", "images", "rm", "--images", store, string(unused))
	runCode(t, exitUsage, "assigned to gc-1 (52:54:00:00:00:01)", "images", "rm", "--images", store, "--server", url, string(used))
	runOK(t, "images", "pin", "--images", store, string(pinned))
	runCode(t, exitUsage, "pinned", "images", "rm", "--images", store, "--force", string(pinned))
	runCode(t, exitUsage, "not found", "images", "rm", "--images", store, "--force", string(images.DigestOf([]byte("absent"))))

	var shown images.Image
	if err := json.Unmarshal([]byte(runOK(t, "images", "show", "--images", store, "--json", string(pinned))), &shown); err != nil {
		t.Fatal(err)
	}
	if shown.ID != pinned || shown.Manifest.Name != "pinned" || !shown.Pinned || shown.Size != int64(len("pinned kernel")+len("pinned initrd")) || shown.Created.IsZero() {
		t.Errorf("images show --json = %+v", shown)
	}
	if out := runOK(t, "images", "show", "--images", store, string(used)); !strings.Contains(out, "name:    used") || !strings.Contains(out, "pinned:  no") {
		t.Errorf("images show printed %q", out)
	}

	gc := func(args ...string) images.GCReport {
		t.Helper()
		var rep images.GCReport
		out := runOK(t, append([]string{"images", "gc", "--images", store, "--server", url, "--json"}, args...)...)
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("gc --json printed %q: %v", out, err)
		}
		return rep
	}
	blobsOf := func(rep images.GCReport) []images.Digest {
		var out []images.Digest
		for _, b := range rep.Blobs {
			out = append(out, b.Digest)
		}
		slices.Sort(out)
		return out
	}
	// Everything was written just now: the default grace keeps it all.
	if rep := gc(); len(rep.Images) != 0 || len(rep.Blobs) != 0 || rep.Young != 1 {
		t.Errorf("gc within the grace period = %+v, want nothing removed and 1 young image", rep)
	}
	rep := gc("--grace", "0s", "--dry-run")
	if !rep.DryRun || !slices.Equal(rep.Images, []images.Digest{unused}) || !slices.Equal(blobsOf(rep), []images.Digest{unusedInitrd}) {
		t.Errorf("gc --dry-run = %+v, want image %s and blob %s", rep, unused, unusedInitrd)
	}
	if status, _ := httpGet(t, url+"/api/v1/images/"+string(unused)); status != http.StatusOK {
		t.Errorf("gc --dry-run removed the image: GET = %d", status)
	}
	rep = gc("--grace", "0s")
	if rep.DryRun || !slices.Equal(rep.Images, []images.Digest{unused}) || !slices.Equal(blobsOf(rep), []images.Digest{unusedInitrd}) {
		t.Errorf("gc = %+v, want image %s and blob %s", rep, unused, unusedInitrd)
	}
	if status, _ := httpGet(t, url+"/api/v1/images/"+string(unused)); status != http.StatusNotFound {
		t.Errorf("GET of the collected image = %d, want 404", status)
	}
	if status, _ := httpGet(t, url+"/blobs/"+string(unusedInitrd)); status != http.StatusNotFound {
		t.Errorf("GET of the collected blob = %d, want 404", status)
	}
	for _, d := range []images.Digest{images.DigestOf([]byte("shared kernel")), images.DigestOf([]byte("used initrd")), pinnedKernel, pinnedInitrd} {
		if status, _ := httpGet(t, url+"/blobs/"+string(d)); status != http.StatusOK {
			t.Errorf("GET of kept blob %s = %d, want 200", d, status)
		}
	}
	for _, id := range []images.Digest{used, pinned} {
		if status, _ := httpGet(t, url+"/api/v1/images/"+string(id)); status != http.StatusOK {
			t.Errorf("GET of kept image %s = %d, want 200", id, status)
		}
	}

	// Unpinned, the image can go; its blobs then go with gc, even without
	// --server (which keeps every image).
	runOK(t, "images", "unpin", "--images", store, string(pinned))
	if out := runOK(t, "images", "rm", "--images", store, "--server", url, string(pinned)); !strings.Contains(out, "removed "+string(pinned)) {
		t.Errorf("images rm printed %q", out)
	}
	var out, errb strings.Builder
	if code := run([]string{"images", "gc", "--images", store, "--grace", "0s"}, &out, &errb); code != exitOK {
		t.Fatalf("gc without --server = %d: %s", code, errb.String())
	}
	if !strings.Contains(errb.String(), "every image is kept") || !strings.Contains(out.String(), "removed 0 images and 2 blobs") {
		t.Errorf("gc without --server: stdout %q, stderr %q", out.String(), errb.String())
	}
	var list struct {
		Images []images.Image `json:"images"`
	}
	if err := json.Unmarshal([]byte(runOK(t, "images", "list", "--images", store, "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Images) != 1 || list.Images[0].ID != used {
		t.Errorf("images left: %+v, want only %s", list.Images, used)
	}
	if status, _ := httpGet(t, url+"/blobs/"+string(used)); status != http.StatusNotFound {
		t.Errorf("a manifest is served as a blob: %d", status)
	}
}

// TestImagesGCRefusesForeignServer points gc and rm at a kiln serve that
// does not use the store: its machines say nothing of the store's images.
func TestImagesGCRefusesForeignServer(t *testing.T) {
	other := t.TempDir()
	url, _ := startServe(t, other)
	publishImage(t, filepath.Join(other, "images"), "elsewhere", map[string]string{"kernel": "k", "initrd": "i"})
	store := filepath.Join(t.TempDir(), "images")
	id, _ := publishImage(t, store, "here", map[string]string{"kernel": "k2", "initrd": "i2"})
	runCode(t, exitUsage, "is not in "+store, "images", "gc", "--images", store, "--server", url, "--grace", "0s")
	runCode(t, exitUsage, "is not in "+store, "images", "rm", "--images", store, "--server", url, string(id))
	if _, err := os.Stat(filepath.Join(store, "manifests", "sha256", id.Hex()+".json")); err != nil {
		t.Errorf("refused gc removed the image: %v", err)
	}
}

func TestImagesUsage(t *testing.T) {
	store := t.TempDir()
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"images"}, "subcommand"},
		{[]string{"images", "frobnicate", "--images", store}, "unknown subcommand"},
		{[]string{"images", "list"}, "--images"},
		{[]string{"images", "show", "--images", store}, "one image ID"},
		{[]string{"images", "show", "--images", store, "latest"}, "invalid digest"},
		{[]string{"images", "gc", "--images", store, "--grace", "-1h"}, "negative"},
		{[]string{"images", "gc", "--images", store, "--force"}, "force"},
		{[]string{"images", "pin", "--images", store, string(images.DigestOf(nil))}, "not found"},
	} {
		runCode(t, exitUsage, tc.msg, tc.args...)
	}
	if diff := cmp.Diff("sha256:"+strings.Repeat("0", 64)+" was not pinned\n", runOK(t, "images", "unpin", "--images", store, "sha256:"+strings.Repeat("0", 64))); diff != "" {
		t.Errorf("unpin of an unpinned image (-want +got):\n%s", diff)
	}
}
