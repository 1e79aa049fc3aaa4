package allocsvr

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seqd/seqd/internal/mclock"
)

// leaseTestClock is an mclock.Clock moved by hand.
type leaseTestClock struct{ now atomic.Int64 }

var _ mclock.Clock = (*leaseTestClock)(nil)

func (c *leaseTestClock) Now() time.Duration      { return time.Duration(c.now.Load()) }
func (c *leaseTestClock) set(d time.Duration)     { c.now.Store(int64(d)) }
func (c *leaseTestClock) advance(d time.Duration) { c.now.Add(int64(d)) }
func newLeaseTestClock(at time.Duration) *leaseTestClock {
	c := &leaseTestClock{}
	c.set(at)
	return c
}

func TestLeasesExtendNeverMovesBack(t *testing.T) {
	c := newLeaseTestClock(10 * time.Second)
	l := newLeases(c, 4)
	if l.valid() {
		t.Fatal("a new instance holds a lease before any renewal")
	}
	steps := []struct {
		send, lease time.Duration
		wantUntil   time.Duration
	}{
		{10 * time.Second, 3 * time.Second, 13 * time.Second},
		{11 * time.Second, 3 * time.Second, 14 * time.Second},
		// A late answer to an earlier renewal: its send time is older.
		{10500 * time.Millisecond, 3 * time.Second, 14 * time.Second},
		// A shorter lease from a reconfigured arbiter must not cut it short.
		{12 * time.Second, time.Second, 14 * time.Second},
		{12 * time.Second, 2 * time.Second, 14 * time.Second},
		{12 * time.Second, 2*time.Second + 1, 14*time.Second + 1},
	}
	for i, s := range steps {
		l.extend(s.send, s.lease)
		if got := time.Duration(l.until.Load()); got != s.wantUntil {
			t.Fatalf("step %d: extend(%v, %v): lease ends at %v, want %v", i, s.send, s.lease, got, s.wantUntil)
		}
	}
}

// TestLeasesValidUntilSendPlusLease: the lease is measured from the send
// time of the renewal, and ends exactly at send+lease.
func TestLeasesValidUntilSendPlusLease(t *testing.T) {
	c := newLeaseTestClock(0)
	l := newLeases(c, 1)
	send := 5 * time.Second
	c.set(send + 800*time.Millisecond) // the answer arrived 800 ms later
	l.extend(send, 3*time.Second)
	tests := []struct {
		at    time.Duration
		valid bool
		left  time.Duration
	}{
		{send + 800*time.Millisecond, true, 2200 * time.Millisecond},
		{send + 3*time.Second - 1, true, 1},
		{send + 3*time.Second, false, 0},
		{send + 4*time.Second, false, -time.Second},
	}
	for _, tc := range tests {
		c.set(tc.at)
		if got := l.valid(); got != tc.valid {
			t.Errorf("at %v: valid = %v, want %v", tc.at, got, tc.valid)
		}
		if got := l.remaining(); got != tc.left {
			t.Errorf("at %v: remaining = %v, want %v", tc.at, got, tc.left)
		}
	}
}

func TestLeasesRevoke(t *testing.T) {
	c := newLeaseTestClock(time.Second)
	l := newLeases(c, 2)
	l.extend(time.Second, time.Hour)
	l.owned[1].Store(3)
	if l.serving(1) != 3 {
		t.Fatal("setup: slot 1 not served")
	}
	l.revoke()
	if l.valid() || l.serving(1) != 0 {
		t.Fatal("still serving after revoke")
	}
	// A renewal after revoke starts a new lease.
	l.extend(2*time.Second, time.Second)
	if !l.valid() || l.serving(1) != 3 {
		t.Fatal("a renewal after revoke did not restore the lease")
	}
}

func TestLeasesServing(t *testing.T) {
	tests := []struct {
		name     string
		owned    uint64 // generation owned; 0 = not owned
		released uint64
		expired  bool
		want     uint64
	}{
		{"owned", 4, 0, false, 4},
		{"not owned", 0, 0, false, 0},
		{"released in an older generation", 4, 3, false, 4},
		{"released in this generation", 4, 4, false, 0},
		{"released in a newer generation", 4, 5, false, 0},
		{"lease ran out", 4, 0, true, 0},
		{"lease ran out and released", 4, 4, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newLeaseTestClock(time.Minute)
			l := newLeases(c, 3)
			l.extend(time.Minute, 2*time.Second)
			l.owned[2].Store(tc.owned)
			l.owned[0].Store(9) // a neighbour, never touched
			if tc.released > 0 {
				l.release(2, tc.released)
			}
			if tc.expired {
				c.advance(2 * time.Second)
			}
			if got := l.serving(2); got != tc.want {
				t.Errorf("serving(2) = %d, want %d", got, tc.want)
			}
			wantOwns := tc.owned != 0 && tc.released < tc.owned
			if got := l.owns(2, tc.owned); got != wantOwns {
				t.Errorf("owns(2, %d) = %v, want %v", tc.owned, got, wantOwns)
			}
			wantNeighbour := uint64(9)
			if tc.expired {
				wantNeighbour = 0
			}
			if got := l.serving(0); got != wantNeighbour {
				t.Errorf("serving(0) = %d, want %d: state leaked between slots", got, wantNeighbour)
			}
		})
	}
}

// TestLeasesNewGenerationAfterRelease: after handing a slot over in
// generation g, the instance serves it again only in a later generation.
func TestLeasesNewGenerationAfterRelease(t *testing.T) {
	c := newLeaseTestClock(0)
	l := newLeases(c, 1)
	l.extend(0, time.Hour)
	l.owned[0].Store(2)
	l.release(0, 2)
	if l.serving(0) != 0 || l.owns(0, 2) {
		t.Fatal("served after release")
	}
	l.owned[0].Store(5) // the slot came back in generation 5
	if l.serving(0) != 5 || !l.owns(0, 5) {
		t.Fatal("not served in the later generation")
	}
	if l.owns(0, 2) {
		t.Fatal("owns in a generation it no longer owns")
	}
}

func TestLeasesReleaseIsMonotonic(t *testing.T) {
	l := newLeases(newLeaseTestClock(0), 2)
	for _, g := range []uint64{3, 1, 7, 5, 7, 0} {
		l.release(1, g)
	}
	if got := l.released[1].Load(); got != 7 {
		t.Fatalf("released = %d after releasing 3, 1, 7, 5, 7, 0; want 7", got)
	}
	if got := l.released[0].Load(); got != 0 {
		t.Fatalf("slot 0 released = %d, want 0", got)
	}
}

// TestLeasesConcurrentMonotonic: concurrent extends and releases keep the
// maximum, under the race detector too.
func TestLeasesConcurrentMonotonic(t *testing.T) {
	l := newLeases(newLeaseTestClock(0), 1)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				v := uint64(w*500 + i)
				l.release(0, v)
				l.extend(time.Duration(v), time.Second)
			}
		}()
	}
	wg.Wait()
	if got, want := l.released[0].Load(), uint64(8*500-1); got != want {
		t.Errorf("released = %d, want the largest %d", got, want)
	}
	if got, want := time.Duration(l.until.Load()), time.Duration(8*500-1)+time.Second; got != want {
		t.Errorf("lease ends at %v, want %v", got, want)
	}
}

// A caller waiting on a raise gives up when the lease lapses, not when the
// raise RPC times out; a renewal meanwhile keeps it waiting.
func TestWaitLeasedEndsWithTheLease(t *testing.T) {
	c := mclock.New()
	l := newLeases(c, 1)
	l.extend(c.Now(), 100*time.Millisecond)
	done := make(chan struct{}) // a raise that has not finished
	start := time.Now()
	if err := waitLeased(t.Context(), l, done); err != errLeaseLapsed {
		t.Fatalf("waitLeased = %v, want errLeaseLapsed", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("gave up after %v; the lease was 100ms", d)
	}

	l.extend(c.Now(), 100*time.Millisecond)
	go func() {
		time.Sleep(50 * time.Millisecond)
		l.extend(c.Now(), 300*time.Millisecond) // a renewal lands
		time.Sleep(150 * time.Millisecond)
		close(done)
	}()
	if err := waitLeased(t.Context(), l, done); err != nil {
		t.Fatalf("waitLeased across a renewal = %v, want the raise's end", err)
	}
}
