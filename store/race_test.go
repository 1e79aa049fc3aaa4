//go:build race

package store_test

// raceEnabled: the test binary runs under the race detector.
const raceEnabled = true
