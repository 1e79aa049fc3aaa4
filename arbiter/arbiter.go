package arbiter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/seqd/seqd/internal/gossip"
	"github.com/seqd/seqd/internal/groupcommit"
	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/internal/raftnode"
	"github.com/seqd/seqd/internal/rpcerr"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

// Arbiter is one voter of a DC's arbiter group.
type Arbiter struct {
	// drainMu makes a drain's check for another AllocSvr to take the
	// slots and its state change one step, so two drains at once cannot
	// each count the other as the taker.
	drainMu sync.Mutex

	cfg    Config
	log    *slog.Logger
	fsm    *FSM
	m      *metrics
	node   *raftnode.Node
	raft   *raft.Raft
	trans  *raft.NetworkTransport
	gossip *gossip.Pool
	leases *leaseTable
	ops    *groupcommit.Batcher[[]*clusterv1.OwnedSectionOp, []*clusterv1.SectionOpResult]
	conns  *grpcconn.Pool

	// ready is set while this arbiter leads and its FSM has applied
	// everything committed before its term (after the leader barrier).
	// Lease grants read the FSM outside Raft, so they wait for it.
	ready atomic.Bool
	// readyTerm is the term in which ready was set: a leadership lost and
	// regained (LeaderCh may hide it until the loop restarts) must not
	// count as ready before its own barrier.
	readyTerm atomic.Uint64
	// given is the cluster settings the config sets (before defaults);
	// settingsChecked is set once all have been compared with the stored
	// ones, settingsWarned holds the keys already warned about.
	given           clusterSettings
	settingsChecked atomic.Bool
	settingsMu      sync.Mutex
	settingsWarned  map[string]bool

	changed chan struct{} // wakes the leader loop
	stop    chan struct{}
	wg      sync.WaitGroup
	closeMu sync.Mutex
	closed  bool
}

// New builds an arbiter and starts its Raft node. raftLn, if not nil, is
// the already-open Raft listener (otherwise cfg.RaftAddr is listened on).
func New(cfg Config, raftLn net.Listener) (*Arbiter, error) {
	given := givenSettings(cfg)
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Arbiter{
		cfg:     cfg,
		given:   given,
		log:     cfg.Logger.With("component", "arbiter", "node", cfg.ID),
		fsm:     NewFSM(),
		m:       newMetrics(cfg.Registry),
		leases:  newLeaseTable(cfg.Clock, cfg.Lease, cfg.LeaseMargin),
		conns:   grpcconn.NewPool(),
		changed: make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	a.fsm.onChange = func() {
		a.notify()
		a.checkSettings()
	}
	a.ops = groupcommit.New(256, 2, a.commitSectionOps)
	if err := a.setupRaft(raftLn); err != nil {
		return nil, err
	}
	if cfg.GossipAddr != "" {
		g, err := gossip.Start(gossip.Config{Name: gossip.ArbiterName(cfg.ID), Addr: cfg.GossipAddr, AdvertiseHost: cfg.GossipAdvertiseHost, Profile: cfg.GossipProfile, Logger: a.log, OnChange: a.notify})
		if err != nil {
			a.node.Shutdown()
			return nil, err
		}
		a.gossip = g
	}
	return a, nil
}

// Start runs the leadership monitor and the gossip upkeep.
func (a *Arbiter) Start(ctx context.Context) error {
	a.wg.Add(2)
	go a.monitorLeadership()
	go a.observeLeaders()
	if a.gossip != nil {
		a.wg.Add(1)
		go a.maintainGossip()
	}
	return nil
}

// Close shuts down in order: leadership transfer, leader loops, Raft, stores.
func (a *Arbiter) Close() error { return a.shutdown(true) }

// Kill stops at once, as a crash would: no leadership transfer, no goodbye.
func (a *Arbiter) Kill() { a.shutdown(false) }

func (a *Arbiter) shutdown(graceful bool) error {
	a.closeMu.Lock()
	if a.closed {
		a.closeMu.Unlock()
		return nil
	}
	a.closed = true
	a.closeMu.Unlock()

	if graceful && a.raft.State() == raft.Leader && len(a.raft.GetConfiguration().Configuration().Servers) > 1 {
		if err := a.raft.LeadershipTransfer().Error(); err != nil {
			a.log.Info("leadership transfer before shutdown failed", "err", err)
		}
	}
	close(a.stop)
	a.wg.Wait()
	a.ops.Close()
	err := a.node.Shutdown()
	if a.gossip != nil {
		if graceful {
			a.gossip.Close()
		} else {
			a.gossip.Kill()
		}
	}
	a.conns.Close()
	return err
}

func (a *Arbiter) notify() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// FSM exposes the state machine for tests and status pages.
func (a *Arbiter) FSM() *FSM { return a.fsm }

// Raft exposes the Raft node for tests and status pages.
func (a *Arbiter) Raft() *raft.Raft { return a.raft }

// ID returns the arbiter's node id.
func (a *Arbiter) ID() string { return a.cfg.ID }

// RaftLogErr reports a write to this arbiter's Raft log that failed
// lately (raftnode.Node.LogWriteErr), or nil.
func (a *Arbiter) RaftLogErr() error { return a.node.LogWriteErr() }

// IsLeader reports whether this arbiter is the Raft leader.
func (a *Arbiter) IsLeader() bool { return a.raft.State() == raft.Leader }

// GossipAddr returns the gossip address the pool is told, or "".
func (a *Arbiter) GossipAddr() string {
	if a.gossip == nil {
		return ""
	}
	return a.gossip.Addr()
}

// leaderAddr returns the leader's gRPC address and id, if known.
func (a *Arbiter) leaderAddr() (string, string) {
	_, id := a.raft.LeaderWithID()
	if id == "" {
		return "", ""
	}
	if string(id) == a.cfg.ID {
		return a.cfg.GRPCAddr, a.cfg.ID
	}
	if r := a.fsm.Arbiters()[string(id)]; r != nil {
		return r.GrpcAddr, string(id)
	}
	for _, p := range a.cfg.Bootstrap {
		if p.ID == string(id) {
			return p.GRPCAddr, p.ID
		}
	}
	return "", string(id)
}

// apply proposes one command and returns its result, mapping failures to
// gRPC statuses.
func (a *Arbiter) apply(ctx context.Context, t clusterv1.CommandType, payload proto.Message) (*ApplyResult, error) {
	data, err := EncodeCommand(t, payload)
	if err != nil {
		return nil, fmt.Errorf("arbiter: encode %v: %w", t, err)
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return nil, rpcerr.FromRaft(context.DeadlineExceeded, "")
		}
	}
	f := a.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		addr, _ := a.leaderAddr()
		return nil, rpcerr.FromRaft(err, addr)
	}
	res, ok := f.Response().(*ApplyResult)
	if !ok {
		return nil, errors.New("arbiter: FSM returned no result")
	}
	return res, nil
}

// commitSectionOps is the group-commit function: many callers' section ops
// go into one Raft entry.
func (a *Arbiter) commitSectionOps(batch [][]*clusterv1.OwnedSectionOp) ([][]*clusterv1.SectionOpResult, error) {
	var all []*clusterv1.OwnedSectionOp
	for _, ops := range batch {
		all = append(all, ops...)
	}
	a.m.sectionBatch.Observe(float64(len(all)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := a.apply(ctx, clusterv1.CommandType_COMMAND_TYPE_SECTION_OPS, &clusterv1.SectionOpsCommand{Ops: all})
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		return nil, res.Err
	}
	out := make([][]*clusterv1.SectionOpResult, len(batch))
	i := 0
	for b, ops := range batch {
		out[b] = res.SectionResults[i : i+len(ops)]
		for j, op := range ops {
			a.m.sectionOps.WithLabelValues(op.GetOp().GetKind().String(), out[b][j].Status.String()).Inc()
		}
		i += len(ops)
	}
	return out, nil
}

// readyNow reports whether this arbiter leads and its FSM has applied
// every entry committed before its current term.
func (a *Arbiter) readyNow() bool {
	return a.ready.Load() && a.readyTerm.Load() == a.raft.CurrentTerm()
}
