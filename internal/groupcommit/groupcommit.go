// Package groupcommit coalesces concurrent requests into batches, so that
// many callers share one Raft entry and one fsync.
//
// A batch is cut whenever a commit slot is free: under light load every
// request goes alone with no added wait; under heavy load requests queue
// while the previous batches commit and then leave together.
package groupcommit

import (
	"context"
	"errors"
	"sync"
)

// ErrClosed is returned by Do after Close.
var ErrClosed = errors.New("groupcommit: closed")

// CommitFunc commits a batch. It returns one response per request, or an
// error that fails the whole batch.
type CommitFunc[Req, Resp any] func(batch []Req) ([]Resp, error)

type call[Req, Resp any] struct {
	req  Req
	resp Resp
	err  error
	done chan struct{}
}

// Batcher runs CommitFunc over batches of concurrent requests.
type Batcher[Req, Resp any] struct {
	commit   CommitFunc[Req, Resp]
	maxBatch int
	slots    chan struct{} // one token per commit that may run at once
	mu       sync.Mutex
	pending  []*call[Req, Resp]
	kick     chan struct{}
	closed   bool
	quit     chan struct{}
	wg       sync.WaitGroup
}

// New starts a batcher. maxBatch caps requests per batch; maxInflight caps
// batches committing at once (2 lets one batch form while another syncs).
func New[Req, Resp any](maxBatch, maxInflight int, commit CommitFunc[Req, Resp]) *Batcher[Req, Resp] {
	if maxBatch < 1 {
		maxBatch = 1
	}
	if maxInflight < 1 {
		maxInflight = 1
	}
	b := &Batcher[Req, Resp]{
		commit:   commit,
		maxBatch: maxBatch,
		slots:    make(chan struct{}, maxInflight),
		kick:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
	}
	b.wg.Add(1)
	go b.loop()
	return b
}

// Do queues req and waits for its batch to commit. If ctx ends first, Do
// returns ctx.Err() but the request may still commit.
func (b *Batcher[Req, Resp]) Do(ctx context.Context, req Req) (Resp, error) {
	c := &call[Req, Resp]{req: req, done: make(chan struct{})}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		var zero Resp
		return zero, ErrClosed
	}
	b.pending = append(b.pending, c)
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
	select {
	case <-c.done:
		return c.resp, c.err
	case <-ctx.Done():
		var zero Resp
		return zero, ctx.Err()
	}
}

func (b *Batcher[Req, Resp]) loop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.kick:
		case <-b.quit:
			return
		}
		for {
			// Wait for a commit slot before cutting, so requests that arrive
			// meanwhile join this batch.
			select {
			case b.slots <- struct{}{}:
			case <-b.quit:
				return
			}
			b.mu.Lock()
			n := min(len(b.pending), b.maxBatch)
			batch := make([]*call[Req, Resp], n)
			copy(batch, b.pending)
			b.pending = append(b.pending[:0], b.pending[n:]...)
			more := len(b.pending) > 0
			b.mu.Unlock()
			if n == 0 {
				<-b.slots
				break
			}
			b.wg.Add(1)
			go b.run(batch)
			if !more {
				break
			}
		}
	}
}

func (b *Batcher[Req, Resp]) run(batch []*call[Req, Resp]) {
	defer b.wg.Done()
	defer func() { <-b.slots }()
	reqs := make([]Req, len(batch))
	for i, c := range batch {
		reqs[i] = c.req
	}
	resps, err := b.commit(reqs)
	if err == nil && len(resps) != len(batch) {
		err = errors.New("groupcommit: commit returned the wrong number of responses")
	}
	for i, c := range batch {
		if err != nil {
			c.err = err
		} else {
			c.resp = resps[i]
		}
		close(c.done)
	}
}

// Close fails queued requests with ErrClosed and waits for running commits.
func (b *Batcher[Req, Resp]) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	pending := b.pending
	b.pending = nil
	b.mu.Unlock()
	close(b.quit)
	for _, c := range pending {
		c.err = ErrClosed
		close(c.done)
	}
	b.wg.Wait()
}
