package raftnode

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// countFSM counts applied entries; its Restore fails when refuse is set.
type countFSM struct {
	n      int
	refuse bool
}

func (f *countFSM) Apply(*raft.Log) interface{} { f.n++; return nil }

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return countSnap{}, nil }

func (f *countFSM) Restore(rc io.ReadCloser) error {
	rc.Close()
	if f.refuse {
		return errors.New("this FSM cannot read that snapshot")
	}
	return nil
}

type countSnap struct{}

func (countSnap) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (countSnap) Release()                             {}

func startSingle(dir string, fsm raft.FSM) (*Node, error) {
	return Start(Config{ID: "n1", Dir: dir, Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler),
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond}, fsm)
}

// When Raft cannot start (here: the FSM refuses every snapshot on disk),
// Start returns the error and closes the log store it opened, so the
// directory can be opened again.
func TestStartFailureClosesStores(t *testing.T) {
	dir := t.TempDir()
	n, err := startSingle(dir, &countFSM{})
	if err != nil {
		t.Fatal(err)
	}
	// Bootstrap with the address the listener got.
	cfg := raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: n.Transport.LocalAddr()}}}
	if err := n.Raft.BootstrapCluster(cfg).Error(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for n.Raft.State() != raft.Leader {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := n.Raft.Apply([]byte("x"), time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if err := n.Raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}

	_, err = startSingle(dir, &countFSM{refuse: true})
	if err == nil || !strings.Contains(err.Error(), "start raft") {
		t.Fatalf("Start with an FSM that refuses the snapshot: %v, want a start error", err)
	}
	done := make(chan error, 1)
	go func() {
		n, err := startSingle(dir, &countFSM{})
		if err == nil {
			err = n.Shutdown()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Start after a failed start: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start after a failed start hung: the failed start left the log store open")
	}
}
