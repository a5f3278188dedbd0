package tftp

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps tftp protocol-only: it imports no other kiln package.
func TestDeps(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const self = "github.com/kiln-dev/kiln/tftp"
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/kiln-dev/kiln/") && dep != self {
			t.Errorf("tftp imports %s; it must not import other kiln packages", dep)
		}
	}
}
