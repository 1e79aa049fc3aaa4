package checker

import (
	"sort"
	"strconv"
	"time"
)

// Result is one checker's verdict over one workload's history, in the
// form reports use. Every workload's checkers produce it, whatever their
// operations look like.
type Result struct {
	Checker   string  `json:"checker"`
	Workload  string  `json:"workload"`
	Guarantee string  `json:"guarantee"`
	Verdict   Verdict `json:"verdict"`
	Summary   string  `json:"summary"`
	// Count is how many anomalies the checker found; Findings keeps the
	// earliest of them (see Trim).
	Count    int           `json:"anomaly_count"`
	Findings []Finding     `json:"anomalies"`
	Elapsed  time.Duration `json:"elapsed_ns"`
}

// Finding is one anomaly with the operations that show it.
type Finding struct {
	Kind string `json:"kind"`
	Key  uint64 `json:"key,omitempty"`
	Msg  string `json:"msg"`
	// At is when the anomaly became visible: the end of its last operation.
	At  time.Duration `json:"at_ns"`
	Ops []OpRecord    `json:"ops"`
}

// OpRecord is one operation as a report shows it.
type OpRecord struct {
	Client int           `json:"client"`
	Op     string        `json:"op"`
	Key    uint64        `json:"key"`
	Value  string        `json:"value,omitempty"`
	Start  time.Duration `json:"start_ns"`
	End    time.Duration `json:"end_ns"`
	Err    string        `json:"error,omitempty"`
}

// Record turns a sequence operation into report form.
func (o SeqOp) Record() OpRecord {
	r := OpRecord{Client: o.Client, Op: o.Kind.String(), Key: o.Key, Start: o.Start, End: o.End, Err: o.Err}
	if o.OK() {
		r.Value = strconv.FormatUint(o.Value, 10)
	}
	return r
}

// Finding turns an anomaly into report form.
func (a Anomaly) Finding() Finding {
	f := Finding{Kind: a.Kind, Key: a.Key, Msg: a.Msg, At: a.At}
	for _, o := range a.Ops {
		f.Ops = append(f.Ops, o.Record())
		f.At = max(f.At, o.End)
	}
	return f
}

// Findings converts anomalies.
func Findings(as []Anomaly) []Finding {
	out := make([]Finding, 0, len(as))
	for _, a := range as {
		out = append(out, a.Finding())
	}
	return out
}

// Trim keeps the n earliest findings (by the time they became visible),
// recording the total in Count, so reports of badly broken runs stay small.
func (r *Result) Trim(n int) {
	r.Count = len(r.Findings)
	sort.SliceStable(r.Findings, func(i, j int) bool { return r.Findings[i].At < r.Findings[j].At })
	if len(r.Findings) > n {
		r.Findings = r.Findings[:n]
	}
}
