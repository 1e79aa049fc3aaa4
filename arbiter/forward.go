package arbiter

import (
	"context"

	"google.golang.org/grpc"

	"github.com/seqd/seqd/internal/forward"
	"github.com/seqd/seqd/internal/rpcerr"
)

// forward sends a call that only the leader can serve to the leader. It is
// the one place followers forward writes.
func forwardToLeader[Resp any](ctx context.Context, a *Arbiter, call func(context.Context, *grpc.ClientConn) (Resp, error)) (Resp, error) {
	var zero Resp
	addr, id := a.leaderAddr()
	if forward.Was(ctx) || addr == "" || id == a.cfg.ID {
		return zero, rpcerr.NotLeader(addr)
	}
	cc, err := a.conns.Get(addr)
	if err != nil {
		return zero, rpcerr.NotLeader(addr)
	}
	return call(forward.Mark(ctx, a.cfg.ID), cc)
}
