package store_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/localcluster"
	"github.com/seqd/seqd/internal/testwait"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
	"github.com/seqd/seqd/store"
)

// A shard in the middle of an upgrade: two replicas of a newer build (one
// store format up) and one of this build. When the newer leader proposes
// an entry that needs its format, the old replica halts there instead of
// applying it differently: it leaves the shard, reports itself unhealthy,
// and halts again at the same entry if restarted unchanged. The shard
// keeps serving on the newer two. Once upgraded, the replica applies from
// that entry and ends up with the others' state.
func TestOldReplicaHaltsAtNewerEntryUntilUpgraded(t *testing.T) {
	store.SkipSlowUnderRace(t)
	c, m := mixedShard(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	sendSome(t, m, 1, 2, 5)
	moveLeaderOff(t, c, "a newer replica to lead", func(i int) bool { return i == old })

	data := store.EncodeBatchNeeding(t, &clusterv1.StoreBatch{NowMs: time.Now().UnixMilli(), Ops: []*clusterv1.StoreOp{newerSend()}}, newer)
	f := c.Store(0, c.StoreLeader(0)).Store().Raft().Apply(data, 5*time.Second)
	if err := f.Error(); err != nil {
		t.Fatalf("proposing the newer entry: %v", err)
	}
	if br := f.Response().(*store.BatchResult); br.Halted != nil || br.Err != nil || br.Results[0].Status != clusterv1.OpStatus_OP_STATUS_OK {
		t.Fatalf("the newer leader applied its entry as %+v", br)
	}
	haltedAt := func() string {
		var fe *store.FormatError
		if err := c.Store(0, old).Health(); errors.Is(err, store.ErrHalted) && errors.As(err, &fe) {
			return fe.What
		}
		return ""
	}
	testwait.For(t, 10*time.Second, "the old replica to halt", func() bool { return haltedAt() != "" })
	at := haltedAt()
	t.Logf("old replica: %v", c.Store(0, old).Health())
	if got := storeGauge(t, c, "seqd_store_halted", "s1-r3"); got != 1 {
		t.Fatalf("seqd_store_halted of the old replica = %v, want 1", got)
	}
	// It answers every call UNAVAILABLE, naming why, rather than serve
	// state that is behind for good.
	cc, err := grpc.NewClient(c.Store(0, old).GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = seqdv1.NewMessagesClient(cc).Sync(ctx, &seqdv1.SyncRequest{User: 2})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "replica halted: "+at) {
		t.Fatalf("Sync at the halted replica: %v, want UNAVAILABLE naming %s", err, at)
	}
	// Except which format it runs, so the leader can say who holds the
	// shard back.
	info, err := clusterv1.NewStoreNodeClient(cc).ReplicaInfo(ctx, &clusterv1.ReplicaInfoRequest{})
	if err != nil || info.ReplicaId != "s1-r3" || info.StoreFormat != store.StoreFormat || !strings.Contains(info.Halted, at) {
		t.Fatalf("ReplicaInfo at the halted replica: %v, %v; want s1-r3 on format %d, halted at %s", info, err, store.StoreFormat, at)
	}

	sendSome(t, m, 3, 4, 10)
	if got := len(syncAll(t, m, 701)); got != 1 {
		t.Fatalf("user 701 holds %d events, want the newer entry's message", got)
	}

	c.KillStore(0, old)
	if err := c.RestartStore(ctx, 0, old); err != nil {
		t.Fatalf("restarting the old build: %v", err)
	}
	testwait.For(t, 20*time.Second, "the restarted old build to halt", func() bool { return haltedAt() != "" })
	if again := haltedAt(); again != at {
		t.Fatalf("the restarted old build halted at %s, first at %s", again, at)
	}

	c.KillStore(0, old)
	upgradeOld(t, ctx, c, m)
	if err := c.Store(0, old).Health(); err != nil {
		t.Fatalf("upgraded replica after catching up: %v", err)
	}
	if got := storeGauge(t, c, "seqd_store_halted", "s1-r3"); got != 0 {
		t.Fatalf("seqd_store_halted of the upgraded replica = %v, want 0", got)
	}
}

// storeGauge reads the gauge name of one replica.
func storeGauge(t *testing.T, c *localcluster.Cluster, name, replica string) float64 {
	t.Helper()
	mfs, err := c.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "node" && lp.GetValue() == replica {
					return mt.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s for %s", name, replica)
	return 0
}

// The same, when the old replica catches up by snapshot: it was down while
// the newer entry was applied and the log compacted past it, so the leader
// sends it a snapshot of format-2 data. It refuses to restore it and
// halts; restarted unchanged it cannot start (Raft saved that snapshot and
// cannot restore it), and says why; upgraded, it starts from the snapshot.
func TestOldReplicaRefusesNewerSnapshotUntilUpgraded(t *testing.T) {
	store.SkipSlowUnderRace(t)
	c, m := mixedShard(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	sendSome(t, m, 1, 2, 5)
	c.KillStore(0, old)
	testwait.For(t, 10*time.Second, "a newer replica to lead", func() bool { l := c.StoreLeader(0); return l >= 0 && l != old })
	data := store.EncodeBatchNeeding(t, &clusterv1.StoreBatch{NowMs: time.Now().UnixMilli(), Ops: []*clusterv1.StoreOp{newerSend()}}, newer)
	if err := c.Store(0, c.StoreLeader(0)).Store().Raft().Apply(data, 5*time.Second).Error(); err != nil {
		t.Fatalf("proposing the newer entry: %v", err)
	}
	sendSome(t, m, 3, 4, 5)
	// Both newer replicas snapshot and keep no log behind it.
	for i := 0; i < old; i++ {
		r := c.Store(0, i).Store().Raft()
		rc := r.ReloadableConfig()
		rc.TrailingLogs = 0
		if err := r.ReloadConfig(rc); err != nil {
			t.Fatal(err)
		}
		if err := r.Snapshot().Error(); err != nil {
			t.Fatalf("snapshot on replica %d: %v", i+1, err)
		}
	}

	if err := c.RestartStore(ctx, 0, old); err != nil {
		t.Fatalf("restarting the old build: %v", err)
	}
	var fe *store.FormatError
	testwait.For(t, 20*time.Second, "the old replica to refuse the snapshot", func() bool {
		err := c.Store(0, old).Health()
		return errors.Is(err, store.ErrHalted) && errors.As(err, &fe)
	})
	if !strings.HasPrefix(fe.What, "a snapshot taken at index") || fe.Need != newer {
		t.Fatalf("halted on %+v, want a snapshot needing format %d", fe, newer)
	}

	c.KillStore(0, old)
	err := c.RestartStore(ctx, 0, old)
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), fmt.Sprint("needs store format ", newer)) {
		t.Fatalf("restarting the old build on a saved newer snapshot: %v, want a refusal naming the format", err)
	}

	upgradeOld(t, ctx, c, m)
}

// The other side of a mixed shard: a leader proposes an op of a newer
// store format only once every replica applies that format. MarkRead is
// made an op of the newer format here. While s1-r3 runs the older build,
// the newer leader refuses MarkRead (FAILED_PRECONDITION, naming s1-r3)
// instead of proposing an entry s1-r3 would halt at, and ops every format
// applies go on. Once s1-r3 is upgraded, MarkRead goes through, and its
// entry carries the newer min_format: the older build can no longer open
// that replica's data.
func TestLeaderProposesNewerFormatOnlyOnceEveryReplicaHasIt(t *testing.T) {
	store.SkipSlowUnderRace(t)
	store.SetFormatPollInterval(t, 100*time.Millisecond)
	store.SetOpFormat(t, "mark_read", newer)
	c, m := mixedShard(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	sendSome(t, m, 1, 2, 3)
	moveLeaderOff(t, c, "a newer replica to lead", func(i int) bool { return i == old })
	want := fmt.Sprintf("needs store format %d, and replica s1-r3 of shard s1 runs a build of format %d", newer, store.StoreFormat)
	refusedFor := func(what, want string) {
		t.Helper()
		var err error
		// The router retries UNAVAILABLE (the leader still asking) until
		// the call's deadline.
		testwait.For(t, 15*time.Second, "the leader to hear the replicas' formats", func() bool {
			err = markRead(ctx, m)
			return status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded
		})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), want) {
			t.Fatalf("MarkRead %s: %v, want FAILED_PRECONDITION saying %q", what, err, want)
		}
	}
	refusedFor("with s1-r3 on the older build", want)
	leader := fmt.Sprintf("s1-r%d", c.StoreLeader(0)+1)
	if got := storeGauge(t, c, "seqd_store_shard_format", leader); got != float64(store.StoreFormat) {
		t.Fatalf("seqd_store_shard_format on the leader = %v, want %d", got, store.StoreFormat)
	}
	sendSome(t, m, 1, 2, 3)
	if err := c.Store(0, old).Health(); err != nil {
		t.Fatalf("the older replica: %v, want it applying entries", err)
	}

	// Down, it counts with the format it last told this leader.
	c.KillStore(0, old)
	time.Sleep(300 * time.Millisecond) // a few polls
	refusedFor("with s1-r3 down, last heard on the older build", want)

	upgradeOld(t, ctx, c, m)
	testwait.For(t, 20*time.Second, "MarkRead to go through once every replica has the newer format", func() bool {
		return markRead(ctx, m) == nil
	})
	lead := c.StoreLeader(0)
	if got := storeGauge(t, c, "seqd_store_shard_format", fmt.Sprintf("s1-r%d", lead+1)); got != float64(newer) {
		t.Fatalf("seqd_store_shard_format on the leader = %v, want %d", got, newer)
	}

	// A leader that never heard from a replica (down all its term) cannot
	// vouch for it, and says so.
	c.KillStore(0, old)
	moveLeaderOff(t, c, "another newer replica to lead", func(i int) bool { return i == lead || i == old })
	refusedFor("from a leader elected while s1-r3 was down", "replica s1-r3 has not told its store format")
	if err := c.RestartStore(ctx, 0, old); err != nil {
		t.Fatalf("restarting s1-r3 on the newer build: %v", err)
	}
	testwait.For(t, 20*time.Second, "MarkRead to go through once s1-r3 is back", func() bool {
		return markRead(ctx, m) == nil
	})
	lead = c.StoreLeader(0)
	applied := c.Store(0, lead).Store().FSM().AppliedIndex()
	testwait.For(t, 10*time.Second, "s1-r3 to apply the MarkRead", func() bool {
		return c.Store(0, old).Store().FSM().AppliedIndex() >= applied
	})
	c.KillStore(0, old)
	store.SetReplicaFormat(func(string) uint32 { return store.StoreFormat })
	err := c.RestartStore(ctx, 0, old)
	if !strings.Contains(fmt.Sprint(err), fmt.Sprint("needs store format ", newer)) {
		t.Fatalf("opening s1-r3's data on the older build after the MarkRead: %v, want a refusal naming format %d", err, newer)
	}
}

// The gate follows the Raft configuration: a server added to the shard
// (here a non-voter that never answers) holds back ops of a newer format
// until it tells its format or is removed, and the leader asks again as
// soon as the configuration changes.
func TestFormatGateFollowsTheRaftConfiguration(t *testing.T) {
	store.SkipSlowUnderRace(t)
	c, m := newerShardPollingOnChange(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := c.Store(0, c.StoreLeader(0)).Store().Raft()
	if err := r.AddNonvoter("s1-r9", "127.0.0.1:1", 0, 5*time.Second).Error(); err != nil {
		t.Fatalf("adding a non-voter: %v", err)
	}
	var err error
	testwait.For(t, 20*time.Second, "the leader to ask the changed configuration", func() bool {
		err = markRead(ctx, m)
		return status.Code(err) == codes.FailedPrecondition
	})
	if !strings.Contains(err.Error(), "replica s1-r9 has not told its store format") {
		t.Fatalf("MarkRead with a silent non-voter in the shard: %v, want it named", err)
	}
	if err := r.RemoveServer("s1-r9", 0, 5*time.Second).Error(); err != nil {
		t.Fatalf("removing the non-voter: %v", err)
	}
	testwait.For(t, 20*time.Second, "MarkRead to go through once the non-voter is removed", func() bool {
		return markRead(ctx, m) == nil
	})

	// Added back, it is a new member: the leader forgot when it first
	// missed it (well over formatGrace ago), so it gets the grace afresh
	// and MarkRead waits (UNAVAILABLE, which the router retries) instead
	// of failing at once.
	if err := r.AddNonvoter("s1-r9", "127.0.0.1:1", 0, 5*time.Second).Error(); err != nil {
		t.Fatalf("adding the non-voter back: %v", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancelShort()
	_, err = m.MarkRead(short, &seqdv1.MarkReadRequest{User: 2, Conversation: direct(1002), UpToSeq: 1})
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
		t.Fatalf("MarkRead just after the silent non-voter came back: %v, want it held back for the grace period", err)
	}
	testwait.For(t, 20*time.Second, "the grace for the re-added non-voter to run out", func() bool {
		err = markRead(ctx, m)
		return status.Code(err) == codes.FailedPrecondition
	})
	if !strings.Contains(err.Error(), "replica s1-r9 has not told its store format") {
		t.Fatalf("MarkRead with the silent non-voter back: %v, want it named", err)
	}
}

// A replica removed and added back under the same id is a new member,
// even when both changes fall between two of the leader's polls: the
// leader does not vouch for it with the format it told before it left.
// Here it told the newer format, then was stopped, removed and added back
// (it may have been reinstalled on an older build meanwhile): MarkRead,
// an op of the newer format, is held back until it answers again.
func TestFormatGateAsksAReplicaAddedBackBetweenPolls(t *testing.T) {
	store.SkipSlowUnderRace(t)
	c, m := newerShardPollingOnChange(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	lead := c.StoreLeader(0)
	gone := (lead + 1) % 3
	id := raft.ServerID(fmt.Sprintf("s1-r%d", gone+1))
	r := c.Store(0, lead).Store().Raft()
	addr := raftAddr(t, r, id)
	if err := c.StopStore(0, gone); err != nil {
		t.Fatalf("stopping %s: %v", id, err)
	}
	// Down, it still counts with the format it told: a replica cannot
	// lower its format without a restart, and one that comes back older
	// halts rather than diverge.
	if err := markRead(ctx, m); err != nil {
		t.Fatalf("MarkRead with %s down: %v", id, err)
	}
	if err := r.RemoveServer(id, 0, 5*time.Second).Error(); err != nil {
		t.Fatalf("removing %s: %v", id, err)
	}
	if err := r.AddVoter(id, addr, 0, 5*time.Second).Error(); err != nil {
		t.Fatalf("adding %s back: %v", id, err)
	}
	var err error
	testwait.For(t, 20*time.Second, "the leader to call the added-back replica missing", func() bool {
		err = markRead(ctx, m)
		if err == nil {
			t.Fatalf("MarkRead went through while %s, added back, has not told its format", id)
		}
		return status.Code(err) == codes.FailedPrecondition
	})
	if want := fmt.Sprintf("replica %s has not told its store format", id); !strings.Contains(err.Error(), want) {
		t.Fatalf("MarkRead with %s added back and down: %v, want it named", id, err)
	}
	if err := c.RestartStore(ctx, 0, gone); err != nil {
		t.Fatalf("restarting %s: %v", id, err)
	}
	testwait.For(t, 30*time.Second, "MarkRead to go through once the added-back replica answers", func() bool {
		return markRead(ctx, m) == nil
	})
}

// A rolling upgrade under a send load, as docs/operations.md describes
// it: each replica in turn, followers first and the leader last, is
// stopped and started again on a build one store format newer, in which
// MarkRead is an op of that format. No replica halts and the sends go on
// throughout; MarkRead is refused until the last replica runs the newer
// build, and works after. Every acknowledged send is in both inboxes
// exactly once, and the replicas end with the same state.
func TestRollingUpgradeUnderLoad(t *testing.T) {
	store.SetFormatPollInterval(t, 100*time.Millisecond)
	store.SetOpFormat(t, "mark_read", newer)
	var mu sync.Mutex
	upgraded := map[string]bool{}
	store.SetReplicaFormat(func(id string) uint32 {
		mu.Lock()
		defer mu.Unlock()
		if upgraded[id] {
			return newer
		}
		return store.StoreFormat
	})
	t.Cleanup(func() { store.SetReplicaFormat(nil) })
	c, m := startCluster(t, localcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	sendSome(t, m, 1, 2, 1)
	const users = 20
	stop := make(chan struct{})
	sent, wg, retries := sendLoad(m, among(users), 4, stop)
	testwait.For(t, 10*time.Second, "sends to flow", func() bool { return countSent(sent, wg) > 50 })

	leader := c.StoreLeader(0)
	if leader < 0 {
		t.Fatal("no store leader")
	}
	var order []int
	for i := 0; i < 3; i++ {
		if i != leader {
			order = append(order, i)
		}
	}
	for n, i := range append(order, leader) {
		testwait.For(t, 15*time.Second, fmt.Sprintf("MarkRead to be refused with %d of 3 replicas upgraded", n), func() bool {
			err := markRead(ctx, m)
			if err == nil {
				t.Fatalf("MarkRead went through with %d of 3 replicas upgraded", n)
			}
			return status.Code(err) == codes.FailedPrecondition
		})
		id := fmt.Sprintf("s1-r%d", i+1)
		if err := c.StopStore(0, i); err != nil {
			t.Fatalf("stopping %s: %v", id, err)
		}
		mu.Lock()
		upgraded[id] = true
		mu.Unlock()
		if err := c.RestartStore(ctx, 0, i); err != nil {
			t.Fatalf("starting %s on the newer build: %v", id, err)
		}
		before := countSent(sent, wg)
		testwait.For(t, 20*time.Second, "sends to go on after upgrading "+id, func() bool { return countSent(sent, wg) > before+20 })
		for j := 0; j < 3; j++ {
			if err := c.Store(0, j).Health(); err != nil {
				t.Fatalf("replica s1-r%d after upgrading %s: %v", j+1, id, err)
			}
		}
		// As the runbook says (docs/operations.md): the next replica stops
		// only once this one has caught up; until then a second stop leaves
		// the leader with only a lagging replica, and writes wait for it.
		lead := c.StoreLeader(0)
		if lead < 0 {
			continue
		}
		caughtUp := c.Store(0, lead).Store().FSM().AppliedIndex()
		testwait.For(t, 20*time.Second, id+" to catch up", func() bool { return c.Store(0, i).Store().FSM().AppliedIndex() >= caughtUp })
	}
	testwait.For(t, 20*time.Second, "MarkRead to work once every replica runs the newer build", func() bool {
		return markRead(ctx, m) == nil
	})
	close(stop)
	wg.Wait()
	for i := 0; i < 3; i++ {
		if err := c.Store(0, i).Health(); err != nil {
			t.Fatalf("replica s1-r%d after the upgrade: %v", i+1, err)
		}
	}
	t.Logf("%d sends acknowledged, %d retried attempts", len(*sent), retries.Load())
	checkExactlyOnce(t, m, userRange(users), *sent)
	testwait.For(t, 20*time.Second, "the replicas to hold the same state", func() bool {
		f := [3]*store.FSM{}
		for i := range f {
			f[i] = c.Store(0, i).Store().FSM()
		}
		ia := f[0].AppliedIndex()
		if f[1].AppliedIndex() != ia || f[2].AppliedIndex() != ia {
			return false
		}
		a := store.DumpState(t, f[0])
		return maps.Equal(a, store.DumpState(t, f[1])) && maps.Equal(a, store.DumpState(t, f[2])) && f[0].AppliedIndex() == ia
	})
}

// old is the replica (s1-r3) that runs the older build in a mixed shard,
// and newer the other two's store format.
const (
	old   = 2
	newer = uint32(store.StoreFormat + 1)
)

// mixedShard starts a cluster whose store replicas s1-r1 and s1-r2 run a
// build one store format newer than s1-r3's.
func mixedShard(t *testing.T) (*localcluster.Cluster, *router.Messages) {
	t.Helper()
	store.SetReplicaFormat(func(id string) uint32 {
		if id == "s1-r3" {
			return store.StoreFormat
		}
		return newer
	})
	t.Cleanup(func() { store.SetReplicaFormat(nil) })
	return startCluster(t, localcluster.Options{})
}

// upgradeOld restarts the old replica on the newer build and waits until
// it holds the leader's state.
func upgradeOld(t *testing.T, ctx context.Context, c *localcluster.Cluster, m *router.Messages) {
	t.Helper()
	store.SetReplicaFormat(func(string) uint32 { return newer })
	if err := c.RestartStore(ctx, 0, old); err != nil {
		t.Fatalf("restarting the upgraded replica: %v", err)
	}
	sendSome(t, m, 5, 6, 5)
	testwait.For(t, 20*time.Second, "the upgraded replica to hold the leader's state", func() bool {
		lead := c.StoreLeader(0)
		if lead < 0 || lead == old {
			return false
		}
		a, b := c.Store(0, lead).Store().FSM(), c.Store(0, old).Store().FSM()
		ia, ib := a.AppliedIndex(), b.AppliedIndex()
		same := ia == ib && maps.Equal(store.DumpState(t, a), store.DumpState(t, b))
		return same && a.AppliedIndex() == ia && b.AppliedIndex() == ib
	})
}

// newerShardPollingOnChange starts a cluster whose replicas all run the
// newer format, in which MarkRead is an op of that format, and whose
// leader asks their formats again only when the configuration changes. It
// returns once a MarkRead has gone through.
func newerShardPollingOnChange(t *testing.T) (*localcluster.Cluster, *router.Messages) {
	t.Helper()
	store.SetFormatPollInterval(t, time.Hour)
	store.SetOpFormat(t, "mark_read", newer)
	store.SetReplicaFormat(func(string) uint32 { return newer })
	t.Cleanup(func() { store.SetReplicaFormat(nil) })
	c, m := startCluster(t, localcluster.Options{})
	sendSome(t, m, 1, 2, 1)
	testwait.For(t, 20*time.Second, "MarkRead to go through on a shard of the newer format", func() bool {
		return markRead(context.Background(), m) == nil
	})
	return c, m
}

// markRead marks user 2's conversation with user 1 read (an op the tests
// make need the newer format).
func markRead(ctx context.Context, m *router.Messages) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := m.MarkRead(ctx, &seqdv1.MarkReadRequest{User: 2, Conversation: direct(1002), UpToSeq: 1})
	return err
}

// newerSend is a send from a newer leader, to users no other send uses.
func newerSend() *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Send{Send: &clusterv1.SendOp{
		Request: &seqdv1.SendRequest{Sender: 700, Recipients: []uint64{701}, Conversation: direct(700701),
			ClientMsgId: "newer-1", Body: []byte("from a newer leader")},
		MessageId: "700.1", Appends: []*clusterv1.Append{{User: 700, Seq: 1}, {User: 701, Seq: 1}}, DedupTtlMs: 60_000}}}
}

// sendSome sends n messages from one user to another and fails on any error.
func sendSome(t *testing.T, m *router.Messages, from, to uint64, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := m.Send(ctx, &seqdv1.SendRequest{Sender: from, Recipients: []uint64{to}, Conversation: direct(from*1000 + to),
			ClientMsgId: fmt.Sprintf("some-%d-%d-%d", from, to, i), Body: []byte("hi")})
		cancel()
		if err != nil {
			t.Fatalf("send %d -> %d: %v", from, to, err)
		}
	}
}
