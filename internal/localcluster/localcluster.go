// Package localcluster starts a whole seqd cluster inside one process on
// loopback ports: arbiters, AllocSvrs and a gateway. `seqd demo`, the
// in-process tests and `seqbench` all use it, so they start nodes exactly
// the way `seqd start` does.
package localcluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"

	"github.com/seqd/seqd/arbiter"
	"github.com/seqd/seqd/internal/faultnet"
	"github.com/seqd/seqd/internal/loopback"
	"github.com/seqd/seqd/internal/node"
	"github.com/seqd/seqd/internal/raftnode"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

// FastElection is the Raft heartbeat and election timeout with Options.Fast.
const FastElection = 500 * time.Millisecond

// Options describe the cluster. Zero values take defaults.
type Options struct {
	Arbiters  int // default 3
	AllocSvrs int // default 2
	// Host is the loopback address the nodes listen on; default a random
	// one of the cluster's own (internal/loopback).
	Host string
	// GatewayAddr is where the gateway listens; default a free port on the
	// cluster's own loopback address (see internal/loopback).
	// "-" means no gateway.
	GatewayAddr string
	// DataDir holds every node's data; empty means a temporary directory
	// removed by Close.
	DataDir   string
	ClusterID string
	// Fast shortens Raft timings for tests, and skips the store replicas'
	// memtable padding (store.Config.NoFlushSpread).
	Fast        bool
	Lease       time.Duration
	SectionSize uint64
	NumSlots    uint32
	Step        uint64
	Logger      *slog.Logger
	// HTTPAddr, if set, serves every node's metrics (labelled by node).
	HTTPAddr string
	// Gossip enables memberlist between nodes (default on; tests may turn
	// it off with NoGossip).
	NoGossip bool

	// Shards is the number of message-store shards (0 = no store).
	Shards int
	// StoreReplicas per shard (default 3).
	StoreReplicas int
	// ShardSplits are the section boundaries between shards (Shards-1 of
	// them); by default shard i starts at section i*1000.
	ShardSplits []uint64
	// Store tunables passed to every store node.
	WriteFanoutThreshold int
	MaxGroupSize         int
	DedupTTL             time.Duration
	HintWindow           time.Duration
	HintBudget           int
	Retention            time.Duration
	ChangeLogRetention   time.Duration
	RateLimit            float64
}

// Cluster is a running local cluster.
type Cluster struct {
	opts     Options
	host     string // the cluster's own loopback address (internal/loopback)
	tmp      string
	book     addrBook                        // where each listener listens (addrs.go)
	base     *prometheus.Registry            // process-wide collectors
	regs     map[string]*prometheus.Registry // per node; replaced on restart
	mu       sync.Mutex
	links    []*faultnet.Dialer // per AllocSvr, its links to the arbiters
	arbCfg   []node.Config
	storeCfg [][]node.Config
	// Stores[shard][replica] are the message-store replicas.
	Stores    [][]*node.Node
	allocCfg  []node.Config
	Arbiters  []*node.Node
	AllocSvrs []*node.Node
	Gateway   *node.Node
}

// Start brings the cluster up and returns once the gateway (or, without
// one, every AllocSvr) is ready to serve.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Arbiters == 0 {
		opts.Arbiters = 3
	}
	if opts.AllocSvrs == 0 {
		opts.AllocSvrs = 2
	}
	if opts.ClusterID == "" {
		opts.ClusterID = "seqd-local"
	}
	if opts.Shards > 0 && opts.StoreReplicas == 0 {
		opts.StoreReplicas = 3
	}
	if opts.Shards > 1 && opts.ShardSplits == nil {
		for i := 1; i < opts.Shards; i++ {
			opts.ShardSplits = append(opts.ShardSplits, uint64(i)*1000)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{opts: opts, base: prometheus.NewRegistry(), regs: map[string]*prometheus.Registry{}}
	c.base.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if opts.DataDir == "" {
		if c.tmp, err = os.MkdirTemp("", "seqd-local-"); err != nil {
			return nil, err
		}
		c.opts.DataDir = c.tmp
	}
	if err := c.loadAddrs(); err != nil {
		return nil, err
	}
	c.host = cmp.Or(opts.Host, c.book.Host, loopback.Host())
	if c.book.Host != "" && c.host != c.book.Host {
		return nil, fmt.Errorf("localcluster: the data in %s was made on %s, not %s", c.opts.DataDir, c.book.Host, c.host)
	}
	if c.opts.GatewayAddr == "" {
		c.opts.GatewayAddr = c.anyPort()
	}
	defer func() {
		// c, not the result: an error return sets that to nil.
		if err != nil {
			c.Close()
		}
	}()

	// Open the arbiters' ports first: every voter needs the others' addresses.
	peers := make([]arbiter.Peer, opts.Arbiters)
	var grpcLns, raftLns []net.Listener
	for i := range peers {
		id := fmt.Sprintf("arb%d", i+1)
		g, r, err := c.listenNode(id)
		if err != nil {
			return nil, err
		}
		grpcLns, raftLns = append(grpcLns, g), append(raftLns, r)
		peers[i] = arbiter.Peer{ID: id, RaftAddr: r.Addr().String(), GRPCAddr: g.Addr().String()}
		if !opts.NoGossip {
			// memberlist binds its own sockets; reserve a port for it.
			if peers[i].GossipAddr, err = c.freeAddr(id + "/gossip"); err != nil {
				return nil, err
			}
		}
	}
	// Written before any node writes data that names the addresses.
	if err := c.saveAddrs(); err != nil {
		for _, l := range append(grpcLns, raftLns...) {
			l.Close()
		}
		return nil, err
	}
	for i, p := range peers {
		cfg := c.baseConfig(p.ID, node.RoleArbiter)
		cfg.Peers = peers
		cfg.ShardSplits = opts.ShardSplits
		cfg.RaftAddr = p.RaftAddr
		cfg.GRPCAddr = p.GRPCAddr
		cfg.GossipAddr = p.GossipAddr
		cfg.GRPCListener, cfg.RaftListener = grpcLns[i], raftLns[i]
		n, err := c.startNode(ctx, cfg)
		if err != nil {
			for _, l := range append(grpcLns[i+1:], raftLns[i+1:]...) {
				l.Close()
			}
			return nil, fmt.Errorf("arbiter %s: %w", p.ID, err)
		}
		cfg.GRPCListener, cfg.RaftListener = nil, nil
		c.arbCfg = append(c.arbCfg, cfg)
		c.Arbiters = append(c.Arbiters, n)
	}
	for i := 0; i < opts.AllocSvrs; i++ {
		cfg := c.baseConfig(fmt.Sprintf("alloc%d", i+1), node.RoleAllocSvr)
		cfg.GRPCAddr = c.anyPort()
		cfg.DataDir = ""
		link := faultnet.New()
		cfg.ArbiterDialOptions = []grpc.DialOption{grpc.WithContextDialer(link.Dial)}
		c.links = append(c.links, link)
		n, err := c.startNode(ctx, cfg)
		if err != nil {
			return nil, err
		}
		cfg.GRPCAddr = n.GRPCAddr() // a restart comes back on the same address
		c.allocCfg = append(c.allocCfg, cfg)
		c.AllocSvrs = append(c.AllocSvrs, n)
	}
	for sh := 0; sh < opts.Shards; sh++ {
		if err := c.startShard(ctx, fmt.Sprintf("s%d", sh+1)); err != nil {
			return nil, err
		}
	}
	if c.opts.GatewayAddr != "-" {
		cfg := c.baseConfig("gateway", node.RoleGateway)
		cfg.GRPCAddr = c.opts.GatewayAddr
		cfg.DataDir = ""
		cfg.GossipAddr = ""
		if c.Gateway, err = c.startNode(ctx, cfg); err != nil {
			return nil, err
		}
	}
	if err := c.WaitServing(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// startShard starts the replicas of one store shard.
func (c *Cluster) startShard(ctx context.Context, shard string) error {
	n := c.opts.StoreReplicas
	var peers []raftnode.Peer
	var grpcLns, raftLns []net.Listener
	closeRest := func(i int) {
		for _, l := range append(grpcLns[i:], raftLns[i:]...) {
			l.Close()
		}
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%s-r%d", shard, i+1)
		g, r, err := c.listenNode(id)
		if err != nil {
			closeRest(0)
			return err
		}
		grpcLns, raftLns = append(grpcLns, g), append(raftLns, r)
		peers = append(peers, raftnode.Peer{ID: id, Addr: r.Addr().String()})
	}
	if err := c.saveAddrs(); err != nil {
		closeRest(0)
		return err
	}
	var cfgs []node.Config
	var nodes []*node.Node
	for i, p := range peers {
		cfg := c.storeConfig(p.ID, shard, grpcLns[i], raftLns[i])
		cfg.StorePeers = peers
		nd, err := c.startNode(ctx, cfg)
		if err != nil {
			closeRest(i + 1)
			return err
		}
		cfg.GRPCListener, cfg.RaftListener = nil, nil
		cfgs, nodes = append(cfgs, cfg), append(nodes, nd)
	}
	c.mu.Lock()
	c.storeCfg = append(c.storeCfg, cfgs)
	c.Stores = append(c.Stores, nodes)
	c.mu.Unlock()
	return nil
}

// Health returns nil while every running node can serve, or why the
// first that cannot does not (node.Node.Health).
func (c *Cluster) Health() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for sh, nodes := range c.Stores {
		for i, n := range nodes {
			if n == nil {
				continue
			}
			if err := n.Health(); err != nil {
				return fmt.Errorf("%s: %w", c.storeCfg[sh][i].ID, err)
			}
		}
	}
	return nil
}

// Store returns replica i of shard sh (nil while stopped).
func (c *Cluster) Store(sh, i int) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Stores[sh][i]
}

// StoreLeader returns the index of shard sh's leader replica, or -1.
func (c *Cluster) StoreLeader(sh int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, n := range c.Stores[sh] {
		if n != nil && n.Store().IsLeader() {
			return i
		}
	}
	return -1
}

// KillStore stops store replica i of shard sh as a crash would.
func (c *Cluster) KillStore(sh, i int) {
	if n := c.take(&c.Stores[sh][i], c.storeCfg[sh][i].ID); n != nil {
		n.Kill()
	}
}

// StopStore stops store replica i of shard sh gracefully (a leader hands
// over first), as an operator stops a replica to upgrade it.
func (c *Cluster) StopStore(sh, i int) error {
	n := c.take(&c.Stores[sh][i], c.storeCfg[sh][i].ID)
	if n == nil {
		return nil
	}
	return n.Close()
}

// RestartStore starts store replica i of shard sh again with its data.
func (c *Cluster) RestartStore(ctx context.Context, sh, i int) error {
	return c.RestartStoreWith(ctx, sh, i, nil)
}

// RestartStoreWith starts store replica i of shard sh again with its
// data, after change (if not nil) has changed its configuration, as an
// operator restarts a replica with other flags. The change stays for
// later restarts.
func (c *Cluster) RestartStoreWith(ctx context.Context, sh, i int, change func(*node.Config)) error {
	if change != nil {
		change(&c.storeCfg[sh][i])
	}
	n, err := c.startNode(ctx, c.storeCfg[sh][i])
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.Stores[sh][i] = n
	c.mu.Unlock()
	return nil
}

// AddStoreReplica starts a new replica of shard sh, as an operator starts a
// replacement: an empty data directory and no --store-peer, so it
// registers with the arbiters and waits to be added to the shard
// (seqctl replicas add). It returns the replica's index and id.
func (c *Cluster) AddStoreReplica(ctx context.Context, sh int) (int, string, error) {
	return c.AddStoreReplicaWith(ctx, sh, nil)
}

// AddStoreReplicaWith is AddStoreReplica with change applied to the
// replica's configuration (to give it peers, say) before it starts.
func (c *Cluster) AddStoreReplicaWith(ctx context.Context, sh int, change func(*node.Config)) (int, string, error) {
	c.mu.Lock()
	i, shard := len(c.Stores[sh]), c.storeCfg[sh][0].Shard
	c.mu.Unlock()
	id := fmt.Sprintf("%s-r%d", shard, i+1)
	g, r, err := c.listenNode(id)
	if err != nil {
		return 0, "", err
	}
	if err := c.saveAddrs(); err != nil {
		g.Close()
		r.Close()
		return 0, "", err
	}
	cfg := c.storeConfig(id, shard, g, r)
	if change != nil {
		change(&cfg)
	}
	nd, err := c.startNode(ctx, cfg)
	if err != nil {
		g.Close()
		r.Close()
		return 0, "", err
	}
	cfg.GRPCListener, cfg.RaftListener = nil, nil
	c.mu.Lock()
	c.storeCfg[sh] = append(c.storeCfg[sh], cfg)
	c.Stores[sh] = append(c.Stores[sh], nd)
	c.mu.Unlock()
	return i, id, nil
}

// storeConfig is the configuration of store replica id of shard, serving
// on the listeners given, with the cluster's store options (no peers).
func (c *Cluster) storeConfig(id, shard string, grpcLn, raftLn net.Listener) node.Config {
	o := c.opts
	cfg := c.baseConfig(id, node.RoleStore)
	cfg.GossipAddr = ""
	cfg.Shard = shard
	cfg.RaftAddr, cfg.GRPCAddr = raftLn.Addr().String(), grpcLn.Addr().String()
	cfg.GRPCListener, cfg.RaftListener = grpcLn, raftLn
	cfg.WriteFanoutThreshold, cfg.HintWindow, cfg.HintBudget, cfg.Retention, cfg.RateLimit = o.WriteFanoutThreshold, o.HintWindow, o.HintBudget, o.Retention, o.RateLimit
	cfg.MaxGroupSize, cfg.DedupTTL, cfg.ChangeLogRetention = o.MaxGroupSize, o.DedupTTL, o.ChangeLogRetention
	cfg.NoFlushSpread = o.Fast
	return cfg
}

// anyPort is "any free port" on the cluster's loopback address.
func (c *Cluster) anyPort() string { return net.JoinHostPort(c.host, "0") }

func (c *Cluster) baseConfig(id, role string) node.Config {
	o := c.opts
	cfg := node.Config{
		ID: id, ClusterID: o.ClusterID, Roles: []string{role},
		DataDir:       filepath.Join(o.DataDir, id),
		GossipProfile: "local",
		SectionSize:   o.SectionSize, NumSlots: o.NumSlots, Step: o.Step, Lease: o.Lease,
		Logger:       o.Logger,
		DrainTimeout: 5 * time.Second,
	}
	if !o.NoGossip {
		cfg.GossipAddr = c.anyPort()
	}
	if o.Fast {
		// Short, but with headroom for a busy 2-core machine running
		// several test packages at once.
		cfg.HeartbeatTimeout = FastElection
		cfg.ElectionTimeout = FastElection
	}
	for _, a := range c.arbCfg {
		cfg.Arbiters = append(cfg.Arbiters, a.GRPCAddr)
	}
	return cfg
}

func (c *Cluster) startNode(ctx context.Context, cfg node.Config) (*node.Node, error) {
	// A fresh registry per start: a restarted node registers its metrics anew.
	reg := prometheus.NewRegistry()
	c.mu.Lock()
	c.regs[cfg.ID] = reg
	c.mu.Unlock()
	cfg.Registry = prometheus.WrapRegistererWith(prometheus.Labels{"node": cfg.ID}, reg)
	cfg.Gatherer = reg
	n, err := node.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.ID, err)
	}
	if err := n.Start(ctx); err != nil {
		n.Kill()
		return nil, fmt.Errorf("%s: %w", cfg.ID, err)
	}
	// An AllocSvr registers in the background; callers expect a started
	// node to be known to the arbiters.
	if a := n.AllocSvr(); a != nil {
		if err := a.WaitReady(ctx); err != nil {
			n.Kill()
			return nil, err
		}
	}
	return n, nil
}

// Gatherer gathers every running node's metrics, labelled by node.
func (c *Cluster) Gatherer() prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		c.mu.Lock()
		gs := prometheus.Gatherers{c.base}
		for _, r := range c.regs {
			gs = append(gs, r)
		}
		c.mu.Unlock()
		return gs.Gather()
	})
}

// GatewayAddr returns the gateway's gRPC address ("" without a gateway).
func (c *Cluster) GatewayAddr() string {
	if c.Gateway == nil {
		return ""
	}
	return c.Gateway.GRPCAddr()
}

// ArbiterAddrs returns every arbiter's gRPC address.
func (c *Cluster) ArbiterAddrs() []string {
	var out []string
	for _, a := range c.arbCfg {
		out = append(out, a.GRPCAddr)
	}
	return out
}

// DataDir returns the directory holding every node's data.
func (c *Cluster) DataDir() string { return c.opts.DataDir }

// WaitServing waits until every slot has an owner serving it.
func (c *Cluster) WaitServing(ctx context.Context) error {
	for {
		if l := c.Leader(); l != nil {
			st := l.Arbiter().FSM()
			if m := st.Meta(); m != nil {
				unowned := 0
				load := map[string]int{}
				for _, s := range st.Slots() {
					if s.Owner == "" || s.MovingTo != "" {
						unowned++
					}
					load[s.Owner]++
				}
				if unowned == 0 && c.balanced(load) && c.allocsServing() && c.storesServing(m.Shards) {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("local cluster: not every slot is served yet: " + ctx.Err().Error())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// CatchUp refreshes cl until its table is the leader's. A client that
// bootstrapped from a follower may hold an older table for a moment; call
// this before reading ownership from the client's table.
func (c *Cluster) CatchUp(ctx context.Context, cl *router.Client) error {
	for {
		l := c.Leader()
		if l == nil || cl.Table().Version >= l.Arbiter().FSM().RoutingVersion() {
			return nil
		}
		if err := cl.Refresh(ctx); err != nil {
			return fmt.Errorf("refresh the client's routing table: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// balanced reports whether every running AllocSvr owns its share of slots.
func (c *Cluster) balanced(load map[string]int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	lo, hi, n := -1, 0, 0
	for _, a := range c.AllocSvrs {
		if a == nil {
			continue
		}
		l := load[a.AllocSvr().ID()]
		if lo < 0 || l < lo {
			lo = l
		}
		hi = max(hi, l)
		n++
	}
	return n > 0 && hi-lo <= 1
}

// storesServing reports whether every shard has a leader and every replica
// is in the arbiters' shard map.
func (c *Cluster) storesServing(shards []*seqdv1.ShardInfo) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, sh := range c.Stores {
		leader := false
		for _, n := range sh {
			leader = leader || (n != nil && n.Store().IsLeader())
		}
		if !leader || i >= len(shards) || len(shards[i].Replicas) < len(sh) {
			return false
		}
	}
	return true
}

func (c *Cluster) allocsServing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	total := 0
	for _, a := range c.AllocSvrs {
		if a != nil {
			total += a.AllocSvr().ServedSlots()
		}
	}
	if l := c.leaderLocked(); l != nil {
		if m := l.Arbiter().FSM().Meta(); m != nil {
			return total == int(m.NumSlots)
		}
	}
	return false
}

// Leader returns the arbiter node that leads now, or nil.
func (c *Cluster) Leader() *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaderLocked()
}

func (c *Cluster) leaderLocked() *node.Node {
	for _, a := range c.Arbiters {
		if a != nil && a.Arbiter().IsLeader() {
			return a
		}
	}
	return nil
}

// KillAllocSvr stops AllocSvr i as a crash would.
func (c *Cluster) KillAllocSvr(i int) {
	if n := c.take(&c.AllocSvrs[i], c.allocCfg[i].ID); n != nil {
		n.Kill()
	}
}

// StopAllocSvr stops AllocSvr i gracefully (planned hand-over).
func (c *Cluster) StopAllocSvr(i int) error {
	n := c.take(&c.AllocSvrs[i], c.allocCfg[i].ID)
	if n == nil {
		return nil
	}
	return n.Close()
}

// RestartAllocSvr starts AllocSvr i again on its old address.
func (c *Cluster) RestartAllocSvr(ctx context.Context, i int) error {
	n, err := c.startNode(ctx, c.allocCfg[i])
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.AllocSvrs[i] = n
	c.mu.Unlock()
	return nil
}

// CutAllocSvr cuts AllocSvr i off from every arbiter (clients still reach
// it): its lease renewals fail from now on.
func (c *Cluster) CutAllocSvr(i int) { c.links[i].Cut() }

// HealAllocSvr restores AllocSvr i's links to the arbiters.
func (c *Cluster) HealAllocSvr(i int) { c.links[i].Heal() }

// AllocSvr returns AllocSvr node i (nil while stopped).
func (c *Cluster) AllocSvr(i int) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.AllocSvrs[i]
}

// Arbiter returns arbiter node i (nil while stopped).
func (c *Cluster) Arbiter(i int) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Arbiters[i]
}

// KillArbiter stops arbiter i as a crash would.
func (c *Cluster) KillArbiter(i int) {
	if n := c.take(&c.Arbiters[i], c.arbCfg[i].ID); n != nil {
		n.Kill()
	}
}

// take removes the node in *slot (id) from the cluster and returns it
// (nil if it was stopped already). Its metrics leave Gatherer with it, as
// a scrape of a stopped node finds nothing.
func (c *Cluster) take(slot **node.Node, id string) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := *slot
	*slot = nil
	delete(c.regs, id)
	return n
}

// RestartArbiter starts arbiter i again with its data and addresses.
func (c *Cluster) RestartArbiter(ctx context.Context, i int) error {
	n, err := c.startNode(ctx, c.arbCfg[i])
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.Arbiters[i] = n
	c.mu.Unlock()
	return nil
}

// Close stops every node (AllocSvrs hand over first) and removes the
// temporary data directory.
func (c *Cluster) Close() error {
	c.mu.Lock()
	gw, allocs, arbs := c.Gateway, c.AllocSvrs, c.Arbiters
	c.Gateway, c.AllocSvrs, c.Arbiters = nil, nil, nil
	c.mu.Unlock()
	var errs []error
	if gw != nil {
		errs = append(errs, gw.Close())
	}
	// In-process shutdown need not hand slots over: everything stops.
	for _, n := range allocs {
		if n != nil {
			n.Kill()
		}
	}
	c.mu.Lock()
	stores := c.Stores
	c.Stores = nil
	c.mu.Unlock()
	for _, sh := range stores {
		for _, n := range sh {
			if n != nil {
				n.Kill()
			}
		}
	}
	for _, n := range arbs {
		if n != nil {
			n.Kill()
		}
	}
	if c.tmp != "" {
		os.RemoveAll(c.tmp)
	}
	return errors.Join(errs...)
}
