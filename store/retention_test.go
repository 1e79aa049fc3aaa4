package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

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

// One retention pass of the shard leader removes every inbox event older
// than the retention period, however many steps that takes. While a
// replica runs the store format before the steps', the leader keeps to
// the one-op retention that format applies (events go, message records
// stay) and nobody halts; once it is upgraded, the steps remove the
// records of the messages whose copies they remove, the change log's
// entries go too once the dedup sweep has passed them, and the replicas
// end up alike. The test runs the passes itself.
func TestLeaderRetentionRemovesEverythingDue(t *testing.T) {
	store.SkipSlowUnderRace(t)
	store.SetRetentionSteps(t, 2, 3) // many steps for a few messages
	store.SetRetentionEvery(t, time.Hour)
	store.SetDedupSweep(t, 100*time.Millisecond, 0)
	oldReplicaOn(t, 2) // the format before the steps'
	const retention = time.Second
	c, m := startCluster(t, localcluster.Options{Retention: retention, DedupTTL: retention})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	events := func(i int) int { return tagged(t, c, i, 'I') }
	eventsLeft := func(want int) func() bool {
		return func() bool {
			for i := range 3 {
				if events(i) != want {
					return false
				}
			}
			return true
		}
	}
	// onePassRemovesAll runs passes on the leader until one removes
	// something (a pass is skipped while the leader does not yet know
	// every replica's format), and fails unless that pass removed all of
	// the leader's events, held = how many there were.
	onePassRemovesAll := func(held int) {
		t.Helper()
		testwait.For(t, 20*time.Second, "a retention pass that removes something", func() bool {
			lead := leaderPass(ctx, c, 0)
			if lead < 0 {
				return false
			}
			switch n := events(lead); {
			case n == held:
				return false
			case n != 0:
				t.Fatalf("one pass left %d of the leader's %d events due", n, held)
			}
			return true
		})
	}
	sendSome(t, m, 1, 2, 10)
	sendSome(t, m, 3, 4, 5)
	sleepPast(retention)
	onePassRemovesAll(30)
	testwait.For(t, 20*time.Second, "every replica to drop the expired events with an older replica in the shard", eventsLeft(0))
	// The format before removes events only.
	wantHealthyHolding(t, c, 'M', 15, "message records with an older replica in the shard")
	upgradeOldToThisBuild(ctx, t, c)
	// Five users with events, two a step, three events a step: one pass of
	// at least seven steps removes the 20 copies of these 10 messages.
	for u := uint64(5); u <= 9; u++ {
		sendSome(t, m, u, u+10, 2)
	}
	sleepPast(retention)
	onePassRemovesAll(20)
	testwait.For(t, 20*time.Second, "every replica to drop the events and records of the messages sent after the upgrade", func() bool {
		if !eventsLeft(0)() {
			return false
		}
		for i := range 3 {
			if tagged(t, c, i, 'M') != 15 {
				return false
			}
		}
		return true
	})
	lead := c.StoreLeader(0)
	if lead < 0 {
		t.Fatal("no store leader")
	}
	for u := uint64(5); u <= 9; u++ {
		res, err := c.Store(0, lead).Store().FSM().Sync(u+10, 0, 10)
		if err != nil || !res.Truncated || len(res.Events) != 0 || res.EarliestSeq == 0 || res.NextCheckpoint != res.EarliestSeq-1 {
			t.Fatalf("Sync(%d, 0) after retention: %+v, %v; want truncated with nothing left, the checkpoint past the removed events", u+10, res, err)
		}
	}
	// The change log went with them once the sweep had passed them: it
	// starts after the upgrade's sends, and a read from its old start is
	// refused.
	testwait.For(t, 20*time.Second, "every replica to trim its change log", func() bool {
		leaderPass(ctx, c, 0)
		for i := range 3 {
			if _, _, err := c.Store(0, i).Store().FSM().ChangeLog(0, 1); err == nil {
				return false
			}
		}
		return true
	})
	lead = c.StoreLeader(0)
	if lead < 0 {
		t.Fatal("no store leader")
	}
	cc, err := grpc.NewClient(c.Store(0, lead).GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = clusterv1.NewStoreNodeClient(cc).ReadChangeLog(ctx, &clusterv1.ReadChangeLogRequest{AfterIndex: 0, Limit: 10})
	if status.Code(err) != codes.OutOfRange || !strings.Contains(err.Error(), "retention removed them") {
		t.Fatalf("ReadChangeLog from 0 after the trim: %v, want OUT_OF_RANGE saying retention removed the entries", err)
	}
	var trimmed *store.LogTrimmedError
	if _, _, err := c.Store(0, lead).Store().FSM().ChangeLog(0, 1); !errors.As(err, &trimmed) {
		t.Fatalf("ChangeLog(0) at the leader: %v, want a LogTrimmedError", err)
	}
	resp, err := clusterv1.NewStoreNodeClient(cc).ReadChangeLog(ctx, &clusterv1.ReadChangeLogRequest{AfterIndex: trimmed.First - 1, Limit: 10})
	if err != nil || resp.FirstIndex != trimmed.First || len(resp.Entries) == 0 || resp.Entries[0].Index != trimmed.First {
		t.Fatalf("ReadChangeLog from the log's start %d: %v, %v", trimmed.First, resp, err)
	}
	waitReplicasAgree(t, c)
}

// With inbox retention off, a pass still trims the change log, of the
// entries applied before the change-log retention that the dedup sweep
// has passed, once every replica applies the format of the trim: before
// that the log stays and nobody halts. The inboxes and message records
// stay whole.
func TestLeaderTrimsTheChangeLogWithoutRetention(t *testing.T) {
	store.SkipSlowUnderRace(t)
	store.SetRetentionEvery(t, time.Hour)
	store.SetDedupSweep(t, 100*time.Millisecond, 0)
	oldReplicaOn(t, 2) // the format before the trim
	const logRetention = time.Second
	c, m := startCluster(t, localcluster.Options{ChangeLogRetention: logRetention, DedupTTL: logRetention})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// logStart is replica i's first change-log index, 1 for a whole log.
	logStart := func(i int) uint64 {
		_, _, err := c.Store(0, i).Store().FSM().ChangeLog(0, 1)
		var trimmed *store.LogTrimmedError
		if errors.As(err, &trimmed) {
			return trimmed.First
		}
		if err != nil {
			t.Fatalf("replica %d: ChangeLog(0): %v", i, err)
		}
		return 1
	}
	pass := func() { leaderPass(ctx, c, 0) }
	sendSome(t, m, 1, 2, 10)
	sleepPast(logRetention)
	// Passes while the dedup sweep passes the sends: the log stays whole.
	for range 5 {
		pass()
		time.Sleep(100 * time.Millisecond)
	}
	for i := range 3 {
		if got := logStart(i); got != 1 {
			t.Fatalf("replica %d: the change log starts at %d with a format-2 replica in the shard, want it whole", i, got)
		}
	}
	wantHealthyHolding(t, c, 'I', 20, "inbox events with an older replica in the shard")
	upgradeOldToThisBuild(ctx, t, c)
	sendSome(t, m, 3, 4, 5)
	lastSend := c.Store(0, c.StoreLeader(0)).Store().FSM().AppliedIndex()
	sleepPast(logRetention)
	testwait.For(t, 20*time.Second, "every replica to trim its change log past the sends", func() bool {
		pass()
		for i := range 3 {
			if logStart(i) <= lastSend {
				return false
			}
		}
		return true
	})
	wantHealthyHolding(t, c, 'I', 30, "inbox events without retention")
	wantHealthyHolding(t, c, 'M', 15, "message records without retention")
	for u := uint64(2); u <= 4; u += 2 {
		res, err := c.Store(0, c.StoreLeader(0)).Store().FSM().Sync(u, 0, 100)
		if err != nil || res.Truncated || len(res.Events) == 0 {
			t.Fatalf("Sync(%d, 0) after the change-log trim: %+v, %v; want every event, not truncated", u, res, err)
		}
	}
	waitReplicasAgree(t, c)
}

// A retention pass also removes the old entries of read-fanout group
// timelines, once every replica applies the format of the step that does
// it: before that the timelines stay and nobody halts. After it a member
// reading from before the removed entries is told its history was
// truncated, and its unread count no longer holds what it cannot read.
func TestLeaderRetentionRemovesOldTimelineEntries(t *testing.T) {
	store.SkipSlowUnderRace(t)
	store.SetRetentionEvery(t, time.Hour)
	oldReplicaOn(t, 3) // the format before timeline steps
	// Long enough that the message sent after the upgrade stays through
	// the passes that follow it, on a slow machine too.
	const retention = 5 * time.Second
	c, m := startCluster(t, localcluster.Options{Retention: retention, HintWindow: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 50, Owner: 1, Members: []uint64{2, 3}, ReadFanout: true}); err != nil {
		t.Fatal(err)
	}
	send := func(cmid string) {
		t.Helper()
		if _, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 1, Conversation: group(50), ClientMsgId: cmid, Body: []byte("to all")}); err != nil {
			t.Fatal(err)
		}
	}
	unread := func(u uint64) uint64 { t.Helper(); return totalUnread(ctx, t, m, u) }
	send("a")
	send("b")
	testwait.For(t, 10*time.Second, "the hint round", func() bool { return unread(2) == 2 })
	sleepPast(retention)
	// pass runs retention passes on the leader until its timeline holds
	// want entries, or for 3 s.
	pass := func(want int) bool {
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			if lead := leaderPass(ctx, c, 0); lead >= 0 && tagged(t, c, lead, 'T') == want {
				return true
			}
			time.Sleep(100 * time.Millisecond)
		}
		return false
	}
	if pass(0) {
		t.Fatal("a timeline step went ahead with a replica on the format before")
	}
	wantHealthyHolding(t, c, 'T', 2, "timeline entries with an older replica in the shard")
	upgradeOldToThisBuild(ctx, t, c)
	send("c") // newer than the period: it stays
	testwait.For(t, 10*time.Second, "the second hint round", func() bool { return unread(2) == 3 })
	if !pass(1) {
		t.Fatal("no pass removed the old timeline entries")
	}
	testwait.For(t, 20*time.Second, "every replica to drop the old entries", func() bool {
		for i := range 3 {
			if tagged(t, c, i, 'T') != 1 {
				return false
			}
		}
		return true
	})
	waitReplicasAgree(t, c)
	sg, err := m.SyncGroup(ctx, &seqdv1.SyncGroupRequest{User: 2, GroupId: 50})
	if err != nil || !sg.HistoryTruncated || len(sg.Events) != 1 || sg.EarliestGseq != sg.Events[0].Seq {
		t.Fatalf("SyncGroup from 0 after retention: %v, %v; want truncated, the newest entry only, from its gseq", sg, err)
	}
	if sg, err := m.SyncGroup(ctx, &seqdv1.SyncGroupRequest{User: 2, GroupId: 50, AfterGseq: sg.EarliestGseq - 1}); err != nil || sg.HistoryTruncated {
		t.Fatalf("SyncGroup from just before the first entry held: %v, %v; want not truncated", sg, err)
	}
	for _, u := range []uint64{2, 3} {
		if n := unread(u); n != 1 {
			t.Fatalf("member %d unread %d after retention, want 1 (the message still held)", u, n)
		}
	}
	r, err := m.MarkRead(ctx, &seqdv1.MarkReadRequest{User: 3, Conversation: group(50), UpToSeq: 1})
	if err != nil || r.Unread != 1 || r.TotalUnread != 1 {
		t.Fatalf("marking read at a removed entry: %v, %v; want 1 unread left", r, err)
	}
}

// groupRetentionCluster starts a one-shard cluster with retention of 1 s,
// hint rounds every 100 ms and a replica on store format old, and creates
// read-fanout group 50 of owner 1 with members 2 and 3. send sends the
// group a message from 1; expireAll waits past the retention period and
// runs passes on the leader until its timeline is empty.
func groupRetentionCluster(t *testing.T, old uint32) (ctx context.Context, c *localcluster.Cluster, m *router.Messages, send, expireAll func()) {
	t.Helper()
	store.SetRetentionEvery(t, time.Hour)
	oldReplicaOn(t, old)
	const retention = time.Second
	c, m = startCluster(t, localcluster.Options{Retention: retention, HintWindow: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	if _, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 50, Owner: 1, Members: []uint64{2, 3}, ReadFanout: true}); err != nil {
		t.Fatal(err)
	}
	sent := 0
	send = func() {
		t.Helper()
		sent++
		if _, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 1, Conversation: group(50), ClientMsgId: fmt.Sprint(sent), Body: []byte("to all")}); err != nil {
			t.Fatal(err)
		}
	}
	expireAll = func() {
		t.Helper()
		sleepPast(retention)
		testwait.For(t, 10*time.Second, "a pass to remove the timeline entries", func() bool {
			lead := leaderPass(ctx, c, 0)
			return lead >= 0 && tagged(t, c, lead, 'T') == 0
		})
	}
	return ctx, c, m, send, expireAll
}

// While a replica runs format 4, timeline entries expire but the group
// hints leave out the expired count (a format-4 replica would not write
// it into its copies), and they keep coming; once it is upgraded, a hint
// tells the members how many of the group's messages retention removed,
// and the replicas agree.
func TestHintsCarryTheExpiredCountOnceEveryReplicaCan(t *testing.T) {
	store.SkipSlowUnderRace(t)
	ctx, c, m, send, expireAll := groupRetentionCluster(t, 4)
	lastHint := func(n uint64) *seqdv1.Event { t.Helper(); return waitHint(t, m, 2, n) }
	send()
	send()
	lastHint(2)
	expireAll()
	send()
	if h := lastHint(3); h.GroupExpiredCount != 0 {
		t.Fatalf("a hint with a format-4 replica in the shard: %v; want no expired count", h)
	}
	waitReplicasAgree(t, c)
	wantHealthyHolding(t, c, 'T', 1, "timeline entries with a format-4 replica in the shard")
	upgradeOldToThisBuild(ctx, t, c)
	// The leader hears of the upgrade at its next format poll; hints
	// before that still leave the count out.
	for n := uint64(4); ; n++ {
		send()
		if h := lastHint(n); h.GroupExpiredCount == 2 {
			break
		} else if h.GroupExpiredCount != 0 || n == 20 {
			t.Fatalf("hint of count %d after the upgrade: %v; want expired count 2", n, h)
		}
	}
	waitReplicasAgree(t, c)
}

// While a replica runs format 6, retention removes timeline entries and
// nobody hears of it until the group's next message; once every replica
// runs format 7, a pass that removes messages from the timeline is
// followed by a round of hints at the same group seq, which tells the
// members their count, and the replicas agree.
func TestRemovedGroupMessagesAreHintedOnceEveryReplicaCan(t *testing.T) {
	store.SkipSlowUnderRace(t)
	ctx, c, m, send, expireAll := groupRetentionCluster(t, 6)
	// hints returns member 2's hint events. Retention removes them with
	// the timeline entries: after a pass, those left came after it.
	hints := func() []*seqdv1.Event { return hintsOf(t, m, 2) }
	send()
	send()
	waitHint(t, m, 2, 2)
	expireAll()
	time.Sleep(500 * time.Millisecond) // five hint windows
	if hs := hints(); len(hs) != 0 {
		t.Fatalf("member 2's hints after retention with a format-6 replica in the shard: %v; want none", hs)
	}
	waitReplicasAgree(t, c)
	upgradeOldToThisBuild(ctx, t, c)
	send()
	send()
	waitHint(t, m, 2, 4)
	// The leader hears of the upgrade at its next format poll.
	testwait.For(t, 10*time.Second, "the leader to know every replica runs format 7", func() bool {
		lead := c.StoreLeader(0)
		return lead >= 0 && c.Store(0, lead).Store().FormatsReady(7)
	})
	expireAll()
	testwait.For(t, 10*time.Second, "a hint telling member 2 that four messages went", func() bool {
		return len(hints()) > 0
	})
	time.Sleep(500 * time.Millisecond)
	if hs := hints(); len(hs) != 1 || hs[0].GroupSeq != 4 || hs[0].GroupCount != 4 || hs[0].GroupExpiredCount != 4 {
		t.Fatalf("member 2's hints after the pass: %v; want one, at group seq 4 with count 4 and expired count 4", hs)
	}
	waitReplicasAgree(t, c)
}

// With two shards, retention on the recipient's shard removes a
// delivery's copy key with the copy, and the replicas agree (a late
// redelivery after that is TestApplyExpireScan's). When retention removes
// a message from a group's timeline, a hint round tells the members on
// the other shard, with no new message in the group: their unread leaves
// it out. Group hints from the other shard, whose items carry no send
// time, still reach a member after retention has removed some of its
// inbox.
func TestRetentionRemovesTheCopyKeysOfDeliveries(t *testing.T) {
	store.SkipSlowUnderRace(t)
	store.SetRetentionEvery(t, time.Hour)
	const retention = time.Second
	c, m := startCluster(t, localcluster.Options{Shards: 2, Retention: retention, HintWindow: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// User 5 is on shard s1, user 200,000,001 and group 50 on s2
	// (TestCrossShardDeliveryAndRecall).
	const a, b = uint64(5), uint64(200_000_001)
	const s1, s2 = 0, 1
	for i := range 3 {
		if _, err := m.Send(ctx, &seqdv1.SendRequest{Sender: a, Recipients: []uint64{b}, Conversation: direct(77),
			ClientMsgId: fmt.Sprint("x", i), Body: []byte("across")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 50, Owner: b, Members: []uint64{a}, ReadFanout: true}); err != nil {
		t.Fatal(err)
	}
	groupSend := func(cmid string) {
		t.Helper()
		if _, err := m.Send(ctx, &seqdv1.SendRequest{Sender: b, Conversation: group(50), ClientMsgId: cmid, Body: []byte("to all")}); err != nil {
			t.Fatal(err)
		}
	}
	hinted := func(n uint64) { t.Helper(); waitHint(t, m, a, n) }
	groupSend("g1")
	hinted(1)
	copies := func(sh, i int) int { return taggedIn(t, c, sh, i, 'X') }
	testwait.For(t, 10*time.Second, "the three copies on s2", func() bool {
		return copies(s2, 0) == 3 && copies(s2, 1) == 3 && copies(s2, 2) == 3
	})
	sleepPast(retention)
	// pass runs retention passes on shard sh's leader until it holds no
	// copy key.
	pass := func(sh int) {
		t.Helper()
		testwait.For(t, 20*time.Second, fmt.Sprintf("a pass on shard %d to remove the copies and their keys", sh), func() bool {
			lead := leaderPass(ctx, c, sh)
			return lead >= 0 && copies(sh, lead) == 0
		})
	}
	unread := func(u uint64) uint64 { t.Helper(); return totalUnread(ctx, t, m, u) }
	if n := unread(a); n != 1 {
		t.Fatalf("member %d's unread before retention: %d, want 1 (g1)", a, n)
	}
	pass(s2)
	// g1 went from the group's timeline on s2, and a round of hints at
	// the same group seq told a's shard so.
	testwait.For(t, 10*time.Second, fmt.Sprintf("member %d's unread to leave out the removed message, with no new one", a), func() bool {
		return unread(a) == 0
	})
	var told *seqdv1.Event
	for _, e := range hintsOf(t, m, a) {
		if e.GroupExpiredCount == 1 {
			told = e
		}
	}
	if told == nil || told.GroupSeq != 1 || told.GroupCount != 1 {
		t.Fatalf("member %d's hint telling the removed message: %v; want group seq 1, count 1, expired count 1", a, told)
	}
	// Retention then removes the hints too, and the copy keys of those
	// delivered to a.
	sleepPast(retention)
	pass(s2)
	pass(s1)
	testwait.For(t, 20*time.Second, "every replica to drop the copy keys", func() bool {
		for i := range 3 {
			if copies(s1, i) != 0 || copies(s2, i) != 0 {
				return false
			}
		}
		return true
	})
	if evs := syncAll(t, m, b); len(evs) != 0 {
		t.Fatalf("user %d still holds %d events after retention", b, len(evs))
	}
	groupSend("g2")
	hinted(2)
	if n := unread(a); n != 1 {
		t.Fatalf("member %d's unread after g2: %d, want 1", a, n)
	}
	waitShardReplicasAgree(t, c, s1)
	waitShardReplicasAgree(t, c, s2)
}

// waitHint waits up to 10 s for user's GROUP_HINT event of group count n
// and returns it.
func waitHint(t *testing.T, m *router.Messages, user, n uint64) *seqdv1.Event {
	t.Helper()
	var hint *seqdv1.Event
	testwait.For(t, 10*time.Second, fmt.Sprintf("member %d's hint of count %d", user, n), func() bool {
		for _, e := range hintsOf(t, m, user) {
			if e.GroupCount == n {
				hint = e
			}
		}
		return hint != nil
	})
	return hint
}

// hintsOf returns user's GROUP_HINT events, in inbox order.
func hintsOf(t *testing.T, m *router.Messages, user uint64) []*seqdv1.Event {
	t.Helper()
	var out []*seqdv1.Event
	for _, e := range syncAll(t, m, user) {
		if e.Kind == seqdv1.EventKind_EVENT_KIND_GROUP_HINT {
			out = append(out, e)
		}
	}
	return out
}

// leaderPass runs a retention pass on shard sh's leader, as its loop
// does, and returns the leader (-1: there is none, and no pass ran).
func leaderPass(ctx context.Context, c *localcluster.Cluster, sh int) int {
	lead := c.StoreLeader(sh)
	if lead >= 0 {
		c.Store(sh, lead).Store().RetentionPass(ctx)
	}
	return lead
}

// totalUnread is user's total unread count, through the router.
func totalUnread(ctx context.Context, t *testing.T, m *router.Messages, user uint64) uint64 {
	t.Helper()
	un, err := m.Unread(ctx, &seqdv1.UnreadRequest{User: user})
	if err != nil {
		t.Fatal(err)
	}
	return un.Total
}

// sleepPast waits until everything sent before the call is older than
// the retention period d. A retention pass removes events sent before
// now−d in whole milliseconds, so an event sent in the same millisecond
// as now−d is not yet due: waiting d alone left the last message of a
// burst to the next pass now and then.
func sleepPast(d time.Duration) { time.Sleep(d + 2*time.Millisecond) }
