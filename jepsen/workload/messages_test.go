package workload

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/seqd/seqd/jepsen/checker"
	"github.com/seqd/seqd/keyspace"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

func ev(seq uint64, id, body string) *seqdv1.Event {
	return &seqdv1.Event{Seq: seq, Kind: seqdv1.EventKind_EVENT_KIND_MESSAGE, MessageId: id, Body: []byte(body)}
}

// The replicas-agree checker names where a replica differs, so a
// divergence can be traced to its entry.
func TestReplicaDiffNamesFirstDifference(t *testing.T) {
	leader := map[uint64][]*seqdv1.Event{
		1: {ev(1, "1.1", "a"), ev(2, "1.2", "b")},
		2: {ev(5, "1.1", "a")},
	}
	timeline := []*seqdv1.Event{ev(1, "g9.1", "t")}
	// view is a replica of the shard holding users 1 and 2 and the groups.
	view := func(inboxes map[uint64][]*seqdv1.Event, timeline []*seqdv1.Event) *replicaView {
		return &replicaView{users: []uint64{2, 1}, inboxes: inboxes, timeline: timeline, groups: true}
	}
	same := view(map[uint64][]*seqdv1.Event{1: {ev(1, "1.1", "a"), ev(2, "1.2", "b")}, 2: {ev(5, "1.1", "a")}}, []*seqdv1.Event{ev(1, "g9.1", "t")})
	if d := same.diff(leader, timeline); d != "" {
		t.Fatalf("identical replica differs: %q", d)
	}
	// A replica of another shard holds user 2 only, and not the groups:
	// what it does not hold is not compared.
	other := &replicaView{users: []uint64{2}, inboxes: map[uint64][]*seqdv1.Event{2: {ev(5, "1.1", "a")}}}
	if d := other.diff(leader, timeline); d != "" {
		t.Fatalf("a replica of user 2's shard differs: %q", d)
	}
	for _, tc := range []struct {
		name string
		v    *replicaView
		want string
	}{
		{"other event", view(map[uint64][]*seqdv1.Event{1: {ev(1, "1.1", "a"), ev(2, "1.3", "x")}, 2: {ev(5, "1.1", "a")}}, timeline),
			`user 1's inbox has seq 2 (message 1.3, group count 0, body "x") where the leader has seq 2 (message 1.2, group count 0, body "b")`},
		{"missing event", view(map[uint64][]*seqdv1.Event{1: {ev(1, "1.1", "a")}, 2: {ev(5, "1.1", "a")}}, timeline),
			`user 1's inbox lacks the leader's seq 2 (message 1.2`},
		{"extra event", view(map[uint64][]*seqdv1.Event{1: leader[1], 2: {ev(5, "1.1", "a"), ev(6, "2.6", "z")}}, timeline),
			`user 2's inbox has seq 6 (message 2.6, group count 0, body "z"), which the leader lacks`},
		{"timeline", view(leader, nil), `the group timeline lacks the leader's seq 1 (message g9.1`},
		{"another shard's replica", &replicaView{users: []uint64{2}, inboxes: map[uint64][]*seqdv1.Event{2: nil}},
			`user 2's inbox lacks the leader's seq 5 (message 1.1`},
	} {
		if d := tc.v.diff(leader, timeline); !strings.Contains(d, tc.want) {
			t.Errorf("%s: diff %q, want it to contain %q", tc.name, d, tc.want)
		}
	}
}

// The workload's users go to the shards in turn, and the splits it gives
// the arbiters put each user on that shard and the groups on the last.
func TestUsersSpreadOverShards(t *testing.T) {
	first := DefaultMessagesOptions.FirstUser
	if got := MessagesShardSplits(1); len(got) != 0 {
		t.Fatalf("splits for one shard: %v, want none", got)
	}
	splits := MessagesShardSplits(3)
	if want := []uint64{first/sectionSize + 1, first/sectionSize + 2}; !slices.Equal(splits, want) {
		t.Fatalf("splits for 3 shards: %v, want %v", splits, want)
	}
	// shardIndex is the shard (from 0) that owns key's section.
	shardIndex := func(key uint64) int {
		i, _ := slices.BinarySearch(splits, key/sectionSize+1)
		return i
	}
	seen := map[uint64]bool{}
	for i := range 12 {
		k := userKey(first, 3, i)
		if seen[k] {
			t.Fatalf("user %d gets key %d twice", i, k)
		}
		seen[k] = true
		if got := shardIndex(k); got != i%3 {
			t.Errorf("user %d (key %d) is on shard %d, want %d", i, k, got, i%3)
		}
		if k < first {
			t.Errorf("user %d's key %d is below the first user %d, among the alloc workload's keys", i, k, first)
		}
	}
	if got := shardIndex(keyspace.GroupBit | 1_000_001); got != 2 {
		t.Errorf("the groups are on shard %d, want the last (2)", got)
	}
	if userKey(first, 1, 5) != first+5 {
		t.Errorf("with one shard user 5 has key %d, want %d", userKey(first, 1, 5), first+5)
	}
}

// A halt is placed on the run's clock from the time= field of the
// replica's log line; a line without one (or before the run) gives 0.
func TestLogTimeOnTheRunsClock(t *testing.T) {
	origin := time.Date(2026, 11, 27, 15, 46, 0, 0, time.UTC)
	m := &Messages{env: &Env{Origin: origin}}
	for line, want := range map[string]time.Duration{
		`time=2026-11-27T15:46:51.140Z level=ERROR msg="store replica halted; ..."`: 51140 * time.Millisecond,
		`level=ERROR msg="store replica halted"`:                                    0,
		`time=yesterday level=ERROR`:                                                0,
		`time=2026-11-27T15:45:00Z level=ERROR`:                                     0,
	} {
		if got := m.logTime(line); got != want {
			t.Errorf("logTime(%q) = %v, want %v", line, got, want)
		}
	}
}

// An interrupted run makes no final reads: the checks that compare the
// history with the final inboxes say UNKNOWN instead of reporting every
// acknowledged send as lost; the history-only checks still run.
func TestInterruptedRunChecksNothingAgainstEmptyInboxes(t *testing.T) {
	m := &Messages{sent: []checker.Sent{{Body: "a", Sender: 1, Inboxes: []uint64{1, 2}, Acked: true, ID: "1.1"}}}
	verdicts := map[string]checker.Verdict{}
	for _, r := range m.Check(context.Background(), CheckOptions{}) {
		verdicts[r.Checker] = r.Verdict
	}
	for _, c := range []string{"recovery", "no-lost-sends", "no-doubled-retries", "inbox-order", "subscribe-gap-free", "unread-agrees", "replicas-agree"} {
		if v, ok := verdicts[c]; !ok || v != checker.Unknown {
			t.Errorf("%s: %v (present %v), want UNKNOWN", c, v, ok)
		}
	}
	for _, c := range []string{"mark-read-accepted", "no-halted-replica"} {
		if v := verdicts[c]; v != checker.Pass {
			t.Errorf("%s: %v, want it checked (pass)", c, v)
		}
	}
	// With the final reads made (here: inboxes that hold the send), the
	// same history passes.
	m = &Messages{sent: m.sent, finalRan: true, inboxes: map[uint64][]*seqdv1.Event{1: {ev(1, "1.1", "a")}, 2: {ev(1, "1.1", "a")}}}
	for _, r := range m.Check(context.Background(), CheckOptions{}) {
		if r.Checker == "no-lost-sends" && r.Verdict != checker.Pass {
			t.Errorf("no-lost-sends after final reads: %v %v", r.Verdict, r.Findings)
		}
	}
}

// The final reads trust two readings of the outboxes only if nothing
// happened in between that could hide a delivery: none was made, no shard
// changed leaders, and each leader finished an outbox round (a round stuck
// on a shard that does not answer leaves the gauge at its last value).
func TestOutboxesQuietBetweenReadings(t *testing.T) {
	at := func(delivered, r1, r2 float64, l2 string) outboxState {
		return outboxState{delivered: delivered, leader: map[string]string{"s1": "s1-r1", "s2": l2}, rounds: map[string]float64{"s1": r1, "s2": r2}}
	}
	before := at(100, 10, 20, "s2-r1")
	for _, tc := range []struct {
		name  string
		later outboxState
		want  string
	}{
		{"quiet", at(100, 11, 25, "s2-r1"), ""},
		{"a delivery", at(101, 11, 25, "s2-r1"), "deliveries between shards were still being made"},
		{"a new leader", at(100, 11, 25, "s2-r2"), "shard s2 changed leaders"},
		{"a stuck round", at(100, 11, 20, "s2-r1"), "shard s2's leader s2-r1 finished no outbox round"},
	} {
		if got := before.quietUntil(tc.later); tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// Under retention, sends and streams are checked against the reads right
// after the run, and retention-complete, unread and replicas against the
// final reads once everything was due; a failure of those final reads
// leaves the first checks standing and the others UNKNOWN.
func TestCheckUnderRetention(t *testing.T) {
	old, fresh := ev(1, "1.1", "old"), ev(2, "1.2", "fresh")
	old.SentAtMs, fresh.SentAtMs = 1_000, 9_000
	sent := []checker.Sent{
		{Body: "old", Sender: 1, Inboxes: []uint64{1}, Acked: true, ID: "1.1", First: time.Second},
		{Body: "fresh", Sender: 1, Inboxes: []uint64{1}, Acked: true, ID: "1.2", First: 9 * time.Second},
	}
	retained := func(inbox ...*seqdv1.Event) *retainedView {
		return &retainedView{inboxes: map[uint64][]*seqdv1.Event{1: inbox},
			expiry: checker.Expiry{Before: 5 * time.Second, BeforeMs: 5_000, SentAt: map[string]int64{"fresh": 9_000}}, dueMs: 10_000}
	}
	verdicts := func(m *Messages) map[string]checker.Verdict {
		out := map[string]checker.Verdict{}
		for _, r := range m.Check(context.Background(), CheckOptions{}) {
			out[r.Checker] = r.Verdict
		}
		return out
	}
	want := func(name string, got map[string]checker.Verdict, w map[string]checker.Verdict) {
		t.Helper()
		for c, v := range w {
			if got[c] != v {
				t.Errorf("%s: %s is %v, want %v", name, c, got[c], v)
			}
		}
	}
	// The old send is gone right after the run, the fresh one there; the
	// final reads are empty and count nothing unread.
	m := &Messages{sent: sent, finalRan: true, retained: retained(fresh), inboxes: map[uint64][]*seqdv1.Event{1: nil},
		unread: map[uint64]checker.UnreadView{1: {Conv: map[string]uint64{}}}}
	want("correct", verdicts(m), map[string]checker.Verdict{"no-lost-sends": checker.Pass, "retention-complete": checker.Pass,
		"unread-agrees": checker.Pass, "subscribe-gap-free": checker.Pass, "recovery": checker.Pass})
	// The fresh send missing right after the run is lost, though the
	// final reads (which hold nothing) would not show it.
	m.retained = retained()
	want("fresh one missing", verdicts(m), map[string]checker.Verdict{"no-lost-sends": checker.Fail})
	// A message sent before the due time left in the final reads, and an
	// unread count the empty inbox does not imply.
	m.retained, m.inboxes = retained(fresh), map[uint64][]*seqdv1.Event{1: {old}}
	m.unread = map[uint64]checker.UnreadView{1: {Total: 2, Conv: map[string]uint64{"direct:0": 2}}}
	want("left behind", verdicts(m), map[string]checker.Verdict{"no-lost-sends": checker.Pass, "retention-complete": checker.Fail, "unread-agrees": checker.Fail})
	// The final reads failed: the reads right after the run still decide.
	m.finalErrs = []string{"sync user 1: unavailable"}
	m.retained = retained()
	want("final reads failed", verdicts(m), map[string]checker.Verdict{"recovery": checker.Fail, "no-lost-sends": checker.Fail,
		"retention-complete": checker.Unknown, "unread-agrees": checker.Unknown, "replicas-agree": checker.Unknown})
	// Interrupted while waiting for the due time: the final reads were
	// never made, which is not a failure to recover.
	m.finalErrs, m.retained = nil, retained(fresh)
	m.retained.interrupted = true
	want("interrupted", verdicts(m), map[string]checker.Verdict{"recovery": checker.Unknown, "no-lost-sends": checker.Pass,
		"retention-complete": checker.Unknown, "unread-agrees": checker.Unknown})
	m.retained = retained()
	counts := m.Counts()
	if counts["sends_gone_before_reads_after_run"] != 2 || counts["sends_checked_in_reads_after_run"] != 1 {
		t.Errorf("counts %v: want 2 sends gone, 1 checked", counts)
	}
}

// A body's send time comes from the reads where they hold a copy, and
// from what the streams delivered where they do not.
func TestSentAtOf(t *testing.T) {
	read := ev(1, "1.1", "read")
	read.SentAtMs = 500
	marker := &seqdv1.Event{Seq: 2, Kind: seqdv1.EventKind_EVENT_KIND_READ, SentAtMs: 600}
	got := sentAtOf(map[uint64][]*seqdv1.Event{1: {read, marker}}, nil, map[string]int64{"read": 400, "streamed": 300})
	if len(got) != 2 || got["read"] != 500 || got["streamed"] != 300 {
		t.Errorf("sentAtOf = %v, want read at 500 (the read's copy) and streamed at 300", got)
	}
	if got := sentAtOf(nil, nil, nil); got == nil || len(got) != 0 {
		t.Errorf("sentAtOf of nothing = %v, want an empty map", got)
	}
}

func TestHistoryAgrees(t *testing.T) {
	ev := func(seq uint64, id string) *seqdv1.Event { return &seqdv1.Event{Seq: seq, MessageId: id} }
	forward := []*seqdv1.Event{ev(1, "a"), ev(2, "b"), ev(3, "c")}
	if as := historyAgrees([]*seqdv1.Event{ev(3, "c"), ev(2, "b"), ev(1, "a")}, forward); len(as) != 0 {
		t.Fatalf("the same timeline reversed: %v", as)
	}
	for name, back := range map[string][]*seqdv1.Event{
		"one missing":  {ev(3, "c"), ev(1, "a")},
		"out of order": {ev(2, "b"), ev(3, "c"), ev(1, "a")},
		"other body":   {ev(3, "x"), ev(2, "b"), ev(1, "a")},
	} {
		if as := historyAgrees(back, forward); len(as) != 1 || as[0].Kind != "group-history" {
			t.Errorf("%s: %v, want one group-history anomaly", name, as)
		}
	}
}
