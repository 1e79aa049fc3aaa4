package store

import (
	"fmt"
	"testing"
	"time"
)

// TestRateLimiterForgetsOnlyIdleClients: with many clients, the buckets
// that refilled are dropped; a client that is being limited stays limited.
// Before, the 100,001st client wiped every bucket, and with it every
// client's limit.
func TestRateLimiterForgetsOnlyIdleClients(t *testing.T) {
	r := newRateLimiter(10, 2)
	now := time.Unix(1000, 0)
	for r.allow("busy", now) {
	}
	for i := range sweepClients - 1 { // with the busy one, a full map
		r.allow(fmt.Sprint("idle", i), now.Add(-time.Minute)) // refilled by now
	}
	if r.allow("busy", now) {
		t.Fatal("the busy client got a token it had not earned")
	}
	r.allow("new", now) // the sweep
	if len(r.b) != 2 {
		t.Fatalf("%d buckets after the sweep, want the busy and the new client's", len(r.b))
	}
	if r.allow("busy", now) {
		t.Fatal("the sweep forgot a limited client's bucket")
	}
	if !r.allow("busy", now.Add(100*time.Millisecond)) {
		t.Fatal("the busy client's bucket does not refill")
	}
	// Clients all limited at once: none is dropped, and the map may grow
	// until the next sweep at twice its size.
	r = newRateLimiter(10, 1)
	for i := range sweepClients + 1 {
		r.allow(fmt.Sprint("c", i), now)
	}
	if len(r.b) != sweepClients+1 || r.sweepAt != 2*sweepClients {
		t.Fatalf("%d buckets, next sweep at %d; want %d and %d", len(r.b), r.sweepAt, sweepClients+1, 2*sweepClients)
	}
	if r.allow("c0", now) {
		t.Fatal("a limited client was forgotten")
	}
}
