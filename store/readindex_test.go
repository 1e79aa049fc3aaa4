package store

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/raftnode"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

// Callers that arrive while a round runs share the next round, and get
// its outcome, not the running one's: its commit index was read before
// they asked.
func TestReadRoundsShareTheNextRound(t *testing.T) {
	var rounds atomic.Int32
	started := make(chan struct{}, 4)
	proceed := make(chan struct{})
	r := newReadRounds(func() error {
		n := rounds.Add(1)
		started <- struct{}{}
		<-proceed
		return fmt.Errorf("round %d", n)
	}, nil)
	first := make(chan error, 1)
	go func() { first <- r.wait(context.Background()) }()
	<-started // round 1 runs
	const later = 5
	var wg sync.WaitGroup
	errs := make([]error, later)
	for i := range later {
		wg.Go(func() { errs[i] = r.wait(context.Background()) })
	}
	// All five are queued for round 2 once round 1 is still running.
	waitFor(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return len(r.waiting) == later })
	proceed <- struct{}{}
	if err := <-first; err == nil || err.Error() != "round 1" {
		t.Fatalf("first caller got %v, want round 1's outcome", err)
	}
	<-started
	proceed <- struct{}{}
	wg.Wait()
	for i, err := range errs {
		if err == nil || err.Error() != "round 2" {
			t.Errorf("later caller %d got %v, want round 2's outcome", i, err)
		}
	}
	if n := rounds.Load(); n != 2 {
		t.Errorf("%d rounds for 6 callers in two waves, want 2", n)
	}
	// Idle again: the next caller starts a round of its own.
	go func() { <-started; proceed <- struct{}{} }()
	if err := r.wait(context.Background()); err == nil || err.Error() != "round 3" {
		t.Fatalf("caller after idle got %v, want round 3's outcome", err)
	}
}

// A caller whose context ends stops waiting; the round goes on for the
// others.
func TestReadRoundsCallerGivesUp(t *testing.T) {
	proceed := make(chan struct{})
	r := newReadRounds(func() error { <-proceed; return nil }, nil)
	other := make(chan error, 1)
	go func() { other <- r.wait(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := r.wait(ctx); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("caller whose context ended got %v, want DEADLINE_EXCEEDED", err)
	}
	close(proceed)
	if err := <-other; err != nil {
		t.Fatalf("other caller got %v, want the round's nil", err)
	}
}

// At shutdown callers stop waiting for a round that may never end.
func TestReadRoundsStop(t *testing.T) {
	stop := make(chan struct{})
	r := newReadRounds(func() error { <-t.Context().Done(); return nil }, stop)
	got := make(chan error, 1)
	go func() { got <- r.wait(context.Background()) }()
	close(stop)
	if err := <-got; status.Code(err) != codes.Unavailable {
		t.Fatalf("caller at shutdown got %v, want UNAVAILABLE", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5 s")
		}
	}
}

// startAlone starts a one-replica Raft over a store FSM in dir, and waits
// until it leads and has applied its log.
func startAlone(t *testing.T, dir string) *Shard {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	f, err := OpenFSM(filepath.Join(dir, "fsm"), quiet)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	n, err := raftnode.Start(raftnode.Config{ID: "a", Dir: filepath.Join(dir, "raft"), Addr: addr, Listener: ln,
		Bootstrap: []raftnode.Peer{{ID: "a", Addr: addr}}, HeartbeatTimeout: 200 * time.Millisecond,
		ElectionTimeout: 200 * time.Millisecond, Logger: quiet}, f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(); f.Close() })
	waitFor(t, func() bool { return n.Raft.State() == raft.Leader })
	if err := n.Raft.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	return &Shard{node: n, fsm: f}
}

// The read index's wait looks for the newest command at or below the
// commit index: entries the FSM never writes (no-ops, barriers,
// configurations) are skipped, a log of nothing else costs no entry of
// its own, and each round reads only what was committed since the last.
func TestNewestCommand(t *testing.T) {
	dir := t.TempDir()
	s := startAlone(t, dir)
	apply := func() uint64 {
		t.Helper()
		data := encodeFormat(t, 1, 0, &clusterv1.StoreOp{Op: &clusterv1.StoreOp_OutboxAck{OutboxAck: &clusterv1.OutboxAckOp{}}})
		f := s.node.Raft.Apply(data, 5*time.Second)
		if err := f.Error(); err != nil {
			t.Fatal(err)
		}
		return f.Index()
	}
	// Only the bootstrap configuration, the no-op and a barrier: no
	// command, so nothing to wait for.
	if got, err := s.newestCommand(s.node.Raft.CommitIndex()); err != nil || got != 0 {
		t.Fatalf("newest command in a log without one: %d, %v; want 0", got, err)
	}
	cmd := apply()
	for range 300 {
		if err := s.node.Raft.Barrier(5 * time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	last := s.node.Raft.LastIndex()
	for round := range 3 {
		if got, err := s.newestCommand(s.node.Raft.CommitIndex()); err != nil || got != cmd {
			t.Fatalf("round %d: newest command %d, %v; want %d, behind 300 barriers", round, got, err, cmd)
		}
	}
	if s.node.Raft.LastIndex() != last {
		t.Fatalf("rounds appended to the log (%d → %d)", last, s.node.Raft.LastIndex())
	}
	if s.cmds.scanned != s.node.Raft.CommitIndex() {
		t.Fatalf("scanned up to %d, want the commit index %d", s.cmds.scanned, s.node.Raft.CommitIndex())
	}
	cmd = apply()
	if got, err := s.newestCommand(s.node.Raft.CommitIndex()); err != nil || got != cmd {
		t.Fatalf("newest command after another: %d, %v; want %d", got, err, cmd)
	}
	if s.fsm.AppliedIndex() < cmd {
		t.Fatalf("FSM applied %d, below the command %d it answered", s.fsm.AppliedIndex(), cmd)
	}
}
