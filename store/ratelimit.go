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
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(max(burst, 1)), b: map[string]*bucket{}}
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
		if len(r.b) > 100_000 {
			r.b = map[string]*bucket{} // forget idle clients rather than grow forever
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
