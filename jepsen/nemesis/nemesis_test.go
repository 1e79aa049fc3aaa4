package nemesis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseSpecs(t *testing.T) {
	good := map[string]string{
		"":                                   "",
		"none":                               "",
		"kill,pause,partition":               "kill,pause,partition",
		" kill , clock ":                     "kill,clock",
		"partition:allocsvr-arbiters+halves": "partition:allocsvr-arbiters+halves",
		"kill:leader,clock-beyond:allocsvr":  "kill:leader,clock-beyond:allocsvr",
		"upgrade,kill:store":                 "upgrade,kill:store",
		"upgrade:store-follower":             "upgrade:store-follower",
		"drain,kill":                         "drain,kill",
		"drain:allocsvr":                     "drain:allocsvr",
	}
	for in, want := range good {
		specs, err := ParseSpecs(in)
		if err != nil {
			t.Errorf("ParseSpecs(%q): %v", in, err)
			continue
		}
		var got []string
		for _, s := range specs {
			got = append(got, s.String())
		}
		if strings.Join(got, ",") != want {
			t.Errorf("ParseSpecs(%q) = %v, want %s", in, got, want)
		}
	}
	for _, bad := range []string{"kil", "partition:nowhere", "kill:allocsvr-arbiters", "clock:halves", "upgrade:leader", "upgrade:store+store", "drain:leader", "drain:store"} {
		if _, err := ParseSpecs(bad); err == nil {
			t.Errorf("ParseSpecs(%q) accepted", bad)
		}
	}
}

// A bare kind picks the store targets only on a cluster with a message
// store, and store-shards only with more than one shard.
func TestDefaultTargets(t *testing.T) {
	for _, tc := range []struct {
		kind   string
		shards int
		want   []string
	}{
		{"kill", 0, []string{"one", "allocsvr", "leader", "minority"}},
		{"kill", 1, []string{"one", "allocsvr", "leader", "minority", "store", "store-leader"}},
		{"partition", 0, []string{"halves", "isolate-one", "isolate-leader", "majorities-ring", "bridge", "allocsvr-arbiters"}},
		{"partition", 1, []string{"halves", "isolate-one", "isolate-leader", "majorities-ring", "bridge", "allocsvr-arbiters", "isolate-store-leader", "store-leader-followers"}},
		{"partition", 2, []string{"halves", "isolate-one", "isolate-leader", "majorities-ring", "bridge", "allocsvr-arbiters", "isolate-store-leader", "store-leader-followers", "store-shards"}},
		{"upgrade", 0, nil},
		{"upgrade", 1, []string{"store", "store-follower"}},
	} {
		if got := DefaultTargets(tc.kind, tc.shards); !slices.Equal(got, tc.want) {
			t.Errorf("DefaultTargets(%s, %d shards) = %v, want %v", tc.kind, tc.shards, got, tc.want)
		}
	}
}

// In a majorities ring every node reaches a majority (itself included),
// cuts are symmetric, and no two nodes see the same majority.
func TestRing(t *testing.T) {
	for n := 3; n <= 9; n++ {
		var nodes []string
		for i := range n {
			nodes = append(nodes, fmt.Sprintf("n%d", i))
		}
		m := ring(nodes)
		seen := map[string]string{}
		for _, a := range nodes {
			var sees []string
			for _, b := range nodes {
				if !slices.Contains(m[a], b) {
					sees = append(sees, b)
				}
				if slices.Contains(m[a], b) != slices.Contains(m[b], a) {
					t.Fatalf("n=%d: cut %s-%s is one-sided", n, a, b)
				}
			}
			if len(sees) <= n/2 {
				t.Fatalf("n=%d: %s sees %v, not a majority", n, a, sees)
			}
			sort.Strings(sees)
			key := strings.Join(sees, ",")
			if other, dup := seen[key]; dup && len(sees) < n {
				t.Fatalf("n=%d: %s and %s see the same majority %s", n, a, other, key)
			}
			seen[key] = a
		}
	}
}

func TestCut(t *testing.T) {
	m := cut([]string{"a", "b"}, []string{"c"})
	if !slices.Equal(m["a"], []string{"c"}) || !slices.Equal(m["b"], []string{"c"}) || len(m["c"]) != 0 {
		t.Fatalf("cut = %v", m)
	}
}

func TestUniformStaysInRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	r := [2]time.Duration{3 * time.Second, 10 * time.Second}
	for range 1000 {
		if d := uniform(rng, r); d < r[0] || d >= r[1] {
			t.Fatalf("uniform gave %v outside %v", d, r)
		}
	}
	if d := uniform(rng, [2]time.Duration{time.Second, time.Second}); d != time.Second {
		t.Fatalf("degenerate range gave %v", d)
	}
}

// fake records what the runner asks of it.
type fake struct {
	kind       string
	background bool
	mu         sync.Mutex
	active     int
	maxActive  int
	injected   []string
	healed     int
}

func (f *fake) Kind() string     { return f.kind }
func (f *fake) Background() bool { return f.background }

func (f *fake) Inject(_ context.Context, _ *Env, d *Dealer) (*Active, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.active++
	f.maxActive = max(f.maxActive, f.active)
	target := fmt.Sprint(d.IntN(1000))
	f.injected = append(f.injected, target)
	return &Active{Target: target, Desc: f.kind + " " + target, Heal: func(context.Context) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.active--
		f.healed++
		return nil
	}}, nil
}

func (f *fake) HealAll(context.Context, *Env) error { return nil }

func runFakes(seed uint64) ([]Fault, *fake, *fake, *fake) {
	a, b, clk := &fake{kind: "kill"}, &fake{kind: "pause"}, &fake{kind: "clock", background: true}
	start := time.Now()
	env := &Env{Now: func() time.Duration { return time.Since(start) }, Logf: func(string, ...any) {}}
	sched := Schedule{Interval: [2]time.Duration{time.Millisecond, 3 * time.Millisecond}, Hold: [2]time.Duration{time.Millisecond, 2 * time.Millisecond}}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	faults := NewRunner(env, []Nemesis{a, b, clk}, sched, seed).Run(ctx, nil)
	return faults, a, b, clk
}

func TestRunnerTakesTurnsAndHealsEverything(t *testing.T) {
	faults, a, b, clk := runFakes(7)
	if len(faults) < 10 {
		t.Fatalf("only %d faults in 300ms", len(faults))
	}
	for _, f := range []*fake{a, b, clk} {
		if f.active != 0 || f.healed != len(f.injected) {
			t.Errorf("%s: %d injected, %d healed, %d still active", f.kind, len(f.injected), f.healed, f.active)
		}
	}
	// Foreground faults never overlap each other; clock skew runs alongside.
	var fg []Fault
	for _, f := range faults {
		if f.End < f.Start {
			t.Fatalf("fault %+v ends before it starts", f)
		}
		if f.Kind != "clock" {
			fg = append(fg, f)
		}
	}
	for i := 1; i < len(fg); i++ {
		if fg[i].Start < fg[i-1].End {
			t.Fatalf("foreground faults overlap: %+v and %+v", fg[i-1], fg[i])
		}
	}
	if len(clk.injected) == 0 {
		t.Fatal("the background nemesis never ran")
	}
}

func TestRunnerChoicesFollowTheSeed(t *testing.T) {
	_, a1, _, _ := runFakes(42)
	_, a2, _, _ := runFakes(42)
	_, a3, _, _ := runFakes(43)
	n := min(len(a1.injected), len(a2.injected), len(a3.injected), 3)
	if n == 0 {
		t.Skip("too few faults on this machine to compare")
	}
	if !slices.Equal(a1.injected[:n], a2.injected[:n]) {
		t.Fatalf("same seed, different choices: %v vs %v", a1.injected[:n], a2.injected[:n])
	}
	if slices.Equal(a1.injected[:n], a3.injected[:n]) {
		t.Fatalf("different seeds, same choices: %v", a1.injected[:n])
	}
}

// Foreground faults are dealt from a deck: each kind comes up once in
// every round of len(kinds) faults, so no kind asked for is missed by
// chance in a short run.
func TestRunnerDealsEveryKindEachRound(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		faults, _, _, _ := runFakes(seed)
		var fg []string
		for _, f := range faults {
			if f.Kind != "clock" {
				fg = append(fg, f.Kind)
			}
		}
		for i := 0; i+2 <= len(fg); i += 2 {
			if fg[i] == fg[i+1] {
				t.Fatalf("seed %d: round %d dealt %s twice: %v", seed, i/2, fg[i], fg)
			}
		}
	}
}

// Once the run's time is up no fault starts, even when the interval's
// timer and the end of the context come due together (the final heal
// follows at once and must find nothing new to undo).
func TestRunnerStartsNoFaultOnceItsContextEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	env := &Env{Now: func() time.Duration { return time.Since(start) }, Logf: func(string, ...any) {}}
	// A 1 ns interval has always run out by the time the runner waits on
	// it, so its timer is ready together with ctx.Done.
	sched := Schedule{Interval: [2]time.Duration{1, 1}, Hold: [2]time.Duration{1, 1}}
	for seed := range uint64(100) {
		f := &fake{kind: "kill"}
		if faults := NewRunner(env, []Nemesis{f, &fake{kind: "clock", background: true}}, sched, seed).Run(ctx, nil); len(faults) > 0 {
			t.Fatalf("seed %d: faults started after the end: %+v", seed, faults)
		}
	}
}

// blocking is a nemesis whose injection waits until released, so a test
// can end the run in the middle of it.
type blocking struct {
	fake
	injecting chan struct{}
	release   chan struct{}
}

func (b *blocking) Inject(ctx context.Context, env *Env, d *Dealer) (*Active, error) {
	close(b.injecting)
	<-b.release
	return b.fake.Inject(ctx, env, d)
}

// A fault whose injection began before the end is injected in full,
// recorded, and healed before Run returns; while it lasts, Faults shows
// it in progress.
func TestRunnerFinishesAndHealsTheFaultBeingInjected(t *testing.T) {
	b := &blocking{fake: fake{kind: "kill"}, injecting: make(chan struct{}), release: make(chan struct{})}
	start := time.Now()
	env := &Env{Now: func() time.Duration { return time.Since(start) }, Logf: func(string, ...any) {}}
	sched := Schedule{Interval: [2]time.Duration{time.Millisecond, time.Millisecond}, Hold: [2]time.Duration{time.Hour, time.Hour}}
	ctx, cancel := context.WithCancel(context.Background())
	r := NewRunner(env, []Nemesis{b}, sched, 1)
	done := make(chan []Fault)
	go func() { done <- r.Run(ctx, nil) }()
	<-b.injecting
	cancel()
	if fs := r.Faults(); len(fs) != 0 {
		t.Fatalf("a fault is recorded before its injection ended: %+v", fs)
	}
	close(b.release)
	var faults []Fault
	select {
	case faults = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(faults) != 1 || faults[0].Target == "" || faults[0].End < faults[0].Start || faults[0].End == 0 {
		t.Fatalf("faults %+v; want the one injected, with its interval", faults)
	}
	if b.active != 0 || b.healed != 1 {
		t.Fatalf("%d still active, %d healed; want the fault healed before Run returned", b.active, b.healed)
	}
}

// While a fault lasts, Faults shows it with End 0.
func TestRunnerFaultsShowsTheFaultInProgress(t *testing.T) {
	f := &fake{kind: "pause"}
	start := time.Now()
	env := &Env{Now: func() time.Duration { return time.Since(start) }, Logf: func(string, ...any) {}}
	sched := Schedule{Interval: [2]time.Duration{time.Millisecond, time.Millisecond}, Hold: [2]time.Duration{time.Hour, time.Hour}}
	ctx, cancel := context.WithCancel(context.Background())
	r := NewRunner(env, []Nemesis{f}, sched, 1)
	done := make(chan []Fault)
	go func() { done <- r.Run(ctx, nil) }()
	deadline := time.Now().Add(10 * time.Second)
	var fs []Fault
	for fs = r.Faults(); len(fs) == 0 && time.Now().Before(deadline); fs = r.Faults() {
		time.Sleep(time.Millisecond)
	}
	cancel()
	final := <-done
	if len(fs) != 1 || fs[0].Kind != "pause" || fs[0].End != 0 {
		t.Fatalf("during the fault Faults gave %+v; want one pause in progress (End 0)", fs)
	}
	if len(final) != 1 || final[0].End == 0 {
		t.Fatalf("after Run, faults %+v; want the pause with its end", final)
	}
}

// The upgrader's choice within one shard: followers on the older build
// first; target store then the leader, target store-follower never the
// last replica on the older build; otherwise a restart of a running
// follower. Stopped and paused replicas are never chosen.
func TestUpgradeChoice(t *testing.T) {
	old, next := replica{up: true}, replica{up: true, next: true}
	oldLeader, nextLeader := replica{up: true, leader: true}, replica{up: true, next: true, leader: true}
	down, nextDown := replica{}, replica{next: true}
	for _, tc := range []struct {
		name     string
		target   string
		rs       []replica
		eligible []int
		upgrade  bool
		err      bool
	}{
		{"store: old followers first", "store", []replica{oldLeader, old, old}, []int{1, 2}, true, false},
		{"store: then the leader", "store", []replica{next, oldLeader, next}, []int{1}, true, false},
		{"store: all upgraded, a follower restarts", "store", []replica{next, nextLeader, next}, []int{0, 2}, false, false},
		{"store: a stopped old follower is not chosen", "store", []replica{down, oldLeader, next}, []int{1}, true, false},
		{"follower: old followers while two are old", "store-follower", []replica{oldLeader, old, next}, []int{1}, true, false},
		{"follower: the last old follower stays", "store-follower", []replica{nextLeader, old, next}, []int{1, 2}, false, false},
		{"follower: never the leader", "store-follower", []replica{next, oldLeader, next}, []int{0, 2}, false, false},
		{"follower: a stopped old replica counts as old", "store-follower", []replica{down, old, nextLeader}, []int{1}, true, false},
		{"nothing running but the leader", "store", []replica{nextLeader, nextDown, down}, nil, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eligible, upgrade, err := upgradeChoice(tc.target, tc.rs)
			if (err != nil) != tc.err || upgrade != tc.upgrade || fmt.Sprint(eligible) != fmt.Sprint(tc.eligible) {
				t.Errorf("got %v, upgrade %v, err %v; want %v, upgrade %v, err %v", eligible, upgrade, err, tc.eligible, tc.upgrade, tc.err)
			}
		})
	}
}

// The final heal upgrades followers before the leader, and stops when
// every replica runs the newer build; with no leader known it goes in
// order.
func TestHealNext(t *testing.T) {
	old, next := replica{up: true}, replica{up: true, next: true}
	oldLeader, nextLeader := replica{up: true, leader: true}, replica{up: true, next: true, leader: true}
	for _, tc := range []struct {
		rs   []replica
		want int
	}{
		{[]replica{oldLeader, old, old}, 1},
		{[]replica{oldLeader, next, next}, 0},
		{[]replica{next, nextLeader, old}, 2},
		{[]replica{next, nextLeader, next}, -1},
		{[]replica{old, old, next}, 0},
		{nil, -1},
	} {
		if got := healNext(tc.rs); got != tc.want {
			t.Errorf("healNext(%+v) = %d, want %d", tc.rs, got, tc.want)
		}
	}
}

// wrongNemesis fails to inject, or to heal, with the error it holds.
type wrongNemesis struct {
	injectErr, healErr error
}

func (w *wrongNemesis) Kind() string     { return "drain" }
func (w *wrongNemesis) Background() bool { return false }
func (w *wrongNemesis) Inject(context.Context, *Env, *Dealer) (*Active, error) {
	if w.injectErr != nil {
		return nil, w.injectErr
	}
	return &Active{Target: "allocsvr", Desc: "drain", Heal: func(context.Context) error { return w.healErr }}, nil
}
func (w *wrongNemesis) HealAll(context.Context, *Env) error { return nil }

// A nemesis's own call that the cluster answered wrongly (a WrongAnswer,
// in injecting or in healing) marks its fault as an anomaly; any other
// failure only as an error.
func TestRunnerMarksWrongAnswers(t *testing.T) {
	notFound := error(&WrongAnswer{Msg: `drain alloc1: rpc error: code = NotFound desc = no AllocSvr named "alloc1" is registered`})
	other := adminErr(context.Background(), nil, "drain", "alloc1", status.Error(codes.FailedPrecondition, "no other active AllocSvr"))
	if wrongAnswer(notFound) == "" || wrongAnswer(other) != "" || adminErr(context.Background(), nil, "drain", "x", nil) != nil {
		t.Fatalf("wrongAnswer(%v) = %q, adminErr of FAILED_PRECONDITION = %v", notFound, wrongAnswer(notFound), other)
	}
	for _, tc := range []struct {
		name    string
		n       *wrongNemesis
		anomaly bool
	}{
		{"inject answered NOT_FOUND", &wrongNemesis{injectErr: notFound}, true},
		{"heal answered NOT_FOUND", &wrongNemesis{healErr: fmt.Errorf("undrain: %w", notFound)}, true},
		{"inject refused otherwise", &wrongNemesis{injectErr: other}, false},
		{"clean", &wrongNemesis{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			env := &Env{Now: func() time.Duration { return time.Since(start) }, Logf: func(string, ...any) {}}
			sched := Schedule{Interval: [2]time.Duration{time.Millisecond, time.Millisecond}, Hold: [2]time.Duration{time.Millisecond, time.Millisecond}}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			faults := NewRunner(env, []Nemesis{tc.n}, sched, 1).Run(ctx, nil)
			if len(faults) == 0 {
				t.Fatal("no fault in 50ms")
			}
			for _, f := range faults {
				if got := f.Anomaly != ""; got != tc.anomaly {
					t.Fatalf("fault %+v: anomaly %v, want %v", f, got, tc.anomaly)
				}
			}
		})
	}
}
