package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/seqd/seqd/internal/cliflag"
	"github.com/seqd/seqd/internal/node"
	"github.com/seqd/seqd/internal/nodeid"
)

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
func (s *stringList) Repeatable()        {}

func runStart(ctx context.Context, args []string) error {
	cfg, err := startConfig(args)
	if err != nil {
		return err
	}
	logger := cfg.Logger
	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		n.Close()
		return err
	}
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "node", cfg.ID)
	case err := <-n.Errors():
		logger.Error("server stopped", "err", err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		return fmt.Errorf("shutdown took longer than 30s; exiting anyway")
	}
}

// startConfig reads the flags and the config file they name into a node
// configuration; node.New checks the rest.
func startConfig(args []string) (node.Config, error) {
	fs := flag.NewFlagSet("seqd start", flag.ContinueOnError)
	var (
		configPath = fs.String("config", "", "TOML config file; flags override it")
		id         = fs.String("id", "", "unique node id, e.g. arb1 or alloc1")
		cluster    = fs.String("cluster-id", "", "cluster id (default \"seqd\"); every node of a cluster uses the same")
		dc         = fs.String("dc", "", "datacenter name (default \"dc1\")")
		roles      = fs.String("role", "", "arbiter, allocsvr, store, or a comma-separated mix of them; or gateway, alone")
		shard      = fs.String("shard", "", "message-store shard this store node serves, e.g. s1")
		splits     = fs.String("shard-splits", "", "comma-separated section boundaries between store shards, fixed at cluster creation (arbiter)")
		fanout     = fs.Int("write-fanout-threshold", 0, "groups with more members use read fanout (store; default 500)")
		groupSize  = fs.Int("max-group-size", 0, "members one group may have (store; default 100000)")
		hintBudget = fs.Int("hint-budget", 0, "members one hint window (500 ms) tells of their read-fanout groups' news, over all groups (store; default 10000): lower keeps huge groups from slowing the shard's other writes, higher tells their members sooner")
		dedupTTL   = fs.Duration("dedup-ttl", 0, "how long a (sender, client_msg_id) is remembered, so a retry gets the first send's answer (store; default 24h, at least 1s)")
		retention  = fs.Duration("retention", 0, "remove inbox events older than this (store; default: keep forever)")
		logKeep    = fs.Duration("change-log-retention", 0, "remove change-log entries older than this, or than --retention if shorter (store; default 168h)")
		rateLimit  = fs.Float64("rate-limit", 0, "requests per second per client (store; default: no limit)")
		data       = fs.String("data", "", "data directory (arbiter, store)")
		grpcAddr   = fs.String("grpc-addr", "", "gRPC listen address")
		httpAddr   = fs.String("http-addr", "", "metrics listen address (/metrics, /healthz)")
		raftAddr   = fs.String("raft-addr", "", "Raft listen address (arbiter)")
		gossipAddr = fs.String("gossip-addr", "", "memberlist address, TCP and UDP (empty disables gossip)")
		advertise  = fs.String("advertise-host", "", "host or IP other nodes reach this one at; every address it tells them is this host with the listener's port (needed when --grpc-addr, --raft-addr or --gossip-addr listens on every interface, e.g. :7100)")
		join       = fs.String("join", "", "gRPC address of a running arbiter to join as a new voter")
		arbiters   = fs.String("arbiters", "", "comma-separated arbiter gRPC addresses (allocsvr, store, gateway)")
		sectionSz  = fs.Uint64("section-size", 0, "keys per section, fixed at cluster creation (default 100000)")
		slots      = fs.Uint("slots", 0, "slots, fixed at cluster creation (default 256)")
		step       = fs.Uint64("step", 0, "how far max_seq moves per raise (default 10000)")
		lease      = fs.Duration("lease", 0, "AllocSvr lease (default 2s)")
		drain      = fs.Duration("drain-timeout", 0, "how long an AllocSvr hands its slots over on shutdown (default 10s)")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat  = fs.String("log-format", "text", "text or json")
		peers      stringList
	)
	fs.Var(&peers, "peer", "initial arbiter voter id=raft_addr,grpc_addr[,gossip_addr]; repeat for each (the same list on every initial arbiter)")
	var storePeers stringList
	fs.Var(&storePeers, "store-peer", "initial store replica id=raft_addr of this node's shard; repeat for each (the same list on every initial replica). Leave it out to start a replacement, which waits to be added (seqctl replicas add ID)")
	if err := cliflag.Parse(fs, args); err != nil {
		return node.Config{}, err
	}
	logger, err := newLogger(*logLevel, *logFormat)
	if err != nil {
		return node.Config{}, err
	}
	var cfg node.Config
	if *configPath != "" {
		f, err := node.ParseFile(*configPath)
		if err != nil {
			return node.Config{}, err
		}
		f.Apply(&cfg)
	}
	// Flags given explicitly override the file.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	str := func(name string, dst *string, v string) {
		if set[name] {
			*dst = v
		}
	}
	str("id", &cfg.ID, *id)
	str("cluster-id", &cfg.ClusterID, *cluster)
	str("dc", &cfg.DC, *dc)
	str("data", &cfg.DataDir, *data)
	str("grpc-addr", &cfg.GRPCAddr, *grpcAddr)
	str("http-addr", &cfg.HTTPAddr, *httpAddr)
	str("raft-addr", &cfg.RaftAddr, *raftAddr)
	str("gossip-addr", &cfg.GossipAddr, *gossipAddr)
	if set["advertise-host"] {
		// Given empty, it would read as not given.
		if err := nodeid.ValidateHost("--advertise-host", *advertise); err != nil {
			return node.Config{}, cliflag.Usagef("%v", err)
		}
		cfg.AdvertiseHost = *advertise
	}
	str("join", &cfg.Join, *join)
	if set["role"] {
		cfg.Roles = cliflag.SplitList(*roles)
	}
	if set["arbiters"] {
		cfg.Arbiters = cliflag.SplitList(*arbiters)
	}
	if len(peers) > 0 {
		cfg.Peers = nil
		for _, p := range peers {
			peer, err := node.ParsePeer(p)
			if err != nil {
				return node.Config{}, err
			}
			cfg.Peers = append(cfg.Peers, peer)
		}
	}
	str("shard", &cfg.Shard, *shard)
	if set["shard-splits"] {
		cfg.ShardSplits = nil
		for _, p := range cliflag.SplitList(*splits) {
			v, err := strconv.ParseUint(p, 10, 64)
			if err != nil || v == 0 {
				return node.Config{}, fmt.Errorf("--shard-splits %q: want increasing section numbers such as 1000,2000", *splits)
			}
			cfg.ShardSplits = append(cfg.ShardSplits, v)
		}
	}
	if len(storePeers) > 0 {
		cfg.StorePeers = nil
		for _, p := range storePeers {
			peer, err := node.ParseStorePeer(p)
			if err != nil {
				return node.Config{}, err
			}
			cfg.StorePeers = append(cfg.StorePeers, peer)
		}
	}
	if set["write-fanout-threshold"] {
		cfg.WriteFanoutThreshold = *fanout
	}
	if set["max-group-size"] {
		cfg.MaxGroupSize = *groupSize
	}
	if set["hint-budget"] {
		cfg.HintBudget = *hintBudget
	}
	if set["dedup-ttl"] {
		cfg.DedupTTL = *dedupTTL
	}
	if set["retention"] {
		cfg.Retention = *retention
	}
	if set["change-log-retention"] {
		cfg.ChangeLogRetention = *logKeep
	}
	if set["rate-limit"] {
		cfg.RateLimit = *rateLimit
	}
	if set["section-size"] {
		cfg.SectionSize = *sectionSz
	}
	if set["slots"] {
		if *slots > math.MaxUint32 {
			return node.Config{}, cliflag.Usagef("--slots %d: at most %d", *slots, uint64(math.MaxUint32))
		}
		cfg.NumSlots = uint32(*slots)
	}
	if set["step"] {
		cfg.Step = *step
	}
	if set["lease"] {
		cfg.Lease = *lease
	}
	if set["drain-timeout"] {
		cfg.DrainTimeout = *drain
	}
	cfg.Logger = logger
	return cfg, nil
}
