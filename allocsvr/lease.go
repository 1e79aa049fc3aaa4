package allocsvr

import (
	"sync/atomic"
	"time"

	"github.com/seqd/seqd/internal/mclock"
)

// leases is the AllocSvr's view of what it may serve: one lease for the
// whole instance, and a generation per owned slot.
//
// The rule (WeChat's first): stop serving once the lease duration has passed
// since the *send* time of the last renewal that succeeded. The arbiter only
// moves slots after lease+margin past its own grant time, which is later
// than our send time.
type leases struct {
	clock mclock.Clock
	// until is the clock reading (ns) at which the lease runs out.
	until atomic.Int64
	// owned[slot] is the generation this instance owns the slot in; 0 = not owned.
	owned []atomic.Uint64
	// released[slot] is the highest generation handed over in a planned
	// move; a slot is never served again in a generation <= released.
	released []atomic.Uint64
}

func newLeases(clock mclock.Clock, numSlots uint32) *leases {
	return &leases{clock: clock, owned: make([]atomic.Uint64, numSlots), released: make([]atomic.Uint64, numSlots)}
}

// extend moves the lease end to send+lease, never backwards.
func (l *leases) extend(send, lease time.Duration) {
	end := int64(send + lease)
	for {
		cur := l.until.Load()
		if end <= cur || l.until.CompareAndSwap(cur, end) {
			return
		}
	}
}

// revoke ends the lease at once.
func (l *leases) revoke() { l.until.Store(0) }

// valid reports whether the lease has not run out.
func (l *leases) valid() bool { return int64(l.clock.Now()) < l.until.Load() }

// lapsed reports whether a lease once granted has run out without being
// revoked: the renewals may still win it back.
func (l *leases) lapsed() bool {
	u := l.until.Load()
	return u != 0 && int64(l.clock.Now()) >= u
}

// remaining returns how long the lease has left (negative if expired).
func (l *leases) remaining() time.Duration {
	return time.Duration(l.until.Load() - int64(l.clock.Now()))
}

// serving returns the generation in which slot may be served now, or 0.
func (l *leases) serving(slot uint32) uint64 {
	g := l.owned[slot].Load()
	if g == 0 || l.released[slot].Load() >= g || !l.valid() {
		return 0
	}
	return g
}

// owns reports whether slot is owned in gen and not handed over, lease
// aside: the hot path's re-check under the section lock, right after
// serving checked the lease.
func (l *leases) owns(slot uint32, gen uint64) bool {
	return l.owned[slot].Load() == gen && l.released[slot].Load() < gen
}

// release records a planned hand-over of slot in generation gen.
func (l *leases) release(slot uint32, gen uint64) {
	for {
		cur := l.released[slot].Load()
		if gen <= cur || l.released[slot].CompareAndSwap(cur, gen) {
			return
		}
	}
}
