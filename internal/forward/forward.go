// Package forward marks calls that a follower forwarded to its Raft
// leader, so a receiver that is not the leader either answers NOT_LEADER
// instead of forwarding again (no loops while leadership moves), and tells
// the caller of a forwarded call where the leader is, so it can go there
// directly next time.
package forward

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

const (
	key       = "seqd-forwarded-by"
	leaderKey = "seqd-leader"
)

// Was reports whether the incoming call was forwarded by another node.
func Was(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(key)) > 0
}

// Mark returns ctx for an outgoing forwarded call.
func Mark(ctx context.Context, by string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, key, by)
}

// SetLeader tells the caller of the incoming call ctx, in a response
// header, that the leader at addr answered it. An empty addr sets nothing.
func SetLeader(ctx context.Context, addr string) {
	if addr != "" {
		grpc.SetHeader(ctx, metadata.Pairs(leaderKey, addr)) // fails only on a call that already answered
	}
}

// Leader returns the leader address a response header carries, or "".
func Leader(md metadata.MD) string {
	if v := md.Get(leaderKey); len(v) > 0 {
		return v[0]
	}
	return ""
}
