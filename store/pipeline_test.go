package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/rpcerr"
	"github.com/seqd/seqd/internal/testwait"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// neverFuture is an apply Raft never answers: one left in its buffer when
// it shut down.
type neverFuture struct{}

func (neverFuture) Error() error          { select {} }
func (neverFuture) Index() uint64         { return 0 }
func (neverFuture) Response() interface{} { return nil }

// doneFuture is an apply Raft answered.
type doneFuture struct{ err error }

func (a doneFuture) Error() error        { return a.err }
func (doneFuture) Index() uint64         { return 1 }
func (doneFuture) Response() interface{} { return nil }

func TestOutcomeStopsWaitingWhenThePipelineGivesUp(t *testing.T) {
	p := &pipeline{abandon: make(chan struct{})}
	want := errors.New("not leader")
	if err := p.outcome(doneFuture{want}); err != want {
		t.Fatalf("answered future: %v, want %v", err, want)
	}
	time.AfterFunc(20*time.Millisecond, p.giveUp)
	done := make(chan error, 1)
	go func() { done <- p.outcome(neverFuture{}) }()
	select {
	case err := <-done:
		if err != errPipelineClosed {
			t.Fatalf("unanswered future after giving up: %v, want errPipelineClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("outcome still waits on a future Raft will never answer")
	}
}

// A graceful close (settle) waits for the entries already proposed, so
// their requests get the real outcome rather than "retry elsewhere", and
// gives up on one Raft never answers after its time limit.
func TestSettleAnswersEntriesInFlight(t *testing.T) {
	held := &heldFuture{release: make(chan struct{}), ops: 1}
	p, r := proposeOne(t, held)
	queued := &request{b: nopBuilder{}, done: make(chan struct{})}
	p.close()
	if err := p.enqueue(queued, false); err != errPipelineClosed {
		t.Fatalf("enqueue after close: %v, want errPipelineClosed", err)
	}
	time.AfterFunc(100*time.Millisecond, func() { close(held.release) })
	start := time.Now()
	p.settle(10 * time.Second)
	p.wait()
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("settle took %v for an entry answered after 100ms", took)
	}
	<-r.done
	if r.err != nil || r.res == nil || r.res.Status != clusterv1.OpStatus_OP_STATUS_OK {
		t.Fatalf("request in flight at close: res %v err %v, want its entry's OK", r.res, r.err)
	}

	// An entry Raft never answers: settle gives up after its limit.
	p2, r2 := proposeOne(t, neverFuture{})
	p2.close()
	start = time.Now()
	p2.settle(200 * time.Millisecond)
	p2.wait()
	if took := time.Since(start); took < 200*time.Millisecond || took > 5*time.Second {
		t.Fatalf("settle on an unanswered entry took %v, want its 200ms limit", took)
	}
	<-r2.done
	if r2.err != errPipelineClosed {
		t.Fatalf("request whose entry Raft never answered: %v, want errPipelineClosed", r2.err)
	}
}

// testPipeline starts a pipeline on a bare shard, a leader caught up with
// earlier terms; apply stands in for Raft.
func testPipeline(apply func(data []byte) raft.ApplyFuture) *pipeline {
	s := &Shard{cfg: Config{Now: time.Now}}
	s.m = newMetrics(prometheus.NewRegistry())
	s.caughtUp.Store(true)
	return startPipeline(s, apply, nil)
}

// proposeOne runs one request into a pipeline whose only entry gets the
// future f, and returns once that entry is proposed.
func proposeOne(t *testing.T, f raft.ApplyFuture) (*pipeline, *request) {
	t.Helper()
	proposed := make(chan struct{})
	p := testPipeline(func([]byte) raft.ApplyFuture { close(proposed); return f })
	r := &request{b: nopBuilder{}, done: make(chan struct{})}
	if err := p.enqueue(r, false); err != nil {
		t.Fatal(err)
	}
	<-proposed
	return p, r
}

// heldFuture is an entry the test commits when it chooses, with every op
// OK.
type heldFuture struct {
	release chan struct{}
	ops     int
}

func (f *heldFuture) Error() error  { <-f.release; return nil }
func (f *heldFuture) Index() uint64 { return 1 }
func (f *heldFuture) Response() interface{} {
	res := make([]*OpResult, f.ops)
	for i := range res {
		res[i] = &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK}
	}
	return &BatchResult{Results: res}
}

// nopBuilder is an op that needs no seqs.
type nopBuilder struct{}

func (nopBuilder) plan(*Shard) ([]uint64, error)     { return nil, nil }
func (nopBuilder) build([]uint64) *clusterv1.StoreOp { return &clusterv1.StoreOp{} }

// The proposer keeps at most maxInflight entries unanswered; requests that
// arrive meanwhile wait and go out together in the next entries.
func TestAtMostFourEntriesInFlight(t *testing.T) {
	var mu sync.Mutex
	var held []*heldFuture
	released, worst := 0, 0
	p := testPipeline(func(data []byte) raft.ApplyFuture {
		b, err := decodeBatch(data)
		if err != nil {
			t.Error(err)
		}
		f := &heldFuture{release: make(chan struct{}), ops: len(b.Ops)}
		mu.Lock()
		held = append(held, f)
		worst = max(worst, len(held)-released)
		mu.Unlock()
		return f
	})
	defer func() { p.close(); p.wait() }()
	proposed := func() int { mu.Lock(); defer mu.Unlock(); return len(held) }

	// One request at a time until maxInflight entries are out.
	var reqs []*request
	add := func() {
		r := &request{b: nopBuilder{}, done: make(chan struct{})}
		reqs = append(reqs, r)
		if err := p.enqueue(r, false); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= maxInflight; i++ {
		add()
		testwait.For(t, 10*time.Second, fmt.Sprintf("entry %d", i), func() bool { return proposed() == i })
	}
	for range 40 {
		add()
	}
	time.Sleep(100 * time.Millisecond)
	if n := proposed(); n != maxInflight {
		t.Fatalf("%d entries proposed with %d unanswered allowed", n, maxInflight)
	}
	// Answer entries one by one; the waiting requests go out in few entries.
	allDone := func() bool {
		for _, r := range reqs {
			select {
			case <-r.done:
			default:
				return false
			}
		}
		return true
	}
	for i := 0; !allDone(); i++ {
		if i > 40 {
			t.Fatal("requests still unanswered after 40 entries")
		}
		mu.Lock()
		f := held[i]
		released++
		mu.Unlock()
		close(f.release)
		testwait.For(t, 10*time.Second, "the answers or the next entry", func() bool { return allDone() || proposed() > i+1 })
	}
	for i, r := range reqs {
		<-r.done
		if r.err != nil || r.res.Status != clusterv1.OpStatus_OP_STATUS_OK {
			t.Fatalf("request %d: %v %v", i, r.res, r.err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if worst > maxInflight {
		t.Fatalf("%d entries were unanswered at once, over %d", worst, maxInflight)
	}
	if ops := held[maxInflight].ops; ops < 10 {
		t.Fatalf("the first entry after the limit carried %d of the 40 waiting requests; want them batched", ops)
	}
	t.Logf("%d entries for %d requests", len(held), len(reqs))
}

// refusingBuilder is an op its plan refuses.
type refusingBuilder struct{ err error }

func (b refusingBuilder) plan(*Shard) ([]uint64, error)   { return nil, b.err }
func (refusingBuilder) build([]uint64) *clusterv1.StoreOp { return &clusterv1.StoreOp{} }

// A leader just elected, which has not applied what earlier terms
// committed, plans nothing: a plan from its state (a group's members, say)
// would miss what those entries changed, and the FSM does not plan again.
// It answers LEADER_NOT_READY, which the router retries, without a
// leadership round; once caught up, the same request goes through.
func TestNothingPlannedBeforeCaughtUp(t *testing.T) {
	s := &Shard{cfg: Config{Now: time.Now}}
	s.m = newMetrics(prometheus.NewRegistry())
	p, proposed, rounds := countingPipeline(t, s)
	var plans atomic.Int32
	r := answer(t, p, plannedTwice{plans: &plans})
	if !rpcerr.IsLeaderNotReady(r.err) || r.res != nil {
		t.Fatalf("answer %+v %v at a leader not caught up, want LEADER_NOT_READY", r.res, r.err)
	}
	if plans.Load() != 0 || proposed.Load() != 0 || rounds.Load() != 0 {
		t.Fatalf("%d plans, %d proposals and %d leadership rounds at a leader not caught up, want none", plans.Load(), proposed.Load(), rounds.Load())
	}
	s.caughtUp.Store(true)
	if r := answer(t, p, plannedTwice{plans: &plans}); r.err != nil || r.res.Status != clusterv1.OpStatus_OP_STATUS_OK || proposed.Load() != 1 {
		t.Fatalf("answer %+v %v once caught up (%d proposals), want OK, proposed", r.res, r.err, proposed.Load())
	}
}

// countingPipeline starts a pipeline on s whose entries apply at once,
// and counts its proposals and its leadership rounds; it stops when the
// test ends.
func countingPipeline(t *testing.T, s *Shard) (p *pipeline, proposed, rounds *atomic.Int32) {
	released := make(chan struct{})
	close(released)
	proposed, rounds = new(atomic.Int32), new(atomic.Int32)
	p = startPipeline(s, func([]byte) raft.ApplyFuture { proposed.Add(1); return &heldFuture{release: released, ops: 1} },
		func() error { rounds.Add(1); return nil })
	t.Cleanup(func() { p.close(); p.giveUp(); p.wait() })
	return p, proposed, rounds
}

// answer asks p for an op of b and waits for its answer.
func answer(t *testing.T, p *pipeline, b builder) *request {
	t.Helper()
	r := &request{b: b, done: make(chan struct{})}
	if err := p.enqueue(r, false); err != nil {
		t.Fatal(err)
	}
	<-r.done
	return r
}

// newTermWhilePlanning plans as if this replica were deposed and elected
// again (and caught up in the new term) while its batch was planned and
// allocated.
type newTermWhilePlanning struct{}

func (newTermWhilePlanning) plan(s *Shard) ([]uint64, error) {
	s.caughtUpTerm.Add(1)
	return nil, nil
}
func (newTermWhilePlanning) build([]uint64) *clusterv1.StoreOp { return &clusterv1.StoreOp{} }

// A batch planned in one term is not proposed in another: the plans read
// a state the terms between may have changed (a member added to the
// group), and the FSM does not plan again. The requests get
// LEADER_NOT_READY, and the router's retry is planned anew.
func TestNothingProposedInALaterTermThanPlanned(t *testing.T) {
	s := &Shard{cfg: Config{Now: time.Now}}
	s.m = newMetrics(prometheus.NewRegistry())
	s.caughtUp.Store(true)
	s.caughtUpTerm.Store(3)
	p, proposed, _ := countingPipeline(t, s)
	if r := answer(t, p, newTermWhilePlanning{}); !rpcerr.IsLeaderNotReady(r.err) || r.res != nil || proposed.Load() != 0 {
		t.Fatalf("answer %+v %v, %d proposals, for a batch planned in an earlier term: want LEADER_NOT_READY and none", r.res, r.err, proposed.Load())
	}
}

// A planning refusal is final for the client, so the leader gives it only
// once a quorum round confirms it still leads; a leader deposed without
// knowing it answers with the round's error (UNAVAILABLE) instead.
func TestRefusalOnlyOnceLeading(t *testing.T) {
	refusal := status.Error(codes.InvalidArgument, "up_to_seq 9 is beyond the newest event 5")
	for _, tc := range []struct {
		name     string
		caughtUp bool
		verify   error
		want     codes.Code
		rounds   int
	}{
		{"still leading", true, nil, codes.InvalidArgument, 1},
		{"deposed", true, status.Error(codes.Unavailable, "not the leader"), codes.Unavailable, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Shard{cfg: Config{Now: time.Now}}
			s.m = newMetrics(prometheus.NewRegistry())
			s.caughtUp.Store(tc.caughtUp)
			var rounds atomic.Int32
			p := startPipeline(s, func([]byte) raft.ApplyFuture { t.Error("a refused op was proposed"); return nil },
				func() error { rounds.Add(1); return tc.verify })
			defer func() { p.close(); p.giveUp(); p.wait() }()
			r := &request{b: refusingBuilder{refusal}, done: make(chan struct{})}
			if err := p.enqueue(r, false); err != nil {
				t.Fatal(err)
			}
			<-r.done
			if r.res == nil || r.res.Status != clusterv1.OpStatus_OP_STATUS_REJECTED || status.Code(r.res.err) != tc.want {
				t.Fatalf("answer %+v, want REJECTED with %v", r.res, tc.want)
			}
			if int(rounds.Load()) != tc.rounds {
				t.Errorf("%d leadership rounds, want %d", rounds.Load(), tc.rounds)
			}
		})
	}
}

// plannedTwice refuses its first plan and goes through its second: the
// leader's state caught up in between.
type plannedTwice struct {
	plans   *atomic.Int32
	refusal error
}

func (b plannedTwice) plan(*Shard) ([]uint64, error) {
	if b.plans.Add(1) == 1 {
		return nil, b.refusal
	}
	return nil, nil
}
func (plannedTwice) build([]uint64) *clusterv1.StoreOp { return &clusterv1.StoreOp{} }

// After the read index the op is planned again: state that caught up
// meanwhile lets it through, and a recall or delete refused by the
// leader's state (an answered refusal) takes the same path.
func TestRefusalPlannedAgainAfterReadIndex(t *testing.T) {
	s := &Shard{cfg: Config{Now: time.Now}}
	s.m = newMetrics(prometheus.NewRegistry())
	s.caughtUp.Store(true)
	released := make(chan struct{})
	close(released)
	proposed := make(chan struct{}, 1)
	var verified atomic.Int32
	p := startPipeline(s, func([]byte) raft.ApplyFuture { proposed <- struct{}{}; return &heldFuture{release: released, ops: 1} },
		func() error {
			if verified.Add(1) > 1 {
				return status.Error(codes.Unavailable, "not leading")
			}
			return nil
		})
	defer func() { p.close(); p.giveUp(); p.wait() }()
	var plans atomic.Int32
	r := &request{b: plannedTwice{plans: &plans, refusal: status.Error(codes.NotFound, "no such message")}, done: make(chan struct{})}
	if err := p.enqueue(r, false); err != nil {
		t.Fatal(err)
	}
	<-r.done
	if r.err != nil || r.res.Status != clusterv1.OpStatus_OP_STATUS_OK || plans.Load() != 2 {
		t.Fatalf("answer %+v %v after %d plans, want OK after 2", r.res, r.err, plans.Load())
	}
	<-proposed
	// The second round fails: a recall refused from this leader's state
	// is answered UNAVAILABLE instead of NOT_FOUND.
	r = &request{b: refusingBuilder{&answered{rejectedAs(codes.NotFound, "message 1.1 does not exist")}}, done: make(chan struct{})}
	if err := p.enqueue(r, false); err != nil {
		t.Fatal(err)
	}
	<-r.done
	if status.Code(r.res.err) != codes.Unavailable {
		t.Fatalf("answered refusal of a deposed leader: %+v, want UNAVAILABLE", r.res)
	}
}

// TestEarlyAckIsAnsweredOnce: under the planted bug AckSendBeforeCommit a
// send is answered when proposed; an entry that then fails answers its
// other requests and leaves that one acknowledged (the bug seqjepsen must
// catch), instead of answering it twice, which panicked the leader.
func TestEarlyAckIsAnsweredOnce(t *testing.T) {
	p := &pipeline{abandon: make(chan struct{})}
	early := &request{b: nopBuilder{}, done: make(chan struct{})}
	ackEarly([]*request{early}, []*clusterv1.StoreOp{{Op: &clusterv1.StoreOp_Send{Send: &clusterv1.SendOp{
		MessageId: "1.1", Request: &seqdv1.SendRequest{Sender: 1}}}}})
	other := &request{b: nopBuilder{}, done: make(chan struct{})}
	lost := errors.New("leadership lost")
	p.complete(&flight{reqs: []*request{early, other}, f: doneFuture{lost}})
	<-other.done
	if other.err != lost {
		t.Fatalf("the other request: %v, want %v", other.err, lost)
	}
	if early.err != nil || early.res.Send.GetMessageId() != "1.1" {
		t.Fatalf("the early-acknowledged request: %v %v, want its acknowledgement kept", early.res, early.err)
	}
}

// TestAbandonedRequestIsNotProposed: a write whose caller gave up before
// the proposer took it is answered with its context's error and never
// proposed, so it cannot commit with no one to learn of it.
func TestAbandonedRequestIsNotProposed(t *testing.T) {
	var proposals atomic.Int32
	p := testPipeline(func([]byte) raft.ApplyFuture { proposals.Add(1); return doneFuture{} })
	defer p.close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := &request{ctx: ctx, b: nopBuilder{}, done: make(chan struct{})}
	if err := p.enqueue(r, false); err != nil {
		t.Fatal(err)
	}
	<-r.done
	if status.Code(r.err) != codes.Canceled || proposals.Load() != 0 {
		t.Fatalf("abandoned request: %v with %d proposals, want Canceled and none", r.err, proposals.Load())
	}
	if n := counterValue(t, p.s.m.abandoned); n != 1 {
		t.Fatalf("abandoned_requests_total %v, want 1", n)
	}
}

// TestFullQueueRefusesNewWrites: past maxQueued waiting writes, new ones
// are refused with RESOURCE_EXHAUSTED; requests put back at the front
// (planned again) still go in.
func TestFullQueueRefusesNewWrites(t *testing.T) {
	s := &Shard{cfg: Config{Now: time.Now}}
	s.m = newMetrics(prometheus.NewRegistry())
	p := &pipeline{s: s, kick: make(chan struct{}, 1)} // no proposer: nothing leaves the queue
	for range maxQueued {
		if err := p.enqueue(&request{b: nopBuilder{}, done: make(chan struct{})}, false); err != nil {
			t.Fatal(err)
		}
	}
	err := p.enqueue(&request{b: nopBuilder{}, done: make(chan struct{})}, false)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "overloaded") {
		t.Fatalf("a write past the full queue: %v, want RESOURCE_EXHAUSTED", err)
	}
	if err := p.enqueue(&request{b: nopBuilder{}, done: make(chan struct{})}, true); err != nil {
		t.Fatalf("a write planned again at the front: %v", err)
	}
	if n := counterValue(t, s.m.overloaded); n != 1 {
		t.Fatalf("overload_refusals_total %v, want 1", n)
	}
}

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// A follower's forward of a read leaves it a quarter of the caller's time
// to answer from its own state (maybe_stale) if the leader does not
// answer: with the router's attempts at half the call's time, the full
// forwardReadTimeout would outlast the attempt, and the caller would get
// DEADLINE_EXCEEDED instead of the stale answer.
func TestForwardBudgetLeavesTimeToAnswerStale(t *testing.T) {
	if got := forwardBudget(context.Background()); got != forwardReadTimeout {
		t.Fatalf("without a deadline: %v, want %v", got, forwardReadTimeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if got := forwardBudget(ctx); got > 1500*time.Millisecond || got < time.Second {
		t.Fatalf("with 2 s left: %v, want about 1.5 s", got)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if got := forwardBudget(ctx); got != forwardReadTimeout {
		t.Fatalf("with a minute left: %v, want %v", got, forwardReadTimeout)
	}
}
