package router

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/forward"
	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/internal/rpcerr"
	"github.com/seqd/seqd/keyspace"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// Messages routes message-store calls to the shard that owns each user or
// group, preferring the shard's leader, and retries WRONG_SHARD,
// NOT_LEADER and UNAVAILABLE within the caller's deadline. Get one with
// Client.Messages.
type Messages struct {
	c       *Client
	mu      sync.Mutex
	leaders map[string]string // shard id -> gRPC address of its leader, as last learned
	streams atomic.Uint64     // Subscribe calls so far: where one without a known leader starts
	calls   atomic.Uint64     // other calls so far: where one without a known leader starts
}

// Messages returns the message-store client that shares this client's
// routing table and connections.
func (c *Client) Messages() *Messages {
	c.msgOnce.Do(func() { c.msgs = &Messages{c: c, leaders: map[string]string{}} })
	return c.msgs
}

// shardFor finds the shard owning key in the cached table.
func (m *Messages) shardFor(key uint64) (*seqdv1.ShardInfo, error) {
	v := m.c.table.Load()
	if v == nil || v.sectionSize == 0 {
		return nil, status.Error(codes.Unavailable, "no routing table yet")
	}
	sec := key / v.sectionSize
	for _, sh := range v.raw.Shards {
		if sec >= sh.FirstSection && (sh.EndSection == 0 || sec < sh.EndSection) {
			if len(sh.Replicas) == 0 {
				return nil, status.Errorf(codes.Unavailable, "shard %s has no registered replica yet", sh.Id)
			}
			return sh, nil
		}
	}
	return nil, status.Errorf(codes.Unavailable, "no message-store shard owns key %d", key)
}

// pick returns the replica to try: the known leader when preferred (and
// still a replica of the shard), else round robin.
func (m *Messages) pick(sh *seqdv1.ShardInfo, attempt int, leader bool) string {
	if leader {
		if a := m.leader(sh); a != "" {
			return a
		}
	}
	return sh.Replicas[attempt%len(sh.Replicas)].Addr
}

// leader returns the shard's known leader, if the shard map still lists
// it among the shard's replicas (a replica moved away is not).
func (m *Messages) leader(sh *seqdv1.ShardInfo) string {
	m.mu.Lock()
	a := m.leaders[sh.Id]
	m.mu.Unlock()
	if a == "" || !slices.ContainsFunc(sh.Replicas, func(r *seqdv1.ReplicaInfo) bool { return r.Addr == a }) {
		return ""
	}
	return a
}

func (m *Messages) remember(shard, addr string) {
	m.mu.Lock()
	m.leaders[shard] = addr
	m.mu.Unlock()
}

// forget drops addr as the shard's leader, if it is the one remembered.
func (m *Messages) forget(shard, addr string) {
	m.mu.Lock()
	if m.leaders[shard] == addr {
		delete(m.leaders, shard)
	}
	m.mu.Unlock()
}

// callShard runs call at the shard owning key until it succeeds, fails
// for good, or ctx ends.
func callShard[Resp any](ctx context.Context, m *Messages, key uint64, call func(context.Context, seqdv1.MessagesClient) (Resp, error)) (Resp, error) {
	var zero Resp
	if m.c.closed.Load() {
		return zero, ErrClosed
	}
	ctx, cancel := m.c.withTimeout(ctx)
	defer cancel()
	var last error
	shard := "" // the shard last tried, for the give-up message
	leader, hops := true, 0
	// Without a known leader, calls start at different replicas, so that
	// one cut off from its leader does not answer every read first.
	first := int(m.calls.Add(1) % 1024)
	// A read a replica answered without its leader (maybe_stale), kept
	// while the others are asked: any of them may reach the leader. It is
	// the answer once every replica has answered stale or failed since, or
	// when the call runs out of time.
	var stale Resp
	var asked map[string]bool // replicas that answered stale or failed since; nil before one answered stale
	for attempt := 0; ; attempt++ {
		addr := ""
		sh, err := m.shardFor(key)
		if err == nil {
			shard = sh.Id
			addr = m.pick(sh, first+attempt, leader)
			leader = false
			var cc *grpc.ClientConn
			if cc, err = m.c.pool.Get(addr); err == nil {
				var resp Resp
				hc := &headerConn{ClientConnInterface: cc}
				actx, acancel := attemptContext(ctx)
				resp, err = call(actx, seqdv1.NewMessagesClient(hc))
				acancel()
				if err == nil {
					// A follower that forwarded the call names the
					// leader: go there directly from now on. One that
					// answered from its own state without a leader
					// (maybe_stale) is not one to come back to.
					switch l := forward.Leader(hc.md); {
					case l != "":
						m.remember(sh.Id, l)
					case maybeStale(resp):
						// Nor one taken for it before, now
						// cut off or deposed.
						m.forget(sh.Id, addr)
						if asked == nil {
							asked = map[string]bool{}
						}
						stale = resp
						asked[addr] = true
						if len(asked) < len(sh.Replicas) {
							continue // ask the next replica
						}
					default:
						m.remember(sh.Id, addr)
					}
					return resp, nil
				}
				if hint := rpcerr.LeaderHint(err); hint != "" {
					// Go to the named leader next; at once if it is news,
					// after the backoff if replicas keep naming each other
					// (an election in progress).
					m.remember(sh.Id, hint)
					leader = true
					if hint != addr && hops < len(sh.Replicas) {
						hops++
						last = err
						continue
					}
				}
			}
		}
		last = err
		if len(asked) > 0 && addr != "" {
			asked[addr] = true
			if len(asked) >= len(sh.Replicas) {
				// The others cannot answer better now: the stale
				// answer, which says so, rather than none.
				return stale, nil
			}
		}
		// The leader is there but not ready to answer (still catching
		// up after its election): back to it after the backoff, with
		// the table as it is.
		notReady := rpcerr.IsLeaderNotReady(err)
		code := status.Code(err)
		switch {
		case notReady:
			leader = true
		case addr != "" && rpcerr.LeaderHint(err) == "" &&
			(code == codes.Unavailable || code == codes.DeadlineExceeded && ctx.Err() == nil):
			// Down, unreachable, or too slow to answer in its attempt's
			// time: not the one to try first again (a paused leader would
			// take every call's whole deadline until its connection
			// broke). A leader's own answers (a refusal, a rate limit)
			// keep it.
			m.forget(shard, addr)
		}
		if t, ok := rpcerr.WrongShardTable(err); ok {
			if m.c.learn(t) {
				continue
			}
		} else if !rpcerr.Retryable(err) && status.Code(err) != codes.DeadlineExceeded {
			return zero, err
		}
		hops = 0
		if !notReady {
			m.c.refresh(ctx, false)
		}
		if err := m.c.retry.Sleep(ctx, attempt); err != nil {
			if len(asked) > 0 {
				return stale, nil
			}
			if shard != "" && last != nil {
				// The last error names one replica; what failed is that no
				// replica of the shard answered in time (no leader, none
				// reachable, or none fast enough: a write may still have
				// taken effect, and its retry with the same request says
				// so).
				last = status.Errorf(status.Code(last), "store shard %s: no replica answered in time (no leader, none reachable, or none fast enough); last: %s", shard, status.Convert(last).Message())
			}
			return zero, giveUp(last, err)
		}
	}
}

// attemptContext bounds one attempt of a call to half the time the call
// has left, or a second if that is more: a replica that takes a call and
// does not answer (a paused process, whose connection looks healthy until
// keepalive gives up on it) leaves time to try another. A retried write
// is safe: Send requires client_msg_id, and the other writes are
// idempotent.
func attemptContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, max(time.Until(d)/2, time.Second))
}

// headerConn keeps the response header of the unary call made through it.
type headerConn struct {
	grpc.ClientConnInterface
	md metadata.MD
}

func (h *headerConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return h.ClientConnInterface.Invoke(ctx, method, args, reply, append(opts, grpc.Header(&h.md))...)
}

// userKey checks a user id and returns its routing key.
func userKey(field string, u uint64) (uint64, error) {
	if err := keyspace.CheckUser(field, u); err != nil {
		return 0, status.Error(codes.InvalidArgument, err.Error())
	}
	return u, nil
}

func groupKey(g uint64) (uint64, error) {
	if err := keyspace.CheckGroup("group_id", g); err != nil {
		return 0, status.Error(codes.InvalidArgument, err.Error())
	}
	return keyspace.Group(g), nil
}

// SendKey returns the routing key of a send: the group for GROUP
// messages, the sender otherwise.
func SendKey(r *seqdv1.SendRequest) (uint64, error) {
	if r.GetConversation().GetType() == seqdv1.ConversationType_CONVERSATION_TYPE_GROUP {
		if err := keyspace.CheckGroup("conversation.id", r.Conversation.Id); err != nil {
			return 0, status.Error(codes.InvalidArgument, err.Error())
		}
		return keyspace.Group(r.Conversation.Id), nil
	}
	return userKey("sender", r.Sender)
}

func (m *Messages) Send(ctx context.Context, r *seqdv1.SendRequest) (*seqdv1.SendResponse, error) {
	key, err := SendKey(r)
	if err != nil {
		return nil, err
	}
	return callShard(ctx, m, key, func(ctx context.Context, c seqdv1.MessagesClient) (*seqdv1.SendResponse, error) {
		return c.Send(ctx, r)
	})
}

func (m *Messages) Sync(ctx context.Context, r *seqdv1.SyncRequest) (*seqdv1.SyncResponse, error) {
	key, err := userKey("user", r.User)
	if err != nil {
		return nil, err
	}
	return callShard(ctx, m, key, func(ctx context.Context, c seqdv1.MessagesClient) (*seqdv1.SyncResponse, error) {
		return c.Sync(ctx, r)
	})
}

func (m *Messages) MarkRead(ctx context.Context, r *seqdv1.MarkReadRequest) (*seqdv1.MarkReadResponse, error) {
	key, err := userKey("user", r.User)
	if err != nil {
		return nil, err
	}
	return callShard(ctx, m, key, func(ctx context.Context, c seqdv1.MessagesClient) (*seqdv1.MarkReadResponse, error) {
		return c.MarkRead(ctx, r)
	})
}

func (m *Messages) Unread(ctx context.Context, r *seqdv1.UnreadRequest) (*seqdv1.UnreadResponse, error) {
	key, err := userKey("user", r.User)
	if err != nil {
		return nil, err
	}
	return callShard(ctx, m, key, func(ctx context.Context, c seqdv1.MessagesClient) (*seqdv1.UnreadResponse, error) {
		return c.Unread(ctx, r)
	})
}

// UnreadAll is Unread with every page of conversations: it asks for the
// next page until none is left, and answers the last page's total (the
// one read last) with the conversations of all.
func (m *Messages) UnreadAll(ctx context.Context, user uint64) (*seqdv1.UnreadResponse, error) {
	// One deadline for all the pages, not one each.
	ctx, cancel := m.c.withTimeout(ctx)
	defer cancel()
	out := &seqdv1.UnreadResponse{}
	req := &seqdv1.UnreadRequest{User: user}
	for {
		resp, err := m.Unread(ctx, req)
		if err != nil {
			return nil, err
		}
		for _, c := range resp.Conversations {
			// Only those after the cursor: a replica of a build before
			// paging ignores it and answers every conversation.
			if req.After == nil || convAfter(c.Conversation, req.After) {
				out.Conversations = append(out.Conversations, c)
			}
		}
		out.Total = resp.Total
		out.MaybeStale = out.MaybeStale || resp.MaybeStale
		if !resp.HasMore || resp.NextAfter == nil {
			return out, nil
		}
		if req.After != nil && !convAfter(resp.NextAfter, req.After) {
			return nil, status.Errorf(codes.Internal, "unread: the replica's next page starts at %v, not after %v; giving up rather than asking again", resp.NextAfter, req.After)
		}
		req.After = resp.NextAfter
	}
}

// convAfter reports whether c comes after cur in Unread's order (by
// type, then id).
func convAfter(c, cur *seqdv1.Conversation) bool {
	return c.GetType() > cur.GetType() || c.GetType() == cur.GetType() && c.GetId() > cur.GetId()
}

func (m *Messages) History(ctx context.Context, r *seqdv1.HistoryRequest) (*seqdv1.HistoryResponse, error) {
	key, err := userKey("user", r.User)
	if err != nil {
		return nil, err
	}
	return callShard(ctx, m, key, func(ctx context.Context, c seqdv1.MessagesClient) (*seqdv1.HistoryResponse, error) {
		return c.History(ctx, r)
	})
}

func (m *Messages) Recall(ctx context.Context, r *seqdv1.RecallRequest) (*seqdv1.RecallResponse, error) {
	key, _, err := keyspace.ParseMessageID(r.MessageId)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return callShard(ctx, m, key, func(ctx context.Context, c seqdv1.MessagesClient) (*seqdv1.RecallResponse, error) {
		return c.Recall(ctx, r)
	})
}

func (m *Messages) Delete(ctx context.Context, r *seqdv1.DeleteRequest) (*seqdv1.DeleteResponse, error) {
	key, err := userKey("user", r.User)
	if err != nil {
		return nil, err
	}
	return callShard(ctx, m, key, func(ctx context.Context, c seqdv1.MessagesClient) (*seqdv1.DeleteResponse, error) {
		return c.Delete(ctx, r)
	})
}

func (m *Messages) CreateGroup(ctx context.Context, r *seqdv1.CreateGroupRequest) (*seqdv1.CreateGroupResponse, error) {
	key, err := groupKey(r.GroupId)
	if err != nil {
		return nil, err
	}
	return callShard(ctx, m, key, func(ctx context.Context, c seqdv1.MessagesClient) (*seqdv1.CreateGroupResponse, error) {
		return c.CreateGroup(ctx, r)
	})
}

func (m *Messages) AddMembers(ctx context.Context, r *seqdv1.AddMembersRequest) (*seqdv1.AddMembersResponse, error) {
	key, err := groupKey(r.GroupId)
	if err != nil {
		return nil, err
	}
	return callShard(ctx, m, key, func(ctx context.Context, c seqdv1.MessagesClient) (*seqdv1.AddMembersResponse, error) {
		return c.AddMembers(ctx, r)
	})
}

func (m *Messages) RemoveMembers(ctx context.Context, r *seqdv1.RemoveMembersRequest) (*seqdv1.RemoveMembersResponse, error) {
	key, err := groupKey(r.GroupId)
	if err != nil {
		return nil, err
	}
	return callShard(ctx, m, key, func(ctx context.Context, c seqdv1.MessagesClient) (*seqdv1.RemoveMembersResponse, error) {
		return c.RemoveMembers(ctx, r)
	})
}

func (m *Messages) GetGroup(ctx context.Context, r *seqdv1.GetGroupRequest) (*seqdv1.GetGroupResponse, error) {
	key, err := groupKey(r.GroupId)
	if err != nil {
		return nil, err
	}
	return callShard(ctx, m, key, func(ctx context.Context, c seqdv1.MessagesClient) (*seqdv1.GetGroupResponse, error) {
		return c.GetGroup(ctx, r)
	})
}

func (m *Messages) SyncGroup(ctx context.Context, r *seqdv1.SyncGroupRequest) (*seqdv1.SyncGroupResponse, error) {
	key, err := groupKey(r.GroupId)
	if err != nil {
		return nil, err
	}
	return callShard(ctx, m, key, func(ctx context.Context, c seqdv1.MessagesClient) (*seqdv1.SyncGroupResponse, error) {
		return c.SyncGroup(ctx, r)
	})
}

func (m *Messages) GroupHistory(ctx context.Context, r *seqdv1.GroupHistoryRequest) (*seqdv1.GroupHistoryResponse, error) {
	key, err := groupKey(r.GroupId)
	if err != nil {
		return nil, err
	}
	return callShard(ctx, m, key, func(ctx context.Context, c seqdv1.MessagesClient) (*seqdv1.GroupHistoryResponse, error) {
		return c.GroupHistory(ctx, r)
	})
}

// maybeStale reports whether resp is a read a replica answered without
// its leader.
func maybeStale(resp any) bool {
	r, ok := resp.(interface{ GetMaybeStale() bool })
	return ok && r.GetMaybeStale()
}

// Subscribe opens a Subscribe stream at a replica of the user's shard. The
// stream ends when that replica goes away: reconnect with after_seq set to
// the last checkpoint received.
func (m *Messages) Subscribe(ctx context.Context, r *seqdv1.SubscribeRequest) (seqdv1.Messages_SubscribeClient, error) {
	key, err := userKey("user", r.User)
	if err != nil {
		return nil, err
	}
	sh, err := m.shardFor(key)
	if err != nil {
		return nil, err
	}
	// The known leader first, then every other replica once. Without a
	// known leader each stream starts at the next replica, so a client
	// reconnecting from a stream whose replica lost its leader
	// (maybe_stale) tries another one.
	first := int(m.streams.Add(1) % uint64(len(sh.Replicas)))
	var order []string
	if l := m.leader(sh); l != "" {
		order = append(order, l)
	}
	for i := range sh.Replicas {
		if a := sh.Replicas[(first+i)%len(sh.Replicas)].Addr; len(order) == 0 || a != order[0] {
			order = append(order, a)
		}
	}
	var last error
	for _, addr := range order {
		cc, err := m.c.pool.Get(addr)
		if err != nil {
			last = err
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		st, err := seqdv1.NewMessagesClient(cc).Subscribe(sctx, r)
		if err == nil {
			// The server sends its header once it has accepted the
			// stream, so a refusal or a dead replica shows here and the
			// next replica gets a turn; so does one that does not
			// answer in time (a paused process).
			timer := time.AfterFunc(subscribeAcceptWait, cancel)
			err = grpcconn.Accepted(st)
			if !timer.Stop() {
				err = status.Errorf(codes.Unavailable, "store replica %s did not accept the stream within %v", addr, subscribeAcceptWait)
			}
			if err == nil {
				return &cancelStream{st, cancel}, nil
			}
		}
		cancel()
		last = err
		if !rpcerr.Retryable(err) && status.Code(err) != codes.DeadlineExceeded {
			return nil, err
		}
		m.forget(sh.Id, addr)
	}
	return nil, fmt.Errorf("subscribe: no replica of shard %s answered: %w", sh.Id, last)
}

// subscribeAcceptWait bounds how long Subscribe waits for one replica to
// accept a stream before it tries the next (a var for tests).
var subscribeAcceptWait = 5 * time.Second

// cancelStream ends the stream's context once the stream is done with.
type cancelStream struct {
	seqdv1.Messages_SubscribeClient
	cancel context.CancelFunc
}

func (c *cancelStream) Recv() (*seqdv1.SubscribeResponse, error) {
	resp, err := c.Messages_SubscribeClient.Recv()
	if err != nil {
		c.cancel()
	}
	return resp, err
}

// withClient adds the front end's address for per-client rate limits.
func withClient(ctx context.Context, client string) context.Context {
	if client == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "seqd-client", client)
}
