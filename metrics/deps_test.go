package metrics

import (
	"testing"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestDependencies keeps metrics a leaf: it imports no kiln package, so
// that dhcp, tftp, fleet and web stay free to be wired to it from cmd.
func TestDependencies(t *testing.T) {
	testenv.ForbidImports(t, nil)
}
