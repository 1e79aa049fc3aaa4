// Package checker decides whether a recorded history of operations kept
// seqd's guarantees, and names the operations involved when it did not.
package checker

import (
	"fmt"
	"sort"
	"time"
)

// SeqKind is the kind of a sequence operation.
type SeqKind uint8

const (
	// Next allocates: its value must exceed everything completed before it.
	Next SeqKind = iota + 1
	// Current reads the watermark: at least everything completed before it,
	// and every Next that starts after it completes must exceed it.
	Current
)

func (k SeqKind) String() string {
	switch k {
	case Next:
		return "next"
	case Current:
		return "current"
	}
	return "unknown"
}

// SeqOp is one operation on one key. Start and End are readings of one
// monotonic clock (the recorder's). Err is empty for an operation that
// succeeded. A failed or timed-out operation (Err set) is indeterminate: it
// may or may not have taken effect, and its Value means nothing. Unique and
// Realtime check only the operations that succeeded; Linearizable keeps the
// indeterminate ones in the history as possibly applied.
type SeqOp struct {
	Client int
	Key    uint64
	Kind   SeqKind
	Start  time.Duration
	End    time.Duration
	Value  uint64
	Err    string
}

// OK reports whether the operation succeeded.
func (o SeqOp) OK() bool { return o.Err == "" }

func (o SeqOp) String() string {
	if !o.OK() {
		return fmt.Sprintf("client %d %s(%d)=? [%v, %v] failed: %s", o.Client, o.Kind, o.Key, o.Start, o.End, o.Err)
	}
	return fmt.Sprintf("client %d %s(%d)=%d [%v, %v]", o.Client, o.Kind, o.Key, o.Value, o.Start, o.End)
}

// Anomaly is one violation, with the operations that show it.
type Anomaly struct {
	Kind string // "duplicate", "realtime" or "nonlinearizable"
	Key  uint64
	Ops  []SeqOp
	Msg  string
	// At is when the anomaly became visible, if no operation in Ops says
	// (the acknowledgement of a message that was lost, say); 0 if unknown.
	At time.Duration
}

func (a Anomaly) String() string { return a.Kind + ": " + a.Msg }

// byKey groups operations by key.
func byKey(ops []SeqOp) map[uint64][]SeqOp {
	m := map[uint64][]SeqOp{}
	for _, o := range ops {
		m[o.Key] = append(m[o.Key], o)
	}
	return m
}

// succeeded keeps the operations that succeeded: only their values are known.
func succeeded(ops []SeqOp) []SeqOp {
	out := make([]SeqOp, 0, len(ops))
	for _, o := range ops {
		if o.OK() {
			out = append(out, o)
		}
	}
	return out
}

// sortedKeys returns map keys in order, so reports are stable.
func sortedKeys[V any](m map[uint64]V) []uint64 {
	keys := make([]uint64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

// Unique reports every seq that Next returned more than once for one key
// (Jepsen's unique-ids checker, per key).
func Unique(ops []SeqOp) []Anomaly {
	var out []Anomaly
	groups := byKey(succeeded(ops))
	for _, k := range sortedKeys(groups) {
		seen := map[uint64]SeqOp{}
		for _, o := range groups[k] {
			if o.Kind != Next {
				continue
			}
			if first, dup := seen[o.Value]; dup {
				out = append(out, Anomaly{Kind: "duplicate", Key: k, Ops: []SeqOp{first, o},
					Msg: fmt.Sprintf("key %d: seq %d returned twice: %v and %v", k, o.Value, first, o)})
				continue
			}
			seen[o.Value] = o
		}
	}
	return out
}

// Realtime reports every pair where an operation that completed before
// another started does not order below it: a Next must return more than
// every operation completed before it started, a Current at least as much.
// This is G1 stated over wall-clock order.
func Realtime(ops []SeqOp) []Anomaly {
	var out []Anomaly
	groups := byKey(succeeded(ops))
	for _, k := range sortedKeys(groups) {
		g := groups[k]
		byEnd := append([]SeqOp(nil), g...)
		sort.Slice(byEnd, func(i, j int) bool { return byEnd[i].End < byEnd[j].End })
		byStart := append([]SeqOp(nil), g...)
		sort.Slice(byStart, func(i, j int) bool { return byStart[i].Start < byStart[j].Start })
		// Sweep by start time, folding in every op that ended strictly
		// before it: best is the largest value among them.
		var best SeqOp
		have := false
		j := 0
		for _, b := range byStart {
			for j < len(byEnd) && byEnd[j].End < b.Start {
				if !have || byEnd[j].Value > best.Value {
					best, have = byEnd[j], true
				}
				j++
			}
			if !have {
				continue
			}
			bad := b.Value <= best.Value
			if b.Kind == Current {
				bad = b.Value < best.Value
			}
			if bad {
				out = append(out, Anomaly{Kind: "realtime", Key: k, Ops: []SeqOp{best, b},
					Msg: fmt.Sprintf("key %d: %v completed before %v started, but got a value not below it", k, best, b)})
			}
		}
	}
	return out
}
