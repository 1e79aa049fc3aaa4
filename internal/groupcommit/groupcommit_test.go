package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/seqd/seqd/internal/testwait"
)

func (b *Batcher[Req, Resp]) pendingLen() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

// gatedCommit records batches; while gate is non-nil, a commit blocks
// until the gate is closed.
type gatedCommit struct {
	mu      sync.Mutex
	batches [][]int
	gate    chan struct{}
	started chan struct{} // gets a value when a commit starts
	fail    func(batch []int) error
}

func newGatedCommit() *gatedCommit {
	return &gatedCommit{gate: make(chan struct{}), started: make(chan struct{}, 100)}
}

func (g *gatedCommit) commit(batch []int) ([]string, error) {
	g.mu.Lock()
	g.batches = append(g.batches, append([]int(nil), batch...))
	gate := g.gate
	g.mu.Unlock()
	g.started <- struct{}{}
	if gate != nil {
		<-gate
	}
	if g.fail != nil {
		if err := g.fail(batch); err != nil {
			return nil, err
		}
	}
	out := make([]string, len(batch))
	for i, r := range batch {
		out[i] = fmt.Sprint("resp-", r)
	}
	return out, nil
}

func (g *gatedCommit) open() { close(g.gate) }

func (g *gatedCommit) sizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []int
	for _, b := range g.batches {
		out = append(out, len(b))
	}
	return out
}

type outcome struct {
	req  int
	resp string
	err  error
}

// doAll runs Do for each request concurrently and returns a channel of
// outcomes.
func doAll(ctx context.Context, b *Batcher[int, string], reqs []int) <-chan outcome {
	out := make(chan outcome, len(reqs))
	for _, r := range reqs {
		go func() {
			resp, err := b.Do(ctx, r)
			out <- outcome{r, resp, err}
		}()
	}
	return out
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// TestBatchesFormWhileCommitting: with one commit in flight, requests that
// arrive meanwhile leave together in the next batch.
func TestBatchesFormWhileCommitting(t *testing.T) {
	g := newGatedCommit()
	b := New(1000, 1, g.commit)
	defer b.Close()

	first := doAll(context.Background(), b, []int{0})
	<-g.started // request 0 is committing alone
	rest := doAll(context.Background(), b, seq(1, 50))
	testwait.For(t, 5*time.Second, "49 queued requests", func() bool { return b.pendingLen() == 49 })
	g.open()

	got := map[int]string{}
	for range 1 {
		o := <-first
		got[o.req] = o.resp
	}
	for range 49 {
		o := <-rest
		if o.err != nil {
			t.Fatalf("request %d: %v", o.req, o.err)
		}
		got[o.req] = o.resp
	}
	for r := range 50 {
		if want := fmt.Sprint("resp-", r); got[r] != want {
			t.Errorf("request %d got %q, want %q", r, got[r], want)
		}
	}
	if s := g.sizes(); fmt.Sprint(s) != "[1 49]" {
		t.Fatalf("batch sizes = %v, want [1 49]", s)
	}
}

func TestMaxBatchSplits(t *testing.T) {
	g := newGatedCommit()
	b := New(10, 1, g.commit)
	defer b.Close()
	first := doAll(context.Background(), b, []int{0})
	<-g.started
	rest := doAll(context.Background(), b, seq(1, 26))
	testwait.For(t, 5*time.Second, "25 queued requests", func() bool { return b.pendingLen() == 25 })
	g.open()
	<-first
	for range 25 {
		if o := <-rest; o.err != nil || o.resp != fmt.Sprint("resp-", o.req) {
			t.Fatalf("request %d: %q, %v", o.req, o.resp, o.err)
		}
	}
	if s := g.sizes(); fmt.Sprint(s) != "[1 10 10 5]" {
		t.Fatalf("batch sizes = %v, want [1 10 10 5]", s)
	}
}

func TestMaxInflight(t *testing.T) {
	g := newGatedCommit()
	b := New(1, 3, g.commit)
	defer b.Close()
	out := doAll(context.Background(), b, seq(0, 5))
	for range 3 {
		<-g.started
	}
	testwait.For(t, 5*time.Second, "2 queued requests", func() bool { return b.pendingLen() == 2 })
	select {
	case <-g.started:
		t.Fatal("a fourth commit started while three were in flight")
	default:
	}
	g.open()
	for range 5 {
		if o := <-out; o.err != nil {
			t.Fatal(o.err)
		}
	}
}

// TestResponsesRoutedUnderLoad: many callers, real concurrency; each gets
// its own response, and batching happens.
func TestResponsesRoutedUnderLoad(t *testing.T) {
	var mu sync.Mutex
	commits := 0
	b := New(64, 2, func(batch []int) ([]int, error) {
		mu.Lock()
		commits++
		mu.Unlock()
		time.Sleep(50 * time.Microsecond) // an fsync's worth of latency, so callers pile up
		out := make([]int, len(batch))
		for i, r := range batch {
			out[i] = r * 3
		}
		return out, nil
	})
	defer b.Close()
	const workers, each = 32, 200
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				req := w*each + i
				resp, err := b.Do(context.Background(), req)
				if err != nil || resp != req*3 {
					errs <- fmt.Errorf("request %d: got %d, %v", req, resp, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if commits >= workers*each {
		t.Fatalf("%d commits for %d concurrent requests: nothing was batched", commits, workers*each)
	}
	t.Logf("%d requests in %d commits", workers*each, commits)
}

func TestCommitErrorFailsOnlyItsBatch(t *testing.T) {
	errPoison := errors.New("disk on fire")
	g := newGatedCommit()
	g.fail = func(batch []int) error {
		for _, r := range batch {
			if r < 0 {
				return errPoison
			}
		}
		return nil
	}
	b := New(1000, 1, g.commit)
	defer b.Close()
	bad := doAll(context.Background(), b, []int{-1})
	<-g.started
	good := doAll(context.Background(), b, seq(1, 11))
	testwait.For(t, 5*time.Second, "10 queued requests", func() bool { return b.pendingLen() == 10 })
	g.open()
	if o := <-bad; !errors.Is(o.err, errPoison) || o.resp != "" {
		t.Errorf("poisoned request: %q, %v; want the commit error", o.resp, o.err)
	}
	for range 10 {
		if o := <-good; o.err != nil || o.resp != fmt.Sprint("resp-", o.req) {
			t.Errorf("request %d in the next batch: %q, %v", o.req, o.resp, o.err)
		}
	}
	// The batcher keeps working after a failed commit.
	if resp, err := b.Do(context.Background(), 99); err != nil || resp != "resp-99" {
		t.Fatalf("after a failed batch: %q, %v", resp, err)
	}
}

func TestWrongResponseCountFailsBatch(t *testing.T) {
	b := New(10, 1, func(batch []int) ([]int, error) { return []int{}, nil })
	defer b.Close()
	if _, err := b.Do(context.Background(), 1); err == nil {
		t.Fatal("a commit that returned no responses for one request succeeded")
	}
}

func TestCloseFailsPendingRequests(t *testing.T) {
	g := newGatedCommit()
	b := New(1000, 1, g.commit)
	running := doAll(context.Background(), b, []int{0})
	<-g.started
	queued := doAll(context.Background(), b, seq(1, 6))
	testwait.For(t, 5*time.Second, "5 queued requests", func() bool { return b.pendingLen() == 5 })

	closed := make(chan struct{})
	go func() {
		b.Close()
		close(closed)
	}()
	// Queued requests fail at once, while the running commit still blocks.
	for range 5 {
		select {
		case o := <-queued:
			if !errors.Is(o.err, ErrClosed) {
				t.Errorf("queued request %d: %q, %v; want ErrClosed", o.req, o.resp, o.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("queued requests did not fail on Close")
		}
	}
	select {
	case <-closed:
		t.Fatal("Close returned while a commit was still running")
	default:
	}
	g.open()
	if o := <-running; o.err != nil || o.resp != "resp-0" {
		t.Errorf("the running commit's request: %q, %v; want its own result", o.resp, o.err)
	}
	<-closed
	if _, err := b.Do(context.Background(), 7); !errors.Is(err, ErrClosed) {
		t.Fatalf("Do after Close: %v, want ErrClosed", err)
	}
	b.Close() // twice is fine
	if s := g.sizes(); fmt.Sprint(s) != "[1]" {
		t.Fatalf("batches committed = %v, want only [1]", s)
	}
}

func TestContextCancelReturnsPromptly(t *testing.T) {
	g := newGatedCommit()
	b := New(1000, 1, g.commit)
	defer b.Close()
	defer g.open()

	ctx, cancel := context.WithCancel(context.Background())
	inCommit := doAll(ctx, b, []int{0})
	<-g.started
	queued := doAll(ctx, b, []int{1})
	testwait.For(t, 5*time.Second, "1 queued request", func() bool { return b.pendingLen() == 1 })
	cancel()
	for _, ch := range []<-chan outcome{inCommit, queued} {
		select {
		case o := <-ch:
			if !errors.Is(o.err, context.Canceled) {
				t.Errorf("request %d: %q, %v; want context.Canceled", o.req, o.resp, o.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Do did not return after its context was cancelled")
		}
	}

	dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer dcancel()
	start := time.Now()
	if _, err := b.Do(dctx, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do with an expiring context: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Do returned %v after its deadline", d)
	}
}
