package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/bugs"
	"github.com/seqd/seqd/internal/rpcerr"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// builder turns one request into a store op on the leader. plan runs
// first and returns the allocator keys it needs seqs for; build then
// receives those seqs, in the same order.
type builder interface {
	plan(s *Shard) (keys []uint64, err error)
	build(seqs []uint64) *clusterv1.StoreOp
}

// answered is a plan error carrying a complete answer (a deduplicated
// retry): the op is not proposed at all.
type answered struct{ res *OpResult }

func (a *answered) Error() string { return "answered without proposing" }

// Pipeline limits.
const (
	maxBatchOps     = 256     // ops per Raft entry
	maxBatchAppends = 8192    // inbox appends per Raft entry (each writes a few Badger keys)
	maxBatchBytes   = 4 << 20 // estimated bytes one Raft entry writes; Badger refuses a transaction near 10 MiB
	maxInflight     = 4       // entries proposed and not yet answered (see proposer)
	maxOrderRetries = 5       // re-plans after OUT_OF_ORDER (only after leader changes)
)

var errPipelineClosed = status.Error(codes.Unavailable, "store replica is shutting down; retry at another replica")

// maxQueued bounds the writes waiting for the shard leader's proposer
// (about two seconds of a two-core leader's sends); past it new ones are
// refused with errOverloaded.
const maxQueued = 8192

var errOverloaded = status.Error(codes.ResourceExhausted,
	fmt.Sprintf("store shard leader is overloaded: %d writes are waiting; slow down and retry", maxQueued))

// request is one op waiting for its result.
type request struct {
	// ctx is the caller's: a request whose caller gave up before it was
	// proposed is dropped (not proposed at all).
	ctx     context.Context
	b       builder
	res     *OpResult
	err     error
	retries int
	done    chan struct{}
	queued  time.Time // when it (last) entered the queue
	early   bool      // answered before its entry committed (a planted bug)
	alone   bool      // propose in an entry of its own (its batch was too large)
	// fresh: planned again after a read index (refuseOnceLeading), so a
	// refusal now is answered as it is.
	fresh bool
}

// coverer is a builder whose op may find its change made already: covered
// returns the answer then (nil otherwise), and the op is not proposed.
type coverer interface {
	covered(s *Shard) (*OpResult, error)
}

// sizer is a builder that can estimate the bytes its op writes, given
// how many inbox appends it plans.
type sizer interface{ estBytes(appends int) int }

func estBytes(b builder, appends int) int {
	if sz, ok := b.(sizer); ok {
		return sz.estBytes(appends)
	}
	return 256 * (appends + 1)
}

func (r *request) finish(res *OpResult, err error) {
	r.res, r.err = res, err
	close(r.done)
}

// failAll answers every request with err, but those already answered
// before their entry committed (the planted bug AckSendBeforeCommit: they
// stay acknowledged, which is the bug).
func failAll(reqs []*request, err error) {
	for _, r := range reqs {
		if !r.early {
			r.finish(nil, err)
		}
	}
}

// flight is one proposed entry awaiting commit.
type flight struct {
	reqs     []*request
	f        raft.ApplyFuture
	proposed time.Time
}

// pipeline orders and commits the leader's writes in two stages.
//
// The proposer, one goroutine, takes every queued request, plans them,
// allocates all their seqs in one allocator call and proposes one Raft
// entry. Being one goroutine, it proposes seqs in the order it allocated
// them, so each inbox only ever grows at its end (G3); while it waits on
// the allocator, new requests queue up and form the next, larger batch.
//
// The completer waits for entries to commit, in log order, and answers
// each request. The FSM still checks ordering and answers OUT_OF_ORDER
// (possible only around leader changes): such requests go back to the
// front of the queue to be planned again with fresh seqs.
type pipeline struct {
	s        *Shard
	mu       sync.Mutex
	queue    []*request
	closed   bool
	kick     chan struct{}
	inflight chan *flight
	slots    chan struct{} // one per entry being cut or proposed and not yet answered
	apply    func(data []byte) raft.ApplyFuture
	stop     chan struct{} // closed by close: propose nothing more
	// abandon is closed by giveUp: stop waiting for entries' outcomes,
	// which Raft no longer gives once it has shut down.
	abandon     chan struct{}
	abandonOnce sync.Once
	wg          sync.WaitGroup
	// verify confirms that this replica still leads, or returns the
	// error to answer instead (nil: refusals are answered without asking;
	// the pipeline's own tests).
	verify func() error
}

func newPipeline(s *Shard) *pipeline {
	return startPipeline(s, func(data []byte) raft.ApplyFuture { return s.node.Raft.Apply(data, 10*time.Second) },
		func() error { return s.readIndex(context.Background()) })
}

// startPipeline starts a pipeline that proposes entries with apply and
// confirms its leadership with verify before a refusal (nil: it does not).
func startPipeline(s *Shard, apply func(data []byte) raft.ApplyFuture, verify func() error) *pipeline {
	p := &pipeline{s: s, apply: apply, verify: verify, kick: make(chan struct{}, 1), inflight: make(chan *flight, maxInflight),
		slots: make(chan struct{}, maxInflight), stop: make(chan struct{}), abandon: make(chan struct{})}
	p.wg.Add(2)
	go p.proposer()
	go p.completer()
	return p
}

// submit runs one op through the pipeline and returns its result. If ctx
// ends first the op may still commit.
func (s *Shard) submit(ctx context.Context, b builder) (*OpResult, error) {
	if err := ctx.Err(); err != nil {
		// Proposed anyway, it could commit with no one to learn of it (a
		// stopped loop's next chunk, a caller that gave up).
		return nil, s.raftErr(err)
	}
	r := &request{ctx: ctx, b: b, done: make(chan struct{})}
	if err := s.pipe.enqueue(r, false); err != nil {
		return nil, err
	}
	select {
	case <-r.done:
		if r.err != nil {
			return nil, s.raftErr(r.err)
		}
		return r.res, nil
	case <-ctx.Done():
		return nil, s.raftErr(ctx.Err())
	}
}

func (p *pipeline) enqueue(r *request, front bool) error {
	r.queued = time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errPipelineClosed
	}
	if !front && len(p.queue) >= maxQueued {
		// More than the leader commits in a second or two is waiting:
		// refuse new work rather than let every caller's deadline pass
		// in the queue.
		p.mu.Unlock()
		p.s.m.overloaded.Inc()
		return errOverloaded
	}
	if front {
		p.queue = append([]*request{r}, p.queue...)
	} else {
		p.queue = append(p.queue, r)
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return nil
}

// requeue puts requests back at the front of the queue, in order.
func (p *pipeline) requeue(rs []*request) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		failAll(rs, errPipelineClosed)
		return
	}
	now := time.Now()
	for _, r := range rs {
		r.queued = now
	}
	p.queue = append(append([]*request(nil), rs...), p.queue...)
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *pipeline) take() []*request {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(len(p.queue), maxBatchOps)
	if n > 0 && p.queue[0].alone {
		n = 1
	}
	batch := append([]*request(nil), p.queue[:n]...)
	p.queue = append(p.queue[:0], p.queue[n:]...)
	now := time.Now()
	for _, r := range batch {
		p.s.m.stageQueued.Observe(now.Sub(r.queued).Seconds())
	}
	return batch
}

// proposer proposes entries while fewer than maxInflight are unanswered
// (an entry holds its slot from when its requests are taken until they
// are answered). It waits for a slot before it takes requests, so while Raft is busy they
// queue and go out together. Without the limit, at half the closed-loop
// rate it cut entries of 2-3 ops, and each entry's fixed cost (a Badger
// transaction and a log record on every replica) doubled the commit time
// (docs/benchmarks.md, "At most four entries in flight").
func (p *pipeline) proposer() {
	defer p.wg.Done()
	defer close(p.inflight)
	for {
		select {
		case p.slots <- struct{}{}:
		case <-p.stop:
			return
		}
		batch := p.take()
		if len(batch) == 0 {
			<-p.slots
			select {
			case <-p.kick:
				continue
			case <-p.stop:
				return
			}
		}
		fl := p.propose(batch)
		if fl == nil {
			<-p.slots
			continue
		}
		// Never blocks: an entry holds a slot until it is answered, and
		// inflight has room for as many entries as there are slots. Once
		// proposed, an entry's requests wait for its outcome, even if the
		// pipeline closed meanwhile.
		p.inflight <- fl
	}
}

// propose plans, allocates and proposes one batch. Requests refused while
// planning are answered at once; it returns nil if none was proposed.
func (p *pipeline) propose(batch []*request) *flight {
	s := p.s
	var (
		keys  []uint64
		spans [][2]int
		reqs  []*request
		bytes int
	)
	// Plans read this replica's state: a leader just elected may not have
	// applied what earlier terms committed (a member added to a group, a
	// newer read marker), and its plan, which the FSM does not redo, would
	// miss it. So nothing is planned until it has (LEADER_NOT_READY: the
	// router retries). A leader deposed meanwhile says so instead, with
	// the new leader's address.
	if err := s.notPlanning(); err != nil {
		for _, r := range batch {
			r.finish(nil, err)
		}
		return nil
	}
	// The term the plans are made in: the allocator call below may take
	// seconds, and the entry must go into the log in this term, or be
	// planned again.
	planTerm := s.caughtUpTerm.Load()
	planStart := time.Now()
	for i, r := range batch {
		if r.ctx != nil && r.ctx.Err() != nil {
			// Its caller has gone: nothing of it was written (a request
			// planned again after OUT_OF_ORDER, a refusal or a too large
			// entry wrote nothing either), so it need not be.
			p.s.m.abandoned.Inc()
			r.finish(nil, status.FromContextError(r.ctx.Err()).Err())
			continue
		}
		ks, err := r.b.plan(s)
		if err != nil {
			var a *answered
			switch {
			case !errors.As(err, &a):
				p.refuseOnceLeading(r, &OpResult{Status: clusterv1.OpStatus_OP_STATUS_REJECTED, Msg: err.Error(), err: err})
			case a.res.Status == clusterv1.OpStatus_OP_STATUS_REJECTED:
				// A recall or delete refused by this leader's state.
				p.refuseOnceLeading(r, a.res)
			default:
				r.finish(a.res, nil)
			}
			continue
		}
		// An op of a newer store format waits until every replica can
		// apply it (checked before its seqs are allocated).
		if err := s.formatReady(needsFormat(r.b, len(ks))); err != nil {
			r.finish(nil, err)
			continue
		}
		// An op that would change nothing is answered here, once its
		// format gate let it through (so the gate holds it alike).
		if c, ok := r.b.(coverer); ok {
			res, err := c.covered(s)
			if err != nil || res != nil {
				r.finish(res, err)
				continue
			}
		}
		// Keep the entry well inside what Badger takes in one
		// transaction; the rest go into the next entry.
		w := estBytes(r.b, len(ks))
		if len(reqs) > 0 && (len(keys)+len(ks) > maxBatchAppends || bytes+w > maxBatchBytes) {
			p.requeue(batch[i:])
			break
		}
		bytes += w
		spans = append(spans, [2]int{len(keys), len(keys) + len(ks)})
		keys = append(keys, ks...)
		reqs = append(reqs, r)
	}
	s.m.stagePlan.Observe(time.Since(planStart).Seconds())
	if len(reqs) == 0 {
		return nil
	}
	fail := func(err error) *flight {
		failAll(reqs, err)
		return nil
	}
	var seqs []uint64
	if len(keys) > 0 {
		alloc := s.alloc.Load()
		if alloc == nil {
			return fail(status.Error(codes.Unavailable, "store replica is starting; retry shortly"))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		var err error
		seqs, err = alloc.NextBatch(ctx, keys)
		cancel()
		s.m.stageAllocate.Observe(time.Since(start).Seconds())
		if err != nil {
			return fail(status.Errorf(codes.Unavailable, "allocating seqs: %v", status.Convert(err).Message()))
		}
	}
	ops := make([]*clusterv1.StoreOp, len(reqs))
	for j, r := range reqs {
		ops[j] = r.b.build(seqs[spans[j][0]:spans[j][1]])
	}
	data, err := EncodeBatch(&clusterv1.StoreBatch{NowMs: s.now().UnixMilli(), Ops: ops})
	if err != nil {
		return fail(fmt.Errorf("store: encode batch: %w", err))
	}
	// Deposed while allocating, and maybe elected again since: the plans
	// read a state later terms may have changed (a member added), so
	// propose nothing; the router retries, and the retry is planned anew.
	if err := s.notPlanning(); err != nil {
		return fail(err)
	}
	if s.caughtUpTerm.Load() != planTerm {
		return fail(errStillApplying)
	}
	s.m.batchOps.Observe(float64(len(ops)))
	proposed := time.Now()
	fl := &flight{reqs: reqs, f: p.apply(data), proposed: proposed}
	if bugs.Enabled(bugs.AckSendBeforeCommit) {
		ackEarly(reqs, ops)
	}
	return fl
}

func (p *pipeline) completer() {
	defer p.wg.Done()
	for fl := range p.inflight {
		p.complete(fl)
		<-p.slots
	}
}

// complete answers the requests of one entry once it has an outcome.
func (p *pipeline) complete(fl *flight) {
	if err := p.outcome(fl.f); err != nil {
		failAll(fl.reqs, err)
		return
	}
	p.s.m.stageCommit.Observe(time.Since(fl.proposed).Seconds())
	br, ok := fl.f.Response().(*BatchResult)
	switch {
	case !ok:
		failAll(fl.reqs, errors.New("store: FSM returned no result"))
		return
	case br.Halted != nil:
		failAll(fl.reqs, haltedErr(br.Halted))
		return
	case br.Err != nil && len(fl.reqs) > 1:
		// The entry was refused whole (too large for Badger despite
		// the estimate): propose each request in an entry of its own,
		// so only one that is too large by itself fails.
		var again []*request
		for _, r := range fl.reqs {
			if !r.early {
				r.alone = true
				again = append(again, r)
			}
		}
		p.requeue(again)
		return
	case br.Err != nil:
		failAll(fl.reqs, status.Error(codes.InvalidArgument, br.Err.Error()))
		return
	}
	for j, r := range fl.reqs {
		if r.early {
			continue
		}
		res := br.Results[j]
		if res.Status != clusterv1.OpStatus_OP_STATUS_OUT_OF_ORDER {
			r.finish(res, nil)
			continue
		}
		p.s.m.outOfOrder.Inc()
		if r.retries++; r.retries > maxOrderRetries {
			r.finish(res, nil)
			continue
		}
		if err := p.enqueue(r, true); err != nil {
			r.finish(nil, err)
		}
	}
}

// outcome waits for an entry's future. Raft buffers applies (the store
// sets BatchApplyCh) and never answers one still in its buffer when it
// shuts down, so once the pipeline gives up this stops waiting: the entry
// may or may not commit, and its requests get errPipelineClosed (clients
// retry; dedup keeps a retried send single). The waiting goroutine of such
// a future is left behind. A graceful close (settle) first gives Raft,
// still running, up to settleTimeout to answer every entry, so it leaves
// none unless Raft could not answer in that time.
func (p *pipeline) outcome(f raft.ApplyFuture) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-p.abandon:
		select {
		case err := <-done:
			return err
		default:
			return errPipelineClosed
		}
	}
}

// ackEarly answers sends from the proposed ops, before they commit: the
// planted bug AckSendBeforeCommit.
func ackEarly(reqs []*request, ops []*clusterv1.StoreOp) {
	for j, r := range reqs {
		op := ops[j].GetSend()
		if op == nil {
			continue
		}
		resp := &seqdv1.SendResponse{MessageId: op.MessageId, GroupSeq: op.GroupSeq}
		for _, a := range op.Appends {
			if a.User == op.Request.Sender {
				resp.SenderSeq = a.Seq
			} else {
				resp.Deliveries = append(resp.Deliveries, &seqdv1.Delivery{User: a.User, Seq: a.Seq})
			}
		}
		r.early = true
		r.finish(&OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK, Send: resp}, nil)
	}
}

// close stops the pipeline: queued requests fail, proposed ones are
// answered as their entries resolve, until giveUp.
func (p *pipeline) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	queued := p.queue
	p.queue = nil
	p.mu.Unlock()
	close(p.stop)
	failAll(queued, errPipelineClosed)
}

// settle waits, for at most d, until every entry proposed before close
// has its outcome, then gives up on the rest. Call it while Raft still
// runs: Raft answers each entry (committed, or not leader, or leadership
// lost) unless it shuts down first, so the requests get their real
// results and no goroutine is left waiting.
func (p *pipeline) settle(d time.Duration) {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	p.giveUp()
}

// giveUp stops waiting for the outcome of entries still unanswered.
func (p *pipeline) giveUp() { p.abandonOnce.Do(func() { close(p.abandon) }) }

// refuseOnceLeading answers r with refusal, read from this leader's state
// while planning, only once that state is known to be current; the
// refusal is final for the client. A leader just elected may not have
// applied earlier terms' entries (UNAVAILABLE at once, as s.refuse says);
// a leader deposed while paused or cut off, which does not know it yet,
// and a leader whose FSM lags its own commits plan from state that may
// lack what the client saw elsewhere (a message, a group seq). So, on a
// goroutine of its own while the proposer goes on, a read index (verify:
// a quorum round, then the FSM applied up to the commit index it began
// at), and r is planned again; a refusal then is answered as it is. A
// leader that cannot confirm answers verify's error (UNAVAILABLE, with
// the leader's address), which the router retries.
func (p *pipeline) refuseOnceLeading(r *request, refusal *OpResult) {
	fail := func(err error) {
		r.finish(&OpResult{Status: clusterv1.OpStatus_OP_STATUS_REJECTED, Msg: err.Error(), err: err}, nil)
	}
	if err := p.s.stillApplying(); err != nil {
		fail(err)
		return
	}
	if p.verify == nil || r.fresh {
		r.finish(refusal, nil)
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := p.verify(); err != nil {
			fail(err)
			return
		}
		r.fresh = true
		p.requeue([]*request{r})
	}()
}

// wait waits for the pipeline's goroutines; call after giveUp.
func (p *pipeline) wait() { p.wg.Wait() }

// raftErr maps pipeline errors to gRPC statuses.
func (s *Shard) raftErr(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	if !rpcerr.LeaderMoved(err) {
		// No leader to name: leaderAddr may reload the shard map.
		return rpcerr.FromRaft(err, "")
	}
	return rpcerr.FromRaft(err, s.leaderAddr())
}
