package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seqd/seqd/internal/bench"
)

// preload sends n acknowledged 1:1 messages from concurrency workers as
// fast as they go, retrying none: a failed send is counted and another
// takes its place. It gives up after maxErrors failures. lastSeq, if set,
// learns the newest seq of every inbox written.
func preload(ctx context.Context, api msgAPI, pop population, n, concurrency, bodyBytes int, lastSeq *inboxTops, progress *bench.Progress) (time.Duration, error) {
	maxErrors := int64(max(100, n/100))
	var claimed, done, errs atomic.Int64
	var lastErr atomic.Value
	runID := newRunID()
	start := time.Now()
	stop := make(chan struct{})
	var tick sync.WaitGroup
	tick.Add(1)
	go func() {
		defer tick.Done()
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				d := done.Load()
				progress.Printf("seqbench: preload %s/%s messages (%s msgs/s), errors %d\n", bench.FormatCount(float64(d)), bench.FormatCount(float64(n)),
					bench.FormatCount(float64(d)/time.Since(start).Seconds()), errs.Load())
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, ids := newRand(i), newMsgIDs(runID, i)
			for ctx.Err() == nil && errs.Load() < maxErrors {
				if claimed.Add(1) > int64(n) {
					return
				}
				a, b := pop.pair(r)
				resp, err := api.Send(ctx, pop.directSend(a, b, ids.next(), makeBody(r, bodyBytes, time.Now())))
				if err != nil {
					claimed.Add(-1) // someone sends another in its place
					errs.Add(1)
					lastErr.Store(err.Error())
					continue
				}
				done.Add(1)
				if lastSeq != nil {
					lastSeq.see(a, resp.SenderSeq)
					for _, d := range resp.Deliveries {
						lastSeq.see(d.User-pop.first, d.Seq)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	tick.Wait()
	took := time.Since(start)
	if err := ctx.Err(); err != nil {
		return took, err
	}
	if d := done.Load(); d < int64(n) {
		return took, fmt.Errorf("preload: only %d of %d sends succeeded; %d failed (last: %v)", d, n, errs.Load(), lastErr.Load())
	}
	return took, nil
}

// inboxTops holds the newest seq known per user index.
type inboxTops struct {
	tops []atomic.Uint64
}

func newInboxTops(users uint64) *inboxTops { return &inboxTops{tops: make([]atomic.Uint64, users)} }

func (t *inboxTops) see(i, seq uint64) {
	if i >= uint64(len(t.tops)) {
		return
	}
	for {
		cur := t.tops[i].Load()
		if seq <= cur || t.tops[i].CompareAndSwap(cur, seq) {
			return
		}
	}
}

func (t *inboxTops) top(i uint64) uint64 { return t.tops[i].Load() }
