package checker

import (
	"fmt"
	"sort"
	"time"

	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// Sent is one logical message the messages workload tried to send: one
// unique body, one client_msg_id, retried until acknowledged or given up.
type Sent struct {
	Body   string
	Sender uint64
	// Inboxes are the users whose inbox must hold it exactly once
	// (DIRECT: sender and recipients; write-fanout group: every member).
	Inboxes []uint64
	// ReadGroup is set for read-fanout group messages: they live once in
	// that group's timeline instead of in member inboxes.
	ReadGroup uint64
	Acked     bool
	ID        string        // message id from the acknowledgement
	First     time.Duration // when its first attempt began
	At        time.Duration // when it was acknowledged
	Last      time.Duration // when its last attempt ended
}

// Subscription is what one Subscribe connection delivered, in order.
type Subscription struct {
	User  uint64
	After uint64   // the checkpoint it was opened from
	Seqs  []uint64 // the seqs it delivered, in order
	// Keys are EventKey of each delivered event, parallel to Seqs (nil:
	// only the seqs are compared).
	Keys []string
	// SentAt is each delivered event's sent_at_ms, parallel to Seqs (nil:
	// not recorded): under retention, what tells an event retention may
	// have removed since from one that went missing.
	SentAt []int64
	Client int
	// Stopped: the harness ended the stream after the final heal, once its
	// user's subscriber had caught up to Target (the newest seq of the
	// user's inbox then), or gave up waiting. Such a stream must have
	// delivered every event up to Target; one a fault broke, only a gap-free
	// prefix.
	Stopped bool
	Target  uint64
}

// EventKey identifies an event's content for comparing what a stream
// delivered with the final inbox: a stream that delivered a different
// event at the same seq (say, from a deposed leader) is caught.
func EventKey(e *seqdv1.Event) string {
	return fmt.Sprintf("%s/%s/%q", e.Kind, e.MessageId, e.Body)
}

// UnreadView is one user's Unread answer.
type UnreadView struct {
	Total uint64
	Conv  map[string]uint64 // by ConvName
}

// ConvName names a conversation in reports and maps.
func ConvName(c *seqdv1.Conversation) string {
	if c.GetType() == seqdv1.ConversationType_CONVERSATION_TYPE_GROUP {
		return fmt.Sprintf("group:%d", c.GetId())
	}
	return fmt.Sprintf("direct:%d", c.GetId())
}

// sortedUsers returns the keys of a per-user map in order.
func sortedUsers[V any](m map[uint64]V) []uint64 { return sortedKeys(m) }

// Expiry says which events retention may have removed before the reads
// that a check compares with (nil: none).
type Expiry struct {
	// BeforeMs: an event sent (sent_at_ms) before it may be gone.
	BeforeMs int64
	// SentAt is the sent_at_ms of a copy of each message body that the
	// reads or the streams saw; Before, for a send none of them saw, is
	// the run time its first attempt must have begun before to be gone
	// (a copy's sent_at_ms is never earlier than that).
	SentAt map[string]int64
	Before time.Duration
}

// MayBeGone says whether retention may have removed the acknowledged
// send s before the reads.
func (x *Expiry) MayBeGone(s Sent) bool {
	if x == nil {
		return false
	}
	if t, ok := x.SentAt[s.Body]; ok {
		return t < x.BeforeMs
	}
	return s.First < x.Before
}

// LostOrDoubled reports every acknowledged message missing from an inbox
// (or timeline) it was meant for, or present more than once there (G2).
// Under retention (x not nil), a message retention may have removed
// before the reads may be missing.
func LostOrDoubled(sent []Sent, inboxes, timelines map[uint64][]*seqdv1.Event, x *Expiry) []Anomaly {
	count := func(evs []*seqdv1.Event, body string) int {
		n := 0
		for _, e := range evs {
			if e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE && string(e.Body) == body {
				n++
			}
		}
		return n
	}
	var out []Anomaly
	for _, s := range sent {
		if !s.Acked {
			continue
		}
		where := map[string][]*seqdv1.Event{}
		if s.ReadGroup != 0 {
			where[fmt.Sprintf("group %d's timeline", s.ReadGroup)] = timelines[s.ReadGroup]
		}
		for _, u := range s.Inboxes {
			where[fmt.Sprintf("user %d's inbox", u)] = inboxes[u]
		}
		names := make([]string, 0, len(where))
		for n := range where {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			switch n := count(where[name], s.Body); {
			case n == 0 && x.MayBeGone(s):
			case n == 0:
				out = append(out, Anomaly{Kind: "lost", At: s.At, Msg: fmt.Sprintf("acknowledged message %s (%q, from %d) is missing from %s", s.ID, s.Body, s.Sender, name)})
			case n > 1:
				out = append(out, Anomaly{Kind: "duplicated", At: s.At, Msg: fmt.Sprintf("acknowledged message %s (%q) appears %d times in %s", s.ID, s.Body, n, name)})
			}
		}
	}
	return out
}

// Removed counts the acknowledged sends that none of their inboxes (nor
// the group timeline) holds: under retention, those it removed.
func Removed(sent []Sent, inboxes, timelines map[uint64][]*seqdv1.Event) int {
	held := map[string]bool{}
	for _, m := range []map[uint64][]*seqdv1.Event{inboxes, timelines} {
		for _, evs := range m {
			for _, e := range evs {
				if e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE {
					held[string(e.Body)] = true
				}
			}
		}
	}
	n := 0
	for _, s := range sent {
		if s.Acked && !held[s.Body] {
			n++
		}
	}
	return n
}

// DoubledPayloads reports any body that appears more than once in one
// inbox or timeline, acknowledged or not: a retry that was not
// deduplicated (G2). sentAt (may be nil) gives each body's last attempt
// time, used as the time the anomaly became visible.
func DoubledPayloads(inboxes map[uint64][]*seqdv1.Event, where string, sentAt map[string]time.Duration) []Anomaly {
	var out []Anomaly
	for _, u := range sortedUsers(inboxes) {
		seen := map[string]uint64{}
		for _, e := range inboxes[u] {
			if e.Kind != seqdv1.EventKind_EVENT_KIND_MESSAGE || e.Recalled || e.Deleted {
				continue
			}
			if first, dup := seen[string(e.Body)]; dup {
				out = append(out, Anomaly{Kind: "duplicated", Key: u, At: sentAt[string(e.Body)], Msg: fmt.Sprintf("%s %d holds %q twice: seqs %d and %d (message ids differ: a retry was not deduplicated)",
					where, u, e.Body, first, e.Seq)})
				continue
			}
			seen[string(e.Body)] = e.Seq
		}
	}
	return out
}

// Increasing reports any inbox whose seqs are not strictly increasing (G3).
func Increasing(inboxes map[uint64][]*seqdv1.Event) []Anomaly {
	var out []Anomaly
	for _, u := range sortedUsers(inboxes) {
		var last uint64
		for _, e := range inboxes[u] {
			if e.Seq <= last {
				out = append(out, Anomaly{Kind: "order", Key: u, Msg: fmt.Sprintf("user %d's inbox has seq %d after %d", u, e.Seq, last)})
			}
			last = e.Seq
		}
	}
	return out
}

// SubscriberGaps reports every Subscribe connection that skipped,
// repeated or changed an event: what it delivered must be exactly the
// final inbox's events from its checkpoint up to the last one it delivered
// or, for a stream the harness stopped, up to its Target (G3). Under
// retention (x not nil), a delivered event sent before x.BeforeMs
// (sent_at_ms) that the final inbox no longer holds is left out of the
// comparison: retention may have removed it since.
func SubscriberGaps(subs []Subscription, inboxes map[uint64][]*seqdv1.Event, x *Expiry) []Anomaly {
	var out []Anomaly
	for _, s := range subs {
		if x != nil {
			s = withoutExpired(s, inboxes[s.User], x.BeforeMs)
		}
		if len(s.Seqs) == 0 && !s.Stopped {
			continue
		}
		last := uint64(0)
		if len(s.Seqs) > 0 {
			last = s.Seqs[len(s.Seqs)-1]
		}
		if s.Stopped {
			last = max(last, s.Target)
		}
		var want []uint64
		byseq := map[uint64]*seqdv1.Event{}
		for _, e := range inboxes[s.User] {
			if e.Seq > s.After && e.Seq <= last {
				want = append(want, e.Seq)
				byseq[e.Seq] = e
			}
		}
		if fmt.Sprint(want) != fmt.Sprint(s.Seqs) {
			what := "delivered"
			if s.Stopped {
				what = fmt.Sprintf("was stopped after catching up to %d and delivered", s.Target)
			}
			out = append(out, Anomaly{Kind: "subscribe", Key: s.User, Msg: fmt.Sprintf(
				"client %d's stream for user %d from checkpoint %d %s %s; the final inbox has %s there",
				s.Client, s.User, s.After, what, abbreviate(s.Seqs), abbreviate(want))})
			continue
		}
		for i, k := range s.Keys {
			if e := byseq[s.Seqs[i]]; e != nil && EventKey(e) != k {
				out = append(out, Anomaly{Kind: "subscribe", Key: s.User, Msg: fmt.Sprintf(
					"client %d's stream for user %d delivered %s at seq %d; the final inbox has %s there",
					s.Client, s.User, k, s.Seqs[i], EventKey(e))})
				break
			}
		}
	}
	return out
}

// withoutExpired returns s without the events it delivered that inbox no
// longer holds and that were sent before expiredBeforeMs.
func withoutExpired(s Subscription, inbox []*seqdv1.Event, expiredBeforeMs int64) Subscription {
	held := make(map[uint64]bool, len(inbox))
	for _, e := range inbox {
		held[e.Seq] = true
	}
	out := s
	out.Seqs, out.Keys, out.SentAt = nil, nil, nil
	for i, seq := range s.Seqs {
		if !held[seq] && i < len(s.SentAt) && s.SentAt[i] < expiredBeforeMs {
			continue
		}
		out.Seqs = append(out.Seqs, seq)
		if i < len(s.Keys) {
			out.Keys = append(out.Keys, s.Keys[i])
		}
		if i < len(s.SentAt) {
			out.SentAt = append(out.SentAt, s.SentAt[i])
		}
	}
	return out
}

// Unexpired reports every event of an inbox or timeline sent before dueMs
// (sent_at_ms) that is still there: retention should have removed it.
func Unexpired(events map[uint64][]*seqdv1.Event, where string, dueMs int64) []Anomaly {
	var out []Anomaly
	for _, k := range sortedUsers(events) {
		for _, e := range events[k] {
			if e.SentAtMs > 0 && e.SentAtMs < dueMs {
				out = append(out, Anomaly{Kind: "retention", Key: k, Msg: fmt.Sprintf("%s %d still holds %s event at seq %d sent at %d ms, %d ms before the due time %d ms",
					where, k, e.Kind, e.Seq, e.SentAtMs, dueMs-e.SentAtMs, dueMs)})
				break
			}
		}
	}
	return out
}

func abbreviate(seqs []uint64) string {
	if len(seqs) <= 12 {
		return fmt.Sprint(seqs)
	}
	return fmt.Sprintf("%v ... %v (%d seqs)", seqs[:6], seqs[len(seqs)-6:], len(seqs))
}

// ImpliedUnread computes the unread counts an inbox implies: per
// conversation, incoming message copies that are neither recalled nor
// deleted and lie above the conversation's newest read marker; for
// read-fanout groups, the newest timeline count hinted minus the newest
// count read (by a marker or by sending to the group) or removed by
// retention (a hint's expired count), and never below the
// floor a member joined at (join floors are not in the inbox, so callers
// pass them).
func ImpliedUnread(inbox []*seqdv1.Event, joinFloor map[string]uint64) UnreadView {
	readUpTo := map[string]uint64{}
	latest, read := map[string]uint64{}, map[string]uint64{}
	for n, f := range joinFloor {
		latest[n], read[n] = f, f
	}
	for _, e := range inbox {
		n := ConvName(e.Conversation)
		switch e.Kind {
		case seqdv1.EventKind_EVENT_KIND_READ:
			read[n] = max(read[n], e.GroupCount) // 0 outside read-fanout groups
			readUpTo[n] = max(readUpTo[n], e.ReadUpTo)
		case seqdv1.EventKind_EVENT_KIND_GROUP_HINT:
			latest[n] = max(latest[n], e.GroupCount)
			// Retention removed that many of the group's messages: they
			// count as read.
			read[n] = max(read[n], e.GroupExpiredCount)
		case seqdv1.EventKind_EVENT_KIND_MESSAGE:
			if e.Outgoing && e.GroupCount > 0 {
				read[n] = max(read[n], e.GroupCount)
				latest[n] = max(latest[n], e.GroupCount)
			}
		}
	}
	v := UnreadView{Conv: map[string]uint64{}}
	for _, e := range inbox {
		n := ConvName(e.Conversation)
		if e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE && !e.Outgoing && !e.Recalled && !e.Deleted && e.GroupCount == 0 && e.Seq > readUpTo[n] {
			v.Conv[n]++
		}
	}
	for n, l := range latest {
		if l > read[n] {
			v.Conv[n] += l - read[n]
		}
	}
	for n, c := range v.Conv {
		if c == 0 {
			delete(v.Conv, n)
		}
		v.Total += c
	}
	return v
}

// UnreadAgrees reports every user whose Unread answer disagrees with what
// their inbox implies, per conversation or in total (G3).
func UnreadAgrees(unread map[uint64]UnreadView, inboxes map[uint64][]*seqdv1.Event, joinFloors map[uint64]map[string]uint64, where string) []Anomaly {
	var out []Anomaly
	for _, u := range sortedUsers(unread) {
		got := unread[u]
		want := ImpliedUnread(inboxes[u], joinFloors[u])
		var sum uint64
		for _, c := range got.Conv {
			sum += c
		}
		if got.Total != sum {
			out = append(out, Anomaly{Kind: "unread", Key: u, Msg: fmt.Sprintf("%s: user %d's unread total %d is not the sum %d of its conversations %v", where, u, got.Total, sum, got.Conv)})
		}
		if got.Total != want.Total || fmt.Sprint(sortedConv(got.Conv)) != fmt.Sprint(sortedConv(want.Conv)) {
			out = append(out, Anomaly{Kind: "unread", Key: u, Msg: fmt.Sprintf("%s: user %d's unread is %v (total %d) but the inbox implies %v (total %d)",
				where, u, sortedConv(got.Conv), got.Total, sortedConv(want.Conv), want.Total)})
		}
	}
	return out
}

func sortedConv(m map[string]uint64) []string {
	var out []string
	for n, c := range m {
		if c > 0 {
			out = append(out, fmt.Sprintf("%s=%d", n, c))
		}
	}
	sort.Strings(out)
	return out
}
