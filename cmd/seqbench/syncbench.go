package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/seqd/seqd/internal/bench"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

const syncUsage = `Usage: seqbench sync [flags]

First loads --events inbox events into --users inboxes with 1:1 sends (each
send writes two events: the sender's copy and the recipient's), then
measures how fast they are read back, each for --duration after --warmup:

  sync       --concurrency workers page through random users' inboxes from
             checkpoint 0 with Sync (--page events per call) to the end,
             then start over with another user; latency is per call.
  subscribe  --concurrency workers each open a Subscribe stream for a random
             user from after_seq 0 and count the events received until the
             stream has caught up with the inbox (the server pushes the
             backlog in pages of 500), then close it; latency is per
             stream, from opening to caught up.

Without --addr an in-process cluster with one store shard of 3 replicas is
started.

Flags:
`

// readResult is one read phase's summary.
type readResult struct {
	Mode         string              `json:"mode"`
	Events       uint64              `json:"events"`
	EventsPerSec float64             `json:"events_per_sec"`
	Calls        uint64              `json:"calls"`
	CallsPerSec  float64             `json:"calls_per_sec"`
	P50us        float64             `json:"p50_us"`
	P99us        float64             `json:"p99_us"`
	P999us       float64             `json:"p999_us"`
	MaxUs        float64             `json:"max_us"`
	Errors       uint64              `json:"errors"`
	ErrorSamples []bench.ErrorSample `json:"error_samples,omitempty"`
	Concurrency  int                 `json:"concurrency"`
	DurationS    float64             `json:"duration_s"`
	Interrupted  bool                `json:"interrupted,omitempty"`
}

func newReadResult(mode string, st *bench.Stats, concurrency int) readResult {
	r := bench.NewResult(mode, st, concurrency, 0, 0, 0)
	return readResult{
		Mode: mode, Events: r.Seqs, EventsPerSec: r.SeqPerSec, Calls: r.Ops, CallsPerSec: r.OpsPerSec,
		P50us: r.P50us, P99us: r.P99us, P999us: r.P999us, MaxUs: r.MaxUs,
		Errors: r.Errors, ErrorSamples: r.ErrorSamples, Concurrency: concurrency,
		DurationS: r.DurationS, Interrupted: r.Interrupted,
	}
}

// syncReport is what sync writes with --json.
type syncReport struct {
	Users         uint64  `json:"users"`
	LoadedEvents  uint64  `json:"loaded_events"`
	EventsPerUser float64 `json:"events_per_user"`
	Page          int     `json:"page"`
	BodyBytes     int     `json:"body_bytes"`
	PreloadS      float64 `json:"preload_s"`
	Via           string  `json:"via"`
	// Sync and Subscribe are the two read paths.
	Sync      *readResult `json:"sync,omitempty"`
	Subscribe *readResult `json:"subscribe,omitempty"`
	Cluster   string      `json:"cluster"`
	Env       bench.Env   `json:"env"`
}

func runSyncBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("seqbench sync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		addr        = fs.String("addr", "", "bootstrap address(es) of a seqd cluster with a message store (default: start one in-process)")
		gateway     = fs.Bool("gateway", false, "call the gateway's Messages service instead of router.Client")
		users       = fs.Uint64("users", 100, "inboxes to load and read")
		firstUser   = fs.Uint64("first-user", 1, "the first user id")
		events      = fs.Uint64("events", 200_000, "inbox events to load first (two per 1:1 send)")
		loadConc    = fs.Int("load-concurrency", 64, "workers sending during the load")
		concurrency = fs.Int("concurrency", 16, "concurrent readers (Sync callers, open streams)")
		duration    = fs.Duration("duration", 5*time.Second, "measured duration of each read path")
		warmup      = fs.Duration("warmup", time.Second, "unmeasured warm-up before each read path")
		page        = fs.Int("page", 500, "events per Sync call (1..1000)")
		bodyBytes   = fs.Int("body-bytes", 100, "message body size in bytes")
		paths       = fs.String("paths", "sync,subscribe", "read paths to measure: sync, subscribe or both")
		jsonPath    = fs.String("json", "", "also write the results as JSON to this file")
	)
	fs.Usage = func() {
		fmt.Fprint(stderr, syncUsage)
		fs.PrintDefaults()
	}
	var (
		pop           population
		doSync, doSub bool
	)
	if err := parseFlags(fs, args, func() error {
		pop = population{first: *firstUser, n: *users}
		switch *paths {
		case "sync":
			doSync = true
		case "subscribe":
			doSub = true
		case "sync,subscribe", "subscribe,sync":
			doSync, doSub = true, true
		default:
			return fmt.Errorf("--paths %q: use sync, subscribe or sync,subscribe", *paths)
		}
		switch {
		case *page < 1 || *page > 1000:
			return fmt.Errorf("--page %d: the store serves 1..1000 events per Sync", *page)
		case *events < 2 || *events > maxPreload:
			return fmt.Errorf("--events %d: must be 2 (one send) .. %d", *events, maxPreload)
		case *users > maxSyncUsers:
			return fmt.Errorf("--users %d: at most %d inboxes", *users, maxSyncUsers)
		}
		return firstErr(checkConcurrency("--concurrency", *concurrency), checkConcurrency("--load-concurrency", *loadConc),
			checkTimes(*duration, *warmup), checkBodyBytes(*bodyBytes), pop.validate(), checkJSON(*jsonPath))
	}); err != nil {
		return err
	}

	env := checkEnv(stderr)
	target, err := openStore(ctx, *addr, "", stderr)
	if err != nil {
		return err
	}
	defer target.Close()
	mc, err := dialMessages(ctx, target, *gateway)
	if err != nil {
		return err
	}
	defer mc.Close()
	progress := bench.NewProgress(stderr)

	sends := int((*events + 1) / 2)
	tops := newInboxTops(pop.n)
	progress.Printf("seqbench: loading %s events into %d inboxes (%s 1:1 sends)\n", bench.FormatCount(float64(2*sends)), pop.n, bench.FormatCount(float64(sends)))
	took, err := preload(ctx, mc.api, pop, sends, *loadConc, *bodyBytes, tops, progress)
	if err != nil {
		return err
	}
	rep := syncReport{
		Users: pop.n, LoadedEvents: uint64(2 * sends), EventsPerUser: float64(2*sends) / float64(pop.n),
		Page: *page, BodyBytes: *bodyBytes, PreloadS: took.Seconds(), Via: mc.via, Cluster: target.describe(), Env: env,
	}
	progress.Printf("seqbench: loaded in %.1fs (%s msgs/s)\n", took.Seconds(), bench.FormatCount(float64(sends)/took.Seconds()))
	cfg := bench.Config{Duration: *duration, Warmup: *warmup, Progress: progress, Unit: "event"}
	interrupted := false
	if doSync && ctx.Err() == nil {
		cfg.Label = "sync"
		st, err := bench.Run(ctx, cfg, syncOps(mc.api, pop, tops, *concurrency, *page))
		if err != nil {
			return err
		}
		r := newReadResult("sync", st, *concurrency)
		rep.Sync, interrupted = &r, interrupted || st.Interrupted
	}
	if doSub && ctx.Err() == nil {
		cfg.Label = "subscribe"
		st, err := bench.Run(ctx, cfg, subscribeOps(mc.api, pop, tops, *concurrency))
		if err != nil {
			return err
		}
		r := newReadResult("subscribe", st, *concurrency)
		rep.Subscribe, interrupted = &r, interrupted || st.Interrupted
	}
	printSync(stdout, &rep)
	if *jsonPath != "" {
		if err := bench.WriteJSON(*jsonPath, rep); err != nil {
			return err
		}
	}
	if interrupted || ctx.Err() != nil {
		return errors.New("interrupted; the numbers above cover the part that ran")
	}
	for _, r := range []*readResult{rep.Sync, rep.Subscribe} {
		if r != nil {
			if err := checkSucceeded(r.Mode, r.Calls, r.Errors, r.ErrorSamples); err != nil {
				return err
			}
		}
	}
	return nil
}

// pickLoaded picks a random user whose inbox got events in the load.
func pickLoaded(r *rand.Rand, pop population, tops *inboxTops) uint64 {
	for range 1000 {
		if i := r.Uint64N(pop.n); tops.top(i) > 0 {
			return i
		}
	}
	return 0
}

// syncOps pages through random users' inboxes from checkpoint 0, one
// Sync call per op.
func syncOps(api msgAPI, pop population, tops *inboxTops, concurrency, page int) []bench.Op {
	ops := make([]bench.Op, concurrency)
	for i := range ops {
		r := newRand(i)
		u, cp := pickLoaded(r, pop, tops), uint64(0)
		ops[i] = func(ctx context.Context) (int, error) {
			resp, err := api.Sync(ctx, &seqdv1.SyncRequest{User: pop.user(u), AfterSeq: cp, Limit: uint32(page)})
			if err != nil {
				return 0, err
			}
			cp = resp.NextCheckpoint
			if !resp.HasMore {
				u, cp = pickLoaded(r, pop, tops), 0
			}
			return len(resp.Events), nil
		}
	}
	return ops
}

// subscribeOps opens one stream per op from after_seq 0 and reads it
// until it has caught up with the inbox's newest loaded seq.
func subscribeOps(api msgAPI, pop population, tops *inboxTops, concurrency int) []bench.Op {
	ops := make([]bench.Op, concurrency)
	for i := range ops {
		r := newRand(i)
		ops[i] = func(ctx context.Context) (int, error) {
			u := pickLoaded(r, pop, tops)
			top := tops.top(u)
			sctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			st, err := api.Subscribe(sctx, &seqdv1.SubscribeRequest{User: pop.user(u), HeartbeatMs: 10_000})
			if err != nil {
				return 0, err
			}
			n := 0
			for {
				resp, err := st.Recv()
				if err != nil {
					return n, fmt.Errorf("after %d events: %w", n, err)
				}
				n += len(resp.Events)
				if resp.Checkpoint >= top {
					return n, nil
				}
			}
		}
	}
	return ops
}

func printSync(w io.Writer, rep *syncReport) {
	fmt.Fprintf(w, "loaded       %s events into %d inboxes (%.0f each), %d-byte bodies, in %.1fs\n",
		bench.FormatCount(float64(rep.LoadedEvents)), rep.Users, rep.EventsPerUser, rep.BodyBytes, rep.PreloadS)
	fmt.Fprintf(w, "via          %s\n", rep.Via)
	if r := rep.Sync; r != nil {
		fmt.Fprintf(w, "sync         %s events/s  (%s calls/s of up to %d events, %d readers, %.2fs)\n",
			bench.FormatCount(r.EventsPerSec), bench.FormatCount(r.CallsPerSec), rep.Page, r.Concurrency, r.DurationS)
		fmt.Fprintf(w, "  per call µs  p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f; errors %d\n", r.P50us, r.P99us, r.P999us, r.MaxUs, r.Errors)
		for _, e := range r.ErrorSamples {
			fmt.Fprintf(w, "    %d× %s\n", e.Count, e.Message)
		}
	}
	if r := rep.Subscribe; r != nil {
		fmt.Fprintf(w, "subscribe    %s events/s  (%s streams/s caught up from 0, %d concurrent, %.2fs)\n",
			bench.FormatCount(r.EventsPerSec), bench.FormatCount(r.CallsPerSec), r.Concurrency, r.DurationS)
		fmt.Fprintf(w, "  per stream µs  p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f; errors %d\n", r.P50us, r.P99us, r.P999us, r.MaxUs, r.Errors)
		for _, e := range r.ErrorSamples {
			fmt.Fprintf(w, "    %d× %s\n", e.Count, e.Message)
		}
	}
	fmt.Fprintf(w, "cluster      %s\n", rep.Cluster)
}
