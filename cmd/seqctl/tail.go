package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/backoff"
	"github.com/seqd/seqd/internal/rpcerr"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

const tailNotes = `tail prints the backlog after --after, then each event as it is applied,
one line each (--json: one SubscribeResponse object per line, one event
in each). When the stream breaks (a replica restarts, a leader changes,
the network drops, no heartbeat comes for 3 periods, or 3 messages in a
row say the serving replica has lost its shard's leader) it reconnects
from the last checkpoint with backoff and says so on stderr: nothing is
missed and nothing is printed twice. Ctrl-C stops it (exit 0) and
prints the checkpoint to resume from with --after. --timeout bounds only
the first connection: an unreachable --addr fails at once.
`

// tailBackoff spaces reconnection attempts.
var tailBackoff = backoff.Policy{Base: 200 * time.Millisecond, Max: 5 * time.Second}

func runTail(ctx context.Context, e *env, cmd *command, args []string) error {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	user := fs.String("user", "", "the user `B` whose inbox to follow (required)")
	after := fs.Uint64("after", 0, "start after checkpoint `S`; the backlog after it comes first (0 = the whole inbox)")
	verbose := fs.Bool("verbose", false, "also print heartbeats and each (re)connection")
	hb := fs.Duration("heartbeat", 10*time.Second, "ask for a heartbeat every `D` (100ms..5m)")
	if err := flagsOnly(cmd, e, fs, args); err != nil {
		return err
	}
	u, err := parseID(cmd, "--user", "user", *user)
	if err != nil {
		return err
	}
	if *hb < 100*time.Millisecond || *hb > 5*time.Minute {
		return usagef(cmd, "--heartbeat %v: give 100ms..5m", *hb)
	}
	c, err := dial(e)
	if err != nil {
		return err
	}
	defer c.Close()
	rc, err := messages(ctx, e, c)
	if err != nil {
		return err
	}
	t := &tailer{e: e, c: c, rc: rc, user: u, cp: *after, hb: *hb, verbose: *verbose}
	defer func() { t.rc.Close() }()
	return t.run(ctx)
}

type tailer struct {
	e       *env
	c       *conn
	rc      *router.Client
	user    uint64
	cp      uint64 // the last checkpoint received
	hb      time.Duration
	verbose bool
	// warnedTruncated is the earliest seq last warned about.
	warnedTruncated uint64
	// stale counts the stream's messages in a row marked maybe_stale.
	stale int
}

// staleReconnect is how many messages in a row marked maybe_stale (the
// serving replica has no leader) make tail reconnect: another replica may
// have one.
const staleReconnect = 3

// run follows the inbox until ctx ends (exit 0) or the server refuses the
// subscription for good (exit 1).
func (t *tailer) run(ctx context.Context) error {
	attempt := 0
	stale := false // the last attempt got nothing through: re-read the routing table
	for {
		if stale {
			t.refresh(ctx)
		}
		progress, err := t.stream(ctx)
		var we writeError
		if errors.As(err, &we) {
			return we.err
		}
		if ctx.Err() != nil {
			return t.stopped()
		}
		if permanent(err) {
			return t.c.explain(err)
		}
		if progress {
			attempt = 0
		}
		stale = !progress
		d := tailBackoff.Delay(attempt)
		attempt++
		fmt.Fprintf(t.e.stderr, "seqctl: stream broken (%s); reconnecting from checkpoint %d in %v\n", errMessage(err), t.cp, d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return t.stopped()
		case <-time.After(d):
		}
	}
}

func (t *tailer) stopped() error {
	fmt.Fprintf(t.e.stderr, "seqctl: tail stopped at checkpoint %d (resume with --after %d)\n", t.cp, t.cp)
	return nil
}

// refresh replaces the router with one bootstrapped afresh from --addr,
// for when the shard's replicas moved; it keeps the old one on failure.
func (t *tailer) refresh(ctx context.Context) {
	rc, err := messages(ctx, t.e, t.c)
	if err != nil {
		return
	}
	t.rc.Close()
	t.rc = rc
}

// writeError is a failure to print, which reconnecting does not cure.
type writeError struct{ err error }

func (w writeError) Error() string { return w.err.Error() }

// stream runs one Subscribe stream until it breaks, reporting whether
// anything came through.
func (t *tailer) stream(ctx context.Context) (progress bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t.stale = 0 // a spell counts within one stream
	st, err := t.rc.Messages().Subscribe(sctx, &seqdv1.SubscribeRequest{User: t.user, AfterSeq: t.cp, HeartbeatMs: uint32(t.hb / time.Millisecond)})
	if err != nil {
		return false, err
	}
	if t.verbose {
		fmt.Fprintf(t.e.stderr, "seqctl: subscribed to user %d's inbox after checkpoint %d\n", t.user, t.cp)
	}
	// A half-open connection never errors; a stream that misses three
	// heartbeats is treated as broken.
	silence := 3*t.hb + time.Second
	var silent atomic.Bool
	wd := time.AfterFunc(silence, func() { silent.Store(true); cancel() })
	defer wd.Stop()
	for {
		msg, err := st.Recv()
		if err != nil {
			if silent.Load() && ctx.Err() == nil {
				return progress, status.Errorf(codes.Unavailable, "no heartbeat for %v", silence)
			}
			if errors.Is(err, io.EOF) {
				err = status.Error(codes.Unavailable, "the server ended the stream")
			}
			return progress, err
		}
		wd.Reset(silence)
		progress = true
		if err := t.print(msg); err != nil {
			return progress, writeError{err}
		}
		if t.stale >= staleReconnect {
			return progress, status.Errorf(codes.Unavailable, "the replica serving the stream has had no leader for %d messages", t.stale)
		}
	}
}

// print writes one stream message and advances the checkpoint.
func (t *tailer) print(msg *seqdv1.SubscribeResponse) error {
	w := t.e.stdout
	if !msg.MaybeStale {
		t.stale = 0
	} else if t.stale++; t.stale == 1 {
		fmt.Fprintln(t.e.stderr, "seqctl: warning: the replica serving this stream has lost its shard's leader; the newest events may not come until it has one (tail reconnects if this lasts)")
	}
	if msg.HistoryTruncated && msg.EarliestSeq != t.warnedTruncated {
		t.warnedTruncated = msg.EarliestSeq
		fmt.Fprintf(t.e.stderr, "seqctl: warning: history truncated: events after %d were removed by retention; the earliest retained seq is %d\n", t.cp, msg.EarliestSeq)
		if t.e.json {
			if err := t.line(&seqdv1.SubscribeResponse{Checkpoint: t.cp, HistoryTruncated: true, EarliestSeq: msg.EarliestSeq}); err != nil {
				return err
			}
		}
	}
	if msg.Heartbeat && len(msg.Events) == 0 {
		t.cp = max(t.cp, msg.Checkpoint)
		if !t.verbose {
			return nil
		}
		if t.e.json {
			return t.line(&seqdv1.SubscribeResponse{Heartbeat: true, Checkpoint: t.cp})
		}
		_, err := fmt.Fprintf(w, "heartbeat  checkpoint %d\n", t.cp)
		return err
	}
	for _, ev := range msg.Events {
		// The server never repeats; this guards the promise anyway.
		if ev.Seq <= t.cp {
			continue
		}
		t.cp = ev.Seq
		var err error
		if t.e.json {
			err = t.line(&seqdv1.SubscribeResponse{Events: []*seqdv1.Event{ev}, Checkpoint: ev.Seq})
		} else {
			_, err = fmt.Fprintln(w, eventLine(ev))
		}
		if err != nil {
			return err
		}
	}
	t.cp = max(t.cp, msg.Checkpoint)
	return nil
}

func (t *tailer) line(m *seqdv1.SubscribeResponse) error {
	b, err := protoLine(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(t.e.stdout, "%s\n", b)
	return err
}

// permanent reports whether a stream error will not go away by
// reconnecting.
func permanent(err error) bool {
	if _, ok := rpcerr.WrongShardTable(err); ok {
		return false
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented, codes.NotFound, codes.OutOfRange, codes.FailedPrecondition:
		return true
	}
	return false
}

func errMessage(err error) string {
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", st.Code(), st.Message())
	}
	return err.Error()
}
