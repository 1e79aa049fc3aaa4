//go:build race

package store

// raceEnabled: whether the test binary runs under the race detector.
const raceEnabled = true
