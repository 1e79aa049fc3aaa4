package checker

import (
	"strings"
	"testing"
	"time"
)

func TestStaleReads(t *testing.T) {
	sec := func(n float64) time.Duration { return time.Duration(n * float64(time.Second)) }
	sent := []Sent{
		{Body: "a", Sender: 1, Inboxes: []uint64{1, 2}, Acked: true, ID: "1.1", First: sec(0.5), At: sec(1)},
		// Acknowledged after the reads below began: not owed to them.
		{Body: "b", Sender: 1, Inboxes: []uint64{1, 2}, Acked: true, ID: "1.2", First: sec(2.5), At: sec(3)},
		// Not acknowledged: its outcome is unknown.
		{Body: "c", Sender: 1, Inboxes: []uint64{1, 2}, First: sec(0.5), Last: sec(1)},
		// To user 3, on another shard: its copy comes through the outbox.
		{Body: "d", Sender: 1, Inboxes: []uint64{1, 3}, Acked: true, ID: "1.3", First: sec(0.5), At: sec(1)},
		// A read-fanout group message lives in the timeline.
		{Body: "e", Sender: 1, Inboxes: nil, ReadGroup: 9, Acked: true, ID: "1.4", First: sec(0.5), At: sec(1)},
	}
	local := func(s Sent, u uint64) bool { return u != 3 }
	reads := []Read{
		{User: 2, Start: sec(2), End: sec(2.1), Bodies: map[string]bool{"a": true}},          // holds a: fine
		{User: 2, Start: sec(2), End: sec(2.1), Bodies: map[string]bool{}},                   // lacks a: stale
		{User: 2, Start: sec(2), End: sec(2.1), Bodies: map[string]bool{}, MaybeStale: true}, // marked: not checked
		{User: 1, Start: sec(2), End: sec(2.1), Bodies: map[string]bool{"a": true}},          // lacks d, which is local to user 1
		{User: 3, Start: sec(2), End: sec(2.1), Bodies: map[string]bool{}},                   // d is not local to user 3
		{User: 2, Start: sec(0.9), End: sec(1.2), Bodies: map[string]bool{}},                 // began before a's ack
	}
	got := StaleReads(sent, reads, local, nil)
	if len(got) != 2 || !strings.Contains(got[0].Msg, "user 2's inbox") || !strings.Contains(got[0].Msg, "1.1") ||
		!strings.Contains(got[1].Msg, "user 1's inbox") || !strings.Contains(got[1].Msg, "1.3") {
		t.Fatalf("StaleReads = %v, want user 2 lacking 1.1 and user 1 lacking 1.3", got)
	}
	// Under retention a send that may have expired by the read's end is
	// excused.
	gone := func(s Sent, end time.Duration) bool { return s.First+sec(1) <= end }
	if got := StaleReads(sent, reads, local, gone); len(got) != 0 {
		t.Fatalf("StaleReads with everything expired = %v, want none", got)
	}
}
