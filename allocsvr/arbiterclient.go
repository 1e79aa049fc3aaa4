package allocsvr

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/backoff"
	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/internal/rpcerr"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

// arbiterClient calls whichever arbiter answers, preferring the leader.
type arbiterClient struct {
	addrs []string
	pool  *grpcconn.Pool
	retry backoff.Policy

	mu     sync.Mutex
	prefer string
	next   int
}

func newArbiterClient(addrs []string, opts []grpc.DialOption) *arbiterClient {
	return &arbiterClient{
		addrs: addrs,
		pool:  grpcconn.NewPool(opts...),
		retry: backoff.Policy{Base: 10 * time.Millisecond, Max: 200 * time.Millisecond},
	}
}

// pick returns the address to try next: the leader hint if any, else round robin.
func (c *arbiterClient) pick() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.prefer != "" {
		return c.prefer
	}
	a := c.addrs[c.next%len(c.addrs)]
	c.next++
	return a
}

func (c *arbiterClient) result(addr string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err == nil:
		c.prefer = addr
	case status.Code(err) == codes.Unavailable || status.Code(err) == codes.DeadlineExceeded:
		c.prefer = rpcerr.LeaderHint(err)
	}
}

// call runs fn against an arbiter, moving on to another one on UNAVAILABLE,
// until it succeeds, fails otherwise, or ctx ends.
func (c *arbiterClient) call(ctx context.Context, fn func(context.Context, clusterv1.ArbiterClient) error) error {
	for attempt := 0; ; attempt++ {
		addr := c.pick()
		cc, err := c.pool.Get(addr)
		if err == nil {
			err = fn(ctx, clusterv1.NewArbiterClient(cc))
		}
		c.result(addr, err)
		if err == nil {
			return nil
		}
		code := status.Code(err)
		if code != codes.Unavailable && !(code == codes.DeadlineExceeded && ctx.Err() == nil) {
			return err
		}
		if rpcerr.LeaderHint(err) != "" && attempt == 0 {
			continue // go straight to the leader
		}
		if e := c.retry.Sleep(ctx, attempt); e != nil {
			return errors.Join(err, e)
		}
	}
}

func (c *arbiterClient) close() { c.pool.Close() }
