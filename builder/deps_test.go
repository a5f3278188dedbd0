package builder

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps builder below the packages that serve images: it
// may use images, never web, dhcp, tftp, fleet or cmd.
func TestDependencies(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("no go binary: %v", err)
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const mod = "github.com/kiln-dev/kiln/"
	for _, dep := range strings.Fields(string(out)) {
		pkg, ok := strings.CutPrefix(dep, mod)
		if !ok {
			continue
		}
		switch strings.SplitN(pkg, "/", 2)[0] {
		case "builder", "images":
		default:
			t.Errorf("builder depends on %s; it may use only images", dep)
		}
	}
}
