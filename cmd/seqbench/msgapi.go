package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/grpcconn"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

// msgAPI is the part of the Messages API the message benchmarks call:
// router.Messages (straight to the shard leader) or a gateway's gRPC
// service (one more hop), which answer the same calls.
type msgAPI interface {
	Send(context.Context, *seqdv1.SendRequest) (*seqdv1.SendResponse, error)
	Sync(context.Context, *seqdv1.SyncRequest) (*seqdv1.SyncResponse, error)
	Subscribe(context.Context, *seqdv1.SubscribeRequest) (seqdv1.Messages_SubscribeClient, error)
	CreateGroup(context.Context, *seqdv1.CreateGroupRequest) (*seqdv1.CreateGroupResponse, error)
	AddMembers(context.Context, *seqdv1.AddMembersRequest) (*seqdv1.AddMembersResponse, error)
	SyncGroup(context.Context, *seqdv1.SyncGroupRequest) (*seqdv1.SyncGroupResponse, error)
}

var _ msgAPI = (*router.Messages)(nil)

// callTimeout bounds one gateway call, as router.Client bounds its own.
const callTimeout = 10 * time.Second

// gatewayAPI calls a gateway's Messages service.
type gatewayAPI struct{ c seqdv1.MessagesClient }

func unary[Req, Resp any](ctx context.Context, req Req, call func(context.Context, Req, ...grpc.CallOption) (Resp, error)) (Resp, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return call(ctx, req)
}

func (g gatewayAPI) Send(ctx context.Context, r *seqdv1.SendRequest) (*seqdv1.SendResponse, error) {
	return unary(ctx, r, g.c.Send)
}
func (g gatewayAPI) Sync(ctx context.Context, r *seqdv1.SyncRequest) (*seqdv1.SyncResponse, error) {
	return unary(ctx, r, g.c.Sync)
}
func (g gatewayAPI) CreateGroup(ctx context.Context, r *seqdv1.CreateGroupRequest) (*seqdv1.CreateGroupResponse, error) {
	return unary(ctx, r, g.c.CreateGroup)
}
func (g gatewayAPI) AddMembers(ctx context.Context, r *seqdv1.AddMembersRequest) (*seqdv1.AddMembersResponse, error) {
	return unary(ctx, r, g.c.AddMembers)
}
func (g gatewayAPI) SyncGroup(ctx context.Context, r *seqdv1.SyncGroupRequest) (*seqdv1.SyncGroupResponse, error) {
	return unary(ctx, r, g.c.SyncGroup)
}
func (g gatewayAPI) Subscribe(ctx context.Context, r *seqdv1.SubscribeRequest) (seqdv1.Messages_SubscribeClient, error) {
	return g.c.Subscribe(ctx, r)
}

// msgConn is a connected message client and the cluster behind it.
type msgConn struct {
	target *seqdTarget
	api    msgAPI
	// via says how calls travel: "router.Client" or "gateway <addr>".
	via     string
	closers []io.Closer
}

// dialMessages connects to the target's message store: through a
// router.Client by default, through the gateway (the first --addr, or the
// in-process gateway) with viaGateway.
func dialMessages(ctx context.Context, t *seqdTarget, viaGateway bool) (*msgConn, error) {
	if viaGateway {
		// A gateway started just before seqbench gets the time --addr
		// gets to open its port.
		if t.local == nil {
			if err := probeAddrs(ctx, t.addrs[:1]); err != nil {
				return nil, fmt.Errorf("gateway %s does not answer Messages calls: %w", t.addrs[0], err)
			}
		}
		pool := grpcconn.NewPool()
		cc, err := pool.Get(t.addrs[0])
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("gateway %s: %w", t.addrs[0], err)
		}
		// A gateway that does not answer would fail every send of the run:
		// ask it first (a read of user 1's unread counts). Any answer of
		// its own will do; a cluster still starting gets up to 10 s, as the
		// router's bootstrap does.
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		for {
			_, err = seqdv1.NewMessagesClient(cc).Unread(pctx, &seqdv1.UnreadRequest{User: 1})
			if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
				break
			}
			if pctx.Err() != nil || strings.Contains(err.Error(), "connection refused") {
				pool.Close()
				return nil, fmt.Errorf("gateway %s does not answer Messages calls: %w", t.addrs[0], err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		return &msgConn{target: t, api: gatewayAPI{seqdv1.NewMessagesClient(cc)}, via: "gateway " + t.addrs[0], closers: []io.Closer{pool}}, nil
	}
	cl, err := t.client(ctx, true)
	if err != nil {
		return nil, err
	}
	if len(cl.Table().GetShards()) == 0 {
		cl.Close()
		return nil, errors.New("the cluster has no message-store shard; start it with a store (seqd demo does)")
	}
	return &msgConn{target: t, api: cl.Messages(), via: "router.Client", closers: []io.Closer{cl}}, nil
}

func (m *msgConn) Close() {
	for _, c := range m.closers {
		c.Close()
	}
}

// population is the users a run sends as and to: first .. first+n-1.
type population struct {
	first, n uint64
}

func (p population) user(i uint64) uint64 { return p.first + i }

// validate checks the population for a 1:1 load.
func (p population) validate() error {
	switch {
	case p.n < 2:
		return fmt.Errorf("--users %d: a 1:1 load needs at least 2 users", p.n)
	case p.first == 0:
		return errors.New("--first-user 0: user ids start at 1")
	case p.n > 1<<31 || p.first+p.n >= 1<<63:
		return fmt.Errorf("--users %d from %d: user ids must stay below 2^63 and --users at most 2^31", p.n, p.first)
	}
	return nil
}

// convID is the DIRECT conversation id of the pair of user indexes a and
// b: the same in both directions, distinct per pair, never 0.
func (p population) convID(a, b uint64) uint64 {
	lo, hi := min(a, b), max(a, b)
	return lo*p.n + hi + 1
}

// pair picks a random sender and a different recipient.
func (p population) pair(r *rand.Rand) (a, b uint64) {
	a = r.Uint64N(p.n)
	b = r.Uint64N(p.n - 1)
	if b >= a {
		b++
	}
	return a, b
}

// directSend builds a 1:1 send from user index a to b.
func (p population) directSend(a, b uint64, clientMsgID string, body []byte) *seqdv1.SendRequest {
	return &seqdv1.SendRequest{
		Sender:       p.user(a),
		Conversation: &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT, Id: p.convID(a, b)},
		Recipients:   []uint64{p.user(b)},
		ClientMsgId:  clientMsgID,
		Body:         body,
	}
}

// newRunID names one run; client_msg_ids carry it so that runs against
// the same cluster never collide in its dedup table.
func newRunID() string { return strconv.FormatInt(time.Now().UnixNano(), 36) }

// msgIDs hands out one worker's client_msg_ids.
type msgIDs struct {
	prefix string
	n      uint64
}

func newMsgIDs(runID string, worker int) *msgIDs {
	return &msgIDs{prefix: runID + "." + strconv.Itoa(worker) + "."}
}

func (m *msgIDs) next() string {
	m.n++
	return m.prefix + strconv.FormatUint(m.n, 36)
}

// bodyAlphabet is what message bodies are made of: 64 letters, so a body
// reads like text (base64) but compresses about as badly as real text
// after a good compressor.
const bodyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

// stampBytes is the size of the send time at the start of every body.
const stampBytes = 8

// makeBody returns a body of n bytes: the send time (Unix ns, so that a
// subscriber in this process can time the delivery) in the first 8 bytes
// when n allows it, then random letters.
func makeBody(r *rand.Rand, n int, sent time.Time) []byte {
	b := make([]byte, n)
	i := 0
	if n >= stampBytes {
		binary.LittleEndian.PutUint64(b, uint64(sent.UnixNano()))
		i = stampBytes
	}
	for ; i < n; i++ {
		b[i] = bodyAlphabet[r.IntN(len(bodyAlphabet))]
	}
	return b
}

// sentAt reads the send time makeBody wrote.
func sentAt(body []byte) (int64, bool) {
	if len(body) < stampBytes {
		return 0, false
	}
	return int64(binary.LittleEndian.Uint64(body)), true
}

func newRand(i int) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
}
