package workload

import (
	"testing"
	"time"

	"github.com/seqd/seqd/jepsen/checker"
	"github.com/seqd/seqd/jepsen/nemesis"
)

func TestPickKeys(t *testing.T) {
	opt := NewAlloc(AllocOptions{}).opt
	hot, warm, cold := pickKeys(opt, 1)
	if len(hot) != opt.HotKeys || len(warm) != opt.WarmKeys || len(cold) != opt.ColdKeys {
		t.Fatalf("%d hot, %d warm, %d cold", len(hot), len(warm), len(cold))
	}
	slots := map[uint64]bool{}
	for _, k := range append(append([]uint64(nil), hot...), warm...) {
		slot := (k / opt.SectionSize) % 256
		if slots[slot] {
			t.Fatalf("two hot or warm keys share slot %d", slot)
		}
		slots[slot] = true
	}
	seen := map[uint64]bool{}
	for _, k := range append(append(append([]uint64(nil), hot...), warm...), cold...) {
		if k == 0 || seen[k] {
			t.Fatalf("key %d is zero or repeated", k)
		}
		seen[k] = true
	}
	_, _, again := pickKeys(opt, 1)
	_, _, other := pickKeys(opt, 2)
	if again[0] != cold[0] || other[0] == cold[0] {
		t.Fatal("cold keys do not follow the seed")
	}
}

func TestUnavailabilityIsTheLongestGapOverAFault(t *testing.T) {
	a := NewAlloc(AllocOptions{})
	a.rec = checker.NewRecorderAt(time.Now())
	a.hot, a.warm, _ = pickKeys(a.opt, 1)
	s := time.Second
	add := func(key uint64, end time.Duration, ok bool) {
		o := checker.SeqOp{Key: key, Kind: checker.Next, Start: end - time.Millisecond, End: end, Value: uint64(end)}
		if !ok {
			o.Err = "timeout"
		}
		a.rec.Add(o)
	}
	k, other := a.hot[0], a.warm[0]
	for _, t := range []time.Duration{s, 2 * s, 3 * s, 7 * s, 8 * s} {
		add(k, t, true)
		add(other, t, true)
	}
	add(k, 5*s, false) // failures do not end a gap
	add(other, 4*s, true)
	faults := []nemesis.Fault{{Kind: "kill", Target: "allocsvr", Start: 3500 * time.Millisecond, End: 4 * s}, {Kind: "pause", Target: "one", Start: 9 * s, End: 10 * s}}
	// Clock skew over the same stretch does not take the kill's gap.
	faults = append(faults, nemesis.Fault{Kind: "clock", Target: "leader", Start: 3600 * time.Millisecond, End: 6 * s})
	gaps := a.Unavailability(faults)
	if len(gaps) != 1 {
		t.Fatalf("gaps %+v; want one (no operation after the second fault)", gaps)
	}
	if g := gaps[0]; g.Key != k || g.From != 3*s || g.To != 7*s || g.Fault != "kill:allocsvr" {
		t.Fatalf("gap %+v; want key %d from 3s to 7s", g, k)
	}
}

func TestNew(t *testing.T) {
	if ws, missing, err := New("all", AllocOptions{}); err != nil || len(ws) != 2 || len(missing) != 0 || !NeedsStore(ws) {
		t.Fatalf("all: %d workloads, missing %v, %v", len(ws), missing, err)
	}
	if ws, _, err := New("messages", AllocOptions{}); err != nil || len(ws) != 1 || ws[0].Name() != "messages" {
		t.Fatalf("messages: %v %v", ws, err)
	}
	if ws, _, _ := New("alloc", AllocOptions{}); NeedsStore(ws) {
		t.Fatal("alloc alone asks for a message store")
	}
	if _, _, err := New("nope", AllocOptions{}); err == nil {
		t.Fatal("unknown workload accepted")
	}
}
