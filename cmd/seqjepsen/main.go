// Command seqjepsen runs seqd under faults (crashes, pauses, partitions,
// clock skew) and checks that it kept its guarantees, writing a report.
//
//	seqjepsen run --workload alloc --nemesis kill,pause,partition --time-limit 60s --seed 7 --out runs/7
//	seqjepsen repro runs/7/results.json
//	seqjepsen scenarios
//	seqjepsen cleanup
//
// Exit codes: 0 every checker passed; 1 an anomaly was found; 2 the
// harness failed or a checker could not decide (unknown), so the run is
// evidence of nothing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/seqd/seqd/internal/bugs"
	"github.com/seqd/seqd/internal/cliflag"
	"github.com/seqd/seqd/jepsen"
	"github.com/seqd/seqd/jepsen/cluster"
	"github.com/seqd/seqd/jepsen/nemesis"
	"github.com/seqd/seqd/jepsen/netns"
	"github.com/seqd/seqd/jepsen/report"
	"github.com/seqd/seqd/jepsen/workload"
)

const usage = `seqjepsen runs seqd under faults and checks its guarantees.

Usage:
  seqjepsen run [flags]          run a test (seqjepsen run -h for flags)
  seqjepsen repro DIR/results.json [--out DIR] [--src DIR]
                                 run a saved test again (same seed and
                                 options; seqjepsen repro -h)
  seqjepsen scenarios            list the named scenarios and planted bugs
  seqjepsen cleanup              remove namespaces, links and iptables rules
                                 left by a killed run (prefix "seqj")

Exit codes: 0 all checkers passed, 1 anomaly found, 2 harness failure or
inconclusive (a checker answered "unknown").
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return report.ExitHarness
	}
	if len(args) == 2 && args[1] == "help" {
		args = []string{args[0], "-h"} // seqjepsen run help
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "repro":
		return cmdRepro(args[1:], stdout, stderr)
	case "scenarios":
		return noArgs("scenarios", "Lists the named scenarios, the planted bugs and the workloads.", args[1:], stdout, stderr, cmdScenarios)
	case "cleanup":
		return noArgs("cleanup", "Removes the namespaces, bridge, veths, iptables rules and node processes a\nkilled netns run left behind. Refuses while a live run holds the lock.", args[1:], stdout, stderr, cmdCleanup)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "seqjepsen: unknown command %q\n\n%s", args[0], usage)
	return report.ExitHarness
}

// parseFlags parses a subcommand's flags and allows at most maxArgs
// positional arguments. -h prints the usage to stdout (exit 0); a bad
// flag or an extra argument prints the error and the usage to stderr
// (exit 2). ok says whether to go on.
func parseFlags(fs *flag.FlagSet, args []string, maxArgs int, stdout, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(io.Discard)
	err := cliflag.CheckRepeats(fs, args)
	if err == nil {
		err = fs.Parse(args)
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		return 0, false
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
	case fs.NArg() > maxArgs:
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(maxArgs))
	default:
		return 0, true
	}
	fs.SetOutput(stderr)
	fs.Usage()
	return report.ExitHarness, false
}

// noArgs runs a subcommand that takes neither flags nor arguments.
func noArgs(name, doc string, args []string, stdout, stderr io.Writer, cmd func(stdout, stderr io.Writer) int) int {
	fs := flag.NewFlagSet("seqjepsen "+name, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintf(fs.Output(), "Usage: seqjepsen %s\n\n%s\n", name, doc) }
	if code, ok := parseFlags(fs, args, 0, stdout, stderr); !ok {
		return code
	}
	return cmd(stdout, stderr)
}

// givenEmpty refuses a flag given its zero value: the spec would take the
// zero for "unset" and quietly run the default instead (--seed 0 is a
// seed like any other).
func givenEmpty(f *flag.Flag) error {
	v := f.Value.String()
	if f.Name == "seed" || strings.TrimSpace(v) != f.DefValue {
		return nil
	}
	if f.DefValue == "" {
		if f.Name == "nemesis" {
			return errors.New(`--nemesis is empty; use "none" for no faults`)
		}
		return fmt.Errorf("--%s is empty; omit the flag for the default", f.Name)
	}
	return fmt.Errorf("--%s %s: must be above zero (omit the flag for the default)", f.Name, v)
}

// abortLimit bounds an aborted run: if Run has not returned this long
// after the second interrupt, the harness tears the network down and exits
// without a report.
const abortLimit = 15 * time.Second

// signalContext is cancelled on the first SIGINT/SIGTERM (the run stops,
// heals, checks what it has and cleans up). A second closes abort: the run
// kills every node, cleans up and writes a report marked interrupted, with
// no heal and no checks. A third, or abortLimit passing without the run
// returning, removes the network and exits at once. stop releases the
// signals.
func signalContext(stderr io.Writer, ownsNetns bool) (ctx context.Context, abort <-chan struct{}, stop func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 3)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	aborted, quit := make(chan struct{}), make(chan struct{})
	go func() {
		var s os.Signal
		select {
		case s = <-ch:
		case <-quit:
			return
		}
		fmt.Fprintf(stderr, "\nseqjepsen: %v: stopping, healing and cleaning up (again to abort: no heal and no checks)\n", s)
		cancel(fmt.Errorf("%v", s))
		select {
		case s = <-ch:
		case <-quit:
			return
		}
		fmt.Fprintf(stderr, "\nseqjepsen: %v again: aborting: killing every node and writing what was recorded, unchecked (again to exit at once, with no report)\n", s)
		close(aborted)
		select {
		case <-ch:
		case <-time.After(abortLimit):
			fmt.Fprintf(stderr, "seqjepsen: the abort did not end within %v\n", abortLimit)
		case <-quit:
			return
		}
		fmt.Fprintln(stderr, "seqjepsen: exiting now; removing the network; no report is written (the run directory keeps harness.log and the node logs)")
		if ownsNetns {
			netns.Abort() // ours at once while our run holds the lock; never another run's
		}
		os.Exit(report.ExitHarness)
	}()
	return ctx, aborted, func() { signal.Stop(ch); close(quit); cancel(nil) }
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("seqjepsen run", flag.ContinueOnError)
	var (
		scenario  = fs.String("scenario", "", "named scenario (seqjepsen scenarios); other flags override its settings")
		wl        = fs.String("workload", "", "alloc, messages or all (default alloc)")
		nem       = fs.String("nemesis", "", "comma-separated faults: "+strings.Join(nemesis.KindNames(), ", ")+`; narrow one with kind:target+target (e.g. partition:allocsvr-arbiters); "none" for none (default kill,pause,partition)`)
		limit     = fs.Duration("time-limit", 0, "how long faults are injected (default 60s)")
		quiet     = fs.Duration("quiet", 0, "how long the workload runs after the final heal (default 10s)")
		seed      = fs.Uint64("seed", 0, "seed of every random choice (default: random, printed)")
		out       = fs.String("out", "", "run directory for the report (default $TMPDIR/seqjepsen/<time>-<workload>-seed<N>)")
		bug       = fs.String("bug", "", "plant a bug (test build): "+bugNames())
		backend   = fs.String("backend", "", "netns (root; default when possible) or local (loopback; no partitions)")
		allocsvrs = fs.Int("allocsvrs", 0, "AllocSvrs to run, 2 or 3 (default 2)")
		shards    = fs.Int("store-shards", 0, "message-store shards of 3 replicas each, 1 to 3, with the messages workload's users spread over them (default 1)")
		retention = fs.Duration("retention", 0, "the message store's inbox retention, 1s to 5m: events older than this are removed while the run goes on (default off)")
		lease     = fs.Duration("lease", 0, "AllocSvr lease (default 2s)")
		step      = fs.Uint64("step", 0, "max_seq step; hot keys must run through one within a lease (default 1000)")
		interval  = fs.String("fault-interval", "", "quiet time between faults, a range (default 3s-10s)")
		hold      = fs.String("fault-hold", "", "how long a fault lasts, a range (default 1s-8s)")
		checkTO   = fs.Duration("check-timeout", 0, "bound on the linearizability search; past it the verdict is unknown (default 3m)")
		rate      = fs.Float64("rate", 0, "cap on operations per second (default: closed loop, as fast as answers come)")
		src       = fs.String("src", "", "seqd source tree to build (default: found from the working directory)")
	)
	if code, ok := parseFlags(fs, args, 0, stdout, stderr); !ok {
		return code
	}
	set := map[string]bool{}
	var bad error
	fs.Visit(func(f *flag.Flag) {
		set[f.Name] = true
		if bad == nil {
			bad = givenEmpty(f)
		}
	})
	if bad != nil {
		fmt.Fprintln(stderr, "seqjepsen run:", bad)
		return report.ExitHarness
	}

	var spec report.Spec
	if *scenario == "" && *bug != "" && !set["nemesis"] {
		// A bug alone runs the scenario that must catch it.
		if sc, ok := jepsen.ScenarioForBug(*bug); ok {
			*scenario = sc.Name
		}
	}
	if *scenario != "" {
		sc, err := jepsen.LookupScenario(*scenario)
		if err != nil {
			fmt.Fprintln(stderr, "seqjepsen:", err)
			return report.ExitHarness
		}
		spec = report.Spec{Scenario: sc.Name, Workload: sc.Workload, Nemesis: sc.Nemesis, Bug: sc.Bug, TimeLimit: sc.TimeLimit}
		spec.Schedule.Interval, spec.Schedule.Hold = sc.Interval, sc.Hold
		if sc.Step != 0 && !set["step"] {
			*step = sc.Step
		}
		spec.StoreShards, spec.Retention = sc.StoreShards, sc.Retention
		fmt.Fprintf(stderr, "scenario %s: %s (expected outcome: %s)\n", sc.Name, sc.Doc, sc.Expect)
	} else {
		spec.Nemesis = "kill,pause,partition"
	}
	str := func(name string, dst *string, v string) {
		if set[name] {
			*dst = v
		}
	}
	str("workload", &spec.Workload, *wl)
	str("nemesis", &spec.Nemesis, *nem)
	str("bug", &spec.Bug, *bug)
	str("backend", &spec.Backend, *backend)
	if set["time-limit"] {
		spec.TimeLimit = *limit
	}
	if set["quiet"] {
		spec.Quiet = *quiet
	}
	spec.AllocSvrs, spec.Lease, spec.Step, spec.CheckTimeout = *allocsvrs, *lease, *step, *checkTO
	if set["store-shards"] {
		spec.StoreShards = *shards
	}
	if set["retention"] {
		spec.Retention = *retention
	}
	spec.Alloc.Rate = *rate
	for name, dst := range map[string]*[2]time.Duration{"fault-interval": &spec.Schedule.Interval, "fault-hold": &spec.Schedule.Hold} {
		v := map[string]string{"fault-interval": *interval, "fault-hold": *hold}[name]
		if v == "" {
			continue
		}
		r, err := report.ParseRange(v)
		if err != nil {
			err = fmt.Errorf("--%s: %w", name, err)
		} else {
			err = jepsen.CheckRange(name, r) // before Defaults takes 0s-0s for unset
		}
		if err != nil {
			fmt.Fprintln(stderr, "seqjepsen run:", err)
			return report.ExitHarness
		}
		*dst = r
	}
	spec.Seed = *seed
	if !set["seed"] {
		spec.Seed = rand.Uint64() % 1_000_000
	}
	return execute(spec, *out, *src, stdout, stderr)
}

// execute checks every option, creates the run directory and runs. A bad
// option, source tree or run directory exits 2 with nothing written.
func execute(spec report.Spec, out, src string, stdout, stderr io.Writer) int {
	jepsen.Defaults(&spec)
	if out == "" {
		out = filepath.Join(os.TempDir(), "seqjepsen", fmt.Sprintf("%s-%s-seed%d", time.Now().Format("20060102-150405"), spec.Workload, spec.Seed))
	}
	o := jepsen.Options{Spec: spec, Out: out, Src: src, Progress: stderr}
	_, err := jepsen.Check(&o)
	if err == nil && spec.Backend == cluster.BackendNetns {
		// Before --out exists: a refused run must leave nothing behind.
		err = netns.CheckFree()
	}
	if err == nil {
		err = jepsen.MakeOut(out)
	}
	if err != nil {
		fmt.Fprintln(stderr, "seqjepsen:", err)
		return report.ExitHarness
	}
	ctx, abort, stop := signalContext(stderr, spec.Backend == cluster.BackendNetns)
	defer stop()
	o.Abort = abort
	fmt.Fprintf(stderr, "seqjepsen: seed %d, backend %s, report in %s\n", spec.Seed, spec.Backend, out)
	res := jepsen.Run(ctx, o)
	select {
	case <-abort:
		if spec.Backend == cluster.BackendNetns {
			// The abort closed the cluster, network and all, unless it
			// was still starting: sweep whatever is left of ours.
			netns.Abort()
		}
	default:
	}
	fmt.Fprintln(stdout, res.Message)
	wl, ck := 0, 0 // column widths, so long checker names keep the columns straight
	for _, c := range res.Checkers {
		wl, ck = max(wl, len(c.Workload)), max(ck, len(c.Checker))
	}
	for _, c := range res.Checkers {
		fmt.Fprintf(stdout, "  %-*s %-*s %-7s %d anomalies\n", wl, c.Workload, ck, c.Checker, c.Verdict, c.Count)
	}
	fmt.Fprintf(stdout, "report: %s/index.html  (exit %d)\n", out, res.ExitCode)
	fmt.Fprintf(stdout, "reproduce: %s\n", res.CommandLine)
	return res.ExitCode
}

func cmdRepro(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("seqjepsen repro", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: seqjepsen repro DIR/results.json [--out DIR] [--src DIR]")
		fs.PrintDefaults()
	}
	out := fs.String("out", "", "run directory (default: the original's with -repro-<time>)")
	src := fs.String("src", "", "seqd source tree to build")
	// Flags may come after the file name too.
	var path string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		path, args = args[0], args[1:]
	}
	maxArgs := 1
	if path != "" {
		maxArgs = 0
	}
	if code, ok := parseFlags(fs, args, maxArgs, stdout, stderr); !ok {
		return code
	}
	if path == "" {
		path = fs.Arg(0)
	}
	if path == "" {
		fmt.Fprintln(stderr, "seqjepsen repro: give the results.json (or run directory) to repeat")
		fs.SetOutput(stderr)
		fs.Usage()
		return report.ExitHarness
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "results.json")
	}
	res, err := report.Load(path)
	if err != nil {
		if pe := (*os.PathError)(nil); !errors.As(err, &pe) {
			err = fmt.Errorf("%s is not a results.json: %w", path, err) // a read error names the file already
		}
		fmt.Fprintln(stderr, "seqjepsen repro:", err)
		return report.ExitHarness
	}
	if res.Spec.Workload == "" {
		fmt.Fprintf(stderr, "seqjepsen repro: %s holds no run spec\n", path)
		return report.ExitHarness
	}
	if *out == "" {
		// Next to the original run, never inside it (path may be
		// "runs/7//results.json" or, from within the run, "results.json").
		*out = jepsen.SiblingDir(filepath.Dir(path), "-repro-"+time.Now().Format("150405"))
	}
	fmt.Fprintf(stderr, "seqjepsen repro: seed %d from %s (originally: %s)\n", res.Spec.Seed, path, res.Message)
	return execute(res.Spec, *out, *src, stdout, stderr)
}

func cmdScenarios(stdout, _ io.Writer) int {
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tEXPECT\tNEMESIS\tBUG\tWHAT")
	for _, s := range jepsen.Scenarios() {
		bug := s.Bug
		if bug == "" {
			bug = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.Expect, s.Nemesis, bug, s.Doc)
	}
	tw.Flush()
	fmt.Fprintln(stdout, "\nPlanted bugs (test builds only; -tags seqdbugs):")
	for _, b := range bugs.Known {
		note := ""
		if _, ok := jepsen.ScenarioForBug(b.Name); !ok {
			note = fmt.Sprintf(" [no scenario yet: needs the %s workload]", jepsen.BugWorkload(b))
		}
		fmt.Fprintf(stdout, "  %-28s breaks %s at %s: %s%s\n", b.Name, b.Breaks, b.Where, b.Doc, note)
	}
	fmt.Fprintf(stdout, "\nWorkloads: %s (\"all\" runs both at once)\n", strings.Join(workload.Names, ", "))
	return 0
}

func cmdCleanup(stdout, stderr io.Writer) int {
	if err := netns.Available(); err != nil {
		fmt.Fprintln(stderr, "seqjepsen cleanup:", err)
		return report.ExitHarness
	}
	removed, err := netns.Cleanup()
	for _, r := range removed {
		fmt.Fprintln(stdout, "removed", r)
	}
	if err != nil {
		fmt.Fprintln(stderr, "seqjepsen cleanup:", err)
		return report.ExitHarness
	}
	left, err := netns.Leftovers()
	if err != nil || len(left) > 0 {
		fmt.Fprintf(stderr, "seqjepsen cleanup: still present: %v %v\n", left, err)
		return report.ExitHarness
	}
	if len(removed) == 0 {
		fmt.Fprintln(stdout, "nothing to clean up")
	}
	return 0
}

func bugNames() string {
	var names []string
	for _, b := range bugs.Known {
		names = append(names, b.Name)
	}
	return strings.Join(names, ", ")
}
