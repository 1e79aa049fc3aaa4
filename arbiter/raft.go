package arbiter

import (
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/seqd/seqd/internal/raftnode"
)

// instrumentedFSM times every apply.
type instrumentedFSM struct {
	*FSM
	m *metrics
}

func (f instrumentedFSM) Apply(l *raft.Log) interface{} {
	start := time.Now()
	res := f.FSM.Apply(l)
	f.m.applySeconds.Observe(time.Since(start).Seconds())
	f.m.lastIndex.Set(float64(l.Index))
	if r, ok := res.(*ApplyResult); ok && l.Type == raft.LogCommand {
		f.m.applies.WithLabelValues(r.Type.String()).Inc()
	}
	return res
}

func (a *Arbiter) setupRaft(ln net.Listener) error {
	cfg := a.cfg
	var peers []raftnode.Peer
	for _, p := range cfg.Bootstrap {
		peers = append(peers, raftnode.Peer{ID: p.ID, Addr: p.RaftAddr})
	}
	n, err := raftnode.Start(raftnode.Config{
		ID: cfg.ID, Dir: cfg.DataDir, Addr: cfg.RaftAddr, Listener: ln, Bootstrap: peers,
		HeartbeatTimeout: cfg.HeartbeatTimeout, ElectionTimeout: cfg.ElectionTimeout,
		LeaderLeaseTimeout: cfg.LeaderLeaseTimeout, CommitTimeout: cfg.CommitTimeout,
		SnapshotThreshold: cfg.SnapshotThreshold, SnapshotInterval: cfg.SnapshotInterval,
		Logger: a.log,
	}, instrumentedFSM{a.fsm, a.m})
	if err != nil {
		return fmt.Errorf("arbiter: %w", err)
	}
	a.node, a.raft, a.trans = n, n.Raft, n.Transport
	return nil
}
