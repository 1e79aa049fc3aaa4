package store

import (
	"strings"
	"testing"
	"time"

	"github.com/seqd/seqd/internal/raftnode"
)

// The initial replicas are addresses the others dial: none may be empty
// of a host, or every interface; and a dedup TTL under a second is
// refused.
func TestConfigRefusesUndialablePeersAndShortDedupTTL(t *testing.T) {
	base := func() Config {
		return Config{ShardID: "s1", ReplicaID: "s1-r1", DataDir: "/d", RaftAddr: "127.0.0.1:7501", GRPCAddr: "127.0.0.1:7500",
			Arbiters: []string{"127.0.0.1:7100"}, Peers: []raftnode.Peer{{ID: "s1-r1", Addr: "127.0.0.1:7501"}}}
	}
	c := base()
	if err := c.Validate(); err != nil {
		t.Fatalf("a good config: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"peer on every interface", func(c *Config) { c.Peers = append(c.Peers, raftnode.Peer{ID: "s1-r2", Addr: "0.0.0.0:7501"}) },
			`--store-peer s1-r2: raft_addr "0.0.0.0:7501"`},
		{"peer without a host", func(c *Config) { c.Peers = append(c.Peers, raftnode.Peer{ID: "s1-r2", Addr: ":7501"}) },
			`--store-peer s1-r2: raft_addr ":7501" has no host`},
		{"negative dedup TTL", func(c *Config) { c.DedupTTL = -1 }, "dedup TTL -1ns: want at least 1s"},
		{"dedup TTL under a second", func(c *Config) { c.DedupTTL = 999_000_000 }, "dedup TTL 999ms: want at least 1s"},
		{"negative change-log retention", func(c *Config) { c.ChangeLogRetention = -time.Hour }, "change-log retention -1h0m0s is negative"},
		{"change-log retention under a second", func(c *Config) { c.ChangeLogRetention = 5 }, "change-log retention 5ns: want at least 1s"},
		{"retention under a second", func(c *Config) { c.Retention = 999 * time.Millisecond }, "retention 999ms: want at least 1s"},
	} {
		c := base()
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to say %q", tc.name, err, tc.want)
		}
	}
}

// The change log keeps an entry for the change-log retention, 7 days
// unless configured, or for the inbox retention when that is shorter.
func TestLogRetention(t *testing.T) {
	for _, tc := range []struct {
		retention, logRetention, want time.Duration
	}{
		{0, 0, DefaultChangeLogRetention},
		{0, time.Hour, time.Hour},
		{time.Hour, 0, time.Hour},
		{30 * 24 * time.Hour, 0, DefaultChangeLogRetention},
		{time.Hour, 2 * time.Hour, time.Hour},
		{2 * time.Hour, time.Hour, time.Hour},
	} {
		c := Config{Retention: tc.retention, ChangeLogRetention: tc.logRetention}
		c.setDefaults()
		if got := c.logRetention(); got != tc.want {
			t.Errorf("retention %v, change-log retention %v: the log keeps %v, want %v", tc.retention, tc.logRetention, got, tc.want)
		}
	}
}
