package tftp

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCleanPath(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means refused
	}{
		{"undionly.kpxe", "undionly.kpxe"},
		{"/undionly.kpxe", "undionly.kpxe"},
		{`pxelinux\01-52-54-00`, "pxelinux/01-52-54-00"},
		{`\boot\snponly.efi`, "boot/snponly.efi"},
		{"sub/./file", "sub/file"},
		{"sub/../file", "file"},
		{"sub//file", "sub/file"},
		{"sub/", "sub"},
		{"", ""},
		{"/", ""},
		{"//etc/passwd", ""},
		{"../secret", ""},
		{"/../secret", ""},
		{`\..\secret`, ""},
		{"sub/../../secret", ""},
		{"..", ""},
		{"a\x00b", ""},
	} {
		got, err := cleanPath(tc.in)
		if (err != nil) != (tc.want == "") {
			t.Errorf("cleanPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			continue
		}
		if err != nil && !errors.Is(err, ErrAccess) {
			t.Errorf("cleanPath(%q) error %v, want ErrAccess", tc.in, err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("cleanPath(%q) mismatch (-want +got):\n%s", tc.in, diff)
		}
	}
}

// pathFixture lays out a served root beside a secret it must not leak:
//
//	dir/secret
//	dir/root/file, sub/file, sub/dir/, inlink -> file,
//	  outlink -> ../secret, abslink -> dir/secret, fifo
func pathFixture(t testing.TB) (root, secret string) {
	t.Helper()
	dir := t.TempDir()
	root = filepath.Join(dir, "root")
	secret = filepath.Join(dir, "secret")
	writeFile(t, secret, []byte("secret"))
	writeFile(t, filepath.Join(root, "file"), []byte("file"))
	writeFile(t, filepath.Join(root, "sub", "file"), []byte("sub/file"))
	for _, err := range []error{
		os.Mkdir(filepath.Join(root, "sub", "dir"), 0o755),
		os.Symlink("file", filepath.Join(root, "inlink")),
		os.Symlink("../secret", filepath.Join(root, "outlink")),
		os.Symlink(secret, filepath.Join(root, "abslink")),
		syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return root, secret
}

// TestPaths requests each name from a running server with pin's client.
func TestPaths(t *testing.T) {
	root, secret := pathFixture(t)
	ts := startServer(t, Config{Root: root})
	for _, tc := range []struct {
		name, req string
		want      string // the content, or the error message the client sees
		wantErr   error
	}{
		{"plain", "file", "file", nil},
		{"leading slash", "/file", "file", nil},
		{"subdirectory", "sub/file", "sub/file", nil},
		{"backslashes", `\sub\file`, "sub/file", nil},
		{"symlink inside", "inlink", "file", nil},
		{"dotdot", "../secret", "access violation", ErrAccess},
		{"slash dotdot", "/../secret", "access violation", ErrAccess},
		{"absolute outside", secret, "file not found", ErrNotFound},
		{"double slash absolute", "/" + secret, "access violation", ErrAccess},
		{"climb through sub", "sub/../../secret", "access violation", ErrAccess},
		{"relative symlink out", "outlink", "access violation", ErrAccess},
		{"absolute symlink out", "abslink", "access violation", ErrAccess},
		{"directory", "sub/dir", "access violation", ErrAccess},
		{"root itself", ".", "access violation", ErrAccess},
		{"fifo", "fifo", "access violation", ErrAccess},
		{"missing", "missing", "file not found", ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := get(ts.client(t), tc.req)
			tr := ts.next(t)
			if tc.wantErr == nil {
				if err != nil || string(got) != tc.want {
					t.Errorf("get(%q) = %q, %v; want %q", tc.req, got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "secret") {
				t.Errorf("get(%q) = %q, %v; want error %q without detail", tc.req, got, err, tc.want)
			}
			if !errors.Is(tr.Err, tc.wantErr) {
				t.Errorf("get(%q) observed error %v, want %v", tc.req, tr.Err, tc.wantErr)
			}
		})
	}
}

// FuzzPath checks that any request name is refused or opens a regular file
// inside the root, never the secret beside it; and that cleanPath's output
// is local and a fixed point.
func FuzzPath(f *testing.F) {
	root, _ := pathFixture(f)
	s, err := New(Config{Root: root})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	var inside []fs.FileInfo // the regular files under root
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			fi, err := os.Stat(p)
			inside = append(inside, fi)
			return err
		}
		return err
	})
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, name string) {
		if p, err := cleanPath(name); err == nil {
			if !filepath.IsLocal(p) || strings.ContainsAny(p, "\\\x00") {
				t.Errorf("cleanPath(%q) = %q, not a local slash path", name, p)
			}
			if again, err := cleanPath(p); again != p || err != nil {
				t.Errorf("cleanPath(cleanPath(%q)) = %q, %v; want %q", name, again, err, p)
			}
		} else if !errors.Is(err, ErrAccess) {
			t.Errorf("cleanPath(%q) error %v, want ErrAccess", name, err)
		}

		file, _, err := s.open(name)
		if err != nil {
			if !errors.Is(err, ErrAccess) && !errors.Is(err, ErrNotFound) {
				t.Errorf("open(%q) = %v, want ErrAccess or ErrNotFound", name, err)
			}
			return
		}
		defer file.Close()
		fi, err := file.Stat()
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range inside {
			if os.SameFile(fi, in) {
				return
			}
		}
		t.Errorf("open(%q) opened %v, which is not a file inside the root", name, fi.Name())
	})
}
