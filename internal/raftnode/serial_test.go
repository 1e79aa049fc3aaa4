package raftnode

import (
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func tcpTransport(t *testing.T) *raft.NetworkTransport {
	t.Helper()
	tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// A heartbeat must reach Raft through Consumer, the main goroutine's
// channel, never through the fast-path handler Raft installs.
func TestSerialTransportQueuesHeartbeats(t *testing.T) {
	s := newSerialTransport(tcpTransport(t))
	defer s.Close()
	var fast atomic.Int32
	s.SetHeartbeatHandler(func(rpc raft.RPC) {
		fast.Add(1)
		rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
	})
	client := tcpTransport(t)
	defer client.Close()

	heartbeat := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("leader"), Addr: []byte(client.LocalAddr())}, Term: 7}
	type answer struct {
		resp raft.AppendEntriesResponse
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		var a answer
		a.err = client.AppendEntries("peer", s.LocalAddr(), heartbeat, &a.resp)
		got <- a
	}()
	select {
	case rpc := <-s.Consumer():
		req, ok := rpc.Command.(*raft.AppendEntriesRequest)
		if !ok || req.Term != 7 || len(req.Entries) != 0 {
			t.Fatalf("consumer got %#v, want the heartbeat", rpc.Command)
		}
		rpc.Respond(&raft.AppendEntriesResponse{Term: 7, Success: true}, nil)
	case <-time.After(5 * time.Second):
		t.Fatal("the heartbeat never reached Consumer")
	}
	a := <-got
	if a.err != nil || !a.resp.Success || a.resp.Term != 7 {
		t.Fatalf("heartbeat answer %+v, %v", a.resp, a.err)
	}
	if n := fast.Load(); n != 0 {
		t.Fatalf("the fast-path handler ran %d times", n)
	}

	// Other RPCs pass through Consumer as before.
	go func() {
		var resp raft.RequestVoteResponse
		client.RequestVote("peer", s.LocalAddr(), &raft.RequestVoteRequest{Term: 8}, &resp)
	}()
	select {
	case rpc := <-s.Consumer():
		if _, ok := rpc.Command.(*raft.RequestVoteRequest); !ok {
			t.Fatalf("consumer got %#v, want the vote request", rpc.Command)
		}
		rpc.Respond(&raft.RequestVoteResponse{Term: 8}, nil)
	case <-time.After(5 * time.Second):
		t.Fatal("the vote request never reached Consumer")
	}
}

// After Close, a heartbeat nobody will take is refused, not left hanging.
func TestSerialTransportCloseRefusesQueued(t *testing.T) {
	s := newSerialTransport(tcpTransport(t))
	s.SetHeartbeatHandler(nil)
	s.Close()
	done := make(chan raft.RPCResponse, 1)
	s.queue(raft.RPC{Command: &raft.AppendEntriesRequest{Term: 1}, RespChan: done})
	select {
	case r := <-done:
		if r.Error != raft.ErrTransportShutdown {
			t.Fatalf("queued heartbeat after close: %v", r.Error)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("queued heartbeat after close was never answered")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}
