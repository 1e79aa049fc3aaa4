package grpcconn

import (
	"errors"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// DefaultSlowReceiver is how long a server stream's message may wait for
// its client to take it (SendWithin). A client that stops reading a
// stream fills its flow-control windows, and Send blocks with the
// messages held in memory; a stream left so for this long is ended.
const DefaultSlowReceiver = 30 * time.Second

var slowReceiver atomic.Int64

func init() { slowReceiver.Store(int64(DefaultSlowReceiver)) }

// SetSlowReceiver changes SendWithin's wait (tests) and returns the one
// before.
func SetSlowReceiver(d time.Duration) time.Duration {
	return time.Duration(slowReceiver.Swap(int64(d)))
}

// SendWithin sends m on stream, and gives up with RESOURCE_EXHAUSTED when
// the client has not taken it within DefaultSlowReceiver. The server
// handler must then return that error: that ends the stream, and with it
// the send still blocked, which returns on its own goroutine (gRPC allows
// one sender at a time, so the handler sends nothing more). The client
// gets the status after the data queued before it, so once it reads again.
// A goroutine and a timer per message: streams send a page or a heartbeat
// at a time, not single events.
func SendWithin(stream grpc.ServerStream, m any) error {
	done := make(chan error, 1)
	go func() { done <- stream.SendMsg(m) }()
	d := time.Duration(slowReceiver.Load())
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return status.Errorf(codes.ResourceExhausted, "the stream's client took no message for %v (it is not reading); reconnect from your checkpoint", d)
	}
}

// Accepted waits for the server's header on a new client stream, which
// servers send once they accept it, and returns the server's refusal if
// the stream ended without one. grpc-go's Header answers nil, nil for such
// a stream (only Recv tells its error), so checking Header's error alone
// takes a refusal for an accepted stream.
func Accepted(st grpc.ClientStream) error {
	md, err := st.Header()
	if err != nil || md != nil {
		return err
	}
	// No header: the stream is over, and RecvMsg gives its status without
	// reading a message.
	if err := st.RecvMsg(new(emptypb.Empty)); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return status.Error(codes.Unavailable, "the stream ended before the server accepted it")
}
