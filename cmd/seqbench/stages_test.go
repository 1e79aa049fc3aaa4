package main

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/seqd/seqd/internal/cliflag"
)

func newStageRegistry() (*prometheus.Registry, *prometheus.HistogramVec, *prometheus.HistogramVec) {
	reg := prometheus.NewRegistry()
	stage := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "seqd_store_pipeline_stage_seconds",
		Buckets: []float64{0.001, 0.002, 0.004}}, []string{"node", "stage"})
	perEntry := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "seqd_store_ops_per_entry",
		Buckets: []float64{1, 2, 4, 8}}, []string{"node"})
	reg.MustRegister(stage, perEntry)
	return reg, stage, perEntry
}

func equalPtr(p *float64, v float64) bool { return p != nil && *p == v }

// The report covers only what the histograms gained during the run, sums
// them over nodes, and puts the p99 and the slowest in the buckets that
// hold them.
func TestStagesBetweenIsTheRunsShare(t *testing.T) {
	reg, stage, perEntry := newStageRegistry()
	commit := func(node string) prometheus.Observer { return stage.WithLabelValues(node, "commit") }
	for range 50 {
		commit("r1").Observe(0.0035) // before the run: not counted
	}
	before, err := stageHistos(reg.Gather)
	if err != nil {
		t.Fatal(err)
	}
	for range 98 {
		commit("r1").Observe(0.0005)
	}
	commit("r2").Observe(0.0015) // another node (a new leader) counts too
	commit("r2").Observe(0.0015)
	perEntry.WithLabelValues("r1").Observe(3)
	perEntry.WithLabelValues("r1").Observe(5)
	after, err := stageHistos(reg.Gather)
	if err != nil {
		t.Fatal(err)
	}
	rep := stagesBetween(before, after)
	c := rep.Stages["commit"]
	if c == nil || c.Count != 100 || math.Abs(c.MeanUs-(98*500+2*1500)/100.0) > 1e-6 ||
		!equalPtr(c.P99LeUs, 2000) || !equalPtr(c.MaxLeUs, 2000) || c.LastBucketUs != 4000 {
		t.Fatalf("commit %+v; want 100 samples, mean 520µs, p99 and max in the 2 ms bucket of 4", c)
	}
	if rep.OpsPerEntry != 4 || len(rep.Stages) != 1 {
		t.Fatalf("report %+v; want 4 ops per entry and only the commit stage", rep)
	}
	var out bytes.Buffer
	printStages(&out, rep)
	if want := "4.0 ops per Raft entry; mean (p99 ≤, max ≤) per stage: commit 0.52ms (2.00ms, 2.00ms)"; !strings.Contains(out.String(), want) {
		t.Fatalf("printed %q, want it to contain %q", out.String(), want)
	}
	// Nothing new: no report.
	if rep := stagesBetween(after, after); rep != nil {
		t.Fatalf("report of an idle run: %+v", rep)
	}
}

// A node that restarted during the run starts its histograms from zero:
// what it has now is all new, not a negative gain.
func TestStagesAfterANodeRestart(t *testing.T) {
	reg, stage, _ := newStageRegistry()
	for range 10 {
		stage.WithLabelValues("r1", "plan").Observe(0.0005)
	}
	before, _ := stageHistos(reg.Gather)
	reg2, stage2, _ := newStageRegistry() // r1 again, restarted
	for range 3 {
		stage2.WithLabelValues("r1", "plan").Observe(0.0015)
	}
	after, _ := stageHistos(reg2.Gather)
	p := stagesBetween(before, after).Stages["plan"]
	if p.Count != 3 || math.Abs(p.MeanUs-1500) > 1e-6 || !equalPtr(p.MaxLeUs, 2000) {
		t.Fatalf("plan after a restart %+v; want the 3 new samples", p)
	}
}

// Samples past the last bucket have no bound: null in the JSON (which has
// no infinity) and "> last bucket" when printed.
func TestStagesPastTheLastBucket(t *testing.T) {
	reg, stage, _ := newStageRegistry()
	before, _ := stageHistos(reg.Gather)
	for range 9 {
		stage.WithLabelValues("r1", "allocate").Observe(0.0005)
	}
	stage.WithLabelValues("r1", "allocate").Observe(0.5)
	after, _ := stageHistos(reg.Gather)
	rep := stagesBetween(before, after)
	a := rep.Stages["allocate"]
	if a.P99LeUs != nil || a.MaxLeUs != nil || a.LastBucketUs != 4000 {
		t.Fatalf("allocate %+v; want no bound for the p99 (1 of 10) and the slowest", a)
	}
	b, err := json.Marshal(rep)
	var decoded struct {
		Stages map[string]map[string]any `json:"stages"`
	}
	if err == nil {
		err = json.Unmarshal(b, &decoded)
	}
	if got := decoded.Stages["allocate"]; err != nil || got == nil || got["max_le_us"] != nil || got["last_bucket_us"] != 4000.0 {
		t.Fatalf("JSON %s, %v: want allocate's max_le_us null and last_bucket_us 4000", b, err)
	}
	if _, ok := decoded.Stages["allocate"]["max_le_us"]; !ok {
		t.Fatalf("JSON %s has no max_le_us key", b)
	}
	var out bytes.Buffer
	printStages(&out, rep)
	if !strings.Contains(out.String(), ">4.00ms)") {
		t.Fatalf("printed %q", out.String())
	}
}

// scrapeMetrics reads seqd /metrics pages, each URL's series kept apart;
// a page that is not there is an error naming its URL.
func TestScrapeMetrics(t *testing.T) {
	page := func(v float64) *httptest.Server {
		reg := prometheus.NewRegistry()
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "seqd_store_fsm_apply_seconds"})
		reg.MustRegister(h)
		h.Observe(v)
		return httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	}
	a, b := page(0.002), page(0.004)
	defer a.Close()
	defer b.Close()
	got, err := stageHistos(scrapeMetrics(cliflag.SplitList(a.URL + " , " + b.URL)...))
	if err != nil {
		t.Fatal(err)
	}
	rep := stagesBetween(nil, got)
	if f := rep.Stages["fsm_apply"]; f == nil || f.Count != 2 || math.Abs(f.MeanUs-3000) > 1e-6 {
		t.Fatalf("fsm_apply from two pages: %+v", rep.Stages["fsm_apply"])
	}
	missing := httptest.NewServer(http.NotFoundHandler())
	defer missing.Close()
	if _, err := scrapeMetrics(a.URL, missing.URL+"/metrics")(); err == nil || !strings.Contains(err.Error(), missing.URL+"/metrics: 404") {
		t.Fatalf("scraping a missing page: %v", err)
	}
}
