package arbiter

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seqd/seqd/internal/gossip"
	"github.com/seqd/seqd/internal/mclock"
	"github.com/seqd/seqd/internal/nodeid"
)

// Defaults for a production cluster. Tests shorten the Raft timings.
const (
	DefaultSectionSize = 100_000
	DefaultStep        = 10_000
	DefaultNumSlots    = 256
	DefaultLease       = 2 * time.Second
)

// Peer is one voter of the initial arbiter group.
type Peer struct {
	ID         string
	RaftAddr   string
	GRPCAddr   string
	GossipAddr string
}

// Config configures one arbiter.
type Config struct {
	ID        string
	ClusterID string
	DC        string
	DataDir   string

	// RaftAddr is where Raft listens and what peers dial.
	RaftAddr string
	// GRPCAddr is the advertised address of this node's gRPC server, where
	// followers forward to and AllocSvrs call.
	GRPCAddr string
	// GossipAddr is the memberlist address; empty disables gossip.
	GossipAddr string
	// GossipAdvertiseHost, if set, is the host the pool is told, with
	// the gossip port (--advertise-host).
	GossipAdvertiseHost string
	GossipProfile       gossip.Profile

	// Bootstrap lists the initial voters, this one included. Every initial
	// voter gets the same list. Empty means "join an existing group" (or
	// restart with existing state).
	Bootstrap []Peer

	// Cluster settings, used when this arbiter initializes the cluster.
	// Section size and slot count never change afterwards.
	SectionSize uint64
	NumSlots    uint32
	Step        uint64
	// ShardSplits splits the section space into message-store shards
	// (fixed at creation); empty means one shard.
	ShardSplits []uint64

	// Lease is how long an AllocSvr may serve after sending a renewal that
	// succeeded. Like SectionSize it is stored when this arbiter creates
	// the cluster (or, on a cluster created without one, when it first
	// leads), and the stored one is in force afterwards. LeaseMargin
	// covers clock-rate drift between machines; it and RenewInterval keep
	// their share of Lease when the stored lease differs.
	Lease         time.Duration
	LeaseMargin   time.Duration
	RenewInterval time.Duration
	// AssignInterval is how often the leader's assignment loop runs.
	AssignInterval time.Duration

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration

	Logger   *slog.Logger
	Registry prometheus.Registerer
	Clock    mclock.Clock
}

func (c *Config) setDefaults() {
	if c.SectionSize == 0 {
		c.SectionSize = DefaultSectionSize
	}
	if c.NumSlots == 0 {
		c.NumSlots = DefaultNumSlots
	}
	if c.Step == 0 {
		c.Step = DefaultStep
	}
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.LeaseMargin == 0 {
		c.LeaseMargin = c.Lease / 10
	}
	if c.RenewInterval == 0 {
		c.RenewInterval = c.Lease / 4
	}
	if c.AssignInterval == 0 {
		c.AssignInterval = 100 * time.Millisecond
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = time.Second
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = time.Second
	}
	if c.LeaderLeaseTimeout == 0 {
		c.LeaderLeaseTimeout = c.HeartbeatTimeout / 2
	}
	if c.CommitTimeout == 0 {
		c.CommitTimeout = 5 * time.Millisecond
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.Clock == nil {
		c.Clock = mclock.Real
	}
	if c.ClusterID == "" {
		c.ClusterID = "seqd"
	}
	if c.DC == "" {
		c.DC = "dc1"
	}
}

// Check validates c as New will see it, defaults filled in, without
// changing c: callers check before they claim a data directory.
func (c Config) Check() error {
	c.setDefaults()
	return c.Validate()
}

// Validate checks the configuration and says what to fix.
func (c *Config) Validate() error {
	var errs []error
	if c.GossipAddr != "" {
		if _, port, err := net.SplitHostPort(c.GossipAddr); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("arbiter: gossip address %q is not host:port (--gossip-addr)", c.GossipAddr))
		}
	}
	if c.ID == "" {
		errs = append(errs, errors.New("arbiter: id is empty; give every node a unique --id"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("arbiter: data dir is empty; set --data"))
	}
	if c.RaftAddr == "" {
		errs = append(errs, errors.New("arbiter: raft address is empty; set --raft-addr"))
	}
	if c.GRPCAddr == "" {
		errs = append(errs, errors.New("arbiter: gRPC address is empty; set --grpc-addr"))
	}
	if c.NumSlots > MaxSlots {
		errs = append(errs, fmt.Errorf("arbiter: %d slots is more than the maximum %d", c.NumSlots, MaxSlots))
	}
	if c.SectionSize > MaxSectionSize {
		errs = append(errs, fmt.Errorf("arbiter: section size %d is more than the maximum %d keys", c.SectionSize, MaxSectionSize))
	}
	if c.Step > 1<<40 {
		errs = append(errs, fmt.Errorf("arbiter: step %d is too large (max 2^40)", c.Step))
	}
	if c.Lease < time.Millisecond || c.Lease%time.Millisecond != 0 {
		errs = append(errs, fmt.Errorf("arbiter: lease %v: want whole milliseconds, at least 1ms (it is stored in milliseconds)", c.Lease))
	}
	if c.LeaseMargin >= c.Lease || c.RenewInterval >= c.Lease {
		errs = append(errs, fmt.Errorf("arbiter: lease %v must exceed both the margin (%v) and the renew interval (%v)", c.Lease, c.LeaseMargin, c.RenewInterval))
	}
	if len(c.Bootstrap) > 0 {
		self := false
		seen := map[string]bool{}
		for _, p := range c.Bootstrap {
			if p.ID == "" || p.RaftAddr == "" || p.GRPCAddr == "" {
				errs = append(errs, fmt.Errorf("arbiter: bootstrap peer %+v needs id, raft and gRPC addresses", p))
			}
			// Every node dials the initial voters at these addresses.
			for _, a := range []struct{ field, addr string }{{"raft_addr", p.RaftAddr}, {"grpc_addr", p.GRPCAddr}, {"gossip_addr", p.GossipAddr}} {
				if a.addr != "" { // a missing one is reported above
					if err := nodeid.ValidateAddr(a.field, a.addr); err != nil {
						errs = append(errs, fmt.Errorf("arbiter: --peer %s: %w", p.ID, err))
					}
				}
			}
			if seen[p.ID] {
				errs = append(errs, fmt.Errorf("arbiter: bootstrap peer id %q appears twice", p.ID))
			}
			seen[p.ID] = true
			if p.ID == c.ID {
				self = true
			}
		}
		if !self {
			errs = append(errs, fmt.Errorf("arbiter: bootstrap peers do not include this node (%q)", c.ID))
		}
	}
	return errors.Join(errs...)
}
