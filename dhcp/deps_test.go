package dhcp

import (
	"testing"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestDependencies guards the import direction of ARCHITECTURE.md: dhcp
// holds protocol code and knows nothing of HTTP, templates or the packages
// above it; of kiln it may import only store.
func TestDependencies(t *testing.T) {
	testenv.ForbidImports(t, []string{"github.com/kiln-dev/kiln/store"},
		"net/http", "html/template", "text/template")
}
