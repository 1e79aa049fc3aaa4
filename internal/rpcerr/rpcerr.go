// Package rpcerr maps seqd's errors to gRPC statuses in one place, and reads
// the details back on the client side.
package rpcerr

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// Domain is the ErrorInfo domain of every seqd error detail.
const Domain = "seqd"

// ErrorInfo reasons.
const (
	ReasonNotOwner   = "NOT_OWNER"
	ReasonNotLeader  = "NOT_LEADER"
	ReasonWrongShard = "WRONG_SHARD"
	// ReasonLeaderNotReady: a leader that could not yet confirm its state
	// is current (a read index): retry, at the same leader.
	ReasonLeaderNotReady = "LEADER_NOT_READY"
)

// metadata key for the leader's gRPC address in NOT_LEADER details.
const leaderKey = "leader_addr"

// NotOwner is FAILED_PRECONDITION with reason NOT_OWNER and the server's
// routing table, so the client can retry at the right node at once.
func NotOwner(table *seqdv1.RoutingTable, format string, args ...any) error {
	return withTable(ReasonNotOwner, table, fmt.Sprintf(format, args...))
}

// NotOwnerTable reports whether err is a NOT_OWNER status, and returns the
// routing table it carries (nil if none).
func NotOwnerTable(err error) (*seqdv1.RoutingTable, bool) { return tableOf(err, ReasonNotOwner) }

// WrongShard is FAILED_PRECONDITION with reason WRONG_SHARD and the
// routing table (with the shard map): the call belongs on another shard.
func WrongShard(table *seqdv1.RoutingTable, format string, args ...any) error {
	return withTable(ReasonWrongShard, table, fmt.Sprintf(format, args...))
}

// WrongShardTable reports whether err is a WRONG_SHARD status, and returns
// the table it carries (nil if none).
func WrongShardTable(err error) (*seqdv1.RoutingTable, bool) { return tableOf(err, ReasonWrongShard) }

func withTable(reason string, table *seqdv1.RoutingTable, msg string) error {
	st := status.New(codes.FailedPrecondition, msg)
	details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reason, Domain: Domain}}
	if table != nil {
		details = append(details, table)
	}
	if d, err := st.WithDetails(details...); err == nil {
		st = d
	}
	return st.Err()
}

func tableOf(err error, reason string) (*seqdv1.RoutingTable, bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return nil, false
	}
	var table *seqdv1.RoutingTable
	match := false
	for _, d := range st.Details() {
		switch v := d.(type) {
		case *errdetails.ErrorInfo:
			match = match || (v.Reason == reason && v.Domain == Domain)
		case *seqdv1.RoutingTable:
			table = v
		}
	}
	return table, match
}

// NotLeader is UNAVAILABLE with reason NOT_LEADER (from an arbiter or a
// store replica) and, when known, the leader's gRPC address in the details.
func NotLeader(leaderAddr string) error {
	msg := "this replica is not the leader and no leader is known; retry shortly"
	if leaderAddr != "" {
		msg = "this replica is not the leader; the leader is at " + leaderAddr
	}
	st := status.New(codes.Unavailable, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: ReasonNotLeader, Domain: Domain, Metadata: map[string]string{leaderKey: leaderAddr}}); err == nil {
		st = d
	}
	return st.Err()
}

// LeaderNotReady is UNAVAILABLE with reason LEADER_NOT_READY: the leader
// answered, but cannot serve the call yet (it is still applying entries
// of earlier terms, or could not confirm its state in time). Unlike a
// transport error, a replica that forwarded the call passes it on instead
// of answering from its own state.
func LeaderNotReady(format string, args ...any) error {
	st := status.New(codes.Unavailable, fmt.Sprintf(format, args...))
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: ReasonLeaderNotReady, Domain: Domain}); err == nil {
		st = d
	}
	return st.Err()
}

// IsLeaderNotReady reports whether err is a LEADER_NOT_READY status.
func IsLeaderNotReady(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if v, ok := d.(*errdetails.ErrorInfo); ok && v.Reason == ReasonLeaderNotReady && v.Domain == Domain {
			return true
		}
	}
	return false
}

// LeaderHint returns the leader address carried by a NOT_LEADER status.
func LeaderHint(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if v, ok := d.(*errdetails.ErrorInfo); ok && v.Reason == ReasonNotLeader {
			return v.Metadata[leaderKey]
		}
	}
	return ""
}

// FromRaft maps an error from raft.Apply and friends to a gRPC status.
//   - not leader / leadership lost / shutdown: UNAVAILABLE with the leader hint;
//   - enqueue timeout: DEADLINE_EXCEEDED, because the entry may still apply.
func FromRaft(err error, leaderAddr string) error {
	switch {
	case err == nil:
		return nil
	case LeaderMoved(err):
		return NotLeader(leaderAddr)
	case errors.Is(err, raft.ErrRaftShutdown):
		return status.Error(codes.Unavailable, "this replica is shutting down; retry at another replica")
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return status.Error(codes.DeadlineExceeded, "raft enqueue timed out; the write may still apply")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}

// LeaderMoved reports whether err is Raft's refusal at a node that does
// not lead (or stopped leading): the only errors FromRaft answers with the
// leader's address.
func LeaderMoved(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
		errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, raft.ErrAbortedByRestore)
}

// Retryable reports whether a call failing with err may succeed if retried
// elsewhere or at once. RESOURCE_EXHAUSTED (a rate limit, a shard leader
// whose queue is full) is not: the caller must hear it and slow down.
func Retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted:
		return true
	}
	_, notOwner := NotOwnerTable(err)
	return notOwner
}
