package workload

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/seqd/seqd/jepsen/checker"
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
	same := &replicaView{inboxes: map[uint64][]*seqdv1.Event{
		1: {ev(1, "1.1", "a"), ev(2, "1.2", "b")}, 2: {ev(5, "1.1", "a")}}, timeline: []*seqdv1.Event{ev(1, "g9.1", "t")}}
	if d := same.diff(leader, timeline); d != "" {
		t.Fatalf("identical replica differs: %q", d)
	}
	for _, tc := range []struct {
		name string
		v    *replicaView
		want string
	}{
		{"other event", &replicaView{inboxes: map[uint64][]*seqdv1.Event{1: {ev(1, "1.1", "a"), ev(2, "1.3", "x")}, 2: {ev(5, "1.1", "a")}}, timeline: timeline},
			`user 1's inbox has seq 2 (message 1.3, group count 0, body "x") where the leader has seq 2 (message 1.2, group count 0, body "b")`},
		{"missing event", &replicaView{inboxes: map[uint64][]*seqdv1.Event{1: {ev(1, "1.1", "a")}, 2: {ev(5, "1.1", "a")}}, timeline: timeline},
			`user 1's inbox lacks the leader's seq 2 (message 1.2`},
		{"extra event", &replicaView{inboxes: map[uint64][]*seqdv1.Event{1: leader[1], 2: {ev(5, "1.1", "a"), ev(6, "2.6", "z")}}, timeline: timeline},
			`user 2's inbox has seq 6 (message 2.6, group count 0, body "z"), which the leader lacks`},
		{"timeline", &replicaView{inboxes: leader}, `the group timeline lacks the leader's seq 1 (message g9.1`},
	} {
		if d := tc.v.diff(leader, timeline); !strings.Contains(d, tc.want) {
			t.Errorf("%s: diff %q, want it to contain %q", tc.name, d, tc.want)
		}
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
