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

// fakeReplica answers Subscribe and Sync with refuse; or Subscribe by
// holding the stream open, having accepted it (sent its header) unless
// hang, and Sync with an empty page, maybe_stale if stale; Sync waits for
// its deadline if hang.
type fakeReplica struct {
	seqdv1.UnimplementedMessagesServer
	refuse      error
	hang, stale bool
	calls       atomic.Int64
}

func (f *fakeReplica) Subscribe(_ *seqdv1.SubscribeRequest, st seqdv1.Messages_SubscribeServer) error {
	f.calls.Add(1)
	if f.refuse != nil {
		return f.refuse
	}
	if !f.hang {
		if err := st.SendHeader(metadata.MD{}); err != nil {
			return err
		}
	}
	<-st.Context().Done()
	return nil
}

func (f *fakeReplica) Sync(ctx context.Context, _ *seqdv1.SyncRequest) (*seqdv1.SyncResponse, error) {
	f.calls.Add(1)
	if f.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if f.refuse != nil {
		return nil, f.refuse
	}
	return &seqdv1.SyncResponse{MaybeStale: f.stale}, nil
}

// serve starts a gRPC server on loopback with the services register adds,
// until the test ends, and returns its address.
func serve(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func serveFake(t *testing.T, f *fakeReplica) string {
	return serve(t, func(srv *grpc.Server) { seqdv1.RegisterMessagesServer(srv, f) })
}

// allocTable is a routing table of version v whose one slot AllocSvr
// alloc1, at owner, holds.
func allocTable(v uint64, owner string) *seqdv1.RoutingTable {
	return &seqdv1.RoutingTable{Version: v, SectionSize: 1 << 20, NumSlots: 1, Slots: []*seqdv1.SlotAssignment{{Owner: "alloc1"}},
		Nodes: []*seqdv1.NodeInfo{{Id: "alloc1", Addr: owner}}}
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

// With a leader known, Subscribe tries it first and then every other
// replica once. Before, attempt n went to replica first+n, so the leader
// could be tried twice and a replica that would serve never.
func TestSubscribeTriesEveryReplicaOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	down := status.Error(codes.Unavailable, "store replica is shutting down")
	a, b, c := &fakeReplica{refuse: down}, &fakeReplica{refuse: down}, &fakeReplica{}
	aAddr := serveFake(t, a)
	m := messagesFor(t, aAddr, serveFake(t, b), serveFake(t, c))
	for i := range 3 { // each starting point in turn
		m.remember("s1", aAddr)
		st, err := m.Subscribe(ctx, &seqdv1.SubscribeRequest{User: 1})
		if err != nil {
			t.Fatalf("subscribe %d with the leader and one more replica down: %v", i, err)
		}
		defer st.CloseSend()
	}
	if a.calls.Load() != 3 || c.calls.Load() != 3 {
		t.Fatalf("calls: leader %d, serving replica %d; want 3 each", a.calls.Load(), c.calls.Load())
	}
}

// A replica that takes the stream and never answers (a paused process)
// holds Subscribe for subscribeAcceptWait, then the next replica gets a
// turn, and the silent one is not tried first again.
func TestSubscribeMovesOnFromASilentReplica(t *testing.T) {
	defer func(d time.Duration) { subscribeAcceptWait = d }(subscribeAcceptWait)
	subscribeAcceptWait = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	silent, serving := &fakeReplica{hang: true}, &fakeReplica{}
	silentAddr := serveFake(t, silent)
	m := messagesFor(t, silentAddr, serveFake(t, serving))
	m.remember("s1", silentAddr)
	start := time.Now()
	st, err := m.Subscribe(ctx, &seqdv1.SubscribeRequest{User: 1})
	if err != nil {
		t.Fatalf("subscribe with the leader silent: %v", err)
	}
	defer st.CloseSend()
	if took := time.Since(start); took > 5*time.Second || serving.calls.Load() != 1 {
		t.Fatalf("took %v, serving replica called %d times; want it reached after the accept wait", took, serving.calls.Load())
	}
	if l := m.leader(m.c.Table().Shards[0]); l == silentAddr {
		t.Fatal("the silent replica is still taken for the leader")
	}
}

// A read a replica answers without its leader (maybe_stale) is returned
// only if no other replica answers better: the router asks the others.
// Before, every call without a known leader started at the first replica,
// and one cut off from its leader answered every read stale while the
// shard had a reachable leader.
func TestStaleReadAsksTheOtherReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cutOff, current := &fakeReplica{stale: true}, &fakeReplica{}
	m := messagesFor(t, serveFake(t, cutOff), serveFake(t, current))
	for i := range 4 {
		r, err := m.Sync(ctx, &seqdv1.SyncRequest{User: 1})
		if err != nil || r.MaybeStale {
			t.Fatalf("sync %d: %v, maybe_stale %v; want the current replica's answer", i, err, r.GetMaybeStale())
		}
	}
	// A replica down between the stale one and the leader does not end
	// the search.
	down := &fakeReplica{refuse: status.Error(codes.Unavailable, "connection refused")}
	three := messagesFor(t, serveFake(t, &fakeReplica{stale: true}), serveFake(t, down), serveFake(t, &fakeReplica{}))
	for i := range 6 {
		r, err := three.Sync(ctx, &seqdv1.SyncRequest{User: 1})
		if err != nil || r.MaybeStale {
			t.Fatalf("sync %d with one replica cut off and one down: %v, maybe_stale %v; want the leader's answer", i, err, r.GetMaybeStale())
		}
	}
	// With every replica cut off, the stale answer it is, saying so.
	both := messagesFor(t, serveFake(t, &fakeReplica{stale: true}), serveFake(t, &fakeReplica{stale: true}))
	if r, err := both.Sync(ctx, &seqdv1.SyncRequest{User: 1}); err != nil || !r.MaybeStale {
		t.Fatalf("sync with every replica cut off: %v, maybe_stale %v; want a stale answer", err, r.GetMaybeStale())
	}
}

// A leader's own refusal (a rate limit) does not make the router forget
// it: the next call goes to it again, not through a follower.
func TestLeaderKeptAfterItsOwnRefusal(t *testing.T) {
	limited := &fakeReplica{refuse: status.Error(codes.ResourceExhausted, "rate limit")}
	addr := serveFake(t, limited)
	m := messagesFor(t, addr, serveFake(t, &fakeReplica{}))
	m.remember("s1", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := m.Sync(ctx, &seqdv1.SyncRequest{User: 1}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("sync at a rate-limiting leader: %v, want its RESOURCE_EXHAUSTED", err)
	}
	if l := m.leader(m.c.Table().Shards[0]); l != addr {
		t.Fatalf("leader after its refusal: %q, want %q kept", l, addr)
	}
}

// A leader that does not answer in time (paused) is not tried first again:
// the call that timed out there forgets it, and the next goes round robin.
func TestSilentLeaderIsForgotten(t *testing.T) {
	silent, serving := &fakeReplica{hang: true}, &fakeReplica{}
	silentAddr := serveFake(t, silent)
	m := messagesFor(t, silentAddr, serveFake(t, serving))
	m.remember("s1", silentAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := m.Sync(ctx, &seqdv1.SyncRequest{User: 1}); err == nil {
		t.Log("the first call found the serving replica within its deadline")
	}
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := m.Sync(ctx, &seqdv1.SyncRequest{User: 1})
		cancel()
		if err != nil {
			t.Fatalf("sync %d after the silent leader timed out once: %v", i, err)
		}
	}
}

// fakeArbiter answers GetRoutingTable with its own table, and asked for
// the leader's with the leader's, or UNAVAILABLE if it cannot reach one.
type fakeArbiter struct {
	seqdv1.UnimplementedRoutingServer
	own, leaders *seqdv1.RoutingTable
}

func (f *fakeArbiter) GetRoutingTable(_ context.Context, r *seqdv1.GetRoutingTableRequest) (*seqdv1.GetRoutingTableResponse, error) {
	if !r.FromLeader {
		return &seqdv1.GetRoutingTableResponse{Table: f.own}, nil
	}
	if f.leaders == nil {
		return nil, status.Error(codes.Unavailable, "no arbiter leader reachable")
	}
	return &seqdv1.GetRoutingTableResponse{Table: f.leaders}, nil
}

// A refresh takes the arbiter leader's table, through any arbiter that
// reaches the leader: an arbiter cut off from the others, asked first,
// answers an old table of its own, which is not the answer. Before, the
// first address that answered at all ended the refresh.
func TestRefreshTakesTheLeadersTable(t *testing.T) {
	table := func(v uint64) *seqdv1.RoutingTable { return allocTable(v, "127.0.0.1:1") }
	serveArbiter := func(f *fakeArbiter) string {
		return serve(t, func(srv *grpc.Server) { seqdv1.RegisterRoutingServer(srv, f) })
	}
	cutOff := serveArbiter(&fakeArbiter{own: table(1)})
	reaching := serveArbiter(&fakeArbiter{own: table(1), leaders: table(2)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := New(ctx, Config{Addrs: []string{cutOff, reaching}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v := c.Table().GetVersion(); v != 2 {
		t.Fatalf("routing table version %d after the first refresh, want the leader's 2", v)
	}
	// With no arbiter reaching a leader, anyone's table is better than
	// none.
	lone := serveArbiter(&fakeArbiter{own: table(1)})
	c2, err := New(ctx, Config{Addrs: []string{lone}})
	if err != nil {
		t.Fatalf("no leader reachable: %v, want the arbiter's own table", err)
	}
	defer c2.Close()
	if v := c2.Table().GetVersion(); v != 1 {
		t.Fatalf("routing table version %d, want the lone arbiter's 1", v)
	}
}

// A batcher for an address that owns no slot in a newer table is closed
// and dropped: an AllocSvr that moved to a new address left a goroutine
// and a stream, or its attempts to open one, for the client's life.
func TestBatchersOfDepartedAllocSvrsAreClosed(t *testing.T) {
	c := &Client{pool: grpcconn.NewPool(), batchers: map[string]*batcher{}}
	defer c.Close()
	if !c.learn(allocTable(1, "127.0.0.1:1")) {
		t.Fatal("the first table was not taken")
	}
	old, err := c.batcher("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if !c.learn(allocTable(2, "127.0.0.1:2")) {
		t.Fatal("the newer table was not taken")
	}
	select {
	case <-old.quit:
	default:
		t.Fatal("the batcher of the address that left the table is still open")
	}
	if _, ok := c.batchers["127.0.0.1:1"]; ok {
		t.Fatal("the batcher of the address that left the table is still kept")
	}
}

// A refresh through an address that takes connections and never answers
// (a paused process: the kernel completes the handshake) holds a caller
// only as long as the caller's own deadline, not the refresh's second per
// address; callers meanwhile share the one refresh under way.
func TestRefreshWaitsOnlyAsLongAsTheCaller(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			defer conn.Close() // held open, never read
		}
	}()
	c := &Client{cfg: Config{Addrs: []string{lis.Addr().String(), lis.Addr().String()}}, pool: grpcconn.NewPool(), batchers: map[string]*batcher{}}
	defer c.Close()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := c.refresh(ctx, false); err == nil {
		t.Fatal("a refresh through a silent address succeeded")
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the caller with a 200 ms deadline waited %v", took)
	}
	c.refreshMu.Lock()
	underWay := c.refreshing != nil
	c.refreshMu.Unlock()
	if !underWay {
		t.Fatal("no refresh under way for the next caller to join")
	}
}
