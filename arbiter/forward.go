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

// atLeader routes a call that only a caught-up leader can answer, as a
// handler's first step after validation: at a follower it forwards the
// call to the leader, and at a leader still applying earlier terms' log
// it refuses it (caughtUp); either way answered is true, and the handler
// returns resp and err. At a caught-up leader answered is false, and the
// handler serves the call itself.
func atLeader[Resp any](ctx context.Context, s *server, op string, forward func(context.Context, *grpc.ClientConn) (Resp, error)) (resp Resp, answered bool, err error) {
	if !s.leader() {
		resp, err = forwardToLeader(ctx, s.a, forward)
		return resp, true, err
	}
	if err = s.caughtUp(op); err != nil {
		return resp, true, err
	}
	return resp, false, nil
}
