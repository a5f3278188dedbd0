package main

import (
	"net/netip"
	"testing"
)

func TestPool6(t *testing.T) {
	p := netip.MustParsePrefix("fd77::1/64")
	for _, tc := range []struct {
		spec, want string
		ok         bool
	}{
		{"", "fd77::1000-fd77::1fff", true},
		{"::10-::20", "fd77::10-fd77::20", true},
		{"fd77::5-fd77::9", "fd77::5-fd77::9", true},
		{"fd77::5", "", false},
		{"10.0.0.1-10.0.0.2", "", false},
	} {
		got, err := pool6(tc.spec, p)
		if (err == nil) != tc.ok || (tc.ok && got.String() != tc.want) {
			t.Errorf("pool6(%q) = %v, %v; want %s (ok %v)", tc.spec, got, err, tc.want, tc.ok)
		}
	}
}
