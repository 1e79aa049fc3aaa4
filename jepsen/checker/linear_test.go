package checker

import (
	"math/rand/v2"
	"testing"
	"time"
)

func failed(client int, kind SeqKind, key uint64, start, end int) SeqOp {
	o := op(client, kind, key, start, end, 0)
	o.Err = "context deadline exceeded"
	return o
}

func TestLinearizable(t *testing.T) {
	tests := []struct {
		name string
		ops  []SeqOp
		want Verdict
	}{
		{"empty", nil, Pass},
		{"sequential", []SeqOp{op(1, Next, 1, 0, 1, 5), op(1, Next, 1, 2, 3, 6), op(1, Current, 1, 4, 5, 6)}, Pass},
		{"concurrent nexts return out of order", []SeqOp{op(1, Next, 1, 0, 10, 9), op(2, Next, 1, 1, 2, 5), op(3, Current, 1, 3, 4, 5)}, Pass},
		{"current ahead of every next (new owner's floor)", []SeqOp{op(1, Next, 1, 0, 1, 5), op(2, Current, 1, 2, 3, 200), op(1, Next, 1, 4, 5, 201)}, Pass},
		{"gaps", []SeqOp{op(1, Next, 1, 0, 1, 5), op(1, Next, 1, 2, 3, 5000)}, Pass},
		{"failed calls are possibly applied, never required", []SeqOp{op(1, Next, 1, 0, 1, 5), failed(2, Next, 1, 0, 9), failed(3, Current, 1, 2, 3), op(1, Next, 1, 4, 5, 6)}, Pass},
		{"keys are independent", []SeqOp{op(1, Next, 1, 0, 1, 100), op(2, Next, 2, 2, 3, 1)}, Pass},

		{"rollback", []SeqOp{op(1, Next, 1, 0, 1, 6), op(2, Next, 1, 2, 3, 5)}, Fail},
		{"duplicate", []SeqOp{op(1, Next, 1, 0, 1, 6), op(2, Next, 1, 0, 1, 6)}, Fail},
		{"current below a completed next", []SeqOp{op(1, Next, 1, 0, 1, 6), op(2, Current, 1, 2, 3, 5)}, Fail},
		{"next not above a completed current", []SeqOp{op(1, Current, 1, 0, 1, 9), op(2, Next, 1, 2, 3, 9)}, Fail},
		{"a failed next does not excuse a rollback", []SeqOp{op(1, Next, 1, 0, 1, 6), failed(2, Next, 1, 1, 4), op(3, Next, 1, 2, 3, 5)}, Fail},
		// Three segments (no call in flight at 2 or 5): the rollback is
		// only visible through the value carried from the first.
		{"rollback across quiet moments", []SeqOp{op(1, Next, 1, 0, 1, 10), op(1, Next, 1, 3, 4, 11), op(2, Next, 1, 6, 7, 9)}, Fail},
		{"read of the past across a quiet moment", []SeqOp{op(1, Next, 1, 0, 1, 10), op(2, Current, 1, 3, 4, 8)}, Fail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Linearizable(tt.ops, LinearizableOptions{})
			if r.Verdict != tt.want {
				t.Fatalf("verdict %s, want %s (anomalies %v)", r.Verdict, tt.want, r.Anomalies)
			}
			if (len(r.Anomalies) > 0) != (tt.want == Fail) {
				t.Fatalf("verdict %s with %d anomalies", r.Verdict, len(r.Anomalies))
			}
			for _, a := range r.Anomalies {
				if a.Kind != "nonlinearizable" || len(a.Ops) == 0 || a.Msg == "" {
					t.Fatalf("anomaly without operations or message: %+v", a)
				}
			}
		})
	}
}

func TestLinearizableNamesTheOperations(t *testing.T) {
	bad := op(2, Next, 7, 2, 3, 5)
	r := Linearizable([]SeqOp{op(1, Next, 7, 0, 1, 6), bad}, LinearizableOptions{})
	if len(r.Anomalies) != 1 {
		t.Fatalf("want one anomaly, got %v", r.Anomalies)
	}
	a := r.Anomalies[0]
	if a.Key != 7 {
		t.Errorf("anomaly on key %d, want 7", a.Key)
	}
	found := false
	for _, o := range a.Ops {
		found = found || o == bad
	}
	if !found {
		t.Errorf("the offending operation %v is not among %v", bad, a.Ops)
	}
}

// A search that cannot finish must say unknown, never pass.
func TestLinearizableUnknownIsNotPass(t *testing.T) {
	ops := []SeqOp{op(1, Next, 1, 0, 10, 5), op(2, Next, 1, 1, 11, 6), op(3, Next, 1, 2, 12, 7)}
	if r := Linearizable(ops, LinearizableOptions{Timeout: time.Nanosecond}); r.Verdict != Unknown || len(r.UnknownKeys) != 1 {
		t.Fatalf("expired timeout: verdict %s, unknown keys %v; want unknown", r.Verdict, r.UnknownKeys)
	}
	if r := Linearizable(ops, LinearizableOptions{MaxSegmentOps: 2}); r.Verdict != Unknown || len(r.Unknown) != 1 {
		t.Fatalf("segment over the limit: verdict %s (%v); want unknown", r.Verdict, r.Unknown)
	}
	// An anomaly elsewhere still fails the run.
	ops = append(ops, op(1, Next, 2, 0, 1, 6), op(2, Next, 2, 2, 3, 5))
	if r := Linearizable(ops, LinearizableOptions{MaxSegmentOps: 2}); r.Verdict != Fail {
		t.Fatalf("verdict %s, want fail", r.Verdict)
	}
}

func TestSegments(t *testing.T) {
	ops := []SeqOp{
		op(1, Next, 1, 0, 5, 3),
		op(2, Next, 1, 1, 2, 2),
		// quiet at 6
		op(1, Next, 1, 7, 8, 9),
		failed(2, Next, 1, 7, 12),
		op(1, Current, 1, 12, 13, 9), // touches the failed call's end: same segment
		// quiet at 14
		op(1, Next, 1, 15, 16, 10),
		op(3, Next, 2, 0, 1, 1),
	}
	segs := segments(ops)
	type want struct {
		key   uint64
		carry uint64
		first bool
		n     int
	}
	exp := []want{{1, 0, true, 2}, {1, 3, false, 3}, {1, 9, false, 1}, {2, 0, true, 1}}
	if len(segs) != len(exp) {
		t.Fatalf("%d segments, want %d: %+v", len(segs), len(exp), segs)
	}
	for i, w := range exp {
		s := segs[i]
		if s.key != w.key || s.carry != w.carry || s.first != w.first || len(s.ops) != w.n {
			t.Errorf("segment %d: key %d carry %d first %v ops %d; want %+v", i, s.key, s.carry, s.first, len(s.ops), w)
		}
	}
}

// randomHistory simulates clients calling a single-key allocator that is
// correct (bad=false) or, once, hands out a number from the past.
func randomHistory(rng *rand.Rand, bad bool) []SeqOp {
	var (
		ops     []SeqOp
		counter uint64
		now     int
	)
	type call struct {
		client int
		kind   SeqKind
		start  int
		value  uint64
		err    bool
	}
	var inflight []call
	badAt := rng.IntN(60)
	for step := 0; step < 80 || len(inflight) > 0; step++ {
		now++
		// At most five calls in flight: porcupine's search of a broken
		// history is exponential in the concurrency.
		if step < 80 && len(inflight) < 5 && rng.IntN(3) > 0 {
			c := call{client: rng.IntN(6), kind: Next, start: now}
			if rng.IntN(4) == 0 {
				c.kind = Current
			}
			// The operation takes effect at its start (a valid
			// linearization point); it returns later.
			switch {
			case c.kind == Next && rng.IntN(10) == 0:
				counter += uint64(rng.IntN(3)) // a failed call may or may not have allocated
				c.err = true
			case c.kind == Next:
				counter += 1 + uint64(rng.IntN(2))
				c.value = counter
			default:
				c.value = counter
			}
			if bad && step == badAt && counter > 3 {
				c.value = counter - 2
				if c.kind == Current {
					c.value = counter - 1
				}
			}
			inflight = append(inflight, c)
		}
		if len(inflight) > 0 && rng.IntN(3) > 0 {
			i := rng.IntN(len(inflight))
			c := inflight[i]
			inflight = append(inflight[:i], inflight[i+1:]...)
			o := SeqOp{Client: c.client, Key: 1, Kind: c.kind, Start: time.Duration(c.start), End: time.Duration(now), Value: c.value}
			if c.err {
				o.Err, o.Value = "timeout", 0
			}
			ops = append(ops, o)
		}
	}
	return ops
}

// For this model, a history is linearizable exactly when Unique and
// Realtime find nothing (a successful operation's value fixes its place
// in the order). So porcupine and the two fast checkers must agree on
// every history; on histories of a correct allocator all three pass.
func TestLinearizableAgreesWithUniqueAndRealtime(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	fails := 0
	for i := range 3000 {
		bad := i%2 == 1
		ops := randomHistory(rng, bad)
		lin := Linearizable(ops, LinearizableOptions{Timeout: 10 * time.Second}).Verdict
		fast := Worst(FromAnomalies(Unique(ops)), FromAnomalies(Realtime(ops)))
		if lin != fast {
			t.Fatalf("history %d: linearizable %s but unique+realtime %s:\n%v", i, lin, fast, ops)
		}
		if !bad && lin != Pass {
			t.Fatalf("history %d of a correct allocator: %s\n%v", i, lin, ops)
		}
		if lin == Fail {
			fails++
		}
	}
	if fails < 500 {
		t.Fatalf("only %d of 1500 broken histories failed; the generator hardly breaks anything", fails)
	}
}

func TestFailedOpsAreNotCheckedByUniqueAndRealtime(t *testing.T) {
	ops := []SeqOp{op(1, Next, 1, 0, 1, 6), failed(2, Next, 1, 2, 3), failed(3, Next, 1, 2, 3)}
	if as := append(Unique(ops), Realtime(ops)...); len(as) != 0 {
		t.Fatalf("failed calls (value 0) reported: %v", as)
	}
}

func TestWorst(t *testing.T) {
	cases := []struct {
		in   []Verdict
		want Verdict
	}{
		{nil, Pass},
		{[]Verdict{Pass, Pass}, Pass},
		{[]Verdict{Pass, Unknown}, Unknown},
		{[]Verdict{Unknown, Fail, Pass}, Fail},
	}
	for _, c := range cases {
		if got := Worst(c.in...); got != c.want {
			t.Errorf("Worst(%v) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestTrimKeepsEarliestAndCount(t *testing.T) {
	r := Result{Findings: []Finding{{At: 3}, {At: 1}, {At: 2}}}
	r.Trim(2)
	if r.Count != 3 || len(r.Findings) != 2 || r.Findings[0].At != 1 || r.Findings[1].At != 2 {
		t.Fatalf("after Trim(2): %+v", r)
	}
}

func TestFindingAtIsLastOpEnd(t *testing.T) {
	f := Anomaly{Kind: "realtime", Key: 1, Ops: []SeqOp{op(1, Next, 1, 0, 4, 6), op(2, Next, 1, 5, 9, 5)}}.Finding()
	if f.At != 9 || len(f.Ops) != 2 || f.Ops[1].Value != "5" {
		t.Fatalf("finding %+v", f)
	}
}
