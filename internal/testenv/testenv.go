// Package testenv is what kiln's tests share about the machine they run
// on: the Debian tools, files and privileges a test needs. A missing one
// skips the test on a developer's machine and fails it in CI (CI=true),
// where `make deps` has installed everything and a skip would hide a
// broken setup.
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// InCI reports whether the tests run in CI, where nothing may be skipped
// for a missing dependency.
func InCI() bool { return os.Getenv("CI") == "true" }

// missing skips t, or fails it in CI, naming what is missing.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...) + " (make deps installs it)"
	if InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// LookTool finds a tool in PATH, then in /usr/sbin and /sbin (mke2fs,
// fsck.vfat and sfdisk live there, outside a non-root user's PATH).
func LookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not in PATH, /usr/sbin or /sbin", name)
}

// NeedTool returns the path of the tool name.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := LookTool(name)
	if err != nil {
		missing(t, "tool %s is missing: %v", name, err)
	}
	return p
}

// NeedTools checks for several tools.
func NeedTools(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		NeedTool(t, name)
	}
}

// NeedFile checks that the host file p exists.
func NeedFile(t testing.TB, p string) {
	t.Helper()
	if _, err := os.Stat(p); err != nil {
		missing(t, "need %s: %v", p, err)
	}
}

// NeedRoot checks that the test runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "this test must run as root")
	}
}

// SyncBuffer is a bytes.Buffer that a logger and a test may use at once.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
