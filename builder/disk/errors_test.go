package disk

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestWriteErrors checks that bad specs fail with a clear error and
// leave nothing behind.
func TestWriteErrors(t *testing.T) {
	testenv.NeedTools(t, "mke2fs")
	root := makeRoot(t, time.Unix(0, 0), false)
	sparse := func(size int64) string {
		p := filepath.Join(t.TempDir(), "sparse")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bigRoot := t.TempDir()
	if err := os.Rename(sparse(1<<30), filepath.Join(bigRoot, "huge")); err != nil {
		t.Fatal(err)
	}
	fakeBin := t.TempDir()
	fake := "#!/bin/sh\necho 'fake mke2fs failure' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(fakeBin, "mke2fs"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name string
		edit func(s *Spec)
		ctx  context.Context
		path string // PATH, if set
		want string
	}{
		{name: "missing kernel", edit: func(s *Spec) { s.Kernel = "/nonexistent/vmlinuz" }, want: "reading boot file for /kiln/vmlinuz"},
		{name: "no kernel", edit: func(s *Spec) { s.Kernel = "" }, want: "disk spec has no kernel"},
		{name: "kernel is a directory", edit: func(s *Spec) { s.Kernel = root }, want: "is not a regular file"},
		{name: "missing initrd", edit: func(s *Spec) { s.Initrd = "/nonexistent/initrd" }, want: "reading boot file for /kiln/initrd"},
		{name: "missing bootloader", edit: func(s *Spec) { s.Bootloader = "/nonexistent/sd-boot.efi" }, want: "reading boot file for /EFI/BOOT/BOOTX64.EFI"},
		{name: "missing root", edit: func(s *Spec) { s.Root = "/nonexistent/root" }, want: "reading root directory"},
		{name: "root is a file", edit: func(s *Spec) { s.Root = s.Initrd }, want: "is not a directory"},
		{name: "no seed", edit: func(s *Spec) { s.Seed = nil }, want: "disk spec has no seed"},
		{name: "root= in cmdline", edit: func(s *Spec) { s.Cmdline = "quiet root=/dev/sda1" }, want: "already has root=/dev/sda1"},
		{name: "newline in cmdline", edit: func(s *Spec) { s.Cmdline = "quiet\nlinux /evil" }, want: "holds a line break"},
		{name: "negative slack", edit: func(s *Spec) { s.RootSlack = -1 }, want: "negative size"},
		{name: "ESP below FAT32 minimum", edit: func(s *Spec) { s.ESPSize = 10 * mib }, want: "below the FAT32 minimum"},
		{name: "boot files overflow ESP", edit: func(s *Spec) { s.ESPSize = 36 * mib; s.Initrd = sparse(30 * mib) }, want: "too small for"},
		{name: "root file over limit", edit: func(s *Spec) { s.Root = bigRoot; s.MaxSize = 512 * mib }, want: "has 1073741824 bytes, more than the image size limit of 536870912"},
		{name: "image over limit", edit: func(s *Spec) { s.MaxSize = 100 * mib }, want: "more than the limit of 104857600"},
		{name: "canceled", edit: func(*Spec) {}, ctx: canceled, want: "context canceled"},
		{name: "mke2fs fails", edit: func(*Spec) {}, path: fakeBin, want: "fake mke2fs failure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.path != "" {
				t.Setenv("PATH", tt.path+":"+os.Getenv("PATH"))
			}
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			s := testSpec(t, root)
			tt.edit(&s)
			dir := t.TempDir()
			err := Write(ctx, filepath.Join(dir, "disk.img"), s)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Write = %v, want an error with %q", err, tt.want)
			}
			if tt.ctx != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Write = %v, want context.Canceled", err)
			}
			if names := dirNames(t, dir); len(names) != 0 {
				t.Errorf("Write left %v behind", names)
			}
		})
	}
}

// TestWriteExisting checks that Write does not replace a file.
func TestWriteExisting(t *testing.T) {
	testenv.NeedTools(t, "mke2fs")
	dir := t.TempDir()
	out := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(out, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Write(context.Background(), out, testSpec(t, makeRoot(t, time.Unix(0, 0), false)))
	if err == nil || !strings.Contains(err.Error(), "file exists") {
		t.Errorf("Write = %v, want a file exists error", err)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "precious" {
		t.Errorf("after Write, %s holds %q, %v; want it untouched", out, b, err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"disk.img"}) {
		t.Errorf("Write left %v, want only disk.img", names)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}
