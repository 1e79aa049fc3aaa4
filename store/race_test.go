//go:build race

package store

// raceEnabled: the test binary runs under the race detector.
const raceEnabled = true
