// Package mclock is the monotonic clock that leases are measured on.
//
// Leases only compare durations on one machine, so they need a clock that
// never jumps, not wall time. The chaos harness can make one node's clock run
// fast or slow (SetRate) to show what the lease margin protects against.
package mclock

import (
	"sync"
	"sync/atomic"
	"time"
)

// Clock returns monotonic time since an arbitrary origin.
type Clock interface {
	Now() time.Duration
}

type segment struct {
	realStart time.Duration // real elapsed time when this rate took effect
	start     time.Duration // clock reading at that moment
	rate      float64
}

// Skewable is a monotonic clock whose rate can be changed while it runs. Its
// readings stay continuous and non-decreasing across rate changes.
type Skewable struct {
	origin time.Time
	seg    atomic.Pointer[segment]
	mu     sync.Mutex // serialises SetRate
	// last is the highest reading returned: a reader that loaded the old
	// rate just before a change could otherwise compute a reading above
	// the next reader's.
	last atomic.Int64
}

// New returns a clock running at the real rate.
func New() *Skewable {
	c := &Skewable{origin: time.Now()}
	c.seg.Store(&segment{rate: 1})
	return c
}

// Now implements Clock.
func (c *Skewable) Now() time.Duration {
	s := c.seg.Load()
	real := time.Since(c.origin)
	v := s.start + (real - s.realStart)
	if s.rate != 1 {
		v = s.start + time.Duration(float64(real-s.realStart)*s.rate)
	}
	for {
		l := c.last.Load()
		if int64(v) <= l {
			return time.Duration(l)
		}
		if c.last.CompareAndSwap(l, int64(v)) {
			return v
		}
	}
}

// SetRate makes the clock advance rate seconds per real second from now on.
// A rate <= 0 is ignored.
func (c *Skewable) SetRate(rate float64) {
	if rate <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.Now()
	c.seg.Store(&segment{realStart: time.Since(c.origin), start: now, rate: rate})
}

// Rate returns the current rate.
func (c *Skewable) Rate() float64 { return c.seg.Load().rate }

// Real is the process-wide clock roles use unless a test gives them another.
var Real = New()
