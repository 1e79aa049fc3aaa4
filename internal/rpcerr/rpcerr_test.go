package rpcerr

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"

	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// overTheWire sends err's status through its wire encoding, as a gRPC
// client would receive it.
func overTheWire(t *testing.T, err error) error {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("%v is not a gRPC status", err)
	}
	b, merr := proto.Marshal(st.Proto())
	if merr != nil {
		t.Fatal(merr)
	}
	decoded := &spb.Status{}
	if err := proto.Unmarshal(b, decoded); err != nil {
		t.Fatal(err)
	}
	return status.FromProto(decoded).Err()
}

func sampleTable() *seqdv1.RoutingTable {
	return &seqdv1.RoutingTable{
		Version: 42, ClusterId: "c1", SectionSize: 100000, NumSlots: 3, Dc: "dc1",
		Slots: []*seqdv1.SlotAssignment{{Owner: "n1", Generation: 3}, {Owner: "n2", Generation: 1}, {}},
		Nodes: []*seqdv1.NodeInfo{{Id: "n1", Addr: "10.0.0.1:7500", State: seqdv1.NodeState_NODE_STATE_ACTIVE}},
	}
}

func TestNotOwnerRoundTrip(t *testing.T) {
	table := sampleTable()
	err := overTheWire(t, NotOwner(table, "key %d is in slot %d, owned by %s", 7, 1, "n2"))
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("code = %v, want FailedPrecondition", status.Code(err))
	}
	if msg := status.Convert(err).Message(); msg != "key 7 is in slot 1, owned by n2" {
		t.Errorf("message = %q", msg)
	}
	got, ok := NotOwnerTable(err)
	if !ok {
		t.Fatal("NotOwnerTable did not recognise NOT_OWNER")
	}
	if !proto.Equal(got, table) {
		t.Fatalf("table after the round trip = %v, want %v", got, table)
	}
	if !Retryable(err) {
		t.Error("NOT_OWNER is not retryable")
	}
}

func TestNotOwnerWithoutTable(t *testing.T) {
	got, ok := NotOwnerTable(overTheWire(t, NotOwner(nil, "not mine")))
	if !ok || got != nil {
		t.Fatalf("NotOwnerTable = %v, %v; want nil, true", got, ok)
	}
}

func TestNotOwnerTableRejectsOthers(t *testing.T) {
	withInfo := func(code codes.Code, reason, domain string, extra ...protoadapt.MessageV1) error {
		st := status.New(code, "x")
		d, err := st.WithDetails(append([]protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reason, Domain: domain}}, extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		return d.Err()
	}
	tests := []struct {
		name string
		err  error
	}{
		{"nil", nil},
		{"plain error", errors.New("boom")},
		{"failed precondition without details", status.Error(codes.FailedPrecondition, "x")},
		{"other reason", withInfo(codes.FailedPrecondition, "SOMETHING", Domain, sampleTable())},
		{"other domain", withInfo(codes.FailedPrecondition, ReasonNotOwner, "other.example", sampleTable())},
		{"other code", withInfo(codes.Unavailable, ReasonNotOwner, Domain, sampleTable())},
		{"not leader", NotLeader("a:1")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, ok := NotOwnerTable(tc.err); ok {
				t.Fatalf("NotOwnerTable(%v) reported NOT_OWNER", tc.err)
			}
		})
	}
}

func TestNotLeader(t *testing.T) {
	tests := []struct {
		leader   string
		wantHint string
		wantMsg  string
	}{
		{"10.0.0.5:7400", "10.0.0.5:7400", "the leader is at 10.0.0.5:7400"},
		{"", "", "no leader is known"},
	}
	for _, tc := range tests {
		err := overTheWire(t, NotLeader(tc.leader))
		if status.Code(err) != codes.Unavailable {
			t.Errorf("NotLeader(%q): code %v, want Unavailable", tc.leader, status.Code(err))
		}
		if got := LeaderHint(err); got != tc.wantHint {
			t.Errorf("LeaderHint(NotLeader(%q)) = %q", tc.leader, got)
		}
		if msg := status.Convert(err).Message(); !strings.Contains(msg, tc.wantMsg) {
			t.Errorf("NotLeader(%q) message %q does not say %q", tc.leader, msg, tc.wantMsg)
		}
		if !Retryable(err) {
			t.Errorf("NotLeader(%q) is not retryable", tc.leader)
		}
	}
	for _, err := range []error{nil, errors.New("x"), status.Error(codes.Unavailable, "x"), NotOwner(sampleTable(), "x")} {
		if got := LeaderHint(err); got != "" {
			t.Errorf("LeaderHint(%v) = %q, want empty", err, got)
		}
	}
}

func TestFromRaft(t *testing.T) {
	const leader = "10.0.0.9:7400"
	existing := status.Error(codes.NotFound, "no such thing")
	tests := []struct {
		name     string
		err      error
		wantCode codes.Code
		wantHint string
	}{
		{"not leader", raft.ErrNotLeader, codes.Unavailable, leader},
		{"wrapped not leader", fmt.Errorf("apply: %w", raft.ErrNotLeader), codes.Unavailable, leader},
		{"leadership lost", raft.ErrLeadershipLost, codes.Unavailable, leader},
		{"transfer in progress", raft.ErrLeadershipTransferInProgress, codes.Unavailable, leader},
		{"aborted by restore", raft.ErrAbortedByRestore, codes.Unavailable, leader},
		{"shutdown", raft.ErrRaftShutdown, codes.Unavailable, ""},
		{"enqueue timeout", raft.ErrEnqueueTimeout, codes.DeadlineExceeded, ""},
		{"context deadline", context.DeadlineExceeded, codes.DeadlineExceeded, ""},
		{"wrapped context deadline", fmt.Errorf("wait: %w", context.DeadlineExceeded), codes.DeadlineExceeded, ""},
		{"context canceled", context.Canceled, codes.Canceled, ""},
		{"existing status kept", existing, codes.NotFound, ""},
		{"anything else", errors.New("disk full"), codes.Internal, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := FromRaft(tc.err, leader)
			if status.Code(got) != tc.wantCode {
				t.Fatalf("FromRaft(%v) code = %v, want %v", tc.err, status.Code(got), tc.wantCode)
			}
			if hint := LeaderHint(got); hint != tc.wantHint {
				t.Errorf("leader hint = %q, want %q", hint, tc.wantHint)
			}
			if tc.wantCode == codes.Internal && !strings.Contains(status.Convert(got).Message(), "disk full") {
				t.Errorf("internal error lost the cause: %v", got)
			}
		})
	}
	if FromRaft(nil, leader) != nil {
		t.Error("FromRaft(nil) is not nil")
	}
	if got := FromRaft(existing, leader); got != existing {
		t.Errorf("FromRaft rewrote an existing status: %v", got)
	}
	// Enqueue timeout: the write may still apply, so it must not be
	// reported as retryable-elsewhere Unavailable.
	if Retryable(FromRaft(raft.ErrEnqueueTimeout, leader)) {
		t.Error("an enqueue timeout is reported as safely retryable")
	}
}

func TestLeaderNotReady(t *testing.T) {
	err := overTheWire(t, LeaderNotReady("still applying entry %d", 7))
	if status.Code(err) != codes.Unavailable || !IsLeaderNotReady(err) || !Retryable(err) {
		t.Fatalf("LeaderNotReady over the wire: %v (code %v, IsLeaderNotReady %v, Retryable %v); want a retryable UNAVAILABLE it recognises",
			err, status.Code(err), IsLeaderNotReady(err), Retryable(err))
	}
	if msg := status.Convert(err).Message(); msg != "still applying entry 7" {
		t.Errorf("message %q", msg)
	}
	for _, err := range []error{nil, errors.New("x"), status.Error(codes.Unavailable, "x"), NotLeader("a:1"), NotOwner(sampleTable(), "x")} {
		if IsLeaderNotReady(err) {
			t.Errorf("IsLeaderNotReady(%v) = true", err)
		}
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, "x"), true},
		{status.Error(codes.ResourceExhausted, "x"), false}, // rate limits go back to the caller
		{status.Error(codes.Aborted, "x"), true},
		{NotOwner(nil, "x"), true},
		{status.Error(codes.FailedPrecondition, "x"), false},
		{status.Error(codes.InvalidArgument, "x"), false},
		{status.Error(codes.Internal, "x"), false},
		{status.Error(codes.DeadlineExceeded, "x"), false},
		{nil, false},
	}
	for _, tc := range tests {
		if got := Retryable(tc.err); got != tc.want {
			t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
