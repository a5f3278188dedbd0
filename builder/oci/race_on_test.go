//go:build race

package oci

// raceSlowdown scales time budgets: the race detector makes archive/tar
// and compress several times slower.
const raceSlowdown = 5
