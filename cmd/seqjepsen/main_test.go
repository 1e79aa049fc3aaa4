package main

import (
	"bytes"
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
