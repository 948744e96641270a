//go:build !race

package edge

// raceSlowdown scales the loose latency bounds of tests (see race_test.go).
const raceSlowdown = 1
