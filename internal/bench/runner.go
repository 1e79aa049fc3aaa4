package bench

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Op performs one operation (one call, one pipeline, one CAS) and returns
// how many seqs it produced. Each worker calls its own Op from one
// goroutine, so an Op may keep per-worker state without locks.
type Op func(ctx context.Context) (seqs int, err error)

// Config shapes one run.
type Config struct {
	// Label names the run in the progress line.
	Label string
	// Duration of the measured phase.
	Duration time.Duration
	// Warmup runs the same load first, unmeasured.
	Warmup time.Duration
	// Rate, if positive, paces all workers together to about Rate ops/s.
	// A worker that falls behind its schedule starts the next op at once
	// and its latency counts from the scheduled time, so queueing behind a
	// slow call is measured (no coordinated omission).
	Rate float64
	// Progress, if set, shows a live line while the run lasts.
	Progress *Progress
	// Unit names what an Op's count counts in the progress line (default
	// "seq"; "msg" for sends, "event" for reads).
	Unit string
	// BeforeMeasure, if set, runs after the warm-up, just before the
	// measured phase starts (to snapshot server-side counters).
	BeforeMeasure func()
}

// Stats is what one measured phase produced.
type Stats struct {
	Ops, Seqs, Errors uint64
	// Start is when the measured phase began; it lasted Elapsed.
	Start   time.Time
	Elapsed time.Duration
	Latency *Histogram
	// ErrorSamples holds the most frequent distinct error messages.
	ErrorSamples []ErrorSample
	// Interrupted is set when ctx ended before the run did.
	Interrupted bool
	// CPU is the CPU time (user and system) the whole process used during
	// the measured phase: the load generator's, and an in-process
	// cluster's if there is one. 0 where it cannot be read.
	CPU time.Duration
}

// ErrorSample is one distinct error message and how often it was seen.
type ErrorSample struct {
	Message string `json:"message"`
	Count   uint64 `json:"count"`
}

const (
	maxDistinctErrors = 8 // per worker; the rest count as errors only
	maxErrorSamples   = 5
)

// worker holds one goroutine's measurements. The counters are atomics only
// so the progress line can read them; each has a single writer.
type worker struct {
	ops, seqs, errs atomic.Uint64
	hist            *Histogram
	errMsgs         map[string]uint64
	_               [64]byte // keep neighbours off this cache line
}

// Run drives every op in ops from its own goroutine, first for the warm-up
// and then for the measured duration. Errors are counted, never retried
// here. It returns early, with Interrupted set, when ctx ends.
func Run(ctx context.Context, cfg Config, ops []Op) (*Stats, error) {
	if len(ops) == 0 {
		return nil, errors.New("bench: no workers; concurrency must be at least 1")
	}
	if cfg.Duration <= 0 {
		return nil, fmt.Errorf("bench: duration %v must be positive", cfg.Duration)
	}
	if cfg.Warmup > 0 {
		if _, err := runPhase(ctx, cfg.Label+" (warm-up)", cfg.Warmup, cfg, ops); err != nil {
			return nil, err
		}
		if ctx.Err() != nil {
			return &Stats{Latency: NewHistogram(), Interrupted: true}, nil
		}
	}
	if cfg.BeforeMeasure != nil {
		cfg.BeforeMeasure()
	}
	cpu0, ok0 := processCPU()
	st, err := runPhase(ctx, cfg.Label, cfg.Duration, cfg, ops)
	if cpu1, ok1 := processCPU(); err == nil && ok0 && ok1 {
		st.CPU = cpu1 - cpu0
	}
	return st, err
}

func runPhase(ctx context.Context, label string, d time.Duration, cfg Config, ops []Op) (*Stats, error) {
	workers := make([]*worker, len(ops))
	for i := range workers {
		workers[i] = &worker{hist: NewHistogram(), errMsgs: map[string]uint64{}}
	}
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(len(ops)) / cfg.Rate * float64(time.Second))
		if interval <= 0 {
			interval = 1
		}
	}
	if cfg.Progress != nil {
		cfg.Progress.StartUnit(label, cfg.Unit, d, func() (ops, seqs, errs uint64) {
			for _, w := range workers {
				ops += w.ops.Load()
				seqs += w.seqs.Load()
				errs += w.errs.Load()
			}
			return
		})
	}
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for i, op := range ops {
		wg.Add(1)
		// Spread paced workers evenly over one interval.
		next := start.Add(interval * time.Duration(i) / time.Duration(len(ops)))
		go func() {
			defer wg.Done()
			workers[i].loop(ctx, op, end, next, interval)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if cfg.Progress != nil {
		cfg.Progress.Stop()
	}
	st := &Stats{Start: start, Elapsed: elapsed, Latency: NewHistogram(), Interrupted: ctx.Err() != nil}
	msgs := map[string]uint64{}
	for _, w := range workers {
		st.Ops += w.ops.Load()
		st.Seqs += w.seqs.Load()
		st.Errors += w.errs.Load()
		st.Latency.Merge(w.hist)
		for m, n := range w.errMsgs {
			msgs[m] += n
		}
	}
	for m, n := range msgs {
		st.ErrorSamples = append(st.ErrorSamples, ErrorSample{m, n})
	}
	sort.Slice(st.ErrorSamples, func(i, j int) bool {
		a, b := st.ErrorSamples[i], st.ErrorSamples[j]
		return a.Count > b.Count || a.Count == b.Count && a.Message < b.Message
	})
	if len(st.ErrorSamples) > maxErrorSamples {
		st.ErrorSamples = st.ErrorSamples[:maxErrorSamples]
	}
	return st, nil
}

func (w *worker) loop(ctx context.Context, op Op, end, next time.Time, interval time.Duration) {
	for {
		now := time.Now()
		if !now.Before(end) || ctx.Err() != nil {
			return
		}
		base := now
		if interval > 0 {
			if wait := next.Sub(now); wait > 0 {
				if !next.Before(end) {
					return
				}
				// Latency counts from when the op really starts: oversleeping
				// is the load generator's delay, not the system's.
				sleep(ctx, wait)
				base = time.Now()
			} else {
				// Behind schedule: the op waited in our queue since next.
				base = next
			}
			next = next.Add(interval)
		}
		seqs, err := op(ctx)
		done := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return // interrupted: not the system's error
			}
			w.errs.Add(1)
			if msg := err.Error(); w.errMsgs[msg] > 0 || len(w.errMsgs) < maxDistinctErrors {
				w.errMsgs[msg]++
			}
			continue
		}
		w.hist.Record(done.Sub(base))
		w.ops.Add(1)
		w.seqs.Add(uint64(seqs))
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
