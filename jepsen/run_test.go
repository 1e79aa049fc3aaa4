package jepsen

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/seqd/seqd/internal/bugs"
	"github.com/seqd/seqd/jepsen/checker"
	"github.com/seqd/seqd/jepsen/cluster"
	"github.com/seqd/seqd/jepsen/nemesis"
	"github.com/seqd/seqd/jepsen/report"
	"github.com/seqd/seqd/jepsen/workload"
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

// Validate names the flag and the rule for every out-of-range field, also
// in a spec read back from a results.json (seqjepsen repro).
func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*report.Spec)
		want string
	}{
		{"rate NaN", func(s *report.Spec) { s.Alloc.Rate = math.NaN() }, "--rate NaN: must be a finite"},
		{"rate Inf", func(s *report.Spec) { s.Alloc.Rate = math.Inf(1) }, "--rate +Inf: must be a finite"},
		{"rate negative", func(s *report.Spec) { s.Alloc.Rate = -1 }, "--rate -1: must be above zero"},
		{"rate negative zero", func(s *report.Spec) { s.Alloc.Rate = math.Copysign(0, -1) }, "--rate -0: must be above zero"},
		{"rate huge", func(s *report.Spec) { s.Alloc.Rate = 1e300 }, "--rate 1e+300: must be at most"},
		{"time-limit negative", func(s *report.Spec) { s.TimeLimit = -5 * time.Second }, "--time-limit -5s: must be above zero"},
		{"time-limit huge", func(s *report.Spec) { s.TimeLimit = 1000 * time.Hour }, "--time-limit 1000h0m0s: must be at most 24h0m0s"},
		{"quiet negative", func(s *report.Spec) { s.Quiet = -time.Second }, "--quiet -1s: must be above zero"},
		{"lease negative", func(s *report.Spec) { s.Lease = -2 * time.Second }, "--lease -2s: must be above zero"},
		{"lease tiny", func(s *report.Spec) { s.Lease = time.Nanosecond }, "--lease 1ns: must be at least 100ms"},
		{"check-timeout negative", func(s *report.Spec) { s.CheckTimeout = -time.Second }, "--check-timeout -1s: must be above zero"},
		{"allocsvrs huge", func(s *report.Spec) { s.AllocSvrs = 9 }, "--allocsvrs 9: must be at most 3"},
		{"allocsvrs negative", func(s *report.Spec) { s.AllocSvrs = -1 }, "--allocsvrs -1: must be above zero"},
		{"step huge", func(s *report.Spec) { s.Step = math.MaxUint64 }, "--step 18446744073709551615: must be at most"},
		{"interval negative", func(s *report.Spec) { s.Schedule.Interval = [2]time.Duration{-time.Second, time.Second} }, "--fault-interval -1s-1s: both bounds"},
		{"interval inverted", func(s *report.Spec) { s.Schedule.Interval = [2]time.Duration{10 * time.Second, 3 * time.Second} }, "--fault-interval 10s-3s: the upper bound is below"},
		{"hold zero lower", func(s *report.Spec) { s.Schedule.Hold = [2]time.Duration{0, time.Second} }, "--fault-hold 0s-1s: both bounds"},
		{"hold huge", func(s *report.Spec) { s.Schedule.Hold = [2]time.Duration{time.Second, 2 * time.Hour} }, "--fault-hold 1s-2h0m0s: must be at most 1h0m0s"},
		{"nemesis blank", func(s *report.Spec) { s.Nemesis = " " }, "empty entry"},
		{"nemesis duplicate", func(s *report.Spec) { s.Nemesis = "kill,pause,kill" }, "kill given twice"},
		{"nemesis duplicate target", func(s *report.Spec) { s.Nemesis = "partition:halves+bridge+halves" }, "target halves of partition given twice"},
		{"nemesis none and faults", func(s *report.Spec) { s.Nemesis = "kill,none" }, `"none" cannot be combined`},
		{"nemesis unknown", func(s *report.Spec) { s.Nemesis = "flood" }, `unknown nemesis "flood"`},
		{"format bug without upgrades", func(s *report.Spec) { s.Workload, s.Bug, s.Nemesis = "messages", bugs.ProposeNewerFormatEarly, "kill" },
			"add upgrade to --nemesis"},
		{"store-shards huge", func(s *report.Spec) { s.Workload, s.StoreShards = "messages", 4 }, "--store-shards 4: must be at most 3"},
		{"store-shards negative", func(s *report.Spec) { s.StoreShards = -1 }, "--store-shards -1: must be above zero"},
		{"store-shards without a store", func(s *report.Spec) { s.StoreShards = 2 }, "the alloc workload runs no message store"},
		{"store-shards partition on one shard", func(s *report.Spec) { s.Workload, s.Nemesis = "messages", "partition:store-shards" }, "add --store-shards 2"},
		{"retention without a store", func(s *report.Spec) { s.Retention = 10 * time.Second }, "--retention 10s: the alloc workload runs no message store"},
		{"retention under a second", func(s *report.Spec) { s.Workload, s.Retention = "messages", 500*time.Millisecond }, "--retention 500ms: must be at least 1s"},
		{"retention negative", func(s *report.Spec) { s.Workload, s.Retention = "messages", -time.Second }, "--retention -1s: must be above zero"},
		{"retention within the quiet period", func(s *report.Spec) { s.Workload, s.Retention = "messages", 5*time.Second },
			"--retention 5s: must be longer than --quiet 10s"},
		{"retention huge", func(s *report.Spec) { s.Workload, s.Retention = "messages", time.Hour }, "--retention 1h0m0s: must be at most 5m0s"},
		{"retention bug without retention", func(s *report.Spec) { s.Workload, s.Bug, s.Nemesis = "messages", bugs.ExpireKeepsUnread, "kill" },
			"add --retention 30s"},
		{"cross-shard bug on one shard", func(s *report.Spec) { s.Workload, s.Bug, s.Nemesis = "messages", bugs.RedeliverWithoutDedup, "kill" },
			"add --store-shards 2"},
		{"store faults without a store", func(s *report.Spec) { s.Nemesis = "upgrade,kill" }, "upgrade faults only a message store, which the alloc workload does not run"},
		{"a store target without a store", func(s *report.Spec) { s.Nemesis = "pause:store" }, "pause:store faults only a message store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := report.Spec{Backend: cluster.BackendLocal}
			Defaults(&s)
			tc.edit(&s)
			if _, err := Validate(s); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
	for _, nem := range []string{"partition:store-shards", "upgrade:store-follower,kill:store-leader", "upgrade,kill"} {
		s := report.Spec{Backend: cluster.BackendLocal, Workload: "all", StoreShards: 3, Nemesis: nem}
		Defaults(&s)
		if _, err := Validate(s); err != nil {
			t.Errorf("3 store shards, nemesis %q: %v", nem, err)
		}
	}
	for _, nem := range []string{"", "none", "kill,pause,partition", "kill:one+leader,partition:halves"} {
		s := report.Spec{Backend: cluster.BackendLocal, Nemesis: nem, Alloc: workload.AllocOptions{Rate: 500}}
		Defaults(&s)
		if _, err := Validate(s); err != nil {
			t.Errorf("nemesis %q: %v", nem, err)
		}
	}
}

// A run refused before it starts leaves nothing behind: no run directory,
// no half report.
func TestRunBadOptionsWriteNothing(t *testing.T) {
	tmp := t.TempDir()
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"NaN rate", Options{Spec: report.Spec{Alloc: workload.AllocOptions{Rate: math.NaN()}}}, "--rate NaN"},
		{"src missing", Options{Src: filepath.Join(tmp, "nonexistent")}, "is not a seqd source tree"},
		{"src without cmd/seqd", Options{Src: fakeTree(t, "")}, "has no cmd/seqd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Backend, tc.o.Out = cluster.BackendLocal, filepath.Join(tmp, "run")
			res := Run(context.Background(), tc.o)
			if res.ExitCode != report.ExitHarness || !strings.Contains(res.HarnessError, tc.want) {
				t.Errorf("exit %d, harness error %q; want 2 with %q", res.ExitCode, res.HarnessError, tc.want)
			}
			if _, err := os.Stat(tc.o.Out); err == nil {
				t.Errorf("created %s", tc.o.Out)
			}
		})
	}
}

// A source tree that does not build fails the run with go's output in the
// error and the progress, not just "exit status 1". No cluster starts.
func TestRunBuildFailureShowsOutput(t *testing.T) {
	src := fakeTree(t, "package main\n\nfunc main() { undefinedThing() }\n")
	out := filepath.Join(t.TempDir(), "run")
	var progress bytes.Buffer
	res := Run(context.Background(), Options{Spec: report.Spec{Backend: cluster.BackendLocal, Nemesis: "kill"}, Src: src, Out: out, Progress: &progress})
	if res.ExitCode != report.ExitHarness || !strings.HasPrefix(res.HarnessError, "--src "+src+": cannot build cmd/seqd") {
		t.Fatalf("exit %d, harness error %q", res.ExitCode, res.HarnessError)
	}
	for _, where := range []string{res.HarnessError, progress.String()} {
		if !strings.Contains(where, "undefinedThing") {
			t.Errorf("the build's output is missing from:\n%s", where)
		}
	}
}

// fakeTree is a seqd source tree of only a go.mod and, unless main is
// empty, a cmd/seqd/main.go holding main.
func fakeTree(t *testing.T, main string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module github.com/seqd/seqd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if main == "" {
		return dir
	}
	if err := os.MkdirAll(filepath.Join(dir, "cmd", "seqd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cmd", "seqd", "main.go"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A run interrupted before its cluster is up says so: the failure it
// records is the interrupt's, not the killed build's or the start's.
func TestInterruptBeforeTheRunIsNamed(t *testing.T) {
	src := t.TempDir()
	for path, body := range map[string]string{"go.mod": "module github.com/seqd/seqd\n", "cmd/seqd/main.go": "package main\n\nfunc main() {}\n"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, path), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("interrupt"))
	res := Run(ctx, Options{
		Spec: report.Spec{Workload: "alloc", Backend: cluster.BackendLocal, TimeLimit: 5 * time.Second, Seed: 1},
		Src:  src, Out: filepath.Join(t.TempDir(), "run"), Progress: io.Discard,
	})
	if res.ExitCode != report.ExitHarness || !strings.HasPrefix(res.HarnessError, "interrupted (interrupt) while") {
		t.Fatalf("exit %d, harness error %q; want 2 and the interrupt named", res.ExitCode, res.HarnessError)
	}
}

// The repro command names a directory next to the run's, never inside it,
// however --out was spelt.
func TestReproCommandNamesASiblingDirectory(t *testing.T) {
	tmp := t.TempDir()
	t.Chdir(tmp)
	for _, tc := range []struct{ out, want string }{
		{filepath.Join(tmp, "run"), filepath.Join(tmp, "run-repro")},
		{filepath.Join(tmp, "run") + "/", filepath.Join(tmp, "run-repro")},
		{"runs/7//", "runs/7-repro"},
		{".", tmp + "-repro"},
	} {
		// A NaN rate stops the run before it writes anything.
		res := Run(context.Background(), Options{Spec: report.Spec{Backend: cluster.BackendLocal, Alloc: workload.AllocOptions{Rate: math.NaN()}}, Out: tc.out})
		if got := res.Command[len(res.Command)-1]; res.Command[len(res.Command)-2] != "--out" || got != tc.want {
			t.Errorf("--out %q: the repro command ends %q, want --out %q", tc.out, res.Command[len(res.Command)-2:], tc.want)
		}
	}
}

// nemesisOf is a nemesis of a kind, for what only asks its kind.
type nemesisOf string

func (n nemesisOf) Kind() string     { return string(n) }
func (n nemesisOf) Background() bool { return false }
func (n nemesisOf) Inject(context.Context, *nemesis.Env, *nemesis.Dealer) (*nemesis.Active, error) {
	return nil, errors.New("not for injecting")
}
func (n nemesisOf) HealAll(context.Context, *nemesis.Env) error { return nil }

// A target named in --nemesis that no fault of its kind picked is not
// tested, however often the kind came up; a kind that came up but missed
// none of what was asked of it is.
func TestNotDrawnNamesTargetsNeverDrawn(t *testing.T) {
	specs, err := nemesis.ParseSpecs("kill:leader+allocsvr,pause,partition:halves+bridge")
	if err != nil {
		t.Fatal(err)
	}
	req := requested(specs, []nemesis.Nemesis{nemesisOf("kill"), nemesisOf("pause"), nemesisOf("partition")})
	if want := []string{"kill:leader", "kill:allocsvr", "pause", "partition:halves", "partition:bridge"}; !slices.Equal(req, want) {
		t.Fatalf("requested %v, want %v", req, want)
	}
	fault := func(kind, target string) nemesis.Fault {
		if target == "" {
			return nemesis.Fault{Kind: kind, Desc: "not injected: no leader", Err: "no leader"}
		}
		return nemesis.Fault{Kind: kind, Target: target}
	}
	for _, tc := range []struct {
		name   string
		faults []nemesis.Fault
		want   []string
	}{
		{"every one", []nemesis.Fault{fault("kill", "leader"), fault("pause", "one"), fault("partition", "bridge"), fault("kill", "allocsvr"), fault("partition", "halves")}, nil},
		{"one target never picked", []nemesis.Fault{fault("kill", "leader"), fault("pause", "one"), fault("partition", "bridge"), fault("kill", "leader"), fault("partition", "halves"), fault("kill", "leader")},
			[]string{"kill:allocsvr"}},
		{"a target only failed", []nemesis.Fault{fault("kill", "leader"), fault("kill", ""), fault("pause", ""), fault("partition", "halves"), fault("partition", "bridge")},
			[]string{"kill:allocsvr"}},
		{"a kind never drawn", []nemesis.Fault{fault("kill", "leader"), fault("kill", "allocsvr")},
			[]string{"pause", "partition:halves", "partition:bridge"}},
	} {
		if got := notDrawn(req, tc.faults); !slices.Equal(got, tc.want) {
			t.Errorf("%s: not drawn %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A pass says what it did not test: faults never drawn, and faults or
// workloads the backend skipped (the local backend cannot partition).
func TestPassMessageNamesWhatWasNotTested(t *testing.T) {
	res := &report.Results{Ops: map[string]uint64{"alloc.total": 10}}
	if got := message(res); got != "PASS: every checker passed (10 operations, 0 faults)." {
		t.Errorf("plain pass: %q", got)
	}
	res.NotDrawn = []string{"pause"}
	res.Skipped = []string{"partition (the local backend cannot cut links)"}
	got := message(res)
	if !strings.Contains(got, "never drawn, so not tested: pause.") || !strings.Contains(got, "Skipped, so not tested: partition (the local backend cannot cut links).") {
		t.Errorf("pass with faults not tested: %q", got)
	}
}

// A drain fault whose own admin call got an answer the cluster must not
// give fails the run, through the nemesis/admin-answers checker.
func TestWrongAdminAnswerFailsTheRun(t *testing.T) {
	faults := []nemesis.Fault{
		{Kind: "drain", Desc: "drain alloc1", End: time.Second},
		{Kind: "kill", Desc: "kill -9 alloc2", End: 2 * time.Second},
		{Kind: "drain", Desc: "not injected", End: 3 * time.Second, Err: "wrong answer: ...", Anomaly: `drain alloc1: rpc error: code = NotFound (the AllocSvr is registered)`},
	}
	c, ok := faultAnswersFor(true, faults[:2])
	if !ok || c.Verdict != checker.Pass || c.Count != 0 || !strings.Contains(c.Summary, "1 drain faults") {
		t.Fatalf("clean faults: %v %+v", ok, c)
	}
	// An aborted run (no drains counted as asked) adds the check only
	// when it has something to report.
	if _, ok := faultAnswersFor(false, faults[:2]); ok {
		t.Fatal("a check of clean faults in a run that asked for no drains")
	}
	c, ok = faultAnswersFor(false, faults)
	if !ok {
		t.Fatal("no check of a wrong answer in a run that asked for no drains (an aborted one)")
	}
	if c.Verdict != checker.Fail || c.Count != 1 || len(c.Findings) != 1 || c.Findings[0].At != 3*time.Second || !strings.Contains(c.Findings[0].Msg, "NotFound") {
		t.Fatalf("a wrong answer: %+v", c)
	}
	res := &report.Results{Ops: map[string]uint64{}, Checkers: []checker.Result{c}}
	if got := message(res); !strings.HasPrefix(got, "ANOMALY: 1 anomalies found by nemesis/admin-answers (1)") {
		t.Errorf("message: %q", got)
	}
}
