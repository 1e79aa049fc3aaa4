package main

import (
	"bytes"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The report covers only what the histograms gained during the run, sums
// them over nodes, and puts the p99 in the bucket that holds it.
func TestStagesBetweenIsTheRunsShare(t *testing.T) {
	reg := prometheus.NewRegistry()
	stage := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "seqd_store_pipeline_stage_seconds",
		Buckets: []float64{0.001, 0.002, 0.004}}, []string{"node", "stage"})
	perEntry := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "seqd_store_ops_per_entry",
		Buckets: []float64{1, 2, 4, 8}}, []string{"node"})
	reg.MustRegister(stage, perEntry)
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
	if c == nil || c.Count != 100 || math.Abs(c.MeanUs-(98*500+2*1500)/100.0) > 1e-6 || c.P99LeUs != 2000 || c.MaxLeUs != 2000 {
		t.Fatalf("commit %+v; want 100 samples, mean 520µs, p99 and max in the 2 ms bucket", c)
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

// A p99 beyond the last bucket is +Inf, printed as such.
func TestStagesP99BeyondTheBuckets(t *testing.T) {
	h := func(count uint64, sum float64, b map[float64]uint64) *histo {
		return &histo{count: count, sum: sum, buckets: b}
	}
	rep := stagesBetween(map[string]*histo{}, map[string]*histo{
		"allocate": h(10, 10, map[float64]uint64{0.001: 5, math.Inf(1): 10}),
	})
	a := rep.Stages["allocate"]
	if !math.IsInf(a.P99LeUs, 1) || !math.IsInf(a.MaxLeUs, 1) || fmtUs(a.P99LeUs) != "∞" {
		t.Fatalf("allocate %+v", a)
	}
}

// scrapeMetrics reads a seqd /metrics page; a page that is not there is
// an error naming the URL.
func TestScrapeMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "seqd_store_fsm_apply_seconds"})
	reg.MustRegister(h)
	h.Observe(0.002)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	got, err := stageHistos(scrapeMetrics(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	if a := got["fsm_apply"]; a == nil || a.count != 1 || a.sum != 0.002 {
		t.Fatalf("fsm_apply %+v", got["fsm_apply"])
	}
	missing := httptest.NewServer(http.NotFoundHandler())
	defer missing.Close()
	if _, err := scrapeMetrics(missing.URL + "/metrics")(); err == nil || !strings.Contains(err.Error(), missing.URL+"/metrics: 404") {
		t.Fatalf("scraping a missing page: %v", err)
	}
}
