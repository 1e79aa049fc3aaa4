package arbiter

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/seqd/seqd/internal/slogadapt"
)

// streamLayer is a raft.StreamLayer over a listener the caller opened, so a
// node can open all its ports first and fail early on one that is taken.
type streamLayer struct {
	net.Listener
	advertise net.Addr
}

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

func (s *streamLayer) Addr() net.Addr { return s.advertise }

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
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.Logger = slogadapt.HCLog(a.log, "raft")

	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("arbiter: data dir: %w", err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db")})
	if err != nil {
		return fmt.Errorf("arbiter: open raft log %s: %w", filepath.Join(cfg.DataDir, "raft.db"), err)
	}
	a.store = store
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, rc.Logger)
	if err != nil {
		return fmt.Errorf("arbiter: snapshot store: %w", err)
	}
	if ln == nil {
		ln, err = net.Listen("tcp", cfg.RaftAddr)
		if err != nil {
			return fmt.Errorf("arbiter: raft listen %s: %w", cfg.RaftAddr, err)
		}
	}
	adv, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil || adv.Port == 0 || adv.IP.IsUnspecified() {
		adv, _ = ln.Addr().(*net.TCPAddr)
	}
	a.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  &streamLayer{Listener: ln, advertise: adv},
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  rc.Logger,
	})

	has, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		return fmt.Errorf("arbiter: read raft state: %w", err)
	}
	if !has && len(cfg.Bootstrap) > 0 {
		var servers []raft.Server
		for _, p := range cfg.Bootstrap {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
		}
		if err := raft.BootstrapCluster(rc, store, store, snaps, a.trans, raft.Configuration{Servers: servers}); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("arbiter: bootstrap: %w", err)
		}
	}
	r, err := raft.NewRaft(rc, instrumentedFSM{a.fsm, a.m}, store, store, snaps, a.trans)
	if err != nil {
		return fmt.Errorf("arbiter: start raft: %w", err)
	}
	a.raft = r
	return nil
}
