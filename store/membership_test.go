package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/localcluster"
	"github.com/seqd/seqd/internal/loopback"
	"github.com/seqd/seqd/internal/node"
	"github.com/seqd/seqd/internal/raftnode"
	"github.com/seqd/seqd/internal/rpcerr"
	"github.com/seqd/seqd/internal/testwait"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/store"
)

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// An SRE replaces a store replica whose disk died: a new replica started
// with an empty --data and no --store-peer registers and waits (it serves
// nothing), is added to the shard, catches up, and the dead one is
// removed. The shard then survives losing one of its original replicas,
// with every acknowledged message there, and the removed id cannot come
// back.
func TestReplaceStoreReplica(t *testing.T) {
	c, m := startCluster(t, localcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	admin := seqdv1.NewAdminClient(dial(t, c.ArbiterAddrs()[0]))
	send := func(from int) {
		t.Helper()
		for i := from; i < from+20; i++ {
			if _, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 1, Recipients: []uint64{2}, Conversation: direct(12), ClientMsgId: fmt.Sprint("m", i), Body: []byte("x")}); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
	}
	send(0)

	// s1-r3's disk dies; a replacement starts.
	dead := 2
	if c.StoreLeader(0) == dead {
		dead = 1
	}
	deadID := fmt.Sprintf("s1-r%d", dead+1)
	deadAddr := c.Store(0, dead).GRPCAddr()
	c.KillStore(0, dead)
	// Started with the dead replica's peer list (its own id in place of
	// the dead one's), it would bootstrap a second shard s1: refused.
	conf := c.Store(0, (dead+1)%3).Store().Raft().GetConfiguration() // a live replica's
	if err := conf.Error(); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.AddStoreReplicaWith(ctx, 0, func(cfg *node.Config) {
		for _, srv := range conf.Configuration().Servers {
			p := raftnode.Peer{ID: string(srv.ID), Addr: string(srv.Address)}
			if p.ID == deadID {
				p = raftnode.Peer{ID: cfg.ID, Addr: cfg.RaftAddr}
			}
			cfg.StorePeers = append(cfg.StorePeers, p)
		}
	})
	if err == nil || !strings.Contains(err.Error(), "shard s1 already runs") || !strings.Contains(err.Error(), "seqctl replicas add s1-r4") {
		t.Fatalf("a replacement started with --store-peer: %v, want it refused (shard s1 already runs)", err)
	}
	fresh, freshID, err := c.AddStoreReplica(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	cc := dial(t, c.Store(0, fresh).GRPCAddr())
	info, err := clusterv1.NewStoreNodeClient(cc).ReplicaInfo(ctx, &clusterv1.ReplicaInfoRequest{})
	if err != nil || info.Voter || info.RaftAddr == "" || info.ReplicaId != freshID {
		t.Fatalf("ReplicaInfo of the replacement before it is added: %v %v; want not a voter, with its Raft address", info, err)
	}
	// Not a voter, it holds nothing: it refuses reads rather than answer
	// an empty inbox.
	if _, err := seqdv1.NewMessagesClient(cc).Sync(ctx, &seqdv1.SyncRequest{User: 2}); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not a voter") {
		t.Fatalf("Sync at the replacement before it is added: %v, want UNAVAILABLE (not a voter)", err)
	}

	// Bad input, and ids that are not registered replicas.
	for _, tc := range []struct {
		id   string
		code codes.Code
		msg  string
	}{
		{"", codes.InvalidArgument, "id"},
		{strings.Repeat("x", 300), codes.InvalidArgument, "id"},
		{"s1-r9", codes.NotFound, "no store replica s1-r9 "},
	} {
		if _, err := admin.AddStoreReplica(ctx, &seqdv1.AddStoreReplicaRequest{Id: tc.id}); status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("AddStoreReplica(%.20q): %v, want %v naming %q", tc.id, err, tc.code, tc.msg)
		}
		if _, err := admin.RemoveStoreReplica(ctx, &seqdv1.RemoveStoreReplicaRequest{Id: tc.id}); status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("RemoveStoreReplica(%.20q): %v, want %v naming %q", tc.id, err, tc.code, tc.msg)
		}
	}
	// The dead replica cannot be re-added: it does not answer.
	if _, err := admin.AddStoreReplica(ctx, &seqdv1.AddStoreReplicaRequest{Id: deadID}); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "does not answer") {
		t.Fatalf("AddStoreReplica of the dead replica: %v, want UNAVAILABLE", err)
	}

	// Removing a live replica while another is dead would leave a
	// configuration that cannot commit: refused.
	live := 3 - dead - c.StoreLeader(0)
	_, err = admin.RemoveStoreReplica(ctx, &seqdv1.RemoveStoreReplicaRequest{Id: fmt.Sprintf("s1-r%d", live+1)})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "do not answer") {
		t.Fatalf("removing a live replica with another dead: %v, want FAILED_PRECONDITION", err)
	}
	// A replica under a new id may not take the addresses of one still in
	// the shard (a disk swapped on the same host, started before the old
	// id was removed): its peers would take it for the old one.
	st, err := admin.Status(ctx, &seqdv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = clusterv1.NewArbiterClient(dial(t, c.ArbiterAddrs()[0])).RegisterStoreReplica(ctx, &clusterv1.RegisterStoreReplicaRequest{
		ClusterId: st.ClusterId, Shard: "s1", ReplicaId: "s1-r9", Addr: deadAddr})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "belongs to store replica "+deadID) {
		t.Fatalf("registering a new id at %s's address: %v, want FAILED_PRECONDITION", deadID, err)
	}

	// The old replica is dead: out first, so the two live voters commit
	// while the new one catches up (docs/operations.md).
	removed, err := admin.RemoveStoreReplica(ctx, &seqdv1.RemoveStoreReplicaRequest{Id: deadID})
	if err != nil || len(removed.Voters) != 2 || slices.ContainsFunc(removed.Voters, func(v string) bool { return strings.HasPrefix(v, deadID+"=") }) {
		t.Fatalf("RemoveStoreReplica: %v %v; want 2 voters without %s", removed, err, deadID)
	}
	// Repeating it (a retry whose answer was lost) is harmless; adding
	// the removed id back is refused.
	if again, err := admin.RemoveStoreReplica(ctx, &seqdv1.RemoveStoreReplicaRequest{Id: deadID}); err != nil || !slices.Equal(again.Voters, removed.Voters) {
		t.Fatalf("RemoveStoreReplica again: %v %v; want the same voters", again, err)
	}
	if _, err := admin.AddStoreReplica(ctx, &seqdv1.AddStoreReplicaRequest{Id: deadID}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "was removed from shard s1") {
		t.Fatalf("AddStoreReplica of the removed replica: %v, want FAILED_PRECONDITION", err)
	}
	added, err := admin.AddStoreReplica(ctx, &seqdv1.AddStoreReplicaRequest{Id: freshID})
	if err != nil || added.Shard != "s1" || len(added.Voters) != 3 || !slices.ContainsFunc(added.Voters, func(v string) bool { return strings.HasPrefix(v, freshID+"=") }) {
		t.Fatalf("AddStoreReplica: %v %v; want 3 voters with %s", added, err, freshID)
	}
	// Repeating it is harmless.
	if again, err := admin.AddStoreReplica(ctx, &seqdv1.AddStoreReplicaRequest{Id: freshID}); err != nil || !slices.Equal(again.Voters, added.Voters) {
		t.Fatalf("AddStoreReplica again: %v %v; want the same voters", again, err)
	}
	// Every arbiter's map drops it (followers apply the change shortly).
	for _, addr := range c.ArbiterAddrs() {
		routing := seqdv1.NewRoutingClient(dial(t, addr))
		var ids []string
		testwait.For(t, 10*time.Second, "the shard map at "+addr+" to list the replacement and not the removed replica", func() bool {
			rt, err := routing.GetRoutingTable(ctx, &seqdv1.GetRoutingTableRequest{})
			if err != nil {
				return false
			}
			ids = ids[:0]
			for _, r := range rt.Table.Shards[0].Replicas {
				ids = append(ids, r.Id)
			}
			return !slices.Contains(ids, deadID) && slices.Contains(ids, freshID) && len(ids) == 3
		})
	}
	// The removed replica, restarted, may not register again.
	if err := c.RestartStore(ctx, 0, dead); err == nil || !strings.Contains(err.Error(), "was removed from shard s1") {
		t.Fatalf("restarting the removed replica: %v, want a refusal", err)
	}

	// The replacement catches up and serves; the shard now survives
	// losing another of the original replicas.
	send(20)
	testwait.For(t, 30*time.Second, "the replacement to catch up", func() bool {
		info, err := clusterv1.NewStoreNodeClient(cc).ReplicaInfo(ctx, &clusterv1.ReplicaInfoRequest{})
		return err == nil && info.Voter && info.AppliedIndex >= c.Store(0, c.StoreLeader(0)).Store().FSM().AppliedIndex()
	})
	other := 0
	if other == dead {
		other = 1
	}
	c.KillStore(0, other)
	send(40)
	// Its own state, not a read it forwards to the leader.
	holds(t, c.Store(0, fresh).Store().FSM(), 2, 60)

	// A change sent to a follower names the leader; a change for another
	// shard, or a malformed one, is refused.
	lead := c.StoreLeader(0)
	follower := -1
	for i := range 4 {
		if i != dead && i != other && i != lead {
			follower = i
		}
	}
	fcc := clusterv1.NewStoreNodeClient(dial(t, c.Store(0, follower).GRPCAddr()))
	_, err = fcc.ChangeReplicas(ctx, &clusterv1.ChangeReplicasRequest{ShardId: "s1", Change: &clusterv1.ChangeReplicasRequest_Remove{Remove: "s1-r9"}})
	if status.Code(err) != codes.Unavailable || rpcerr.LeaderHint(err) != c.Store(0, lead).GRPCAddr() {
		t.Fatalf("ChangeReplicas at a follower: %v, want UNAVAILABLE naming the leader %s", err, c.Store(0, lead).GRPCAddr())
	}
	lcc := clusterv1.NewStoreNodeClient(dial(t, c.Store(0, lead).GRPCAddr()))
	for _, tc := range []struct {
		req  *clusterv1.ChangeReplicasRequest
		code codes.Code
	}{
		{&clusterv1.ChangeReplicasRequest{ShardId: "s2", Change: &clusterv1.ChangeReplicasRequest_Remove{Remove: freshID}}, codes.FailedPrecondition},
		{&clusterv1.ChangeReplicasRequest{ShardId: "s1"}, codes.InvalidArgument},
		{&clusterv1.ChangeReplicasRequest{ShardId: "s1", Change: &clusterv1.ChangeReplicasRequest_Add{}}, codes.InvalidArgument},
		{&clusterv1.ChangeReplicasRequest{ShardId: "s1", Change: &clusterv1.ChangeReplicasRequest_Add{Add: &clusterv1.ReplicaPeer{Id: "s1-r9"}}}, codes.InvalidArgument},
		{&clusterv1.ChangeReplicasRequest{ShardId: "s1", Change: &clusterv1.ChangeReplicasRequest_Add{Add: &clusterv1.ReplicaPeer{Id: "s1-r9", RaftAddr: info.RaftAddr}}}, codes.AlreadyExists},
		{&clusterv1.ChangeReplicasRequest{ShardId: "s1", Change: &clusterv1.ChangeReplicasRequest_Remove{}}, codes.InvalidArgument},
	} {
		if _, err := lcc.ChangeReplicas(ctx, tc.req); status.Code(err) != tc.code {
			t.Errorf("ChangeReplicas(%v): %v, want %v", tc.req, err, tc.code)
		}
	}
	// Down to one voter, which the leader will not remove.
	remove := func(i int) (*clusterv1.ChangeReplicasResponse, error) {
		return lcc.ChangeReplicas(ctx, &clusterv1.ChangeReplicasRequest{ShardId: "s1", Change: &clusterv1.ChangeReplicasRequest_Remove{Remove: fmt.Sprintf("s1-r%d", i+1)}})
	}
	for n, i := range []int{other, follower} {
		if resp, err := remove(i); err != nil || len(resp.Voters) != 2-n {
			t.Fatalf("removing s1-r%d: %v %v, want %d voters", i+1, resp, err, 2-n)
		}
	}
	if _, err := remove(lead); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "last voter") {
		t.Fatalf("removing the last voter: %v, want FAILED_PRECONDITION", err)
	}
}

// A replica moved to another host keeps its id and data but gets new
// addresses: restarted there, it registers its new gRPC address (the old
// one no longer answers), and AddStoreReplica tells the shard its new
// Raft address. The shard then relies on it at the new address.
func TestMoveStoreReplica(t *testing.T) {
	c, m := startCluster(t, localcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	admin := seqdv1.NewAdminClient(dial(t, c.ArbiterAddrs()[0]))
	for i := range 10 {
		if _, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 1, Recipients: []uint64{2}, Conversation: direct(12), ClientMsgId: fmt.Sprint("m", i), Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	moved := 2
	if c.StoreLeader(0) == moved {
		moved = 1
	}
	id := fmt.Sprintf("s1-r%d", moved+1)
	if err := c.StopStore(0, moved); err != nil {
		t.Fatal(err)
	}
	host, _, _ := strings.Cut(c.ArbiterAddrs()[0], ":")
	var raftAddr, grpcAddr string
	for _, a := range []*string{&raftAddr, &grpcAddr} {
		addr, err := loopback.FreeAddr(host)
		if err != nil {
			t.Fatal(err)
		}
		*a = addr
	}
	if err := c.RestartStoreWith(ctx, 0, moved, func(cfg *node.Config) { cfg.RaftAddr, cfg.GRPCAddr = raftAddr, grpcAddr }); err != nil {
		t.Fatal(err)
	}
	added, err := admin.AddStoreReplica(ctx, &seqdv1.AddStoreReplicaRequest{Id: id})
	if err != nil || !slices.Contains(added.Voters, id+"="+raftAddr) || len(added.Voters) != 3 {
		t.Fatalf("AddStoreReplica of the moved replica: %v %v; want 3 voters with %s=%s", added, err, id, raftAddr)
	}
	// With another original replica down, the shard needs the moved one
	// at its new address.
	other := 0
	if other == c.StoreLeader(0) {
		other = 3 - moved
	}
	c.KillStore(0, other)
	if _, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 1, Recipients: []uint64{2}, Conversation: direct(12), ClientMsgId: "after", Body: []byte("x")}); err != nil {
		t.Fatalf("send with the moved replica as the majority's second: %v", err)
	}
	holds(t, c.Store(0, moved).Store().FSM(), 2, 11)
}

// A replica that lost its data, restarted with its --store-peer list on
// an empty --data, is a voter the shard already has: it does not
// bootstrap, the leader brings it back, and the shard can rely on it.
func TestStoreReplicaRejoinsAfterLosingItsData(t *testing.T) {
	empty := t.TempDir() // removed after the cluster closes (cleanups run last first)
	c, m := startCluster(t, localcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	send := func(from, n int) {
		t.Helper()
		for i := from; i < from+n; i++ {
			if _, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 1, Recipients: []uint64{2}, Conversation: direct(12), ClientMsgId: fmt.Sprint("m", i), Body: []byte("x")}); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
	}
	send(0, 10)
	lost := 2
	if c.StoreLeader(0) == lost {
		lost = 1
	}
	if err := c.StopStore(0, lost); err != nil {
		t.Fatal(err)
	}
	if err := c.RestartStoreWith(ctx, 0, lost, func(cfg *node.Config) { cfg.DataDir = empty }); err != nil {
		t.Fatalf("restarting a replica on an empty --data with its peers: %v", err)
	}
	holds(t, c.Store(0, lost).Store().FSM(), 2, 10)
	other := 0
	if other == c.StoreLeader(0) {
		other = 3 - lost
	}
	c.KillStore(0, other)
	send(10, 5)
	holds(t, c.Store(0, lost).Store().FSM(), 2, 15)
}

// holds waits until the replica whose state f is has applied user's n
// events (the last commit may still be applying there), and fails if it
// does not.
func holds(t *testing.T, f *store.FSM, user uint64, n int) {
	t.Helper()
	testwait.For(t, 10*time.Second, fmt.Sprintf("the replica to hold user %d's %d events", user, n), func() bool {
		res, err := f.Sync(user, 0, 1000)
		if err != nil {
			t.Fatalf("Sync of the replica's own state: %v", err)
		}
		return len(res.Events) == n
	})
}

// A new replica's bootstrap check reads the shard map with from_leader,
// asking the arbiters in turn: each of them answers it with the whole
// shard, a follower by forwarding to the leader. (That a leader still
// catching up refuses it is TestLeaderCatchingUpAnswersUnavailable's.)
func TestShardMapFromLeaderAtEveryArbiter(t *testing.T) {
	c, _ := startCluster(t, localcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, addr := range c.ArbiterAddrs() {
		resp, err := seqdv1.NewRoutingClient(dial(t, addr)).GetRoutingTable(ctx, &seqdv1.GetRoutingTableRequest{FromLeader: true})
		if err != nil {
			t.Fatalf("shard map from the leader, asked at %s: %v", addr, err)
		}
		if sh := resp.Table.GetShards(); len(sh) != 1 || len(sh[0].Replicas) != 3 {
			t.Fatalf("shard map from the leader, asked at %s: %v, want shard s1 with its 3 replicas", addr, sh)
		}
	}
}
