//go:build !race

package oci

// raceSlowdown scales time budgets; it is 1 without the race detector.
const raceSlowdown = 1
