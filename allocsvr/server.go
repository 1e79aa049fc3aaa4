package allocsvr

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/grpcconn"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// staleWait bounds how long a request waits for a renewal when the caller
// holds a newer routing table than this node.
const staleWait = 250 * time.Millisecond

// lapseWait bounds how long a request waits for the renewal loop to win
// back a lapsed lease (an arbiter election, say) before it answers
// NOT_OWNER. It covers at least one renewal retry.
const lapseWait = 250 * time.Millisecond

type server struct {
	seqdv1.UnimplementedSequencerServer
	seqdv1.UnimplementedRoutingServer
	clusterv1.UnimplementedAllocNodeServer
	s *Server
}

// RegisterServices adds the AllocSvr's gRPC services to g.
func (s *Server) RegisterServices(g grpc.ServiceRegistrar) {
	srv := &server{s: s}
	seqdv1.RegisterSequencerServer(g, srv)
	seqdv1.RegisterRoutingServer(g, srv)
	clusterv1.RegisterAllocNodeServer(g, srv)
}

// header reports this node's routing version, with the table if the caller's
// is older.
func (s *Server) header(clientVersion uint64) *seqdv1.ResponseHeader {
	t := s.table.Load()
	h := &seqdv1.ResponseHeader{RoutingVersion: t.Version}
	if clientVersion < t.Version {
		h.RoutingTable = t
	}
	return h
}

// withFreshness runs fn; if it fails with NOT_OWNER, and either the caller
// holds a newer table than this node (the node may just have been given the
// slot) or the lease has lapsed while the renewals go on (an arbiter
// election), the node waits briefly for a renewal and fn runs once more.
// The caller is answered by this node rather than sent into backoff.
func (s *Server) withFreshness(ctx context.Context, clientVersion uint64, fn func() error) error {
	err := fn()
	if err == nil || !errors.Is(err, errNotOwner) {
		return err
	}
	if clientVersion > s.table.Load().Version {
		s.renewNow(ctx, staleWait)
		return fn()
	}
	if ls := s.leases(); ls != nil && ls.lapsed() && s.awaitLease(ctx, ls, lapseWait) {
		return fn()
	}
	return err
}

func (r *server) Next(ctx context.Context, req *seqdv1.NextRequest) (*seqdv1.NextResponse, error) {
	if req.Key == 0 {
		return nil, errKeyZero
	}
	lay, ls, err := r.s.serveState()
	if err != nil {
		return nil, err
	}
	var seq uint64
	err = r.s.withFreshness(ctx, req.RoutingVersion, func() error {
		var err error
		seq, err = r.s.nextOne(ctx, lay, ls, req.Key)
		return err
	})
	if err != nil {
		return nil, r.s.statusErr(err)
	}
	return &seqdv1.NextResponse{Seq: seq, Header: r.s.header(req.RoutingVersion)}, nil
}

func (r *server) NextBatch(ctx context.Context, req *seqdv1.NextBatchRequest) (*seqdv1.NextBatchResponse, error) {
	var seqs []uint64
	err := r.s.withFreshness(ctx, req.RoutingVersion, func() error {
		var err error
		seqs, err = r.s.nextBatch(ctx, req.Keys)
		return err
	})
	if err != nil {
		return nil, r.s.statusErr(err)
	}
	return &seqdv1.NextBatchResponse{Seqs: seqs, Header: r.s.header(req.RoutingVersion)}, nil
}

func (r *server) Current(ctx context.Context, req *seqdv1.CurrentRequest) (*seqdv1.CurrentResponse, error) {
	if req.Key == 0 {
		return nil, errKeyZero
	}
	lay, ls, err := r.s.serveState()
	if err != nil {
		return nil, err
	}
	var seq uint64
	err = r.s.withFreshness(ctx, req.RoutingVersion, func() error {
		var err error
		seq, err = r.s.current(ctx, lay, ls, req.Key)
		return err
	})
	if err != nil {
		return nil, r.s.statusErr(err)
	}
	return &seqdv1.CurrentResponse{Seq: seq, Header: r.s.header(req.RoutingVersion)}, nil
}

// NextStream serves coalesced batches, each on its own goroutine so one
// that waits on the arbiter does not hold up the others
// (grpcconn.ServePipelined).
func (r *server) NextStream(stream seqdv1.Sequencer_NextStreamServer) error {
	return grpcconn.ServePipelined(stream, stream.Recv, func(ctx context.Context, req *seqdv1.NextBatchRequest) *seqdv1.NextBatchResponse {
		resp, err := r.NextBatch(ctx, req)
		if err != nil {
			resp = &seqdv1.NextBatchResponse{Error: toRPCError(err), Header: r.s.header(req.RoutingVersion)}
		}
		resp.Id = req.Id
		return resp
	})
}

// toRPCError carries a status inside a stream message.
func toRPCError(err error) *seqdv1.RPCError {
	st := status.Convert(err)
	e := &seqdv1.RPCError{Code: int32(st.Code()), Message: st.Message()}
	for _, d := range st.Details() {
		if t, ok := d.(*seqdv1.RoutingTable); ok {
			e.RoutingTable = t
		}
	}
	return e
}

func (r *server) GetRoutingTable(ctx context.Context, _ *seqdv1.GetRoutingTableRequest) (*seqdv1.GetRoutingTableResponse, error) {
	t := r.s.table.Load()
	if t.Version == 0 {
		return nil, status.Errorf(codes.Unavailable, "allocsvr %s has no routing table yet; retry shortly", r.s.cfg.ID)
	}
	return &seqdv1.GetRoutingTableResponse{Table: t}, nil
}
