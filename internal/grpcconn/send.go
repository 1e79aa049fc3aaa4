package grpcconn

import (
	"context"
	"errors"
	"io"
	"sync"
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

// MaxPipelined is how many requests of one pipelined stream
// (ServePipelined) are handled at once.
const MaxPipelined = 256

// ServePipelined serves a bidirectional stream whose requests are answered
// out of order: each on its own goroutine, so one that waits on a slow
// dependency does not hold up the others. At most MaxPipelined are handled
// at once; past that the stream is not read, and flow control holds the
// client back. Answers go out one at a time through SendWithin, so a client
// that stops reading ends the stream (RESOURCE_EXHAUSTED) instead of
// holding goroutines and answers for good, whether or not it still sends;
// no request is handled after a send failed. It returns nil once the
// client has closed its side and every answer is out.
func ServePipelined[Req, Resp any](stream grpc.ServerStream, recv func() (Req, error), handle func(context.Context, Req) Resp) error {
	ctx := stream.Context()
	slots := make(chan struct{}, MaxPipelined)
	var (
		mu     sync.Mutex // one send at a time; guards failed
		wg     sync.WaitGroup
		failed error
	)
	sendFailed := make(chan struct{}) // closed as failed is set
	// Requests come from a goroutine of their own, so that a failed send
	// ends the stream even while the client sends nothing (Recv would
	// block); it ends with the stream, which returning ends.
	reqs := make(chan Req)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	// end waits for the answers under way: a send that failed is the
	// stream's end (not a clean one), else err is (the client's EOF a
	// clean one).
	end := func(err error) error {
		wg.Wait()
		if failed != nil {
			return failed
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	for {
		select {
		case slots <- struct{}{}:
		case <-sendFailed:
			return end(nil)
		case <-ctx.Done():
			return end(status.FromContextError(ctx.Err()).Err())
		}
		select {
		case req := <-reqs:
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				resp := handle(ctx, req)
				mu.Lock()
				defer mu.Unlock()
				if failed == nil {
					if failed = SendWithin(stream, resp); failed != nil {
						close(sendFailed)
					}
				}
			}()
		case err := <-recvErr:
			return end(err)
		case <-sendFailed:
			return end(nil)
		case <-ctx.Done():
			return end(status.FromContextError(ctx.Err()).Err())
		}
	}
}
