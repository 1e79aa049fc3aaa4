package router

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

func TestGatewayHeaderBeforeTheClientExists(t *testing.T) {
	var g Gateway
	if h := g.header(); h == nil || h.RoutingVersion != 0 {
		t.Fatalf("header %v", h)
	}
}

// countingSequencer answers NextStream messages with increasing seqs and
// records the largest message it got.
type countingSequencer struct {
	seqdv1.UnimplementedSequencerServer
	next    atomic.Uint64
	maxKeys atomic.Int64
}

func (c *countingSequencer) NextStream(st seqdv1.Sequencer_NextStreamServer) error {
	for {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		if n := int64(len(req.Keys)); n > c.maxKeys.Load() {
			c.maxKeys.Store(n)
		}
		resp := &seqdv1.NextBatchResponse{Id: req.Id}
		for range req.Keys {
			resp.Seqs = append(resp.Seqs, c.next.Add(1))
		}
		if err := st.Send(resp); err != nil {
			return err
		}
	}
}

// Calls that queue together never make a message larger than the batch
// limit: the call that would overflow it starts the next message.
func TestBatcherKeepsMessagesWithinTheKeyLimit(t *testing.T) {
	fake := &countingSequencer{}
	addr := serve(t, func(srv *grpc.Server) { seqdv1.RegisterSequencerServer(srv, fake) })
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	const limit = 10
	b := newBatcher(cc, limit, 1, time.Millisecond)
	defer b.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys := make([]uint64, 1+i%7) // 1..7 keys: pairs of calls overflow the limit
			for j := range keys {
				keys[j] = uint64(i*10 + j + 1)
			}
			seqs, _, err := b.do(ctx, keys, 0)
			if err != nil || len(seqs) != len(keys) {
				t.Errorf("call %d: %d seqs for %d keys, err %v", i, len(seqs), len(keys), err)
			}
		}()
	}
	wg.Wait()
	if m := fake.maxKeys.Load(); m > limit {
		t.Fatalf("a message carried %d keys; the limit is %d", m, limit)
	}
}

// An AllocSvr that accepts connections but never answers (a paused
// process: the kernel completes the TCP handshake, HTTP/2 never starts)
// holds neither the caller past its deadline nor the batcher's close: the
// caller gets its deadline, and close cancels the stream being opened.
func TestBatcherCloseDoesNotWaitForAHungAllocSvr(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	b := newBatcher(cc, 10, 1, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := b.do(ctx, []uint64{1}, 0); err == nil {
		t.Fatal("a call to a hung AllocSvr succeeded")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the call took %v with a 300ms deadline", took)
	}
	closed := make(chan struct{})
	go func() { b.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("close still waits for the stream to the hung AllocSvr after 2s")
	}
}

// TestBatcherCallAfterCloseFailsAtOnce: a call that reaches a batcher
// after its close (a Client.Close racing calls) fails at once with
// UNAVAILABLE. Before, it could land in the queue after the loop had
// drained it and returned, and wait out its whole deadline.
func TestBatcherCallAfterCloseFailsAtOnce(t *testing.T) {
	// Never dialled: the batcher opens its stream with its first batch.
	cc, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	b := newBatcher(cc, 4096, 4, DefaultBatchWindow)
	b.close()
	time.Sleep(20 * time.Millisecond) // the loop has drained and returned
	for i := 0; i < 50; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		_, _, err := b.do(ctx, []uint64{1}, 0)
		cancel()
		if status.Code(err) != codes.Unavailable || time.Since(start) > time.Second {
			t.Fatalf("call %d on a closed batcher: %v after %v, want UNAVAILABLE at once", i, err, time.Since(start))
		}
	}
}

func TestConvAfter(t *testing.T) {
	d := func(id uint64) *seqdv1.Conversation {
		return &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT, Id: id}
	}
	g := func(id uint64) *seqdv1.Conversation {
		return &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_GROUP, Id: id}
	}
	for _, c := range []struct {
		c, cur *seqdv1.Conversation
		want   bool
	}{
		{d(5), d(4), true}, {d(4), d(4), false}, {d(3), d(4), false},
		{g(1), d(99), true}, {d(99), g(1), false},
	} {
		if got := convAfter(c.c, c.cur); got != c.want {
			t.Errorf("convAfter(%v, %v) = %v, want %v", c.c, c.cur, got, c.want)
		}
	}
}
