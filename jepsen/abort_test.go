package jepsen

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seqd/seqd/jepsen/checker"
	"github.com/seqd/seqd/jepsen/cluster"
	"github.com/seqd/seqd/jepsen/nemesis"
	"github.com/seqd/seqd/jepsen/report"
)

// procsUnder returns the processes whose command line mentions dir.
func procsUnder(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("skipping: cannot list processes: %v", err)
	}
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), dir) {
			stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
			if f := strings.Fields(string(stat)); len(f) > 2 && f[2] == "Z" {
				continue // dead, not yet reaped
			}
			out = append(out, e.Name()+" "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

// A second interrupt cuts the run short wherever it is, here with its
// nodes up but the cluster not yet serving (they never will: this seqd
// only sleeps): Run returns within seconds, every node is dead, bin/ is
// gone, and the report says the run was interrupted, its checks unknown.
func TestAbortKillsTheNodesAndWritesTheReport(t *testing.T) {
	src := fakeTree(t, "package main\n\nimport \"time\"\n\nfunc main() { time.Sleep(time.Hour) }\n")
	out := filepath.Join(t.TempDir(), "run")
	abort := make(chan struct{})
	var res *report.Results
	done := make(chan struct{})
	go func() {
		defer close(done)
		res = Run(context.Background(), Options{
			Spec: report.Spec{Workload: "alloc", Nemesis: "kill", Backend: cluster.BackendLocal, TimeLimit: time.Minute, Seed: 1},
			Src:  src, Out: out, Progress: io.Discard, Abort: abort,
		})
	}()
	// Abort once every node runs: the run then waits for them to serve.
	deadline := time.Now().Add(time.Minute)
	for len(procsUnder(t, out)) < 6 {
		select {
		case <-done:
			t.Fatalf("the run ended before the abort: %s", res.Message)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the nodes did not start: %v", procsUnder(t, out))
		}
		time.Sleep(10 * time.Millisecond)
	}
	aborted := time.Now()
	close(abort)
	select {
	case <-done:
	case <-time.After(abortStartWait + 10*time.Second):
		t.Fatal("Run did not return after the abort")
	}
	took := time.Since(aborted)
	if left := procsUnder(t, out); len(left) > 0 {
		t.Errorf("nodes left running after the abort: %v", left)
	}
	if _, err := os.Stat(filepath.Join(out, "bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bin/ is still there (%v)", err)
	}
	if res.ExitCode != report.ExitHarness || !strings.HasPrefix(res.HarnessError, "interrupted") {
		t.Errorf("exit %d, harness error %q; want 2, marked interrupted", res.ExitCode, res.HarnessError)
	}
	back, err := report.Load(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatalf("no report after the abort: %v", err)
	}
	if back.ExitCode != report.ExitHarness || back.Verdict != checker.Unknown || !strings.HasPrefix(back.HarnessError, "interrupted") {
		t.Errorf("results.json: exit %d, verdict %s, harness error %q", back.ExitCode, back.Verdict, back.HarnessError)
	}
	if len(back.Checkers) == 0 {
		t.Error("results.json names no checks")
	}
	for _, c := range back.Checkers {
		if c.Verdict != checker.Unknown {
			t.Errorf("check %s/%s: %s, want unknown", c.Workload, c.Checker, c.Verdict)
		}
	}
	for _, f := range []string{"index.html", "harness.log"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("report file: %v", err)
		}
	}
	t.Logf("Run returned %v after the abort", took.Round(time.Millisecond))
}

// The same with a cluster serving and the workload and nemesis running:
// the abort kills the nodes itself, with no heal and no checks.
func TestAbortARunningRun(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: builds seqd and runs a cluster; not with -short")
	}
	out := filepath.Join(t.TempDir(), "run")
	abort := make(chan struct{})
	var res *report.Results
	done := make(chan struct{})
	go func() {
		defer close(done)
		res = Run(context.Background(), Options{
			Spec: report.Spec{
				Workload: "alloc", Nemesis: "kill:allocsvr", Backend: cluster.BackendLocal, TimeLimit: time.Minute, Seed: 1,
				Schedule: nemesis.Schedule{Interval: [2]time.Duration{time.Second, time.Second}, Hold: [2]time.Duration{time.Second, time.Second}},
			},
			Out: out, Progress: io.Discard, Abort: abort,
		})
	}()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		b, _ := os.ReadFile(filepath.Join(out, "harness.log"))
		if bytes.Contains(b, []byte("cluster serving")) {
			break
		}
		select {
		case <-done:
			t.Fatalf("the run ended before it served: %s", res.Message)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster did not serve within 3 minutes:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(procsUnder(t, out)) == 0 {
		t.Fatal("no node process found to check")
	}
	aborted := time.Now()
	close(abort)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15 s of the abort")
	}
	t.Logf("Run returned %v after the abort: %s", time.Since(aborted).Round(time.Millisecond), res.Message)
	if left := procsUnder(t, out); len(left) > 0 {
		t.Errorf("nodes left running after the abort: %v", left)
	}
	if _, err := os.Stat(filepath.Join(out, "bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bin/ is still there (%v)", err)
	}
	back, err := report.Load(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatalf("no report after the abort: %v", err)
	}
	if back.ExitCode != report.ExitHarness || !strings.HasPrefix(back.HarnessError, "interrupted") || len(back.Logs) == 0 {
		t.Errorf("results.json: exit %d, harness error %q, logs %v", back.ExitCode, back.HarnessError, back.Logs)
	}
	for _, c := range back.Checkers {
		if c.Verdict != checker.Unknown {
			t.Errorf("check %s/%s: %s, want unknown", c.Workload, c.Checker, c.Verdict)
		}
	}
	for _, f := range back.Faults {
		if f.End < f.Start {
			t.Errorf("fault %+v ends before it starts", f)
		}
	}
}
