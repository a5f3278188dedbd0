package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/images"
)

// writeRecipe writes a small buildable recipe into dir: a kernel file, a
// directory base and init.sh. body replaces the recipe's text when not
// empty. It returns the recipe's path.
func writeRecipe(t *testing.T, dir, name, body string) string {
	t.Helper()
	for p, content := range map[string]string{
		"vmlinuz":          "a kernel for the CLI tests",
		"init.sh":          "#!/bin/sh\necho hello\n",
		"rootfs/etc/hosts": "127.0.0.1 localhost\n",
		"rootfs/bin/sh":    "not really a shell",
	} {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if body == "" {
		body = "name: cli\nkernel: vmlinuz\nbase: rootfs\ncmdline: console=ttyS0\nfiles:\n  - path: /init\n    mode: \"0755\"\n    source: init.sh\n"
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBuildExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := writeRecipe(t, dir, "good.yaml", "")
	unknown := writeRecipe(t, dir, "unknown.yaml", "name: x\nkernel: vmlinuz\nbase: rootfs\nfrobnicate: 1\n")
	noKernel := writeRecipe(t, dir, "nokernel.yaml", "name: x\nkernel: missing-vmlinuz\nbase: rootfs\n")
	noFiles := writeRecipe(t, dir, "nofiles.yaml", "name: x\nkernel: missing-vmlinuz\nbase: missing-rootfs\nfiles:\n  - path: /a\n    mode: \"0644\"\n    source: missing.sh\n")
	noKernelBadMode := writeRecipe(t, dir, "mixed.yaml", "name: x\nkernel: missing-vmlinuz\nbase: rootfs\nfiles:\n  - path: /a\n    mode: \"999\"\n    content: x\n")
	store := filepath.Join(dir, "images")
	notADir := filepath.Join(dir, "vmlinuz") // images.Open cannot make a store under a file

	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		stdout  string // substring
		stderr  string // substring
		publish bool   // an image is in store afterwards
	}{
		{"check ok", []string{"build", "--check", good}, exitOK, "ok\n", "", false},
		{"check ok, flags after", []string{"build", good, "--check", "--images", filepath.Join(dir, "unused-store")}, exitOK, "ok", "", false},
		{"check unknown field", []string{"build", "--check", unknown}, exitBadRecipe, "", "frobnicate", false},
		{"check missing kernel", []string{"build", "--check", noKernel}, exitMissingInput, "", "missing-vmlinuz", false},
		{"check three missing files", []string{"build", "--check", noFiles}, exitMissingInput, "", "missing.sh", false},
		{"check missing kernel and bad mode", []string{"build", "--check", noKernelBadMode}, exitBadRecipe, "", `"999"`, false},
		{"check missing recipe", []string{"build", "--check", filepath.Join(dir, "absent.yaml")}, exitMissingInput, "", "absent.yaml", false},
		{"check no recipe", []string{"build", "--check"}, exitUsage, "", "RECIPE", false},
		{"check two recipes", []string{"build", "--check", good, good}, exitUsage, "", "RECIPE", false},
		{"bad flag", []string{"build", "--frobnicate", good}, exitUsage, "", "frobnicate", false},
		{"no store", []string{"build", good}, exitUsage, "", "--images", false},
		{"build unknown field", []string{"build", unknown, "--images", store}, exitBadRecipe, "", "frobnicate", false},
		{"build missing kernel", []string{"build", noKernel, "--images", store}, exitMissingInput, "", "missing-vmlinuz", false},
		{"build failure", []string{"build", good, "--images", notADir}, exitFailure, "", "image store", false},
		{"build", []string{"build", good, "--images", store}, exitOK, "sha256:", "", true},
		{"help", []string{"build", "--help"}, exitOK, "", "4  missing input", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
				t.Errorf("run(%q) = %d\nstdout %q\nstderr %q\nwant %d, stdout with %q, stderr with %q",
					tc.args, code, out.String(), errb.String(), tc.code, tc.stdout, tc.stderr)
			}
			if tc.publish {
				st, err := images.Open(store)
				if err != nil {
					t.Fatal(err)
				}
				id := images.Digest(strings.TrimSpace(out.String()))
				if _, err := st.Get(id); err != nil {
					t.Errorf("build printed %s, not in the store: %v", id, err)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "unused-store")); err == nil {
		t.Errorf("--check created the --images store")
	}
}

func TestBuildCheckJSON(t *testing.T) {
	dir := t.TempDir()
	good := writeRecipe(t, dir, "good.yaml", "")
	mixed := writeRecipe(t, dir, "mixed.yaml", "name: x\nkernel: missing-vmlinuz\nbase: rootfs\nfiles:\n  - path: /a\n    mode: \"999\"\n    content: x\n")

	var out, errb bytes.Buffer
	if code := run([]string{"build", "--check", "--json", good}, &out, &errb); code != exitOK {
		t.Fatalf("check --json good = %d: %s", code, errb.String())
	}
	var ok checkJSON
	if err := json.Unmarshal(out.Bytes(), &ok); err != nil || !ok.OK || ok.Name != "cli" || ok.Errors == nil || len(ok.Errors) != 0 {
		t.Errorf("check --json good printed %s (%v)", out.String(), err)
	}

	out.Reset()
	if code := run([]string{"build", "--check", "--json", mixed}, &out, &errb); code != exitBadRecipe {
		t.Fatalf("check --json mixed = %d, want %d", code, exitBadRecipe)
	}
	var bad checkJSON
	if err := json.Unmarshal(out.Bytes(), &bad); err != nil || bad.OK || len(bad.Errors) != 2 {
		t.Fatalf("check --json mixed printed %s (%v), want two errors", out.String(), err)
	}
	byField := map[string]checkErrorJSON{}
	for _, e := range bad.Errors {
		byField[e.Field] = e
	}
	if k := byField["kernel"]; !k.Missing || k.File != mixed || k.Line != 2 || !strings.Contains(k.Error, "missing-vmlinuz") {
		t.Errorf("kernel error = %+v, want missing, %s line 2", k, mixed)
	}
	if m := byField["files[0].mode"]; m.Missing || m.Line == 0 || !strings.Contains(m.Error, "999") {
		t.Errorf("mode error = %+v", m)
	}
}
