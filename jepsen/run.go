// Package jepsen runs seqd under faults and checks that it kept its
// guarantees: it starts a real multi-process cluster (jepsen/cluster),
// drives workloads against it (jepsen/workload), injects faults on a seeded
// schedule (jepsen/nemesis), judges the recorded history
// (jepsen/checker), and writes a report (jepsen/report).
package jepsen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/seqd/seqd/internal/bugs"
	"github.com/seqd/seqd/jepsen/checker"
	"github.com/seqd/seqd/jepsen/cluster"
	"github.com/seqd/seqd/jepsen/nemesis"
	"github.com/seqd/seqd/jepsen/report"
	"github.com/seqd/seqd/jepsen/workload"
)

// Options is a run: the spec (what to do) and where and how to do it.
type Options struct {
	report.Spec
	// Out is the run directory; it must not hold an earlier run.
	Out string
	// Src is the seqd source tree to build (default: found upwards from
	// the working directory).
	Src string
	// Progress receives the live progress lines (nil: none).
	Progress io.Writer
	// Abort, when it closes, cuts the run short: a second Ctrl-C, after
	// the first cancelled ctx. See Run.
	Abort <-chan struct{}
}

// Defaults fills zero fields of a spec.
func Defaults(s *report.Spec) {
	if s.Workload == "" {
		s.Workload = "alloc"
	}
	if s.TimeLimit == 0 {
		s.TimeLimit = 60 * time.Second
	}
	if s.Quiet == 0 {
		s.Quiet = 10 * time.Second
	}
	if s.Backend == "" {
		s.Backend = cluster.DefaultBackend()
	}
	if s.AllocSvrs == 0 {
		s.AllocSvrs = 2
	}
	if s.StoreShards == 0 {
		s.StoreShards = 1
	}
	if s.Lease == 0 {
		s.Lease = 2 * time.Second
	}
	if s.Step == 0 {
		// Hot keys run through a step within one lease (the raise path is
		// always busy); warm keys do not (an old owner keeps serving them).
		s.Step = 1000
	}
	if s.Schedule.Interval[1] == 0 {
		s.Schedule.Interval = nemesis.DefaultSchedule.Interval
	}
	if s.Schedule.Hold[1] == 0 {
		s.Schedule.Hold = nemesis.DefaultSchedule.Hold
	}
	if s.CheckTimeout == 0 {
		s.CheckTimeout = 3 * time.Minute
	}
}

// Limits of a spec's numbers: past them a value is a typo, not a test.
const (
	maxTimeLimit    = 24 * time.Hour
	maxQuiet        = time.Hour
	minLease        = 100 * time.Millisecond
	maxLease        = time.Minute
	maxStep         = 1_000_000_000
	maxCheckTimeout = 24 * time.Hour
	maxFaultTime    = time.Hour
	maxRate         = 1_000_000
	maxStoreShards  = 3
	// The store refuses a retention under a second; the messages
	// workload waits out the retention after the run, so it is kept short.
	minRetention = time.Second
	maxRetention = 5 * time.Minute
)

// Validate checks a spec (with Defaults applied) before anything starts.
// Its errors name the seqjepsen run flag that sets the bad field.
func Validate(s report.Spec) ([]nemesis.Spec, error) {
	wls, _, err := workload.New(s.Workload, s.Alloc)
	if err != nil {
		return nil, fmt.Errorf("--workload: %w", err)
	}
	specs, err := nemesis.ParseSpecs(s.Nemesis)
	if err != nil {
		return nil, fmt.Errorf("--nemesis %q: %w", s.Nemesis, err)
	}
	if err := checkNumbers(s); err != nil {
		return nil, err
	}
	if s.Bug != "" {
		b, ok := bugs.Lookup(s.Bug)
		if !ok {
			var names []string
			for _, b := range bugs.Known {
				names = append(names, b.Name)
			}
			return nil, fmt.Errorf("unknown bug %q; planted bugs: %s", s.Bug, strings.Join(names, ", "))
		}
		if w := BugWorkload(b); s.Workload != w && s.Workload != "all" {
			return nil, fmt.Errorf("bug %s breaks %s, which only the %s workload exercises; run --workload %s", b.Name, b.Breaks, w, w)
		}
		if b.Name == bugs.ProposeNewerFormatEarly && !hasNemesis(specs, "upgrade") {
			return nil, fmt.Errorf("bug %s only shows while a store shard runs mixed builds; add upgrade to --nemesis", b.Name)
		}
		if (b.Name == bugs.ExpireTooEarly || b.Name == bugs.ExpireKeepsUnread) && s.Retention == 0 {
			return nil, fmt.Errorf("bug %s only shows while the store removes old events; add --retention 30s", b.Name)
		}
		if b.Name == bugs.RedeliverWithoutDedup && s.StoreShards < 2 {
			return nil, fmt.Errorf("bug %s only shows with deliveries between store shards; add --store-shards 2", b.Name)
		}
	}
	if !workload.NeedsStore(wls) {
		// Refused now: the run would start, and find no node to fault.
		for _, sp := range specs {
			targets := sp.Targets
			if len(targets) == 0 {
				targets = nemesis.Kinds[sp.Kind]
			}
			if len(targets) > 0 && !slices.ContainsFunc(targets, func(t string) bool { return !nemesis.StoreOnly(t) }) {
				return nil, fmt.Errorf("--nemesis %q: %s faults only a message store, which the %s workload does not run; use --workload messages or all", s.Nemesis, sp, s.Workload)
			}
			for _, t := range sp.Targets {
				if nemesis.StoreOnly(t) {
					return nil, fmt.Errorf("--nemesis %q: target %s of %s needs a message store, which the %s workload does not run; use --workload messages or all", s.Nemesis, t, sp.Kind, s.Workload)
				}
			}
		}
	}
	cutsShards := slices.ContainsFunc(specs, func(sp nemesis.Spec) bool {
		return sp.Kind == "partition" && slices.Contains(sp.Targets, "store-shards")
	})
	if cutsShards && s.StoreShards < 2 {
		return nil, fmt.Errorf("--nemesis %q: partition store-shards cuts store shards from each other; add --store-shards 2", s.Nemesis)
	}
	if s.Retention != 0 {
		if err := bounded("retention", s.Retention, minRetention, maxRetention); err != nil {
			return nil, err
		}
		if !workload.NeedsStore(wls) {
			return nil, fmt.Errorf("--retention %v: the %s workload runs no message store; use --workload messages or all", s.Retention, s.Workload)
		}
		if s.Retention <= s.Quiet {
			// The reads right after the run can hold only what was sent in
			// the last D: with D within the quiet period, none of what was
			// sent under faults.
			return nil, fmt.Errorf("--retention %v: must be longer than --quiet %v, or no send made under faults is checked", s.Retention, s.Quiet)
		}
	}
	if s.StoreShards > 1 {
		if !workload.NeedsStore(wls) {
			return nil, fmt.Errorf("--store-shards %d: the %s workload runs no message store; use --workload messages or all, or --store-shards 1", s.StoreShards, s.Workload)
		}
	}
	if s.Backend != cluster.BackendNetns && s.Backend != cluster.BackendLocal {
		return nil, fmt.Errorf("--backend: unknown backend %q; use netns or local", s.Backend)
	}
	return specs, nil
}

// hasNemesis reports whether specs hold a fault of kind.
func hasNemesis(specs []nemesis.Spec, kind string) bool {
	return slices.ContainsFunc(specs, func(s nemesis.Spec) bool { return s.Kind == kind })
}

// checkNumbers checks the spec's durations, counts and rate against their
// limits.
func checkNumbers(s report.Spec) error {
	for _, d := range []struct {
		flag      string
		v, lo, hi time.Duration
	}{
		{"time-limit", s.TimeLimit, 1, maxTimeLimit},
		{"quiet", s.Quiet, 1, maxQuiet},
		{"lease", s.Lease, minLease, maxLease},
		{"check-timeout", s.CheckTimeout, 1, maxCheckTimeout},
	} {
		if err := bounded(d.flag, d.v, d.lo, d.hi); err != nil {
			return err
		}
	}
	if err := bounded("allocsvrs", s.AllocSvrs, 2, 3); err != nil {
		return err
	}
	if err := bounded("store-shards", s.StoreShards, 1, maxStoreShards); err != nil {
		return err
	}
	if err := bounded("step", s.Step, 1, maxStep); err != nil {
		return err
	}
	if r := s.Alloc.Rate; math.IsNaN(r) || math.IsInf(r, 0) {
		return fmt.Errorf("--rate %v: must be a finite number of operations per second", r)
	} else if r != 0 || math.Signbit(r) { // 0 is a closed loop
		if err := bounded("rate", r, 0, maxRate); err != nil {
			return err
		}
	}
	if err := CheckRange("fault-interval", s.Schedule.Interval); err != nil {
		return err
	}
	return CheckRange("fault-hold", s.Schedule.Hold)
}

// bounded says whether flag's value v is above zero and within [lo, hi].
func bounded[T int | uint64 | float64 | time.Duration](flag string, v, lo, hi T) error {
	switch {
	case v <= 0 || math.Signbit(float64(v)):
		return fmt.Errorf("--%s %v: must be above zero", flag, v)
	case v < lo:
		return fmt.Errorf("--%s %v: must be at least %v", flag, v, lo)
	case v > hi:
		return fmt.Errorf("--%s %v: must be at most %v", flag, v, hi)
	}
	return nil
}

// CheckRange checks a --fault-interval or --fault-hold range: both bounds
// above zero, the upper not below the lower, and neither past an hour.
func CheckRange(flag string, r [2]time.Duration) error {
	switch {
	case r[0] <= 0 || r[1] <= 0:
		return fmt.Errorf("--%s %v-%v: both bounds must be above zero", flag, r[0], r[1])
	case r[1] < r[0]:
		return fmt.Errorf("--%s %v-%v: the upper bound is below the lower", flag, r[0], r[1])
	case r[1] > maxFaultTime:
		return fmt.Errorf("--%s %v-%v: must be at most %v", flag, r[0], r[1], maxFaultTime)
	}
	return nil
}

// Check validates o before anything is created: the spec (Defaults are
// applied), the source tree (Src is resolved when empty) and the run
// directory, which must be new or empty and not lie under a file. Run
// calls it first; a caller that wants bad options to be a usage error,
// with nothing written, calls it before Run.
func Check(o *Options) ([]nemesis.Spec, error) {
	Defaults(&o.Spec)
	specs, err := Validate(o.Spec)
	if err != nil {
		return nil, err
	}
	if err := checkOut(o.Out); err != nil {
		return nil, err
	}
	if o.Src == "" {
		if o.Src, err = cluster.ModuleRoot("."); err != nil {
			return nil, err
		}
	}
	if err := checkSrc(o.Src); err != nil {
		return nil, err
	}
	return specs, nil
}

// checkOut says whether out can become a new run directory.
func checkOut(out string) error {
	if out == "" {
		return errors.New("--out: give a directory for the report")
	}
	entries, err := os.ReadDir(out)
	switch {
	case err == nil && len(entries) > 0:
		if _, err := os.Stat(filepath.Join(out, "results.json")); err == nil {
			return fmt.Errorf("--out %s already holds a run; pick a new directory", out)
		}
		return fmt.Errorf("--out %s is not empty (it holds %s); pick a new or empty directory", out, entries[0].Name())
	case err == nil:
		return writable(out, out)
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("--out %s: %w", out, err)
	}
	// New: the nearest existing parent must be a directory.
	for d := filepath.Dir(filepath.Clean(out)); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err == nil && !st.IsDir() {
			return fmt.Errorf("--out %s: %s is not a directory", out, d)
		}
		if err == nil {
			return writable(out, d)
		}
		if !errors.Is(err, os.ErrNotExist) || d == filepath.Dir(d) {
			return fmt.Errorf("--out %s: %w", out, err)
		}
	}
}

// writable says whether this process may create files in dir (the run
// directory out, or the parent it would be created in): a read-only mount
// or a directory without write permission fails here, before the run.
func writable(out, dir string) error {
	if err := syscall.Access(dir, 2 /* W_OK */); err != nil {
		return fmt.Errorf("--out %s: %s is not writable: %w", out, dir, err)
	}
	return nil
}

// MakeOut creates the run directory out (empty: Check still accepts it).
func MakeOut(out string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("--out %s: cannot create the run directory: %w", out, err)
	}
	return nil
}

// checkSrc says whether src is the root of a seqd source tree.
func checkSrc(src string) error {
	abs, err := filepath.Abs(src)
	if err != nil {
		return fmt.Errorf("--src %s: %w", src, err)
	}
	root, err := cluster.ModuleRoot(abs)
	switch {
	case err != nil:
		return fmt.Errorf("--src %s is not a seqd source tree: it has no go.mod of github.com/seqd/seqd", src)
	case root != abs:
		return fmt.Errorf("--src %s is not a seqd source tree but inside one: pass --src %s", src, root)
	}
	if st, err := os.Stat(filepath.Join(root, "cmd", "seqd")); err != nil || !st.IsDir() {
		return fmt.Errorf("--src %s is not a seqd source tree: it has no cmd/seqd", src)
	}
	return nil
}

// BugWorkload names the workload that can catch b: alloc for G1, messages
// for G2 and G3.
func BugWorkload(b bugs.Bug) string {
	if b.Breaks == "G1" {
		return "alloc"
	}
	return "messages"
}

// Run runs one test and writes its report into o.Out. It always returns
// results (with HarnessError set when the harness itself failed); the
// exit code is in them.
//
// Cancelling ctx (the first Ctrl-C) stops the run gracefully: it heals,
// checks what was recorded and reports. Closing o.Abort (the second)
// cuts that short: Run kills every node, removes the network and the
// built binaries, writes a report marked interrupted whose checks are
// all unknown, and returns within seconds (abortStartWait plus the
// teardown), whatever the run was doing. The run's own goroutine may
// still be winding down then, writing nothing more; a caller that
// aborts is expected to exit.
func Run(ctx context.Context, o Options) *report.Results {
	Defaults(&o.Spec)
	start := time.Now()
	res := &report.Results{
		Spec: o.Spec, Scenario: o.Scenario, Workload: o.Workload, Backend: o.Backend, Bug: o.Bug, Seed: o.Seed,
		AllocSvrs: o.AllocSvrs, TimeLimit: o.TimeLimit, Quiet: o.Quiet, Started: start,
	}
	res.Command = o.Spec.Args(ReproOut(o.Out))
	res.CommandLine = report.ShellQuote(res.Command)
	r := &run{o: o, res: res, start: start, started: make(chan struct{})}
	if f, ok := o.Progress.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			r.tty = true
		}
	}
	base := *res // what an abort reports from, before the run writes to res
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var stopHard context.CancelFunc
	r.hard, stopHard = context.WithCancel(context.Background())
	defer stopHard()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.main(ctx)
	}()
	select {
	case <-done:
		return res
	case <-o.Abort:
		return r.abort(base, done, func() { cancel(errAborted); stopHard() })
	}
}

// ReproOut is the run directory a run's repro command names: next to
// out, never inside it, so replaying a seed leaves the evidence as it
// was (and Check refuses an --out that holds anything, so running the
// command twice cannot overwrite the first replay either).
func ReproOut(out string) string { return SiblingDir(out, "-repro") }

// SiblingDir names a directory next to dir: dir's own name with suffix
// added ("runs/7/" gives "runs/7-repro"; "." the working directory's
// name, as an absolute path).
func SiblingDir(dir, suffix string) string {
	d := filepath.Clean(dir)
	if b := filepath.Base(d); b == "." || b == ".." {
		if abs, err := filepath.Abs(d); err == nil {
			d = abs
		}
	}
	return d + suffix
}

// main is the run proper, graceful to the end: run, then finish.
func (r *run) main(ctx context.Context) {
	res := r.res
	defer func() {
		if p := recover(); p != nil {
			res.HarnessError = fmt.Sprintf("panic: %v\n%s", p, debug.Stack())
		}
		r.finish()
	}()
	if err := r.run(ctx); err != nil {
		if ctx.Err() != nil && !strings.HasPrefix(err.Error(), "interrupted") {
			// Interrupted while building or starting: what failed is the
			// interrupt's doing (a killed build, a node that had no time).
			err = fmt.Errorf("interrupted (%v) while %s", context.Cause(ctx), err)
		}
		res.HarnessError = err.Error()
		if strings.Contains(res.HarnessError, "\n") {
			// The message has the first line only (a build's output follows).
			r.logf("%s", res.HarnessError)
		}
	}
}

// maxFindings is how many anomalies per checker results.json keeps (the
// earliest); the count is always complete.
const maxFindings = 100

type run struct {
	o     Options
	res   *report.Results
	start time.Time
	// hard ends only when the run is aborted: the steps that must outlast
	// a first interrupt (the heal, the final reads, the checks) stop then.
	hard  context.Context
	log   *os.File // guarded by logMu
	logMu sync.Mutex

	// mu guards what an abort reads or changes while the run goes on in
	// its own goroutine: the run writes these fields under it (and reads
	// them without, being their only writer).
	mu       sync.Mutex
	aborted  bool
	reported bool          // finish is writing, or wrote, the report
	outMade  bool          // the run directory was created: a report goes there
	starting bool          // cluster.Start was called ...
	started  chan struct{} // ... and closed this when it returned
	c        *cluster.Cluster
	wls      []workload.Workload
	nenv     *nemesis.Env
	runner   *nemesis.Runner
	// reportMu is held while a report is written, so the run's and an
	// abort's never mix.
	reportMu sync.Mutex

	requested []string // the faults asked for, as notDrawn compares them
	samples   []workload.Sample
	fault     atomic.Value // string: faults in progress
	progress  chan struct{}
	tty       bool
}

// closeLog closes harness.log; later lines go to the progress only.
func (r *run) closeLog() {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	if r.log != nil {
		r.log.Close()
		r.log = nil
	}
}

func (r *run) logf(format string, args ...any) {
	line := fmt.Sprintf("[%7.2fs] ", time.Since(r.start).Seconds()) + fmt.Sprintf(format, args...)
	r.logMu.Lock()
	defer r.logMu.Unlock()
	if r.log != nil {
		fmt.Fprintln(r.log, line)
	}
	if r.o.Progress != nil {
		if r.tty {
			line = "\r\033[K" + line
		}
		fmt.Fprintln(r.o.Progress, line)
	}
}

func (r *run) run(ctx context.Context) error {
	// Nothing is written until every option checked out.
	specs, err := Check(&r.o)
	if err != nil {
		return err
	}
	o := r.o
	if err := r.makeOut(); err != nil {
		return err
	}
	log, err := os.Create(filepath.Join(o.Out, "harness.log"))
	if err != nil {
		return err
	}
	r.logMu.Lock()
	r.log = log
	r.logMu.Unlock()
	r.logf("seqjepsen: %s", r.res.CommandLine)
	wls, missing, err := workload.New(o.Workload, o.Alloc)
	if err != nil {
		return err
	}
	r.mu.Lock()
	for _, m := range missing {
		r.res.Skipped = append(r.res.Skipped, "workload "+m)
	}
	r.wls = wls
	r.mu.Unlock()
	for _, m := range missing {
		r.logf("SKIPPED WORKLOAD: %s", m)
	}

	// Build: release binary, or the test build when a bug or a failpoint
	// is needed. Release binaries cannot plant bugs.
	src := o.Src
	tags := ""
	if o.Bug != "" || slices.ContainsFunc(specs, func(s nemesis.Spec) bool { return strings.HasPrefix(s.Kind, "clock") }) {
		tags = "seqdbugs"
	}
	r.logf("building seqd from %s (tags %q)", src, tags)
	bin, err := cluster.Build(ctx, src, filepath.Join(o.Out, "bin"), tags)
	if err != nil {
		return fmt.Errorf("--src %s: cannot build cmd/seqd: %w", src, err)
	}
	// The upgrade nemesis moves store replicas to a build one store format
	// newer: the same code built with the seqdnext tag.
	var next string
	if hasNemesis(specs, "upgrade") {
		ntags := strings.Trim(tags+",seqdnext", ",")
		r.logf("building the newer seqd from %s (tags %q)", src, ntags)
		if next, err = cluster.Build(ctx, src, filepath.Join(o.Out, "bin"), ntags); err != nil {
			return fmt.Errorf("--src %s: cannot build the newer cmd/seqd (tags %s) for the upgrade nemesis: %w", src, ntags, err)
		}
	}
	var env []string
	if o.Bug != "" {
		env = append(env, bugs.EnvBugs+"="+o.Bug)
		r.logf("PLANTED BUG: %s", o.Bug)
	}
	stores, shards := 0, 0
	if workload.NeedsStore(wls) {
		stores, shards = 3, o.StoreShards
	}
	r.mu.Lock()
	r.res.StoreShards = shards
	r.mu.Unlock()
	c, err := r.startCluster(ctx, cluster.Options{
		Dir: o.Out, Backend: o.Backend, Binary: bin, NextBinary: next, Env: env, Failpoints: tags != "",
		AllocSvrs: o.AllocSvrs, StoreReplicas: stores, StoreShards: shards, ShardSplits: workload.MessagesShardSplits(shards), Retention: o.Retention,
		Lease: o.Lease, Step: o.Step, Logf: r.logf,
	})
	if err != nil {
		return err
	}
	nems, skipped := nemesis.Build(specs, c)
	for _, s := range skipped {
		r.logf("SKIPPED FAULT: %s", s)
	}
	r.requested = requested(specs, nems)
	r.mu.Lock()
	r.res.Skipped = append(r.res.Skipped, skipped...)
	for _, n := range specs {
		r.res.Nemeses = append(r.res.Nemeses, n.String())
	}
	r.mu.Unlock()
	if len(specs) > 0 && len(nems) == 0 {
		return fmt.Errorf("none of the requested faults (%s) can be injected on the %s backend", o.Nemesis, c.Backend())
	}

	origin := time.Now()
	wenv := &workload.Env{Cluster: c, Origin: origin, Seed: o.Seed, Logf: r.logf}
	for _, w := range r.wls {
		if err := w.Start(ctx, wenv); err != nil {
			return fmt.Errorf("workload %s: %w", w.Name(), err)
		}
	}
	r.logf("cluster serving; workload %s for %v with nemeses [%s], seed %d", o.Workload, o.TimeLimit, strings.Join(r.res.Nemeses, ", "), o.Seed)

	wctx, stopWork := context.WithCancel(r.hard)
	var wwg sync.WaitGroup
	for _, w := range r.wls {
		wwg.Add(1)
		go func(w workload.Workload) {
			defer wwg.Done()
			if err := w.Run(wctx); err != nil {
				r.logf("workload %s: %v", w.Name(), err)
			}
		}(w)
	}
	r.fault.Store("")
	r.progress = make(chan struct{})
	go r.showProgress(origin)

	nenv := &nemesis.Env{Cluster: c, Now: wenv.Now, Logf: r.logf}
	runner := nemesis.NewRunner(nenv, nems, o.Schedule, o.Seed)
	r.mu.Lock()
	r.nenv, r.runner = nenv, runner
	r.mu.Unlock()
	nctx, stopNemesis := context.WithTimeout(ctx, o.TimeLimit)
	// Run returns once every fault it began is healed and no other will
	// start, so the final heal below has the cluster to itself.
	faults := runner.Run(nctx, func(s string) { r.fault.Store(s) })
	<-nctx.Done()
	stopNemesis()
	interrupted := ctx.Err() != nil

	// Final heal, then a quiet period with the workload still running.
	r.logf("final heal")
	// A minute per store shard: the upgrade nemesis's heal restarts each
	// shard's replicas left on the older build in turn.
	hctx, cancel := context.WithTimeout(r.hard, time.Minute*time.Duration(max(1, len(c.Shards()))))
	if err := nemesis.HealAll(hctx, nenv, nems); err != nil {
		r.logf("final heal: %v", err)
	}
	cancel()
	r.fault.Store("healed, quiet period")
	if !interrupted {
		if err := c.WaitServing(r.hard, 60*time.Second); err != nil {
			r.logf("after the final heal: %v", err)
		}
		nemesis.Sleep(ctx, o.Quiet)
	}
	stopWork()
	wwg.Wait()
	r.res.WorkloadEnd = wenv.Now()
	r.fault.Store("final reads")
	if !interrupted {
		for _, w := range r.wls {
			if err := w.Final(r.hard); err != nil {
				r.logf("final reads (%s): %v", w.Name(), err)
			}
		}
	}
	close(r.progress)
	r.res.Faults = faults
	r.res.Events = c.Events()
	if interrupted {
		return errors.New("interrupted before the time limit; the history was checked anyway, but an incomplete run is no evidence of safety")
	}
	return nil
}

// finish checks the histories, stops the cluster, and writes the report.
// It runs even after a harness failure, so whatever was recorded is checked.
// After an abort it only lets go of what the run holds: the abort reports.
func (r *run) finish() {
	res := r.res
	if r.isAborted() {
		if r.c != nil {
			r.c.Close()
		}
		for _, w := range r.wls {
			w.Close()
		}
		r.closeLog()
		return
	}
	if r.c != nil {
		r.c.Close()
		for _, n := range r.c.Nodes() {
			res.Logs = append(res.Logs, filepath.Join("logs", n.ID+".log"))
		}
	}
	res.Ops = map[string]uint64{}
	for _, w := range r.wls {
		defer w.Close()
		if r.isAborted() {
			break // the abort reports; the checks would only keep the harness up
		}
		ok, failed := w.Progress()
		if ok+failed == 0 {
			continue
		}
		r.logf("checking %d %s operations", ok+failed, w.Name())
		results := w.Check(r.hard, workload.CheckOptions{Timeout: r.o.CheckTimeout})
		for i := range results {
			results[i].Trim(maxFindings)
		}
		res.Checkers = append(res.Checkers, results...)
		for k, v := range w.Counts() {
			res.Ops[w.Name()+"."+k] = v
		}
		r.samples = append(r.samples, w.Samples()...)
		res.Unavailability = append(res.Unavailability, w.Unavailability(res.Faults)...)
		if r.outMade {
			arts, err := w.Artifacts(r.hard, r.o.Out, res.Faults, results)
			if err != nil {
				r.logf("artifacts (%s): %v", w.Name(), err)
			}
			res.Artifacts = append(res.Artifacts, arts...)
		}
		for _, c := range results {
			r.logf("checker %s/%s: %s (%d anomalies)", c.Workload, c.Checker, c.Verdict, c.Count)
		}
	}
	if c, ok := faultAnswersFor(slices.ContainsFunc(r.requested, func(q string) bool { return strings.HasPrefix(q, "drain") }), res.Faults); ok {
		r.logf("checker %s/%s: %s (%d anomalies)", c.Workload, c.Checker, c.Verdict, c.Count)
		res.Checkers = append(res.Checkers, c)
	}
	if res.HarnessError == "" && len(res.Checkers) > 0 {
		// Each workload must have done enough for its checkers to mean
		// something: one busy workload must not vouch for an idle one.
		for _, w := range r.wls {
			if n, _ := w.Progress(); n < 100 {
				res.HarnessError = fmt.Sprintf("only %d %s operations succeeded: the cluster hardly served them, so the run shows nothing", n, w.Name())
				break
			}
		}
	}
	if res.HarnessError == "" {
		// A fault kind that was tried and never injected (every attempt
		// failed) did not test anything.
		tried, injected := map[string]bool{}, map[string]bool{}
		for _, f := range res.Faults {
			tried[f.Kind] = true
			if !strings.HasPrefix(f.Desc, "not injected") {
				injected[f.Kind] = true
			}
		}
		for _, k := range slices.Sorted(maps.Keys(tried)) {
			if !injected[k] {
				res.HarnessError = fmt.Sprintf("every %s fault failed to inject (see the faults in the report): the run did not test what it was asked to", k)
				break
			}
		}
	}
	// A fault asked for and never drawn was not tested: say so, a pass
	// does not cover it.
	res.NotDrawn = notDrawn(r.requested, res.Faults)
	if len(res.NotDrawn) > 0 {
		r.logf("FAULT NOT DRAWN: %s (%d faults in all; run longer, or with a shorter --fault-interval, to test every one)", strings.Join(res.NotDrawn, ", "), len(res.Faults))
	}
	r.reportMu.Lock()
	defer r.reportMu.Unlock()
	r.mu.Lock()
	aborted := r.aborted
	r.reported = !aborted
	r.mu.Unlock()
	if aborted {
		r.closeLog()
		return
	}
	r.writeReport(res, r.outMade, r.samples)
}

// writeReport finishes res, logs its message, and, if the run directory
// was made, removes bin/ (a repro rebuilds the binaries from the build
// cache) and writes results.json and the page; then it closes the log.
func (r *run) writeReport(res *report.Results, outMade bool, samples []workload.Sample) {
	res.Duration = time.Since(r.start)
	res.Finish(samples)
	res.Message = message(res)
	r.logf("%s", res.Message)
	if outMade {
		os.RemoveAll(filepath.Join(r.o.Out, "bin"))
		if err := res.WriteJSON(r.o.Out); err != nil {
			r.logf("writing results.json: %v", err)
		}
		if err := res.WriteHTML(r.o.Out, samples); err != nil {
			r.logf("writing index.html: %v", err)
		}
	}
	r.closeLog()
}

// faultAnswersFor is faultAnswers' check when the run has one: it asked
// for drains (drainsAsked), or a fault got a wrong answer.
func faultAnswersFor(drainsAsked bool, faults []nemesis.Fault) (checker.Result, bool) {
	if !drainsAsked && !slices.ContainsFunc(faults, func(f nemesis.Fault) bool { return f.Anomaly != "" }) {
		return checker.Result{}, false
	}
	return faultAnswers(faults), true
}

// faultAnswers checks the answers the cluster gave the nemeses' own admin
// calls (a drain, an undrain): an answer it must not give (NOT_FOUND for
// an AllocSvr that is registered) is an anomaly.
func faultAnswers(faults []nemesis.Fault) checker.Result {
	r := checker.Result{Checker: "admin-answers", Workload: "nemesis", Guarantee: "admin", Verdict: checker.Pass}
	drains := 0
	for _, f := range faults {
		if f.Kind == "drain" && !strings.HasPrefix(f.Desc, "not injected") {
			drains++
		}
		if f.Anomaly != "" {
			r.Findings = append(r.Findings, checker.Finding{Kind: "wrong-answer", Msg: f.Kind + ": " + f.Anomaly, At: f.End})
		}
	}
	r.Count = len(r.Findings)
	r.Summary = fmt.Sprintf("%d drain faults (each a drain and an undrain): no admin answer the cluster must not give", drains)
	if r.Count > 0 {
		r.Verdict = checker.Fail
		r.Summary = fmt.Sprintf("%d of the nemeses' admin calls got an answer the cluster must not give", r.Count)
	}
	return r
}

// requested lists the faults a run was asked for and can inject, as
// notDrawn compares them: a kind given bare, or kind:target for each
// target it was narrowed to (--nemesis kill:leader+allocsvr asks for
// both).
func requested(specs []nemesis.Spec, nems []nemesis.Nemesis) []string {
	var out []string
	for _, n := range nems {
		i := slices.IndexFunc(specs, func(s nemesis.Spec) bool { return s.Kind == n.Kind() })
		if i < 0 || len(specs[i].Targets) == 0 {
			out = append(out, n.Kind())
			continue
		}
		for _, t := range specs[i].Targets {
			out = append(out, n.Kind()+":"+t)
		}
	}
	return out
}

// notDrawn lists the requested faults no fault of the run hit. Kinds are
// dealt from a deck, each once a round, and so are a kind's targets, so a
// kind is missed only by a run with fewer faults than kinds, and a target
// only by one with fewer faults of its kind than targets or whose
// injections of it failed. A target counts once a fault of it was
// injected (a failed attempt records none); a bare kind once it was drawn
// at all (one whose every attempt failed is a harness failure of its own).
func notDrawn(requested []string, faults []nemesis.Fault) []string {
	hit := map[string]bool{}
	for _, f := range faults {
		hit[f.Kind] = true
		if f.Target != "" {
			hit[f.Type()] = true
		}
	}
	var out []string
	for _, q := range requested {
		if !hit[q] && !slices.Contains(out, q) {
			out = append(out, q)
		}
	}
	return out
}

func message(res *report.Results) string {
	var failed, unknown []string
	n := 0
	for _, c := range res.Checkers {
		switch c.Verdict {
		case checker.Fail:
			failed = append(failed, fmt.Sprintf("%s/%s (%d)", c.Workload, c.Checker, c.Count))
			n += c.Count
		case checker.Unknown:
			unknown = append(unknown, c.Workload+"/"+c.Checker)
		}
	}
	switch {
	case len(failed) > 0:
		at := ""
		if res.FirstAnomaly != nil {
			at = fmt.Sprintf("; the first became visible at %.2fs", res.FirstAnomaly.Seconds())
		}
		return fmt.Sprintf("ANOMALY: %d anomalies found by %s%s. See index.html.", n, strings.Join(failed, ", "), at)
	case res.HarnessError != "":
		return "HARNESS FAILURE: " + firstLine(res.HarnessError)
	case len(unknown) > 0:
		return "INCONCLUSIVE: " + strings.Join(unknown, ", ") + " could not decide (see the checker summary); not a pass. Rerun with a longer --check-timeout or a lower --rate."
	}
	pass := fmt.Sprintf("PASS: every checker passed (%d operations, %d faults).", res.Ops["alloc.total"]+res.Ops["messages.send_attempts"], len(res.Faults))
	if len(res.NotDrawn) > 0 {
		pass += " Faults asked for but never drawn, so not tested: " + strings.Join(res.NotDrawn, ", ") + "."
	}
	if len(res.Skipped) > 0 {
		pass += " Skipped, so not tested: " + strings.Join(res.Skipped, "; ") + "."
	}
	return pass
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func (r *run) showProgress(origin time.Time) {
	tty := r.tty
	every := 5 * time.Second
	if tty {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var lastOK, lastFailed uint64
	last := time.Now()
	for {
		select {
		case <-r.progress:
			return
		case now := <-t.C:
			var ok, failed uint64
			for _, w := range r.wls {
				a, b := w.Progress()
				ok, failed = ok+a, failed+b
			}
			dt := now.Sub(last).Seconds()
			fault, _ := r.fault.Load().(string)
			if fault == "" {
				fault = "none"
			}
			line := fmt.Sprintf("[%5.1fs/%v] %8.0f ok/s %6.0f failed/s  total %d | fault: %s",
				time.Since(origin).Seconds(), r.o.TimeLimit, float64(ok-lastOK)/dt, float64(failed-lastFailed)/dt, ok+failed, fault)
			lastOK, lastFailed, last = ok, failed, now
			if r.o.Progress != nil {
				r.logMu.Lock()
				if tty {
					fmt.Fprintf(r.o.Progress, "\r\033[K%s", line)
				} else {
					fmt.Fprintln(r.o.Progress, line)
				}
				r.logMu.Unlock()
			}
		}
	}
}
