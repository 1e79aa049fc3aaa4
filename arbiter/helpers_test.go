package arbiter

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seqd/seqd/internal/loopback"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

// testArbiter builds an arbiter on loopback with short Raft timings and a
// data directory of its own; edit may change its config. With bootstrap
// it starts a one-voter group of its own; without, it waits to be added
// with AddVoter. It is not started: call Start (runLeader runs from then).
func testArbiter(t *testing.T, id string, bootstrap bool, edit func(*Config)) *Arbiter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		ID: id, DataDir: t.TempDir(), RaftAddr: ln.Addr().String(), GRPCAddr: deadAddr(t),
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		AssignInterval: 10 * time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		Registry:       prometheus.NewRegistry(),
	}
	if bootstrap {
		cfg.Bootstrap = []Peer{{ID: id, RaftAddr: cfg.RaftAddr, GRPCAddr: cfg.GRPCAddr}}
	}
	if edit != nil {
		edit(&cfg)
	}
	a, err := New(cfg, ln)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Kill)
	return a
}

// deadAddr returns a loopback address nothing listens on: calls to it
// fail at once. loopback.FreeAddr keeps it out of the ports the kernel
// hands to other tests' port-0 listeners meanwhile.
func deadAddr(t *testing.T) string {
	t.Helper()
	addr, err := loopback.FreeAddr("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// registerAllocSvr registers an AllocSvr instance at the leader a, with an
// address nothing answers on (so no planned move can complete).
func registerAllocSvr(t *testing.T, a *Arbiter, id string, inc uint64) {
	t.Helper()
	_, err := (&server{a: a}).Register(context.Background(), &clusterv1.RegisterRequest{
		ClusterId: a.cfg.ClusterID, NodeId: id, Incarnation: inc, Addr: deadAddr(t),
	})
	if err != nil {
		t.Fatalf("register %s at %s: %v", id, a.cfg.ID, err)
	}
}

// renew asks the leader a to renew the instance's lease; it must be granted.
func renew(t *testing.T, a *Arbiter, id string, inc uint64) *clusterv1.RenewLeaseResponse {
	t.Helper()
	resp, err := (&server{a: a}).RenewLease(context.Background(), &clusterv1.RenewLeaseRequest{NodeId: id, Incarnation: inc})
	if err != nil {
		t.Fatalf("renew %s at %s: %v", id, a.cfg.ID, err)
	}
	if !resp.Granted {
		t.Fatalf("renew %s at %s refused: %s", id, a.cfg.ID, resp.Reason)
	}
	return resp
}

// owners returns each slot's owner.
func owners(a *Arbiter) []string {
	var out []string
	for _, s := range a.fsm.Slots() {
		out = append(out, s.Owner)
	}
	return out
}
