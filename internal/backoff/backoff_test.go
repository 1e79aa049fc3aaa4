package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDelayBounds(t *testing.T) {
	p := Policy{Base: 10 * time.Millisecond, Max: 300 * time.Millisecond}
	tests := []struct {
		attempt int
		d       time.Duration // the cap for this attempt
	}{
		{0, 10 * time.Millisecond},
		{1, 20 * time.Millisecond},
		{2, 40 * time.Millisecond},
		{4, 160 * time.Millisecond},
		{5, 300 * time.Millisecond}, // 320 capped
		{6, 300 * time.Millisecond},
		{63, 300 * time.Millisecond},
		{64, 300 * time.Millisecond},
		{1 << 30, 300 * time.Millisecond},
	}
	for _, tc := range tests {
		lo, hi := tc.d, time.Duration(0)
		for range 2000 {
			got := p.Delay(tc.attempt)
			if got < tc.d/2 || got > tc.d {
				t.Fatalf("Delay(%d) = %v, want within [%v, %v]", tc.attempt, got, tc.d/2, tc.d)
			}
			lo, hi = min(lo, got), max(hi, got)
		}
		// Jitter: the draws spread over the range, not one value.
		if hi-lo < tc.d/4 {
			t.Errorf("Delay(%d) drew only from [%v, %v]; want jitter across [%v, %v]", tc.attempt, lo, hi, tc.d/2, tc.d)
		}
	}
}

func TestDelayEdgeCases(t *testing.T) {
	tests := []struct {
		name   string
		p      Policy
		lo, hi time.Duration
	}{
		{"max below base caps", Policy{Base: time.Second, Max: 100 * time.Millisecond}, 50 * time.Millisecond, 100 * time.Millisecond},
		{"zero base", Policy{Max: time.Second}, 0, 0},
		{"1ns base", Policy{Base: 1, Max: 1}, 0, 1},
		{"base equals max", Policy{Base: 80 * time.Millisecond, Max: 80 * time.Millisecond}, 40 * time.Millisecond, 80 * time.Millisecond},
	}
	for _, tc := range tests {
		for _, attempt := range []int{0, 1, 10, 100} {
			for range 200 {
				if got := tc.p.Delay(attempt); got < tc.lo || got > tc.hi {
					t.Fatalf("%s: Delay(%d) = %v, want within [%v, %v]", tc.name, attempt, got, tc.lo, tc.hi)
				}
			}
		}
	}
}

func TestSleepReturnsOnCancel(t *testing.T) {
	p := Policy{Base: time.Hour, Max: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := p.Sleep(ctx, 3); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep on a cancelled context = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Sleep took %v on a cancelled context", d)
	}

	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer dcancel()
	if err := p.Sleep(dctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sleep past the deadline = %v, want DeadlineExceeded", err)
	}
}

func TestSleepWaitsTheDelay(t *testing.T) {
	p := Policy{Base: 20 * time.Millisecond, Max: 20 * time.Millisecond}
	start := time.Now()
	if err := p.Sleep(context.Background(), 0); err != nil {
		t.Fatalf("Sleep = %v", err)
	}
	if d := time.Since(start); d < 10*time.Millisecond {
		t.Fatalf("Sleep returned after %v, before the minimum delay of 10ms", d)
	}
}
