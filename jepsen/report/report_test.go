package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seqd/seqd/jepsen/checker"
	"github.com/seqd/seqd/jepsen/nemesis"
	"github.com/seqd/seqd/jepsen/workload"
)

func results(vs ...checker.Verdict) *Results {
	r := &Results{}
	for i, v := range vs {
		c := checker.Result{Checker: string(rune('a' + i)), Verdict: v}
		if v == checker.Fail {
			c.Findings = []checker.Finding{{Kind: "realtime", At: time.Duration(i+1) * time.Second}}
		}
		r.Checkers = append(r.Checkers, c)
	}
	return r
}

func TestExitCodes(t *testing.T) {
	cases := []struct {
		name    string
		r       *Results
		harness string
		verdict checker.Verdict
		code    int
	}{
		{"all pass", results(checker.Pass, checker.Pass), "", checker.Pass, ExitPass},
		{"one fails", results(checker.Pass, checker.Fail), "", checker.Fail, ExitAnomaly},
		{"unknown is not a pass", results(checker.Pass, checker.Unknown), "", checker.Unknown, ExitHarness},
		{"fail beats unknown", results(checker.Unknown, checker.Fail), "", checker.Fail, ExitAnomaly},
		{"no checker ran", results(), "", checker.Unknown, ExitHarness},
		{"harness failed", results(checker.Pass), "cluster did not start", checker.Unknown, ExitHarness},
		{"anomaly before the harness broke", results(checker.Fail), "interrupted", checker.Fail, ExitAnomaly},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.r.HarnessError = c.harness
			c.r.Finish(nil)
			if c.r.Verdict != c.verdict || c.r.ExitCode != c.code {
				t.Fatalf("verdict %s exit %d, want %s exit %d", c.r.Verdict, c.r.ExitCode, c.verdict, c.code)
			}
		})
	}
	r := results(checker.Pass, checker.Fail, checker.Fail)
	r.Finish(nil)
	if r.FirstAnomaly == nil || *r.FirstAnomaly != 2*time.Second {
		t.Fatalf("first anomaly %v, want 2s", r.FirstAnomaly)
	}
}

func TestPerfSplitsFaultTime(t *testing.T) {
	s := func(start, dur float64, ok bool) workload.Sample {
		return workload.Sample{Start: time.Duration(start * float64(time.Second)), End: time.Duration((start + dur) * float64(time.Second)), OK: ok}
	}
	samples := []workload.Sample{s(0.5, 0.001, true), s(1.5, 0.002, true), s(2.5, 1, false), s(3.5, 0.5, true), s(9.5, 0.001, true)}
	faults := []nemesis.Fault{{Start: 2 * time.Second, End: 4 * time.Second}, {Start: 3 * time.Second, End: 5 * time.Second}}
	p := perf(samples, faults, 10*time.Second)
	if p.Faults.Seconds != 3 || p.Calm.Seconds != 7 {
		t.Fatalf("fault time %v s, calm %v s; want 3 and 7 (overlapping faults merged)", p.Faults.Seconds, p.Calm.Seconds)
	}
	if p.Faults.OK != 1 || p.Faults.Failed != 1 || p.Calm.OK != 3 || p.Overall.OK != 4 {
		t.Fatalf("split %+v", p)
	}
	if p.Faults.P99ms != 500 {
		t.Fatalf("p99 during faults %v ms, want 500", p.Faults.P99ms)
	}
}

func TestWriteReport(t *testing.T) {
	dir := t.TempDir()
	r := results(checker.Pass, checker.Fail)
	r.Workload, r.Seed, r.CommandLine = "alloc", 7, "seqjepsen run --seed 7"
	r.Faults = []nemesis.Fault{{Kind: "partition", Target: "halves", Desc: "partition a | b", Start: time.Second, End: 3 * time.Second}}
	samples := []workload.Sample{{Start: 0, End: time.Millisecond, OK: true}, {Start: 2 * time.Second, End: 3 * time.Second}}
	r.Finish(samples)
	if err := r.WriteJSON(dir); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteHTML(dir, samples); err != nil {
		t.Fatal(err)
	}
	back, err := Load(filepath.Join(dir, "results.json"))
	if err != nil || back.Seed != 7 || back.ExitCode != ExitAnomaly {
		t.Fatalf("results.json round trip: %+v, %v", back, err)
	}
	page, _ := os.ReadFile(filepath.Join(dir, "index.html"))
	if back.Checkers[1].Count != 1 {
		t.Errorf("anomaly count %d, want 1", back.Checkers[1].Count)
	}
	for _, want := range []string{"<svg", "partition:halves", "seqjepsen run --seed 7", "b: 1 anomalies", "realtime"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("index.html lacks %q", want)
		}
	}
}

func TestSpecArgsRoundTrip(t *testing.T) {
	s := Spec{Workload: "alloc", Nemesis: "kill,partition:halves", TimeLimit: time.Minute, Quiet: 10 * time.Second, Seed: 42,
		Backend: "netns", AllocSvrs: 3, StoreShards: 2, Retention: 10 * time.Second, Lease: 2 * time.Second, Step: 1000, Bug: "ack-before-raise-commit",
		Schedule: nemesis.Schedule{Interval: [2]time.Duration{2 * time.Second, 6 * time.Second}, Hold: [2]time.Duration{time.Second, 8 * time.Second}}}
	line := ShellQuote(s.Args("out dir"))
	s.CheckTimeout = time.Minute
	line = ShellQuote(s.Args("out dir"))
	for _, want := range []string{"--seed 42", "--bug ack-before-raise-commit", "--fault-interval 2s-6s", "--allocsvrs 3", "--store-shards 2", "--retention 10s", "--check-timeout 1m0s", "--out 'out dir'"} {
		if !strings.Contains(line, want) {
			t.Errorf("%s lacks %q", line, want)
		}
	}
	if r, err := ParseRange("2s-6s"); err != nil || r != s.Schedule.Interval {
		t.Errorf("ParseRange: %v %v", r, err)
	}
	if _, err := ParseRange("6s-2s"); err == nil {
		t.Error("ParseRange accepted a reversed range")
	}
}
