package store

import (
	"errors"
	"testing"
	"time"
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

func TestOutcomeStopsWaitingWhenThePipelineCloses(t *testing.T) {
	p := &pipeline{stop: make(chan struct{})}
	want := errors.New("not leader")
	if err := p.outcome(doneFuture{want}); err != want {
		t.Fatalf("answered future: %v, want %v", err, want)
	}
	time.AfterFunc(20*time.Millisecond, func() { close(p.stop) })
	done := make(chan error, 1)
	go func() { done <- p.outcome(neverFuture{}) }()
	select {
	case err := <-done:
		if err != errPipelineClosed {
			t.Fatalf("unanswered future after close: %v, want errPipelineClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("outcome still waits on a future Raft will never answer")
	}
}
