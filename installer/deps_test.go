package installer

import (
	"testing"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestDeps: the installer ships in every install initramfs; it stays
// small and depends on no other kiln package.
func TestDeps(t *testing.T) {
	testenv.ForbidImports(t, nil)
}
