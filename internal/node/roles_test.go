package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/seqd/seqd/arbiter"
	"github.com/seqd/seqd/router"
)

// An arbiter and an AllocSvr in one node share its gRPC port: both serve
// Routing, and the arbiter's answers. The node starts and hands out
// sequence numbers.
func TestArbiterAndAllocSvrInOneNode(t *testing.T) {
	grpcLn, raftLn := listenLoopback(t), listenLoopback(t)
	addr := grpcLn.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	startNode(ctx, t, Config{
		ID: "a1", ClusterID: "mix", Roles: []string{RoleArbiter, RoleAllocSvr}, DataDir: t.TempDir(),
		GRPCListener: grpcLn, RaftListener: raftLn,
		Peers:       []arbiter.Peer{{ID: "a1", RaftAddr: raftLn.Addr().String(), GRPCAddr: addr}},
		SectionSize: 1000, NumSlots: 4, Lease: time.Second, DrainTimeout: time.Second,
	})
	c, err := router.New(ctx, router.Config{Addrs: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var last uint64
	for i := range 3 {
		seq, err := c.Next(ctx, 42)
		if err != nil {
			t.Fatalf("Next %d: %v", i, err)
		}
		if seq <= last {
			t.Fatalf("Next %d gave %d after %d", i, seq, last)
		}
		last = seq
	}
}

// The gateway serves the whole cluster's services on its port: it runs
// alone.
func TestGatewayRunsAlone(t *testing.T) {
	for _, other := range []string{RoleArbiter, RoleAllocSvr, RoleStore} {
		cfg := Config{ID: "n1", Roles: []string{RoleGateway, other}, GRPCAddr: "127.0.0.1:7100", RaftAddr: "127.0.0.1:7101",
			DataDir: "/d", Shard: "s1", Arbiters: []string{"127.0.0.1:7100"}}
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), "--role gateway,"+other+": the gateway serves") {
			t.Errorf("gateway with %s: %v, want it refused", other, err)
		}
	}
}
