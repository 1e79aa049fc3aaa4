package allocsvr_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/internal/localcluster"
	"github.com/seqd/seqd/internal/rpcerr"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

func wantCode(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
	if !strings.Contains(status.Convert(err).Message(), msg) {
		t.Fatalf("message %q does not mention %q", status.Convert(err).Message(), msg)
	}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpcconn.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestBadInputIsRefusedAndChangesNothing(t *testing.T) {
	c := startCluster(t, localcluster.Options{})
	cl := newClient(t, c, router.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	owned := keysOwnedBy(t, cl, "alloc1", 1)[0]
	foreign := keysOwnedBy(t, cl, "alloc2", 1)[0]
	a1 := seqdv1.NewSequencerClient(dial(t, c.AllocSvr(0).GRPCAddr()))
	a1node := clusterv1.NewAllocNodeClient(dial(t, c.AllocSvr(0).GRPCAddr()))
	arb := clusterv1.NewArbiterClient(dial(t, c.ArbiterAddrs()[0]))

	before, err := cl.Current(ctx, owned)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("key 0", func(t *testing.T) {
		_, err := a1.Next(ctx, &seqdv1.NextRequest{Key: 0})
		wantCode(t, err, codes.InvalidArgument, "key 0 is reserved")
		_, err = a1.Current(ctx, &seqdv1.CurrentRequest{Key: 0})
		wantCode(t, err, codes.InvalidArgument, "key 0 is reserved")
		_, err = a1.NextBatch(ctx, &seqdv1.NextBatchRequest{Keys: []uint64{owned, 0}})
		wantCode(t, err, codes.InvalidArgument, "keys[1] is 0")
		_, err = cl.Next(ctx, 0)
		wantCode(t, err, codes.InvalidArgument, "key 0 is reserved")
		_, err = seqdv1.NewSequencerClient(dial(t, c.GatewayAddr())).Next(ctx, &seqdv1.NextRequest{Key: 0})
		wantCode(t, err, codes.InvalidArgument, "key 0 is reserved")
	})
	t.Run("empty and huge batches", func(t *testing.T) {
		_, err := a1.NextBatch(ctx, &seqdv1.NextBatchRequest{})
		wantCode(t, err, codes.InvalidArgument, "keys is empty")
		huge := make([]uint64, 10_001)
		for i := range huge {
			huge[i] = owned
		}
		_, err = a1.NextBatch(ctx, &seqdv1.NextBatchRequest{Keys: huge})
		wantCode(t, err, codes.InvalidArgument, "the limit is 10000")
	})
	t.Run("non-owner gets NOT_OWNER with the table", func(t *testing.T) {
		// With the client's table version, as router.Client sends it: an
		// AllocSvr a renewal behind renews before it answers.
		_, err := a1.Next(ctx, &seqdv1.NextRequest{Key: foreign, RoutingVersion: cl.Table().Version})
		table, notOwner := rpcerr.NotOwnerTable(err)
		if !notOwner || table == nil || len(table.Slots) == 0 {
			t.Fatalf("got %v, want NOT_OWNER carrying the routing table", err)
		}
		slot := (foreign / table.SectionSize) % uint64(table.NumSlots)
		if table.Slots[slot].Owner != "alloc2" {
			t.Errorf("attached table says slot %d is owned by %q, want alloc2", slot, table.Slots[slot].Owner)
		}
		// A batch with one foreign key allocates nothing at all.
		_, err = a1.NextBatch(ctx, &seqdv1.NextBatchRequest{Keys: []uint64{owned, foreign}})
		if _, ok := rpcerr.NotOwnerTable(err); !ok {
			t.Fatalf("got %v, want NOT_OWNER", err)
		}
	})
	t.Run("stale client table is refreshed in the response", func(t *testing.T) {
		resp, err := a1.Next(ctx, &seqdv1.NextRequest{Key: owned, RoutingVersion: 1})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.GetRoutingTable() == nil || resp.Header.RoutingVersion <= 1 {
			t.Fatalf("header %+v: want the newer table attached", resp.Header)
		}
		before = resp.Seq
		resp, err = a1.Next(ctx, &seqdv1.NextRequest{Key: owned, RoutingVersion: resp.Header.RoutingVersion})
		if err != nil || resp.Header.GetRoutingTable() != nil {
			t.Fatalf("up-to-date client got table %v, err %v", resp.GetHeader().GetRoutingTable() != nil, err)
		}
		before = resp.Seq
	})
	t.Run("unknown section op by a non-owner is fenced", func(t *testing.T) {
		sec := owned / cl.Table().SectionSize
		resp, err := arb.AllocateSections(ctx, &clusterv1.AllocateSectionsRequest{NodeId: "intruder", Incarnation: 1,
			Ops: []*clusterv1.SectionOp{{Kind: clusterv1.SectionOpKind_SECTION_OP_KIND_RAISE, Section: sec, Generation: 1, MinMax: math.MaxUint32}}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Results[0].Status != clusterv1.SectionOpStatus_SECTION_OP_STATUS_FENCED {
			t.Fatalf("intruder's raise: %v, want FENCED", resp.Results[0].Status)
		}
		if rec := c.Leader().Arbiter().FSM().Section(sec); rec != nil && rec.MaxSeq >= math.MaxUint32 {
			t.Fatalf("fenced raise changed max_seq to %d", rec.MaxSeq)
		}
		_, err = arb.AllocateSections(ctx, &clusterv1.AllocateSectionsRequest{NodeId: "alloc1", Incarnation: 1})
		wantCode(t, err, codes.InvalidArgument, "no section operations")
		_, err = arb.AllocateSections(ctx, &clusterv1.AllocateSectionsRequest{NodeId: "alloc1", Incarnation: 1,
			Ops: []*clusterv1.SectionOp{{Kind: clusterv1.SectionOpKind_SECTION_OP_KIND_ACQUIRE, Section: 1}}})
		wantCode(t, err, codes.InvalidArgument, "step 0")
	})
	t.Run("registration for another cluster is refused", func(t *testing.T) {
		_, err := arb.Register(ctx, &clusterv1.RegisterRequest{ClusterId: "someone-else", NodeId: "alloc9", Incarnation: 1, Addr: "127.0.0.1:1"})
		wantCode(t, err, codes.FailedPrecondition, "someone-else")
		_, err = arb.Register(ctx, &clusterv1.RegisterRequest{ClusterId: "seqd-local", NodeId: "", Incarnation: 1, Addr: "127.0.0.1:1"})
		wantCode(t, err, codes.InvalidArgument, "node id is empty")
		if c.Leader().Arbiter().FSM().Node("alloc9") != nil {
			t.Fatal("refused registration was recorded")
		}
	})
	t.Run("release with a bad slot or incarnation", func(t *testing.T) {
		_, err := a1node.Release(ctx, &clusterv1.ReleaseRequest{Incarnation: 12345})
		wantCode(t, err, codes.FailedPrecondition, "incarnation")
	})
	t.Run("drain of an unknown node", func(t *testing.T) {
		_, err := seqdv1.NewAdminClient(dial(t, c.ArbiterAddrs()[1])).Drain(ctx, &seqdv1.DrainRequest{Node: "ghost"})
		wantCode(t, err, codes.NotFound, "ghost")
	})
	t.Run("duplicate and extreme keys", func(t *testing.T) {
		resp, err := cl.NextBatch(ctx, []uint64{owned, owned, owned, math.MaxUint64, 1})
		if err != nil {
			t.Fatal(err)
		}
		if !(resp[0] > before && resp[1] > resp[0] && resp[2] > resp[1]) {
			t.Fatalf("duplicate keys in one batch got %v (before %d), want strictly increasing", resp[:3], before)
		}
	})
	// Nothing above was allocated for the owned key except the explicit calls.
	after, err := cl.Current(ctx, owned)
	if err != nil {
		t.Fatal(err)
	}
	if after < before {
		t.Fatalf("Current went from %d to %d", before, after)
	}
}
