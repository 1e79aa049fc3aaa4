// Package nemesis injects faults into a running cluster on a schedule drawn
// from a seeded random generator: process crashes and pauses, network
// partitions of several shapes, lease-clock skew, a rolling upgrade of
// the message store to a newer build, and planned drains of AllocSvrs.
package nemesis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/seqd/seqd/jepsen/cluster"
)

// Fault is one injected fault, as the report shows it.
type Fault struct {
	// Kind is the nemesis ("kill", "pause", "partition", "clock",
	// "clock-beyond", "upgrade", "drain"); Target the variant ("leader",
	// "allocsvr-arbiters").
	Kind   string        `json:"kind"`
	Target string        `json:"target"`
	Desc   string        `json:"desc"`
	Nodes  []string      `json:"nodes"`
	Start  time.Duration `json:"start_ns"`
	End    time.Duration `json:"end_ns"`
	Err    string        `json:"error,omitempty"`
	// Anomaly is set when the cluster gave the nemesis's own call an
	// answer it must not give (a WrongAnswer): the run fails on it.
	Anomaly string `json:"anomaly,omitempty"`
}

// Type is Kind:Target, the unit reports aggregate by.
func (f Fault) Type() string { return f.Kind + ":" + f.Target }

// Env is what nemeses act on.
type Env struct {
	Cluster *cluster.Cluster
	// Now reads the run's clock (the recorder's), so faults and
	// operations share one time axis.
	Now  func() time.Duration
	Logf func(format string, args ...any)
}

// Active is a fault in progress.
type Active struct {
	Target string
	Desc   string
	Nodes  []string
	// Heal ends the fault.
	Heal func(ctx context.Context) error
}

// Nemesis injects one kind of fault.
type Nemesis interface {
	// Kind names the nemesis as --nemesis does.
	Kind() string
	// Background nemeses (clock skew) run alongside the others instead of
	// taking turns with them.
	Background() bool
	// Inject starts one fault, its target and nodes dealt by d.
	Inject(ctx context.Context, env *Env, d *Dealer) (*Active, error)
	// HealAll undoes whatever this nemesis may have left behind.
	HealAll(ctx context.Context, env *Env) error
}

// Spec is a parsed --nemesis element: a kind and, optionally, the targets
// or shapes it may pick from ("partition:allocsvr-arbiters+halves").
type Spec struct {
	Kind    string
	Targets []string
}

func (s Spec) String() string {
	if len(s.Targets) == 0 {
		return s.Kind
	}
	return s.Kind + ":" + strings.Join(s.Targets, "+")
}

// Kinds lists every nemesis with its targets; the first target list is
// what a bare kind picks from.
// The store-* targets need a cluster with a message store, and
// store-shards one with several store shards; a bare kind picks them only
// then (see DefaultTargets).
var Kinds = map[string][]string{
	"kill":         {"one", "allocsvr", "leader", "minority", "store", "store-leader"},
	"pause":        {"one", "allocsvr", "leader", "store", "store-leader"},
	"partition":    {"halves", "isolate-one", "isolate-leader", "majorities-ring", "bridge", "allocsvr-arbiters", "isolate-store-leader", "store-leader-followers", "store-shards"},
	"clock":        {"allocsvr", "leader"},
	"clock-beyond": {"leader", "allocsvr"},
	"upgrade":      {"store", "store-follower"},
	"drain":        {"allocsvr"},
}

// ParseSpecs parses a comma-separated --nemesis value. "" or "none" gives
// no nemesis. It refuses an empty entry, "none" next to faults, a colon
// with no target after it, and a kind or a target given twice.
func ParseSpecs(s string) ([]Spec, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	var out []Spec
	for _, part := range parts {
		part = strings.TrimSpace(part)
		kind, targets, narrowed := strings.Cut(part, ":")
		switch {
		case part == "":
			return nil, errors.New(`empty entry; separate faults with single commas, or use "none"`)
		case part == "none" && len(parts) > 1:
			return nil, errors.New(`"none" cannot be combined with faults`)
		case part == "none":
			continue
		case narrowed && targets == "":
			return nil, fmt.Errorf("%s: has no target after the colon", kind)
		}
		valid, ok := Kinds[kind]
		if !ok {
			return nil, fmt.Errorf("unknown nemesis %q; use %s", kind, strings.Join(KindNames(), ", "))
		}
		if slices.ContainsFunc(out, func(sp Spec) bool { return sp.Kind == kind }) {
			return nil, fmt.Errorf("%s given twice; give each fault once, narrowed to several targets with + (%s:a+b)", kind, kind)
		}
		sp := Spec{Kind: kind}
		if narrowed {
			for _, t := range strings.Split(targets, "+") {
				if !slices.Contains(valid, t) {
					return nil, fmt.Errorf("nemesis %s has no target %q; use %s", kind, t, strings.Join(valid, ", "))
				}
				if slices.Contains(sp.Targets, t) {
					return nil, fmt.Errorf("target %s of %s given twice", t, kind)
				}
				sp.Targets = append(sp.Targets, t)
			}
		}
		out = append(out, sp)
	}
	return out, nil
}

// KindNames returns the nemesis kinds, sorted.
func KindNames() []string {
	var ks []string
	for k := range Kinds {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// DefaultTargets is what a bare kind picks from on a cluster with shards
// message-store shards: every target, the store ones only when there is a
// message store, and store-shards only with more than one shard.
func DefaultTargets(kind string, shards int) []string {
	var out []string
	for _, t := range Kinds[kind] {
		if (shards > 0 || !StoreOnly(t)) && (shards > 1 || t != "store-shards") {
			out = append(out, t)
		}
	}
	return out
}

// StoreOnly reports whether target exists only in a cluster with a
// message store.
func StoreOnly(target string) bool {
	return strings.HasPrefix(target, "store") || strings.HasSuffix(target, "store-leader")
}

// Build turns specs into nemeses for c. Faults the backend cannot inject
// are left out and explained in skipped.
func Build(specs []Spec, c *cluster.Cluster) (ns []Nemesis, skipped []string) {
	for _, sp := range specs {
		targets := sp.Targets
		if len(targets) == 0 {
			targets = DefaultTargets(sp.Kind, len(c.Shards()))
		}
		switch sp.Kind {
		case "kill":
			ns = append(ns, &killer{targets: targets})
		case "pause":
			ns = append(ns, &pauser{targets: targets})
		case "partition":
			if !c.CanPartition() {
				skipped = append(skipped, fmt.Sprintf("partition (%s): the %s backend cannot cut links; run as root with --backend netns", strings.Join(targets, ", "), c.Backend()))
				continue
			}
			ns = append(ns, &partitioner{shapes: targets})
		case "upgrade":
			switch {
			case len(c.Stores()) == 0:
				skipped = append(skipped, "upgrade: the cluster has no message store (use the messages workload)")
				continue
			case c.NextBinary() == "":
				skipped = append(skipped, "upgrade: no newer build to upgrade to (the harness builds one with -tags seqdnext)")
				continue
			}
			ns = append(ns, &upgrader{targets: targets})
		case "drain":
			// Runs have 2 or 3 AllocSvrs (--allocsvrs): one can always
			// take a drained one's slots, unless faults hold it
			// (drainer.Inject says so then).
			ns = append(ns, &drainer{targets: targets})
		case "clock", "clock-beyond":
			if !c.Failpoints() {
				skipped = append(skipped, sp.Kind+": the seqd binary has no clock failpoint (needs -tags seqdbugs)")
				continue
			}
			ns = append(ns, &clocker{kind: sp.Kind, targets: targets})
		}
	}
	return ns, skipped
}

// Schedule says how often faults come and how long they last.
type Schedule struct {
	// Interval is the quiet time between two faults of a class: uniform
	// in [Interval[0], Interval[1]].
	Interval [2]time.Duration `json:"interval_ns"`
	// Hold is how long a fault lasts.
	Hold [2]time.Duration `json:"hold_ns"`
}

// DefaultSchedule: a fault every 3–10 s, lasting 1–8 s. Both ends matter:
// a pause shorter than a lease tests the lease rules, and a partition
// longer than lease+margin makes the arbiters move the slots.
var DefaultSchedule = Schedule{Interval: [2]time.Duration{3 * time.Second, 10 * time.Second}, Hold: [2]time.Duration{time.Second, 8 * time.Second}}

// Runner runs nemeses and records their faults.
type Runner struct {
	env   *Env
	sched Schedule
	seed  uint64
	nem   []Nemesis

	mu     sync.Mutex
	faults []Fault // in the order they began; End is 0 while one lasts
}

// NewRunner prepares to run nems. Each class (foreground, background) has
// its own Dealer seeded from seed, so the sequence of choices depends only
// on the seed (and on the cluster's replies: who leads, which node runs).
func NewRunner(env *Env, nems []Nemesis, sched Schedule, seed uint64) *Runner {
	return &Runner{env: env, sched: sched, seed: seed, nem: nems}
}

// Run injects faults until ctx ends, then heals the fault in progress, and
// returns every fault with its interval. current receives a description of
// the faults in progress whenever it changes (may be nil).
//
// Once ctx has ended no fault starts. A fault whose injection had begun
// is injected in full and then healed before Run returns, so when Run
// returns nothing it did is still in force: the caller's final heal
// neither races with an injection nor misses one.
func (r *Runner) Run(ctx context.Context, current func(string)) []Fault {
	var fg, bg []Nemesis
	for _, n := range r.nem {
		if n.Background() {
			bg = append(bg, n)
		} else {
			fg = append(fg, n)
		}
	}
	var (
		mu     sync.Mutex
		active [2]string
	)
	report := func(class int, s string) {
		mu.Lock()
		active[class] = s
		var parts []string
		for _, a := range active {
			if a != "" {
				parts = append(parts, a)
			}
		}
		mu.Unlock()
		if current != nil {
			current(strings.Join(parts, " + "))
		}
	}
	var wg sync.WaitGroup
	for class, group := range [][]Nemesis{fg, bg} {
		if len(group) == 0 {
			continue
		}
		d := newDealer(r.seed, uint64(class)+1)
		wg.Go(func() { r.loop(ctx, class, group, d, report) })
	}
	wg.Wait()
	return r.Faults()
}

// Faults returns the faults so far, by start time. A fault still in
// progress has End 0. It may be called while Run runs (an aborted run
// reports what was done up to then).
func (r *Runner) Faults() []Fault {
	r.mu.Lock()
	out := slices.Clone(r.faults)
	r.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out
}

// record adds f to the faults and returns a function that replaces it
// with its final form.
func (r *Runner) record(f Fault) func(Fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := len(r.faults)
	r.faults = append(r.faults, f)
	return func(f Fault) {
		r.mu.Lock()
		r.faults[i] = f
		r.mu.Unlock()
	}
}

func (r *Runner) loop(ctx context.Context, class int, group []Nemesis, d *Dealer, report func(int, string)) {
	// Kinds are dealt from a deck of the group: every kind asked for comes
	// up once in each len(group) faults, so a short run does not miss one
	// by chance. A kind names its nemesis: ParseSpecs refuses one twice.
	kinds := make([]string, len(group))
	for i, n := range group {
		kinds[i] = n.Kind()
	}
	for {
		// Sleep may report a full interval when its timer and the end of
		// ctx come together: no fault starts once ctx has ended.
		if !Sleep(ctx, uniform(d.Rand, r.sched.Interval)) || ctx.Err() != nil {
			return
		}
		n := group[slices.Index(kinds, d.deal("kinds", kinds))]
		hold := uniform(d.Rand, r.sched.Hold)
		if class == 1 {
			// Skew lasts across several other faults, so they overlap.
			hold *= 3
		}
		f := Fault{Kind: n.Kind(), Start: r.env.Now()}
		// An injection begun runs to its end even if ctx ends meanwhile:
		// cut short, it could leave half a fault that no record names.
		ictx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		a, err := n.Inject(ictx, r.env, d)
		cancel()
		if err != nil {
			f.End, f.Err, f.Anomaly = r.env.Now(), err.Error(), wrongAnswer(err)
			f.Desc = "not injected: " + err.Error()
			r.env.Logf("nemesis %s: %v", n.Kind(), err)
			r.record(f)
			continue
		}
		f.Target, f.Desc, f.Nodes = a.Target, a.Desc, a.Nodes
		done := r.record(f)
		r.env.Logf("nemesis: %s (for %v)", a.Desc, hold.Round(time.Millisecond))
		report(class, a.Desc)
		Sleep(ctx, hold)
		hctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := a.Heal(hctx); err != nil {
			f.Err, f.Anomaly = "heal: "+err.Error(), wrongAnswer(err)
			r.env.Logf("nemesis %s: heal: %v", n.Kind(), err)
		}
		cancel()
		f.End = r.env.Now()
		done(f)
		report(class, "")
		if ctx.Err() != nil {
			return
		}
	}
}

// HealAll undoes everything every nemesis may have left: the final heal
// before the quiet period.
func HealAll(ctx context.Context, env *Env, nems []Nemesis) error {
	// Resume paused processes before talking to them, and reset clocks
	// before restarting crashed ones (a fresh process runs at the real rate).
	order := map[string]int{"pause": 0, "clock": 1, "clock-beyond": 1, "partition": 2, "kill": 3, "upgrade": 4, "drain": 5}
	nems = slices.Clone(nems)
	sort.SliceStable(nems, func(i, j int) bool { return order[nems[i].Kind()] < order[nems[j].Kind()] })
	var errs []error
	for _, n := range nems {
		if err := n.HealAll(ctx, env); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.Kind(), err))
		}
	}
	return errors.Join(errs...)
}

// wrongAnswer is the message of the WrongAnswer in err, if any.
func wrongAnswer(err error) string {
	var w *WrongAnswer
	if errors.As(err, &w) {
		return w.Msg
	}
	return ""
}

func uniform(rng *rand.Rand, r [2]time.Duration) time.Duration {
	if r[1] <= r[0] {
		return r[0]
	}
	return r[0] + time.Duration(rng.Int64N(int64(r[1]-r[0])))
}

// Sleep waits d or until ctx ends; it reports whether the full time passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func ids(ns []*cluster.Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.ID
	}
	return out
}

func running(ns []*cluster.Node) []*cluster.Node {
	var out []*cluster.Node
	for _, n := range ns {
		if n.Running() && !n.Paused() {
			out = append(out, n)
		}
	}
	return out
}
