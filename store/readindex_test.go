package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
