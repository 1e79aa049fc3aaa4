package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/seqd/seqd/internal/bugs"
	"github.com/seqd/seqd/jepsen"
	"github.com/seqd/seqd/jepsen/nemesis"
	"github.com/seqd/seqd/jepsen/report"
)

func seqjepsen(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// A short messages run on loopback with crashes passes every G2/G3 checker.
func TestMessagesWorkloadPasses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds seqd and runs a cluster; skipped with -short")
	}
	out := t.TempDir()
	code, stdout, stderr := seqjepsen("run", "--workload", "messages", "--nemesis", "kill", "--time-limit", "8s", "--quiet", "3s",
		"--seed", "11", "--backend", "local", "--out", out)
	if code != report.ExitPass {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	for _, c := range []string{"no-lost-sends", "no-doubled-retries", "inbox-order", "subscribe-gap-free", "unread-agrees", "mark-read-accepted", "replicas-agree", "no-halted-replica"} {
		if !strings.Contains(stderr+stdout, "messages/"+c+": pass") {
			t.Errorf("checker %s did not report a pass:\n%s", c, stderr)
		}
	}
}

func TestBadArgumentsExit2(t *testing.T) {
	for _, args := range [][]string{
		{"run", "--nemesis", "earthquake", "--backend", "local"},
		{"run", "--bug", "no-such-bug", "--backend", "local"},
		{"run", "--bug", "skip-client-msg-id-dedup", "--workload", "alloc", "--nemesis", "kill", "--backend", "local"},
		{"run", "--backend", "vm"},
		{"run", "--fault-interval", "10s-3s", "--backend", "local"},
		{"run", "--scenario", "no-such-scenario"},
		{"frobnicate"},
		{"repro"},
	} {
		if code, _, _ := seqjepsen(args...); code != report.ExitHarness {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// Every planted bug has a scenario that must catch it, once the workload
// that exercises it exists, and every scenario names faults and bugs that
// exist.
func TestScenariosCoverEveryBug(t *testing.T) {
	for _, b := range bugs.Known {
		w := jepsen.BugWorkload(b)
		sc, ok := jepsen.ScenarioForBug(b.Name)
		if !ok || sc.Expect != "fail" || sc.Workload != w {
			t.Errorf("bug %s has no %s scenario expected to catch it", b.Name, w)
		}
	}
	for _, sc := range jepsen.Scenarios() {
		if _, err := nemesis.ParseSpecs(sc.Nemesis); err != nil {
			t.Errorf("scenario %s: %v", sc.Name, err)
		}
		if sc.Bug != "" {
			if _, ok := bugs.Lookup(sc.Bug); !ok {
				t.Errorf("scenario %s plants unknown bug %q", sc.Name, sc.Bug)
			}
		}
		if sc.Expect != "pass" && sc.Expect != "fail" {
			t.Errorf("scenario %s expects %q", sc.Name, sc.Expect)
		}
	}
	code, out, _ := seqjepsen("scenarios")
	if code != 0 {
		t.Fatalf("scenarios: exit %d", code)
	}
	for _, b := range bugs.Known {
		if !strings.Contains(out, b.Name) {
			t.Errorf("scenarios output lacks %s", b.Name)
		}
	}
}

// repro writes next to the run it replays, never inside it, however the
// run was named: with a trailing slash, or as results.json from within.
func TestReproWritesNextToTheRun(t *testing.T) {
	tmp := t.TempDir()
	src := brokenTree(t) // the replay stops at the build, after creating its directory
	spec := `{"spec":{"workload":"alloc","nemesis":"none","backend":"local","seed":1}}`
	for _, tc := range []struct {
		name string
		arg  func(t *testing.T, run string) string
	}{
		{"directory with a slash", func(_ *testing.T, run string) string { return run + "/" }},
		{"results.json from within", func(t *testing.T, run string) string { t.Chdir(run); return "results.json" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := filepath.Join(tmp, strings.ReplaceAll(tc.name, " ", "-"))
			writeFile(t, filepath.Join(run, "results.json"), spec)
			code, _, stderr := seqjepsen("repro", tc.arg(t, run), "--src", src)
			_, out, ok := strings.Cut(stderr, "report in ")
			out, _, _ = strings.Cut(out, "\n")
			if code != report.ExitHarness || !ok {
				t.Fatalf("exit %d; want 2 from the broken build, after naming the run directory:\n%s", code, stderr)
			}
			if filepath.Dir(out) != tmp || !strings.HasPrefix(filepath.Base(out), filepath.Base(run)+"-repro-") {
				t.Errorf("the replay went to %s; want %s-repro-<time> next to it", out, run)
			}
			if entries, _ := os.ReadDir(run); len(entries) != 1 {
				t.Errorf("the replayed run's directory now holds %v", entries)
			}
		})
	}
}
