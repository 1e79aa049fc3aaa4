// Package testwait is the tests' one way to wait for a condition.
package testwait

import (
	"testing"
	"time"
)

// For polls cond every 10 ms until it holds, and fails the test if it
// does not within d.
func For(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
