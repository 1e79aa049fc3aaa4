package checker

import (
	"testing"
	"time"

	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

func dc(id uint64) *seqdv1.Conversation {
	return &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT, Id: id}
}

func gc(id uint64) *seqdv1.Conversation {
	return &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_GROUP, Id: id}
}

func msg(seq uint64, body string, out bool) *seqdv1.Event {
	return &seqdv1.Event{Seq: seq, Kind: seqdv1.EventKind_EVENT_KIND_MESSAGE, Conversation: dc(1), Body: []byte(body), Outgoing: out}
}

func TestLostOrDoubled(t *testing.T) {
	sent := []Sent{
		{Body: "a", Sender: 1, Inboxes: []uint64{1, 2}, Acked: true, ID: "1.1"},
		{Body: "b", Sender: 1, Inboxes: []uint64{1, 2}, Acked: false},
		{Body: "g", Sender: 1, ReadGroup: 9, Inboxes: []uint64{1}, Acked: true, ID: "g9.1"},
	}
	good := map[uint64][]*seqdv1.Event{1: {msg(1, "a", true), msg(2, "g", true)}, 2: {msg(1, "a", false)}}
	timelines := map[uint64][]*seqdv1.Event{9: {msg(1, "g", true)}}
	tests := []struct {
		name      string
		inboxes   map[uint64][]*seqdv1.Event
		timelines map[uint64][]*seqdv1.Event
		want      int
	}{
		{"all present once; the unacknowledged send may be missing", good, timelines, 0},
		{"lost in the recipient's inbox", map[uint64][]*seqdv1.Event{1: {msg(1, "a", true), msg(2, "g", true)}}, timelines, 1},
		{"twice in one inbox", map[uint64][]*seqdv1.Event{1: {msg(1, "a", true), msg(2, "g", true)}, 2: {msg(1, "a", false), msg(2, "a", false)}}, timelines, 1},
		{"lost from the group timeline", good, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := LostOrDoubled(sent, tt.inboxes, tt.timelines, nil); len(got) != tt.want {
				t.Fatalf("got %d anomalies %v, want %d", len(got), got, tt.want)
			}
		})
	}
}

// A copy's send time, where the reads or the streams saw one, decides
// instead of the first attempt: a send retried long after its first
// attempt, or whose copy shows it too young, must be there.
func TestLostOrDoubledBySendTime(t *testing.T) {
	sent := []Sent{{Body: "retried", Inboxes: []uint64{1}, Acked: true, ID: "1.1", First: time.Second}}
	x := &Expiry{Before: 3 * time.Second, BeforeMs: 3000}
	if got := LostOrDoubled(sent, map[uint64][]*seqdv1.Event{}, nil, x); len(got) != 0 {
		t.Fatalf("no copy seen, first attempt before the bound: %v", got)
	}
	x.SentAt = map[string]int64{"retried": 5000}
	if got := LostOrDoubled(sent, map[uint64][]*seqdv1.Event{}, nil, x); len(got) != 1 {
		t.Fatalf("a copy sent after the bound, gone: got %v, want it lost", got)
	}
	x.SentAt["retried"] = 2000
	if got := LostOrDoubled(sent, map[uint64][]*seqdv1.Event{}, nil, x); len(got) != 0 {
		t.Fatalf("a copy sent before the bound: %v", got)
	}
}

// Under retention a send may be missing if its first attempt began
// before the bound, never doubled, and one that began after must be there.
func TestLostOrDoubledUnderRetention(t *testing.T) {
	sent := []Sent{
		{Body: "old", Sender: 1, Inboxes: []uint64{1, 2}, Acked: true, ID: "1.1", First: 1 * time.Second},
		{Body: "new", Sender: 1, Inboxes: []uint64{1, 2}, Acked: true, ID: "1.2", First: 5 * time.Second},
	}
	for _, tt := range []struct {
		name    string
		inboxes map[uint64][]*seqdv1.Event
		bound   time.Duration
		want    int
	}{
		{"the old one removed", map[uint64][]*seqdv1.Event{1: {msg(2, "new", true)}, 2: {msg(2, "new", false)}}, 3 * time.Second, 0},
		{"the old one removed from one inbox only", map[uint64][]*seqdv1.Event{1: {msg(1, "old", true), msg(2, "new", true)}, 2: {msg(2, "new", false)}}, 3 * time.Second, 0},
		{"the new one missing", map[uint64][]*seqdv1.Event{1: {msg(2, "new", true)}, 2: {}}, 3 * time.Second, 1},
		{"the old one doubled", map[uint64][]*seqdv1.Event{1: {msg(1, "old", true), msg(2, "old", true), msg(3, "new", true)}, 2: {msg(2, "new", false)}}, 3 * time.Second, 1},
		{"sent right at the bound is not excused", map[uint64][]*seqdv1.Event{1: {msg(2, "new", true)}, 2: {msg(2, "new", false)}}, time.Second, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := LostOrDoubled(sent, tt.inboxes, nil, &Expiry{Before: tt.bound}); len(got) != tt.want {
				t.Fatalf("got %d anomalies %v, want %d", len(got), got, tt.want)
			}
		})
	}
}

func TestDoubledPayloads(t *testing.T) {
	ok := map[uint64][]*seqdv1.Event{1: {msg(1, "a", false), msg(2, "b", false)}}
	if got := DoubledPayloads(ok, "user", nil); len(got) != 0 {
		t.Fatalf("distinct bodies flagged: %v", got)
	}
	recalled := msg(2, "a", false)
	recalled.Recalled = true
	if got := DoubledPayloads(map[uint64][]*seqdv1.Event{1: {msg(1, "a", false), recalled}}, "user", nil); len(got) != 0 {
		t.Fatalf("a recalled copy counted: %v", got)
	}
	if got := DoubledPayloads(map[uint64][]*seqdv1.Event{1: {msg(1, "a", false), msg(5, "a", false)}}, "user", nil); len(got) != 1 {
		t.Fatalf("an undeduplicated retry not flagged: %v", got)
	}
}

func TestIncreasing(t *testing.T) {
	if got := Increasing(map[uint64][]*seqdv1.Event{1: {msg(1, "a", true), msg(3, "b", true)}}); len(got) != 0 {
		t.Fatal(got)
	}
	if got := Increasing(map[uint64][]*seqdv1.Event{1: {msg(3, "a", true), msg(3, "b", true), msg(2, "c", true)}}); len(got) != 2 {
		t.Fatalf("got %v, want 2 anomalies", got)
	}
}

func TestSubscriberGaps(t *testing.T) {
	inbox := map[uint64][]*seqdv1.Event{1: {msg(1, "a", false), msg(4, "b", false), msg(6, "c", false), msg(9, "d", false)}}
	tests := []struct {
		name string
		sub  Subscription
		want int
	}{
		{"from the start, partly", Subscription{User: 1, Seqs: []uint64{1, 4}}, 0},
		{"from a checkpoint to the end", Subscription{User: 1, After: 4, Seqs: []uint64{6, 9}}, 0},
		{"nothing delivered", Subscription{User: 1, After: 9}, 0},
		{"skipped one", Subscription{User: 1, After: 1, Seqs: []uint64{6, 9}}, 1},
		{"repeated one", Subscription{User: 1, After: 1, Seqs: []uint64{4, 4, 6}}, 1},
		{"delivered something the inbox lacks", Subscription{User: 1, Seqs: []uint64{1, 2, 4}}, 1},
		{"out of order", Subscription{User: 1, Seqs: []uint64{4, 1}}, 1},
		{"stopped after catching up", Subscription{User: 1, After: 4, Seqs: []uint64{6, 9}, Stopped: true, Target: 9}, 0},
		{"stopped short of its target", Subscription{User: 1, After: 1, Seqs: []uint64{4}, Stopped: true, Target: 9}, 1},
		{"stopped having delivered nothing", Subscription{User: 1, After: 4, Stopped: true, Target: 9}, 1},
		{"stopped, nothing to deliver", Subscription{User: 1, After: 9, Stopped: true, Target: 9}, 0},
		{"same events", Subscription{User: 1, Seqs: []uint64{1, 4}, Keys: []string{EventKey(inbox[1][0]), EventKey(inbox[1][1])}}, 0},
		{"another event at the same seq", Subscription{User: 1, Seqs: []uint64{1, 4}, Keys: []string{EventKey(inbox[1][0]), EventKey(msg(4, "phantom", false))}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SubscriberGaps([]Subscription{tt.sub}, inbox, nil); len(got) != tt.want {
				t.Fatalf("got %v, want %d anomalies", got, tt.want)
			}
		})
	}
}

// Under retention, a delivered event the inbox no longer holds is left
// out if it was sent before the bound; a gap in what the inbox still
// holds, or a missing event sent after the bound, is still caught.
func TestSubscriberGapsUnderRetention(t *testing.T) {
	// Retention removed 1 and 4 (sent at 100 and 200 ms) and, out of seq
	// order, 7: a copy delivered late from another shard, sent at 150 ms.
	inbox := map[uint64][]*seqdv1.Event{1: {msg(6, "c", false), msg(9, "d", false)}}
	for _, tt := range []struct {
		name string
		sub  Subscription
		want int
	}{
		{"removed from the front", Subscription{User: 1, Seqs: []uint64{1, 4, 6, 9}, SentAt: []int64{100, 200, 300, 400}}, 0},
		{"removed out of seq order", Subscription{User: 1, After: 4, Seqs: []uint64{6, 7, 9}, SentAt: []int64{300, 150, 400}}, 0},
		{"keys stay aligned", Subscription{User: 1, Seqs: []uint64{4, 6}, SentAt: []int64{200, 300},
			Keys: []string{"gone", EventKey(inbox[1][0])}}, 0},
		{"missing but sent after the bound", Subscription{User: 1, After: 4, Seqs: []uint64{6, 8, 9}, SentAt: []int64{300, 600, 400}}, 1},
		{"skipped one the inbox holds", Subscription{User: 1, Seqs: []uint64{1, 4, 9}, SentAt: []int64{100, 200, 400}}, 1},
		{"no send times recorded", Subscription{User: 1, Seqs: []uint64{1, 6}}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := SubscriberGaps([]Subscription{tt.sub}, inbox, &Expiry{BeforeMs: 250}); len(got) != tt.want {
				t.Fatalf("got %v, want %d anomalies", got, tt.want)
			}
		})
	}
}

func TestUnexpired(t *testing.T) {
	old, fresh := msg(1, "a", false), msg(2, "b", false)
	old.SentAtMs, fresh.SentAtMs = 100, 300
	if got := Unexpired(map[uint64][]*seqdv1.Event{1: {fresh}, 2: nil}, "user", 200); len(got) != 0 {
		t.Fatalf("a fresh event flagged: %v", got)
	}
	if got := Unexpired(map[uint64][]*seqdv1.Event{1: {old, fresh}, 2: {old}}, "user", 200); len(got) != 2 {
		t.Fatalf("got %v, want one anomaly per inbox holding an event past due", got)
	}
}

func TestUnreadAgrees(t *testing.T) {
	read := &seqdv1.Event{Seq: 5, Kind: seqdv1.EventKind_EVENT_KIND_READ, Conversation: dc(1), ReadUpTo: 2, Outgoing: true}
	hint := &seqdv1.Event{Seq: 7, Kind: seqdv1.EventKind_EVENT_KIND_GROUP_HINT, Conversation: gc(9), GroupCount: 4}
	own := &seqdv1.Event{Seq: 6, Kind: seqdv1.EventKind_EVENT_KIND_MESSAGE, Conversation: gc(9), GroupCount: 1, Outgoing: true, Body: []byte("mine")}
	deleted := msg(4, "d", false)
	deleted.Deleted = true
	inbox := map[uint64][]*seqdv1.Event{1: {msg(1, "a", false), msg(2, "b", false), msg(3, "c", false), deleted, read, own, hint, msg(8, "e", true)}}
	// direct:1 has c unread (a, b read; d deleted; e outgoing); group:9
	// hinted 4 messages, 1 read by sending.
	right := UnreadView{Total: 4, Conv: map[string]uint64{"direct:1": 1, "group:9": 3}}
	tests := []struct {
		name   string
		unread UnreadView
		floors map[string]uint64
		want   int
	}{
		{"agrees", right, nil, 0},
		{"counts a read message", UnreadView{Total: 5, Conv: map[string]uint64{"direct:1": 2, "group:9": 3}}, nil, 1},
		{"total is not the sum", UnreadView{Total: 3, Conv: map[string]uint64{"direct:1": 1, "group:9": 3}}, nil, 2},
		{"join floor", UnreadView{Total: 2, Conv: map[string]uint64{"direct:1": 1, "group:9": 1}}, map[string]uint64{"group:9": 3}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := UnreadAgrees(map[uint64]UnreadView{1: tt.unread}, inbox, map[uint64]map[string]uint64{1: tt.floors}, "leader")
			if len(got) != tt.want {
				t.Fatalf("got %v, want %d anomalies", got, tt.want)
			}
		})
	}
}

// A hint's expired count counts as read: retention removed that many of
// the group's messages.
func TestImpliedUnreadAfterExpiry(t *testing.T) {
	hint := func(seq, count, expired uint64) *seqdv1.Event {
		return &seqdv1.Event{Seq: seq, Kind: seqdv1.EventKind_EVENT_KIND_GROUP_HINT, Conversation: gc(9), GroupCount: count, GroupExpiredCount: expired}
	}
	for _, tt := range []struct {
		inbox []*seqdv1.Event
		want  uint64
	}{
		{[]*seqdv1.Event{hint(1, 4, 0)}, 4},
		{[]*seqdv1.Event{hint(1, 4, 0), hint(2, 6, 3)}, 3},
		{[]*seqdv1.Event{hint(2, 6, 6)}, 0},
		{[]*seqdv1.Event{{Seq: 1, Kind: seqdv1.EventKind_EVENT_KIND_READ, Conversation: gc(9), GroupCount: 5, Outgoing: true}, hint(2, 6, 3)}, 1},
	} {
		if got := ImpliedUnread(tt.inbox, nil).Total; got != tt.want {
			t.Errorf("ImpliedUnread(%v) = %d, want %d", tt.inbox, got, tt.want)
		}
	}
}

func TestRemoved(t *testing.T) {
	sent := []Sent{
		{Body: "gone", Inboxes: []uint64{1, 2}, Acked: true},
		{Body: "half", Inboxes: []uint64{1, 2}, Acked: true},
		{Body: "g", ReadGroup: 9, Acked: true},
		{Body: "never", Inboxes: []uint64{1}},
	}
	inboxes := map[uint64][]*seqdv1.Event{1: {msg(3, "half", true)}}
	timelines := map[uint64][]*seqdv1.Event{9: {msg(1, "g", false)}}
	if got := Removed(sent, inboxes, timelines); got != 1 {
		t.Fatalf("Removed = %d, want 1 (only the acknowledged send no inbox holds)", got)
	}
}
