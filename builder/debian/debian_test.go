package debian

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidate(t *testing.T) {
	ok := Spec{Suite: "bookworm"}
	for _, tc := range []struct {
		name  string
		spec  Spec
		field string // "" for a valid spec
		value string
	}{
		{"minimal", ok, "", ""},
		{"full", Spec{
			Suite: "bookworm-backports", Packages: []string{"busybox-static", "libstdc++6", "g++", "python3.11"},
			Mirror: "https://mirror.example.org:8443/debian/", Variant: "minbase",
			Components: []string{"main", "non-free-firmware"}, Arch: "arm64", Slim: true, SourceDateEpoch: 1700000000,
		}, "", ""},
		{"empty suite", Spec{}, "Suite", ""},
		{"suite uppercase", Spec{Suite: "Bookworm"}, "Suite", "Bookworm"},
		{"suite option", Spec{Suite: "--variant=custom"}, "Suite", "--variant=custom"},
		{"suite path", Spec{Suite: "bookworm/updates"}, "Suite", "bookworm/updates"},
		{"package uppercase", Spec{Suite: "sid", Packages: []string{"vim", "Vim"}}, "Packages[1]", "Vim"},
		{"package one char", Spec{Suite: "sid", Packages: []string{"a"}}, "Packages[0]", "a"},
		{"package option", Spec{Suite: "sid", Packages: []string{"-oDebug=1"}}, "Packages[0]", "-oDebug=1"},
		{"package list", Spec{Suite: "sid", Packages: []string{"vim,emacs"}}, "Packages[0]", "vim,emacs"},
		{"package pattern", Spec{Suite: "sid", Packages: []string{"?essential"}}, "Packages[0]", "?essential"},
		{"package version", Spec{Suite: "sid", Packages: []string{"vim=2:9.0"}}, "Packages[0]", "vim=2:9.0"},
		{"package empty", Spec{Suite: "sid", Packages: []string{""}}, "Packages[0]", ""},
		{"variant unknown", Spec{Suite: "sid", Variant: "tiny"}, "Variant", "tiny"},
		{"variant custom", Spec{Suite: "sid", Variant: "custom"}, "Variant", "custom"},
		{"component space", Spec{Suite: "sid", Components: []string{"main contrib"}}, "Components[0]", "main contrib"},
		{"arch", Spec{Suite: "sid", Arch: "x86_64"}, "Arch", "x86_64"},
		{"mirror file", Spec{Suite: "sid", Mirror: "file:///srv/mirror/debian"}, "", ""},
		{"mirror file relative", Spec{Suite: "sid", Mirror: "file:srv/mirror"}, "Mirror", "file:srv/mirror"},
		{"mirror file host", Spec{Suite: "sid", Mirror: "file://server/srv/mirror"}, "Mirror", "file://server/srv/mirror"},
		{"mirror ftp", Spec{Suite: "sid", Mirror: "ftp://ftp.debian.org/debian"}, "Mirror", "ftp://ftp.debian.org/debian"},
		{"mirror no scheme", Spec{Suite: "sid", Mirror: "deb.debian.org/debian"}, "Mirror", "deb.debian.org/debian"},
		{"mirror deb line", Spec{Suite: "sid", Mirror: "deb http://deb.debian.org/debian sid main"}, "Mirror", "deb http://deb.debian.org/debian sid main"},
		{"mirror credentials", Spec{Suite: "sid", Mirror: "https://user:pw@example.org/debian"}, "Mirror", "https://user:pw@example.org/debian"},
		{"mirror query", Spec{Suite: "sid", Mirror: "https://example.org/debian?x=1"}, "Mirror", "https://example.org/debian?x=1"},
		{"mirror no host", Spec{Suite: "sid", Mirror: "http:///debian"}, "Mirror", "http:///debian"},
		{"epoch", Spec{Suite: "sid", SourceDateEpoch: -1}, "SourceDateEpoch", "-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.Validate()
			if tc.field == "" {
				if err != nil {
					t.Errorf("Validate(%+v) = %v, want nil", tc.spec, err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate(%+v) = %v, want a *FieldError", tc.spec, err)
			}
			if fe.Field != tc.field || fe.Value != tc.value {
				t.Errorf("Validate(%+v) = field %s value %q, want %s %q", tc.spec, fe.Field, fe.Value, tc.field, tc.value)
			}
			if !strings.Contains(err.Error(), "Spec."+tc.field) || !strings.Contains(err.Error(), `"`+tc.value+`"`) {
				t.Errorf("Validate(%+v) = %q, want it to name the field and value", tc.spec, err)
			}
		})
	}
	// Several bad fields are all reported.
	err := Spec{Suite: "X", Variant: "tiny"}.Validate()
	if err == nil || !strings.Contains(err.Error(), "Spec.Suite") || !strings.Contains(err.Error(), "Spec.Variant") {
		t.Errorf("Validate(two bad fields) = %v, want both named", err)
	}
}

func TestKey(t *testing.T) {
	base := Spec{Suite: "bookworm", Packages: []string{"busybox-static", "linux-image-cloud-amd64"}}
	// The same root: defaults spelled out, packages reordered or repeated.
	for _, same := range []Spec{
		{Suite: "bookworm", Packages: []string{"linux-image-cloud-amd64", "busybox-static", "busybox-static"}},
		{Suite: "bookworm", Packages: []string{"busybox-static", "linux-image-cloud-amd64"}, Variant: "apt", Arch: "amd64", Components: []string{"main", "main"}},
	} {
		if got, want := same.Key(), base.Key(); got != want {
			t.Errorf("Key(%+v) = %s, want %s as for %+v", same, got, want, base)
		}
	}
	// A different root: every field counts.
	seen := map[string]string{base.Key(): "base"}
	for name, other := range map[string]Spec{
		"suite":      {Suite: "trixie", Packages: base.Packages},
		"packages":   {Suite: "bookworm", Packages: []string{"busybox-static"}},
		"mirror":     {Suite: "bookworm", Packages: base.Packages, Mirror: "http://deb.debian.org/debian"},
		"mirror2":    {Suite: "bookworm", Packages: base.Packages, Mirror: "http://deb.debian.org/debian/"},
		"variant":    {Suite: "bookworm", Packages: base.Packages, Variant: "minbase"},
		"components": {Suite: "bookworm", Packages: base.Packages, Components: []string{"main", "contrib"}},
		"order":      {Suite: "bookworm", Packages: base.Packages, Components: []string{"contrib", "main"}},
		"arch":       {Suite: "bookworm", Packages: base.Packages, Arch: "arm64"},
		"slim":       {Suite: "bookworm", Packages: base.Packages, Slim: true},
		"epoch":      {Suite: "bookworm", Packages: base.Packages, SourceDateEpoch: 1},
	} {
		k := other.Key()
		if prev, ok := seen[k]; ok {
			t.Errorf("Key(%s spec) = Key(%s spec) = %s, want different", name, prev, k)
		}
		seen[k] = name
	}
	// The key is stable across releases of this package: if this changes,
	// bump keyVersion too, or caches serve roots built differently.
	if got, want := base.Key(), "166fb4287e4f0bd1b422c9eafeef16eba50597f240a470453db5763d39f492a8"; got != want {
		t.Errorf("Key(%+v) = %s, want %s", base, got, want)
	}
}

func TestArgs(t *testing.T) {
	s := Spec{
		Suite: "bookworm", Packages: []string{"vim", "busybox-static", "vim"}, Mirror: "http://deb.debian.org/debian",
		Components: []string{"main", "non-free-firmware"}, Slim: true,
	}.normalized()
	want := []string{
		"--mode=unshare", "--format=tar", "--variant=apt", "--architectures=amd64",
		"--components=main,non-free-firmware", "--include=busybox-static,vim",
		"--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
		"--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/info/*",
		"--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-include=/usr/share/locale/locale.alias",
		"--dpkgopt=path-exclude=/usr/share/lintian/*",
		"--customize-hook=" + customizeHook,
		"--", "bookworm", "-", "http://deb.debian.org/debian",
	}
	if diff := cmp.Diff(want, s.args("unshare")); diff != "" {
		t.Errorf("args() mismatch (-want +got):\n%s", diff)
	}
	// A file mirror is mounted into the root by mmdebstrap's hook.
	got := Spec{Suite: "sid", Mirror: "file:///srv/mirror"}.normalized().args("unshare")
	if diff := cmp.Diff([]string{
		"--mode=unshare", "--format=tar", "--variant=apt", "--architectures=amd64", "--components=main",
		"--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount",
		"--customize-hook=" + customizeHook, "--", "sid", "-", "file:///srv/mirror",
	}, got); diff != "" {
		t.Errorf("args() mismatch (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(fileMirrorHooks); err != nil {
		t.Logf("mmdebstrap's file-mirror-automount hooks are missing here: %v", err)
	}
	// No mirror: mmdebstrap picks its default; no packages: no --include.
	got = Spec{Suite: "sid"}.normalized().args("root")
	if diff := cmp.Diff([]string{
		"--mode=root", "--format=tar", "--variant=apt", "--architectures=amd64", "--components=main",
		"--customize-hook=" + customizeHook, "--", "sid", "-",
	}, got); diff != "" {
		t.Errorf("args() mismatch (-want +got):\n%s", diff)
	}
}

func TestMode(t *testing.T) {
	if _, err := (Options{Mode: "chroot"}).mode(); err == nil || !strings.Contains(err.Error(), `"chroot"`) {
		t.Errorf(`mode("chroot") = %v, want an error naming it`, err)
	}
	want := "auto"
	if os.Geteuid() == 0 {
		want = "unshare"
	}
	if got, err := (Options{}).mode(); got != want || err != nil {
		t.Errorf(`mode("") = %q, %v; want %q`, got, err, want)
	}
}

func TestLineWriter(t *testing.T) {
	var got []string
	w := &lineWriter{progress: func(l string) { got = append(got, l) }, log: discard()}
	for _, chunk := range []string{"I: one\nI: t", "wo\r\n", "", "E: three\nunfinished"} {
		w.Write([]byte(chunk))
	}
	if diff := cmp.Diff([]string{"I: one", "I: two", "E: three"}, got); diff != "" {
		t.Errorf("progress lines mismatch (-want +got):\n%s", diff)
	}
	if got, want := w.tail(), "I: one\nI: two\nE: three\nunfinished"; got != want {
		t.Errorf("tail() = %q, want %q", got, want)
	}
	for range 2 * tailLines {
		w.Write([]byte("x\n"))
	}
	if got, want := w.tail(), strings.TrimSuffix(strings.Repeat("x\n", tailLines), "\n"); got != want {
		t.Errorf("tail() = %q, want the last %d lines %q", got, tailLines, want)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/a\040b`: "/tmp/a b", `/plain`: "/plain", `/x\134y`: `/x\y`, `/bad\09`: `/bad\09`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPublish(t *testing.T) {
	dir := t.TempDir()
	partial, out := filepath.Join(dir, "p"), filepath.Join(dir, "out.tar")
	mustWrite(t, partial, "new")
	mustWrite(t, out, "old")
	if err := publish(partial, out); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("publish(over existing) = %v, want an error", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "old" {
		t.Errorf("publish(over existing) changed %s to %q", out, b)
	}
	os.Remove(out)
	if err := publish(partial, out); err != nil {
		t.Fatalf("publish() = %v", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "new" {
		t.Errorf("published %s = %q, want %q", out, b, "new")
	}
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Errorf("partial file still there after publish: %v", err)
	}
}

// TestRemoveWork mounts a tmpfs in a work directory, as a killed
// mmdebstrap in root mode leaves its bind mounts, and checks that
// removeWork detaches it before removing anything.
func TestRemoveWork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	work := t.TempDir()
	sub := filepath.Join(work, "mmdebstrap.x", "dev")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount here: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(sub, syscall.MNT_DETACH) })
	mustWrite(t, filepath.Join(sub, "null"), "host file")
	if m, err := mountsUnder(work); err != nil || len(m) != 1 || m[0] != sub {
		t.Fatalf("mountsUnder(%s) = %v, %v; want [%s]", work, m, err, sub)
	}
	if err := removeWork(work); err != nil {
		t.Fatalf("removeWork() = %v", err)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("removeWork() left %s: %v", work, err)
	}
}

func mustWrite(t *testing.T, name, body string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
