package main

import (
	"testing"

	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

func TestSlotRanges(t *testing.T) {
	for _, tc := range []struct {
		in   []uint32
		want string
	}{
		{nil, "-"},
		{[]uint32{5}, "5"},
		{[]uint32{0, 1, 2, 3, 8, 10, 11, 12}, "0-3,8,10-12"},
		{[]uint32{12, 3, 11, 0, 2, 1, 10, 8}, "0-3,8,10-12"},
		{[]uint32{1, 3, 5}, "1,3,5"},
		{[]uint32{4, 4, 5}, "4-5"},
	} {
		if got := slotRanges(tc.in); got != tc.want {
			t.Errorf("slotRanges(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestGroupHintContent(t *testing.T) {
	g := &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_GROUP, Id: 50}
	for _, tc := range []struct {
		e    *seqdv1.Event
		want string
	}{
		{&seqdv1.Event{Kind: seqdv1.EventKind_EVENT_KIND_GROUP_HINT, Conversation: g, GroupSeq: 9, GroupCount: 7},
			"group has news up to group seq 9 (7 messages in all): see `seqctl group sync 50 --user USER`"},
		{&seqdv1.Event{Kind: seqdv1.EventKind_EVENT_KIND_GROUP_HINT, Conversation: g, GroupSeq: 9, GroupCount: 7, GroupExpiredCount: 3},
			"group has news up to group seq 9 (7 messages in all, the first 3 removed by retention): see `seqctl group sync 50 --user USER`"},
	} {
		if got := eventContent(tc.e); got != tc.want {
			t.Errorf("eventContent(%v) = %q, want %q", tc.e, got, tc.want)
		}
	}
}
