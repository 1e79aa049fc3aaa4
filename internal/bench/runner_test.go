package bench

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunCountsOpsSeqsAndErrors(t *testing.T) {
	ops := make([]Op, 4)
	for i := range ops {
		calls := 0
		ops[i] = func(context.Context) (int, error) {
			calls++
			time.Sleep(100 * time.Microsecond)
			if calls%4 == 0 {
				return 0, errors.New("boom: section not owned")
			}
			return 3, nil
		}
	}
	st, err := Run(context.Background(), Config{Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond}, ops)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ops == 0 || st.Seqs != 3*st.Ops || st.Latency.Count() != st.Ops {
		t.Fatalf("ops %d seqs %d recorded %d: want seqs = 3·ops and one latency per op", st.Ops, st.Seqs, st.Latency.Count())
	}
	// Every fourth call fails: errors are about a third of the successes.
	if st.Errors < st.Ops/4 || st.Errors > st.Ops/2 {
		t.Fatalf("errors %d for %d ops, want about %d", st.Errors, st.Ops, st.Ops/3)
	}
	if len(st.ErrorSamples) != 1 || st.ErrorSamples[0].Message != "boom: section not owned" || st.ErrorSamples[0].Count != st.Errors {
		t.Fatalf("error samples %+v, want the one message counted %d times", st.ErrorSamples, st.Errors)
	}
	if st.Latency.Quantile(0.5) < 100*time.Microsecond {
		t.Fatalf("median %v is below the op's own 100µs sleep", st.Latency.Quantile(0.5))
	}
	if st.Elapsed < 300*time.Millisecond || st.Elapsed > time.Second {
		t.Fatalf("elapsed %v for a 300ms run", st.Elapsed)
	}
}

func TestRunPacesToRate(t *testing.T) {
	ops := make([]Op, 8)
	for i := range ops {
		ops[i] = func(context.Context) (int, error) { return 1, nil }
	}
	st, err := Run(context.Background(), Config{Duration: time.Second, Rate: 2000}, ops)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ops < 1800 || st.Ops > 2100 {
		t.Fatalf("%d ops in 1s at --rate 2000", st.Ops)
	}
}

func TestRunStopsWhenInterrupted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	ops := []Op{func(ctx context.Context) (int, error) {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond):
			return 1, nil
		}
	}}
	start := time.Now()
	st, err := Run(ctx, Config{Duration: time.Minute}, ops)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Interrupted || time.Since(start) > 5*time.Second {
		t.Fatalf("interrupted=%v after %v", st.Interrupted, time.Since(start))
	}
	if st.Errors != 0 {
		t.Fatalf("the cancelled call counted as %d errors; interruption is not the system's error", st.Errors)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	op := func(context.Context) (int, error) { return 1, nil }
	if _, err := Run(context.Background(), Config{Duration: time.Second}, nil); err == nil {
		t.Error("no workers: want an error")
	}
	if _, err := Run(context.Background(), Config{}, []Op{op}); err == nil {
		t.Error("zero duration: want an error")
	}
}

func TestResultJSONHasTheDocumentedFields(t *testing.T) {
	h := NewHistogram()
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	st := &Stats{Ops: 1000, Seqs: 16000, Errors: 2, Elapsed: 2 * time.Second, Latency: h}
	r := NewResult("seqd-batched", st, 64, 100_000, 16, 0)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"mode": "seqd-batched", "ops": 1000.0, "seq_per_sec": 8000.0, "errors": 2.0,
		"concurrency": 64.0, "keys": 100000.0, "duration_s": 2.0,
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	for k, exact := range map[string]float64{"p50_us": 500, "p99_us": 990, "p999_us": 999} {
		got, ok := m[k].(float64)
		if !ok || got < exact*0.99 || got > exact*1.01 {
			t.Errorf("%s = %v, want about %v", k, m[k], exact)
		}
	}
}

// BeforeMeasure runs once, after every warm-up op has returned and before
// the first measured one starts.
func TestBeforeMeasureRunsBetweenThePhases(t *testing.T) {
	var calls atomic.Int64
	var atCall int64 = -1
	ops := make([]Op, 3)
	for i := range ops {
		ops[i] = func(context.Context) (int, error) {
			calls.Add(1)
			time.Sleep(200 * time.Microsecond)
			return 1, nil
		}
	}
	hooks := 0
	st, err := Run(context.Background(), Config{Duration: 100 * time.Millisecond, Warmup: 200 * time.Millisecond,
		BeforeMeasure: func() { hooks++; atCall = calls.Load() }}, ops)
	if err != nil {
		t.Fatal(err)
	}
	if hooks != 1 || atCall <= 0 || calls.Load()-atCall != int64(st.Ops) {
		t.Fatalf("hook ran %d times at op %d; %d ops in all, %d measured: want once, between warm-up and measured ops",
			hooks, atCall, calls.Load(), st.Ops)
	}
}

func TestRunMeasuresTheProcessCPU(t *testing.T) {
	if _, ok := processCPU(); !ok {
		t.Skip("this platform does not give a process's CPU time")
	}
	// Two workers spinning for 300 ms use up to 0.6 s of CPU between them;
	// the lower bound leaves room for a machine busy with other tests.
	spin := func(context.Context) (int, error) {
		for end := time.Now().Add(time.Millisecond); time.Now().Before(end); {
		}
		return 1, nil
	}
	st, err := Run(context.Background(), Config{Duration: 300 * time.Millisecond}, []Op{spin, spin})
	if err != nil {
		t.Fatal(err)
	}
	if st.CPU < 30*time.Millisecond || st.CPU > 5*time.Second {
		t.Fatalf("CPU %v for two workers spinning 300 ms", st.CPU)
	}
}
