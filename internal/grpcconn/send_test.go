package grpcconn_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/grpcconn"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// pipelined answers every NextStream request with 2,000 seqs (18 KB), and
// counts the requests it handled.
type pipelined struct {
	seqdv1.UnimplementedSequencerServer
	handled atomic.Int64
}

func (p *pipelined) NextStream(st seqdv1.Sequencer_NextStreamServer) error {
	return grpcconn.ServePipelined(st, st.Recv, func(_ context.Context, req *seqdv1.NextBatchRequest) *seqdv1.NextBatchResponse {
		p.handled.Add(1)
		seqs := make([]uint64, 2000)
		for i := range seqs {
			seqs[i] = 1 << 62 // 9 bytes each as a varint
		}
		return &seqdv1.NextBatchResponse{Id: req.Id, Seqs: seqs}
	})
}

// A client that sends requests and never reads the answers: the server
// handles at most MaxPipelined (and the few its sends took before the
// client's window filled), then stops reading, and ends the stream with
// RESOURCE_EXHAUSTED once a send has waited for the slow-receiver limit.
// Before, it read and handled every request, each on a goroutine blocked
// on the send, for as long as the connection lived.
func TestPipelinedStreamPushesBackOnAClientThatDoesNotRead(t *testing.T) {
	defer grpcconn.SetSlowReceiver(grpcconn.SetSlowReceiver(300 * time.Millisecond))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	fake := &pipelined{}
	seqdv1.RegisterSequencerServer(srv, fake)
	go srv.Serve(lis)
	defer srv.Stop()
	// Fixed 64 KB windows (no BDP growth): four answers fill them.
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// ends reads what is left of st and checks how the server ended it.
	ends := func(what string, st seqdv1.Sequencer_NextStreamClient) {
		t.Helper()
		for {
			_, err := st.Recv()
			if err == nil {
				continue
			}
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("%s: stream ended with %v, want RESOURCE_EXHAUSTED", what, err)
			}
			return
		}
	}
	st, err := seqdv1.NewSequencerClient(cc).NextStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := range 5 * grpcconn.MaxPipelined {
			if st.Send(&seqdv1.NextBatchRequest{Id: uint64(i + 1), Keys: []uint64{1}}) != nil {
				return
			}
		}
	}()
	time.Sleep(2 * time.Second) // the sends fill the window, one waits past the limit
	if n := fake.handled.Load(); n > grpcconn.MaxPipelined+32 {
		t.Fatalf("the server handled %d requests of a client that reads nothing; want at most about %d", n, grpcconn.MaxPipelined)
	}
	ends("a client that keeps sending", st)

	// A client that sent a few requests, then neither reads nor sends:
	// the server's loop must not wait in Recv for a request that never
	// comes.
	st, err = seqdv1.NewSequencerClient(cc).NextStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := st.Send(&seqdv1.NextBatchRequest{Id: uint64(i + 1), Keys: []uint64{1}}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	ends("a client that went quiet", st)
}
