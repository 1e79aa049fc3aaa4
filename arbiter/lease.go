package arbiter

import (
	"math/bits"
	"sync"
	"time"

	"github.com/seqd/seqd/internal/bugs"
	"github.com/seqd/seqd/internal/mclock"
)

// instance names one run of an AllocSvr: a restart is a new incarnation.
type instance struct {
	id  string
	inc uint64
}

// leaseTable is the leader's memory of lease grants. It is not in the FSM:
// grants are frequent, and a new leader cannot know the old leader's grant
// times anyway, so it starts by assuming every instance was granted just now
// (it waits one full lease before moving anything). That wait covers an
// earlier leader's grants only because every leader grants the same lease,
// the cluster's stored one (see leaseTimes): a new leader configured with a
// shorter lease, waiting its own, would move slots whose old owner still
// serves under the longer lease it was granted.
//
// The safety argument, on the leader's monotonic clock:
//   - an AllocSvr serves a slot only until send+lease, where send is when it
//     sent its last successful renewal, and send < the grant time recorded
//     here (grants are recorded after a quorum confirmed the leadership);
//   - an instance is declared expired only when now >= lastGrant+lease+margin,
//     and an expired instance is never granted again, so the declaration is
//     final;
//   - slots of an instance move without its cooperation only after it is
//     declared expired.
//
// So the old owner has stopped before the new owner starts, as long as the
// two clocks' rates differ by less than margin/lease.
type leaseTable struct {
	mu          sync.Mutex
	clock       mclock.Clock
	lease       time.Duration
	margin      time.Duration
	leaderSince time.Duration
	inst        map[instance]*instLease
}

type instLease struct {
	lastGrant time.Duration
	expired   bool
}

func newLeaseTable(clock mclock.Clock, lease, margin time.Duration) *leaseTable {
	return &leaseTable{clock: clock, lease: lease, margin: margin, inst: make(map[instance]*instLease)}
}

// reset forgets every grant; called when this arbiter becomes leader.
func (t *leaseTable) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.leaderSince = t.clock.Now()
	t.inst = make(map[instance]*instLease)
}

// setTimes sets the lease grants carry and the margin, once the leader
// knows the stored lease, before it grants or expires anything.
func (t *leaseTable) setTimes(lease, margin time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lease, t.margin = lease, margin
}

// getLocked returns the entry for i, creating it as if granted now: the
// leader cannot know whether an earlier leader granted i a lease moments ago.
func (t *leaseTable) getLocked(i instance) *instLease {
	l := t.inst[i]
	if l == nil {
		l = &instLease{lastGrant: t.clock.Now()}
		t.inst[i] = l
	}
	return l
}

// mayGrant is the cheap check before confirming leadership.
func (t *leaseTable) mayGrant(i instance) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.getLocked(i).expired
}

// grant records a grant made after leadership was confirmed. It fails if the
// instance was declared expired in the meantime.
func (t *leaseTable) grant(i instance) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.getLocked(i)
	if l.expired {
		return false
	}
	l.lastGrant = t.clock.Now()
	return true
}

// expireIfDue declares i expired if its lease has certainly run out, and
// reports whether it is expired.
func (t *leaseTable) expireIfDue(i instance) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.getLocked(i)
	if !l.expired && (t.clock.Now() >= l.lastGrant+t.lease+t.margin || bugs.Enabled(bugs.ServeMovedSectionEarly) && t.clock.Now() >= l.lastGrant+t.lease/2) {
		l.expired = true
	}
	return l.expired
}

// isExpired reports whether i has been declared expired.
func (t *leaseTable) isExpired(i instance) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.getLocked(i).expired
}

// sinceGrant returns how long ago i was last granted a lease.
func (t *leaseTable) sinceGrant(i instance) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.clock.Now() - t.getLocked(i).lastGrant
}

// forget drops entries for instances no longer in the registry.
func (t *leaseTable) forget(keep func(instance) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.inst {
		if !keep(i) {
			delete(t.inst, i)
		}
	}
}

// leaseTimes are the lease every grant carries, with the margin the leader
// adds before declaring an instance expired and the renew interval
// AllocSvrs are told.
type leaseTimes struct {
	lease, margin, renew time.Duration
}

// leaseTimes returns the times in force. The lease is the cluster's stored
// one, never this arbiter's configured one: a leader's wait before moving a
// slot must cover every lease an earlier leader may have granted, and it
// does only if they all grant the same. stored is false while the cluster
// has none (not created, or created by a build that did not store it);
// then the configured lease is returned, and no grant may be made with it.
//
// The margin and the renew interval keep their configured share of the
// lease: the margin is what covers clock-rate drift (margin/lease), and a
// renew interval past the stored lease would let every lease lapse.
func (a *Arbiter) leaseTimes() (lt leaseTimes, stored bool) {
	cfg := a.cfg
	lt = leaseTimes{lease: cfg.Lease, margin: cfg.LeaseMargin, renew: cfg.RenewInterval}
	l := a.fsm.Lease()
	if l <= 0 {
		return lt, false
	}
	if l != cfg.Lease {
		lt.lease = l
		lt.margin = scaleDuration(cfg.LeaseMargin, l, cfg.Lease, true)
		lt.renew = scaleDuration(cfg.RenewInterval, l, cfg.Lease, false)
	}
	return lt, true
}

// scaleDuration returns d*num/den, rounded up or down, for d < den (so
// the result fits; Validate sees to it) and num, den > 0.
func scaleDuration(d, num, den time.Duration, up bool) time.Duration {
	if d <= 0 {
		return d
	}
	hi, lo := bits.Mul64(uint64(d), uint64(num))
	q, r := bits.Div64(hi, lo, uint64(den))
	if up && r != 0 {
		q++
	}
	return time.Duration(q)
}
