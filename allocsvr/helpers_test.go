package allocsvr_test

import (
	"testing"

	"google.golang.org/grpc"

	"github.com/seqd/seqd/internal/grpcconn"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

func seqClient(t *testing.T, addr string) seqdv1.SequencerClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpcconn.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return seqdv1.NewSequencerClient(cc)
}

func nextReq(key uint64) *seqdv1.NextRequest { return &seqdv1.NextRequest{Key: key} }
