package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/backoff"
	"github.com/seqd/seqd/internal/grpcconn"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

// conn is seqctl's connection to --addr.
type conn struct {
	e  *env
	cc *grpc.ClientConn
}

func dial(e *env) (*conn, error) {
	opts := append(grpcconn.DialOptions(), grpc.WithChainUnaryInterceptor(retryElection))
	cc, err := grpc.NewClient(e.addr, opts...)
	if err != nil {
		return nil, usagef(nil, "--addr %q: %v", e.addr, err)
	}
	return &conn{e: e, cc: cc}, nil
}

func (c *conn) Close() error { return c.cc.Close() }

// dialTimed dials --addr for one command, with a context that ends after
// --timeout; call release when finished.
func dialTimed(ctx context.Context, e *env) (_ context.Context, _ *conn, release func(), _ error) {
	c, err := dial(e)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	return ctx, c, func() { cancel(); c.Close() }, nil
}

func (c *conn) admin() seqdv1.AdminClient { return seqdv1.NewAdminClient(c.cc) }

// router returns a client for Next and Current bootstrapped from --addr.
// It asks --addr for the table first, because router.New retries an
// unreachable address until the deadline, and a typo should fail at once.
func (c *conn) router(ctx context.Context) (*router.Client, error) {
	if _, err := c.table(ctx); err != nil {
		return nil, err
	}
	rc, err := router.New(ctx, router.Config{
		Addrs:   []string{c.e.addr},
		Timeout: c.e.timeout,
		Logger:  slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, c.explain(err)
	}
	return rc, nil
}

// table asks --addr for the routing table (with the store shard map).
func (c *conn) table(ctx context.Context) (*seqdv1.RoutingTable, error) {
	resp, err := seqdv1.NewRoutingClient(c.cc).GetRoutingTable(ctx, &seqdv1.GetRoutingTableRequest{})
	if err != nil {
		return nil, c.explain(err)
	}
	if resp.GetTable() == nil {
		return nil, fmt.Errorf("%s returned no routing table; the cluster may still be starting", c.e.addr)
	}
	return resp.GetTable(), nil
}

// explain turns an RPC failure into the message an operator acts on: the
// server's own message, or that --addr did not answer at all.
func (c *conn) explain(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
		return errors.New("interrupted")
	}
	st := status.Convert(err)
	// A server that answers leaves the connection READY; only a dead or
	// wrong address leaves it connecting or failed.
	if (st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded) && c.cc.GetState() != connectivity.Ready {
		if st.Code() == codes.DeadlineExceeded {
			// Maybe only a --timeout too short to connect at all.
			return fmt.Errorf("no connection to %s within --timeout %v; is `seqd demo` running? (or point --addr at a gateway or arbiter)", c.e.addr, c.e.timeout)
		}
		return fmt.Errorf("cannot reach %s: %s; is `seqd demo` running? (or point --addr at a gateway or arbiter)", c.e.addr, st.Message())
	}
	if st.Code() == codes.DeadlineExceeded {
		return fmt.Errorf("%s (no answer within --timeout %v)", st.Message(), c.e.timeout)
	}
	if refusal(st.Code()) {
		return &refusedError{st.Message()}
	}
	return errors.New(st.Message())
}

// refusedError is the cluster refusing the request as given (exit 3):
// unlike a failure (exit 1), running it again unchanged will not help.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

// refusal reports whether a status code refuses the request itself, not
// a failure to serve it.
func refusal(c codes.Code) bool {
	switch c {
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied, codes.FailedPrecondition, codes.OutOfRange:
		return true
	}
	return false
}

// retryElection retries a call the arbiters refused because they have no
// leader at the moment (an election in progress), within the call's
// deadline, as an operator would by running the command again.
func retryElection(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	policy := backoff.Policy{Base: 50 * time.Millisecond, Max: time.Second}
	for attempt := 0; ; attempt++ {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "leader") {
			return err
		}
		if policy.Sleep(ctx, attempt) != nil {
			return err
		}
	}
}
