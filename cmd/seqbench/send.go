package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/seqd/seqd/internal/bench"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

const sendUsage = `Usage: seqbench send [flags]

Closed-loop acknowledged sends (--concurrency workers, each waiting for its
send's acknowledgement before the next: Raft majority commit with fsync).

  1:1 (default)    each send picks a random sender and a different random
                   recipient among --users users; the DIRECT conversation id
                   is derived from the pair, so each pair shares one.
  --group-size N   first creates --users/N groups of N members (N > 500, or
                   --read-fanout, makes read-fanout groups), subscribes
                   members, then sends to random groups from a few sender
                   members; it also reports the time from send to the LAST
                   subscribed member's delivery (write fanout: the event on
                   the member's Subscribe stream; read fanout: the member's
                   SyncGroup fetch after the hint on its stream).

Bodies are --body-bytes long: the send time (8 bytes) then random letters.
Without --addr an in-process cluster is started: 3 arbiters, 2 AllocSvrs,
one store shard of 3 replicas (Raft, fsync on) and a gateway; with
--retention its store removes what is older than that, and the report
sums what retention removed (the store leaders' counters) over the run.

Flags:
`

// sendResult is one send run's summary, as printed and in --json.
type sendResult struct {
	Mode         string              `json:"mode"`
	Via          string              `json:"via"`
	Ops          uint64              `json:"ops"`
	MsgsPerSec   float64             `json:"msgs_per_sec"`
	P50us        float64             `json:"p50_us"`
	P99us        float64             `json:"p99_us"`
	P999us       float64             `json:"p999_us"`
	MaxUs        float64             `json:"max_us"`
	Errors       uint64              `json:"errors"`
	ErrorSamples []bench.ErrorSample `json:"error_samples,omitempty"`
	Concurrency  int                 `json:"concurrency"`
	Users        uint64              `json:"users"`
	BodyBytes    int                 `json:"body_bytes"`
	// InboxCopies is how many inbox (or timeline) entries one send writes.
	InboxCopies int     `json:"inbox_copies_per_msg"`
	RateTarget  float64 `json:"rate_target,omitempty"`
	DurationS   float64 `json:"duration_s"`
	Interrupted bool    `json:"interrupted,omitempty"`
	// Stages: where the store leader's writes spent their time.
	Stages *stageReport `json:"stages,omitempty"`
	// CPUusPerMsg is the CPU time (user and system) the seqbench process
	// used per acknowledged message in the measured phase; CPUScope says
	// what that covers (seqbench send only).
	CPUusPerMsg float64 `json:"cpu_us_per_msg,omitempty"`
	CPUScope    string  `json:"cpu_scope,omitempty"`
	cpu         time.Duration
}

// setCPU fills in the CPU per message, covering scope.
func (r *sendResult) setCPU(scope string) {
	if r.cpu > 0 && r.Ops > 0 {
		r.CPUusPerMsg, r.CPUScope = float64(r.cpu.Microseconds())/float64(r.Ops), scope
	}
}

func newSendResult(mode, via string, st *bench.Stats, concurrency int, users uint64, bodyBytes, copies int, rate float64) sendResult {
	r := bench.NewResult(mode, st, concurrency, users, 1, rate)
	return sendResult{
		Mode: mode, Via: via, Ops: r.Ops, MsgsPerSec: r.OpsPerSec,
		P50us: r.P50us, P99us: r.P99us, P999us: r.P999us, MaxUs: r.MaxUs,
		Errors: r.Errors, ErrorSamples: r.ErrorSamples,
		Concurrency: concurrency, Users: users, BodyBytes: bodyBytes, InboxCopies: copies,
		RateTarget: rate, DurationS: r.DurationS, Interrupted: r.Interrupted, cpu: st.CPU,
	}
}

// sendReport is what send writes with --json.
type sendReport struct {
	sendResult
	// HalfRate is the same load paced at half the measured rate (--half-rate).
	HalfRate *sendResult `json:"half_rate,omitempty"`
	// Group is the group setup and delivery timing (--group-size).
	Group *groupReport `json:"group,omitempty"`
	// Retention is what the in-process store's retention removed over the
	// whole command (--retention).
	Retention *retentionReport `json:"retention,omitempty"`
	Cluster   string           `json:"cluster"`
	Env       bench.Env        `json:"env"`
}

// retentionReport sums the store leaders' retention counters.
type retentionReport struct {
	PeriodS       float64 `json:"period_s"`
	Passes        float64 `json:"passes"`
	ExpiredEvents float64 `json:"expired_events"`
	// ExpiredTimeline is read-fanout group timeline entries removed.
	ExpiredTimeline float64 `json:"expired_timeline_entries"`
	LogTrimmed      float64 `json:"change_log_trimmed"`
}

type sendFlags struct {
	addr        string
	gateway     bool
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	users       uint64
	firstUser   uint64
	bodyBytes   int
	rate        float64
	halfRate    bool
	jsonPath    string
	metrics     string
	retention   time.Duration
	group       groupFlags
	// stages reads the cluster's metrics for the stage report (nil: none).
	stages gatherFunc
}

func runSend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("seqbench send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f sendFlags
	fs.StringVar(&f.addr, "addr", "", "bootstrap address(es) of a seqd cluster with a message store, comma-separated (default: start one in-process)")
	fs.BoolVar(&f.gateway, "gateway", false, "call the gateway's Messages service (the first --addr, or the in-process gateway) instead of router.Client")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "measured duration")
	fs.DurationVar(&f.warmup, "warmup", time.Second, "unmeasured warm-up before the run")
	fs.IntVar(&f.concurrency, "concurrency", 64, "closed-loop sending workers")
	fs.Uint64Var(&f.users, "users", 10_000, "users taking part")
	fs.Uint64Var(&f.firstUser, "first-user", 1, "the first user id; users are first-user .. first-user+users-1")
	fs.IntVar(&f.bodyBytes, "body-bytes", 100, "message body size in bytes")
	fs.Float64Var(&f.rate, "rate", 0, "pace all workers to about this many sends/s (0: as fast as possible)")
	fs.BoolVar(&f.halfRate, "half-rate", false, "1:1 only: after the run, run again paced at half the measured msgs/s and report its latency too")
	fs.StringVar(&f.jsonPath, "json", "", "also write the summary as JSON to this file")
	fs.StringVar(&f.metrics, "metrics", "", "with --addr: the store replicas' /metrics URLs, comma-separated, for the per-stage report (the in-process cluster reports it anyway)")
	fs.DurationVar(&f.retention, "retention", 0, "in-process cluster only: the store's retention period (0: off), to measure sends while retention removes what is older")
	f.group.register(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, sendUsage)
		fs.PrintDefaults()
	}
	pop := population{}
	if err := parseFlags(fs, args, func() error {
		pop = population{first: f.firstUser, n: f.users}
		return f.validate(pop)
	}); err != nil {
		return err
	}

	env := checkEnv(stderr)
	target, err := openStoreRetaining(ctx, f.addr, "", f.retention, stderr)
	if err != nil {
		return err
	}
	defer target.Close()
	mc, err := dialMessages(ctx, target, f.gateway)
	if err != nil {
		return err
	}
	defer mc.Close()
	progress := bench.NewProgress(stderr)

	f.stages = target.stageSource(f.metrics)
	rep := sendReport{Cluster: target.describe(), Env: env}
	if f.group.size > 0 {
		err = runGroupSend(ctx, mc, pop, f, progress, &rep)
	} else {
		err = runDirectSend(ctx, mc, pop, f, progress, &rep)
	}
	if err != nil {
		return err
	}
	scope := "the whole process: the in-process cluster and the load generator"
	if f.addr != "" {
		scope = "the load generator only; the cluster at --addr is not counted"
	}
	rep.setCPU(scope)
	if rep.HalfRate != nil {
		rep.HalfRate.setCPU(scope)
	}
	if f.retention > 0 {
		if rep.Retention, err = readRetention(f.stages, f.retention); err != nil {
			return err
		}
	}
	printSend(stdout, &rep)
	if f.jsonPath != "" {
		if err := bench.WriteJSON(f.jsonPath, rep); err != nil {
			return err
		}
	}
	if rep.Interrupted || ctx.Err() != nil {
		return errors.New("interrupted; the numbers above cover the part that ran")
	}
	if err := checkSucceeded("send "+rep.Mode, rep.Ops, rep.Errors, rep.ErrorSamples); err != nil {
		return err
	}
	if hr := rep.HalfRate; hr != nil {
		return checkSucceeded("send "+hr.Mode+" at half rate", hr.Ops, hr.Errors, hr.ErrorSamples)
	}
	return nil
}

func (f *sendFlags) validate(pop population) error {
	switch {
	case f.halfRate && f.rate > 0:
		return errors.New("--half-rate and --rate are exclusive: --half-rate paces its second run itself")
	case f.halfRate && f.group.size > 0:
		return errors.New("--half-rate is for the 1:1 load; with --group-size use --rate")
	case f.retention < 0:
		return fmt.Errorf("--retention %v is negative; 0 keeps events forever", f.retention)
	case f.retention > 0 && f.addr != "":
		return errors.New("--retention is for the in-process cluster; a cluster at --addr has its own (seqd start --retention)")
	case f.retention > 0 && f.retention < time.Second:
		return fmt.Errorf("--retention %v: give at least 1s", f.retention)
	}
	if err := checkMetricsURL(f.metrics, f.addr); err != nil {
		return err
	}
	if err := firstErr(checkConcurrency("--concurrency", f.concurrency), checkTimes(f.duration, f.warmup),
		checkRate(f.rate), checkBodyBytes(f.bodyBytes), pop.validate(), f.group.check()); err != nil {
		return err
	}
	if f.group.size > 0 {
		if err := f.group.validate(pop, f.bodyBytes); err != nil {
			return err
		}
	}
	return checkJSON(f.jsonPath)
}

// directSendOps makes one 1:1 send per op, from a random user to another.
func directSendOps(api msgAPI, pop population, concurrency, bodyBytes int, runID string) []bench.Op {
	ops := make([]bench.Op, concurrency)
	for i := range ops {
		r, ids := newRand(i), newMsgIDs(runID, i)
		ops[i] = func(ctx context.Context) (int, error) {
			a, b := pop.pair(r)
			_, err := api.Send(ctx, pop.directSend(a, b, ids.next(), makeBody(r, bodyBytes, time.Now())))
			return 1, err
		}
	}
	return ops
}

func runDirectSend(ctx context.Context, mc *msgConn, pop population, f sendFlags, progress *bench.Progress, rep *sendReport) error {
	const mode = "1:1"
	runID := newRunID()
	cfg := bench.Config{Label: "send 1:1", Duration: f.duration, Warmup: f.warmup, Rate: f.rate, Progress: progress, Unit: "msg"}
	var watch *stageWatch
	cfg.BeforeMeasure = func() { watch = watchStages(f.stages, progress) }
	st, err := bench.Run(ctx, cfg, directSendOps(mc.api, pop, f.concurrency, f.bodyBytes, runID))
	if err != nil {
		return err
	}
	rep.sendResult = newSendResult(mode, mc.via, st, f.concurrency, pop.n, f.bodyBytes, 2, f.rate)
	rep.Stages = watch.done()
	if !f.halfRate || st.Interrupted || rep.MsgsPerSec <= 0 {
		return nil
	}
	half := rep.MsgsPerSec / 2
	progress.Printf("seqbench: %s msgs/s unpaced; now paced at %s msgs/s\n", bench.FormatCount(rep.MsgsPerSec), bench.FormatCount(half))
	cfg.Label, cfg.Rate = "send 1:1 at half rate", half
	watch = nil
	st, err = bench.Run(ctx, cfg, directSendOps(mc.api, pop, f.concurrency, f.bodyBytes, runID+"h"))
	if err != nil {
		return err
	}
	hr := newSendResult(mode, mc.via, st, f.concurrency, pop.n, f.bodyBytes, 2, half)
	hr.Stages = watch.done()
	rep.HalfRate = &hr
	rep.Interrupted = rep.Interrupted || hr.Interrupted
	return nil
}

// printSend prints a send run's summary.
func printSend(w io.Writer, rep *sendReport) {
	printSendResult(w, &rep.sendResult)
	if rep.HalfRate != nil {
		fmt.Fprintln(w, "\nat half the rate:")
		printSendResult(w, rep.HalfRate)
	}
	if rep.Group != nil {
		fmt.Fprintln(w)
		printGroup(w, rep.Group)
	}
	if r := rep.Retention; r != nil {
		fmt.Fprintf(w, "retention    %v: %s inbox events, %s group timeline entries and %s change-log entries removed in %s passes\n",
			time.Duration(r.PeriodS*float64(time.Second)), bench.FormatCount(r.ExpiredEvents), bench.FormatCount(r.ExpiredTimeline),
			bench.FormatCount(r.LogTrimmed), bench.FormatCount(r.Passes))
	}
	fmt.Fprintf(w, "cluster      %s\n", rep.Cluster)
}

// readRetention sums the retention counters of every store replica (only
// leaders count) from gather.
func readRetention(gather gatherFunc, period time.Duration) (*retentionReport, error) {
	mfs, err := gather()
	if err != nil {
		return nil, fmt.Errorf("reading the store's retention metrics: %w", err)
	}
	r := &retentionReport{PeriodS: period.Seconds()}
	for _, mf := range mfs {
		var into *float64
		switch mf.GetName() {
		case "seqd_store_retention_rounds_total":
			into = &r.Passes
		case "seqd_store_expired_events_total":
			into = &r.ExpiredEvents
		case "seqd_store_expired_timeline_entries_total":
			into = &r.ExpiredTimeline
		case "seqd_store_change_log_trimmed_total":
			into = &r.LogTrimmed
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			*into += m.GetCounter().GetValue()
		}
	}
	return r, nil
}

func printSendResult(w io.Writer, r *sendResult) {
	fmt.Fprintf(w, "mode         send %s via %s\n", r.Mode, r.Via)
	fmt.Fprintf(w, "load         %d workers, %d users, %d-byte bodies, %d inbox entries per message", r.Concurrency, r.Users, r.BodyBytes, r.InboxCopies)
	if r.RateTarget > 0 {
		fmt.Fprintf(w, ", paced at %s msgs/s", bench.FormatCount(r.RateTarget))
	}
	fmt.Fprintf(w, "\nduration     %.2fs\n", r.DurationS)
	fmt.Fprintf(w, "messages     %s acknowledged (%s msgs/s)\n", bench.FormatCount(float64(r.Ops)), bench.FormatCount(r.MsgsPerSec))
	fmt.Fprintf(w, "latency µs   p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", r.P50us, r.P99us, r.P999us, r.MaxUs)
	fmt.Fprintf(w, "errors       %d\n", r.Errors)
	for _, e := range r.ErrorSamples {
		fmt.Fprintf(w, "  %d× %s\n", e.Count, e.Message)
	}
	if r.CPUusPerMsg > 0 {
		fmt.Fprintf(w, "cpu          %.0f µs per acknowledged message (user + system; %s)\n", r.CPUusPerMsg, r.CPUScope)
	}
	printStages(w, r.Stages)
}

// eventIsGroup reports whether e belongs to a GROUP conversation.
func eventIsGroup(e *seqdv1.Event) bool {
	return e.GetConversation().GetType() == seqdv1.ConversationType_CONVERSATION_TYPE_GROUP
}
