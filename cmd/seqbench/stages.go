package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/seqd/seqd/internal/bench"
)

// stageReport is where the store leader's writes spent their time during
// one run, from the cluster's own histograms (the in-process cluster's, or
// those at --metrics): how long sends waited for the proposer, how long
// their batch's planning and allocator call took, and from proposal to the
// leader's FSM result (commit), of which the FSM apply itself on each
// replica (fsm_apply).
type stageReport struct {
	OpsPerEntry float64               `json:"ops_per_entry"`
	Stages      map[string]*stageTime `json:"stages"`
}

type stageTime struct {
	Count  uint64  `json:"count"`
	MeanUs float64 `json:"mean_us"`
	// P99LeUs and MaxLeUs are the upper bounds of the histogram buckets
	// holding the 99th percentile and the slowest (the buckets double, so
	// they are within 2x; +Inf past the last bucket, 0.41 s for stages).
	P99LeUs float64 `json:"p99_le_us"`
	MaxLeUs float64 `json:"max_le_us"`
}

// stageOrder is the order stages are printed in.
var stageOrder = []string{"queued", "plan", "allocate", "commit", "fsm_apply"}

// histo is one histogram summed over the nodes that report it.
type histo struct {
	count   uint64
	sum     float64
	buckets map[float64]uint64 // cumulative, by upper bound
}

// gatherFunc returns the cluster's metric families.
type gatherFunc func() ([]*dto.MetricFamily, error)

// scrapeMetrics gathers the Prometheus text at url (a seqd /metrics page).
func scrapeMetrics(url string) gatherFunc {
	return func() ([]*dto.MetricFamily, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: %s", url, resp.Status)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		m, err := p.TextToMetricFamilies(resp.Body)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", url, err)
		}
		out := make([]*dto.MetricFamily, 0, len(m))
		for _, mf := range m {
			out = append(out, mf)
		}
		return out, nil
	}
}

// stageHistos reads the store's stage histograms, keyed by stage name
// ("entry" holds ops per entry).
func stageHistos(gather gatherFunc) (map[string]*histo, error) {
	mfs, err := gather()
	if err != nil {
		return nil, err
	}
	out := map[string]*histo{}
	add := func(key string, h *dto.Histogram) {
		s := out[key]
		if s == nil {
			s = &histo{buckets: map[float64]uint64{}}
			out[key] = s
		}
		s.count += h.GetSampleCount()
		s.sum += h.GetSampleSum()
		for _, b := range h.GetBucket() {
			s.buckets[b.GetUpperBound()] += b.GetCumulativeCount()
		}
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "seqd_store_pipeline_stage_seconds":
				for _, l := range m.GetLabel() {
					if l.GetName() == "stage" {
						add(l.GetValue(), m.GetHistogram())
					}
				}
			case "seqd_store_fsm_apply_seconds":
				add("fsm_apply", m.GetHistogram())
			case "seqd_store_ops_per_entry":
				add("entry", m.GetHistogram())
			}
		}
	}
	return out, nil
}

// stagesBetween is what the histograms gained from before to after.
func stagesBetween(before, after map[string]*histo) *stageReport {
	rep := &stageReport{Stages: map[string]*stageTime{}}
	for name, a := range after {
		b := before[name]
		if b == nil {
			b = &histo{buckets: map[float64]uint64{}}
		}
		n := a.count - b.count
		if n == 0 {
			continue
		}
		mean := (a.sum - b.sum) / float64(n)
		if name == "entry" {
			rep.OpsPerEntry = mean
			continue
		}
		bounds := make([]float64, 0, len(a.buckets))
		for ub := range a.buckets {
			bounds = append(bounds, ub)
		}
		sort.Float64s(bounds)
		// quantile is the upper bound of the first bucket holding q of
		// the run's samples.
		quantile := func(q float64) float64 {
			for _, ub := range bounds {
				if float64(a.buckets[ub]-b.buckets[ub]) >= q*float64(n) {
					return ub
				}
			}
			return math.Inf(1)
		}
		rep.Stages[name] = &stageTime{Count: n, MeanUs: mean * 1e6, P99LeUs: quantile(0.99) * 1e6, MaxLeUs: quantile(1) * 1e6}
	}
	if len(rep.Stages) == 0 {
		return nil
	}
	return rep
}

// stageWatch takes the histograms before a run (its warm-up included);
// done returns the run's report, or nil (with a note) when they cannot be
// read.
type stageWatch struct {
	gather gatherFunc
	before map[string]*histo
	note   func(format string, args ...any)
}

func watchStages(gather gatherFunc, p *bench.Progress) *stageWatch {
	if gather == nil {
		return nil
	}
	before, err := stageHistos(gather)
	if err != nil {
		p.Printf("seqbench: no stage report (reading metrics: %v)\n", err)
		return nil
	}
	return &stageWatch{gather: gather, before: before, note: p.Printf}
}

func (s *stageWatch) done() *stageReport {
	if s == nil {
		return nil
	}
	after, err := stageHistos(s.gather)
	if err != nil {
		s.note("seqbench: no stage report (reading metrics: %v)\n", err)
		return nil
	}
	return stagesBetween(s.before, after)
}

// checkMetricsURL checks --metrics.
func checkMetricsURL(raw, addr string) error {
	if raw == "" {
		return nil
	}
	if addr == "" {
		return errors.New("--metrics is for a cluster at --addr; the in-process cluster's stages are reported without it")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--metrics %q: want an http(s) URL such as http://127.0.0.1:7480/metrics", raw)
	}
	return nil
}

func printStages(w io.Writer, r *stageReport) {
	if r == nil {
		return
	}
	fmt.Fprintf(w, "leader       %.1f ops per Raft entry; mean (p99 ≤, max ≤) per stage:", r.OpsPerEntry)
	for _, name := range stageOrder {
		if st := r.Stages[name]; st != nil {
			fmt.Fprintf(w, " %s %s (%s, %s)", name, fmtUs(st.MeanUs), fmtUs(st.P99LeUs), fmtUs(st.MaxLeUs))
		}
	}
	var other []string
	for name := range r.Stages {
		if !slices.Contains(stageOrder, name) {
			other = append(other, name)
		}
	}
	sort.Strings(other)
	for _, name := range other {
		st := r.Stages[name]
		fmt.Fprintf(w, " %s %s (%s, %s)", name, fmtUs(st.MeanUs), fmtUs(st.P99LeUs), fmtUs(st.MaxLeUs))
	}
	fmt.Fprintln(w)
}

// fmtUs prints microseconds as ms with two decimals.
func fmtUs(us float64) string {
	if math.IsInf(us, 1) {
		return "∞"
	}
	return fmt.Sprintf("%.2fms", us/1000)
}
