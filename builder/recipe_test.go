package builder

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func ptr[T any](v T) *T { return &v }

func TestLoadRecipe(t *testing.T) {
	dir := t.TempDir()
	path := writeFixture(t, dir, time.Now())
	got, err := LoadRecipe(path)
	if err != nil {
		t.Fatalf("LoadRecipe(%q) = %v", path, err)
	}
	want := &Recipe{
		Name:    "demo",
		Kernel:  "vmlinuz",
		Base:    "rootfs",
		Cmdline: "console=ttyS0",
		Files: []File{
			{Path: "/init", Mode: "0755", Source: "init.sh"},
			{Path: "/etc/motd", Mode: "0644", Content: ptr("hello\n")},
			{Path: "/usr/local/bin/tool", Mode: "0750", Content: ptr("#!/bin/sh\n"), UID: ptr[uint32](1000), GID: ptr[uint32](100)},
		},
		Dir: dir,
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(Recipe{})); diff != "" {
		t.Errorf("LoadRecipe(%q) (-want +got):\n%s", path, diff)
	}
	if got, want := got.resolve(got.Kernel), filepath.Join(dir, "vmlinuz"); got != want {
		t.Errorf("kernel resolves to %q, want %q", got, want)
	}
}

// recipeHead is the valid start of the recipes in TestLoadRecipeErrors
// (lines 1-3); a case's text follows from line 4.
const recipeHead = "name: demo\nkernel: vmlinuz\nbase: rootfs\n"

func TestLoadRecipeErrors(t *testing.T) {
	for _, tc := range []struct {
		name      string
		recipe    string // the whole recipe if it has no "name:", else appended to recipeHead
		wantField string
		wantLine  int
		wantErr   string
	}{
		{"unknown field", "colour: red\n", "colour", 4, "unknown field (want one of: name, arch, kernel, base, cmdline, owner, overlays, users, ssh_keys, files, services, env, outputs)"},
		{"unknown file field", "files:\n  - path: /a\n    mode: \"0644\"\n    sorce: a\n", "files[0].sorce", 7, "unknown field"},
		{"duplicate field", "kernel: vmlinuz\n", "kernel", 4, "duplicate field (first at line 2)"},
		{"wrong type name", "name: [a, b]\nkernel: vmlinuz\nbase: rootfs\n", "name", 1, "want a string, have a list"},
		{"wrong type files", "files: {path: /a}\n", "files", 4, "want a list of files, have a mapping"},
		{"wrong type uid", "files:\n  - {path: /a, mode: \"0644\", content: x, uid: root}\n", "files[0].uid", 5, `want an integer from 0 to 4294967294, have a string "root"`},
		{"negative gid", "owner: {uid: 0, gid: -1}\n", "owner.gid", 4, "-1: want an integer"},
		{"owner without gid", "owner: {uid: 5}\n", "owner.gid", 4, "required when owner is set"},
		{"unquoted mode", "files:\n  - {path: /a, mode: 0644, content: x}\n", "files[0].mode", 5, `have an integer 0644 (quote it: "0644")`},
		{"missing kernel", "name: demo\nkernel: nope\nbase: rootfs\n", "kernel", 2, "nope: stat "},
		{"kernel is a directory", "name: demo\nkernel: rootfs\nbase: rootfs\n", "kernel", 2, "rootfs: not a regular file"},
		{"missing base", "name: demo\nkernel: vmlinuz\nbase: gone\n", "base", 3, "gone: stat "},
		{"base is not a tar", "name: demo\nkernel: vmlinuz\nbase: vmlinuz\n", "base", 3, "vmlinuz: not a directory or a .tar, .tar.gz, .tgz, .tar.zst or .tar.xz archive"},
		{"no kernel", "name: demo\nbase: rootfs\n", "kernel", 0, "required"},
		{"bad arch", "arch: riscv64\n", "arch", 4, `"riscv64": want amd64 or arm64`},
		{"kernel glob and path", "name: demo\nkernel: {base: /boot/vmlinuz-*}\nkernel: vmlinuz\nbase: rootfs\n", "kernel", 3, "duplicate field"},
		{"relative kernel glob", "name: demo\nkernel: {base: boot/vmlinuz-*}\nbase: rootfs\n", "kernel.base", 2, "must be an absolute glob"},
		{"bad kernel glob", "name: demo\nkernel: {base: \"/boot/[\"}\nbase: rootfs\n", "kernel.base", 2, "syntax error in pattern"},
		{"unknown kernel field", "name: demo\nkernel: {path: x}\nbase: rootfs\n", "kernel.path", 2, "unknown field (want one of: base)"},
		{"unknown base kind", "name: demo\nkernel: vmlinuz\nbase: {ubuntu: {suite: noble}}\n", "base.ubuntu", 3, "unknown field (want one of: debian)"},
		{"debian without suite", "name: demo\nkernel: vmlinuz\nbase:\n  debian: {packages: [busybox-static]}\n", "base.debian.suite", 4, "required"},
		{"debian bad package", "name: demo\nkernel: vmlinuz\nbase:\n  debian:\n    suite: bookworm\n    packages: [\"Busybox\"]\n", "base.debian.packages[0]", 6, `"Busybox": not a Debian package name`},
		{"debian bad variant", "name: demo\nkernel: vmlinuz\nbase: {debian: {suite: bookworm, variant: tiny}}\n", "base.debian.variant", 3, `"tiny": want one of essential`},
		{"debian on arm64", "name: demo\narch: arm64\nkernel: vmlinuz\nbase: {debian: {suite: bookworm}}\n", "base.debian", 4, "arch arm64: building a foreign-architecture Debian base"},
		{"debian bad mirror", "name: demo\nkernel: vmlinuz\nbase: {debian: {suite: bookworm, mirror: \"ftp://x\"}}\n", "base.debian.mirror", 3, "want an http, https or file URL"},
		{"unknown output", "outputs: [initramfs, vhd]\n", "outputs[1]", 4, `"vhd": want one of initramfs, squashfs, disk, iso, uki`},
		{"output twice", "outputs: [disk, disk]\n", "outputs[1]", 4, `"disk": listed twice`},
		{"uki on arm64", "arch: arm64\noutputs: [uki]\n", "outputs[0]", 5, "only amd64 images have it"},
		{"outputs not a list", "outputs: disk\n", "outputs", 4, `want a list of strings, have a string "disk"`},
		{"missing overlay", "overlays: [nope]\n", "overlays[0]", 4, "nope: stat "},
		{"overlay is a file", "overlays: [init.sh]\n", "overlays[0]", 4, "init.sh: not a directory"},
		{"bad ssh key", "ssh_keys: [\"ssh-ed25519 !!!\"]\n", "ssh_keys[0]", 4, "ssh-ed25519 key: not base64"},
		{"ssh key type", "ssh_keys: [\"hello world\"]\n", "ssh_keys[0]", 4, `"hello": unknown key type`},
		{"user without uid", recipeHead + "users:\n  - name: ops\n", "users[0].uid", 5, "required"},
		{"bad user name", recipeHead + "users:\n  - {name: Ops, uid: 1000}\n", "users[0].name", 5, `"Ops": want [a-z_]`},
		{"duplicate uid", recipeHead + "users:\n  - {name: a, uid: 1000}\n  - {name: b, uid: 1000}\n", "users[1].uid", 6, "1000: also users[0]"},
		{"clear-text password", recipeHead + "users:\n  - {name: a, uid: 1000, password: hunter2}\n", "users[0].password", 5, "never put a clear-text password in a recipe"},
		{"unknown user field", recipeHead + "users:\n  - {name: a, uid: 1000, hostname: x}\n", "users[0].hostname", 5, "unknown field"},
		{"bad service", "services: [\"ssh\"]\n", "services[0]", 4, `"ssh": not a systemd unit name`},
		{"bad env name", "env:\n  1X: y\n", "env.1X", 5, `"1X": want a name`},
		{"env not a mapping", "env: [a]\n", "env", 4, "want a mapping of names to strings, have a list"},
		{"bad template", "files:\n  - {path: /a, mode: \"0644\", content: \"{{ .Env.X \", template: true}\n", "files[0].content", 5, "unclosed action"},
		{"template not bool", "files:\n  - {path: /a, mode: \"0644\", content: x, template: yes please}\n", "files[0].template", 5, "want true or false"},
		{"missing source", "files:\n  - path: /a\n    mode: \"0644\"\n    source: nope.sh\n", "files[0].source", 7, "nope.sh: stat "},
		{"source is a directory", "files:\n  - {path: /a, mode: \"0644\", source: rootfs}\n", "files[0].source", 5, "rootfs: not a regular file"},
		{"both source and content", "files:\n  - {path: /a, mode: \"0644\", source: init.sh, content: x}\n", "files[0]", 5, "both source (init.sh) and content are set, want exactly one"},
		{"neither source nor content", "files:\n  - {path: /a, mode: \"0644\"}\n", "files[0]", 5, "/a: neither source nor content is set"},
		{"bad mode", "files:\n  - {path: /a, mode: \"0789\", content: x}\n", "files[0].mode", 5, `"0789": want an octal mode`},
		{"mode too big", "files:\n  - {path: /a, mode: \"17777\", content: x}\n", "files[0].mode", 5, `"17777": want an octal mode`},
		{"no mode", "files:\n  - {path: /a, content: x}\n", "files[0].mode", 5, "required"},
		{"relative path", "files:\n  - {path: etc/a, mode: \"0644\", content: x}\n", "files[0].path", 5, `"etc/a": must be absolute`},
		{"dotdot path", "files:\n  - {path: /etc/../../a, mode: \"0644\", content: x}\n", "files[0].path", 5, "must not contain .. elements"},
		{"unclean path", "files:\n  - {path: /etc//a/, mode: \"0644\", content: x}\n", "files[0].path", 5, `not clean, want "/etc/a"`},
		{"root path", "files:\n  - {path: /, mode: \"0644\", content: x}\n", "files[0].path", 5, "is the root directory"},
		{"reserved path", "files:\n  - {path: /etc/kiln/image, mode: \"0644\", content: x}\n", "files[0].path", 5, "reserved"},
		{"duplicate path", "files:\n  - {path: /a, mode: \"0644\", content: x}\n  - {path: /a, mode: \"0644\", content: y}\n", "files[1].path", 6, "/a: duplicate of files[0].path"},
		{"file under a file", "files:\n  - {path: /a, mode: \"0644\", content: x}\n  - {path: /a/b, mode: \"0644\", content: y}\n", "files[1].path", 6, "/a/b: parent /a is a file (files[0])"},
		{"bad name", "name: Tiny!\nkernel: vmlinuz\nbase: rootfs\n", "name", 1, `"Tiny!": must match [a-z0-9][a-z0-9._-]*`},
		{"bad cmdline", "cmdline: \"quiet\\nreboot\"\n", "cmdline", 4, "only printable ASCII"},
		{"syntax error", "files: [\n", "", 4, "did not find expected node content"},
		{"not a mapping", "- name: demo\n", "", 1, "want a mapping, have a list"},
		{"two documents", "---\n" + recipeHead + "---\nname: other\n", "", 5, "more than one YAML document"},
		{"empty", "", "", 0, "empty document"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := writeFixture(t, dir, time.Now())
			text := tc.recipe
			if !strings.Contains(text, "name:") && tc.name != "empty" && tc.name != "not a mapping" {
				text = recipeHead + text
			}
			mustDo(t, os.WriteFile(path, []byte(text), 0o644))
			r, err := LoadRecipe(path)
			if err == nil {
				t.Fatalf("LoadRecipe(%q) = %+v, want an error", text, r)
			}
			var re *RecipeError
			if !errors.As(err, &re) {
				t.Fatalf("LoadRecipe(%q) = %v (%T), want a *RecipeError", text, err, err)
			}
			if re.Field != tc.wantField || re.Line != tc.wantLine || !strings.Contains(re.Err.Error(), tc.wantErr) {
				t.Errorf("LoadRecipe(%q) = %q (field %q line %d), want field %q line %d and %q",
					text, err, re.Field, re.Line, tc.wantField, tc.wantLine, tc.wantErr)
			}
			prefix := "recipe " + path + ":"
			if re.Line == 0 {
				prefix = "recipe " + path + ": "
			}
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("error %q does not start with %q", err, prefix)
			}
		})
	}
}

func TestRecipeErrorMessage(t *testing.T) {
	err := &RecipeError{File: "tiny.yaml", Line: 7, Field: "files[2].source", Err: os.ErrNotExist}
	if got, want := err.Error(), "recipe tiny.yaml:7: files[2].source: file does not exist"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("errors.Is(%v, os.ErrNotExist) = false, want true", err)
	}
}

// TestValidateAll checks that Validate reports every problem, not just the
// first, for a recipe built in code.
func TestValidateAll(t *testing.T) {
	r := &Recipe{Name: "x", Kernel: "/nonexistent/k", Files: []File{{Path: "a", Mode: "9"}}}
	err := r.Validate()
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		fields = append(fields, e.(*RecipeError).Field)
	}
	want := []string{"kernel", "base", "files[0].path", "files[0].mode", "files[0]"}
	if diff := cmp.Diff(want, fields); diff != "" {
		t.Errorf("Validate() fields (-want +got):\n%s\n%v", diff, err)
	}
}
