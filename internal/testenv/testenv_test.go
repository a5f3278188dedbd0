package testenv

import (
	"fmt"
	"testing"
)

// recorder is a testing.TB that records the errors reported to it.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestForbidImports(t *testing.T) {
	// testenv imports no kiln package, but does import os.
	ForbidImports(t, nil, "net/http")
	r := &recorder{TB: t}
	ForbidImports(r, nil, "os", "net/http")
	want := "github.com/kiln-dev/kiln/internal/testenv depends on os"
	if len(r.errs) != 1 || r.errs[0] != want {
		t.Errorf("ForbidImports(nil, os, net/http) reported %q, want [%q]", r.errs, want)
	}
}
