package store

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"google.golang.org/protobuf/proto"
)

// Tests of the read side: Sync, History, Unread, SyncGroup and the
// bookkeeping reads the leader loops use.

// inboxWithGaps gives user 2 messages at seqs 3, 5, 6, 10, 11 (seqs come
// from the allocator and may skip), alternating between two conversations.
func inboxWithGaps(t *testing.T) *fsmHarness {
	h := newHarness(t)
	for i, seq := range []uint64{3, 5, 6, 10, 11} {
		conv := uint64(7 + i%2)
		h.must(opSend(conv, fmt.Sprint("m", i), fmt.Sprint("body", i), apps(1, uint64(i+1), 2, seq)...))
	}
	return h
}

func TestReadSyncPaging(t *testing.T) {
	h := inboxWithGaps(t)
	all := []uint64{3, 5, 6, 10, 11}
	for after := uint64(0); after <= 12; after++ {
		var want []uint64
		for _, s := range all {
			if s > after {
				want = append(want, s)
			}
		}
		for limit := 1; limit <= 6; limit++ {
			var got []uint64
			cp := after
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatalf("after %d limit %d: paging does not end", after, limit)
				}
				res, err := h.f.Sync(2, cp, limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Events) > limit {
					t.Fatalf("page of %d events for limit %d", len(res.Events), limit)
				}
				if res.Truncated {
					t.Fatalf("untruncated inbox reported truncated")
				}
				got = append(got, seqsOf(res.Events)...)
				if len(res.Events) > 0 && res.NextCheckpoint != res.Events[len(res.Events)-1].Seq {
					t.Fatalf("next checkpoint %d after events %v", res.NextCheckpoint, seqsOf(res.Events))
				}
				if len(res.Events) == 0 && res.NextCheckpoint != cp {
					t.Fatalf("empty page moved the checkpoint from %d to %d", cp, res.NextCheckpoint)
				}
				cp = res.NextCheckpoint
				if !res.HasMore {
					break
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) && !(len(got) == 0 && len(want) == 0) {
				t.Fatalf("Sync from %d in pages of %d: %v, want %v", after, limit, got, want)
			}
		}
	}
	// Another user's inbox and an unknown user.
	if res, _ := h.f.Sync(1, 0, 100); fmt.Sprint(seqsOf(res.Events)) != "[1 2 3 4 5]" {
		t.Fatalf("user 1: %v", seqsOf(res.Events))
	}
	if res, err := h.f.Sync(99, 4, 100); err != nil || len(res.Events) != 0 || res.NextCheckpoint != 4 || res.HasMore {
		t.Fatalf("unknown user: %+v %v", res, err)
	}
}

// Sync seeks to after+1, which wraps to 0 for the largest checkpoint, so
// the whole inbox comes back to a client that has "seen everything".
func TestReadSyncFromMaxCheckpoint(t *testing.T) {
	h := inboxWithGaps(t)
	res, err := h.f.Sync(2, math.MaxUint64, 10)
	if err != nil || len(res.Events) != 0 {
		t.Errorf("Sync(2, MaxUint64) = %v, %v; want no events", seqsOf(res.Events), err)
	}
	h.must(opCreateGroup(50, 1, true, 10, 2))
	h.must(opGroupSend(50, 1, true, 1, "g", "x", apps(1, 6)...))
	gres, err := h.f.SyncGroup(2, 50, math.MaxUint64, 10)
	if err != nil || len(gres.Events) != 0 {
		t.Fatalf("SyncGroup(2, 50, MaxUint64) = %v, %v; want no events", seqsOf(gres.Events), err)
	}
}

func TestReadHistory(t *testing.T) {
	h := inboxWithGaps(t)
	// Conversation 7 holds seqs 3, 6, 11; conversation 8 holds 5, 10. Read
	// markers are events but not history.
	h.must(opMarkRead(2, dconv(7), 6, 12))
	for _, c := range []struct {
		conv, before uint64
		limit        int
		want         string
		next         uint64
	}{
		{7, 0, 10, "[11 6 3]", 0},
		{7, 0, 2, "[11 6]", 6},
		{7, 6, 2, "[3]", 0},
		{7, 11, 10, "[6 3]", 0},
		{7, 12, 10, "[11 6 3]", 0},
		{7, 3, 10, "[]", 0},
		{7, 1, 10, "[]", 0},
		{8, 0, 1, "[10]", 10},
		{8, 10, 1, "[5]", 0},
		{9, 0, 10, "[]", 0},
	} {
		evs, next, err := h.f.History(2, dconv(c.conv), c.before, c.limit)
		if err != nil || fmt.Sprint(seqsOf(evs)) != c.want || next != c.next {
			t.Fatalf("History(2, d%d, before %d, limit %d) = %v next %d (%v); want %s next %d",
				c.conv, c.before, c.limit, seqsOf(evs), next, err, c.want, c.next)
		}
		for _, e := range evs {
			if e.Kind != kMessage || e.Conversation.GetId() != c.conv {
				t.Fatalf("history event %v", e)
			}
		}
	}
}

// History with limit 0 indexes out[-1] when the conversation has history.
// The RPC maps limit 0 to its default, so only direct callers hit it.
func TestReadHistoryLimitZero(t *testing.T) {
	h := inboxWithGaps(t)
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("History with limit 0 panicked: %v", p)
		}
	}()
	evs, _, err := h.f.History(2, dconv(7), 0, 0)
	if err != nil || len(evs) != 0 {
		t.Fatalf("History limit 0 = %v, %v", evs, err)
	}
}

func TestReadUnreadListsOnlyUnreadConversations(t *testing.T) {
	h := inboxWithGaps(t)
	wantUnread(t, h.f, 2, 5, map[string]uint64{"d7": 3, "d8": 2})
	h.must(opMarkRead(2, dconv(8), 11, 12))
	u, err := h.f.Unread(2, nil, 0)
	if err != nil || len(u.Conversations) != 1 || convName(u.Conversations[0].Conversation) != "d7" || u.Total != 3 {
		t.Fatalf("Unread(2) = %v, %v", u, err)
	}
	if u, err := h.f.Unread(99, nil, 0); err != nil || u.Total != 0 || len(u.Conversations) != 0 {
		t.Fatalf("Unread of an unknown user = %v, %v", u, err)
	}
}

func TestReadSyncGroupPaging(t *testing.T) {
	h := newHarness(t)
	h.must(opCreateGroup(50, 1, true, 10, 2))
	for i, g := range []uint64{2, 4, 5, 9} {
		h.must(opGroupSend(50, g, true, 1, fmt.Sprint("m", g), "x", apps(1, uint64(i+1))...))
	}
	h.must(opAddMembers(50, false, 10, 3)) // joins after gseq 9
	h.must(opGroupSend(50, 12, true, 1, "m12", "x", apps(1, 5)...))

	var got []uint64
	cp := uint64(0)
	for {
		res, err := h.f.SyncGroup(2, 50, cp, 2)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, seqsOf(res.Events)...)
		cp = res.NextCheckpoint
		if !res.HasMore {
			break
		}
	}
	if fmt.Sprint(got) != "[2 4 5 9 12]" || cp != 12 {
		t.Fatalf("paged timeline %v to %d", got, cp)
	}
	// A checkpoint below the join point moves up to it.
	res, _ := h.f.SyncGroup(3, 50, 0, 10)
	if fmt.Sprint(seqsOf(res.Events)) != "[12]" || res.NextCheckpoint != 12 {
		t.Fatalf("joiner: %v next %d", seqsOf(res.Events), res.NextCheckpoint)
	}
	h.must(opAddMembers(50, false, 10, 4)) // joins after gseq 12
	res, _ = h.f.SyncGroup(4, 50, 0, 10)
	if len(res.Events) != 0 || res.NextCheckpoint != 12 {
		t.Fatalf("joiner with nothing to see: %v next %d", seqsOf(res.Events), res.NextCheckpoint)
	}
}

func TestReadDedupAndMessage(t *testing.T) {
	h := newHarness(t)
	h.must(opSend(7, "c1", "x", apps(1, 1, 2, 1)...))
	if d, err := h.f.Dedup(1, "c1", h.now); err != nil || d == nil || !d.Duplicate || d.MessageId != "1.1" {
		t.Fatalf("Dedup = %v, %v", d, err)
	}
	if d, err := h.f.Dedup(1, "c2", h.now); err != nil || d != nil {
		t.Fatalf("Dedup of an unknown id = %v, %v", d, err)
	}
	if d, err := h.f.Dedup(2, "c1", h.now); err != nil || d != nil {
		t.Fatalf("Dedup of another sender = %v, %v", d, err)
	}
	if m, err := h.f.Message("1.2"); err != nil || m != nil {
		t.Fatalf("Message of an unknown id = %v, %v", m, err)
	}
}

func TestReadOutboxOrder(t *testing.T) {
	h := newHarness(t)
	for i := uint64(1); i <= 3; i++ {
		h.must(remoteTo(opSend(7, fmt.Sprint("c", i), "x", apps(1, i)...), 300+i, 200+i))
	}
	items, err := h.f.Outbox(100)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, it := range items {
		got = append(got, it.Item.User)
	}
	// Entry order, then order within the op.
	if fmt.Sprint(got) != "[301 201 302 202 303 203]" {
		t.Fatalf("outbox order %v", got)
	}
	first, _ := h.f.Outbox(1)
	if len(first) != 1 || string(first[0].Key) != string(items[0].Key) {
		t.Fatalf("Outbox(1) = %v", first)
	}
}

func TestReadFanoutGroupsListsOnlyUnhinted(t *testing.T) {
	h := newHarness(t)
	h.must(opCreateGroup(50, 1, true, 10))
	h.must(opCreateGroup(51, 1, true, 10))
	h.must(opCreateGroup(60, 1, false, 10))
	if gs, _ := h.f.ReadFanoutGroups(); len(gs) != 0 {
		t.Fatalf("groups without news listed: %v", gs)
	}
	h.must(opGroupSend(51, 1, true, 1, "a", "x", apps(1, 1)...))
	h.must(opGroupSend(60, 1, false, 1, "b", "x", apps(1, 2)...))
	gs, err := h.f.ReadFanoutGroups()
	if err != nil || len(gs) != 1 || gs[0].Info.GroupId != 51 {
		t.Fatalf("ReadFanoutGroups = %v, %v", gs, err)
	}
	h.must(opHint(51, 1, 1, true, nil, apps(1, 3)...))
	if gs, _ := h.f.ReadFanoutGroups(); len(gs) != 0 {
		t.Fatalf("hinted group still listed: %v", gs)
	}
}

// Reads never see half an entry: one entry's ops land together.
func TestReadSeesWholeEntries(t *testing.T) {
	h := newHarness(t)
	ops := []*clusterv1.StoreOp{
		opSend(7, "a", "x", apps(1, 1, 2, 1)...),
		opSend(7, "b", "y", apps(1, 2, 2, 2)...),
		opMarkRead(2, dconv(7), 1, 3),
	}
	h.apply(ops...)
	wantSeqs(t, h.f, 2, 1, 2, 3)
	wantUnread(t, h.f, 2, 1, map[string]uint64{"d7": 1})
}

// TestReadPagesStopAtMaxPageBytes: pages of large events stop at
// MaxPageBytes, not only at their limit, and paging on still returns every
// event once, in order. 100 events of the largest size made a 7 MB page,
// which a gRPC client with the default 4 MiB limit refuses on every retry.
func TestReadPagesStopAtMaxPageBytes(t *testing.T) {
	const n = 40
	body := strings.Repeat("b", 60<<10)
	h := newHarness(t)
	h.must(opCreateGroup(50, 1, true, 10, 2))
	for i := uint64(1); i <= n; i++ {
		h.must(opSend(7, fmt.Sprint("d", i), body, apps(1, 2*i-1, 2, i)...))
		h.must(opGroupSend(50, i, true, 1, fmt.Sprint("g", i), body, apps(1, 2*i)...))
	}
	var want []uint64
	for i := uint64(1); i <= n; i++ {
		want = append(want, i)
	}
	check := func(name string, page func(cp uint64) (*SyncResult, error)) {
		t.Helper()
		var got []uint64
		cp, pages := uint64(0), 0
		for {
			res, err := page(cp)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if size := proto.Size(&seqdv1.SyncResponse{Events: res.Events, NextCheckpoint: res.NextCheckpoint, HasMore: res.HasMore}); size > MaxPageBytes+1024 {
				t.Fatalf("%s: a page of %d events is %d bytes, over MaxPageBytes %d", name, len(res.Events), size, MaxPageBytes)
			}
			if len(res.Events) == 0 {
				t.Fatalf("%s: empty page from %d with has_more", name, cp)
			}
			got = append(got, seqsOf(res.Events)...)
			cp = res.NextCheckpoint
			if !res.HasMore {
				break
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: paged %v, want %v", name, got, want)
		}
		if full := n * len(body) / MaxPageBytes; pages <= full {
			t.Fatalf("%s: %d pages for %d bytes of bodies", name, pages, n*len(body))
		}
	}
	check("Sync", func(cp uint64) (*SyncResult, error) { return h.f.Sync(2, cp, 1000) })
	check("SyncGroup", func(cp uint64) (*SyncResult, error) { return h.f.SyncGroup(2, 50, cp, 1000) })

	// History and GroupHistory page backwards by the same bound.
	backwards := func(name string, page func(before uint64) ([]*seqdv1.Event, uint64, error)) {
		t.Helper()
		var got []uint64
		before := uint64(0)
		for pages := 0; ; pages++ {
			if pages > n {
				t.Fatalf("%s paging does not end", name)
			}
			events, next, err := page(before)
			if err != nil {
				t.Fatal(err)
			}
			if size := proto.Size(&seqdv1.HistoryResponse{Events: events, NextBeforeSeq: next}); size > MaxPageBytes+1024 || len(events) == 0 {
				t.Fatalf("%s before %d: %d events, %d bytes", name, before, len(events), size)
			}
			got = append(got, seqsOf(events)...)
			if next == 0 {
				break
			}
			before = next
		}
		slices.Reverse(got)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s paged %v, want %v", name, got, want)
		}
	}
	backwards("History", func(before uint64) ([]*seqdv1.Event, uint64, error) { return h.f.History(2, dconv(7), before, 1000) })
	backwards("GroupHistory", func(before uint64) ([]*seqdv1.Event, uint64, error) { return h.f.GroupHistory(2, 50, before, 1000) })

	// One event is always returned, however large.
	if pageFull(0, 10, 0, 2*MaxPageBytes) || !pageFull(1, 10, 1, MaxPageBytes) || !pageFull(10, 10, 0, 0) {
		t.Fatal("pageFull bounds")
	}
}

// TestReadsRefuseDamagedEvents: an event Badger could not read comes back
// empty; Sync, History, SyncGroup and GroupHistory answer an error for it
// instead of an event of seq 0.
func TestReadsRefuseDamagedEvents(t *testing.T) {
	h := newHarness(t)
	h.must(opCreateGroup(50, 1, true, 10, 2))
	h.must(opSend(7, "d", "body", apps(1, 1, 2, 1)...))
	h.must(opGroupSend(50, 1, true, 1, "g", "body", apps(1, 2)...))
	blank := func(key []byte) {
		if err := h.f.db.Update(func(txn *badger.Txn) error { return txn.Set(key, nil) }); err != nil {
			t.Fatal(err)
		}
	}
	blank(inboxKey(2, 1))
	blank(timelineKey(50, 1))
	damaged := func(name string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "damaged") {
			t.Errorf("%s of a damaged event: %v, want an error saying the data is damaged", name, err)
		}
	}
	_, err := h.f.Sync(2, 0, 10)
	damaged("Sync", err)
	_, _, err = h.f.History(2, dconv(7), 0, 10)
	damaged("History", err)
	_, err = h.f.SyncGroup(2, 50, 0, 10)
	damaged("SyncGroup", err)
	_, _, err = h.f.GroupHistory(2, 50, 0, 10)
	damaged("GroupHistory", err)
}

// TestUnreadPages: Unread lists the conversations in pages, by count and
// by MaxPageBytes, after a cursor; the total counts them all on every
// page. Before, one user with some 230,000 unread conversations got an
// answer over a gRPC client's default 4 MiB.
func TestUnreadPages(t *testing.T) {
	h := inboxWithGaps(t) // d7: 3 unread, d8: 2
	h.must(opSend(9, "m9", "body", apps(1, 9, 2, 12)...))
	page := func(after *seqdv1.Conversation, limit int) string {
		t.Helper()
		u, err := h.f.Unread(2, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range u.Conversations {
			names = append(names, fmt.Sprint(convName(c.Conversation), ":", c.Count))
		}
		next := ""
		if u.NextAfter != nil {
			next = convName(u.NextAfter)
		}
		return fmt.Sprintf("%v total=%d more=%v next=%s", names, u.Total, u.HasMore, next)
	}
	for _, c := range []struct {
		after *seqdv1.Conversation
		limit int
		want  string
	}{
		{nil, 0, "[d7:3 d8:2 d9:1] total=6 more=false next="},
		{nil, 2, "[d7:3 d8:2] total=6 more=true next=d8"},
		{dconv(8), 2, "[d9:1] total=6 more=false next="},
		{dconv(7), 1, "[d8:2] total=6 more=true next=d8"},
		{dconv(9), 0, "[] total=6 more=false next="},
		{dconv(1), 0, "[d7:3 d8:2 d9:1] total=6 more=false next="}, // a cursor that is no conversation of the user
	} {
		if got := page(c.after, c.limit); got != c.want {
			t.Errorf("Unread after %s limit %d: %s, want %s", convName(c.after), c.limit, got, c.want)
		}
	}

	// Past MaxPageBytes: a user with more unread conversations than fit.
	many := newHarness(t)
	const n = 100_000 // with ids of 8 bytes: about 2 MiB of list
	wb := many.f.db.NewWriteBatch()
	v, _ := proto.Marshal(&clusterv1.ConvState{Unread: 1})
	for i := uint64(1); i <= n; i++ {
		if err := wb.Set(convKey(2, dconv(1<<60+i)), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	var after *seqdv1.Conversation
	seen, pages := 0, 0
	for {
		u, err := many.f.Unread(2, after, 0)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if size := proto.Size(u); size > MaxPageBytes+1024 || len(u.Conversations) == 0 {
			t.Fatalf("page %d: %d conversations, %d bytes", pages, len(u.Conversations), size)
		}
		seen += len(u.Conversations)
		if !u.HasMore {
			break
		}
		after = u.NextAfter
	}
	if seen != n || pages < 2 {
		t.Fatalf("%d conversations in %d pages, want %d in more than one", seen, pages, n)
	}
}

// A large group's record is decoded once for many reads (groupReads), and
// a read still sees each membership change and a restored snapshot.
func TestReadLargeGroupFollowsMembership(t *testing.T) {
	h := newHarness(t)
	members := make([]uint64, minReadMembers+50)
	for i := range members {
		members[i] = uint64(i + 2)
	}
	h.must(opCreateGroup(50, 1, true, 10, members...))
	h.must(opGroupSend(50, 1, true, 1, "m1", "x", apps(1, 1)...))
	synced := func(user uint64) error {
		res, err := h.f.SyncGroup(user, 50, 0, 10)
		if err == nil && len(res.Events) != 1 {
			t.Fatalf("SyncGroup(%d): %d events, want 1", user, len(res.Events))
		}
		return err
	}
	member := func(user uint64) bool {
		r, err := h.f.TimelineCount(50, 1, user)
		if err != nil {
			t.Fatal(err)
		}
		return r.Member
	}
	for _, u := range []uint64{2, 3, 100} {
		if err := synced(u); err != nil || !member(u) {
			t.Fatalf("member %d: SyncGroup %v, TimelineCount member %v", u, err, member(u))
		}
	}
	if len(h.f.reads.m) != 1 {
		t.Fatalf("%d records cached, want the group's", len(h.f.reads.m))
	}
	h.must(opRemoveMembers(50, 2))
	if err := synced(2); !errors.Is(err, ErrNotMember) || member(2) {
		t.Fatalf("a removed member: SyncGroup %v, member %v; want ErrNotMember", err, member(2))
	}
	h.must(opAddMembers(50, false, 10, 5000))
	if res, err := h.f.SyncGroup(5000, 50, 0, 10); err != nil || len(res.Events) != 0 || !member(5000) {
		t.Fatalf("a new member: %v, %v; want nothing from before it joined", res, err)
	}

	// A snapshot in which member 3 is gone: after the restore, reads see
	// it, whatever versions the restored database gave the record.
	r := h.replica(t)
	r.must(opRemoveMembers(50, 3))
	if err := restore(t, h.f, persist(t, r.f)); err != nil {
		t.Fatal(err)
	}
	if err := synced(3); !errors.Is(err, ErrNotMember) {
		t.Fatalf("member 3 after a restore of a snapshot without it: %v", err)
	}
	if err := synced(4); err != nil {
		t.Fatal(err)
	}
}

// groupReads holds at most its bound (maxReadMembers) in members: a
// record that does not fit evicts others.
func TestGroupReadsBound(t *testing.T) {
	const max = 4 * minReadMembers // small, for a quick test
	small := func() *groupReads {
		c := newGroupReads()
		c.max = max
		return c
	}
	c := small()
	rec := func(n int) *clusterv1.GroupRecord {
		info := &seqdv1.GroupInfo{}
		for i := range n {
			info.Members = append(info.Members, &seqdv1.GroupMember{User: uint64(i + 1)})
		}
		return &clusterv1.GroupRecord{Info: info}
	}
	big := rec(max / 4)
	for g := uint64(1); g <= 4; g++ {
		c.put(g, 1, big)
	}
	if len(c.m) != 4 || c.members != max {
		t.Fatalf("%d records, %d members; want 4 and %d", len(c.m), c.members, max)
	}
	c.put(5, 1, big)
	if len(c.m) != 4 || c.members != max || c.get(5, 1) == nil {
		t.Fatalf("after one more: %d records, %d members, want 4 with the new one", len(c.m), c.members)
	}
	// A newer version replaces the group's record; an older one, from a
	// reader that came late, does not.
	c.put(5, 3, big)
	c.put(5, 2, big)
	if c.get(5, 3) == nil || c.get(5, 2) != nil || c.members != max {
		t.Fatalf("versions: %v %v, %d members", c.get(5, 3), c.get(5, 2), c.members)
	}
	// The count stays the members of the records held when a record
	// grows and room is made while its old version is held (evictions
	// are at random: fifty tries).
	bigger := rec(max / 2)
	for range 50 {
		c := small()
		for g := uint64(1); g <= 4; g++ {
			c.put(g, 1, big)
		}
		c.put(1, 2, bigger)
		n := 0
		for _, e := range c.m {
			n += len(e.rec.Info.Members)
		}
		if n != c.members || n > max || c.get(1, 2) == nil {
			t.Fatalf("%d members counted, %d held (at most %d)", c.members, n, max)
		}
	}
	// Small records are not kept.
	if e := c.put(6, 1, rec(minReadMembers-1)); c.get(6, 1) != nil || e == nil {
		t.Fatal("a small record was cached")
	}
	if m, ok := c.put(7, 1, rec(minReadMembers)).member(minReadMembers); !ok || m.User != minReadMembers {
		t.Fatal("member lookup in a cached record")
	}
}
