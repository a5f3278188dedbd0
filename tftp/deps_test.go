package tftp

import (
	"testing"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestDeps keeps tftp protocol-only: it imports no other kiln package.
func TestDeps(t *testing.T) {
	testenv.ForbidImports(t, nil)
}
