package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/seqd/seqd/internal/bench"
)

// seqd's three ways of calling, as named in reports.
const (
	modeUnary     = "seqd-unary"
	modeBatched   = "seqd-batched"
	modeCoalesced = "seqd-coalesced"
)

func runAlloc(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("seqbench alloc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		addr        = fs.String("addr", "", "bootstrap address(es) of a seqd cluster, comma-separated (default: start one in-process)")
		duration    = fs.Duration("duration", 10*time.Second, "measured duration")
		warmup      = fs.Duration("warmup", time.Second, "unmeasured warm-up before the run")
		concurrency = fs.Int("concurrency", 64, "closed-loop workers")
		keys        = fs.Uint64("keys", 100_000, "keys are picked uniformly from [1, keys]")
		batch       = fs.Bool("batch", false, "call NextBatch with --batch-size random keys (batching client)")
		batchSize   = fs.Int("batch-size", 16, "keys per NextBatch with --batch")
		coalesce    = fs.Bool("coalesce", false, "single-key Next on the default client, which coalesces concurrent calls")
		rate        = fs.Float64("rate", 0, "pace all workers to about this many ops/s (0: as fast as possible)")
		jsonPath    = fs.String("json", "", "also write the summary as JSON to this file")
	)
	var sh shape
	if err := parseFlags(fs, args, func() error {
		sh = shape{concurrency: *concurrency, keys: *keys, depth: 1}
		switch {
		case *batch && *coalesce:
			return errors.New("--batch and --coalesce are exclusive: --batch already uses the coalescing client")
		case *batchSize < 1 || *batchSize > maxBatch:
			return fmt.Errorf("--batch-size %d: must be 1..%d (an AllocSvr's NextBatch limit)", *batchSize, maxBatch)
		}
		return firstErr(sh.validate(), checkTimes(*duration, *warmup), checkRate(*rate), checkJSON(*jsonPath))
	}); err != nil {
		return err
	}
	mode := modeUnary
	switch {
	case *batch:
		mode, sh.depth = modeBatched, *batchSize
	case *coalesce:
		mode = modeCoalesced
	}

	env := checkEnv(stderr)
	target, err := openSeqd(ctx, *addr, stderr)
	if err != nil {
		return err
	}
	defer target.Close()
	cl, err := target.client(ctx, mode != modeUnary)
	if err != nil {
		return err
	}
	defer cl.Close()
	ops := seqdNextOps(cl, sh)
	if *batch {
		ops = seqdBatchOps(cl, sh)
	}
	st, err := bench.Run(ctx, bench.Config{
		Label: mode, Duration: *duration, Warmup: *warmup, Rate: *rate,
		Progress: bench.NewProgress(stderr),
	}, ops)
	if err != nil {
		return err
	}
	res := bench.NewResult(mode, st, sh.concurrency, sh.keys, sh.depth, *rate)
	printResult(stdout, res)
	if *jsonPath != "" {
		out := struct {
			bench.Result
			Env bench.Env `json:"env"`
		}{res, env}
		if err := bench.WriteJSON(*jsonPath, out); err != nil {
			return err
		}
	}
	if st.Interrupted {
		return errors.New("interrupted; the numbers above cover the part that ran")
	}
	return checkSucceeded(mode, res.Ops, res.Errors, res.ErrorSamples)
}

func (s shape) validate() error {
	if s.keys < 1 {
		return errors.New("--keys 0: must be at least 1 (keys start at 1)")
	}
	return checkConcurrency("--concurrency", s.concurrency)
}
