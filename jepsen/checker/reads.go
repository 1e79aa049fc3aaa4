package checker

import (
	"fmt"
	"time"
)

// Read is one read of a user's whole inbox during the run: Sync from
// checkpoint 0, page after page, through the router.
type Read struct {
	User uint64
	// Start is when the first page's call began, End when the last
	// page's answer came.
	Start, End time.Duration
	// Bodies are the bodies of the message events it returned (the
	// messages workload checks each read as it is made, then drops them).
	Bodies map[string]bool
	// MaybeStale: a page came from a replica that could not reach its
	// shard's leader (maybe_stale), which may lack the newest writes.
	MaybeStale bool
}

// StaleReads reports the reads that lack a send acknowledged before they
// began, in an inbox of the shard that wrote the send (local: the
// sender's shard for a direct message, the group's for a write-fanout
// group message; a copy on another shard comes later, through the
// outbox). A leader answers only once it knows it leads and has applied
// every entry committed before the read (G3, read-your-writes through
// leader changes). Reads marked maybe_stale are not checked; gone, if
// set, excuses a send retention may have removed by the read's end.
func StaleReads(sent []Sent, reads []Read, local func(s Sent, user uint64) bool, gone func(s Sent, end time.Duration) bool) []Anomaly {
	byUser := map[uint64][]Sent{}
	for _, s := range sent {
		if !s.Acked || s.ReadGroup != 0 {
			continue
		}
		for _, u := range s.Inboxes {
			if local(s, u) {
				byUser[u] = append(byUser[u], s)
			}
		}
	}
	var out []Anomaly
	for _, r := range reads {
		if r.MaybeStale {
			continue
		}
		for _, s := range byUser[r.User] {
			if s.At >= r.Start || r.Bodies[s.Body] || gone != nil && gone(s, r.End) {
				continue
			}
			out = append(out, Anomaly{Kind: "stale-read", Key: r.User, At: r.End, Msg: fmt.Sprintf(
				"a read of user %d's inbox (%v–%v) lacks message %s (%q, from %d), acknowledged at %v before the read began",
				r.User, r.Start.Round(time.Millisecond), r.End.Round(time.Millisecond), s.ID, s.Body, s.Sender, s.At.Round(time.Millisecond))})
		}
	}
	return out
}
