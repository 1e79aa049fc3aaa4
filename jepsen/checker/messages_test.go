package checker

import (
	"testing"

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
			if got := LostOrDoubled(sent, tt.inboxes, tt.timelines); len(got) != tt.want {
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
			if got := SubscriberGaps([]Subscription{tt.sub}, inbox); len(got) != tt.want {
				t.Fatalf("got %v, want %d anomalies", got, tt.want)
			}
		})
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
