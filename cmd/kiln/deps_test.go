package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyDirection keeps imports pointing down ARCHITECTURE.md's
// table: protocol packages know nothing of HTTP or the fleet, identity is
// pure, images never imports builder, and nothing imports web or cmd.
func TestDependencyDirection(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go command not on PATH")
	}
	const mod = "github.com/kiln-dev/kiln/"
	bad := map[string][]string{
		"store":      {"images", "fleet", "identity", "dhcp", "tftp", "web", "builder", "cmd/kiln"},
		"images":     {"builder", "fleet", "dhcp", "tftp", "web", "cmd/kiln"},
		"identity":   {"store", "images", "fleet", "dhcp", "tftp", "web", "builder", "cmd/kiln"},
		"fleet":      {"dhcp", "tftp", "web", "builder", "cmd/kiln"},
		"dhcp":       {"web", "tftp", "fleet", "images", "builder", "cmd/kiln"},
		"tftp":       {"web", "dhcp", "fleet", "images", "builder", "store", "cmd/kiln"},
		"builder":    {"web", "dhcp", "tftp", "fleet", "store", "cmd/kiln"},
		"web":        {"dhcp", "tftp", "builder", "cmd/kiln"},
		"metrics":    {"store", "images", "identity", "fleet", "dhcp", "dhcp/dhcp6", "tftp", "web", "builder", "cmd/kiln"},
		"dhcp/dhcp6": {"web", "tftp", "fleet", "images", "builder", "cmd/kiln"},
	}
	for pkg, forbidden := range bad {
		out, err := exec.Command("go", "list", "-deps", mod+pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		deps := map[string]bool{}
		for _, d := range strings.Fields(string(out)) {
			deps[d] = true
		}
		for _, f := range forbidden {
			if deps[mod+f] {
				t.Errorf("%s imports %s (directly or not); see ARCHITECTURE.md", pkg, f)
			}
		}
	}
}
