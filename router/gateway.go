package router

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/grpcconn"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// Gateway serves the Sequencer API over gRPC for front ends that cannot
// embed Client, routing each key through an embedded Client. It also serves
// the routing table (so Go clients can bootstrap from it) and proxies the
// Admin API to the arbiters.
type Gateway struct {
	client   atomic.Pointer[Client]
	arbiters []string
	pool     *grpcconn.Pool
}

// NewGateway returns a gateway that answers UNAVAILABLE until SetClient
// gives it a client, so its services can be registered before the
// arbiters are reachable. arbiters are where Admin calls go.
func NewGateway(arbiters []string) *Gateway {
	return &Gateway{arbiters: arbiters, pool: grpcconn.NewPool()}
}

// SetClient gives the gateway the client it routes through.
func (g *Gateway) SetClient(c *Client) { g.client.Store(c) }

var errStarting = status.Error(codes.Unavailable, "gateway is starting and has no routing table yet; retry shortly")

func (g *Gateway) c() (*Client, error) {
	if c := g.client.Load(); c != nil {
		return c, nil
	}
	return nil, errStarting
}

// Close releases the gateway's connections (not the client's).
func (g *Gateway) Close() error { return g.pool.Close() }

// RegisterServices adds Sequencer, Messages, Routing and Admin to s.
func (g *Gateway) RegisterServices(s grpc.ServiceRegistrar) {
	seqdv1.RegisterSequencerServer(s, &gatewaySequencer{g: g})
	seqdv1.RegisterMessagesServer(s, &gatewayMessages{g: g})
	seqdv1.RegisterRoutingServer(s, &gatewayRouting{g: g})
	seqdv1.RegisterAdminServer(s, &gatewayAdmin{g: g})
}

func (g *Gateway) header() *seqdv1.ResponseHeader {
	if c := g.client.Load(); c != nil {
		if t := c.Table(); t != nil {
			return &seqdv1.ResponseHeader{RoutingVersion: t.Version}
		}
	}
	return &seqdv1.ResponseHeader{} // still starting
}

type gatewaySequencer struct {
	seqdv1.UnimplementedSequencerServer
	g *Gateway
}

func (s *gatewaySequencer) Next(ctx context.Context, req *seqdv1.NextRequest) (*seqdv1.NextResponse, error) {
	c, err := s.g.c()
	if err != nil {
		return nil, err
	}
	seq, err := c.Next(ctx, req.Key)
	if err != nil {
		return nil, err
	}
	return &seqdv1.NextResponse{Seq: seq, Header: s.g.header()}, nil
}

func (s *gatewaySequencer) NextBatch(ctx context.Context, req *seqdv1.NextBatchRequest) (*seqdv1.NextBatchResponse, error) {
	if len(req.Keys) > maxServerBatch {
		return nil, status.Errorf(codes.InvalidArgument, "%d keys in one batch; the limit is %d", len(req.Keys), maxServerBatch)
	}
	c, err := s.g.c()
	if err != nil {
		return nil, err
	}
	seqs, err := c.NextBatch(ctx, req.Keys)
	if err != nil {
		return nil, err
	}
	return &seqdv1.NextBatchResponse{Seqs: seqs, Header: s.g.header()}, nil
}

func (s *gatewaySequencer) Current(ctx context.Context, req *seqdv1.CurrentRequest) (*seqdv1.CurrentResponse, error) {
	c, err := s.g.c()
	if err != nil {
		return nil, err
	}
	seq, err := c.Current(ctx, req.Key)
	if err != nil {
		return nil, err
	}
	return &seqdv1.CurrentResponse{Seq: seq, Header: s.g.header()}, nil
}

func (s *gatewaySequencer) NextStream(stream seqdv1.Sequencer_NextStreamServer) error {
	return grpcconn.ServePipelined(stream, stream.Recv, func(ctx context.Context, req *seqdv1.NextBatchRequest) *seqdv1.NextBatchResponse {
		resp, err := s.NextBatch(ctx, req)
		if err != nil {
			st := status.Convert(err)
			resp = &seqdv1.NextBatchResponse{Error: &seqdv1.RPCError{Code: int32(st.Code()), Message: st.Message()}, Header: s.g.header()}
		}
		resp.Id = req.Id
		return resp
	})
}

type gatewayRouting struct {
	seqdv1.UnimplementedRoutingServer
	g *Gateway
}

func (r *gatewayRouting) GetRoutingTable(ctx context.Context, _ *seqdv1.GetRoutingTableRequest) (*seqdv1.GetRoutingTableResponse, error) {
	c, err := r.g.c()
	if err != nil {
		return nil, err
	}
	if err := c.refresh(ctx, false); err != nil && c.Table() == nil {
		return nil, status.Errorf(codes.Unavailable, "gateway has no routing table: %v", err)
	}
	return &seqdv1.GetRoutingTableResponse{Table: c.Table()}, nil
}

// gatewayAdmin proxies Admin calls to the first arbiter that answers.
type gatewayAdmin struct {
	seqdv1.UnimplementedAdminServer
	g *Gateway
}

func proxy[Resp any](ctx context.Context, g *Gateway, call func(context.Context, seqdv1.AdminClient) (Resp, error)) (Resp, error) {
	var zero Resp
	if len(g.arbiters) == 0 {
		return zero, status.Error(codes.FailedPrecondition, "this gateway was started without --arbiters, so it cannot serve admin calls")
	}
	var last error
	for _, a := range g.arbiters {
		cc, err := g.pool.Get(a)
		if err != nil {
			last = err
			continue
		}
		resp, err := call(ctx, seqdv1.NewAdminClient(cc))
		if err == nil || status.Code(err) != codes.Unavailable {
			return resp, err
		}
		last = err
	}
	return zero, status.Errorf(codes.Unavailable, "no arbiter answered: %v", last)
}

func (a *gatewayAdmin) Status(ctx context.Context, req *seqdv1.StatusRequest) (*seqdv1.StatusResponse, error) {
	return proxy(ctx, a.g, func(ctx context.Context, c seqdv1.AdminClient) (*seqdv1.StatusResponse, error) {
		return c.Status(ctx, req)
	})
}

func (a *gatewayAdmin) Drain(ctx context.Context, req *seqdv1.DrainRequest) (*seqdv1.DrainResponse, error) {
	return proxy(ctx, a.g, func(ctx context.Context, c seqdv1.AdminClient) (*seqdv1.DrainResponse, error) {
		return c.Drain(ctx, req)
	})
}

func (a *gatewayAdmin) Undrain(ctx context.Context, req *seqdv1.UndrainRequest) (*seqdv1.UndrainResponse, error) {
	return proxy(ctx, a.g, func(ctx context.Context, c seqdv1.AdminClient) (*seqdv1.UndrainResponse, error) {
		return c.Undrain(ctx, req)
	})
}

func (a *gatewayAdmin) JoinArbiter(ctx context.Context, req *seqdv1.JoinArbiterRequest) (*seqdv1.JoinArbiterResponse, error) {
	return proxy(ctx, a.g, func(ctx context.Context, c seqdv1.AdminClient) (*seqdv1.JoinArbiterResponse, error) {
		return c.JoinArbiter(ctx, req)
	})
}

func (a *gatewayAdmin) RemoveArbiter(ctx context.Context, req *seqdv1.RemoveArbiterRequest) (*seqdv1.RemoveArbiterResponse, error) {
	return proxy(ctx, a.g, func(ctx context.Context, c seqdv1.AdminClient) (*seqdv1.RemoveArbiterResponse, error) {
		return c.RemoveArbiter(ctx, req)
	})
}

func (a *gatewayAdmin) AddStoreReplica(ctx context.Context, req *seqdv1.AddStoreReplicaRequest) (*seqdv1.AddStoreReplicaResponse, error) {
	return proxy(ctx, a.g, func(ctx context.Context, c seqdv1.AdminClient) (*seqdv1.AddStoreReplicaResponse, error) {
		return c.AddStoreReplica(ctx, req)
	})
}

func (a *gatewayAdmin) RemoveStoreReplica(ctx context.Context, req *seqdv1.RemoveStoreReplicaRequest) (*seqdv1.RemoveStoreReplicaResponse, error) {
	return proxy(ctx, a.g, func(ctx context.Context, c seqdv1.AdminClient) (*seqdv1.RemoveStoreReplicaResponse, error) {
		return c.RemoveStoreReplica(ctx, req)
	})
}
