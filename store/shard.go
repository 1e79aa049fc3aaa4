package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/internal/nodeid"
	"github.com/seqd/seqd/internal/raftnode"
	"github.com/seqd/seqd/internal/rpcerr"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

// Defaults of a store shard.
const (
	DefaultWriteFanoutThreshold = 500
	DefaultDedupTTL             = 24 * time.Hour
	DefaultRecallWindow         = 2 * time.Minute
	DefaultHintWindow           = 500 * time.Millisecond
	// DefaultHintBudget is the members one hint window tells (20,000 hint
	// events a second with the default window): a group of 10,000 still
	// gets its whole round in one window, and a 90,000-member group in
	// constant use left other users' sends on its shard a p50 of 0.1-0.2 s
	// on the development machine (2 cores, three replicas), where
	// unbounded it was 5 s (docs/benchmarks.md, "Huge groups").
	DefaultHintBudget = 10_000
	// DefaultChangeLogRetention is how long the change log keeps an entry
	// when the configuration does not say: a peer DC's replication that
	// falls further behind needs a full copy instead.
	DefaultChangeLogRetention = 7 * 24 * time.Hour
	// DefaultMaxGroupSize keeps a group's record, and every answer
	// carrying its member list (up to about 25 bytes a member), inside
	// gRPC's default 4 MiB message limit.
	DefaultMaxGroupSize = 100_000
)

// Config configures one replica of one shard.
type Config struct {
	ShardID   string
	ReplicaID string
	ClusterID string
	DataDir   string

	RaftAddr     string
	RaftListener net.Listener
	// GRPCAddr is this replica's advertised gRPC address.
	GRPCAddr string
	// Peers are the shard's initial voters (this one included), by replica
	// id and Raft address; used on first start only.
	Peers []raftnode.Peer
	// Arbiters are arbiter gRPC addresses: the allocator and shard map.
	Arbiters []string

	Limits Limits
	// WriteFanoutThreshold: groups with more members use read fanout.
	WriteFanoutThreshold int
	// MaxGroupSize bounds one group's members. The leader checks it before
	// proposing, against the state it has applied, and (store format 9)
	// every replica checks it again as an add applies, so concurrent adds
	// cannot together overshoot it.
	MaxGroupSize int
	// DedupTTL is how long a (sender, client_msg_id) is remembered.
	DedupTTL     time.Duration
	RecallWindow time.Duration
	// Retention removes inbox events older than this; 0 keeps them forever.
	Retention time.Duration
	// ChangeLogRetention removes change-log entries applied longer ago than
	// this (and than Retention, when that is shorter), once the dedup sweep
	// has passed them; 0 takes DefaultChangeLogRetention.
	ChangeLogRetention time.Duration
	// HintWindow: a read-fanout group's members get at most one hint per
	// window.
	HintWindow time.Duration
	// HintBudget bounds the members one hint window tells, over all
	// groups (0 takes DefaultHintBudget): a round it cuts off goes on in
	// the next windows.
	HintBudget int
	// RateLimit caps requests per second per client (0 = no limit).
	RateLimit float64
	RateBurst int

	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	// NoFlushSpread skips padding the memtable at open (padMemtable), which
	// keeps replicas sharing a host from flushing at once. Tests set it
	// (localcluster's Fast): the padding writes about a memtable's worth
	// of throw-away keys over a shard's three replicas at each start,
	// seconds of CPU under the race detector.
	NoFlushSpread bool

	Logger   *slog.Logger
	Registry prometheus.Registerer
	// Now is the leader's clock for batch timestamps (tests move it).
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Limits == (Limits{}) {
		c.Limits = DefaultLimits
	}
	if c.WriteFanoutThreshold == 0 {
		c.WriteFanoutThreshold = DefaultWriteFanoutThreshold
	}
	if c.MaxGroupSize == 0 {
		c.MaxGroupSize = DefaultMaxGroupSize
	}
	if c.DedupTTL == 0 {
		c.DedupTTL = DefaultDedupTTL
	}
	if c.RecallWindow == 0 {
		c.RecallWindow = DefaultRecallWindow
	}
	if c.HintWindow == 0 {
		c.HintWindow = DefaultHintWindow
	}
	if c.HintBudget == 0 {
		c.HintBudget = DefaultHintBudget
	}
	if c.ChangeLogRetention == 0 {
		c.ChangeLogRetention = DefaultChangeLogRetention
	}
	if c.RateBurst == 0 {
		c.RateBurst = int(2 * c.RateLimit)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ClusterID == "" {
		c.ClusterID = "seqd"
	}
}

// Validate checks the configuration and says what to fix.
func (c *Config) Validate() error {
	var errs []error
	if c.ShardID == "" {
		errs = append(errs, errors.New("store: shard id is empty; set --shard (e.g. s1)"))
	}
	if err := nodeid.Validate(c.ReplicaID); err != nil {
		errs = append(errs, fmt.Errorf("store: %w", err))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("store: data dir is empty; set --data"))
	}
	if c.RaftAddr == "" && c.RaftListener == nil {
		errs = append(errs, errors.New("store: raft address is empty; set --raft-addr"))
	}
	if c.GRPCAddr == "" {
		errs = append(errs, errors.New("store: gRPC address is empty"))
	}
	if len(c.Arbiters) == 0 {
		errs = append(errs, errors.New("store: no arbiter addresses; set --arbiters"))
	}
	if !(c.RateLimit >= 0) || math.IsInf(c.RateLimit, 1) {
		errs = append(errs, fmt.Errorf("store: rate limit %v: want a number of requests per second, 0 for none (--rate-limit)", c.RateLimit))
	}
	if c.Retention < 0 {
		errs = append(errs, fmt.Errorf("store: retention %v is negative; 0 keeps events forever (--retention)", c.Retention))
	} else if c.Retention > 0 && c.Retention < time.Second {
		errs = append(errs, fmt.Errorf("store: retention %v: want at least 1s, or 0 to keep events forever (--retention)", c.Retention))
	}
	if c.ChangeLogRetention < 0 {
		errs = append(errs, fmt.Errorf("store: change-log retention %v is negative; 0 for the default, %v (--change-log-retention)", c.ChangeLogRetention, DefaultChangeLogRetention))
	} else if c.ChangeLogRetention > 0 && c.ChangeLogRetention < time.Second {
		errs = append(errs, fmt.Errorf("store: change-log retention %v: want at least 1s, or 0 for the default, %v (--change-log-retention)", c.ChangeLogRetention, DefaultChangeLogRetention))
	}
	if c.WriteFanoutThreshold < 0 {
		errs = append(errs, fmt.Errorf("store: write fanout threshold %d is negative (--write-fanout-threshold)", c.WriteFanoutThreshold))
	}
	if c.HintBudget < 0 {
		errs = append(errs, fmt.Errorf("store: hint budget %d is negative; 0 for the default, %d (--hint-budget)", c.HintBudget, DefaultHintBudget))
	}
	if c.MaxGroupSize < 0 {
		errs = append(errs, fmt.Errorf("store: max group size %d is negative (--max-group-size)", c.MaxGroupSize))
	}
	if c.DedupTTL != 0 && c.DedupTTL < time.Second {
		errs = append(errs, fmt.Errorf("store: dedup TTL %v: want at least 1s, so that a client's retries find their first send (--dedup-ttl; 0 for the default, %v)", c.DedupTTL, DefaultDedupTTL))
	}
	if len(c.Peers) > 0 {
		seen := map[string]bool{}
		for _, p := range c.Peers {
			// The other replicas dial it at this address.
			if err := nodeid.ValidateAddr("raft_addr", p.Addr); err != nil {
				errs = append(errs, fmt.Errorf("store: --store-peer %s: %w", p.ID, err))
			}
			if seen[p.ID] {
				errs = append(errs, fmt.Errorf("store: replica %q appears twice in the initial replicas (--store-peer)", p.ID))
			}
			seen[p.ID] = true
		}
		if !seen[c.ReplicaID] {
			errs = append(errs, fmt.Errorf("store: the initial replicas do not include this one (%q) (--store-peer)", c.ReplicaID))
		}
	}
	return errors.Join(errs...)
}

// Shard is one replica of one message-store shard.
type Shard struct {
	cfg Config
	// changeMu holds one Raft configuration change at a time (membership.go).
	changeMu sync.Mutex
	// shardPicks: shard id to the *atomic.Uint32 of shardPick.
	shardPicks sync.Map
	log        *slog.Logger
	m          *metrics
	fsm        *FSM
	node       *raftnode.Node
	// alloc is the allocator client (and routing table), set by Start.
	alloc atomic.Pointer[router.Client]
	// caughtUp: this replica leads and has applied every entry committed
	// before its term (its first barrier returned).
	caughtUp atomic.Bool
	// caughtUpTerm is the term of the barrier that set caughtUp.
	caughtUpTerm atomic.Uint64
	// formats is what this replica, while it leads, last heard of the
	// shard's replicas' store formats (formatLoop); nil otherwise.
	formats    atomic.Pointer[shardFormats]
	formatKick chan struct{} // asks formatLoop to poll now (buffer 1)
	// outboxErrLogged is when deliverOutbox last logged that it cannot
	// read the outbox (only the leader loop's goroutine uses it).
	outboxErrLogged time.Time
	// outboxFrom and outboxHeld are deliverOutbox's pass over the outbox
	// (only the leader loop's goroutine uses them; a new term starts a
	// pass): where the next round reads from (nil: the start), and what
	// this pass delivers no more to.
	outboxFrom []byte
	outboxHeld *outboxHold
	// outboxRefreshed is when a failed delivery last reloaded the routing
	// table (refreshForOutbox; the leader loop's goroutine only).
	outboxRefreshed time.Time
	// expiryAfter is the last group hintGroups ran an expiry-only round
	// for: the next window's start there, so that every group gets its
	// turn (only the leader loop's goroutine uses it).
	expiryAfter uint64
	// hintAfter is the last group with new messages a hint window served:
	// the next window starts after it (the budget may stop a window).
	hintAfter uint64
	// expiryFirst: the current hint window serves groups with only an
	// expired count to tell before those with new messages (every other
	// window; orderForHints).
	expiryFirst bool
	// hinting holds, per read-fanout group whose hint round a failed
	// chunk or the window's budget left unfinished, the round and the
	// members its applied chunks hinted: the next window's round skips
	// them, so that no member gets the same hint twice from this leader
	// (only the leader loop's goroutine uses it; a new term starts it
	// empty). A new leader does not know the round, and a chunk whose
	// outcome was lost is not counted as applied: either can hint a
	// member again, which adds an event and changes no count.
	hinting map[uint64]*unfinishedHints

	pipe  *pipeline
	reads *readRounds // leader reads' read indexes (readIndex)
	cmds  commands    // what read-index rounds found in the log
	subs  *hub
	conns *grpcconn.Pool
	limit *rateLimiter

	// members caches group membership for planning sends; an applied
	// entry that changes a group's membership drops it.
	members    sync.Map // group id -> *clusterv1.GroupRecord
	membersMu  sync.Mutex
	membersGen uint64 // bumped (under membersMu) by every applied entry that changed groups

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
	// lifeMu orders Start's loops after a shutdown that a halt may begin
	// at any time (closing: shutdown has begun).
	lifeMu  sync.Mutex
	closing bool
	ready   chan struct{} // closed when New has returned
	failed  bool          // New failed (set before ready is closed)
}

// Check validates c as New will see it, defaults filled in, without
// changing c: callers check before they claim a data directory.
func (c Config) Check() error {
	c.setDefaults()
	return c.Validate()
}

// New opens the replica's Badger state and starts its Raft node.
func New(cfg Config) (*Shard, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Shard{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "store", "shard", cfg.ShardID, "replica", cfg.ReplicaID),
		subs:  newHub(),
		conns: grpcconn.NewPool(),
		limit: newRateLimiter(cfg.RateLimit, cfg.RateBurst),
		stop:  make(chan struct{}),
		ready: make(chan struct{}),

		formatKick: make(chan struct{}, 1),
	}
	// Every store metric carries its shard, so dashboards and alerts
	// (deploy/prometheus) can tell the shards' replicas apart.
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"shard": cfg.ShardID}, cfg.Registry)
	s.m = newMetrics(reg)
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("store: data dir: %w", err)
	}
	format := uint32(buildFormat)
	if replicaFormat != nil {
		format = replicaFormat(cfg.ReplicaID)
	}
	phase := flushPhase(cfg.ReplicaID, cfg.Peers)
	if cfg.NoFlushSpread {
		phase = 0
	}
	fsm, err := openFSM(filepath.Join(cfg.DataDir, "badger"), s.log, phase, format)
	if err != nil {
		return nil, err
	}
	s.fsm = fsm
	registerFSM(reg, fsm)
	fsm.notify = s.applied
	fsm.onHalt = s.halt
	fsm.observe = func(ops int, d time.Duration) { s.m.applySeconds.Observe(d.Seconds()) }
	s.node, err = raftnode.Start(raftnode.Config{
		ID: cfg.ReplicaID, Dir: filepath.Join(cfg.DataDir, "raft"), Addr: cfg.RaftAddr, Listener: cfg.RaftListener,
		// Start bootstraps, once it has checked that the shard does not
		// run already (bootstrap).
		Bootstrap: cfg.Peers, DeferBootstrap: true,
		HeartbeatTimeout: cfg.HeartbeatTimeout, ElectionTimeout: cfg.ElectionTimeout,
		CommitTimeout: 2 * time.Millisecond, MaxAppendEntries: 256, SnapshotThreshold: 16384, SnapshotInterval: time.Minute,
		// The proposer hands an entry over and goes on to plan the next
		// one while the leader loop writes the log (1.11x the sends in
		// docs/benchmarks.md).
		BatchApplyCh: true,
		Logger:       s.log,
	}, fsm)
	if err != nil {
		s.failed = true
		close(s.ready)
		fsm.Close()
		if herr := fsm.Halted(); herr != nil {
			// Raft could not restore a snapshot this build cannot read.
			return nil, herr
		}
		return nil, fmt.Errorf("store: %w", err)
	}
	s.reads = newReadRounds(s.timedReadIndexRound, s.stop)
	s.pipe = newPipeline(s)
	close(s.ready)
	return s, nil
}

// replicaFormat, set only by tests, gives replicas a store format other
// than this build's (an older or newer build in a mixed shard).
var replicaFormat func(replicaID string) uint32

// halt stops a replica whose FSM halted: it hands leadership over if it
// leads (a leader that cannot apply must not lead) and stops its Raft
// node. It stays a voter in the shard's configuration, so the shard
// tolerates one failure fewer until it is upgraded and back. Every call to
// its services answers UNAVAILABLE (Refusal); the process and its other
// roles run on, and /healthz and seqd_store_halted report it.
func (s *Shard) halt(error) {
	s.m.halted.Set(1)
	go func() { // not on the FSM goroutine, which Raft's shutdown waits for
		<-s.ready // Raft applies entries before New has finished
		if !s.failed {
			s.shutdown(true)
		}
	}()
}

// Halted returns why this replica stopped applying entries, or nil.
func (s *Shard) Halted() error { return s.fsm.Halted() }

// RaftLogErr reports a write to this replica's Raft log that failed
// lately (raftnode.Node.LogWriteErr), or nil.
func (s *Shard) RaftLogErr() error { return s.node.LogWriteErr() }

// applied runs after every committed entry: membership caches drop the
// groups it changed, and subscribers of the users it touched wake up. Nil
// lists (after a snapshot restore) mean everything.
func (s *Shard) applied(users, groups []uint64) {
	if groups != nil || users == nil {
		s.membersMu.Lock()
		s.membersGen++
		if users == nil && groups == nil {
			s.members.Clear()
		}
		for _, g := range groups {
			s.members.Delete(g)
		}
		s.membersMu.Unlock()
	}
	s.subs.notify(users, groups)
}

// groupMembers returns a group's membership for planning a send.
func (s *Shard) groupMembers(g uint64) (*clusterv1.GroupRecord, error) {
	if v, ok := s.members.Load(g); ok {
		return v.(*clusterv1.GroupRecord), nil
	}
	s.membersMu.Lock()
	gen := s.membersGen
	s.membersMu.Unlock()
	rec, err := s.fsm.Group(g)
	if err != nil {
		return nil, err
	}
	// Cache it only if no entry that changed groups was applied while it
	// was read: that entry's invalidation may already have run, and the
	// record read before it would then stay cached for good.
	s.membersMu.Lock()
	if s.membersGen == gen {
		s.members.Store(g, rec)
	}
	s.membersMu.Unlock()
	return rec, nil
}

// FSM exposes the state machine to tests and tools.
func (s *Shard) FSM() *FSM { return s.fsm }

// Raft exposes the Raft node to tests.
func (s *Shard) Raft() *raft.Raft { return s.node.Raft }

// IsLeader reports whether this replica leads its shard.
func (s *Shard) IsLeader() bool { return s.node.Raft.State() == raft.Leader }

// inLeaderContact reports whether this replica leads, or follows a leader
// it heard from within two heartbeat timeouts, and so gets the shard's
// entries as they commit (a follower still catching up, or installing a
// snapshot, gets them late all the same). A leader cut off from its
// followers steps down within its lease timeout. A Subscribe stream
// served without contact says maybe_stale.
func (s *Shard) inLeaderContact() bool {
	r := s.node.Raft
	if r.State() == raft.Leader {
		return true
	}
	if addr, _ := r.LeaderWithID(); addr == "" {
		return false
	}
	return time.Since(r.LastContact()) < 2*r.ReloadableConfig().HeartbeatTimeout
}

func (s *Shard) now() time.Time { return s.cfg.Now() }

// Start connects to the allocator, bootstraps the shard's Raft
// configuration if this replica is new and has --store-peer (and the shard
// does not run already), registers this replica in the shard map, and runs
// the leader-only loops whenever this replica leads.
func (s *Shard) Start(ctx context.Context) error {
	c, err := router.New(ctx, router.Config{Addrs: s.cfg.Arbiters, Logger: s.cfg.Logger})
	if err != nil {
		return fmt.Errorf("store: allocator: %w", err)
	}
	s.lifeMu.Lock()
	if s.closing {
		s.lifeMu.Unlock()
		c.Close()
		return nil // halted while starting; the node runs on and reports it
	}
	s.alloc.Store(c) // shutdown closes it from here on
	s.lifeMu.Unlock()
	err = s.bootstrap(ctx)
	if err == nil {
		err = s.register(ctx)
	}
	if err != nil {
		if herr := s.Halted(); herr != nil {
			// It halted while starting (replaying an entry that needs a
			// newer build): the node runs on and reports it.
			return nil
		}
		return err
	}
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if s.closing {
		return nil // halted meanwhile; shutdown has waited for the loops already
	}
	s.wg.Add(1)
	go s.monitorLeadership()
	return nil
}

// register records this replica's address in the arbiters' shard map.
func (s *Shard) register(ctx context.Context) error {
	err := s.callArbiters(ctx, "register replica", func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := clusterv1.NewArbiterClient(cc).RegisterStoreReplica(ctx, &clusterv1.RegisterStoreReplicaRequest{
			ClusterId: s.cfg.ClusterID, Shard: s.cfg.ShardID, ReplicaId: s.cfg.ReplicaID, Addr: s.cfg.GRPCAddr})
		return err
	})
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	s.alloc.Load().Refresh(ctx)
	return nil
}

// leaderTable returns the shard map as the arbiter leader has it, once it
// has applied its whole log; any arbiter's own may be older (one just
// restarted from a snapshot), and lack replicas that registered since.
// Arbiters of builds from before GetRoutingTableRequest.from_leader answer
// from their own state.
func (s *Shard) leaderTable(ctx context.Context) (*seqdv1.RoutingTable, error) {
	var t *seqdv1.RoutingTable
	err := s.callArbiters(ctx, "read the shard map", func(ctx context.Context, cc *grpc.ClientConn) error {
		resp, err := seqdv1.NewRoutingClient(cc).GetRoutingTable(ctx, &seqdv1.GetRoutingTableRequest{FromLeader: true})
		t = resp.GetTable()
		return err
	})
	return t, err
}

// callArbiters calls each arbiter in turn until one answers call,
// retrying those that are UNAVAILABLE (an election, a leader catching up)
// or slow for up to 50 rounds; any other error is final. Its errors start
// with what.
func (s *Shard) callArbiters(ctx context.Context, what string, call func(context.Context, *grpc.ClientConn) error) error {
	var last error
	for attempt := 0; attempt < 50; attempt++ {
		for _, a := range s.cfg.Arbiters {
			cc, err := s.conns.Get(a)
			if err != nil {
				last = err
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err = call(rctx, cc)
			cancel()
			if err == nil {
				return nil
			}
			last = err
			if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
				return fmt.Errorf("%s: %w", what, err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s: %w", what, last)
}

// Close stops the loops, hands leadership over if leading, and shuts Raft
// and Badger down.
func (s *Shard) Close() error { return s.shutdown(true) }

// Kill stops at once, as a crash would.
func (s *Shard) Kill() { s.shutdown(false) }

// Handover readies a graceful stop while the replica still serves: a
// leader hands leadership to a follower, and Subscribe streams end
// (UNAVAILABLE; their clients reconnect from their checkpoints at another
// replica). Call it before the gRPC server's graceful stop, which waits
// for every call in progress: otherwise it waits out its time limit on
// the streams, with this replica still leading and unreachable for new
// calls, and every write in the shard waits with it. A graceful Close
// calls it too; a second call finds nothing left to do.
func (s *Shard) Handover() {
	if s.IsLeader() {
		if err := s.node.Raft.LeadershipTransfer().Error(); err != nil {
			s.log.Info("handing leadership over before stopping", "err", err)
		}
	}
	s.subs.close()
}

// settleTimeout bounds how long a graceful close waits for the entries it
// proposed to commit or fail. Raft answers them within an election's time
// while it runs (a leader that lost its quorum steps down and fails them).
const settleTimeout = 5 * time.Second

func (s *Shard) shutdown(graceful bool) error {
	var err error
	s.once.Do(func() {
		if graceful {
			s.Handover()
		}
		s.lifeMu.Lock()
		s.closing = true
		s.lifeMu.Unlock()
		close(s.stop)
		s.wg.Wait()
		s.pipe.close()
		if graceful {
			s.pipe.settle(settleTimeout)
		}
		s.pipe.giveUp()
		s.subs.close()
		err = s.node.Shutdown()
		s.pipe.wait()
		if c := s.alloc.Load(); c != nil {
			c.Close()
		}
		s.conns.Close()
		if cerr := s.fsm.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

// table returns the routing table (with the shard map) the replica knows.
func (s *Shard) table() *seqdv1.RoutingTable {
	c := s.alloc.Load()
	if c == nil {
		return nil
	}
	return c.Table()
}

// shardOf returns the shard owning key's section.
func shardOf(t *seqdv1.RoutingTable, key uint64) *seqdv1.ShardInfo {
	if t == nil || t.SectionSize == 0 {
		return nil
	}
	sec := key / t.SectionSize
	for _, sh := range t.Shards {
		if sec >= sh.FirstSection && (sh.EndSection == 0 || sec < sh.EndSection) {
			return sh
		}
	}
	return nil
}

// isLocal reports whether key's section belongs to this shard.
func (s *Shard) isLocal(key uint64) bool {
	sh := shardOf(s.table(), key)
	return sh != nil && sh.Id == s.cfg.ShardID
}

// replicaAddr returns the gRPC address of one of this shard's replicas.
func (s *Shard) replicaAddr(id string) string {
	if id == s.cfg.ReplicaID {
		return s.cfg.GRPCAddr
	}
	for _, sh := range s.table().GetShards() {
		if sh.Id == s.cfg.ShardID {
			for _, r := range sh.Replicas {
				if r.Id == id {
					return r.Addr
				}
			}
		}
	}
	return ""
}

// leaderAddr returns the shard leader's gRPC address, if known.
func (s *Shard) leaderAddr() string {
	id := s.node.LeaderID()
	if id == "" {
		return ""
	}
	return s.peerAddr(context.Background(), id)
}

// peerAddr is replicaAddr, reloading the shard map once (for up to a
// second) if id is not in it: a replica that registered after the map was
// loaded.
func (s *Shard) peerAddr(ctx context.Context, id string) string {
	addr := s.replicaAddr(id)
	if c := s.alloc.Load(); addr == "" && c != nil {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		c.Refresh(ctx)
		cancel()
		addr = s.replicaAddr(id)
	}
	return addr
}

// leaderConn returns a connection to the shard leader, if it is not us.
func (s *Shard) leaderConn() (*grpc.ClientConn, string, error) {
	addr := s.leaderAddr()
	if addr == "" || addr == s.cfg.GRPCAddr {
		return nil, "", errNoLeader
	}
	cc, err := s.conns.Get(addr)
	return cc, addr, err
}

var errNoLeader = errors.New("store: no leader known")

// shardConn returns a connection to the first replica of the shard owning
// key; that replica forwards to its leader what needs the leader.
func (s *Shard) shardConn(key uint64) (*grpc.ClientConn, shardCall, error) {
	sh := shardOf(s.table(), key)
	if sh == nil || len(sh.Replicas) == 0 {
		return nil, shardCall{}, fmt.Errorf("store: no shard with replicas owns key %d", key)
	}
	i := s.shardPick(sh.Id).Load()
	cc, err := s.conns.Get(sh.Replicas[int(i%uint32(len(sh.Replicas)))].Addr)
	return cc, shardCall{sh.Id, i}, err
}

// shardCall is the shard a call went to, and its pick then.
type shardCall struct {
	shard string
	pick  uint32
}

// shardPick is which replica of shard id this replica's calls to that
// shard go to (modulo its replicas); shardFailed moves it on.
func (s *Shard) shardPick(id string) *atomic.Uint32 {
	p, _ := s.shardPicks.LoadOrStore(id, new(atomic.Uint32))
	return p.(*atomic.Uint32)
}

// shardFailed notes that call failed for want of an answer (the replica
// down, or one not yet a voter): the next call goes to the shard's next
// replica. Calls that failed at once move it on once.
func (s *Shard) shardFailed(call shardCall, err error) {
	if c := status.Code(err); call.shard != "" && (c == codes.Unavailable || c == codes.DeadlineExceeded) {
		s.shardPick(call.shard).CompareAndSwap(call.pick, call.pick+1)
	}
}

// timelineCount asks the group's shard how many messages its timeline holds.
func (s *Shard) timelineCount(ctx context.Context, group, upTo, user uint64) (*clusterv1.TimelineCountResponse, error) {
	if s.isLocal(GroupKeyBit | group) {
		resp, err := s.fsm.TimelineCount(group, upTo, user)
		if err != nil {
			return nil, groupErr(err)
		}
		return resp, nil
	}
	cc, sh, err := s.shardConn(GroupKeyBit | group)
	if err != nil {
		return nil, err
	}
	resp, err := clusterv1.NewStoreNodeClient(cc).TimelineCount(ctx, &clusterv1.TimelineCountRequest{GroupId: group, UpToGseq: upTo, User: user})
	s.shardFailed(sh, err)
	return resp, err
}

// flushPhase is the fraction of a memtable a replica pads at open (see
// padMemtable): its place among the shard's initial replicas sorted by id,
// over their number (0, 1/3 and 2/3 for three). A replica that is not
// among them picks its place by a hash of its id.
func flushPhase(id string, peers []raftnode.Peer) float64 {
	ids := make([]string, 0, len(peers))
	for _, p := range peers {
		ids = append(ids, p.ID)
	}
	slices.Sort(ids)
	if i, found := slices.BinarySearch(ids, id); found {
		return float64(i) / float64(len(ids))
	}
	n := uint32(max(len(ids)+1, 3))
	h := fnv.New32a()
	h.Write([]byte(id))
	return float64(h.Sum32()%n) / float64(n)
}

// stillApplying is errStillApplying while this leader has not applied
// every entry committed before its term (they may change a plan read
// from its state), nil after: the pipeline plans nothing before
// (propose), and answers it at once where a read index would wait. The
// barrier that set caughtUp proves the catch-up for its own term only: a
// leader deposed and elected again before monitorLeadership cleared the
// flag must take another (a bare shard in the pipeline's tests has no
// Raft node, and no terms).
func (s *Shard) stillApplying() error {
	if s.caughtUp.Load() && (s.node == nil || s.caughtUpTerm.Load() == s.node.Raft.CurrentTerm()) {
		return nil
	}
	return errStillApplying
}

// notPlanning is stillApplying's refusal for a write, or NOT_LEADER, with
// the new leader's address, at a leader deposed meanwhile.
func (s *Shard) notPlanning() error {
	err := s.stillApplying()
	if err != nil && s.node != nil && !s.IsLeader() {
		err = s.raftErr(raft.ErrNotLeader)
	}
	return err
}

// errStillApplying: a leader just elected, not caught up with the entries
// of earlier terms; the client retries at it.
var errStillApplying = rpcerr.LeaderNotReady("the shard leader was just elected and is still applying earlier entries; retry")
