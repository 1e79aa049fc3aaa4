package store

import (
	"errors"
	"fmt"
	"maps"
	"testing"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

func opExpireTimelines(before int64, from uint64, maxGroups, limit uint32) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_ExpireTimelines{ExpireTimelines: &clusterv1.ExpireTimelinesOp{
		BeforeMs: before, FromGroup: from, MaxGroups: maxGroups, Limit: limit}}}
}

// timelineSetup holds read-fanout group 50 (owner 1, members 2 and 3)
// with timeline entries g50.1 and g50.2 at 1000 ms, the recall of g50.1
// (entry 3, with its recall mark) at 2000 and g50.4 at 5000, all hinted
// to both members; member 3 has read up to entry 2. Read-fanout group 60
// (member 2) has g60.1 at 1000, not hinted yet; write-fanout group 70 has
// a message at 1000 in every member's inbox.
func timelineSetup(t *testing.T) *fsmHarness {
	h := newHarness(t)
	h.must(opCreateGroup(50, 1, true, 100, 2, 3))
	h.must(opCreateGroup(60, 1, true, 100, 2))
	h.must(opCreateGroup(70, 1, false, 100, 2, 3))
	h.now = 1000
	h.must(opGroupSend(50, 1, true, 1, "a", "first", apps(1, 1)...))
	h.must(opGroupSend(50, 2, true, 1, "b", "second", apps(1, 2)...))
	h.must(opGroupSend(60, 1, true, 1, "c", "other group", apps(1, 3)...))
	h.must(opGroupSend(70, 1, false, 1, "d", "write fanout", apps(1, 4, 2, 1, 3, 1)...))
	h.now = 2000
	h.must(opRecall(1, "g50.1", 1<<40, 3, apps(1, 5)...))
	h.now = 5000
	h.must(opGroupSend(50, 4, true, 1, "e", "new", apps(1, 6)...))
	h.must(opHint(50, 4, 3, true, nil, apps(2, 2, 3, 2)...))
	h.must(opMarkReadFanout(3, 50, 2, 2, 3))
	return h
}

func TestApplyExpireTimelines(t *testing.T) {
	step := func(t *testing.T, h *fsmHarness, from uint64, maxGroups, limit uint32, expired uint32, next uint64) {
		t.Helper()
		wantStep(t, h, opExpireTimelines(3000, from, maxGroups, limit), expired, next)
	}
	firstDue := func(t *testing.T, h *fsmHarness, from uint64, want uint64, wantOK bool) {
		t.Helper()
		if g, ok, err := h.f.FirstTimelineDue(3000, from); err != nil || g != want || ok != wantOK {
			t.Fatalf("FirstTimelineDue(3000, %d) = %d, %v, %v; want %d, %v", from, g, ok, err, want, wantOK)
		}
	}
	timeline := func(t *testing.T, h *fsmHarness, user, g, after uint64) string {
		t.Helper()
		res, err := h.f.SyncGroup(user, g, after, 10)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%v truncated=%v earliest=%d next=%d", seqsOf(res.Events), res.Truncated, res.EarliestSeq, res.NextCheckpoint)
	}
	hasRecallMark := func(t *testing.T, h *fsmHarness) bool {
		t.Helper()
		_, ok := dumpState(t, h.f)[string(recallKey(50, 3))]
		return ok
	}

	t.Run("removes the hinted entries past the period", func(t *testing.T) {
		h := timelineSetup(t)
		// Member 2 has g50.2 and g50.4 unread (g50.1 was recalled), and g60.1
		// is not hinted yet; member 3 read up to entry 2.
		wantUnread(t, h.f, 2, 3, map[string]uint64{"g50": 2, "g70": 1})
		wantUnread(t, h.f, 3, 2, map[string]uint64{"g50": 1, "g70": 1})
		if got := timeline(t, h, 2, 50, 0); got != "[1 2 3 4] truncated=false earliest=0 next=4" {
			t.Fatalf("timeline before: %s", got)
		}
		firstDue(t, h, 0, 50, true)
		firstDue(t, h, 51, 0, false) // group 60's entry is not hinted
		step(t, h, 0, 100, 100, 3, 0)
		firstDue(t, h, 0, 0, false)
		if got := timeline(t, h, 2, 50, 0); got != "[4] truncated=true earliest=4 next=4" {
			t.Fatalf("timeline from 0 after the step: %s", got)
		}
		if got := timeline(t, h, 2, 50, 3); got != "[4] truncated=false earliest=0 next=4" {
			t.Fatalf("timeline from 3 after the step: %s", got)
		}
		if got := timeline(t, h, 2, 50, 1); got != "[4] truncated=true earliest=4 next=4" {
			t.Fatalf("timeline from 1 after the step: %s", got)
		}
		if hasRecallMark(t, h) {
			t.Fatal("the removed recall entry's mark stayed")
		}
		// g50.2 can no longer be read: member 2 has only g50.4 unread.
		wantUnread(t, h.f, 2, 2, map[string]uint64{"g50": 1, "g70": 1})
		wantUnread(t, h.f, 3, 2, map[string]uint64{"g50": 1, "g70": 1})
		// Counts up to a removed entry count every removed message (two).
		for _, c := range []struct{ upTo, count uint64 }{{0, 2}, {1, 2}, {3, 2}, {4, 3}, {9, 3}} {
			n, last, err := timelineCount(h.f, 50, c.upTo)
			if err != nil || n != c.count || last != 4 {
				t.Fatalf("TimelineCount(50, %d) = %d, %d, %v; want %d, 4", c.upTo, n, last, err, c.count)
			}
		}
		var gc clusterv1.GroupCounters
		readRecord(t, h.f, countersKey(50), &gc)
		if gc.TimelineStart != 4 || gc.ExpiredCount != 2 || gc.LastGroupSeq != 4 || gc.MessageCount != 3 || gc.HintedGseq != 4 {
			t.Fatalf("group 50's counters after the step: %v", &gc)
		}
		// Group 60's entry goes once a hint round has covered it; the
		// write-fanout group's copies are the inbox retention's.
		h.must(opHint(60, 1, 1, true, nil, apps(2, 3)...))
		firstDue(t, h, 0, 60, true)
		step(t, h, 0, 100, 100, 1, 0)
		// Nothing is left: the checkpoint moves past the removed entry, and
		// a read from it is not told again.
		if got := timeline(t, h, 2, 60, 0); got != "[] truncated=true earliest=2 next=1" {
			t.Fatalf("group 60's timeline after the step: %s", got)
		}
		if got := timeline(t, h, 2, 60, 1); got != "[] truncated=false earliest=0 next=1" {
			t.Fatalf("group 60's timeline from the checkpoint past the removed entry: %s", got)
		}
		wantUnread(t, h.f, 2, 2, map[string]uint64{"g50": 1, "g70": 1})
		wantSeqs(t, h.f, 2, 1, 2, 3)
		// A mark-read's answer counts as Unread does: g60.1 and g50.2 are
		// not unread any more (member 2's own records still count them).
		r := h.must(opMarkRead(2, gconv(70), 1, 4))
		if r.MarkRead.Unread != 0 || r.MarkRead.TotalUnread != 1 {
			t.Fatalf("marking write-fanout group 70 read: %v; want 0 left there, 1 in all", r.MarkRead)
		}
		wantUnread(t, h.f, 2, 1, map[string]uint64{"g50": 1})
		// Marking read at a removed entry reads every removed message.
		count, _, err := timelineCount(h.f, 50, 1)
		if err != nil || count != 2 {
			t.Fatalf("TimelineCount(50, 1) = %d, %v; want 2", count, err)
		}
		r = h.must(opMarkReadFanout(2, 50, 1, count, 5))
		if r.MarkRead.Unread != 1 || r.MarkRead.TotalUnread != 1 {
			t.Fatalf("marking group 50 read at a removed entry: %v; want g50.4 left", r.MarkRead)
		}
		wantUnread(t, h.f, 2, 1, map[string]uint64{"g50": 1})
		// A pass with nothing due changes nothing.
		before := dumpState(t, h.f)
		step(t, h, 0, 100, 100, 0, 0)
		requireUnchanged(t, before, h.f, "a second pass")
	})
	t.Run("a record goes when no copy it lists is left", func(t *testing.T) {
		h := newHarness(t)
		h.must(opCreateGroup(80, 1, true, 100, 2))
		h.now = 1000
		remote := opGroupSend(80, 1, true, 900, "r", "from another shard")
		remote.GetSend().RemoteSender = true
		h.must(remote)
		h.must(opGroupSend(80, 2, true, 1, "l", "from here", apps(1, 1)...))
		h.must(opHint(80, 2, 2, true, nil, apps(2, 1)...))
		h.now = 5000
		record := func(id string) bool {
			t.Helper()
			rec, err := h.f.Message(id)
			if err != nil {
				t.Fatal(err)
			}
			return rec != nil
		}
		wantStep(t, h, opExpireTimelines(3000, 0, 100, 100), 2, 0)
		// The sender on another shard left no copy here; the local
		// sender's copy keeps its record until the inbox step removes it.
		if record("g80.1") || !record("g80.2") {
			t.Fatalf("records after the timeline step: g80.1 %v, g80.2 %v; want gone and kept", record("g80.1"), record("g80.2"))
		}
		wantStep(t, h, opExpireScan(3000, 0, 100, 100), 2, 0)
		if record("g80.2") {
			t.Fatal("g80.2's record outlived its last copy")
		}
	})
	t.Run("hints tell the expired count", func(t *testing.T) {
		h := timelineSetup(t)
		if expired, err := h.f.TimelinesExpired(); err != nil || expired {
			t.Fatalf("TimelinesExpired before any step: %v, %v", expired, err)
		}
		step(t, h, 0, 100, 100, 3, 0)
		if expired, err := h.f.TimelinesExpired(); err != nil || !expired {
			t.Fatalf("TimelinesExpired after a step removed entries: %v, %v", expired, err)
		}
		h.must(opGroupSend(50, 5, true, 1, "f", "newer", apps(1, 7)...))
		// Without with_expired (a shard with a replica before format 5) a
		// hint is what it was; with it, every copy carries the count, the
		// queued one for a member on another shard included.
		h.must(opHint(50, 5, 4, false, nil, apps(2, 3)...))
		if e := eventAt(t, h.f, 2, 3); e.GroupCount != 4 || e.GroupExpiredCount != 0 {
			t.Fatalf("hint without with_expired: %v", e)
		}
		hint := opHint(50, 5, 4, true, []uint64{9}, apps(3, 4)...)
		hint.GetGroupHint().WithExpired = true
		h.must(hint)
		if e := eventAt(t, h.f, 3, 4); e.GroupCount != 4 || e.GroupExpiredCount != 2 {
			t.Fatalf("hint with with_expired: %v; want group count 4, expired 2", e)
		}
		items, err := h.f.Outbox(10)
		if err != nil || len(items) != 1 || items[0].Item.User != 9 || items[0].Item.Event.GroupExpiredCount != 2 {
			t.Fatalf("queued hint for the member elsewhere: %v, %v; want one for 9 with expired 2", items, err)
		}
		// A device counts a group's unread from its events: the last
		// hint's count less the larger of its read marker's count and the
		// hint's expired count (no recall above either here). That is
		// what Unread says, for member 3 (read up to 2) as for member 2
		// (read nothing), once the hint carries the expired count.
		device := func(user uint64) uint64 {
			t.Helper()
			var hint, read uint64
			var expired uint64
			for _, e := range syncAllEvents(t, h.f, user) {
				if e.Conversation.GetId() != 50 {
					continue
				}
				switch e.Kind {
				case seqdv1.EventKind_EVENT_KIND_GROUP_HINT:
					hint, expired = e.GroupCount, e.GroupExpiredCount
				case seqdv1.EventKind_EVENT_KIND_READ:
					read = e.GroupCount
				}
			}
			return hint - max(read, expired)
		}
		if n := device(3); n != 2 {
			t.Fatalf("member 3's device counts %d unread in the group, want 2", n)
		}
		wantUnread(t, h.f, 3, 3, map[string]uint64{"g50": 2, "g70": 1})
		// Member 2's hint above had no count: its device counts the two
		// removed messages too, until a hint with the count comes.
		if n := device(2); n != 4 {
			t.Fatalf("member 2's device counts %d unread from a hint without the count, want 4", n)
		}
		again := opHint(50, 5, 4, false, nil, apps(2, 4)...)
		again.GetGroupHint().WithExpired = true
		h.must(again)
		if n := device(2); n != 2 {
			t.Fatalf("member 2's device counts %d unread, want 2", n)
		}
		wantUnread(t, h.f, 2, 3, map[string]uint64{"g50": 2, "g70": 1})
	})
	t.Run("hint_expired lists the group for a round that tells the count", func(t *testing.T) {
		listed := func(t *testing.T, h *fsmHarness) *clusterv1.GroupCounters {
			t.Helper()
			gs, err := h.f.ReadFanoutGroups()
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range gs {
				if g.Info.GroupId == 50 {
					return g.Counters
				}
			}
			return nil
		}
		// Without the field (format 6 and before) the group, hinted up to
		// its last entry, has no news after the step.
		h := timelineSetup(t)
		step(t, h, 0, 100, 100, 3, 0)
		if c := listed(t, h); c != nil {
			t.Fatalf("group 50 listed for hints after a step without hint_expired: %v", c)
		}
		h = timelineSetup(t)
		op := opExpireTimelines(3000, 0, 100, 100)
		op.GetExpireTimelines().HintExpired = true
		wantStep(t, h, op, 3, 0)
		if c := listed(t, h); c == nil || !c.ExpiryHints || c.ExpiredCount != 2 || c.HintedExpired != 0 || c.HintedGseq != 4 {
			t.Fatalf("group 50's counters after a step with hint_expired: %v; want it listed, expired count 2, none told", c)
		}
		// A round telling more than the group's count is refused.
		bad := opHint(50, 4, 3, true, nil, apps(2, 3)...)
		bad.GetGroupHint().ToldExpired = 3
		if r := h.one(bad); r.Status == clusterv1.OpStatus_OP_STATUS_OK {
			t.Fatalf("a round telling expired count 3 of 2: %v", r)
		}
		// A round at the group seq the last one covered, telling the
		// count: every copy carries it, under an id of its own (a member's
		// shard knows delivered hints by id), the queued one for a member
		// elsewhere included; its final chunk records the count.
		hint := opHint(50, 4, 3, false, nil, apps(2, 3)...)
		hint.GetGroupHint().ToldExpired = 2
		h.must(hint)
		hint = opHint(50, 4, 3, true, []uint64{9}, apps(3, 4)...)
		hint.GetGroupHint().ToldExpired = 2
		h.must(hint)
		for _, c := range []struct{ user, seq uint64 }{{2, 3}, {3, 4}} {
			if e := eventAt(t, h.f, c.user, c.seq); e.Kind != seqdv1.EventKind_EVENT_KIND_GROUP_HINT || e.GroupSeq != 4 || e.GroupCount != 3 ||
				e.GroupExpiredCount != 2 || e.MessageId != "h50.4.x2" {
				t.Fatalf("member %d's hint telling the count: %v", c.user, e)
			}
		}
		items, err := h.f.Outbox(10)
		if err != nil || len(items) != 1 || items[0].Item.User != 9 || items[0].Item.Event.GroupExpiredCount != 2 || items[0].Item.Event.MessageId != "h50.4.x2" {
			t.Fatalf("queued hint for the member elsewhere: %v, %v", items, err)
		}
		if c := listed(t, h); c != nil {
			t.Fatalf("group 50 still listed after the round told its count: %v", c)
		}
		var gc clusterv1.GroupCounters
		readRecord(t, h.f, countersKey(50), &gc)
		if gc.HintedExpired != 2 || gc.HintedGseq != 4 {
			t.Fatalf("group 50's counters after the round: %v", &gc)
		}
		// The round's final chunk again (a leader that lost its answer),
		// and a round telling no more, are retries: nothing is appended.
		before := len(syncAllEvents(t, h.f, 2))
		h.must(hint)
		again := opHint(50, 4, 3, true, nil, apps(2, 4)...)
		again.GetGroupHint().ToldExpired = 1
		h.must(again)
		if n := len(syncAllEvents(t, h.f, 2)); n != before {
			t.Fatalf("member 2 has %d events after retries of the round, want %d", n, before)
		}
		// Unread never counted the removed messages here (the group's
		// counters are on this shard).
		wantUnread(t, h.f, 2, 2, map[string]uint64{"g50": 1, "g70": 1})
		// A new message's round records the count it tells too; the next
		// step's removal lists the group again.
		h.now = 6000
		h.must(opGroupSend(50, 5, true, 1, "f", "newer", apps(1, 7)...))
		next := opHint(50, 5, 4, true, nil, apps(2, 4, 3, 5)...)
		next.GetGroupHint().ToldExpired = 2
		next.GetGroupHint().WithExpired = true
		h.must(next)
		if e := eventAt(t, h.f, 2, 4); e.GroupSeq != 5 || e.GroupExpiredCount != 2 || e.MessageId != "h50.5.x2" {
			t.Fatalf("member 2's hint of the new message: %v", e)
		}
		if c := listed(t, h); c != nil {
			t.Fatalf("group 50 listed after the new message's round: %v", c)
		}
		op = opExpireTimelines(5500, 0, 100, 100)
		op.GetExpireTimelines().HintExpired = true
		wantStep(t, h, op, 1, 0)
		if c := listed(t, h); c == nil || c.ExpiredCount != 3 || c.HintedExpired != 2 {
			t.Fatalf("group 50's counters after the next step: %v; want it listed, expired count 3, 2 told", c)
		}
	})
	t.Run("a delivered hint's count, for a group on another shard", func(t *testing.T) {
		h := newHarness(t)
		hint := func(gseq, count, expired uint64) *clusterv1.FanoutItem {
			return &clusterv1.FanoutItem{Kind: clusterv1.FanoutItem_KIND_GROUP_HINT, User: 2, Event: &seqdv1.Event{
				Kind: seqdv1.EventKind_EVENT_KIND_GROUP_HINT, Conversation: gconv(90), MessageId: fmt.Sprintf("h90.%d", gseq),
				GroupSeq: gseq, GroupCount: count, GroupExpiredCount: expired}}
		}
		deliver := func(withExpired bool, it *clusterv1.FanoutItem, seq uint64) {
			t.Helper()
			op := opDeliver([]*clusterv1.FanoutItem{it}, seq)
			op.GetDeliver().WithExpired = withExpired
			h.must(op)
			if e := eventAt(t, h.f, 2, seq); e.GroupExpiredCount != it.Event.GroupExpiredCount {
				t.Fatalf("delivered hint %v; want it written as it came", e)
			}
		}
		// Without with_expired (a replica of this shard before format 5)
		// the hint is written with its count, and the member's state
		// leaves it out: all five messages are unread.
		deliver(false, hint(5, 5, 3), 1)
		wantUnread(t, h.f, 2, 5, map[string]uint64{"g90": 5})
		// With it, the three removed messages are read.
		deliver(true, hint(6, 6, 3), 2)
		wantUnread(t, h.f, 2, 3, map[string]uint64{"g90": 3})
		// A mark-read's answer says the same, on a shard where no timeline
		// entry has expired: a marker at count 2, below the removed ones,
		// leaves 3; one at 4 leaves 2.
		r := h.must(opMarkReadFanout(2, 90, 2, 2, 3))
		if r.MarkRead.Unread != 3 || r.MarkRead.TotalUnread != 3 {
			t.Fatalf("mark-read answer %v; want 3 unread, 3 in all", r.MarkRead)
		}
		r = h.must(opMarkReadFanout(2, 90, 4, 4, 4))
		if r.MarkRead.Unread != 2 || r.MarkRead.TotalUnread != 2 {
			t.Fatalf("mark-read answer %v; want 2 unread, 2 in all", r.MarkRead)
		}
		wantUnread(t, h.f, 2, 2, map[string]uint64{"g90": 2})
	})
	t.Run("a member who joined after the removed entries", func(t *testing.T) {
		h := timelineSetup(t)
		step(t, h, 0, 100, 100, 3, 0)
		h.must(opAddMembers(50, false, 100, 9))
		if got := timeline(t, h, 9, 50, 0); got != "[] truncated=false earliest=0 next=4" {
			t.Fatalf("a newcomer's timeline: %s", got)
		}
		h.must(opAddMembers(50, true, 100, 8)) // with history: it starts at 0
		if got := timeline(t, h, 8, 50, 0); got != "[4] truncated=true earliest=4 next=4" {
			t.Fatalf("a newcomer with history: %s", got)
		}
	})
	t.Run("max groups", func(t *testing.T) {
		h := timelineSetup(t)
		h.must(opHint(60, 1, 1, true, nil, apps(2, 3)...))
		step(t, h, 0, 1, 100, 3, 60) // group 50, then the next step starts at 60
		step(t, h, 60, 1, 100, 1, 0)
		step(t, h, 61, 1, 100, 0, 0) // past the last group
	})
	t.Run("limit", func(t *testing.T) {
		h := timelineSetup(t)
		h.must(opHint(60, 1, 1, true, nil, apps(2, 3)...))
		// Two entries a step; a step that stops at its limit starts the
		// next at the same group.
		if steps := passSteps(t, h, func(from uint64) *clusterv1.StoreOp { return opExpireTimelines(3000, from, 100, 2) }); steps != "[2:50 2:0]" {
			t.Fatalf("steps (expired:next) %v", steps)
		}
		if got := timeline(t, h, 2, 50, 0); got != "[4] truncated=true earliest=4 next=4" {
			t.Fatalf("timeline after the pass: %s", got)
		}
		// Stopped after entry 2, the first step left the counters there.
		var gc clusterv1.GroupCounters
		readRecord(t, h.f, countersKey(50), &gc)
		if gc.TimelineStart != 4 || gc.ExpiredCount != 2 {
			t.Fatalf("counters after the pass: %v", &gc)
		}
	})
	t.Run("the same state as one step, whatever the steps", func(t *testing.T) {
		one, many := timelineSetup(t), timelineSetup(t)
		one.must(opExpireTimelines(3000, 0, 100, 100))
		// One entry a step, as a step that meets its limit at every entry.
		for _, from := range []uint64{0, 50, 50} {
			many.must(opExpireTimelines(3000, from, 100, 1))
		}
		// The group tables: timelines, recall marks and counters (the
		// change log and the applied index differ by the entries' count).
		groups := func(h *fsmHarness) map[string]string {
			out := map[string]string{}
			for k, v := range dumpState(t, h.f) {
				if k[0] == tagTimeline || k[0] == tagRecall || k[0] == tagCounters {
					out[k] = v
				}
			}
			return out
		}
		if a, b := groups(one), groups(many); !maps.Equal(a, b) {
			t.Fatalf("one step and several left different states:\n%v\n%v", a, b)
		}
	})
	t.Run("survives a reopen", func(t *testing.T) {
		h := timelineSetup(t)
		step(t, h, 0, 100, 100, 3, 0)
		h.reopen(t)
		if got := timeline(t, h, 2, 50, 0); got != "[4] truncated=true earliest=4 next=4" {
			t.Fatalf("timeline after a reopen: %s", got)
		}
		wantUnread(t, h.f, 2, 2, map[string]uint64{"g50": 1, "g70": 1})
	})
	t.Run("bad input", func(t *testing.T) {
		h := timelineSetup(t)
		// A first step, with nothing due, records that the shard's data
		// has met format 4; the refusals then write nothing at all.
		if r := h.must(opExpireTimelines(500, 0, 100, 100)); r.Expired != 0 || r.ExpireNext != 0 {
			t.Fatalf("a step before every entry: %+v", r)
		}
		checkRefusals(t, h, []refusal{
			{"no cutoff", opExpireTimelines(0, 0, 100, 100), stRejected, "want a time after 1970"},
			{"cutoff before 1970", opExpireTimelines(-5, 0, 100, 100), stRejected, "want a time after 1970"},
			{"zero limit", opExpireTimelines(3000, 0, 100, 0), stRejected, "expire limit 0"},
			{"huge limit", opExpireTimelines(3000, 0, 100, maxExpireEvents+1), stRejected, "expire limit"},
			{"zero groups", opExpireTimelines(3000, 0, 0, 100), stRejected, "expire max_groups 0"},
			{"huge groups", opExpireTimelines(3000, 0, maxExpireGroups+1, 100), stRejected, "expire max_groups"},
		})
		// Nothing due from past the last group either.
		before := dumpState(t, h.f)
		step(t, h, 1<<62, 100, 100, 0, 0)
		requireUnchanged(t, before, h.f, "a step from past the last group")
	})
}

// TestGroupHistory pages backwards through a read-fanout timeline as each
// member sees it: from its join (or the start, with history) and from the
// first entry retention kept.
func TestGroupHistory(t *testing.T) {
	h := timelineSetup(t)
	page := func(t *testing.T, user, before uint64, limit int) string {
		t.Helper()
		events, next, err := h.f.GroupHistory(user, 50, before, limit)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%v next=%d", seqsOf(events), next)
	}
	for _, c := range []struct {
		user, before uint64
		limit        int
		want         string
	}{
		{2, 0, 10, "[4 3 2 1] next=0"},
		{2, 0, 2, "[4 3] next=3"},
		{2, 3, 2, "[2 1] next=0"},
		{2, 2, 1, "[1] next=0"},
		{2, 1, 10, "[] next=0"},
		{2, 100, 10, "[4 3 2 1] next=0"}, // past the newest: from the newest
		{2, 0, 0, "[] next=0"},
		{3, 4, 10, "[3 2 1] next=0"},
	} {
		if got := page(t, c.user, c.before, c.limit); got != c.want {
			t.Errorf("member %d before %d limit %d: %s, want %s", c.user, c.before, c.limit, got, c.want)
		}
	}
	// A newcomer sees from its join on; one added with history sees all.
	h.must(opAddMembers(50, false, 100, 9))
	h.must(opAddMembers(50, true, 100, 10))
	h.now = 6000
	h.must(opGroupSend(50, 5, true, 1, "f", "after the joins", apps(1, 7)...))
	for _, c := range []struct {
		user, before uint64
		want         string
	}{
		{9, 0, "[5] next=0"},
		{9, 5, "[] next=0"},
		{10, 0, "[5 4 3 2 1] next=0"},
	} {
		if got := page(t, c.user, c.before, 10); got != c.want {
			t.Errorf("member %d before %d: %s, want %s", c.user, c.before, got, c.want)
		}
	}
	if got := page(t, 9, 0, 1); got != "[5] next=0" {
		t.Errorf("newcomer's full page: %s, want no next page below its join", got)
	}
	// Retention removes entries 1 to 3: paging stops at the first kept.
	wantStep(t, h, opExpireTimelines(3000, 0, 100, 100), 3, 0)
	if got := page(t, 10, 0, 10); got != "[5 4] next=0" {
		t.Errorf("after retention: %s, want [5 4]", got)
	}
	if got := page(t, 10, 0, 1); got != "[5] next=5" {
		t.Errorf("after retention, one a page: %s", got)
	}
	if got := page(t, 2, 4, 10); got != "[] next=0" {
		t.Errorf("after retention, before the first kept: %s", got)
	}
	// The refusals SyncGroup makes.
	for _, c := range []struct {
		user, group uint64
		want        error
	}{
		{77, 50, ErrNotMember},
		{2, 70, ErrWriteFanout},
		{2, 99, ErrNotFound},
	} {
		if _, _, err := h.f.GroupHistory(c.user, c.group, 0, 10); !errors.Is(err, c.want) {
			t.Errorf("GroupHistory(%d, %d): %v, want %v", c.user, c.group, err, c.want)
		}
	}
	h.must(opRemoveMembers(50, 2))
	if _, _, err := h.f.GroupHistory(2, 50, 0, 10); !errors.Is(err, ErrNotMember) {
		t.Errorf("removed member: %v, want ErrNotMember", err)
	}
}
