package main

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/seqd/seqd/router"
	"github.com/seqd/seqd/seqfmt"
)

// seqRow is one line of next/current output, and its JSON form.
type seqRow struct {
	Key     uint64 `json:"key"`
	Seq     uint64 `json:"seq"`
	Epoch   uint32 `json:"epoch"`
	Counter uint64 `json:"counter"`
}

func runNext(ctx context.Context, e *env, cmd *command, args []string) error {
	return runSeq(ctx, e, cmd, args, func(ctx context.Context, rc *router.Client, keys []uint64) ([]uint64, error) {
		// One batch: a repeated key gets a larger seq each time it appears.
		return rc.NextBatch(ctx, keys)
	})
}

func runCurrent(ctx context.Context, e *env, cmd *command, args []string) error {
	return runSeq(ctx, e, cmd, args, func(ctx context.Context, rc *router.Client, keys []uint64) ([]uint64, error) {
		out := make([]uint64, len(keys))
		for i, k := range keys {
			s, err := rc.Current(ctx, k)
			if err != nil {
				return nil, err
			}
			out[i] = s
		}
		return out, nil
	})
}

func runSeq(ctx context.Context, e *env, cmd *command, args []string, get func(context.Context, *router.Client, []uint64) ([]uint64, error)) error {
	for _, a := range args {
		if isHelp(a) {
			printCommandHelp(cmd, nil, e.stdout)
			return errHelp
		}
	}
	keys, err := parseKeys(cmd, args)
	if err != nil {
		return err
	}
	ctx, c, release, err := dialTimed(ctx, e)
	if err != nil {
		return err
	}
	defer release()
	rc, err := c.router(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	seqs, err := get(ctx, rc, keys)
	if err != nil {
		return c.explain(err)
	}
	rows := make([]seqRow, len(keys))
	for i, k := range keys {
		rows[i] = seqRow{Key: k, Seq: seqs[i], Epoch: seqfmt.Epoch(seqs[i]), Counter: seqfmt.Counter(seqs[i])}
	}
	if e.json {
		return writeJSON(e.stdout, rows)
	}
	tw := newTable(e.stdout)
	row(tw, "KEY", "SEQ", "EPOCH", "COUNTER")
	for _, r := range rows {
		row(tw, r.Key, r.Seq, r.Epoch, r.Counter)
	}
	return tw.Flush()
}

// parseKeys checks every key before anything is sent.
func parseKeys(cmd *command, args []string) ([]uint64, error) {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:] // the end of flags, as Go's flag package reads it
	}
	if len(args) == 0 {
		return nil, usagef(cmd, "%s: missing KEY", cmd.name)
	}
	keys := make([]uint64, len(args))
	for i, a := range args {
		k, err := strconv.ParseUint(a, 10, 64)
		switch {
		case errors.Is(err, strconv.ErrRange):
			return nil, usagef(cmd, "key %s is too large; keys are at most %d", a, uint64(1<<64-1))
		case err != nil && strings.HasPrefix(a, "-") && !isNumber(a[1:]):
			return nil, usagef(cmd, "%s: unknown flag %s (global flags such as --json go before the command)", cmd.name, a)
		case err != nil:
			return nil, usagef(cmd, "key %q is not a positive integer", a)
		case k == 0:
			return nil, usagef(cmd, "key 0 is reserved; keys start at 1")
		}
		keys[i] = k
	}
	return keys, nil
}

func isNumber(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil || errors.Is(err, strconv.ErrRange)
}
