package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/images"
)

// TestMachinesLifecycleCLI drives a machine's generations through the CLI
// against a real kiln serve: add with an identity file, replace, rollback,
// reimage, retire, and the refusals, each with its exit code.
func TestMachinesLifecycleCLI(t *testing.T) {
	data := t.TempDir()
	url, _ := startServe(t, data)
	imgA := publishTestImage(t, filepath.Join(data, "images"))
	imgB := publishNamedImage(t, filepath.Join(data, "images"), "cli-test-b")
	dir := t.TempDir()
	idFile := filepath.Join(dir, "id.yaml")
	writeFile(t, idFile, "domain: rack1.example\ndns: [10.0.0.53]\nlabels: {rack: r1}\n")
	badFile := filepath.Join(dir, "bad.yaml")
	writeFile(t, badFile, "domain: rack1.example\npackages: [vim]\n")

	kiln := func(want int, args ...string) map[string]any {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(append(args, "--server", url), &out, &errb); code != want {
			t.Fatalf("kiln %s = %d, want %d: %s", strings.Join(args, " "), code, want, errb.String())
		}
		if want != exitOK {
			return map[string]any{"stderr": errb.String()}
		}
		m := map[string]any{}
		if args[len(args)-1] == "--json" {
			if err := json.Unmarshal(out.Bytes(), &m); err != nil {
				t.Fatalf("kiln %s printed %q: %v", strings.Join(args, " "), out.String(), err)
			}
		}
		m["stdout"] = out.String()
		return m
	}
	const mac = "52:54:00:00:00:c1"
	m := kiln(exitOK, "machines", "add", "--mac", mac, "--hostname", "cli-gen", "--image", imgA, "--mode", "install", "--identity", idFile, "--json")
	if m["generation"] != 1.0 || m["mode"] != "install" {
		t.Errorf("add: generation %v mode %v", m["generation"], m["mode"])
	}
	gens := m["generations"].([]any)
	id := gens[0].(map[string]any)["identity"].(map[string]any)
	if id["domain"] != "rack1.example" || id["labels"].(map[string]any)["rack"] != "r1" {
		t.Errorf("add: identity of generation 1 = %v", id)
	}
	// An identity file with what belongs in the image: refused before
	// anything is sent.
	if e := kiln(exitUsage, "machines", "replace", mac, "--hostname", "cli-gen", "--image", imgB, "--identity", badFile); !strings.Contains(e["stderr"].(string), "put it in the image") {
		t.Errorf("replace with packages: stderr %q", e["stderr"])
	}
	if e := kiln(exitUsage, "machines", "add", "--mac", "52:54:00:00:00:c2", "--hostname", "x", "--image", imgA, "--mode", "sometimes"); !strings.Contains(e["stderr"].(string), "--mode") {
		t.Errorf("bad mode: stderr %q", e["stderr"])
	}
	m = kiln(exitOK, "machines", "replace", mac, "--hostname", "cli-gen", "--image", imgB, "--json")
	if m["generation"] != 2.0 || m["reimage_pending"] != true || m["image"] != imgB {
		t.Errorf("replace: generation %v pending %v image %v", m["generation"], m["reimage_pending"], m["image"])
	}
	if out := kiln(exitOK, "machines", "list")["stdout"].(string); !strings.Contains(out, "2 (pending)") {
		t.Errorf("list does not show the pending generation:\n%s", out)
	}
	m = kiln(exitOK, "machines", "rollback", mac, "--json")
	if m["generation"] != 3.0 || m["image"] != imgA {
		t.Errorf("rollback: generation %v image %v, want 3 and %s", m["generation"], m["image"], imgA)
	}
	kiln(exitOK, "machines", "reimage", mac)
	m = kiln(exitOK, "machines", "retire", mac, "--json")
	if m["state"] != "retired" {
		t.Errorf("retire: state %v", m["state"])
	}
	var ops []string
	for _, a := range m["audit"].([]any) {
		e := a.(map[string]any)
		ops = append(ops, e["op"].(string))
		if actor, _ := e["actor"].(string); !strings.Contains(actor, "@") {
			t.Errorf("audit entry %v: actor %q is not user@host", e, actor)
		}
	}
	if diff := cmp.Diff([]string{"create", "replace", "rollback", "reimage", "retire"}, ops); diff != "" {
		t.Errorf("audit ops (-want +got):\n%s", diff)
	}
	// A retired machine takes no new generation.
	if e := kiln(exitUsage, "machines", "reimage", mac); !strings.Contains(e["stderr"].(string), "retired") {
		t.Errorf("reimage of a retired machine: stderr %q", e["stderr"])
	}
}

// TestPinnedBy checks which images a machine keeps from gc.
func TestPinnedBy(t *testing.T) {
	var m machineView
	raw := `{"image":"sha256:c","running_image":"sha256:r","generation":4,"generations":[
		{"n":1,"image":"sha256:a"},{"n":2,"image":"sha256:old"},{"n":3,"image":"sha256:b"},{"n":4,"image":"sha256:c"}]}`
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatal(err)
	}
	got := pinnedBy(m)
	want := map[images.Digest]bool{"sha256:c": true, "sha256:b": true, "sha256:r": true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pinnedBy (-want +got):\n%s", diff)
	}
}

func publishNamedImage(t *testing.T, dir, name string) string {
	t.Helper()
	st, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := images.Manifest{SchemaVersion: 1, Name: name, Inputs: images.DigestOf([]byte(name))}
	for _, n := range []string{"kernel", "initrd"} {
		a, err := st.PutBlob(strings.NewReader(name + " " + n))
		if err != nil {
			t.Fatal(err)
		}
		a.Name = n
		m.Artifacts = append(m.Artifacts, a)
	}
	id, err := st.Publish(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(id)
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
