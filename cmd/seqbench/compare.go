package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/seqd/seqd/internal/bench"
	"github.com/seqd/seqd/internal/bench/peer"
	"github.com/seqd/seqd/internal/grpcconn"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// The systems compare runs, in order.
const (
	sysNoop           = "grpc-noop"
	sysRedis          = "redis"
	sysRedisPipelined = "redis-pipelined"
	sysEtcd           = "etcd"
)

var allSystems = []string{sysNoop, modeUnary, modeBatched, modeCoalesced, sysRedis, sysRedisPipelined, sysEtcd}

// ratioDefs are the seq/s ratios reported, each only when both ran.
var ratioDefs = []struct{ key, num, den string }{
	{"seqd_unary_vs_grpc_noop", modeUnary, sysNoop},
	{"seqd_coalesced_vs_grpc_noop", modeCoalesced, sysNoop},
	{"seqd_unary_vs_redis", modeUnary, sysRedis},
	{"seqd_batched_vs_redis", modeBatched, sysRedis},
	{"seqd_batched_vs_redis_pipelined", modeBatched, sysRedisPipelined},
	{"seqd_unary_vs_etcd", modeUnary, sysEtcd},
}

const compareUsage = `Usage: seqbench compare [flags]

Runs the same load (--concurrency closed-loop workers, keys uniform in
[1, --keys]) against each system in turn, after a warm-up, on this machine:

  grpc-noop        in-process gRPC Sequencers whose Next returns at once: the
                   ceiling for one unary call. As many servers as the seqd
                   cluster has AllocSvrs, one connection each, and every
                   call goes to the server standing for the AllocSvr that
                   owns its key in seqd's routing table, so the calls spread
                   over servers and connections exactly as seqd-unary's do
                   (the seqd cluster starts first, for its table, and idles
                   while grpc-noop runs). Note: sections are 100,000 keys,
                   so keys 1..100000 all fall in one slot and one AllocSvr;
                   use --keys 25600000 to spread over every slot
  seqd-unary       router.Client without batching: one Next RPC per op
  seqd-batched     router.Client, NextBatch of --depth random keys per op
  seqd-coalesced   router.Client, single-key Next; concurrent calls share
                   stream messages
  redis            redis-server (AOF, appendfsync everysec), go-redis client
                   with a connection per worker, one INCR per op
  redis-pipelined  the same server, --depth INCRs pipelined per op
  etcd             single-node etcd, clientv3: Get then Txn compare-and-swap
                   per op, retried on conflict

redis-server and etcd are started on free loopback ports in temporary
directories and removed at the end; one that is not installed is skipped.

Flags:
`

// compareReport is what compare prints and writes with --json.
type compareReport struct {
	Systems map[string]bench.Result `json:"systems"`
	Ratios  map[string]float64      `json:"ratios"`
	// Skipped says why a system did not run.
	Skipped map[string]string `json:"skipped,omitempty"`
	Env     bench.Env         `json:"env"`

	// Notes say how the load spread and what was retried.
	Notes []string `json:"notes,omitempty"`

	order []string
}

// comparer runs the systems one after another and collects the report.
type comparer struct {
	shape
	cfg      bench.Config
	stderr   io.Writer
	progress *bench.Progress
	rep      *compareReport
	failed   []string // systems that should have run but could not

	// addr and target are the seqd cluster, opened once for grpc-noop's
	// routing table and the seqd systems.
	addr   string
	target *seqdTarget
}

// seqd returns the seqd cluster, opening it on first use.
func (c *comparer) seqd(ctx context.Context) (*seqdTarget, error) {
	if c.target != nil {
		return c.target, nil
	}
	t, err := openSeqd(ctx, c.addr, c.stderr)
	if err != nil {
		return nil, fmt.Errorf("seqd: %w", err)
	}
	c.target = t
	return t, nil
}

func runCompare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("seqbench compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		addr        = fs.String("addr", "", "bootstrap address(es) of a seqd cluster (default: start one in-process)")
		duration    = fs.Duration("duration", 10*time.Second, "measured duration per system")
		warmup      = fs.Duration("warmup", time.Second, "unmeasured warm-up before each system")
		concurrency = fs.Int("concurrency", 64, "closed-loop workers per system")
		keys        = fs.Uint64("keys", 100_000, "keys are picked uniformly from [1, keys]")
		depth       = fs.Int("depth", 16, "keys per seqd NextBatch and INCRs per Redis pipeline")
		systems     = fs.String("systems", strings.Join(allSystems, ","), "systems to run, comma-separated, from: "+strings.Join(allSystems, ", "))
		jsonPath    = fs.String("json", "", "also write the results as JSON to this file")
	)
	fs.Usage = func() {
		fmt.Fprint(stderr, compareUsage)
		fs.PrintDefaults()
	}
	var (
		sh   shape
		want []string
	)
	if err := parseFlags(fs, args, func() error {
		sh = shape{concurrency: *concurrency, keys: *keys, depth: *depth}
		if sh.depth < 1 || sh.depth > maxBatch {
			return fmt.Errorf("--depth %d: must be 1..%d (an AllocSvr's NextBatch limit)", sh.depth, maxBatch)
		}
		var err error
		want, err = parseSystems(*systems)
		return firstErr(err, sh.validate(), checkTimes(*duration, *warmup), checkJSON(*jsonPath))
	}); err != nil {
		return err
	}

	progress := bench.NewProgress(stderr)
	env := checkEnv(stderr)
	c := &comparer{
		shape:    sh,
		cfg:      bench.Config{Duration: *duration, Warmup: *warmup, Progress: progress},
		stderr:   stderr,
		progress: progress,
		rep:      &compareReport{Systems: map[string]bench.Result{}, Ratios: map[string]float64{}, Skipped: map[string]string{}, Env: env, order: want},
		addr:     *addr,
	}
	defer func() {
		if c.target != nil {
			c.target.Close()
		}
	}()
	has := func(s ...string) bool {
		return slices.ContainsFunc(s, func(x string) bool { return slices.Contains(want, x) })
	}
	steps := []struct {
		run     func(context.Context, []string) error
		systems []string
	}{
		{c.runNoop, []string{sysNoop}},
		{c.runSeqd, []string{modeUnary, modeBatched, modeCoalesced}},
		{c.runRedis, []string{sysRedis, sysRedisPipelined}},
		{c.runEtcd, []string{sysEtcd}},
	}
	var runErr error
	for _, st := range steps {
		if ctx.Err() != nil {
			break
		}
		if !has(st.systems...) {
			continue
		}
		if err := st.run(ctx, want); err != nil {
			// One system failing does not hide the others' numbers.
			progress.Printf("seqbench: %v\n", err)
			for _, s := range st.systems {
				_, ran := c.rep.Systems[s]
				_, noted := c.rep.Skipped[s]
				if slices.Contains(want, s) && !ran && !noted {
					c.rep.Skipped[s] = "failed: " + err.Error()
					c.failed = append(c.failed, s)
				}
			}
		}
	}
	c.rep.ratios()
	fmt.Fprintln(stdout)
	printTable(stdout, c.rep)
	if *jsonPath != "" {
		if err := bench.WriteJSON(*jsonPath, c.rep); err != nil {
			return err
		}
	}
	switch {
	case ctx.Err() != nil:
		runErr = errors.New("interrupted; the table covers what ran")
	case len(c.failed) > 0:
		runErr = fmt.Errorf("%s failed (see above)", strings.Join(c.failed, ", "))
	case len(c.rep.Systems) == 0:
		runErr = errors.New("nothing was measured: every system in --systems was skipped (see above)")
	}
	return runErr
}

func parseSystems(s string) ([]string, error) {
	// Always in the documented order, whatever order was given.
	return pickSystems("--systems", s, allSystems)
}

// measure runs one system and records its result.
func (c *comparer) measure(ctx context.Context, name string, ops []bench.Op, seqsPerOp int) *bench.Result {
	cfg := c.cfg
	cfg.Label = name
	st, err := bench.Run(ctx, cfg, ops)
	if err != nil {
		c.rep.Skipped[name] = "failed: " + err.Error()
		c.failed = append(c.failed, name)
		return nil
	}
	if st.Interrupted {
		return nil
	}
	r := bench.NewResult(name, st, c.concurrency, c.keys, seqsPerOp, 0)
	c.rep.Systems[name] = r
	if err := checkSucceeded(name, r.Ops, r.Errors, r.ErrorSamples); err != nil {
		c.failed = append(c.failed, name)
	}
	c.progress.Printf("seqbench: %-16s %12s seq/s  p50 %8.1f µs  p99 %8.1f µs  errors %d\n",
		name, bench.FormatCount(r.SeqPerSec), r.P50us, r.P99us, r.Errors)
	return &r
}

func (c *comparer) runNoop(ctx context.Context, want []string) error {
	// The servers stand for seqd's AllocSvrs: read who owns which slot.
	target, err := c.seqd(ctx)
	if err != nil {
		return fmt.Errorf("%s needs seqd's routing table: %w", sysNoop, err)
	}
	if !slices.ContainsFunc(want, func(s string) bool { return s == modeUnary || s == modeBatched || s == modeCoalesced }) {
		// No seqd system follows: do not leave the cluster idling under
		// the other systems.
		defer func() {
			target.Close()
			c.target = nil
		}()
	}
	cl, err := target.client(ctx, false)
	if err != nil {
		return fmt.Errorf("%s needs seqd's routing table: %w", sysNoop, err)
	}
	if target.local != nil {
		// The client may have bootstrapped from an arbiter whose table
		// still lacks the second AllocSvr's slots (the test saw "1
		// servers" once): take the leader's.
		if err := target.local.CatchUp(ctx, cl); err != nil {
			cl.Close()
			return fmt.Errorf("%s needs seqd's routing table: %w", sysNoop, err)
		}
	}
	rt, err := newNoopRouting(cl.Table())
	cl.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", sysNoop, err)
	}
	var clients []seqdv1.SequencerClient
	// The same connection setup as router.Client's: one pool, one
	// connection per server.
	pool := grpcconn.NewPool()
	defer pool.Close()
	for range rt.servers {
		srv, err := peer.StartNoop()
		if err != nil {
			return fmt.Errorf("%s: %w", sysNoop, err)
		}
		defer srv.Close()
		cc, err := pool.Get(srv.Addr())
		if err != nil {
			return fmt.Errorf("%s: %w", sysNoop, err)
		}
		clients = append(clients, seqdv1.NewSequencerClient(cc))
	}
	if r := c.measure(ctx, sysNoop, noopOps(clients, rt, c.shape), 1); r != nil {
		c.rep.Notes = append(c.rep.Notes, fmt.Sprintf("%s: %d servers, like seqd's %d AllocSvrs; calls routed by seqd's slot map, so keys 1..%d went %s to them (seqd-unary's calls split the same way)",
			sysNoop, rt.servers, rt.servers, c.keys, rt.describeSpread(c.keys)))
	}
	return nil
}

// noopRouting sends each key to the no-op server that stands for the
// AllocSvr owning the key's slot in a seqd routing table.
type noopRouting struct {
	sectionSize, numSlots uint64
	servers               int
	slotServer            []int // per slot
}

func newNoopRouting(t *seqdv1.RoutingTable) (*noopRouting, error) {
	if t == nil || t.SectionSize == 0 || t.NumSlots == 0 || len(t.Slots) != int(t.NumSlots) {
		return nil, errors.New("seqd's routing table is empty or incomplete")
	}
	var owners []string
	for _, sl := range t.Slots {
		if sl.Owner == "" {
			return nil, errors.New("seqd's routing table has a slot without owner")
		}
		if !slices.Contains(owners, sl.Owner) {
			owners = append(owners, sl.Owner)
		}
	}
	slices.Sort(owners)
	r := &noopRouting{sectionSize: t.SectionSize, numSlots: uint64(t.NumSlots), servers: len(owners), slotServer: make([]int, len(t.Slots))}
	for i, sl := range t.Slots {
		r.slotServer[i] = slices.Index(owners, sl.Owner)
	}
	return r, nil
}

// server returns the index of the server for key, as router.Client picks
// the AllocSvr: slot = (key / section size) mod slots.
func (r *noopRouting) server(key uint64) int {
	return r.slotServer[(key/r.sectionSize)%r.numSlots]
}

// spread returns the share of keys 1..keys each server gets. Sections
// go round the slots, so it counts whole rounds at once and then the
// sections of the last, partial round: at most numSlots steps, for any
// --keys up to 2^64-1.
func (r *noopRouting) spread(keys uint64) []float64 {
	counts := make([]float64, r.servers)
	rounds, rest := uint64(0), keys // over positions 0..keys; 0 is taken off below
	if hi, round := bits.Mul64(r.sectionSize, r.numSlots); hi == 0 {
		rounds, rest = keys/round, keys%round
	}
	start, wrapped := uint64(0), false // section j's first position in the last round
	for _, srv := range r.slotServer {
		counts[srv] += float64(rounds) * float64(r.sectionSize)
		if !wrapped && start <= rest {
			counts[srv] += float64(min(r.sectionSize-1, rest-start)) + 1
		}
		start += r.sectionSize
		wrapped = wrapped || start < r.sectionSize
	}
	counts[r.slotServer[0]]-- // key 0 is never picked
	for i := range counts {
		counts[i] /= float64(keys)
	}
	return counts
}

func (r *noopRouting) describeSpread(keys uint64) string {
	var parts []string
	for _, f := range r.spread(keys) {
		parts = append(parts, fmt.Sprintf("%.1f%%", 100*f))
	}
	return strings.Join(parts, " / ")
}

func (c *comparer) runSeqd(ctx context.Context, want []string) error {
	target, err := c.seqd(ctx)
	if err != nil {
		return err
	}
	// Done with seqd: close it before the next systems run.
	defer func() {
		target.Close()
		c.target = nil
	}()
	for _, mode := range []string{modeUnary, modeBatched, modeCoalesced} {
		if !slices.Contains(want, mode) || ctx.Err() != nil {
			continue
		}
		// A fresh client per mode, so one mode's streams and caches do not
		// carry over into the next.
		cl, err := target.client(ctx, mode != modeUnary)
		if err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
		ops, depth := seqdNextOps(cl, c.shape), 1
		if mode == modeBatched {
			ops, depth = seqdBatchOps(cl, c.shape), c.depth
		}
		c.measure(ctx, mode, ops, depth)
		cl.Close()
	}
	return nil
}

func (c *comparer) runRedis(ctx context.Context, want []string) error {
	srv, err := peer.StartRedis(ctx)
	if errors.Is(err, peer.ErrNotInstalled) {
		c.skip(err, want, sysRedis, sysRedisPipelined)
		return nil
	}
	if err != nil {
		return err
	}
	defer srv.Close()
	for _, name := range []string{sysRedis, sysRedisPipelined} {
		if !slices.Contains(want, name) || ctx.Err() != nil {
			continue
		}
		pipelined := name == sysRedisPipelined
		// A fresh client per system; the pool holds a connection per worker.
		rdb := peer.NewRedisClient(srv.Addr(), c.concurrency)
		depth := 1
		if pipelined {
			depth = c.depth
		}
		c.measure(ctx, name, redisOps(rdb, c.shape, pipelined), depth)
		rdb.Close()
		if err := srv.Err(); err != nil {
			return err
		}
	}
	return nil
}

func (c *comparer) runEtcd(ctx context.Context, want []string) error {
	srv, err := peer.StartEtcd(ctx)
	if errors.Is(err, peer.ErrNotInstalled) {
		c.skip(err, want, sysEtcd)
		return nil
	}
	if err != nil {
		return err
	}
	defer srv.Close()
	cli, err := peer.DialEtcd(ctx, srv.Addr())
	if err != nil {
		return err
	}
	defer cli.Close()
	var conflicts atomic.Uint64
	if r := c.measure(ctx, sysEtcd, etcdOps(cli, c.shape, &conflicts), 1); r != nil {
		c.rep.Notes = append(c.rep.Notes, fmt.Sprintf(
			"etcd: %d compare-and-swap attempts lost a race and were retried (warm-up included)", conflicts.Load()))
	}
	return srv.Err()
}

// skip records systems that cannot run because a binary is missing.
func (c *comparer) skip(err error, want []string, systems ...string) {
	msg := strings.TrimSuffix(err.Error(), ": "+peer.ErrNotInstalled.Error())
	for _, s := range systems {
		if !slices.Contains(want, s) {
			continue
		}
		c.rep.Skipped[s] = msg // printed once, under the table
	}
}

// ratios fills in the seq/s ratios whose two systems both ran.
func (r *compareReport) ratios() {
	for _, d := range ratioDefs {
		num, ok1 := r.Systems[d.num]
		den, ok2 := r.Systems[d.den]
		if ok1 && ok2 && den.SeqPerSec > 0 {
			r.Ratios[d.key] = num.SeqPerSec / den.SeqPerSec
		}
	}
}
