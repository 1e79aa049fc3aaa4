package peer

import (
	"context"
	"net"

	"google.golang.org/grpc"

	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// Noop is an in-process gRPC Sequencer whose Next answers at once with
// seq = key: the ceiling for one unary call with seqd's message types.
type Noop struct {
	srv *grpc.Server
	ln  net.Listener
}

// StartNoop serves on a free loopback port.
func StartNoop() (*Noop, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer()
	seqdv1.RegisterSequencerServer(srv, noopSequencer{})
	go srv.Serve(ln)
	return &Noop{srv: srv, ln: ln}, nil
}

// Addr is the server's host:port.
func (n *Noop) Addr() string { return n.ln.Addr().String() }

// Close stops the server.
func (n *Noop) Close() error {
	n.srv.Stop()
	return nil
}

type noopSequencer struct {
	seqdv1.UnimplementedSequencerServer
}

func (noopSequencer) Next(_ context.Context, req *seqdv1.NextRequest) (*seqdv1.NextResponse, error) {
	return &seqdv1.NextResponse{Seq: req.Key, Header: &seqdv1.ResponseHeader{RoutingVersion: req.RoutingVersion}}, nil
}

func (noopSequencer) NextBatch(_ context.Context, req *seqdv1.NextBatchRequest) (*seqdv1.NextBatchResponse, error) {
	return &seqdv1.NextBatchResponse{Seqs: req.Keys, Header: &seqdv1.ResponseHeader{RoutingVersion: req.RoutingVersion}}, nil
}
