// Package forward marks calls that a follower forwarded to its Raft
// leader, so a receiver that is not the leader either answers NOT_LEADER
// instead of forwarding again (no loops while leadership moves).
package forward

import (
	"context"

	"google.golang.org/grpc/metadata"
)

const key = "seqd-forwarded-by"

// Was reports whether the incoming call was forwarded by another node.
func Was(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(key)) > 0
}

// Mark returns ctx for an outgoing forwarded call.
func Mark(ctx context.Context, by string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, key, by)
}
