// Package raftnode builds a hashicorp/raft node the way every seqd Raft
// group wants it: raft-boltdb as log and stable store (fsync on),
// FileSnapshotStore, a TCP transport on a listener the caller may have
// opened already (heartbeats answered in order with every other RPC; see
// serialTransport), and bootstrap from a static peer list.
package raftnode

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/seqd/seqd/internal/slogadapt"
)

// Peer is one initial voter.
type Peer struct {
	ID   string
	Addr string // Raft address
}

// Config configures a node.
type Config struct {
	ID       string
	Dir      string
	Addr     string       // Raft address to advertise (and listen on if Listener is nil)
	Listener net.Listener // optional, already open
	// Bootstrap is the initial voter list; used only when Dir holds no state.
	Bootstrap []Peer
	// DeferBootstrap leaves the bootstrap to Node.Bootstrap, for a caller
	// that first checks that the group does not run already. Until then
	// the node has no configuration: it starts no election, grants its
	// vote to any candidate, and a leader that has it as a voter can bring
	// it in (its Bootstrap then does nothing).
	DeferBootstrap bool

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	// MaxAppendEntries caps entries per AppendEntries RPC (0 = raft default).
	MaxAppendEntries int
	// BatchApplyCh buffers Apply calls (up to MaxAppendEntries), so a
	// proposer does not wait for the leader loop to finish its last log
	// write. Apply's timeout then bounds only waiting for room in the
	// buffer.
	BatchApplyCh bool

	Logger *slog.Logger
}

// Node is a running Raft node and what it owns.
type Node struct {
	Raft      *raft.Raft
	Transport *raft.NetworkTransport
	serial    *serialTransport // what Raft uses: Transport without the heartbeat fast path
	store     *logStore
	log       *slog.Logger
	// owed is the configuration a deferred bootstrap will start; empty
	// once done, or when none is owed.
	owed raft.Configuration
}

// streamLayer is a raft.StreamLayer over an already-open listener.
type streamLayer struct {
	net.Listener
	advertise net.Addr
}

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Start opens the stores, bootstraps if this is a fresh node with peers,
// and starts Raft with fsm.
func Start(cfg Config, fsm raft.FSM) (n *Node, err error) {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	set := func(dst *time.Duration, v time.Duration) {
		if v > 0 {
			*dst = v
		}
	}
	set(&rc.HeartbeatTimeout, cfg.HeartbeatTimeout)
	set(&rc.ElectionTimeout, cfg.ElectionTimeout)
	set(&rc.CommitTimeout, cfg.CommitTimeout)
	set(&rc.SnapshotInterval, cfg.SnapshotInterval)
	rc.LeaderLeaseTimeout = min(rc.HeartbeatTimeout, rc.LeaderLeaseTimeout)
	set(&rc.LeaderLeaseTimeout, cfg.LeaderLeaseTimeout)
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.MaxAppendEntries > 0 {
		rc.MaxAppendEntries = cfg.MaxAppendEntries
	}
	rc.BatchApplyCh = cfg.BatchApplyCh
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	rc.Logger = slogadapt.HCLog(logger, "raft")

	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("raft data dir: %w", err)
	}
	n = &Node{log: logger}
	opened := n // the error returns below set n to nil
	defer func() {
		if err != nil {
			opened.closeStores()
		}
	}()
	path := filepath.Join(cfg.Dir, "raft.db")
	bolt, err := openLog(path)
	if err != nil {
		return nil, fmt.Errorf("open raft log %s: %w", path, err)
	}
	n.store = &logStore{BoltStore: bolt}
	removeUnfinishedSnapshots(filepath.Join(cfg.Dir, "snapshots"), logger)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, rc.Logger)
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("raft listen %s: %w", cfg.Addr, err)
		}
	}
	adv, rerr := net.ResolveTCPAddr("tcp", cfg.Addr)
	if rerr != nil || adv.Port == 0 || adv.IP.IsUnspecified() {
		adv, _ = ln.Addr().(*net.TCPAddr)
	}
	n.Transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: &streamLayer{Listener: ln, advertise: adv}, MaxPool: 3, Timeout: 10 * time.Second, Logger: rc.Logger,
		MaxRPCsInFlight: maxRPCsInFlight,
	})
	n.serial = newSerialTransport(n.Transport)
	has, err := raft.HasExistingState(n.store, n.store, snaps)
	if err != nil {
		n.serial.Close()
		return nil, fmt.Errorf("read raft state: %w", err)
	}
	if !has && len(cfg.Bootstrap) > 0 {
		var servers []raft.Server
		for _, p := range cfg.Bootstrap {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
		if cfg.DeferBootstrap {
			n.owed = raft.Configuration{Servers: servers}
		} else if err := raft.BootstrapCluster(rc, n.store, n.store, snaps, n.serial, raft.Configuration{Servers: servers}); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			n.serial.Close()
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
	}
	if n.Raft, err = newRaft(rc, fsm, n.store, snaps, n.serial); err != nil {
		n.serial.Close()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	if has {
		n.checkOwnAddr(rc.LocalID, cfg.Addr, string(n.Transport.LocalAddr()))
	}
	return n, nil
}

// BootstrapOwed reports whether a deferred bootstrap is still to be done
// (Config.DeferBootstrap on a node that started with no state).
func (n *Node) BootstrapOwed() bool { return len(n.owed.Servers) > 0 }

// Bootstrap does a deferred bootstrap. It does nothing if none is owed, or
// if the node has state by now (a leader brought it in meanwhile).
func (n *Node) Bootstrap() error {
	if !n.BootstrapOwed() {
		return nil
	}
	if err := n.Raft.BootstrapCluster(n.owed).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("bootstrap: %w", err)
	}
	n.owed = raft.Configuration{}
	return nil
}

// checkOwnAddr warns when the group's configuration, which this node's
// stored state holds, gives it another address than it now listens at:
// its peers dial that one, and never reach it. A changed --raft-addr (or
// peer list) does not change the stored configuration.
func (n *Node) checkOwnAddr(id raft.ServerID, given, advertised string) {
	f := n.Raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == id && string(s.Address) != given && string(s.Address) != advertised {
			n.log.Warn("this node's Raft address in its group's stored configuration differs from the one it was started with; its peers dial the stored one, so it will not hear from them until the group learns the new one: for a store replica, run seqctl replicas add with its id (it keeps its data); for an arbiter, remove it and join it again with an empty data dir; or start it with the stored address",
				"stored", s.Address, "started_with", given)
		}
	}
}

// newRaft is raft.NewRaft, whose replay of the log panics when an entry
// after the snapshot it restored is missing: as when the newest snapshot
// cannot be read, Raft falls back to an older one, and the log was
// compacted up to the newer. That becomes an error saying what to do.
func newRaft(rc *raft.Config, fsm raft.FSM, store *logStore, snaps raft.SnapshotStore, trans raft.Transport) (r *raft.Raft, err error) {
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		if perr, ok := p.(error); !ok || !errors.Is(perr, raft.ErrLogNotFound) {
			panic(p) // another fault (the FSM's restore, say): not this one
		}
		r, err = nil, fmt.Errorf("this node's Raft state cannot be replayed (%v after the snapshot it restored; its newest snapshot may be damaged): rebuild it from its peers with an empty data dir", p)
	}()
	return raft.NewRaft(rc, fsm, store, store, snaps, trans)
}

// openLog opens the Raft log store and reads its bounds. bbolt panics on
// some damaged files ("invalid freelist page"), and reading a file cut
// shorter than its pages say faults on the mapped memory (SIGBUS): both
// become an error that names the file, instead of a crash.
func openLog(path string) (s *raftboltdb.BoltStore, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("the file is damaged (%v): restore it, or rebuild this node from its peers with an empty data dir", r)
		}
	}()
	if s, err = raftboltdb.New(raftboltdb.Options{Path: path}); err != nil {
		return nil, err
	}
	// Touch what a start reads first: the first and the last entry.
	first, err := s.FirstIndex()
	if err == nil {
		var last uint64
		if last, err = s.LastIndex(); err == nil && last > 0 {
			var l raft.Log
			if err = s.GetLog(first, &l); err == nil {
				err = s.GetLog(last, &l)
			}
		}
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// removeUnfinishedSnapshots deletes the directories of snapshots that
// were being written when the node stopped, or whose write failed (Raft
// leaves those behind when it cannot flush them, as on a full disk): no
// snapshot is in progress before Raft starts, and Raft never reads them.
func removeUnfinishedSnapshots(dir string, log *slog.Logger) {
	tmps, _ := filepath.Glob(filepath.Join(dir, "*.tmp"))
	for _, t := range tmps {
		if err := os.RemoveAll(t); err != nil {
			log.Warn("cannot remove an unfinished snapshot", "dir", t, "err", err)
			continue
		}
		log.Info("removed an unfinished snapshot", "dir", t)
	}
}

// maxRPCsInFlight turns off hashicorp/raft's pipelined replication: each
// follower gets one AppendEntries at a time, of up to MaxAppendEntries
// entries. In v1.8.0 the pipeline can deadlock. Its decoder returns when a
// follower refuses an entry (one that restarted without what was in
// flight) or answers a newer term; if the send loop then makes one more
// send before it sees that, the send waits for good on a queue nobody
// reads. That follower gets heartbeats but no entries from then on, and
// the leader's Shutdown, which waits for the loop, hangs
// (hashicorp/raft#612; grafana/pyroscope#5518 turned pipelining off for
// the same reason). The synchronous path has no such queue. It costs no
// throughput measurable on this project's benchmark machine
// (docs/benchmarks.md, "Replication without the pipeline").
const maxRPCsInFlight = 1

// shutdownWait bounds how long Shutdown waits for Raft's goroutines. With
// pipelining off (maxRPCsInFlight) none is known to stay behind; this is a
// safety net, so a stop cannot hang on a Raft goroutine stuck on a channel:
// the transport and stores are closed anyway.
var shutdownWait = 10 * time.Second

// Shutdown stops Raft and closes its transport and stores.
func (n *Node) Shutdown() error {
	f := n.Raft.Shutdown()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(shutdownWait):
		n.log.Error("raft shutdown still waiting; closing its transport and log store anyway (the stuck goroutine stays behind)",
			"waited", shutdownWait)
	}
	n.serial.Close()
	n.closeStores()
	return err
}

func (n *Node) closeStores() {
	if n.store != nil {
		n.store.Close()
	}
}

// LeaderID returns the current leader's server id, or "".
// Log reads the log entry at index into l (raft.ErrLogNotFound once the
// log was compacted past it).
func (n *Node) Log(index uint64, l *raft.Log) error { return n.store.GetLog(index, l) }

// logWriteErrWindow is how long a failed write to the Raft log or its
// stable store counts against the node's health.
const logWriteErrWindow = 30 * time.Second

// LogWriteErr returns the last failed write to this node's Raft log or
// stable store if it failed within logWriteErrWindow, else nil. Raft only
// logs such a failure and goes on (a follower refuses the entries, a
// leader steps down): without this a node that cannot write, as on a full
// disk, looked healthy.
func (n *Node) LogWriteErr() error {
	w := n.store.lastErr.Load()
	if w == nil || time.Since(w.at) > logWriteErrWindow {
		return nil
	}
	return fmt.Errorf("raft log: a write failed %v ago: %w", time.Since(w.at).Round(time.Second), w.err)
}

// logStore is the Raft log and stable store, remembering its last failed
// write.
type logStore struct {
	*raftboltdb.BoltStore
	lastErr atomic.Pointer[writeErr]
}

type writeErr struct {
	err error
	at  time.Time
}

func (s *logStore) note(err error) error {
	if err != nil {
		s.lastErr.Store(&writeErr{err: err, at: time.Now()})
	}
	return err
}

func (s *logStore) StoreLog(l *raft.Log) error         { return s.note(s.BoltStore.StoreLog(l)) }
func (s *logStore) StoreLogs(ls []*raft.Log) error     { return s.note(s.BoltStore.StoreLogs(ls)) }
func (s *logStore) Set(k, v []byte) error              { return s.note(s.BoltStore.Set(k, v)) }
func (s *logStore) SetUint64(k []byte, v uint64) error { return s.note(s.BoltStore.SetUint64(k, v)) }

func (n *Node) LeaderID() string {
	_, id := n.Raft.LeaderWithID()
	return string(id)
}
