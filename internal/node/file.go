package node

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/seqd/seqd/arbiter"
	"github.com/seqd/seqd/internal/nodeid"
	"github.com/seqd/seqd/internal/raftnode"
)

// File is the TOML config file of `seqd start --config`. Flags given on
// the command line override it.
type File struct {
	ID            string     `toml:"id"`
	ClusterID     string     `toml:"cluster_id"`
	DC            string     `toml:"dc"`
	Roles         []string   `toml:"roles"`
	DataDir       string     `toml:"data_dir"`
	GRPCAddr      string     `toml:"grpc_addr"`
	HTTPAddr      string     `toml:"http_addr"`
	RaftAddr      string     `toml:"raft_addr"`
	GossipAddr    string     `toml:"gossip_addr"`
	AdvertiseHost string     `toml:"advertise_host"`
	Join          string     `toml:"join"`
	Arbiters      []string   `toml:"arbiters"`
	Peers         []FilePeer `toml:"peers"`
	Shard         string     `toml:"shard"`
	StorePeers    []struct {
		ID       string `toml:"id"`
		RaftAddr string `toml:"raft_addr"`
	} `toml:"store_peers"`
	Store struct {
		WriteFanoutThreshold int      `toml:"write_fanout_threshold"`
		MaxGroupSize         int      `toml:"max_group_size"`
		HintBudget           int      `toml:"hint_budget"`
		DedupTTL             Duration `toml:"dedup_ttl"`
		Retention            Duration `toml:"retention"`
		ChangeLogRetention   Duration `toml:"change_log_retention"`
		RateLimit            float64  `toml:"rate_limit"`
	} `toml:"store"`
	Cluster struct {
		SectionSize uint64   `toml:"section_size"`
		Slots       uint32   `toml:"slots"`
		Step        uint64   `toml:"step"`
		Lease       Duration `toml:"lease"`
		ShardSplits []uint64 `toml:"shard_splits"`
	} `toml:"cluster"`
	Raft struct {
		HeartbeatTimeout Duration `toml:"heartbeat_timeout"`
		ElectionTimeout  Duration `toml:"election_timeout"`
	} `toml:"raft"`
	DrainTimeout Duration `toml:"drain_timeout"`
}

// FilePeer is one [[peers]] entry.
type FilePeer struct {
	ID         string `toml:"id"`
	RaftAddr   string `toml:"raft_addr"`
	GRPCAddr   string `toml:"grpc_addr"`
	GossipAddr string `toml:"gossip_addr"`
}

// Duration reads "2s"-style durations from TOML.
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration like \"2s\" or \"500ms\"", string(b))
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", string(b))
	}
	d.Duration = v
	return nil
}

// ParseFile reads a config file. Unknown keys are errors, so a typo does
// not silently fall back to a default.
func ParseFile(path string) (*File, error) {
	var f File
	md, err := toml.DecodeFile(path, &f)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return nil, fmt.Errorf("config %s: line %d: %s", path, perr.Position.Line, perr.Message)
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("config %s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	// Given, it is checked here: an empty one would otherwise read as
	// not given, and the node would advertise its listeners' own hosts.
	if md.IsDefined("advertise_host") {
		if err := nodeid.ValidateHost("advertise_host", f.AdvertiseHost); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	return &f, nil
}

// Apply copies the file's settings into cfg.
func (f *File) Apply(cfg *Config) {
	cfg.ID, cfg.ClusterID, cfg.DC, cfg.Roles, cfg.DataDir = f.ID, f.ClusterID, f.DC, f.Roles, f.DataDir
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr = f.GRPCAddr, f.HTTPAddr, f.RaftAddr, f.GossipAddr
	cfg.AdvertiseHost = f.AdvertiseHost
	cfg.Join, cfg.Arbiters = f.Join, f.Arbiters
	for _, p := range f.Peers {
		cfg.Peers = append(cfg.Peers, arbiter.Peer{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, GossipAddr: p.GossipAddr})
	}
	cfg.SectionSize, cfg.NumSlots, cfg.Step, cfg.Lease = f.Cluster.SectionSize, f.Cluster.Slots, f.Cluster.Step, f.Cluster.Lease.Duration
	cfg.HeartbeatTimeout, cfg.ElectionTimeout = f.Raft.HeartbeatTimeout.Duration, f.Raft.ElectionTimeout.Duration
	cfg.DrainTimeout = f.DrainTimeout.Duration
	cfg.Shard, cfg.ShardSplits = f.Shard, f.Cluster.ShardSplits
	for _, p := range f.StorePeers {
		cfg.StorePeers = append(cfg.StorePeers, raftnode.Peer{ID: p.ID, Addr: p.RaftAddr})
	}
	cfg.WriteFanoutThreshold, cfg.Retention, cfg.RateLimit = f.Store.WriteFanoutThreshold, f.Store.Retention.Duration, f.Store.RateLimit
	cfg.MaxGroupSize, cfg.DedupTTL, cfg.ChangeLogRetention = f.Store.MaxGroupSize, f.Store.DedupTTL.Duration, f.Store.ChangeLogRetention.Duration
	cfg.HintBudget = f.Store.HintBudget
}

// ParseStorePeer reads one --store-peer value: id=raft_addr.
func ParseStorePeer(s string) (raftnode.Peer, error) {
	id, addr, ok := strings.Cut(s, "=")
	if !ok || id == "" || addr == "" || strings.Contains(addr, ",") {
		return raftnode.Peer{}, fmt.Errorf("--store-peer %q: want id=raft_addr, e.g. s1-r1=10.0.0.5:7501", s)
	}
	return raftnode.Peer{ID: id, Addr: addr}, nil
}

// ParsePeer reads one --peer value: id=raftAddr,grpcAddr[,gossipAddr].
func ParsePeer(s string) (arbiter.Peer, error) {
	id, rest, ok := strings.Cut(s, "=")
	parts := strings.Split(rest, ",")
	if !ok || id == "" || len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return arbiter.Peer{}, fmt.Errorf("--peer %q: want id=raft_addr,grpc_addr[,gossip_addr], e.g. arb1=10.0.0.1:7401,10.0.0.1:7400", s)
	}
	p := arbiter.Peer{ID: id, RaftAddr: parts[0], GRPCAddr: parts[1]}
	if len(parts) == 3 {
		p.GossipAddr = parts[2]
	}
	return p, nil
}
