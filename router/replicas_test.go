package router

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/grpcconn"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// fakeReplica answers Subscribe with refuse, or accepts the stream (sends
// its header) and holds it open.
type fakeReplica struct {
	seqdv1.UnimplementedMessagesServer
	refuse error
	calls  atomic.Int64
}

func (f *fakeReplica) Subscribe(_ *seqdv1.SubscribeRequest, st seqdv1.Messages_SubscribeServer) error {
	f.calls.Add(1)
	if f.refuse != nil {
		return f.refuse
	}
	if err := st.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	<-st.Context().Done()
	return nil
}

func serveFake(t *testing.T, f *fakeReplica) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	seqdv1.RegisterMessagesServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// messagesFor is a Messages client whose routing table has one shard
// owning every key, with replicas at addrs.
func messagesFor(t *testing.T, addrs ...string) *Messages {
	t.Helper()
	sh := &seqdv1.ShardInfo{Id: "s1"}
	for _, a := range addrs {
		sh.Replicas = append(sh.Replicas, &seqdv1.ReplicaInfo{Addr: a})
	}
	c := &Client{pool: grpcconn.NewPool()}
	t.Cleanup(func() { c.pool.Close() })
	c.table.Store(compile(&seqdv1.RoutingTable{Version: 1, SectionSize: 1 << 20, Shards: []*seqdv1.ShardInfo{sh}}))
	return c.Messages()
}

// A replica's refusal of a Subscribe ends the stream without a header,
// and grpc-go's Header reports no error for it: the router still moves on
// to the next replica on a retryable refusal, and returns a final one as
// an error rather than as a stream that is already over.
func TestSubscribeMovesOnFromARefusingReplica(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	refusing := &fakeReplica{refuse: status.Error(codes.Unavailable, "store replica is starting; retry shortly")}
	serving := &fakeReplica{}
	m := messagesFor(t, serveFake(t, refusing), serveFake(t, serving))
	// Streams start at alternate replicas: of two, one starts at the
	// refusing one.
	for i := range 2 {
		st, err := m.Subscribe(ctx, &seqdv1.SubscribeRequest{User: 1})
		if err != nil {
			t.Fatalf("subscribe %d: %v", i, err)
		}
		defer st.CloseSend()
	}
	if refusing.calls.Load() != 1 || serving.calls.Load() != 2 {
		t.Fatalf("calls: refusing replica %d, serving replica %d; want 1 and 2", refusing.calls.Load(), serving.calls.Load())
	}

	bad := &fakeReplica{refuse: status.Error(codes.InvalidArgument, "heartbeat_ms 1 is below the minimum 100")}
	m = messagesFor(t, serveFake(t, bad))
	if _, err := m.Subscribe(ctx, &seqdv1.SubscribeRequest{User: 1}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("subscribe at a replica refusing the request: %v, want its INVALID_ARGUMENT", err)
	}
}
