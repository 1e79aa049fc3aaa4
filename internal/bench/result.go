package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// Result is the summary of one measured run, as printed and as written to
// --json files. Latencies are per op: one call, one batch or one pipeline.
type Result struct {
	Mode string `json:"mode"`
	// Ops counts completed operations; failed ones count in Errors only.
	Ops       uint64  `json:"ops"`
	Seqs      uint64  `json:"seqs"`
	SeqPerSec float64 `json:"seq_per_sec"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
	P999us    float64 `json:"p999_us"`
	MaxUs     float64 `json:"max_us"`
	Errors    uint64  `json:"errors"`
	// ErrorSamples are the most frequent distinct error messages.
	ErrorSamples []ErrorSample `json:"error_samples,omitempty"`
	Concurrency  int           `json:"concurrency"`
	Keys         uint64        `json:"keys"`
	// SeqsPerOp is the batch or pipeline depth (1 for single calls).
	SeqsPerOp int `json:"seqs_per_op"`
	// RateTarget is the --rate asked for, if any.
	RateTarget float64 `json:"rate_target,omitempty"`
	// DurationS is the measured time, from the first op to the last.
	DurationS   float64 `json:"duration_s"`
	Interrupted bool    `json:"interrupted,omitempty"`
}

// NewResult summarises st.
func NewResult(mode string, st *Stats, concurrency int, keys uint64, seqsPerOp int, rate float64) Result {
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	r := Result{
		Mode: mode, Ops: st.Ops, Seqs: st.Seqs, Errors: st.Errors,
		ErrorSamples: st.ErrorSamples,
		P50us:        us(st.Latency.Quantile(0.50)),
		P99us:        us(st.Latency.Quantile(0.99)),
		P999us:       us(st.Latency.Quantile(0.999)),
		MaxUs:        us(st.Latency.Max()),
		Concurrency:  concurrency, Keys: keys, SeqsPerOp: seqsPerOp, RateTarget: rate,
		DurationS:   st.Elapsed.Seconds(),
		Interrupted: st.Interrupted,
	}
	if s := st.Elapsed.Seconds(); s > 0 {
		r.SeqPerSec = float64(st.Seqs) / s
		r.OpsPerSec = float64(st.Ops) / s
	}
	return r
}

// WriteJSON writes v, indented, to path.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write --json %s: %w", path, err)
	}
	return nil
}
