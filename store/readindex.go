package store

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/seqd/seqd/internal/rpcerr"
)

// readIndexWait bounds one read-index round: the leader's catch-up, its
// quorum round and its FSM's wait.
const readIndexWait = 2 * time.Second

// readIndex confirms that this replica leads and that its FSM holds every
// entry committed when it was called, so what it reads next includes
// every write acknowledged before (by this leader or an earlier one).
// Callers at the same moment share one round (readRounds).
func (s *Shard) readIndex(ctx context.Context) error {
	return s.reads.wait(ctx)
}

// readIndexRound is one round:
//   - a leader just elected first applies the entries of earlier terms
//     (its first barrier in this term, caughtUp): until an entry of its
//     own term commits, its commit index may lie below theirs;
//   - then the commit index, and a quorum round (VerifyLeader: a leader
//     deposed while paused or cut off, which does not know it yet, fails
//     it);
//   - then a wait until the FSM has written the newest command up to that
//     index (Raft's own applied index counts entries handed to the FSM,
//     which may not have written them yet; no-op, barrier and
//     configuration entries change nothing a read returns).
//
// Its errors are LEADER_NOT_READY (retry here) or NOT_LEADER. Rounds run
// one at a time (readRounds.run).
func (s *Shard) readIndexRound() error {
	deadline := time.Now().Add(readIndexWait)
	for s.stillApplying() != nil {
		if !s.IsLeader() {
			return rpcerr.FromRaft(raft.ErrNotLeader, s.leaderAddr())
		}
		if time.Now().After(deadline) {
			return errStillApplying
		}
		time.Sleep(time.Millisecond)
	}
	ci := s.node.Raft.CommitIndex()
	if err := s.verifyLeader(deadline); err != nil {
		return err
	}
	need, err := s.newestCommand(ci)
	if err != nil {
		return err
	}
	for s.fsm.AppliedIndex() < need {
		if time.Now().After(deadline) {
			return rpcerr.LeaderNotReady("the shard leader is still applying committed entries; retry")
		}
		time.Sleep(100 * time.Microsecond)
	}
	return nil
}

// verifyLeader runs a quorum round, until deadline (given at least
// minVerify). Raft's future may never answer once Raft has shut down, so
// it is not waited on past that or the shard's stop.
func (s *Shard) verifyLeader(deadline time.Time) error {
	done := make(chan error, 1)
	go func() { done <- s.node.Raft.VerifyLeader().Error() }()
	t := time.NewTimer(max(time.Until(deadline), minVerify))
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			return rpcerr.FromRaft(err, s.leaderAddr())
		}
		return nil
	case <-t.C:
		return rpcerr.LeaderNotReady("the shard leader could not confirm its leadership with a quorum in time; retry")
	case <-s.stop:
		return errPipelineClosed
	}
}

// minVerify is the least time a quorum round gets, however long the
// round's catch-up took.
const minVerify = 250 * time.Millisecond

// commands remembers, across rounds, the newest command found among the
// committed entries scanned so far: committed entries never change, so
// each round reads only the entries committed since the last.
type commands struct {
	scanned uint64 // entries up to this index were scanned
	newest  uint64 // the newest command among them (0: none, or compacted)
}

// newestCommand returns the index of the newest command entry at or
// below ci, the commit index (0 if the log holds none: compacted, so the
// FSM, restored from a snapshot, holds everything before). Only the
// round goroutine calls it.
func (s *Shard) newestCommand(ci uint64) (uint64, error) {
	c := &s.cmds
	if ci <= c.scanned {
		// A commit index below one scanned before: this replica's
		// commit index never goes back while it runs.
		return min(c.newest, ci), nil
	}
	var l raft.Log
	for i := ci; i > c.scanned; i-- {
		switch err := s.node.Log(i, &l); {
		case errors.Is(err, raft.ErrLogNotFound):
			c.scanned = ci
			return c.newest, nil
		case err != nil:
			return 0, rpcerr.LeaderNotReady("the shard leader cannot read its log: %v; retry", err)
		}
		if l.Type == raft.LogCommand {
			c.scanned, c.newest = ci, i
			return i, nil
		}
	}
	c.scanned = ci
	return c.newest, nil
}

// timedReadIndexRound is readIndexRound, timed by outcome.
func (s *Shard) timedReadIndexRound() error {
	start := time.Now()
	err := s.readIndexRound()
	outcome := "ok"
	if err != nil {
		outcome = "failed"
	}
	s.m.readIndex.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	return err
}

// readRounds batches read indexes: a caller joins the next round to
// start, so its answer reflects a commit index read after it asked, and
// callers that arrive while a round runs share the one after it. Under
// a read load that is one quorum round at a time, not one per read.
type readRounds struct {
	round func() error
	stop  <-chan struct{} // closed at shutdown: callers stop waiting

	mu      sync.Mutex
	waiting []chan error // callers of the next round
	running bool
}

func newReadRounds(round func() error, stop <-chan struct{}) *readRounds {
	return &readRounds{round: round, stop: stop}
}

// wait joins the next round and returns its outcome, or an error if ctx
// ends (or the shard stops) first; the round goes on for the others.
func (r *readRounds) wait(ctx context.Context) error {
	done := make(chan error, 1)
	r.mu.Lock()
	r.waiting = append(r.waiting, done)
	if !r.running {
		r.running = true
		go r.run()
	}
	r.mu.Unlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return rpcerr.FromRaft(ctx.Err(), "")
	case <-r.stop:
		return errPipelineClosed
	}
}

// run runs rounds while callers wait for one.
func (r *readRounds) run() {
	for {
		r.mu.Lock()
		batch := r.waiting
		r.waiting = nil
		if len(batch) == 0 {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		err := r.round()
		for _, done := range batch {
			done <- err
		}
	}
}
