package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/seqd/seqd/internal/bench"
	"github.com/seqd/seqd/internal/cliflag"
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
	// they are within 2x). Null: past the last bucket, LastBucketUs (0.41 s
	// for the pipeline stages, 0.20 s for fsm_apply).
	P99LeUs      *float64 `json:"p99_le_us"`
	MaxLeUs      *float64 `json:"max_le_us"`
	LastBucketUs float64  `json:"last_bucket_us"`
}

// stageOrder is the stages printed, in order (the JSON has any others).
var stageOrder = []string{"queued", "plan", "allocate", "commit", "fsm_apply"}

// histo is one histogram summed over the nodes that report it.
type histo struct {
	count   uint64
	sum     float64
	buckets map[float64]uint64 // cumulative, by upper bound
}

// gatherFunc returns the cluster's metric families.
type gatherFunc func() ([]*dto.MetricFamily, error)

// sourceLabel tells apart the series of different --metrics URLs.
const sourceLabel = "seqbench_source"

// scrapeMetrics gathers the Prometheus text at each URL (seqd /metrics
// pages; give every store replica's, so a leader change during the run
// is counted too).
func scrapeMetrics(urls ...string) gatherFunc {
	return func() ([]*dto.MetricFamily, error) {
		var out []*dto.MetricFamily
		for i, u := range urls {
			mfs, err := scrapeOne(u)
			if err != nil {
				return nil, err
			}
			src := fmt.Sprint(i)
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					m.Label = append(m.Label, &dto.LabelPair{Name: ptr(sourceLabel), Value: &src})
				}
				out = append(out, mf)
			}
		}
		return out, nil
	}
}

func ptr[T any](v T) *T { return &v }

func scrapeOne(url string) ([]*dto.MetricFamily, error) {
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

// series is one histogram of one node: a stage ("entry" for ops per
// entry) and every other label.
type series struct{ stage, labels string }

// stageHistos reads the store's stage histograms, one per series.
func stageHistos(gather gatherFunc) (map[series]*histo, error) {
	mfs, err := gather()
	if err != nil {
		return nil, err
	}
	out := map[series]*histo{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var stage string
			var labels []string
			for _, l := range m.GetLabel() {
				if l.GetName() == "stage" {
					stage = l.GetValue()
				} else {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
			}
			switch mf.GetName() {
			case "seqd_store_pipeline_stage_seconds":
			case "seqd_store_fsm_apply_seconds":
				stage = "fsm_apply"
			case "seqd_store_ops_per_entry":
				stage = "entry"
			default:
				continue
			}
			sort.Strings(labels)
			h := m.GetHistogram()
			hs := &histo{count: h.GetSampleCount(), sum: h.GetSampleSum(), buckets: map[float64]uint64{}}
			for _, b := range h.GetBucket() {
				hs.buckets[b.GetUpperBound()] = b.GetCumulativeCount()
			}
			out[series{stage, strings.Join(labels, ",")}] = hs
		}
	}
	return out, nil
}

// gained is what one series gained from b to a. A series whose count
// went down was reset (its node restarted): all of a is new.
func gained(b, a *histo) *histo {
	if b == nil || a.count < b.count {
		return a
	}
	d := &histo{count: a.count - b.count, sum: a.sum - b.sum, buckets: map[float64]uint64{}}
	for ub, n := range a.buckets {
		d.buckets[ub] = n - min(n, b.buckets[ub])
	}
	return d
}

// stagesBetween is what the histograms gained from before to after,
// summed over nodes.
func stagesBetween(before, after map[series]*histo) *stageReport {
	sum := map[string]*histo{}
	for k, a := range after {
		d := gained(before[k], a)
		t := sum[k.stage]
		if t == nil {
			t = &histo{buckets: map[float64]uint64{}}
			sum[k.stage] = t
		}
		t.count += d.count
		t.sum += d.sum
		for ub, n := range d.buckets {
			t.buckets[ub] += n
		}
	}
	rep := &stageReport{Stages: map[string]*stageTime{}}
	for name, h := range sum {
		if h.count == 0 {
			continue
		}
		mean := h.sum / float64(h.count)
		if name == "entry" {
			rep.OpsPerEntry = mean
			continue
		}
		var bounds []float64
		for ub := range h.buckets {
			if !math.IsInf(ub, 1) {
				bounds = append(bounds, ub)
			}
		}
		sort.Float64s(bounds)
		// quantile is the upper bound in µs of the first bucket holding q
		// of the run's samples; nil past the last one.
		quantile := func(q float64) *float64 {
			for _, ub := range bounds {
				if float64(h.buckets[ub]) >= q*float64(h.count) {
					return ptr(ub * 1e6)
				}
			}
			return nil
		}
		st := &stageTime{Count: h.count, MeanUs: mean * 1e6, P99LeUs: quantile(0.99), MaxLeUs: quantile(1)}
		if len(bounds) > 0 {
			st.LastBucketUs = bounds[len(bounds)-1] * 1e6
		}
		rep.Stages[name] = st
	}
	if len(rep.Stages) == 0 {
		return nil
	}
	return rep
}

// stageWatch takes the histograms when a run's measured phase starts
// (bench.Config.BeforeMeasure); done returns the phase's report, or nil
// (with a note) when they cannot be read.
type stageWatch struct {
	gather gatherFunc
	before map[series]*histo
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
	urls := cliflag.SplitList(raw)
	if len(urls) == 0 {
		return fmt.Errorf("--metrics %q names no URL", raw)
	}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--metrics %q: want http(s) URLs such as http://127.0.0.1:7480/metrics, comma-separated", raw)
		}
	}
	return nil
}

func printStages(w io.Writer, r *stageReport) {
	if r == nil {
		return
	}
	fmt.Fprintf(w, "leader       %.1f ops per Raft entry; mean (p99 ≤, max ≤) per stage:", r.OpsPerEntry)
	for _, name := range stageOrder {
		st := r.Stages[name]
		if st == nil {
			continue
		}
		bound := func(us *float64) string {
			if us == nil {
				return ">" + fmtUs(st.LastBucketUs)
			}
			return fmtUs(*us)
		}
		fmt.Fprintf(w, " %s %s (%s, %s)", name, fmtUs(st.MeanUs), bound(st.P99LeUs), bound(st.MaxLeUs))
	}
	fmt.Fprintln(w)
}

// fmtUs prints microseconds as ms with two decimals.
func fmtUs(us float64) string { return fmt.Sprintf("%.2fms", us/1000) }
