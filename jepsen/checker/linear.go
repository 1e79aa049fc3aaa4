package checker

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// The sequential model of one key, for porcupine. The state is the last
// value the key showed: the number of the last Next, or a Current's reading
// (after a move the new owner reports its floor, which may exceed every
// Next seen so far).
//
//   - Next returning v is legal iff v > state; the state becomes v.
//   - Current returning c is legal iff c >= state; the state becomes c.
//   - A failed or timed-out call is indeterminate. If it took effect, a Next
//     raised the state to some unknown value above it and a Current changed
//     nothing. Leaving the state alone is always the most permissive
//     choice (every later step only asks for values above the state), so the
//     model steps it as a no-op. Because a no-op fits anywhere inside its
//     interval, its end time cannot change the verdict either: it keeps the
//     time the client gave up, where etcd's robustness suite has to give
//     failed writes an open end. That keeps the search small.
//   - A carry step starts a later segment of a key's history (see segments)
//     at the largest value the earlier segments showed.

type linInput struct {
	kind  SeqKind
	key   uint64
	carry bool
}

type linOutput struct {
	value  uint64
	failed bool
	err    string
}

var seqModel = porcupine.Model{
	Init: func() any { return uint64(0) },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(uint64), input.(linInput), output.(linOutput)
		switch {
		case in.carry:
			return out.value >= s, out.value
		case out.failed:
			return true, s
		case in.kind == Next:
			return out.value > s, out.value
		default:
			return out.value >= s, out.value
		}
	},
	Hash: func(state any) uint64 { return state.(uint64) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		switch {
		case in.carry:
			return fmt.Sprintf("carry(%d) = %d", in.key, out.value)
		case out.failed:
			return fmt.Sprintf("%s(%d) = ? (%s)", in.kind, in.key, out.err)
		}
		return fmt.Sprintf("%s(%d) = %d", in.kind, in.key, out.value)
	},
	DescribeState: func(state any) string { return fmt.Sprint(state.(uint64)) },
}

// segment is a stretch of one key's history with no operation in flight
// across its ends, so it can be checked alone. carry is the largest value
// the key showed before it.
type segment struct {
	key   uint64
	carry uint64
	first bool
	ops   []SeqOp
}

// segments splits each key's history where no operation is in flight.
// Every operation before such a point precedes every one after it, so a
// linearization of the whole is one of the first part followed by one of
// the second, and the model's state between them is the largest value
// before the point (values never decrease along a legal linearization).
// Checking the parts separately, each starting from that value, therefore
// gives exactly the verdict of checking the whole, at a fraction of the
// cost: porcupine's search is roughly quadratic in a partition's length.
func segments(ops []SeqOp) []segment {
	var out []segment
	groups := byKey(ops)
	for _, k := range sortedKeys(groups) {
		g := groups[k]
		sort.SliceStable(g, func(i, j int) bool { return g[i].Start < g[j].Start })
		var (
			cur     = segment{key: k, first: true}
			maxEnd  time.Duration
			highest uint64
		)
		for i, o := range g {
			if i > 0 && o.Start > maxEnd {
				out = append(out, cur)
				cur = segment{key: k, carry: highest}
			}
			cur.ops = append(cur.ops, o)
			maxEnd = max(maxEnd, o.End)
			if o.OK() {
				highest = max(highest, o.Value)
			}
		}
		out = append(out, cur)
	}
	return out
}

// carryClient is the porcupine client id of carry steps.
const carryClient = 0

// history turns a segment into porcupine operations; client ids are shifted
// by one to leave 0 to carry steps.
func (s segment) history() []porcupine.Operation {
	h := make([]porcupine.Operation, 0, len(s.ops)+1)
	if !s.first {
		at := int64(s.ops[0].Start) - 1
		h = append(h, porcupine.Operation{ClientId: carryClient, Input: linInput{key: s.key, carry: true},
			Call: at, Output: linOutput{value: s.carry}, Return: at})
	}
	for _, o := range s.ops {
		h = append(h, porcupine.Operation{
			ClientId: o.Client + 1,
			Input:    linInput{kind: o.Kind, key: o.Key},
			Call:     int64(o.Start),
			Output:   linOutput{value: o.Value, failed: !o.OK(), err: o.Err},
			Return:   int64(o.End),
		})
	}
	return h
}

// LinearizableOptions bounds the linearizability search.
type LinearizableOptions struct {
	// Timeout bounds the whole check; past it, unchecked keys make the
	// verdict unknown. Zero means no limit.
	Timeout time.Duration
	// MaxSegmentOps skips segments longer than this (their search could
	// need gigabytes); they make the verdict unknown. Default 100,000.
	MaxSegmentOps int
}

// LinearizableResult is the verdict of Linearizable.
type LinearizableResult struct {
	Verdict   Verdict
	Anomalies []Anomaly
	Keys      int
	Segments  int
	// Largest is the length of the longest segment searched.
	Largest int
	// Unknown explains an unknown verdict: the keys not decided and why.
	Unknown     []string
	UnknownKeys []uint64
	Elapsed     time.Duration
}

// Linearizable checks each key's history against the model above with
// porcupine. A search that runs out of time makes the verdict unknown,
// never pass.
func Linearizable(ops []SeqOp, opt LinearizableOptions) LinearizableResult {
	start := time.Now()
	if opt.MaxSegmentOps <= 0 {
		opt.MaxSegmentOps = 100_000
	}
	segs := segments(ops)
	res := LinearizableResult{Verdict: Pass, Segments: len(segs)}
	keys := map[uint64]bool{}
	for _, s := range segs {
		keys[s.key] = true
	}
	res.Keys = len(keys)
	var deadline time.Time
	if opt.Timeout > 0 {
		deadline = start.Add(opt.Timeout)
	}
	// Largest first, so a long segment does not start just before the
	// deadline; one at a time for those, as each may need a lot of memory.
	order := make([]int, len(segs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return len(segs[order[a]].ops) > len(segs[order[b]].ops) })

	type outcome struct {
		seg    int
		result porcupine.CheckResult
		why    string
	}
	outcomes := make([]outcome, len(segs))
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		big sync.Mutex
		sem = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))
	)
	for _, i := range order {
		s := segs[i]
		res.Largest = max(res.Largest, len(s.ops))
		if len(s.ops) > opt.MaxSegmentOps {
			outcomes[i] = outcome{i, porcupine.Unknown, fmt.Sprintf("key %d: a segment of %d operations with no quiet moment is too long to search (limit %d)", s.key, len(s.ops), opt.MaxSegmentOps)}
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(i int, s segment) {
			defer func() { <-sem; wg.Done() }()
			if len(s.ops) > 10_000 {
				big.Lock()
				defer big.Unlock()
			}
			var timeout time.Duration
			if !deadline.IsZero() {
				if timeout = time.Until(deadline); timeout <= 0 {
					mu.Lock()
					outcomes[i] = outcome{i, porcupine.Unknown, fmt.Sprintf("key %d: not searched before the %v check timeout", s.key, opt.Timeout)}
					mu.Unlock()
					return
				}
			}
			r := porcupine.CheckOperationsTimeout(seqModel, s.history(), timeout)
			why := ""
			if r == porcupine.Unknown {
				why = fmt.Sprintf("key %d: search of %d operations timed out", s.key, len(s.ops))
			}
			mu.Lock()
			outcomes[i] = outcome{i, r, why}
			mu.Unlock()
		}(i, s)
	}
	wg.Wait()

	unknownKeys := map[uint64]bool{}
	for _, o := range outcomes {
		s := segs[o.seg]
		switch o.result {
		case porcupine.Illegal:
			res.Verdict = Fail
			res.Anomalies = append(res.Anomalies, explainIllegal(s))
		case porcupine.Unknown:
			if !unknownKeys[s.key] {
				unknownKeys[s.key] = true
				res.UnknownKeys = append(res.UnknownKeys, s.key)
				res.Unknown = append(res.Unknown, o.why)
			}
		}
	}
	if res.Verdict != Fail && len(res.UnknownKeys) > 0 {
		res.Verdict = Unknown
	}
	sort.Slice(res.Anomalies, func(i, j int) bool { return res.Anomalies[i].Key < res.Anomalies[j].Key })
	res.Elapsed = time.Since(start)
	return res
}

// explainIllegal names the operations at the point where the search got
// stuck: the last one of the longest legal prefix (the state) and those
// that could have come next, none of which fits.
func explainIllegal(s segment) Anomaly {
	h := s.history()
	_, info := porcupine.CheckOperationsVerbose(seqModel, h, time.Minute)
	byCall := func(op porcupine.Operation) (SeqOp, bool) {
		if op.ClientId == carryClient {
			return SeqOp{}, false
		}
		in, out := op.Input.(linInput), op.Output.(linOutput)
		return SeqOp{Client: op.ClientId - 1, Key: in.key, Kind: in.kind, Start: time.Duration(op.Call), End: time.Duration(op.Return), Value: out.value, Err: out.err}, true
	}
	var longest []porcupine.Operation
	for _, part := range info.PartialLinearizationsOperations() {
		for _, p := range part {
			if len(p) > len(longest) {
				longest = p
			}
		}
	}
	var state any = s.carry
	done := map[[2]int64]int{}
	for _, op := range longest {
		_, state = seqModel.Step(state, op.Input, op.Output)
		done[[2]int64{op.Call, int64(op.ClientId)}]++
	}
	var rest []porcupine.Operation
	for _, op := range h {
		k := [2]int64{op.Call, int64(op.ClientId)}
		if done[k] > 0 {
			done[k]--
			continue
		}
		rest = append(rest, op)
	}
	// Candidates: operations not yet placed that were called before the
	// earliest return among them.
	minRet := int64(1<<63 - 1)
	for _, op := range rest {
		minRet = min(minRet, op.Return)
	}
	var ops []SeqOp
	placed, why := len(longest), ""
	if len(longest) > 0 {
		if o, ok := byCall(longest[len(longest)-1]); ok {
			ops = append(ops, o)
			why = "set by " + o.String()
		} else {
			why = "the largest value of the operations before this stretch, which had ended before it began"
		}
	}
	if !s.first {
		placed-- // the carry step
	}
	var cands []string
	for _, op := range rest {
		if op.Call > minRet || op.Output.(linOutput).failed {
			continue
		}
		if o, ok := byCall(op); ok {
			ops = append(ops, o)
			cands = append(cands, o.String())
		}
		if len(cands) == 8 {
			break
		}
	}
	msg := fmt.Sprintf("key %d: no linearization: after %d operations the key stands at %d (%s), and none of the operations that could come next fits: %s",
		s.key, placed, state, why, strings.Join(cands, "; "))
	return Anomaly{Kind: "nonlinearizable", Key: s.key, Ops: ops, Msg: msg}
}

// Annotation marks a stretch of time in the visualization, such as a fault.
type Annotation struct {
	Tag         string
	Start, End  time.Duration
	Description string
	Details     string
	Color       string
}

// Visualize writes porcupine's HTML visualization of the history segments
// pick chooses (see segments: each is checked from the value the key had
// reached before it) to path, with annotations (faults) along the time
// axis, and returns how many segments it drew. The chosen segments are
// checked again in verbose mode, so keep them to a few thousand
// operations; ctx bounds the time spent.
func Visualize(ctx context.Context, ops []SeqOp, pick func(key uint64, seg []SeqOp) bool, notes []Annotation, path string) (int, error) {
	var (
		h     []porcupine.Operation
		parts [][]porcupine.Operation
	)
	for _, s := range segments(ops) {
		if !pick(s.key, s.ops) {
			continue
		}
		p := s.history()
		parts = append(parts, p)
		h = append(h, p...)
	}
	model := seqModel
	model.Partition = func([]porcupine.Operation) [][]porcupine.Operation { return parts }
	timeout := time.Duration(0)
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	_, info := porcupine.CheckOperationsVerbose(model, h, timeout)
	var ann []porcupine.Annotation
	for _, n := range notes {
		ann = append(ann, porcupine.Annotation{Tag: n.Tag, Start: int64(n.Start), End: int64(n.End),
			Description: n.Description, Details: n.Details, BackgroundColor: n.Color})
	}
	info.AddAnnotations(ann)
	return len(parts), porcupine.VisualizePath(model, info, path)
}
