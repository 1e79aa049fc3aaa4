package mclock

import (
	"sync"
	"testing"
	"time"
)

// measure reads the clock across at least real time d, bracketing each
// reading with real time, and returns the clock's advance with the
// shortest and longest real intervals it can correspond to.
func measure(c *Skewable, d time.Duration) (advance, realMin, realMax time.Duration) {
	r0 := time.Now()
	c0 := c.Now()
	r1 := time.Now()
	for time.Since(r1) < d {
		// Busy-wait: the point is to let real time pass, not to wait for
		// an event.
	}
	r2 := time.Now()
	c1 := c.Now()
	r3 := time.Now()
	return c1 - c0, r2.Sub(r1), r3.Sub(r0)
}

func TestRateApplied(t *testing.T) {
	for _, rate := range []float64{1, 0.5, 2, 10, 0.01} {
		c := New()
		c.SetRate(rate)
		if got := c.Rate(); got != rate {
			t.Fatalf("Rate() = %v after SetRate(%v)", got, rate)
		}
		adv, lo, hi := measure(c, 20*time.Millisecond)
		// Allow for float rounding of the scaled durations.
		wantLo := time.Duration(float64(lo)*rate) - time.Microsecond
		wantHi := time.Duration(float64(hi)*rate) + time.Microsecond
		if adv < wantLo || adv > wantHi {
			t.Errorf("rate %v: clock advanced %v over real %v..%v, want %v..%v", rate, adv, lo, hi, wantLo, wantHi)
		}
	}
}

func TestSetRateIgnoresNonPositive(t *testing.T) {
	c := New()
	c.SetRate(3)
	for _, bad := range []float64{0, -1} {
		c.SetRate(bad)
		if got := c.Rate(); got != 3 {
			t.Fatalf("SetRate(%v) changed the rate to %v", bad, got)
		}
	}
}

// TestMonotonicAcrossSetRate: in one goroutine, readings never go back
// however the rate changes.
func TestMonotonicAcrossSetRate(t *testing.T) {
	c := New()
	rates := []float64{0.001, 1000, 1, 0.5, 7, 0.01, 100, 1e6, 1e-6}
	last := c.Now()
	for i := range 20000 {
		c.SetRate(rates[i%len(rates)])
		now := c.Now()
		if now < last {
			t.Fatalf("after SetRate(%v) the clock went back by %v", rates[i%len(rates)], last-now)
		}
		last = now
	}
}

// TestMonotonicAcrossSetRateConcurrentReaders: readers on other
// goroutines must not see the clock go back while the rate changes.
func TestMonotonicAcrossSetRateConcurrentReaders(t *testing.T) {
	c := New()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan time.Duration, 8)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := c.Now()
			for {
				select {
				case <-stop:
					return
				default:
				}
				now := c.Now()
				if now < last {
					errs <- last - now
					return
				}
				last = now
			}
		}()
	}
	for i := range 200000 {
		c.SetRate([]float64{2, 0.5}[i%2])
	}
	close(stop)
	wg.Wait()
	close(errs)
	for back := range errs {
		t.Fatalf("a reader saw the clock go back by %v", back)
	}
}

// TestSetRateIsContinuous: a rate change does not jump the reading.
func TestSetRateIsContinuous(t *testing.T) {
	c := New()
	c.SetRate(1000)
	measure(c, 2*time.Millisecond) // get well away from zero
	r0 := time.Now()
	before := c.Now()
	c.SetRate(0.001)
	after := c.Now()
	elapsed := time.Since(r0)
	// Over the change the clock can advance at most 1000x real time.
	if after < before || after-before > 1000*elapsed+time.Microsecond {
		t.Fatalf("reading jumped from %v to %v over %v of real time", before, after, elapsed)
	}
}

func TestRealClockAdvances(t *testing.T) {
	a := Real.Now()
	adv, _, _ := measure(New(), time.Millisecond)
	if adv < time.Millisecond {
		t.Fatalf("a rate-1 clock advanced %v over at least 1ms", adv)
	}
	if b := Real.Now(); b < a {
		t.Fatalf("Real went back: %v -> %v", a, b)
	}
}
