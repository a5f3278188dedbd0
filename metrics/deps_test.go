package metrics

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps metrics a leaf: it imports no kiln package, so
// that dhcp, tftp, fleet and web stay free to be wired to it from cmd.
func TestDependencies(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipping: go command not found")
	}
	out, err := exec.Command(goCmd, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/kiln-dev/kiln/") && pkg != "github.com/kiln-dev/kiln/metrics" {
			t.Errorf("metrics depends on %s", pkg)
		}
	}
}
