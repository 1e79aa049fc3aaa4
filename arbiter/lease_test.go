package arbiter

import (
	"sync"
	"testing"
	"time"

	"github.com/seqd/seqd/internal/mclock"
)

// manualClock is an mclock.Clock that moves only when told to.
type manualClock struct {
	mu  sync.Mutex
	now time.Duration
}

var _ mclock.Clock = (*manualClock)(nil)

func (c *manualClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now += d
	c.mu.Unlock()
}

const (
	ltLease  = 3 * time.Second
	ltMargin = 500 * time.Millisecond
)

func newTestLeaseTable() (*leaseTable, *manualClock) {
	c := &manualClock{now: 100 * time.Second}
	return newLeaseTable(c, ltLease, ltMargin), c
}

var inst1 = instance{"n1", 1}

func TestLeaseExpiryBoundary(t *testing.T) {
	tests := []struct {
		name    string
		after   time.Duration // since the grant
		expired bool
	}{
		{"just granted", 0, false},
		{"lease passed, margin not", ltLease, false},
		{"one ns before lease+margin", ltLease + ltMargin - 1, false},
		{"exactly lease+margin", ltLease + ltMargin, true},
		{"long after", time.Hour, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lt, c := newTestLeaseTable()
			if !lt.grant(inst1) {
				t.Fatal("first grant refused")
			}
			c.advance(tc.after)
			if got := lt.sinceGrant(inst1); got != tc.after {
				t.Errorf("sinceGrant = %v, want %v", got, tc.after)
			}
			if lt.isExpired(inst1) {
				t.Fatal("isExpired declared an expiry; only expireIfDue may")
			}
			if got := lt.expireIfDue(inst1); got != tc.expired {
				t.Fatalf("expireIfDue after %v = %v, want %v", tc.after, got, tc.expired)
			}
			if got := lt.isExpired(inst1); got != tc.expired {
				t.Errorf("isExpired = %v after expireIfDue said %v", got, tc.expired)
			}
			if got := lt.mayGrant(inst1); got == tc.expired {
				t.Errorf("mayGrant = %v for expired=%v", got, tc.expired)
			}
			if got := lt.grant(inst1); got == tc.expired {
				t.Errorf("grant = %v for expired=%v", got, tc.expired)
			}
		})
	}
}

func TestLeaseGrantExtends(t *testing.T) {
	lt, c := newTestLeaseTable()
	lt.grant(inst1)
	for range 10 {
		c.advance(ltLease) // renewals every lease: never lease+margin apart
		if !lt.grant(inst1) {
			t.Fatal("renewal refused")
		}
		if lt.expireIfDue(inst1) {
			t.Fatal("expired right after a renewal")
		}
	}
	c.advance(ltLease + ltMargin - 1)
	if lt.expireIfDue(inst1) {
		t.Fatal("expired before lease+margin after the last renewal")
	}
	c.advance(1)
	if !lt.expireIfDue(inst1) {
		t.Fatal("not expired at lease+margin after the last renewal")
	}
}

// TestLeaseExpiryIsFinal: once declared, no grant, and no passage of time,
// brings the instance back; its slots may already have moved.
func TestLeaseExpiryIsFinal(t *testing.T) {
	lt, c := newTestLeaseTable()
	lt.grant(inst1)
	c.advance(ltLease + ltMargin)
	if !lt.expireIfDue(inst1) {
		t.Fatal("not expired")
	}
	for range 3 {
		if lt.mayGrant(inst1) || lt.grant(inst1) {
			t.Fatal("an expired instance was granted a lease")
		}
		c.advance(time.Second)
		if !lt.isExpired(inst1) || !lt.expireIfDue(inst1) {
			t.Fatal("expiry was undone")
		}
	}
	// A new incarnation of the same node is a new instance.
	inst2 := instance{"n1", 2}
	if !lt.grant(inst2) || lt.expireIfDue(inst2) {
		t.Fatal("the node's next incarnation inherited the old one's expiry")
	}
}

// TestLeaseGrantRaceWithExpiry: a grant that was confirmed before the
// expiry was declared, but recorded after, must fail.
func TestLeaseGrantRaceWithExpiry(t *testing.T) {
	lt, c := newTestLeaseTable()
	lt.grant(inst1)
	if !lt.mayGrant(inst1) {
		t.Fatal("mayGrant refused a live instance")
	}
	// ... leadership is confirmed with a quorum meanwhile ...
	c.advance(ltLease + ltMargin)
	lt.expireIfDue(inst1)
	if lt.grant(inst1) {
		t.Fatal("grant succeeded after the instance was declared expired")
	}
}

// TestLeaseUnknownInstance: an instance the table has never seen counts as
// granted when first seen, since an earlier leader may just have granted it.
func TestLeaseUnknownInstance(t *testing.T) {
	for _, first := range []struct {
		name string
		call func(lt *leaseTable) bool
	}{
		{"expireIfDue", func(lt *leaseTable) bool { return !lt.expireIfDue(inst1) }},
		{"isExpired", func(lt *leaseTable) bool { return !lt.isExpired(inst1) }},
		{"mayGrant", func(lt *leaseTable) bool { return lt.mayGrant(inst1) }},
		{"sinceGrant", func(lt *leaseTable) bool { return lt.sinceGrant(inst1) == 0 }},
	} {
		t.Run(first.name, func(t *testing.T) {
			lt, c := newTestLeaseTable()
			c.advance(time.Hour) // long after the table was made
			if !first.call(lt) {
				t.Fatal("first sight did not count as a grant now")
			}
			c.advance(ltLease + ltMargin - 1)
			if lt.expireIfDue(inst1) {
				t.Fatal("expired before lease+margin after first sight")
			}
			c.advance(1)
			if !lt.expireIfDue(inst1) {
				t.Fatal("not expired lease+margin after first sight")
			}
		})
	}
}

func TestLeaseReset(t *testing.T) {
	lt, c := newTestLeaseTable()
	old, stale := instance{"n1", 1}, instance{"n2", 1}
	lt.grant(old)
	lt.grant(stale)
	c.advance(ltLease)
	lt.grant(old)
	c.advance(ltMargin)
	if !lt.expireIfDue(stale) {
		t.Fatal("setup: n2 should have expired")
	}
	// A new term: nothing is known about past grants, so every instance
	// counts as granted at the reset, even one that looked overdue.
	c.advance(ltLease)
	lt.reset()
	if lt.leaderSince != c.Now() {
		t.Errorf("leaderSince = %v, want %v", lt.leaderSince, c.Now())
	}
	for _, i := range []instance{old, stale, {"n3", 7}} {
		if got := lt.sinceGrant(i); got != 0 {
			t.Errorf("%v: sinceGrant right after reset = %v, want 0", i, got)
		}
	}
	c.advance(ltLease + ltMargin - 1)
	for _, i := range []instance{old, stale} {
		if lt.expireIfDue(i) {
			t.Errorf("%v expired less than lease+margin after the reset", i)
		}
	}
	c.advance(1)
	for _, i := range []instance{old, stale} {
		if !lt.expireIfDue(i) {
			t.Errorf("%v not expired lease+margin after the reset", i)
		}
	}
}

func TestLeaseForget(t *testing.T) {
	lt, c := newTestLeaseTable()
	keep, drop := instance{"n1", 2}, instance{"n1", 1}
	lt.grant(keep)
	lt.grant(drop)
	c.advance(ltLease + ltMargin)
	lt.expireIfDue(drop)
	lt.forget(func(i instance) bool { return i == keep })
	if len(lt.inst) != 1 || lt.inst[keep] == nil {
		t.Fatalf("after forget the table holds %v, want only %v", lt.inst, keep)
	}
	// keep's grant time survives.
	if got := lt.sinceGrant(keep); got != ltLease+ltMargin {
		t.Errorf("sinceGrant(keep) = %v, want %v", got, ltLease+ltMargin)
	}
}

func TestLeaseTableConcurrentUse(t *testing.T) {
	lt, c := newTestLeaseTable()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := instance{"n", uint64(g % 3)}
			for range 200 {
				lt.mayGrant(i)
				lt.grant(i)
				lt.expireIfDue(i)
				lt.sinceGrant(i)
				c.advance(time.Millisecond)
			}
		}()
	}
	wg.Wait()
	// The last grant was at most lease+margin ago for none of them: time
	// moved 1.6 s in total, under lease+margin, so no one may have expired.
	for g := range 3 {
		if lt.isExpired(instance{"n", uint64(g)}) {
			t.Errorf("instance %d expired within one lease", g)
		}
	}
}
