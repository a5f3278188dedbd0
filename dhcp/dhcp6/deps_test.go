package dhcp6

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies guards the import direction of ARCHITECTURE.md: dhcp6
// holds protocol code and knows nothing of HTTP, templates or the packages
// above it; of kiln it may import only store.
func TestDependencies(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipping: go command not found")
	}
	out, err := exec.Command(goCmd, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	allowed := map[string]bool{
		"github.com/kiln-dev/kiln/dhcp/dhcp6": true,
		"github.com/kiln-dev/kiln/store":      true,
	}
	for _, pkg := range strings.Fields(string(out)) {
		bad := strings.HasPrefix(pkg, "github.com/kiln-dev/kiln/") && !allowed[pkg]
		bad = bad || pkg == "net/http" || pkg == "html/template" || pkg == "text/template"
		if bad {
			t.Errorf("dhcp6 depends on %s", pkg)
		}
	}
}
