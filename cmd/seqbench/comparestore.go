package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/seqd/seqd/internal/bench"
	"github.com/seqd/seqd/internal/bench/peer"
	"github.com/seqd/seqd/internal/cliflag"
)

// The systems compare-store runs, in order.
const (
	sysSeqdSend    = "seqd-send"
	sysRedisInbox  = "redis-inbox"
	sysRedisInbox1 = "redis-inbox-1"
)

var storeSystems = []string{sysSeqdSend, sysRedisInbox, sysRedisInbox1}

// storeRatioDefs are the msgs/s ratios reported, each only when both ran.
var storeRatioDefs = []struct{ key, num, den string }{
	{"seqd_send_vs_redis", sysSeqdSend, sysRedisInbox},
	{"seqd_send_vs_redis_one_copy", sysSeqdSend, sysRedisInbox1},
}

const compareStoreUsage = `Usage: seqbench compare-store [flags]

Runs the same 1:1 send load (--concurrency closed-loop workers; each send
from a random user to another among --users, with a --body-bytes body)
against each system in turn, after a warm-up, on this machine:

  seqd-send      seqd Send through router.Client: the message gets a seq in
                 the sender's and the recipient's inbox, is appended to both
                 and acknowledged after a Raft majority (3 replicas) has
                 fsynced it (in-process cluster unless --addr)
  redis-inbox    redis-server, appendonly yes, appendfsync always (fsync
                 before replying), one EVALSHA per message of a Lua script
                 that, for the sender and then the recipient, does
                 INCR seq:<user> and XADD inbox:<user> <seq>-1 body <body>:
                 the same two inbox appends as seqd, on one node
  redis-inbox-1  the same script for the recipient only (one INCR + XADD per
                 message), the shape of the usual "~19,000/s" reference

redis-server is started on a free loopback port in a temporary directory
and removed at the end; if it is not installed the Redis systems are skipped.
go-redis has a connection per worker.

Flags:
`

// compareStoreReport is what compare-store prints and writes with --json.
type compareStoreReport struct {
	Systems map[string]sendResult `json:"systems"`
	Ratios  map[string]float64    `json:"ratios"`
	Skipped map[string]string     `json:"skipped,omitempty"`
	// Describe says what each system did per message.
	Describe map[string]string `json:"describe"`
	Cluster  string            `json:"cluster,omitempty"`
	Env      bench.Env         `json:"env"`

	order []string
}

func runCompareStore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("seqbench compare-store", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		addr        = fs.String("addr", "", "bootstrap address(es) of a seqd cluster with a message store (default: start one in-process)")
		duration    = fs.Duration("duration", 10*time.Second, "measured duration per system")
		warmup      = fs.Duration("warmup", time.Second, "unmeasured warm-up before each system")
		concurrency = fs.Int("concurrency", 64, "closed-loop workers per system")
		users       = fs.Uint64("users", 10_000, "users taking part")
		bodyBytes   = fs.Int("body-bytes", 100, "message body size in bytes")
		fsync       = fs.String("redis-fsync", "always", "redis appendfsync policy: always, everysec or no")
		systems     = fs.String("systems", strings.Join(storeSystems, ","), "systems to run, comma-separated, from: "+strings.Join(storeSystems, ", "))
		jsonPath    = fs.String("json", "", "also write the results as JSON to this file")
	)
	fs.Usage = func() {
		fmt.Fprint(stderr, compareStoreUsage)
		fs.PrintDefaults()
	}
	var (
		pop  population
		want []string
	)
	if err := parseFlags(fs, args, func() error {
		pop = population{first: 1, n: *users}
		switch *fsync {
		case "always", "everysec", "no":
		default:
			return fmt.Errorf("--redis-fsync %q: use always, everysec or no", *fsync)
		}
		var err error
		want, err = pickSystems("--systems", *systems, storeSystems)
		return firstErr(err, checkConcurrency("--concurrency", *concurrency), checkTimes(*duration, *warmup),
			checkBodyBytes(*bodyBytes), pop.validate(), checkJSON(*jsonPath))
	}); err != nil {
		return err
	}
	progress := bench.NewProgress(stderr)
	rep := &compareStoreReport{
		Systems: map[string]sendResult{}, Ratios: map[string]float64{}, Skipped: map[string]string{},
		Describe: map[string]string{}, Env: checkEnv(stderr), order: want,
	}
	cfg := bench.Config{Duration: *duration, Warmup: *warmup, Progress: progress, Unit: "msg"}
	var failed []string
	measure := func(name, via string, copies int, ops []bench.Op) {
		c := cfg
		c.Label = name
		st, err := bench.Run(ctx, c, ops)
		if err != nil {
			rep.Skipped[name] = "failed: " + err.Error()
			failed = append(failed, name)
			return
		}
		if st.Interrupted {
			return
		}
		r := newSendResult("1:1", via, st, *concurrency, pop.n, *bodyBytes, copies, 0)
		rep.Systems[name] = r
		if err := checkSucceeded(name, r.Ops, r.Errors, r.ErrorSamples); err != nil {
			failed = append(failed, name)
		}
		progress.Printf("seqbench: %-14s %10s msgs/s  p50 %8.1f µs  p99 %8.1f µs  errors %d\n",
			name, bench.FormatCount(r.MsgsPerSec), r.P50us, r.P99us, r.Errors)
	}

	if slices.Contains(want, sysSeqdSend) && ctx.Err() == nil {
		rep.Describe[sysSeqdSend] = "seqd Send: a seq in the sender's and the recipient's inbox, both appended, acknowledged after Raft majority commit with fsync (3 replicas)"
		if err := func() error {
			target, err := openStore(ctx, *addr, "", stderr)
			if err != nil {
				return err
			}
			defer target.Close()
			rep.Cluster = target.describe()
			mc, err := dialMessages(ctx, target, false)
			if err != nil {
				return err
			}
			defer mc.Close()
			measure(sysSeqdSend, mc.via, 2, directSendOps(mc.api, pop, *concurrency, *bodyBytes, newRunID()))
			return nil
		}(); err != nil {
			progress.Printf("seqbench: %s: %v\n", sysSeqdSend, err)
			rep.Skipped[sysSeqdSend] = "failed: " + err.Error()
			failed = append(failed, sysSeqdSend)
		}
	}
	if (slices.Contains(want, sysRedisInbox) || slices.Contains(want, sysRedisInbox1)) && ctx.Err() == nil {
		err := runRedisInbox(ctx, want, *fsync, *concurrency, pop, *bodyBytes, rep, measure)
		if errors.Is(err, peer.ErrNotInstalled) {
			msg := strings.TrimSuffix(err.Error(), ": "+peer.ErrNotInstalled.Error())
			for _, s := range []string{sysRedisInbox, sysRedisInbox1} {
				if slices.Contains(want, s) {
					rep.Skipped[s] = msg // printed once, under the table
				}
			}
		} else if err != nil {
			progress.Printf("seqbench: redis: %v\n", err)
			for _, s := range []string{sysRedisInbox, sysRedisInbox1} {
				_, ran := rep.Systems[s]
				if _, noted := rep.Skipped[s]; slices.Contains(want, s) && !ran && !noted {
					rep.Skipped[s] = "failed: " + err.Error()
					failed = append(failed, s)
				}
			}
		}
	}
	for _, d := range storeRatioDefs {
		num, ok1 := rep.Systems[d.num]
		den, ok2 := rep.Systems[d.den]
		if ok1 && ok2 && den.MsgsPerSec > 0 {
			rep.Ratios[d.key] = num.MsgsPerSec / den.MsgsPerSec
		}
	}
	fmt.Fprintln(stdout)
	printStoreTable(stdout, rep)
	if *jsonPath != "" {
		if err := bench.WriteJSON(*jsonPath, rep); err != nil {
			return err
		}
	}
	switch {
	case ctx.Err() != nil:
		return errors.New("interrupted; the table covers what ran")
	case len(failed) > 0:
		return fmt.Errorf("%s failed (see above)", strings.Join(failed, ", "))
	case len(rep.Systems) == 0:
		return errors.New("nothing was measured: every system in --systems was skipped (see above)")
	}
	return nil
}

// runRedisInbox starts redis-server and measures the inbox script.
func runRedisInbox(ctx context.Context, want []string, fsync string, concurrency int, pop population, bodyBytes int,
	rep *compareStoreReport, measure func(name, via string, copies int, ops []bench.Op)) error {
	srv, err := peer.StartRedisWith(ctx, peer.RedisOptions{AppendFsync: fsync})
	if err != nil {
		return err
	}
	defer srv.Close()
	for _, name := range []string{sysRedisInbox, sysRedisInbox1} {
		if !slices.Contains(want, name) || ctx.Err() != nil {
			continue
		}
		copies := 2
		rep.Describe[name] = fmt.Sprintf("redis-server (appendonly yes, appendfsync %s), one EVALSHA per message: INCR seq:<sender>, XADD inbox:<sender> <seq>-1 body <body>, then the same for the recipient", fsync)
		if name == sysRedisInbox1 {
			copies = 1
			rep.Describe[name] = fmt.Sprintf("redis-server (appendonly yes, appendfsync %s), one EVALSHA per message: INCR seq:<recipient>, XADD inbox:<recipient> <seq>-1 body <body>", fsync)
		}
		rdb := peer.NewRedisClient(srv.Addr(), concurrency)
		in, err := peer.NewInbox(ctx, rdb)
		if err != nil {
			rdb.Close()
			return err
		}
		measure(name, "go-redis", copies, redisInboxOps(in, pop, concurrency, bodyBytes, copies))
		rdb.Close()
		if err := srv.Err(); err != nil {
			return err
		}
	}
	return nil
}

// redisInboxOps sends one message per op with the inbox script: to the
// sender's and the recipient's inbox (copies 2) or the recipient's only.
func redisInboxOps(in *peer.Inbox, pop population, concurrency, bodyBytes, copies int) []bench.Op {
	ops := make([]bench.Op, concurrency)
	for i := range ops {
		r := newRand(i)
		ops[i] = func(ctx context.Context) (int, error) {
			a, b := pop.pair(r)
			body := makeBody(r, bodyBytes, time.Now())
			var err error
			if copies == 2 {
				_, err = in.Append(ctx, body, pop.user(a), pop.user(b))
			} else {
				_, err = in.Append(ctx, body, pop.user(b))
			}
			return 1, err
		}
	}
	return ops
}

// pickSystems parses a comma-separated list of names from all, keeping
// the order of all.
func pickSystems(flagName, s string, all []string) ([]string, error) {
	var want []string
	for _, name := range cliflag.SplitList(s) {
		if !slices.Contains(all, name) {
			return nil, fmt.Errorf("%s: unknown system %q; choose from %s", flagName, name, strings.Join(all, ", "))
		}
		if !slices.Contains(want, name) {
			want = append(want, name)
		}
	}
	if len(want) == 0 {
		return nil, fmt.Errorf("%s is empty; name at least one system", flagName)
	}
	slices.SortFunc(want, func(a, b string) int { return slices.Index(all, a) - slices.Index(all, b) })
	return want, nil
}

func printStoreTable(w io.Writer, rep *compareStoreReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tmsgs/s\tinbox appends/msg\tp50 µs\tp99 µs\tp999 µs\terrors\t")
	for _, name := range rep.order {
		if r, ok := rep.Systems[name]; ok {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%.1f\t%.1f\t%d\t\n", name, bench.FormatCount(r.MsgsPerSec), r.InboxCopies, r.P50us, r.P99us, r.P999us, r.Errors)
		} else if _, ok := rep.Skipped[name]; ok {
			fmt.Fprintf(tw, "%s\tskipped\t\t\t\t\t\t\n", name)
		}
	}
	tw.Flush()
	for _, name := range rep.order {
		if why, ok := rep.Skipped[name]; ok {
			fmt.Fprintf(w, "%s: skipped (%s)\n", name, why)
		}
		if r, ok := rep.Systems[name]; ok {
			for _, e := range r.ErrorSamples {
				fmt.Fprintf(w, "%s error: %d× %s\n", name, e.Count, e.Message)
			}
		}
	}
	for _, name := range rep.order {
		if d, ok := rep.Describe[name]; ok {
			fmt.Fprintf(w, "%-14s %s\n", name+":", d)
		}
	}
	if rep.Cluster != "" {
		fmt.Fprintf(w, "seqd cluster:  %s\n", rep.Cluster)
	}
	if len(rep.Ratios) > 0 {
		fmt.Fprintln(w, "\nratios of msgs/s:")
		for _, rd := range storeRatioDefs {
			if x, ok := rep.Ratios[rd.key]; ok {
				fmt.Fprintf(w, "  %-13s / %-13s %8.2f×   (%s)\n", rd.num, rd.den, x, rd.key)
			}
		}
	}
}
