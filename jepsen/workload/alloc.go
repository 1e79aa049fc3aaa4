package workload

import (
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/seqd/seqd/jepsen/checker"
	"github.com/seqd/seqd/jepsen/cluster"
	"github.com/seqd/seqd/jepsen/nemesis"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

// AllocOptions shape the alloc workload.
type AllocOptions struct {
	// Keys come in three heats, each in a section of its own. Hot keys
	// get thousands of calls a second, so they run through a step of
	// max_seq within a lease and exercise the raise path. Warm keys get a
	// few hundred, so an owner cut off from the arbiters can keep serving
	// them for its whole lease: the keys that show two owners at once.
	// Cold keys are spread over many sections, so most sections are
	// loaded and moved.
	HotKeys  int `json:"hot_keys"`
	WarmKeys int `json:"warm_keys"`
	ColdKeys int `json:"cold_keys"`
	// Workers per client kind. Warm keys have two kinds of client of
	// their own, whose workers make WarmRate calls a second each. One
	// client per warm key that uses only that key: like the front end of
	// one big group, it talks to a single AllocSvr and so learns a new
	// routing table late. And one client whose WarmRouterWorkers use
	// every warm key: it talks to every AllocSvr, learns a move at once,
	// and never waits behind a hot key's raise, so it reaches the new
	// owner while the first kind may still reach the old one.
	RouterWorkers     int     `json:"router_workers"`
	HotRouterWorkers  int     `json:"hot_router_workers"`
	UnbatchedWorkers  int     `json:"unbatched_workers"`
	GatewayWorkers    int     `json:"gateway_workers"`
	WarmRouterWorkers int     `json:"warm_router_workers"`
	WarmRate          float64 `json:"warm_rate"`
	// HotFraction and WarmFraction of an all-keys worker's operations go
	// to hot and warm keys, the rest to cold keys; CurrentFraction of all
	// operations are Current.
	HotFraction     float64 `json:"hot_fraction"`
	WarmFraction    float64 `json:"warm_fraction"`
	CurrentFraction float64 `json:"current_fraction"`
	// OpTimeout bounds one call; a call that runs out is indeterminate.
	OpTimeout time.Duration `json:"op_timeout_ns"`
	// Rate caps the operations per second over all workers (0: closed
	// loop, as fast as answers come).
	Rate float64 `json:"rate"`
	// SectionSize must match the cluster's (default 100,000), so hot keys
	// land in different sections.
	SectionSize uint64 `json:"section_size"`
}

// DefaultAllocOptions is a mix that loads every AllocSvr, keeps a few keys
// busy enough to show rollbacks, and checks in seconds.
var DefaultAllocOptions = AllocOptions{
	HotKeys: 6, WarmKeys: 8, ColdKeys: 2000,
	RouterWorkers: 6, HotRouterWorkers: 3, UnbatchedWorkers: 3, GatewayWorkers: 4, WarmRouterWorkers: 3, WarmRate: 100,
	HotFraction: 0.4, WarmFraction: 0.1, CurrentFraction: 0.2,
	OpTimeout:   2 * time.Second,
	SectionSize: 100_000,
}

// Alloc drives Next and Current on hot and cold keys through three kinds
// of router.Client (batched on all keys, batched on hot keys only, one RPC
// per call) and through the gateway's raw gRPC API, and checks G1: no
// duplicates, real-time order, and linearizability per key.
type Alloc struct {
	opt  AllocOptions
	env  *Env
	rec  *checker.Recorder
	hot  []uint64
	warm []uint64
	cold []uint64

	clients []*router.Client
	gwConn  *grpc.ClientConn
	workers []*allocWorker
	final   []*allocWorker

	ok, failed atomic.Uint64
}

// NewAlloc returns the alloc workload; zero fields take DefaultAllocOptions.
func NewAlloc(opt AllocOptions) *Alloc {
	d := DefaultAllocOptions
	opt.HotKeys = cmp.Or(opt.HotKeys, d.HotKeys)
	opt.WarmKeys = cmp.Or(opt.WarmKeys, d.WarmKeys)
	opt.WarmRate = cmp.Or(opt.WarmRate, d.WarmRate)
	opt.WarmFraction = cmp.Or(opt.WarmFraction, d.WarmFraction)
	opt.ColdKeys = cmp.Or(opt.ColdKeys, d.ColdKeys)
	if opt.RouterWorkers+opt.HotRouterWorkers+opt.UnbatchedWorkers+opt.GatewayWorkers+opt.WarmRouterWorkers == 0 {
		opt.RouterWorkers, opt.HotRouterWorkers, opt.UnbatchedWorkers, opt.GatewayWorkers = d.RouterWorkers, d.HotRouterWorkers, d.UnbatchedWorkers, d.GatewayWorkers
		opt.WarmRouterWorkers = d.WarmRouterWorkers
	}
	opt.HotFraction = cmp.Or(opt.HotFraction, d.HotFraction)
	opt.CurrentFraction = cmp.Or(opt.CurrentFraction, d.CurrentFraction)
	opt.OpTimeout = cmp.Or(opt.OpTimeout, d.OpTimeout)
	opt.SectionSize = cmp.Or(opt.SectionSize, d.SectionSize)
	return &Alloc{opt: opt}
}

// Name implements Workload.
func (a *Alloc) Name() string { return "alloc" }

// op is one call a worker can make.
type op func(ctx context.Context, kind checker.SeqKind, key uint64) (uint64, error)

type allocWorker struct {
	id    int
	kind  string // router, router-hot, router-unbatched, gateway, router-warm, router-single, final
	call  op
	keys  func(*rand.Rand) uint64
	rng   *rand.Rand
	every time.Duration
}

// Start implements Workload: it picks the keys and connects the clients.
func (a *Alloc) Start(ctx context.Context, env *Env) error {
	a.env = env
	a.rec = checker.NewRecorderAt(env.Origin)
	a.hot, a.warm, a.cold = pickKeys(a.opt, env.Seed)
	c := env.Cluster
	boot := append([]string{c.Gateway().GRPC}, c.ArbiterAddrs()...)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	newClient := func(unbatched bool) (*router.Client, error) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cl, err := router.New(cctx, router.Config{Addrs: boot, DisableBatching: unbatched, Logger: quiet,
			DialOptions: []grpc.DialOption{grpc.WithNoProxy()}})
		if err != nil {
			return nil, err
		}
		a.clients = append(a.clients, cl)
		return cl, nil
	}
	batched, err := newClient(false)
	if err != nil {
		return err
	}
	hotOnly, err := newClient(false)
	if err != nil {
		return err
	}
	warmOnly, err := newClient(false)
	if err != nil {
		return err
	}
	unbatched, err := newClient(true)
	if err != nil {
		return err
	}
	finalClient, err := newClient(false)
	if err != nil {
		return err
	}
	if a.gwConn, err = grpc.NewClient(c.Gateway().GRPC, cluster.DialOptions()...); err != nil {
		return err
	}
	gw := seqdv1.NewSequencerClient(a.gwConn)

	viaRouter := func(cl *router.Client) op {
		return func(ctx context.Context, kind checker.SeqKind, key uint64) (uint64, error) {
			if kind == checker.Current {
				return cl.Current(ctx, key)
			}
			return cl.Next(ctx, key)
		}
	}
	viaGateway := func(ctx context.Context, kind checker.SeqKind, key uint64) (uint64, error) {
		if kind == checker.Current {
			r, err := gw.Current(ctx, &seqdv1.CurrentRequest{Key: key})
			return r.GetSeq(), err
		}
		r, err := gw.Next(ctx, &seqdv1.NextRequest{Key: key})
		return r.GetSeq(), err
	}
	anyKey := func(r *rand.Rand) uint64 {
		switch x := r.Float64(); {
		case x < a.opt.HotFraction:
			return a.hot[r.IntN(len(a.hot))]
		case x < a.opt.HotFraction+a.opt.WarmFraction:
			return a.warm[r.IntN(len(a.warm))]
		}
		return a.cold[r.IntN(len(a.cold))]
	}
	hotKey := func(r *rand.Rand) uint64 { return a.hot[r.IntN(len(a.hot))] }
	warmKey := func(r *rand.Rand) uint64 { return a.warm[r.IntN(len(a.warm))] }
	warmEvery := time.Duration(float64(time.Second) / a.opt.WarmRate)
	type workerKind struct {
		name  string
		n     int
		call  op
		keys  func(*rand.Rand) uint64
		every time.Duration
	}
	total := a.opt.RouterWorkers + a.opt.HotRouterWorkers + a.opt.UnbatchedWorkers + a.opt.GatewayWorkers
	var every time.Duration
	if a.opt.Rate > 0 {
		every = time.Duration(float64(total) / a.opt.Rate * float64(time.Second))
	}
	kinds := []workerKind{
		{"router", a.opt.RouterWorkers, viaRouter(batched), anyKey, every},
		{"router-hot", a.opt.HotRouterWorkers, viaRouter(hotOnly), hotKey, every},
		{"router-unbatched", a.opt.UnbatchedWorkers, viaRouter(unbatched), anyKey, every},
		{"gateway", a.opt.GatewayWorkers, viaGateway, anyKey, every},
		{"router-warm", a.opt.WarmRouterWorkers, viaRouter(warmOnly), warmKey, warmEvery},
	}
	for _, k := range a.warm {
		cl, err := newClient(false)
		if err != nil {
			return err
		}
		kinds = append(kinds, workerKind{"router-single", 1, viaRouter(cl), func(*rand.Rand) uint64 { return k }, warmEvery})
	}
	for _, k := range kinds {
		for range k.n {
			id := len(a.workers)
			a.workers = append(a.workers, &allocWorker{id: id, kind: k.name, call: k.call, keys: k.keys, every: k.every,
				rng: rand.New(rand.NewPCG(env.Seed, uint64(id)+1))})
		}
	}
	for i := range 8 {
		a.final = append(a.final, &allocWorker{id: len(a.workers) + i, kind: "final", call: viaRouter(finalClient)})
	}
	return nil
}

// pickKeys spreads hot and warm keys evenly over the 256 slots, hot ones
// at slot h*256/H and warm ones at w*256/W+16, each in a section (so a
// slot) of its own: whichever AllocSvr a fault hits holds some of each,
// however the slots are split. Cold keys are distinct random keys from
// the first 2048 sections.
func pickKeys(opt AllocOptions, seed uint64) (hot, warm, cold []uint64) {
	seen := map[uint64]bool{}
	key := func(slot, i int) uint64 {
		k := uint64(slot%256)*opt.SectionSize + 1 + uint64(i)
		seen[k] = true
		return k
	}
	for h := range opt.HotKeys {
		hot = append(hot, key(h*256/opt.HotKeys, h))
	}
	for w := range opt.WarmKeys {
		warm = append(warm, key(w*256/opt.WarmKeys+16, opt.HotKeys+w))
	}
	rng := rand.New(rand.NewPCG(seed, 0xa110c))
	for len(cold) < opt.ColdKeys {
		k := 1 + rng.Uint64N(256*8*opt.SectionSize)
		if !seen[k] {
			seen[k] = true
			cold = append(cold, k)
		}
	}
	return hot, warm, cold
}

// do makes one call and records it; it reports whether the call succeeded.
func (a *Alloc) do(w *allocWorker, kind checker.SeqKind, key uint64, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	start := a.rec.Now()
	v, err := w.call(ctx, kind, key)
	end := a.rec.Now()
	cancel()
	o := checker.SeqOp{Client: w.id, Key: key, Kind: kind, Start: start, End: end, Value: v}
	if err != nil {
		o.Err, o.Value = err.Error(), 0
		a.failed.Add(1)
	} else {
		a.ok.Add(1)
	}
	a.rec.Add(o)
	return err == nil
}

// Run implements Workload.
func (a *Alloc) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, w := range a.workers {
		wg.Add(1)
		go func(w *allocWorker) {
			defer wg.Done()
			next := time.Now()
			failures := 0
			for ctx.Err() == nil {
				kind := checker.Next
				if w.rng.Float64() < a.opt.CurrentFraction {
					kind = checker.Current
				}
				if a.do(w, kind, w.keys(w.rng), a.opt.OpTimeout) {
					failures = 0
				} else {
					// A client that cannot connect (its gateway is down)
					// fails at once; back off as a real one would
					// instead of spinning on the CPU the cluster needs.
					failures++
					nemesis.Sleep(ctx, min(100*time.Millisecond, time.Millisecond<<min(failures, 7)))
				}
				if w.every > 0 {
					next = next.Add(w.every)
					if d := time.Until(next); d > 0 {
						nemesis.Sleep(ctx, d)
					} else {
						next = time.Now()
					}
				}
			}
		}(w)
	}
	wg.Wait()
	return nil
}

// Final implements Workload: after the heal, Next and Current on every hot
// key and Current on a sample of cold keys. They must all succeed
// (checker "recovery"), and they take part in every other check.
func (a *Alloc) Final(ctx context.Context) error {
	type job struct {
		kind checker.SeqKind
		key  uint64
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	for _, w := range a.final {
		wg.Add(1)
		go func(w *allocWorker) {
			defer wg.Done()
			for j := range jobs {
				a.do(w, j.kind, j.key, 15*time.Second)
			}
		}(w)
	}
	for _, k := range append(append([]uint64(nil), a.hot...), a.warm...) {
		jobs <- job{checker.Next, k}
		jobs <- job{checker.Current, k}
	}
	for _, k := range a.cold[:min(len(a.cold), 200)] {
		jobs <- job{checker.Current, k}
	}
	close(jobs)
	wg.Wait()
	return nil
}

// Progress implements Workload.
func (a *Alloc) Progress() (uint64, uint64) { return a.ok.Load(), a.failed.Load() }

// Counts implements Workload.
func (a *Alloc) Counts() map[string]uint64 {
	kindOf := map[int]string{}
	for _, w := range append(append([]*allocWorker(nil), a.workers...), a.final...) {
		kindOf[w.id] = w.kind
	}
	m := map[string]uint64{}
	for _, o := range a.rec.Ops() {
		res := "ok"
		if !o.OK() {
			res = "failed"
		}
		m["total"]++
		m[res]++
		m[o.Kind.String()+"_"+res]++
		m["via_"+kindOf[o.Client]]++
	}
	return m
}

// Ops returns the history.
func (a *Alloc) Ops() []checker.SeqOp { return a.rec.Ops() }

// Check implements Workload.
func (a *Alloc) Check(ctx context.Context, opt CheckOptions) []checker.Result {
	ops := a.rec.Ops()
	var out []checker.Result
	timed := func(name, summary string, f func() ([]checker.Anomaly, checker.Verdict, string)) {
		start := time.Now()
		as, v, note := f()
		r := checker.Result{Checker: name, Workload: "alloc", Guarantee: "G1", Verdict: v, Summary: summary, Findings: checker.Findings(as), Elapsed: time.Since(start)}
		if note != "" {
			r.Summary += " " + note
		}
		out = append(out, r)
	}
	timed("unique", "No seq returned twice by Next for one key (Jepsen's unique-ids, per key).", func() ([]checker.Anomaly, checker.Verdict, string) {
		as := checker.Unique(ops)
		return as, checker.FromAnomalies(as), ""
	})
	timed("realtime", "A Next exceeds, and a Current reaches, every value of an operation on the same key that completed before it started.", func() ([]checker.Anomaly, checker.Verdict, string) {
		as := checker.Realtime(ops)
		return as, checker.FromAnomalies(as), ""
	})
	timed("linearizable", "Per key, porcupine finds a linearization of Next/Current (state = last value; failed calls possibly applied).", func() ([]checker.Anomaly, checker.Verdict, string) {
		r := checker.Linearizable(ops, checker.LinearizableOptions{Timeout: opt.Timeout})
		note := fmt.Sprintf("(%d keys, %d segments, longest %d ops, %v)", r.Keys, r.Segments, r.Largest, r.Elapsed.Round(time.Millisecond))
		if r.Verdict == checker.Unknown {
			n := len(r.Unknown)
			shown := r.Unknown[:min(n, 3)]
			note += fmt.Sprintf(" UNKNOWN for %d keys: %v", n, shown)
		}
		return r.Anomalies, r.Verdict, note
	})
	timed("recovery", "After the final heal and quiet period, every final read succeeds (G6: the cluster serves again).", func() ([]checker.Anomaly, checker.Verdict, string) {
		finalIDs := map[int]bool{}
		for _, w := range a.final {
			finalIDs[w.id] = true
		}
		var as []checker.Anomaly
		n := 0
		for _, o := range ops {
			if !finalIDs[o.Client] {
				continue
			}
			n++
			if !o.OK() {
				as = append(as, checker.Anomaly{Kind: "unavailable", Key: o.Key, Ops: []checker.SeqOp{o},
					Msg: fmt.Sprintf("key %d: final %s failed after the heal: %s", o.Key, o.Kind, o.Err)})
			}
		}
		if n == 0 {
			return nil, checker.Unknown, "(no final reads were made)"
		}
		return as, checker.FromAnomalies(as), fmt.Sprintf("(%d final reads)", n)
	})
	return out
}

// Samples implements Workload.
func (a *Alloc) Samples() []Sample {
	ops := a.rec.Ops()
	out := make([]Sample, len(ops))
	for i, o := range ops {
		out[i] = Sample{Start: o.Start, End: o.End, OK: o.OK()}
	}
	return out
}

// Unavailability implements Workload: hot and warm keys are in use all
// the time, so the gap between two successful operations on one is how
// long it could not be served.
func (a *Alloc) Unavailability(faults []nemesis.Fault) []Gap {
	succ := map[uint64][]time.Duration{}
	hot := map[uint64]bool{}
	for _, k := range append(append([]uint64(nil), a.hot...), a.warm...) {
		hot[k] = true
	}
	for _, o := range a.rec.Ops() {
		if o.OK() && hot[o.Key] {
			succ[o.Key] = append(succ[o.Key], o.End)
		}
	}
	for _, ts := range succ {
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	}
	// Clock skew runs alongside the other faults; a gap that overlaps one
	// of those is theirs, not the skew's.
	overlapsOther := func(from, to time.Duration) bool {
		for _, f := range faults {
			if !strings.HasPrefix(f.Kind, "clock") && to >= f.Start && from <= f.End {
				return true
			}
		}
		return false
	}
	var out []Gap
	for i, f := range faults {
		if f.Err != "" && f.Target == "" {
			continue
		}
		best := Gap{Fault: f.Type(), FaultIdx: i}
		for k, ts := range succ {
			for j := 1; j < len(ts); j++ {
				from, to := ts[j-1], ts[j]
				if to < f.Start || from > f.End {
					continue
				}
				if strings.HasPrefix(f.Kind, "clock") && overlapsOther(from, to) {
					continue
				}
				if to-from > best.To-best.From {
					best.Key, best.From, best.To = k, from, to
				}
			}
		}
		if best.To > 0 {
			out = append(out, best)
		}
	}
	return out
}

// Artifacts implements Workload: the whole history as gzipped JSON lines,
// and porcupine's visualization of the segments that show anomalies and of
// hot-key segments during faults, with the faults marked.
func (a *Alloc) Artifacts(ctx context.Context, dir string, faults []nemesis.Fault, results []checker.Result) ([]Artifact, error) {
	ops := a.rec.Ops()
	var arts []Artifact
	if err := writeHistory(filepath.Join(dir, "alloc-history.jsonl.gz"), ops); err != nil {
		return nil, err
	}
	arts = append(arts, Artifact{Name: "alloc history", Path: "alloc-history.jsonl.gz", Note: fmt.Sprintf("%d operations, one JSON object per line", len(ops))})

	flagged := map[[2]int64]bool{} // (client, start) of operations named by an anomaly
	flaggedKeys := map[uint64]bool{}
	for _, r := range results {
		for _, f := range r.Findings {
			for _, o := range f.Ops {
				flagged[[2]int64{int64(o.Client), int64(o.Start)}] = true
				flaggedKeys[o.Key] = true
			}
		}
	}
	inFault := func(s, e time.Duration) bool {
		for _, f := range faults {
			if s <= f.End && e >= f.Start {
				return true
			}
		}
		return false
	}
	const budget = 12_000
	used, chosenHot := 0, map[uint64]int{}
	pick := func(key uint64, seg []checker.SeqOp) bool {
		if len(seg) == 0 || used+len(seg) > budget {
			return false
		}
		keep := false
		for _, o := range seg {
			if flagged[[2]int64{int64(o.Client), int64(o.Start)}] {
				keep = true
				break
			}
		}
		if !keep && len(flaggedKeys) == 0 && chosenHot[key] < 3 && inFault(seg[0].Start, seg[len(seg)-1].End) {
			keep = len(seg) > 1
			if keep {
				chosenHot[key]++
			}
		}
		if keep {
			used += len(seg)
		}
		return keep
	}
	var notes []checker.Annotation
	for _, f := range faults {
		notes = append(notes, checker.Annotation{Tag: "nemesis", Start: f.Start, End: f.End, Description: f.Kind + " " + f.Target, Details: f.Desc, Color: "#f6d5d5"})
	}
	vctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	n, err := checker.Visualize(vctx, ops, pick, notes, filepath.Join(dir, "alloc-linearizability.html"))
	if err != nil {
		return arts, fmt.Errorf("porcupine visualization: %w", err)
	}
	arts = append(arts, Artifact{Name: "porcupine visualization (alloc)", Path: "alloc-linearizability.html",
		Note: fmt.Sprintf("%d segments: those holding anomalous operations, else hot-key segments overlapping faults", n)})
	return arts, nil
}

func writeHistory(path string, ops []checker.SeqOp) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	enc := json.NewEncoder(zw)
	type line struct {
		Client int    `json:"client"`
		Kind   string `json:"op"`
		Key    uint64 `json:"key"`
		Start  int64  `json:"start_ns"`
		End    int64  `json:"end_ns"`
		Value  uint64 `json:"value,omitempty"`
		Err    string `json:"error,omitempty"`
	}
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Start < ops[j].Start })
	for _, o := range ops {
		if err := enc.Encode(line{o.Client, o.Kind.String(), o.Key, int64(o.Start), int64(o.End), o.Value, o.Err}); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// Close implements Workload.
func (a *Alloc) Close() error {
	for _, c := range a.clients {
		c.Close()
	}
	if a.gwConn != nil {
		a.gwConn.Close()
	}
	return nil
}
