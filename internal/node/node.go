// Package node runs one seqd process: its listeners, gRPC server, metrics
// endpoint, data directory and roles (arbiter, allocsvr, gateway).
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/allocsvr"
	"github.com/seqd/seqd/arbiter"
	"github.com/seqd/seqd/internal/backoff"
	"github.com/seqd/seqd/internal/bugs"
	"github.com/seqd/seqd/internal/datadir"
	"github.com/seqd/seqd/internal/gossip"
	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/internal/mclock"
	"github.com/seqd/seqd/internal/nodeid"
	"github.com/seqd/seqd/internal/raftnode"
	"github.com/seqd/seqd/internal/rpcerr"
	"github.com/seqd/seqd/internal/rpcmetrics"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
	"github.com/seqd/seqd/store"
)

// Roles a node can run.
const (
	RoleArbiter  = "arbiter"
	RoleAllocSvr = "allocsvr"
	RoleGateway  = "gateway"
	RoleStore    = "store"
)

// Config configures one node. Zero values take the documented defaults.
type Config struct {
	ID        string
	ClusterID string
	DC        string
	Roles     []string
	DataDir   string

	GRPCAddr   string // listen address for gRPC
	HTTPAddr   string // metrics and health; empty disables
	RaftAddr   string // arbiter only
	GossipAddr string // empty disables gossip

	// AdvertiseHost is the host other nodes reach this one at. The gRPC,
	// Raft and gossip addresses the node tells them are this host (gossip
	// and Raft: its IP) with the listener's own port. Gossip still binds
	// where --gossip-addr says, except that one on every interface binds
	// this host (gossipBind). Empty: each listener's own address, which
	// then must not be every interface (0.0.0.0, ::) wherever other nodes
	// dial it.
	AdvertiseHost string

	GossipProfile gossip.Profile

	// Peers are the initial arbiter voters (arbiter role, first start).
	Peers []arbiter.Peer
	// Join is a running arbiter's gRPC address: this arbiter asks to be
	// added as a voter once it is up (arbiter role, no Peers).
	Join string
	// Arbiters are arbiter gRPC addresses (allocsvr, gateway and store roles).
	Arbiters []string

	// Shard is the message-store shard a store node serves, StorePeers its
	// initial replicas (store role, first start).
	Shard      string
	StorePeers []raftnode.Peer
	// ShardSplits splits the section space into store shards at cluster
	// creation (arbiter role).
	ShardSplits []uint64
	// Store tunables; zero values take the store's defaults.
	WriteFanoutThreshold int
	MaxGroupSize         int
	DedupTTL             time.Duration
	Retention            time.Duration
	ChangeLogRetention   time.Duration
	RateLimit            float64
	HintWindow           time.Duration
	HintBudget           int
	// NoFlushSpread: see store.Config (tests).
	NoFlushSpread bool

	SectionSize uint64
	NumSlots    uint32
	Step        uint64
	Lease       time.Duration

	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	// DrainTimeout bounds an AllocSvr's hand-over on shutdown.
	DrainTimeout time.Duration

	Logger *slog.Logger
	// Registry, if set, receives this node's metrics (the demo shares one
	// across nodes, labelled by node); otherwise the node has its own.
	Registry prometheus.Registerer
	Gatherer prometheus.Gatherer
	Clock    mclock.Clock

	// ArbiterDialOptions are extra dial options for the AllocSvr's
	// connections to arbiters (tests cut links here).
	ArbiterDialOptions []grpc.DialOption

	// Listeners already opened by the caller (tests, the demo), used instead
	// of listening on the addresses above.
	GRPCListener net.Listener
	RaftListener net.Listener
	HTTPListener net.Listener
}

// Has reports whether the node runs role.
func (c *Config) Has(role string) bool { return slices.Contains(c.Roles, role) }

// Validate checks everything that can be checked before binding ports.
func (c *Config) Validate() error {
	var errs []error
	if err := nodeid.Validate(c.ID); err != nil {
		errs = append(errs, fmt.Errorf("--id: %w", err))
	}
	if len(c.Roles) == 0 {
		errs = append(errs, errors.New("--role: no role given; use arbiter, allocsvr, gateway, store or a comma-separated mix"))
	}
	for _, r := range c.Roles {
		if r != RoleArbiter && r != RoleAllocSvr && r != RoleGateway && r != RoleStore {
			errs = append(errs, fmt.Errorf("--role: unknown role %q; use arbiter, allocsvr, gateway or store", r))
		}
	}
	if c.Has(RoleStore) {
		if c.Has(RoleArbiter) {
			errs = append(errs, errors.New("--role: run arbiter and store as separate nodes (each has its own Raft group and --raft-addr)"))
		}
		if c.Shard == "" {
			errs = append(errs, errors.New("--shard: a store node needs the shard it serves, e.g. s1"))
		}
		if c.DataDir == "" {
			errs = append(errs, errors.New("--data: a store node needs a data directory"))
		}
		if c.RaftAddr == "" && c.RaftListener == nil {
			errs = append(errs, errors.New("--raft-addr: a store node needs a Raft address"))
		}
	}
	if c.GRPCAddr == "" && c.GRPCListener == nil {
		errs = append(errs, errors.New("--grpc-addr: empty; every node serves gRPC"))
	}
	if c.Has(RoleArbiter) {
		if c.DataDir == "" {
			errs = append(errs, errors.New("--data: an arbiter needs a data directory"))
		}
		if c.RaftAddr == "" && c.RaftListener == nil {
			errs = append(errs, errors.New("--raft-addr: an arbiter needs a Raft address"))
		}
		if len(c.Peers) > 0 && c.Join != "" {
			errs = append(errs, errors.New("--peers and --join: give one; peers bootstrap a new group, join adds to a running one"))
		}
	}
	if (c.Has(RoleAllocSvr) || c.Has(RoleGateway) || c.Has(RoleStore)) && len(c.Arbiters) == 0 && !c.Has(RoleArbiter) {
		errs = append(errs, errors.New("--arbiters: allocsvr, gateway and store roles need at least one arbiter address"))
	}
	if c.Has(RoleGateway) && len(c.Roles) > 1 {
		errs = append(errs, fmt.Errorf("--role %s: the gateway serves Sequencer, Messages, Routing and Admin for the whole cluster on its gRPC port, where the other roles serve their own; run it as a node of its own", strings.Join(c.Roles, ",")))
	}
	if c.AdvertiseHost != "" {
		if err := nodeid.ValidateHost("--advertise-host", c.AdvertiseHost); err != nil {
			errs = append(errs, err)
		}
	} else {
		errs = append(errs, c.everyInterface()...)
	}
	return errors.Join(errs...)
}

// everyInterface refuses the listeners that bind every interface among
// those whose addresses other nodes are told (the gateway's gRPC and the
// metrics are not). Told "[::]:7100", a node on another host dials
// itself; on one host it happens to work, which hides the mistake until
// the cluster spans hosts.
func (c *Config) everyInterface() []error {
	var errs []error
	check := func(flag, addr string, ln net.Listener) {
		if ln != nil {
			addr = ln.Addr().String()
		}
		if host, _, err := net.SplitHostPort(addr); err == nil && nodeid.Unspecified(host) {
			errs = append(errs, fmt.Errorf("%s %q listens on every interface, and other nodes cannot dial that address; give --advertise-host with the address they reach (or a specific host in %s)", flag, addr, flag))
		}
	}
	if c.Has(RoleArbiter) || c.Has(RoleAllocSvr) || c.Has(RoleStore) {
		check("--grpc-addr", c.GRPCAddr, c.GRPCListener)
	}
	if c.Has(RoleArbiter) || c.Has(RoleStore) {
		check("--raft-addr", c.RaftAddr, c.RaftListener)
	}
	if (c.Has(RoleArbiter) || c.Has(RoleAllocSvr)) && c.GossipAddr != "" {
		check("--gossip-addr", c.GossipAddr, nil)
	}
	return errs
}

// Node is a running seqd process.
type Node struct {
	cfg      Config
	log      *slog.Logger
	dir      *datadir.Dir
	grpcLn   net.Listener
	httpLn   net.Listener
	grpc     *grpc.Server
	http     *http.Server
	health   *health.Server
	arbiter  *arbiter.Arbiter
	alloc    *allocsvr.Server
	store    *store.Shard
	client   *router.Client
	gateway  *router.Gateway
	gatherer prometheus.Gatherer
	reg      prometheus.Registerer
	serveErr chan error
	grpcAdv  string // the gRPC address other nodes are told
	raftAddr string // the Raft address other nodes are told
}

// New validates the config, opens every listener (so a port in use fails
// here, before anything starts), claims the data directory and builds the
// arbiter role. AllocSvr and gateway roles are built in Start, once the
// arbiters can be reached.
func New(cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ClusterID == "" {
		cfg.ClusterID = "seqd"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = mclock.Real
	}
	if cfg.AdvertiseHost != "" && (cfg.Has(RoleArbiter) || cfg.Has(RoleStore) || cfg.GossipAddr != "" && cfg.Has(RoleAllocSvr)) {
		// Raft and gossip advertise the IP the name resolves to: Raft,
		// where it resolves to none, its listener's own address, and an
		// AllocSvr's gossip would fail only when it registers.
		if _, err := resolveHost(cfg.AdvertiseHost); err != nil {
			return nil, err
		}
	}
	if cfg.GossipAddr, err = gossipBind(cfg); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.ID), serveErr: make(chan error, 2)}
	defer func() {
		if err != nil {
			n.closeListeners()
		}
	}()
	if cfg.Registry == nil {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		n.reg, n.gatherer = reg, reg
	} else {
		n.reg, n.gatherer = cfg.Registry, cfg.Gatherer
	}

	n.grpcLn = cfg.GRPCListener
	if n.grpcLn == nil {
		if n.grpcLn, err = listen("gRPC", "--grpc-addr", cfg.GRPCAddr); err != nil {
			return nil, err
		}
	}
	n.grpcAdv = advertise(cfg.AdvertiseHost, n.grpcLn)
	n.httpLn = cfg.HTTPListener
	if n.httpLn == nil && cfg.HTTPAddr != "" {
		if n.httpLn, err = listen("metrics", "--http-addr", cfg.HTTPAddr); err != nil {
			return nil, err
		}
	}
	raftLn := cfg.RaftListener
	if (cfg.Has(RoleArbiter) || cfg.Has(RoleStore)) && raftLn == nil {
		if raftLn, err = listen("Raft", "--raft-addr", cfg.RaftAddr); err != nil {
			return nil, err
		}
		// Ours to close if New fails, whether or not a role's Raft
		// transport took it (closing it twice does no harm). Left open,
		// the port would accept its peers' Raft connections and never
		// answer them, and a peer's replication to this replica would
		// hang on them for its transport timeout.
		defer func() {
			if err != nil {
				raftLn.Close()
			}
		}()
	}
	if cfg.Has(RoleArbiter) || cfg.Has(RoleStore) {
		switch {
		case cfg.AdvertiseHost != "":
			n.raftAddr = advertise(cfg.AdvertiseHost, raftLn)
		case cfg.RaftAddr != "" && !strings.HasSuffix(cfg.RaftAddr, ":0"):
			n.raftAddr = cfg.RaftAddr // a host name stays a name
		default:
			n.raftAddr = raftLn.Addr().String()
		}
	}

	// The roles' configurations are checked before the data directory is
	// claimed: a node that cannot start leaves no identity behind.
	var acfg arbiter.Config
	if cfg.Has(RoleArbiter) {
		acfg = arbiter.Config{
			ID: cfg.ID, ClusterID: cfg.ClusterID, DC: cfg.DC,
			DataDir:  filepath.Join(cfg.DataDir, "arbiter"),
			RaftAddr: n.raftAddr, GRPCAddr: n.grpcAdv,
			GossipAddr: cfg.GossipAddr, GossipAdvertiseHost: cfg.AdvertiseHost, GossipProfile: cfg.GossipProfile,
			Bootstrap:   cfg.Peers,
			SectionSize: cfg.SectionSize, NumSlots: cfg.NumSlots, Step: cfg.Step, Lease: cfg.Lease, ShardSplits: cfg.ShardSplits,
			HeartbeatTimeout: cfg.HeartbeatTimeout, ElectionTimeout: cfg.ElectionTimeout,
			Logger: cfg.Logger, Registry: n.reg, Clock: cfg.Clock,
		}
		if err := acfg.Check(); err != nil {
			return nil, err
		}
	}
	var scfg store.Config
	if cfg.Has(RoleStore) {
		scfg = store.Config{
			ShardID: cfg.Shard, ReplicaID: cfg.ID, ClusterID: cfg.ClusterID, DataDir: filepath.Join(cfg.DataDir, "store"),
			RaftAddr: n.raftAddr, RaftListener: raftLn, GRPCAddr: n.grpcAdv, Peers: cfg.StorePeers, Arbiters: n.arbiterAddrs(),
			WriteFanoutThreshold: cfg.WriteFanoutThreshold, MaxGroupSize: cfg.MaxGroupSize, DedupTTL: cfg.DedupTTL, Retention: cfg.Retention, ChangeLogRetention: cfg.ChangeLogRetention, RateLimit: cfg.RateLimit, HintWindow: cfg.HintWindow, HintBudget: cfg.HintBudget,
			NoFlushSpread:    cfg.NoFlushSpread,
			HeartbeatTimeout: cfg.HeartbeatTimeout, ElectionTimeout: cfg.ElectionTimeout,
			Logger: cfg.Logger, Registry: n.reg,
		}
		if err := scfg.Check(); err != nil {
			return nil, err
		}
	}

	if cfg.DataDir != "" {
		id := datadir.Identity{ClusterID: cfg.ClusterID, NodeID: cfg.ID}
		if cfg.Has(RoleStore) {
			id.Shard = cfg.Shard
		}
		if n.dir, err = datadir.Claim(cfg.DataDir, id); err != nil {
			return nil, err
		}
		if err = n.checkSpace(); err != nil {
			n.dir.Close()
			return nil, err
		}
	}

	rpcm := rpcmetrics.NewServer(n.reg)
	opts := append(rpcm.ServerOptions(),
		grpc.ChainUnaryInterceptor(n.refuseUnary), grpc.ChainStreamInterceptor(n.refuseStream),
		grpc.MaxRecvMsgSize(16<<20),
		rpcerr.ServerCodec(), // with rpcerr.Registrar below
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	n.grpc = grpc.NewServer(opts...)
	n.health = health.NewServer()
	n.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(n.grpc, n.health)
	reflection.Register(n.grpc)
	reg := rpcerr.Registrar(n.grpc) // seqd's own services: a request that does not decode is INVALID_ARGUMENT

	if cfg.Has(RoleArbiter) {
		if n.arbiter, err = arbiter.New(acfg, raftLn); err != nil {
			n.dir.Close()
			return nil, err
		}
		n.arbiter.RegisterServices(reg)
	}
	if cfg.Has(RoleAllocSvr) {
		n.alloc, err = allocsvr.New(allocsvr.Config{
			ID: cfg.ID, ClusterID: cfg.ClusterID, Addr: n.grpcAdv, Arbiters: n.arbiterAddrs(),
			GossipAddr: allocGossip(cfg), GossipAdvertiseHost: cfg.AdvertiseHost, GossipProfile: cfg.GossipProfile, DrainTimeout: cfg.DrainTimeout,
			ArbiterDialOptions: cfg.ArbiterDialOptions,
			Logger:             cfg.Logger, Registry: n.reg, Clock: cfg.Clock,
		})
		if err != nil {
			n.closeRoles()
			return nil, err
		}
		if cfg.Has(RoleArbiter) {
			// The arbiter's Routing answers from the table it keeps; the
			// AllocSvr's copy of it would be a second registration.
			n.alloc.RegisterServices(without(reg, seqdv1.Routing_ServiceDesc.ServiceName))
		} else {
			n.alloc.RegisterServices(reg)
		}
	}
	if cfg.Has(RoleStore) {
		n.store, err = store.New(scfg)
		if err != nil {
			n.closeRoles()
			return nil, err
		}
		n.store.RegisterServices(reg)
	}
	if cfg.Has(RoleGateway) {
		n.gateway = router.NewGateway(n.arbiterAddrs())
		n.gateway.RegisterServices(reg)
	}
	rpcm.Precreate(n.grpc) // every service is registered by now
	return n, nil
}

// without drops the named services from what the roles register on r.
func without(r grpc.ServiceRegistrar, services ...string) grpc.ServiceRegistrar {
	return skipRegistrar{r, services}
}

type skipRegistrar struct {
	grpc.ServiceRegistrar
	skip []string
}

func (s skipRegistrar) RegisterService(d *grpc.ServiceDesc, impl any) {
	if !slices.Contains(s.skip, d.ServiceName) {
		s.ServiceRegistrar.RegisterService(d, impl)
	}
}

// allocGossip gives an AllocSvr sharing a process with an arbiter its own
// gossip port.
func allocGossip(cfg Config) string {
	if cfg.GossipAddr == "" || !cfg.Has(RoleArbiter) {
		return cfg.GossipAddr
	}
	host, _, err := net.SplitHostPort(cfg.GossipAddr)
	if err != nil {
		return ""
	}
	return net.JoinHostPort(host, "0")
}

// advertise returns the address other nodes are told for ln: host with
// ln's port (so a port-0 listener works), or without host ln's own address.
func advertise(host string, ln net.Listener) string {
	if host == "" {
		return ln.Addr().String()
	}
	_, port, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		return ln.Addr().String()
	}
	return net.JoinHostPort(host, port)
}

// gossipBind returns the address gossip binds. With --advertise-host a
// gossip address on every interface binds the advertised host's IP, which
// must be an address of this machine; one with a host of its own binds
// that host. Either way the pool is told the advertised host
// (gossip.Config.AdvertiseHost).
func gossipBind(cfg Config) (string, error) {
	host := cfg.AdvertiseHost
	if host == "" || cfg.GossipAddr == "" || !(cfg.Has(RoleArbiter) || cfg.Has(RoleAllocSvr)) {
		return cfg.GossipAddr, nil
	}
	gh, port, err := net.SplitHostPort(cfg.GossipAddr)
	if err != nil || !nodeid.Unspecified(gh) {
		return cfg.GossipAddr, nil // a malformed one is the roles' to report
	}
	ip, err := resolveHost(host)
	if err != nil {
		return "", err
	}
	addr := net.JoinHostPort(ip, port)
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return "", fmt.Errorf("--gossip-addr %q with --advertise-host %q: gossip on every interface binds only the advertised host, so it binds %s, and this machine cannot (%v); give --advertise-host an address of this machine, or --gossip-addr this machine's own address to bind (gossip still tells other nodes --advertise-host)", cfg.GossipAddr, host, addr, err)
	}
	ln.Close()
	return addr, nil
}

// resolveHost is nodeid.ResolveIP for --advertise-host, saying what to do
// when the name does not resolve.
func resolveHost(host string) (string, error) {
	ip, err := nodeid.ResolveIP(host)
	if err != nil {
		return "", fmt.Errorf("--advertise-host %q: %w; give a name this machine resolves, or an IP address (Raft and gossip advertise the IP it resolves to)", host, err)
	}
	return ip, nil
}

func (n *Node) arbiterAddrs() []string {
	if len(n.cfg.Arbiters) > 0 {
		return n.cfg.Arbiters
	}
	return []string{n.GRPCAddr()}
}

func listen(what, flag, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use") {
			return nil, fmt.Errorf("%s listen %s: the port is already in use (another seqd or another program); pick a free one with %s", what, addr, flag)
		}
		return nil, fmt.Errorf("%s listen %s: %w (check %s)", what, addr, err, flag)
	}
	return ln, nil
}

// GRPCAddr returns the address gRPC is served on.
func (n *Node) GRPCAddr() string { return n.grpcLn.Addr().String() }

// HTTPAddr returns the metrics address, or "".
func (n *Node) HTTPAddr() string {
	if n.httpLn == nil {
		return ""
	}
	return n.httpLn.Addr().String()
}

// Store returns the store role, or nil.
func (n *Node) Store() *store.Shard { return n.store }

// Arbiter returns the arbiter role, or nil.
func (n *Node) Arbiter() *arbiter.Arbiter { return n.arbiter }

// AllocSvr returns the AllocSvr role, or nil.
func (n *Node) AllocSvr() *allocsvr.Server { return n.alloc }

// Health returns nil while every role can serve, or why one cannot: a
// store replica that halted (it met an entry that needs a newer build),
// or a store replica or arbiter whose Raft log write failed in the last
// 30 s (a full or failing disk). /healthz answers 503 with it.
func (n *Node) Health() error {
	if n.store != nil {
		if err := n.store.Halted(); err != nil {
			return err
		}
		if err := n.store.RaftLogErr(); err != nil {
			return err
		}
	}
	if n.arbiter != nil {
		return n.arbiter.RaftLogErr()
	}
	return nil
}

// refuseUnary and refuseStream answer calls a role refuses outright (a
// halted store replica's services) before they reach it.
func (n *Node) refuseUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if n.store != nil {
		if err := n.store.Refusal(info.FullMethod); err != nil {
			return nil, err
		}
	}
	return h(ctx, req)
}

func (n *Node) refuseStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if n.store != nil {
		if err := n.store.Refusal(info.FullMethod); err != nil {
			return err
		}
	}
	return h(srv, ss)
}

// Healthz serves /healthz: "ok" while health returns nil, else 503 with
// its error.
func Healthz(health func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if err := health(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}
}

// Start serves gRPC and metrics, starts the roles, and for the gateway role
// waits until a routing table can be loaded.
func (n *Node) Start(ctx context.Context) error {
	go func() { n.serveErr <- n.grpc.Serve(n.grpcLn) }()
	if n.httpLn != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(n.gatherer, promhttp.HandlerOpts{}))
		mux.Handle("/healthz", Healthz(n.Health))
		bugs.RegisterHTTP(mux) // test-only failpoints; a no-op in release builds
		n.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { n.serveErr <- n.http.Serve(n.httpLn) }()
	}
	if n.arbiter != nil {
		if err := n.arbiter.Start(ctx); err != nil {
			return err
		}
		if n.cfg.Join != "" {
			if err := n.join(ctx); err != nil {
				return err
			}
		}
	}
	if n.alloc != nil {
		if err := n.alloc.Start(ctx); err != nil {
			return err
		}
	}
	if n.store != nil {
		if err := n.store.Start(ctx); err != nil {
			return err
		}
	}
	if n.cfg.Has(RoleGateway) {
		c, err := router.New(ctx, router.Config{Addrs: n.arbiterAddrs(), Logger: n.cfg.Logger})
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		n.client = c
		n.gateway.SetClient(c)
	}
	n.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	n.log.Info("node started", "roles", strings.Join(n.cfg.Roles, ","), "grpc", n.GRPCAddr(), "advertised_grpc", n.grpcAdv, "metrics", n.HTTPAddr())
	return nil
}

// join asks a running arbiter to add this one as a voter.
func (n *Node) join(ctx context.Context) error {
	cc, err := grpc.NewClient(n.cfg.Join, grpcconn.DialOptions()...)
	if err != nil {
		return fmt.Errorf("--join %s: %w", n.cfg.Join, err)
	}
	defer cc.Close()
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req := &seqdv1.JoinArbiterRequest{Id: n.cfg.ID, RaftAddr: n.raftAddr, GrpcAddr: n.grpcAdv, GossipAddr: n.arbiter.GossipAddr()}
	// UNAVAILABLE: no leader yet, or one still catching up after its
	// election; either passes within the timeout.
	policy := backoff.Policy{Base: 50 * time.Millisecond, Max: time.Second}
	for attempt := 0; ; attempt++ {
		_, err = seqdv1.NewAdminClient(cc).JoinArbiter(jctx, req)
		if status.Code(err) != codes.Unavailable || policy.Sleep(jctx, attempt) != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("--join %s: %w", n.cfg.Join, err)
	}
	return nil
}

// Errors returns a channel that receives if a server stops unexpectedly.
func (n *Node) Errors() <-chan error { return n.serveErr }

// Close shuts down in order: the AllocSvr hands its slots over (it still
// serves Release while doing so), the gateway stops, a store replica hands
// its shard's leadership over and ends its Subscribe streams, gRPC stops
// accepting and finishes the calls in progress, the store and the arbiter
// shut Raft down (the arbiter after transferring leadership), then the
// data directory is released.
func (n *Node) Close() error {
	n.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	var errs []error
	if n.alloc != nil {
		errs = append(errs, n.alloc.Close())
	}
	if n.gateway != nil {
		n.gateway.Close()
	}
	if n.client != nil {
		n.client.Close()
	}
	if n.store != nil {
		n.store.Handover()
	}
	stopped := make(chan struct{})
	go func() { n.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		n.grpc.Stop()
	}
	n.closeListeners()
	if n.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		n.http.Shutdown(ctx)
		cancel()
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	if n.arbiter != nil {
		errs = append(errs, n.arbiter.Close())
	}
	n.dir.Close()
	return errors.Join(errs...)
}

// Kill stops the node at once, as a crash would: connections drop, the
// AllocSvr hands nothing over, the arbiter transfers nothing.
func (n *Node) Kill() {
	n.grpc.Stop()
	// Stop only closes listeners Serve has already taken: close ours too,
	// so a restart can bind the port at once.
	n.closeListeners()
	if n.http != nil {
		n.http.Close()
	}
	if n.alloc != nil {
		n.alloc.Kill()
	}
	if n.client != nil {
		n.client.Close()
	}
	if n.store != nil {
		n.store.Kill()
	}
	if n.arbiter != nil {
		n.arbiter.Kill()
	}
	n.dir.Close()
}

// minStoreSpace is the free space a store replica needs in its data dir
// to start: Badger maps its memtable files (64 MiB) and pads up to two
// thirds of one at open, and a write to a mapped page the file system
// cannot back kills the process (SIGBUS) instead of failing.
var minStoreSpace uint64 = 256 << 20

// checkSpace refuses to start a store replica on a nearly full disk, and
// registers the data dir's space gauges (alert SeqdDiskSpaceLow).
func (n *Node) checkSpace() error {
	free, _, err := n.dir.Space()
	if err != nil {
		return err
	}
	if n.cfg.Has(RoleStore) && free < minStoreSpace {
		return fmt.Errorf("data dir %s has %d MiB free; a store replica needs at least %d MiB to start (free space, or move --data to a larger disk)",
			n.dir.Path, free>>20, minStoreSpace>>20)
	}
	space := func(pick func(free, size uint64) uint64) func() float64 {
		return func() float64 {
			free, size, err := n.dir.Space()
			if err != nil {
				return math.NaN()
			}
			return float64(pick(free, size))
		}
	}
	n.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "seqd", Name: "data_dir_free_bytes",
			Help: "Bytes free on the file system of the node's --data (NaN if it cannot be read)."}, space(func(f, _ uint64) uint64 { return f })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "seqd", Name: "data_dir_size_bytes",
			Help: "Size of the file system of the node's --data (NaN if it cannot be read)."}, space(func(_, s uint64) uint64 { return s })))
	return nil
}

func (n *Node) closeRoles() {
	if n.store != nil {
		n.store.Close()
	}
	if n.arbiter != nil {
		n.arbiter.Close()
	}
	n.dir.Close()
}

func (n *Node) closeListeners() {
	for _, l := range []net.Listener{n.grpcLn, n.httpLn} {
		if l != nil {
			l.Close()
		}
	}
}
