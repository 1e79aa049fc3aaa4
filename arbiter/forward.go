package arbiter

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/seqd/seqd/internal/rpcerr"
)

// forwardedKey marks a call a follower forwarded, so a receiver that is not
// the leader either answers NOT_LEADER instead of forwarding again.
const forwardedKey = "seqd-forwarded-by"

func wasForwarded(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(forwardedKey)) > 0
}

// forward sends a call that only the leader can serve to the leader. It is
// the one place followers forward writes.
func forward[Resp any](ctx context.Context, a *Arbiter, call func(context.Context, *grpc.ClientConn) (Resp, error)) (Resp, error) {
	var zero Resp
	addr, id := a.leaderAddr()
	if wasForwarded(ctx) || addr == "" || id == a.cfg.ID {
		return zero, rpcerr.NotLeader(addr)
	}
	cc, err := a.conns.Get(addr)
	if err != nil {
		return zero, rpcerr.NotLeader(addr)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, forwardedKey, a.cfg.ID)
	return call(ctx, cc)
}
