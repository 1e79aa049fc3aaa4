package store

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/rpcerr"
)

// readIndexWait bounds how long a read index waits for this leader to
// catch up (its first barrier, then its FSM up to the commit index).
const readIndexWait = 2 * time.Second

// readIndex confirms that this replica leads and that its FSM holds every
// entry committed when it was called, so what it reads next includes
// every write acknowledged before (by this leader or an earlier one).
// Callers at the same moment share one round (readRounds).
func (s *Shard) readIndex(ctx context.Context) error {
	return s.reads.wait(ctx)
}

// readIndexRound is one round: a leader just elected first applies the
// entries of earlier terms (its first barrier, caughtUp), since until an
// entry of its own term commits its commit index may lie below theirs;
// then the commit index, a quorum round (VerifyLeader: a leader deposed
// while paused or cut off, which does not know it yet, fails it), and a
// wait until the FSM has applied up to that index.
func (s *Shard) readIndexRound() error {
	deadline := time.Now().Add(readIndexWait)
	for !s.caughtUp.Load() {
		if !s.IsLeader() {
			return rpcerr.FromRaft(raft.ErrNotLeader, s.leaderAddr())
		}
		if time.Now().After(deadline) {
			return s.stillApplying()
		}
		time.Sleep(time.Millisecond)
	}
	ci := s.node.Raft.CommitIndex()
	if err := s.node.Raft.VerifyLeader().Error(); err != nil {
		return rpcerr.FromRaft(err, s.leaderAddr())
	}
	for s.node.Raft.AppliedIndex() < ci {
		if time.Now().After(deadline) {
			return status.Error(codes.Unavailable, "the shard leader is still applying committed entries; retry")
		}
		time.Sleep(100 * time.Microsecond)
	}
	return nil
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

	mu      sync.Mutex
	waiting []chan error // callers of the next round
	running bool
}

func newReadRounds(round func() error) *readRounds { return &readRounds{round: round} }

// wait joins the next round and returns its outcome, or ctx's error if
// ctx ends first (the round goes on for the others).
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
		return status.FromContextError(ctx.Err()).Err()
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
