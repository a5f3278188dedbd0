package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// CloudInit returns a command running identity/testdata/cloudinit-check.py
// with args, on Debian's cloud-init as make cloud-init unpacks it into
// .cache/cloud-init (or $KILN_CLOUD_INIT). root is the repository's root,
// relative to the test's directory (".." for a top-level package). It
// skips the test when cloud-init is not unpacked, and fails it in CI.
func CloudInit(t testing.TB, root string, args ...string) *exec.Cmd {
	t.Helper()
	dir := os.Getenv("KILN_CLOUD_INIT")
	if dir == "" {
		dir = filepath.Join(root, ".cache", "cloud-init")
	}
	pkgs, err := filepath.Abs(filepath.Join(dir, "root", "usr", "lib", "python3", "dist-packages"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pkgs, "cloudinit", "__init__.py")); err != nil {
		missing(t, "Debian's cloud-init is not unpacked (make cloud-init, identity/testdata/fetch-cloud-init.sh): %v", err)
	}
	// The system python3, whose dist-packages hold python3-yaml and the
	// rest: a python3 earlier in PATH (pyenv) would not have them.
	py := "/usr/bin/python3"
	NeedFile(t, py)
	cmd := exec.Command(py, append([]string{filepath.Join(root, "identity", "testdata", "cloudinit-check.py")}, args...)...)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+pkgs, "PYTHONDONTWRITEBYTECODE=1")
	return cmd
}
