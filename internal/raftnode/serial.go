package raftnode

import (
	"sync"

	"github.com/hashicorp/raft"
)

// serialTransport is a raft.Transport that hands every RPC, heartbeats
// included, to Raft's main goroutine.
//
// hashicorp/raft answers heartbeats on the transport's goroutine (a fast
// path, so a follower busy on disk still looks alive). A heartbeat with a
// newer term then turns a leader into a follower and raises its term while
// the leader loop may be storing a client's entry: the entry is written
// with the new term at an index where the new leader has another entry of
// that same term, no follower check ever sees the conflict, and the
// replicas apply different commands at that index (hashicorp/raft#695).
// seqjepsen caught this: a store leader paused while proposing and resumed
// as the new leader's heartbeats arrived applied a send its two peers never
// had. Without the fast path every heartbeat waits its turn on the main
// goroutine, behind whatever the node is doing, like any AppendEntries.
type serialTransport struct {
	*raft.NetworkTransport
	out  chan raft.RPC
	done chan struct{}
	once sync.Once
}

func newSerialTransport(t *raft.NetworkTransport) *serialTransport {
	s := &serialTransport{NetworkTransport: t, out: make(chan raft.RPC), done: make(chan struct{})}
	go s.forward()
	return s
}

// forward passes the network transport's RPCs on, one at a time.
func (s *serialTransport) forward() {
	in := s.NetworkTransport.Consumer()
	for {
		select {
		case rpc := <-in:
			select {
			case s.out <- rpc:
			case <-s.done:
				rpc.Respond(nil, raft.ErrTransportShutdown)
				return
			}
		case <-s.done:
			return
		}
	}
}

// Consumer implements raft.Transport.
func (s *serialTransport) Consumer() <-chan raft.RPC { return s.out }

// SetHeartbeatHandler implements raft.Transport. It installs a handler that
// queues the heartbeat for the main goroutine instead of running Raft's.
func (s *serialTransport) SetHeartbeatHandler(func(raft.RPC)) {
	s.NetworkTransport.SetHeartbeatHandler(s.queue)
}

// queue hands rpc to the main goroutine; the transport then waits for the
// answer as it does for any other RPC.
func (s *serialTransport) queue(rpc raft.RPC) {
	select {
	case s.out <- rpc:
	case <-s.done:
		rpc.Respond(nil, raft.ErrTransportShutdown)
	}
}

// Close implements raft.WithClose.
func (s *serialTransport) Close() error {
	s.once.Do(func() { close(s.done) })
	return s.NetworkTransport.Close()
}
