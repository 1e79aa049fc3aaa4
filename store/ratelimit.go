package store

import (
	"sync"
	"time"
)

// rateLimiter is a token bucket per client.
type rateLimiter struct {
	rate  float64 // tokens per second; 0 = unlimited
	burst float64
	mu    sync.Mutex
	b     map[string]*bucket
	// sweepAt is the number of buckets at which the next new client
	// first drops the idle ones.
	sweepAt int
}

// sweepClients is where sweeps of idle clients' buckets start.
const sweepClients = 100_000

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(max(burst, 1)), b: map[string]*bucket{}, sweepAt: sweepClients}
}

// allow takes one token for client, reporting false if none is left.
func (r *rateLimiter) allow(client string, now time.Time) bool {
	if r.rate <= 0 {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.b[client]
	if b == nil {
		if len(r.b) >= r.sweepAt {
			r.sweep(now)
		}
		b = &bucket{tokens: r.burst, last: now}
		r.b[client] = b
	}
	b.tokens = min(r.burst, b.tokens+now.Sub(b.last).Seconds()*r.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep forgets the clients whose buckets have refilled: a new bucket
// would be the same. The clients left were all limited within the last
// burst/rate seconds; the next sweep waits until there are twice as many.
func (r *rateLimiter) sweep(now time.Time) {
	for c, b := range r.b {
		if b.tokens+now.Sub(b.last).Seconds()*r.rate >= r.burst {
			delete(r.b, c)
		}
	}
	r.sweepAt = max(sweepClients, 2*len(r.b))
}
