package router

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/rpcerr"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// pending is one caller's keys waiting in a batch.
type pending struct {
	keys    []uint64
	version uint64
	seqs    []uint64
	hdr     *seqdv1.ResponseHeader
	err     error
	done    chan struct{}
}

// inflight is one message sent on the stream, awaiting its response.
type inflight struct {
	calls []*pending
}

// batcher coalesces concurrent calls to one AllocSvr into NextBatch
// messages on a NextStream. A batch leaves as soon as a send slot is free:
// under load, calls queue while earlier messages are in flight and leave
// together; alone, a call waits at most the batch window.
type batcher struct {
	cc       *grpc.ClientConn
	maxKeys  int
	window   time.Duration
	queue    chan *pending
	slots    chan struct{}
	quit     chan struct{}
	quitOnce sync.Once

	mu     sync.Mutex
	stream seqdv1.Sequencer_NextStreamClient
	cancel context.CancelFunc
	nextID uint64
	wait   map[uint64]*inflight
}

func newBatcher(cc *grpc.ClientConn, maxKeys, maxInflight int, window time.Duration) *batcher {
	b := &batcher{
		cc:      cc,
		maxKeys: maxKeys,
		window:  window,
		queue:   make(chan *pending, 4096),
		slots:   make(chan struct{}, maxInflight),
		quit:    make(chan struct{}),
		wait:    make(map[uint64]*inflight),
	}
	go b.loop()
	return b
}

// do queues keys and waits for their seqs.
func (b *batcher) do(ctx context.Context, keys []uint64, version uint64) ([]uint64, *seqdv1.ResponseHeader, error) {
	select {
	case <-b.quit:
		return nil, nil, errBatcherClosed
	default:
	}
	p := &pending{keys: keys, version: version, done: make(chan struct{})}
	select {
	case b.queue <- p:
	case <-ctx.Done():
		return nil, nil, status.FromContextError(ctx.Err()).Err()
	case <-b.quit:
		return nil, nil, errBatcherClosed
	}
	// The seqs, if they come after the caller or the batcher gave up, are
	// dropped: a gap, never a repeat. (A call queued as the batcher
	// closed may find its loop gone: close is its answer.)
	select {
	case <-p.done:
		return p.seqs, p.hdr, p.err
	case <-ctx.Done():
		return nil, nil, status.FromContextError(ctx.Err()).Err()
	case <-b.quit:
		return nil, nil, errBatcherClosed
	}
}

var errBatcherClosed = status.Error(codes.Unavailable, ErrClosed.Error())

func (b *batcher) close() {
	b.quitOnce.Do(func() { close(b.quit) })
	b.mu.Lock()
	if b.cancel != nil {
		b.cancel()
	}
	b.mu.Unlock()
}

func (b *batcher) loop() {
	var timer *time.Timer
	// held is a call that would have pushed a batch past maxKeys: it
	// starts the next batch.
	var held *pending
	for {
		first := held
		held = nil
		if first == nil {
			select {
			case first = <-b.queue:
			case <-b.quit:
				b.drainQueue()
				return
			}
		}
		batch := []*pending{first}
		n := len(first.keys)
		join := func(p *pending) bool {
			if n+len(p.keys) > b.maxKeys {
				held = p
				return false
			}
			batch = append(batch, p)
			n += len(p.keys)
			return true
		}
		// Take whatever is already queued.
	drain:
		for n < b.maxKeys && held == nil {
			select {
			case p := <-b.queue:
				join(p)
			default:
				break drain
			}
		}
		// Wait for a send slot; calls that queue meanwhile join the next
		// batch. If a slot is free at once and the batch is small, give
		// others up to the window to join.
		select {
		case b.slots <- struct{}{}:
			if b.window > 0 && n < b.maxKeys && len(batch) == 1 && held == nil {
				if timer == nil {
					timer = time.NewTimer(b.window)
				} else {
					timer.Reset(b.window)
				}
			wait:
				for n < b.maxKeys && held == nil {
					select {
					case p := <-b.queue:
						join(p)
					case <-timer.C:
						break wait
					}
				}
				if !timer.Stop() {
					select {
					case <-timer.C:
					default:
					}
				}
			}
		case <-b.quit:
			fail(batch, status.Error(codes.Unavailable, ErrClosed.Error()))
			if held != nil {
				fail([]*pending{held}, status.Error(codes.Unavailable, ErrClosed.Error()))
			}
			b.drainQueue()
			return
		}
		b.send(batch)
	}
}

func (b *batcher) drainQueue() {
	for {
		select {
		case p := <-b.queue:
			fail([]*pending{p}, status.Error(codes.Unavailable, ErrClosed.Error()))
		default:
			return
		}
	}
}

func fail(batch []*pending, err error) {
	for _, p := range batch {
		p.err = err
		close(p.done)
	}
}

// send writes one message; the send slot is returned when its response
// arrives or the stream breaks.
func (b *batcher) send(batch []*pending) {
	req := &seqdv1.NextBatchRequest{}
	for _, p := range batch {
		req.Keys = append(req.Keys, p.keys...)
		if p.version > req.RoutingVersion {
			req.RoutingVersion = p.version
		}
	}
	b.mu.Lock()
	st := b.stream
	if st == nil {
		// No stream: open one without the lock (it may take a while).
		b.mu.Unlock()
		var err error
		if st, err = b.openStream(); err != nil {
			<-b.slots
			fail(batch, err)
			return
		}
		b.mu.Lock()
	}
	if b.stream != st {
		// It broke meanwhile (recv saw it end): the batch goes nowhere.
		b.mu.Unlock()
		<-b.slots
		fail(batch, status.Error(codes.Unavailable, "stream to AllocSvr broke as it opened"))
		return
	}
	b.nextID++
	req.Id = b.nextID
	b.wait[req.Id] = &inflight{calls: batch}
	b.mu.Unlock()
	if err := st.Send(req); err != nil {
		b.breakStream(st, status.Errorf(codes.Unavailable, "stream to AllocSvr broke: %v", err))
	}
}

// streamOpenTimeout bounds opening a stream: an AllocSvr that accepts
// connections but does not answer (a paused process) would otherwise
// hold the batch, and the batcher, for gRPC's whole connect timeout.
const streamOpenTimeout = 5 * time.Second

// openStream opens a stream (send calls it, without b.mu, when there is
// none). Only the loop's goroutine sends, so one opens at a time; close
// cancels an open under way.
func (b *batcher) openStream() (seqdv1.Sequencer_NextStreamClient, error) {
	b.mu.Lock()
	select {
	case <-b.quit:
		b.mu.Unlock()
		return nil, status.Error(codes.Unavailable, ErrClosed.Error())
	default:
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.mu.Unlock()
	timer := time.AfterFunc(streamOpenTimeout, cancel)
	st, err := seqdv1.NewSequencerClient(b.cc).NextStream(ctx)
	if !timer.Stop() && err == nil {
		err = context.DeadlineExceeded
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err() // closed while it opened
	}
	if err != nil {
		cancel()
		b.cancel = nil
		return nil, status.Errorf(codes.Unavailable, "open stream to AllocSvr: %v", err)
	}
	b.stream = st
	go b.recv(st)
	return st, nil
}

func (b *batcher) recv(st seqdv1.Sequencer_NextStreamClient) {
	for {
		resp, err := st.Recv()
		if err != nil {
			b.breakStream(st, status.Errorf(codes.Unavailable, "stream to AllocSvr broke: %v", err))
			return
		}
		b.mu.Lock()
		f := b.wait[resp.Id]
		delete(b.wait, resp.Id)
		b.mu.Unlock()
		if f == nil {
			continue
		}
		<-b.slots
		deliver(f.calls, resp)
	}
}

// deliver splits a response among the calls of its batch.
func deliver(calls []*pending, resp *seqdv1.NextBatchResponse) {
	var err error
	if e := resp.Error; e != nil {
		if e.RoutingTable != nil || codes.Code(e.Code) == codes.FailedPrecondition {
			err = rpcerr.NotOwner(e.RoutingTable, "%s", e.Message)
		} else {
			err = status.Error(codes.Code(e.Code), e.Message)
		}
	} else {
		total := 0
		for _, p := range calls {
			total += len(p.keys)
		}
		if len(resp.Seqs) != total {
			err = status.Errorf(codes.Internal, "AllocSvr answered %d seqs for %d keys", len(resp.Seqs), total)
		}
	}
	i := 0
	for _, p := range calls {
		if err != nil {
			p.err = err
		} else {
			p.seqs = resp.Seqs[i : i+len(p.keys) : i+len(p.keys)]
			i += len(p.keys)
		}
		p.hdr = resp.Header
		close(p.done)
	}
}

// breakStream fails every message in flight on st and forgets st, so the
// next batch opens a new stream.
func (b *batcher) breakStream(st seqdv1.Sequencer_NextStreamClient, err error) {
	b.mu.Lock()
	if b.stream != st {
		b.mu.Unlock()
		return
	}
	b.stream = nil
	if b.cancel != nil {
		b.cancel()
		b.cancel = nil
	}
	waiting := b.wait
	b.wait = make(map[uint64]*inflight)
	b.mu.Unlock()
	for _, f := range waiting {
		<-b.slots
		fail(f.calls, err)
	}
}
