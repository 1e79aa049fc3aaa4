package arbiter

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// TestLeaderCatchingUpAnswersUnavailable: a new leader applies the log
// committed before its term after it wins, so until its barrier returns
// its FSM can lack a node or replica that exists. Requests that decide
// from that state are refused as UNAVAILABLE (callers retry), not
// answered from it: a drain of a registered AllocSvr once failed with
// NOT_FOUND right after an arbiter leader restarted.
func TestLeaderCatchingUpAnswersUnavailable(t *testing.T) {
	// n1 registers once and never renews: its lease must outlast the test.
	a := testArbiter(t, "a1", true, func(c *Config) { c.Lease = time.Minute })
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a1 to lead and create the cluster", func() bool { return a.readyNow() && a.fsm.Initialized() })
	registerAllocSvr(t, a, "n1", 1)
	srv, ctx := &server{a: a}, context.Background()

	a.ready.Store(false) // as between winning an election and the barrier
	// Each call is made as the map is built, while a1 is not caught up.
	answers := map[string]error{
		// Unknown to its FSM, perhaps only for now: not NOT_FOUND.
		"drain":    errOf(srv.Drain(ctx, &seqdv1.DrainRequest{Node: "nosuch"})),
		"undrain":  errOf(srv.Undrain(ctx, &seqdv1.UndrainRequest{Node: "nosuch"})),
		"register": errOf(srv.Register(ctx, &clusterv1.RegisterRequest{ClusterId: a.cfg.ClusterID, NodeId: "n2", Incarnation: 1, Addr: deadAddr(t)})),
		"renew":    errOf(srv.RenewLease(ctx, &clusterv1.RenewLeaseRequest{NodeId: "n1", Incarnation: 1})),
		"register store replica": errOf(srv.RegisterStoreReplica(ctx, &clusterv1.RegisterStoreReplicaRequest{
			ClusterId: a.cfg.ClusterID, Shard: "s1", ReplicaId: "s1-r1", Addr: deadAddr(t)})),
		"add store replica":    errOf(srv.AddStoreReplica(ctx, &seqdv1.AddStoreReplicaRequest{Id: "s1-r1"})),
		"remove store replica": errOf(srv.RemoveStoreReplica(ctx, &seqdv1.RemoveStoreReplicaRequest{Id: "s1-r1"})),
		"routing table":        errOf(srv.GetRoutingTable(ctx, &seqdv1.GetRoutingTableRequest{FromLeader: true})),
		"join":                 errOf(srv.JoinArbiter(ctx, &seqdv1.JoinArbiterRequest{Id: "a2", RaftAddr: deadAddr(t), GrpcAddr: deadAddr(t)})),
	}
	for op, err := range answers {
		if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), op+": the arbiter leader is still catching up") {
			t.Errorf("%s at a leader still catching up: %v, want UNAVAILABLE saying so", op, err)
		}
	}
	if n := a.fsm.Node("n2"); n != nil {
		t.Errorf("a register refused as UNAVAILABLE still recorded n2: %v", n)
	}

	// Without from_leader, any arbiter answers from its own state.
	if _, err := srv.GetRoutingTable(ctx, &seqdv1.GetRoutingTableRequest{}); err != nil {
		t.Errorf("routing table, not from the leader, at a leader still catching up: %v", err)
	}
	// Status still answers, as this arbiter's own view, marked stale, and
	// times no lease: a new leader counts every lease as just granted.
	st, err := srv.Status(ctx, &seqdv1.StatusRequest{})
	if err != nil || !st.Stale || len(st.Allocsvrs) != 1 || st.Allocsvrs[0].Lease != "unknown" {
		t.Errorf("status at a leader still catching up: %v %v, want it marked stale, with n1's lease unknown", st, err)
	}

	a.ready.Store(true)
	st, err = srv.Status(ctx, &seqdv1.StatusRequest{})
	if err != nil || st.Stale || len(st.Allocsvrs) != 1 || st.Allocsvrs[0].Lease != "valid" {
		t.Errorf("status at a caught-up leader: %v %v, want it not stale, with n1's lease valid", st, err)
	}
	if _, err := srv.Drain(ctx, &seqdv1.DrainRequest{Node: "nosuch"}); status.Code(err) != codes.NotFound {
		t.Errorf("drain of an unknown AllocSvr once caught up: %v, want NOT_FOUND", err)
	}
}

// errOf is a call's error, its answer dropped.
func errOf[T any](_ T, err error) error { return err }

// An arbiter removed from the group stays out of the address book, even
// when the leader's bootstrap list still names it: AllocSvrs are handed
// the book's gossip addresses as seeds, and followers its gRPC addresses.
func TestRemovedArbiterStaysOutOfTheAddressBook(t *testing.T) {
	a2 := testArbiter(t, "a2", false, nil)
	a3 := testArbiter(t, "a3", false, nil)
	var peers []Peer
	for _, a := range []*Arbiter{a2, a3} {
		peers = append(peers, Peer{ID: a.cfg.ID, RaftAddr: a.cfg.RaftAddr, GRPCAddr: a.cfg.GRPCAddr})
	}
	a1 := testArbiter(t, "a1", true, func(c *Config) { c.Bootstrap = append(c.Bootstrap, peers...) })
	for _, a := range []*Arbiter{a1, a2, a3} {
		if err := a.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	waitFor(t, "a1 to lead and record all three arbiters", func() bool { return a1.readyNow() && len(a1.fsm.Arbiters()) == 3 })
	if _, err := (&server{a: a1}).RemoveArbiter(ctx, &seqdv1.RemoveArbiterRequest{Id: "a3"}); err != nil {
		t.Fatal(err)
	}
	a1.ensureArbiterRecords(ctx) // as its loop does every second
	if _, ok := a1.fsm.Arbiters()["a3"]; ok {
		t.Fatalf("the removed a3 is back in the address book: %v", a1.fsm.Arbiters())
	}
	if _, ok := a1.fsm.Arbiters()["a2"]; !ok {
		t.Fatalf("a2 left the address book: %v", a1.fsm.Arbiters())
	}
}
