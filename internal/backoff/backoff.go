// Package backoff computes jittered exponential retry delays.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff with full jitter.
type Policy struct {
	Base time.Duration // first delay's upper bound
	Max  time.Duration // cap on any delay
}

// Delay returns the delay before retry number attempt (0-based): a random
// duration in [d/2, d] where d = min(Max, Base*2^attempt).
func (p Policy) Delay(attempt int) time.Duration {
	d := p.Base
	for i := 0; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	if d > p.Max {
		d = p.Max
	}
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Sleep waits for Delay(attempt) or until ctx is done, whichever is first,
// and returns ctx.Err() in the second case.
func (p Policy) Sleep(ctx context.Context, attempt int) error {
	t := time.NewTimer(p.Delay(attempt))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
