package arbiter

import (
	"strings"
	"testing"
)

// The initial voters are addresses every node dials: none may be empty of
// a host, or every interface.
func TestBootstrapPeersMustBeDialable(t *testing.T) {
	c := Config{ID: "arb1", DataDir: "/d", RaftAddr: "127.0.0.1:7101", GRPCAddr: "127.0.0.1:7100",
		Bootstrap: []Peer{{ID: "arb1", RaftAddr: "0.0.0.0:7101", GRPCAddr: "[::]:7100", GossipAddr: ":7102"}}}
	c.setDefaults()
	err := c.Validate()
	for _, want := range []string{`--peer arb1: raft_addr "0.0.0.0:7101"`, `--peer arb1: grpc_addr "[::]:7100"`, `--peer arb1: gossip_addr ":7102" has no host`, "cannot dial"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("peers on every interface: %v, want it to say %q", err, want)
		}
	}
	c.Bootstrap = []Peer{{ID: "arb1", RaftAddr: "127.0.0.1:7101", GRPCAddr: "127.0.0.1:7100", GossipAddr: "127.0.0.1:7102"}}
	if err := c.Validate(); err != nil {
		t.Errorf("dialable peers: %v", err)
	}
}
