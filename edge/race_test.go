//go:build race

package edge

// raceSlowdown scales the loose latency bounds of tests: the race detector
// makes the loops five to twenty times slower.
const raceSlowdown = 10
