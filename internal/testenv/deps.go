package testenv

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// ForbidImports guards the import direction of ARCHITECTURE.md for the
// package in the test's directory: it fails t for each package that one
// depends on, directly or not, that is another package of its module not
// listed in allowed, or that is listed in forbidden. Both list import
// paths. Test-only imports do not count.
func ForbidImports(t testing.TB, allowed []string, forbidden ...string) {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipping: go command not found")
	}
	out, err := exec.Command(goCmd, "list", "-f", `{{.ImportPath}} {{.Module.Path}} {{join .Deps " "}}`, ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	fields := strings.Fields(string(out))
	if len(fields) < 2 {
		t.Fatalf("go list -deps: unexpected output %q", out)
	}
	self, module, deps := fields[0], fields[1], fields[2:]
	for _, pkg := range deps {
		own := pkg == module || strings.HasPrefix(pkg, module+"/")
		if own && !slices.Contains(allowed, pkg) || slices.Contains(forbidden, pkg) {
			t.Errorf("%s depends on %s", self, pkg)
		}
	}
}
