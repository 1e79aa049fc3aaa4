package jepsen

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seqd/seqd/jepsen/cluster"
	"github.com/seqd/seqd/jepsen/nemesis"
	"github.com/seqd/seqd/jepsen/report"
)

// A short run on the rootless backend: it must pass, say which faults it
// skipped, and write a complete report.
func TestRunLocal(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: builds seqd and runs a cluster; not with -short")
	}
	out := filepath.Join(t.TempDir(), "run")
	var progress bytes.Buffer
	res := Run(context.Background(), Options{
		Spec: report.Spec{
			Workload: "alloc", Nemesis: "kill:allocsvr,pause:allocsvr,partition", Backend: cluster.BackendLocal,
			TimeLimit: 8 * time.Second, Quiet: 2 * time.Second, Seed: 1,
			Schedule: nemesis.Schedule{Interval: [2]time.Duration{time.Second, 2 * time.Second}, Hold: [2]time.Duration{time.Second, 2 * time.Second}},
		},
		Out: out, Progress: &progress,
	})
	if res.ExitCode != report.ExitPass {
		t.Fatalf("exit %d: %s\n%s", res.ExitCode, res.Message, progress.String())
	}
	if len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0], "partition") || !strings.Contains(progress.String(), "SKIPPED FAULT: partition") {
		t.Errorf("skipped faults %v; progress should say partition was skipped:\n%s", res.Skipped, progress.String())
	}
	if len(res.Faults) == 0 || res.Ops["alloc.ok"] < 1000 {
		t.Errorf("%d faults, %d successful operations", len(res.Faults), res.Ops["alloc.ok"])
	}
	for _, f := range []string{"results.json", "index.html", "alloc-linearizability.html", "alloc-history.jsonl.gz", "harness.log", "logs/arb1.log"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("report file: %v", err)
		}
	}
	back, err := report.Load(filepath.Join(out, "results.json"))
	if err != nil || back.Spec.Seed != 1 || back.Spec.Backend != cluster.BackendLocal {
		t.Errorf("results.json spec %+v, %v", back.Spec, err)
	}
}
