// Package report writes a run's results: results.json for machines and
// index.html, with plots drawn as SVG, for people.
package report

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/seqd/seqd/jepsen/checker"
	"github.com/seqd/seqd/jepsen/cluster"
	"github.com/seqd/seqd/jepsen/nemesis"
	"github.com/seqd/seqd/jepsen/workload"
)

// Exit codes of seqjepsen run, also recorded in results.json.
const (
	ExitPass    = 0 // every checker passed
	ExitAnomaly = 1 // a checker found an anomaly
	// ExitHarness: the harness failed, or a checker could not decide
	// (unknown). Either way the run is no evidence in either direction.
	ExitHarness = 2
)

// Results is the content of results.json.
type Results struct {
	Version  int             `json:"version"`
	Verdict  checker.Verdict `json:"verdict"`
	ExitCode int             `json:"exit_code"`
	Message  string          `json:"message"`

	Scenario string   `json:"scenario,omitempty"`
	Workload string   `json:"workload"`
	Backend  string   `json:"backend"`
	Bug      string   `json:"bug,omitempty"`
	Nemeses  []string `json:"nemeses"`
	Skipped  []string `json:"skipped_faults,omitempty"`
	// NotDrawn are faults asked for that the run never drew: a kind (the
	// run had fewer faults than kinds), or kind:target for a target named
	// in --nemesis (kill:leader+allocsvr) that no injected fault of the
	// kind picked.
	NotDrawn  []string `json:"faults_not_drawn,omitempty"`
	Seed      uint64   `json:"seed"`
	AllocSvrs int      `json:"allocsvrs"`
	// StoreShards is how many message-store shards ran (0: no store).
	StoreShards int `json:"store_shards,omitempty"`
	// Spec is what `seqjepsen repro` runs again.
	Spec Spec `json:"spec"`
	// Command reproduces the run (same seed, same options).
	Command     []string      `json:"command"`
	CommandLine string        `json:"command_line"`
	TimeLimit   time.Duration `json:"time_limit_ns"`
	Quiet       time.Duration `json:"quiet_ns"`
	Started     time.Time     `json:"started"`
	Duration    time.Duration `json:"duration_ns"`
	// WorkloadEnd is when the workload stopped (before the final reads).
	WorkloadEnd time.Duration `json:"workload_end_ns"`

	Checkers     []checker.Result  `json:"checkers"`
	FirstAnomaly *time.Duration    `json:"first_anomaly_ns,omitempty"`
	Ops          map[string]uint64 `json:"ops"`
	Perf         Perf              `json:"perf"`

	Faults         []nemesis.Fault     `json:"faults"`
	Unavailability []workload.Gap      `json:"unavailability"`
	WorstGap       map[string]WorstGap `json:"longest_unavailability_by_fault"`
	Events         []cluster.Event     `json:"node_events"`
	Artifacts      []workload.Artifact `json:"artifacts"`
	Logs           []string            `json:"logs"`
	HarnessError   string              `json:"harness_error,omitempty"`
}

// WorstGap is the longest unavailability seen for one fault type.
type WorstGap struct {
	Seconds float64 `json:"seconds"`
	Key     uint64  `json:"key"`
	Fault   int     `json:"fault_index"`
}

// Perf compares throughput and latency with and without faults.
type Perf struct {
	Overall Window `json:"overall"`
	Faults  Window `json:"during_faults"`
	Calm    Window `json:"without_faults"`
}

// Window summarizes successful operations that started in some stretch
// of time.
type Window struct {
	Seconds float64 `json:"seconds"`
	OK      int     `json:"ok"`
	Failed  int     `json:"failed"`
	OpsPerS float64 `json:"ok_per_s"`
	P50ms   float64 `json:"p50_ms"`
	P99ms   float64 `json:"p99_ms"`
}

// Finish fills the derived fields: verdict, exit code, first anomaly,
// worst gaps, performance.
func (r *Results) Finish(samples []workload.Sample) {
	r.Version = 1
	var vs []checker.Verdict
	for i := range r.Checkers {
		c := &r.Checkers[i]
		c.Count = max(c.Count, len(c.Findings)) // untrimmed results count what they hold
		vs = append(vs, c.Verdict)
		for _, f := range c.Findings {
			if f.At <= 0 {
				continue // seen only in the final reads: no time to give
			}
			if r.FirstAnomaly == nil || f.At < *r.FirstAnomaly {
				at := f.At
				r.FirstAnomaly = &at
			}
		}
	}
	switch {
	case r.HarnessError != "":
		r.Verdict, r.ExitCode = checker.Unknown, ExitHarness
		if checker.Worst(vs...) == checker.Fail {
			// An anomaly found before the harness broke still counts.
			r.Verdict, r.ExitCode = checker.Fail, ExitAnomaly
		}
	case len(r.Checkers) == 0:
		r.Verdict, r.ExitCode = checker.Unknown, ExitHarness
	default:
		r.Verdict = checker.Worst(vs...)
		r.ExitCode = map[checker.Verdict]int{checker.Pass: ExitPass, checker.Fail: ExitAnomaly, checker.Unknown: ExitHarness}[r.Verdict]
	}
	r.WorstGap = map[string]WorstGap{}
	for _, g := range r.Unavailability {
		s := (g.To - g.From).Seconds()
		if w, ok := r.WorstGap[g.Fault]; !ok || s > w.Seconds {
			r.WorstGap[g.Fault] = WorstGap{Seconds: s, Key: g.Key, Fault: g.FaultIdx}
		}
	}
	r.Perf = perf(samples, r.Faults, r.WorkloadEnd)
}

func perf(samples []workload.Sample, faults []nemesis.Fault, end time.Duration) Perf {
	in := func(t time.Duration) bool {
		for _, f := range faults {
			if t >= f.Start && t <= f.End {
				return true
			}
		}
		return false
	}
	faultTime := time.Duration(0)
	for _, iv := range union(faults) {
		faultTime += iv[1] - iv[0]
	}
	var all, fault, calm []workload.Sample
	for _, s := range samples {
		if s.Start > end {
			continue // final reads
		}
		all = append(all, s)
		if in(s.Start) {
			fault = append(fault, s)
		} else {
			calm = append(calm, s)
		}
	}
	return Perf{
		Overall: window(all, end),
		Faults:  window(fault, faultTime),
		Calm:    window(calm, end-faultTime),
	}
}

func window(ss []workload.Sample, span time.Duration) Window {
	w := Window{Seconds: span.Seconds()}
	var lat []time.Duration
	for _, s := range ss {
		if s.OK {
			w.OK++
			lat = append(lat, s.End-s.Start)
		} else {
			w.Failed++
		}
	}
	if span > 0 {
		w.OpsPerS = float64(w.OK) / span.Seconds()
	}
	w.P50ms, w.P99ms = quantileMs(lat, 0.5), quantileMs(lat, 0.99)
	return w
}

func quantileMs(lat []time.Duration, q float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	i := int(q * float64(len(lat)-1))
	return float64(lat[i]) / float64(time.Millisecond)
}

// union merges fault intervals.
func union(faults []nemesis.Fault) [][2]time.Duration {
	var ivs [][2]time.Duration
	for _, f := range faults {
		if f.End > f.Start {
			ivs = append(ivs, [2]time.Duration{f.Start, f.End})
		}
	}
	sort.Slice(ivs, func(i, j int) bool { return ivs[i][0] < ivs[j][0] })
	var out [][2]time.Duration
	for _, iv := range ivs {
		if n := len(out); n > 0 && iv[0] <= out[n-1][1] {
			out[n-1][1] = max(out[n-1][1], iv[1])
			continue
		}
		out = append(out, iv)
	}
	return out
}

// WriteJSON writes results.json into dir.
func (r *Results) WriteJSON(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644)
}

// Load reads a results.json.
func Load(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
