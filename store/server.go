package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/forward"
	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/internal/rpcerr"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// ClientKey is the metadata key a gateway sets to the address of the
// client it serves, so rate limits apply per front end, not per gateway.
const ClientKey = "seqd-client"

type server struct {
	seqdv1.UnimplementedMessagesServer
	clusterv1.UnimplementedStoreNodeServer
	s *Shard
}

// RegisterServices adds Messages and StoreNode to g.
func (s *Shard) RegisterServices(g grpc.ServiceRegistrar) {
	srv := &server{s: s}
	seqdv1.RegisterMessagesServer(g, srv)
	clusterv1.RegisterStoreNodeServer(g, srv)
}

// Refusal is a halted replica's answer to a call of fullMethod on its
// services (Messages, StoreNode), or nil. The node asks it before every
// call: once halted, the replica's state is behind for good and Raft is
// stopped, so it answers nothing from either.
func (s *Shard) Refusal(fullMethod string) error {
	err := s.Halted()
	if err == nil || fullMethod == clusterv1.StoreNode_ReplicaInfo_FullMethodName {
		return nil // a halted replica still says which format it runs
	}
	for _, svc := range []string{seqdv1.Messages_ServiceDesc.ServiceName, clusterv1.StoreNode_ServiceDesc.ServiceName} {
		if strings.HasPrefix(fullMethod, "/"+svc+"/") {
			return haltedErr(err)
		}
	}
	return nil
}

// home checks that key's data lives on this shard.
func (s *Shard) home(key uint64, what string) error {
	t := s.table()
	if t == nil {
		return status.Error(codes.Unavailable, "store replica is starting; retry shortly")
	}
	sh := shardOf(t, key)
	if sh == nil || sh.Id != s.cfg.ShardID {
		owner := "no shard"
		if sh != nil {
			owner = "shard " + sh.Id
		}
		return rpcerr.WrongShard(t, "%s lives on %s, not shard %s (routing table version %d attached)", what, owner, s.cfg.ShardID, t.Version)
	}
	return nil
}

func clientKey(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(ClientKey); len(v) > 0 {
			return v[0]
		}
	}
	if p, ok := peer.FromContext(ctx); ok {
		return p.Addr.String()
	}
	return "unknown"
}

func (s *Shard) rateLimit(ctx context.Context) error {
	if forward.Was(ctx) || s.limit.allow(clientKey(ctx), time.Now()) {
		return nil
	}
	s.m.rateLimited.Inc()
	return status.Errorf(codes.ResourceExhausted, "rate limit: client %s sent more than %.0f requests per second; slow down and retry", clientKey(ctx), s.cfg.RateLimit)
}

// toLeader forwards a write to the shard leader when this replica is a
// follower. ok reports whether it did (and resp, err are its answer).
func toLeader[Resp any](ctx context.Context, s *Shard, call func(context.Context, *grpc.ClientConn) (Resp, error)) (resp Resp, err error, ok bool) {
	if s.IsLeader() {
		return resp, nil, false
	}
	if forward.Was(ctx) {
		return resp, rpcerr.NotLeader(s.leaderAddr()), true
	}
	cc, addr, cerr := s.leaderConn()
	if cerr != nil {
		return resp, rpcerr.NotLeader(s.leaderAddr()), true
	}
	resp, err = call(forward.Mark(ctx, s.cfg.ReplicaID), cc)
	forward.SetLeader(ctx, addr)
	return resp, err, true
}

// opErr turns a refused op into a status.
func (s *Shard) opErr(op string, r *OpResult) error {
	s.m.ops.WithLabelValues(op, r.Status.String()).Inc()
	switch r.Status {
	case clusterv1.OpStatus_OP_STATUS_OK, clusterv1.OpStatus_OP_STATUS_DUPLICATE:
		return nil
	case clusterv1.OpStatus_OP_STATUS_OUT_OF_ORDER:
		return status.Errorf(codes.Unavailable, "%s: the shard leader changed while ordering this write; retry", op)
	}
	if r.err != nil {
		return s.raftErr(r.err)
	}
	code := r.Code
	if code == codes.OK {
		code = codes.FailedPrecondition
	}
	return status.Errorf(code, "%s: %s", op, r.Msg)
}

func (s *Shard) header() *seqdv1.ResponseHeader {
	if t := s.table(); t != nil {
		return &seqdv1.ResponseHeader{RoutingVersion: t.Version}
	}
	return nil
}

func homeKeyOfSend(r *seqdv1.SendRequest) (uint64, string) {
	if r.Conversation.Type == seqdv1.ConversationType_CONVERSATION_TYPE_GROUP {
		return GroupKeyBit | r.Conversation.Id, "group " + itoa(r.Conversation.Id)
	}
	return r.Sender, "sender " + itoa(r.Sender)
}

func (r *server) Send(ctx context.Context, req *seqdv1.SendRequest) (*seqdv1.SendResponse, error) {
	s := r.s
	if err := s.cfg.Limits.ValidateSend(req); err != nil {
		return nil, err
	}
	if err := s.rateLimit(ctx); err != nil {
		return nil, err
	}
	key, what := homeKeyOfSend(req)
	if err := s.home(key, what); err != nil {
		return nil, err
	}
	if resp, err, ok := toLeader(ctx, s, func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.SendResponse, error) {
		return seqdv1.NewMessagesClient(cc).Send(ctx, req)
	}); ok {
		return resp, err
	}
	res, err := s.submit(ctx, &sendBuilder{req: req, ttl: s.cfg.DedupTTL, threshold: s.cfg.WriteFanoutThreshold})
	if err != nil {
		return nil, err
	}
	if err := s.opErr("send", res); err != nil {
		return nil, err
	}
	res.Send.Header = s.header()
	return res.Send, nil
}

func (r *server) MarkRead(ctx context.Context, req *seqdv1.MarkReadRequest) (*seqdv1.MarkReadResponse, error) {
	s := r.s
	if err := ValidateMarkRead(req); err != nil {
		return nil, err
	}
	if err := s.rateLimit(ctx); err != nil {
		return nil, err
	}
	if err := s.home(req.User, "user "+itoa(req.User)); err != nil {
		return nil, err
	}
	if resp, err, ok := toLeader(ctx, s, func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.MarkReadResponse, error) {
		return seqdv1.NewMessagesClient(cc).MarkRead(ctx, req)
	}); ok {
		return resp, err
	}
	b := &markReadBuilder{req: req}
	if g := req.Conversation.Id; req.Conversation.Type == seqdv1.ConversationType_CONVERSATION_TYPE_GROUP && !s.isLocal(GroupKeyBit|g) {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := s.timelineCount(tctx, g, req.UpToSeq, req.User)
		cancel()
		if err != nil {
			return nil, err
		}
		b.remote = resp
	}
	res, err := s.submit(ctx, b)
	if err != nil {
		return nil, err
	}
	if err := s.opErr("mark_read", res); err != nil {
		return nil, err
	}
	return res.MarkRead, nil
}

func (r *server) Recall(ctx context.Context, req *seqdv1.RecallRequest) (*seqdv1.RecallResponse, error) {
	s := r.s
	if err := ValidateMessageRef("sender", req.Sender, req.MessageId); err != nil {
		return nil, err
	}
	if err := s.rateLimit(ctx); err != nil {
		return nil, err
	}
	origin, _, _ := ParseMessageID(req.MessageId)
	if err := s.home(origin, "message "+req.MessageId); err != nil {
		return nil, err
	}
	if resp, err, ok := toLeader(ctx, s, func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.RecallResponse, error) {
		return seqdv1.NewMessagesClient(cc).Recall(ctx, req)
	}); ok {
		return resp, err
	}
	res, err := s.submit(ctx, &recallBuilder{req: req, window: s.cfg.RecallWindow})
	if err != nil {
		return nil, err
	}
	if err := s.opErr("recall", res); err != nil {
		return nil, err
	}
	return &seqdv1.RecallResponse{RecalledCopies: res.Recalled}, nil
}

func (r *server) Delete(ctx context.Context, req *seqdv1.DeleteRequest) (*seqdv1.DeleteResponse, error) {
	s := r.s
	if err := ValidateMessageRef("user", req.User, req.MessageId); err != nil {
		return nil, err
	}
	if err := s.rateLimit(ctx); err != nil {
		return nil, err
	}
	if err := s.home(req.User, "user "+itoa(req.User)); err != nil {
		return nil, err
	}
	if resp, err, ok := toLeader(ctx, s, func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.DeleteResponse, error) {
		return seqdv1.NewMessagesClient(cc).Delete(ctx, req)
	}); ok {
		return resp, err
	}
	res, err := s.submit(ctx, &deleteBuilder{req: req})
	if err != nil {
		return nil, err
	}
	if err := s.opErr("delete", res); err != nil {
		return nil, err
	}
	return &seqdv1.DeleteResponse{Seq: res.DeleteSeq}, nil
}

// groupWrite runs a group op at the group's shard leader.
func groupWrite[Req any](ctx context.Context, s *Shard, name string, group uint64, req Req,
	fwd func(context.Context, seqdv1.MessagesClient, Req) (*seqdv1.GroupInfo, error), b builder) (*seqdv1.GroupInfo, error) {
	if err := s.rateLimit(ctx); err != nil {
		return nil, err
	}
	if err := s.home(GroupKeyBit|group, "group "+itoa(group)); err != nil {
		return nil, err
	}
	if info, err, ok := toLeader(ctx, s, func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.GroupInfo, error) {
		return fwd(ctx, seqdv1.NewMessagesClient(cc), req)
	}); ok {
		return info, err
	}
	res, err := s.submit(ctx, b)
	if err != nil {
		return nil, err
	}
	if err := s.opErr(name, res); err != nil {
		return nil, err
	}
	return res.Group, nil
}

func (r *server) CreateGroup(ctx context.Context, req *seqdv1.CreateGroupRequest) (*seqdv1.CreateGroupResponse, error) {
	s := r.s
	if err := checkUser("owner", req.Owner); err != nil {
		return nil, err
	}
	if err := s.cfg.Limits.ValidateGroupMembers(req.GroupId, req.Members, false); err != nil {
		return nil, err
	}
	op := &createGroupBuilder{op: &clusterv1.CreateGroupOp{Request: req, ReadFanoutThreshold: uint32(s.cfg.WriteFanoutThreshold)}}
	info, err := groupWrite(ctx, s, "create_group", req.GroupId, req, func(ctx context.Context, c seqdv1.MessagesClient, req *seqdv1.CreateGroupRequest) (*seqdv1.GroupInfo, error) {
		resp, err := c.CreateGroup(ctx, req)
		return resp.GetGroup(), err
	}, op)
	if err != nil {
		return nil, err
	}
	return &seqdv1.CreateGroupResponse{Group: info}, nil
}

func (r *server) AddMembers(ctx context.Context, req *seqdv1.AddMembersRequest) (*seqdv1.AddMembersResponse, error) {
	s := r.s
	if err := s.cfg.Limits.ValidateGroupMembers(req.GroupId, req.Members, true); err != nil {
		return nil, err
	}
	op := &membersBuilder{op: &clusterv1.MembersOp{GroupId: req.GroupId, Members: req.Members,
		WithHistory: req.WithHistory, UnreadFromJoin: true, ReadFanoutThreshold: uint32(s.cfg.WriteFanoutThreshold)}}
	info, err := groupWrite(ctx, s, "add_members", req.GroupId, req, func(ctx context.Context, c seqdv1.MessagesClient, req *seqdv1.AddMembersRequest) (*seqdv1.GroupInfo, error) {
		resp, err := c.AddMembers(ctx, req)
		return resp.GetGroup(), err
	}, op)
	if err != nil {
		return nil, err
	}
	return &seqdv1.AddMembersResponse{Group: info}, nil
}

func (r *server) RemoveMembers(ctx context.Context, req *seqdv1.RemoveMembersRequest) (*seqdv1.RemoveMembersResponse, error) {
	s := r.s
	if err := s.cfg.Limits.ValidateGroupMembers(req.GroupId, req.Members, true); err != nil {
		return nil, err
	}
	op := &plainBuilder{op: &clusterv1.StoreOp{Op: &clusterv1.StoreOp_RemoveMembers{RemoveMembers: &clusterv1.MembersOp{GroupId: req.GroupId, Members: req.Members}}}}
	info, err := groupWrite(ctx, s, "remove_members", req.GroupId, req, func(ctx context.Context, c seqdv1.MessagesClient, req *seqdv1.RemoveMembersRequest) (*seqdv1.GroupInfo, error) {
		resp, err := c.RemoveMembers(ctx, req)
		return resp.GetGroup(), err
	}, op)
	if err != nil {
		return nil, err
	}
	return &seqdv1.RemoveMembersResponse{Group: info}, nil
}

// Reads go to the shard leader, which answers once a read index
// (readIndex) confirms that it still leads and has applied every entry
// committed before the read began: its answer holds every write
// acknowledged before, by it or by an earlier leader (read-your-writes,
// through leader changes). If no leader can be reached, a replica answers
// from its own applied state and says so (maybe_stale): a lagging replica
// returns an older prefix of the inbox, never a gappy one.

// readAt says where a read is answered.
type readAt int

const (
	// atLeader: the leader answered it (resp, err).
	atLeader readAt = iota
	// here, current: this replica leads, and a read index confirmed it.
	hereCurrent
	// here, from this replica's own applied state, which may lag: no
	// leader could be reached (or a follower forwarded the read here).
	hereLagging
)

// fromLeader runs a read's read index if this replica leads, and forwards
// it to the leader if it follows. If the read is to be answered here, it
// says whether the answer is current.
func fromLeader[Resp any](ctx context.Context, s *Shard, call func(context.Context, *grpc.ClientConn) (Resp, error)) (resp Resp, err error, at readAt) {
	if s.IsLeader() {
		err := s.readIndex(ctx)
		if err == nil {
			return resp, nil, hereCurrent
		}
		if forward.Was(ctx) || s.IsLeader() {
			// LEADER_NOT_READY: the client (or the follower that
			// forwarded the read) retries here.
			return resp, err, atLeader
		}
		// Deposed meanwhile: on as a follower, which answers from its
		// own state (maybe_stale) if it cannot reach the new leader.
	}
	if forward.Was(ctx) {
		return lagging[Resp](s)
	}
	cc, addr, cerr := s.leaderConn()
	if cerr != nil {
		return lagging[Resp](s)
	}
	fctx, cancel := context.WithTimeout(ctx, forwardBudget(ctx))
	defer cancel()
	resp, err = call(forward.Mark(fctx, s.cfg.ReplicaID), cc)
	if rpcerr.IsLeaderNotReady(err) {
		// The leader is there and will answer shortly: not a reason to
		// answer from this replica's state.
		return resp, err, atLeader
	}
	if c := status.Code(err); c == codes.Unavailable || c == codes.DeadlineExceeded && ctx.Err() == nil {
		return lagging[Resp](s)
	}
	forward.SetLeader(ctx, addr)
	return resp, err, atLeader
}

// lagging answers a read from this replica's own state, which may be
// behind (maybe_stale), unless it is not a voter of the shard: a
// replacement not yet added holds nothing, and a removed replica nothing
// current.
func lagging[Resp any](s *Shard) (resp Resp, err error, at readAt) {
	if !s.isVoter() {
		return resp, s.notVoter(), atLeader
	}
	return resp, nil, hereLagging
}

// notVoter is the error of a replica that is not a voter of its shard.
func (s *Shard) notVoter() error {
	return status.Errorf(codes.Unavailable, "store replica %s is not a voter of shard %s (not added yet, or removed: seqctl replicas add/remove); retry at another replica",
		s.cfg.ReplicaID, s.cfg.ShardID)
}

// forwardBudget is how long a follower waits for its leader to answer a
// read it forwarded: forwardReadTimeout, or three quarters of the time
// the caller has left if that is less, so that a leader that does not
// answer (paused) leaves the follower time to answer from its own state
// (maybe_stale) rather than the caller's deadline passing first.
func forwardBudget(ctx context.Context) time.Duration {
	d, ok := ctx.Deadline()
	if !ok {
		return forwardReadTimeout
	}
	return min(forwardReadTimeout, time.Until(d)*3/4)
}

// forwardReadTimeout bounds a read a follower forwards to its leader: a
// read index there may wait for the round under way, then its own.
const forwardReadTimeout = 2*readIndexWait + time.Second

// checkAfterAtLeader is checkAfter on a follower whose inbox ends below
// the checkpoint: it may only lag, so it asks the leader (a one-event
// Sync), which refuses a checkpoint from the future. Without an answer
// (no leader, or it is unreachable) the stream starts, and waits.
func (s *Shard) checkAfterAtLeader(ctx context.Context, user, after uint64) error {
	if after == 0 || s.IsLeader() {
		return nil
	}
	if last, err := s.fsm.LastSeq(user); err != nil || after <= last {
		return nil
	}
	_, err, at := fromLeader(ctx, s, func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.SyncResponse, error) {
		return seqdv1.NewMessagesClient(cc).Sync(ctx, &seqdv1.SyncRequest{User: user, AfterSeq: after, Limit: 1})
	})
	if at == atLeader && status.Code(err) == codes.InvalidArgument {
		return err
	}
	return nil
}

// checkAfter refuses a checkpoint from the future of user's inbox.
func (s *Shard) checkAfter(ctx context.Context, user, after uint64) error {
	return s.checkFuture(ctx, after, func() (uint64, error) { return s.fsm.LastSeq(user) }, func(last uint64) error {
		return invalid("after_seq %d is beyond the newest event %d in user %d's inbox; a device's checkpoint only comes from events it received", after, last, user)
	})
}

// checkAfterGseq refuses a checkpoint from the future of group g's
// timeline.
func (s *Shard) checkAfterGseq(ctx context.Context, g, after uint64) error {
	return s.checkFuture(ctx, after, func() (uint64, error) {
		resp, err := s.fsm.TimelineCount(g, ^uint64(0), 0)
		if err != nil {
			return 0, groupErr(err)
		}
		return resp.LastGseq, nil
	}, func(last uint64) error {
		return invalid("after_gseq %d is beyond the newest entry %d of group %d's timeline; a device's checkpoint only comes from entries it received", after, last, g)
	})
}

// checkFuture refuses a checkpoint (after) beyond the newest seq (newest)
// with refuse. Only the leader can tell: a follower may simply not have
// applied that far yet. Nor may a leader's FSM, just after an election or
// while applying lags the commit, so before refusing it takes a read
// index: everything committed before then has been applied here. (A read
// that took one already meets no lag, and the second is quick.)
func (s *Shard) checkFuture(ctx context.Context, after uint64, newest func() (uint64, error), refuse func(last uint64) error) error {
	if after == 0 || !s.IsLeader() {
		return nil
	}
	last, err := newest()
	if err != nil {
		return s.raftErr(err)
	}
	if after <= last {
		return nil
	}
	if err := s.readIndex(ctx); err != nil {
		return err
	}
	if last, err = newest(); err != nil {
		return s.raftErr(err)
	}
	if after > last {
		return refuse(last)
	}
	return nil
}

func (r *server) Sync(ctx context.Context, req *seqdv1.SyncRequest) (*seqdv1.SyncResponse, error) {
	s := r.s
	if err := checkUser("user", req.User); err != nil {
		return nil, err
	}
	limit, err := s.cfg.Limits.page("limit", req.Limit, 100)
	if err != nil {
		return nil, err
	}
	if err := s.home(req.User, "user "+itoa(req.User)); err != nil {
		return nil, err
	}
	fwd, err, at := fromLeader(ctx, s, func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.SyncResponse, error) {
		return seqdv1.NewMessagesClient(cc).Sync(ctx, req)
	})
	if at == atLeader {
		return fwd, err
	}
	if err := s.checkAfter(ctx, req.User, req.AfterSeq); err != nil {
		return nil, err
	}
	res, err := s.fsm.Sync(req.User, req.AfterSeq, limit)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &seqdv1.SyncResponse{Events: res.Events, NextCheckpoint: res.NextCheckpoint, HasMore: res.HasMore,
		HistoryTruncated: res.Truncated, EarliestSeq: res.EarliestSeq, Header: s.header(), MaybeStale: at == hereLagging}, nil
}

func (r *server) Subscribe(req *seqdv1.SubscribeRequest, stream seqdv1.Messages_SubscribeServer) error {
	s := r.s
	if err := checkUser("user", req.User); err != nil {
		return err
	}
	if err := s.home(req.User, "user "+itoa(req.User)); err != nil {
		return err
	}
	hb := time.Duration(req.HeartbeatMs) * time.Millisecond
	switch {
	case req.HeartbeatMs == 0:
		hb = 10 * time.Second
	case hb < minHeartbeat:
		return invalid("heartbeat_ms %d is below the minimum %d", req.HeartbeatMs, minHeartbeat.Milliseconds())
	case hb > maxHeartbeat:
		// A stream quiet for longer is cut by proxies and load balancers
		// with idle timeouts, and the client cannot tell it from a dead one.
		return invalid("heartbeat_ms %d is above the maximum %d", req.HeartbeatMs, maxHeartbeat.Milliseconds())
	}
	if !s.IsLeader() && !s.isVoter() {
		// A replacement not added yet would stream an empty backlog.
		return s.notVoter()
	}
	if err := s.checkAfter(stream.Context(), req.User, req.AfterSeq); err != nil {
		return err
	}
	if err := s.checkAfterAtLeader(stream.Context(), req.User, req.AfterSeq); err != nil {
		return err
	}
	// Subscribe before reading the backlog, so nothing applied in between
	// goes unnoticed.
	wake := s.subs.subscribe(req.User)
	defer s.subs.unsubscribe(req.User, wake)
	// The header tells the client the stream is accepted (router.Client
	// waits for it before it gives up on this replica).
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	s.m.subscribers.Inc()
	defer s.m.subscribers.Dec()
	cp := req.AfterSeq
	push := func() error {
		for {
			res, err := s.fsm.Sync(req.User, cp, 500)
			if err != nil {
				return status.Error(codes.Internal, err.Error())
			}
			if len(res.Events) == 0 && !res.Truncated {
				return nil
			}
			if err := grpcconn.SendWithin(stream, &seqdv1.SubscribeResponse{Events: res.Events, Checkpoint: res.NextCheckpoint,
				HistoryTruncated: res.Truncated, EarliestSeq: res.EarliestSeq, MaybeStale: !s.inLeaderContact()}); err != nil {
				return err
			}
			cp = res.NextCheckpoint
			if !res.HasMore {
				return nil
			}
		}
	}
	if err := push(); err != nil {
		return err
	}
	t := time.NewTicker(hb)
	defer t.Stop()
	for {
		select {
		case _, ok := <-wake:
			if !ok {
				return status.Error(codes.Unavailable, "store replica is shutting down; reconnect from your checkpoint")
			}
			if err := push(); err != nil {
				return err
			}
		case <-t.C:
			if err := grpcconn.SendWithin(stream, &seqdv1.SubscribeResponse{Heartbeat: true, Checkpoint: cp, MaybeStale: !s.inLeaderContact()}); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// The bounds of SubscribeRequest.heartbeat_ms.
const (
	minHeartbeat = 100 * time.Millisecond
	maxHeartbeat = 5 * time.Minute
)

func (r *server) Unread(ctx context.Context, req *seqdv1.UnreadRequest) (*seqdv1.UnreadResponse, error) {
	s := r.s
	if err := checkUser("user", req.User); err != nil {
		return nil, err
	}
	if req.After != nil {
		if err := checkConversation("after", req.After); err != nil {
			return nil, err
		}
	}
	limit, err := s.cfg.Limits.page("limit", req.Limit, 0)
	if err != nil {
		return nil, err
	}
	if err := s.home(req.User, "user "+itoa(req.User)); err != nil {
		return nil, err
	}
	fwd, err, at := fromLeader(ctx, s, func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.UnreadResponse, error) {
		return seqdv1.NewMessagesClient(cc).Unread(ctx, req)
	})
	if at == atLeader {
		return fwd, err
	}
	resp, err := s.fsm.Unread(req.User, req.After, limit)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	resp.MaybeStale = at == hereLagging
	return resp, nil
}

func (r *server) History(ctx context.Context, req *seqdv1.HistoryRequest) (*seqdv1.HistoryResponse, error) {
	s := r.s
	if err := checkUser("user", req.User); err != nil {
		return nil, err
	}
	if err := checkConversation("conversation", req.Conversation); err != nil {
		return nil, err
	}
	limit, err := s.cfg.Limits.page("limit", req.Limit, 50)
	if err != nil {
		return nil, err
	}
	if err := s.home(req.User, "user "+itoa(req.User)); err != nil {
		return nil, err
	}
	fwd, err, at := fromLeader(ctx, s, func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.HistoryResponse, error) {
		return seqdv1.NewMessagesClient(cc).History(ctx, req)
	})
	if at == atLeader {
		return fwd, err
	}
	events, next, err := s.fsm.History(req.User, req.Conversation, req.BeforeSeq, limit)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &seqdv1.HistoryResponse{Events: events, NextBeforeSeq: next, MaybeStale: at == hereLagging}, nil
}

func (r *server) GetGroup(ctx context.Context, req *seqdv1.GetGroupRequest) (*seqdv1.GetGroupResponse, error) {
	s := r.s
	if err := checkGroupID("group_id", req.GroupId); err != nil {
		return nil, err
	}
	if err := s.home(GroupKeyBit|req.GroupId, "group "+itoa(req.GroupId)); err != nil {
		return nil, err
	}
	fwd, err, at := fromLeader(ctx, s, func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.GetGroupResponse, error) {
		return seqdv1.NewMessagesClient(cc).GetGroup(ctx, req)
	})
	if at == atLeader {
		return fwd, err
	}
	rec, err := s.fsm.Group(req.GroupId)
	if err != nil {
		return nil, readGroupErr(err, at, req.GroupId)
	}
	return &seqdv1.GetGroupResponse{Group: rec.Info, MaybeStale: at == hereLagging}, nil
}

// readGroupErr is groupErr for a read answered at this replica. One that
// answers without its leader (maybe_stale) may not have applied a group's
// creation or a member's join yet, and NOT_FOUND or PERMISSION_DENIED is
// final to a client: it answers UNAVAILABLE (retry) instead, as
// TimelineCount does. A group's fanout is fixed at creation, so a write
// fanout refusal holds anywhere.
func readGroupErr(err error, at readAt, group uint64) error {
	if at == hereLagging && (errors.Is(err, ErrNotFound) || errors.Is(err, ErrNotMember)) {
		return status.Errorf(codes.Unavailable, "group %d's shard has no leader to confirm this replica's answer (%v); retry", group, err)
	}
	return groupErr(err)
}

func (r *server) SyncGroup(ctx context.Context, req *seqdv1.SyncGroupRequest) (*seqdv1.SyncGroupResponse, error) {
	s := r.s
	if err := checkUser("user", req.User); err != nil {
		return nil, err
	}
	if err := checkGroupID("group_id", req.GroupId); err != nil {
		return nil, err
	}
	limit, err := s.cfg.Limits.page("limit", req.Limit, 100)
	if err != nil {
		return nil, err
	}
	if err := s.home(GroupKeyBit|req.GroupId, "group "+itoa(req.GroupId)); err != nil {
		return nil, err
	}
	fwd, err, at := fromLeader(ctx, s, func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.SyncGroupResponse, error) {
		return seqdv1.NewMessagesClient(cc).SyncGroup(ctx, req)
	})
	if at == atLeader {
		return fwd, err
	}
	res, err := s.fsm.SyncGroup(req.User, req.GroupId, req.AfterGseq, limit)
	if err != nil {
		return nil, readGroupErr(err, at, req.GroupId)
	}
	if len(res.Events) == 0 {
		// Nothing after the checkpoint: it may be from the future.
		if err := s.checkAfterGseq(ctx, req.GroupId, req.AfterGseq); err != nil {
			return nil, err
		}
	}
	return &seqdv1.SyncGroupResponse{Events: res.Events, NextCheckpoint: res.NextCheckpoint, HasMore: res.HasMore,
		HistoryTruncated: res.Truncated, EarliestGseq: res.EarliestSeq, MaybeStale: at == hereLagging}, nil
}

func (r *server) GroupHistory(ctx context.Context, req *seqdv1.GroupHistoryRequest) (*seqdv1.GroupHistoryResponse, error) {
	s := r.s
	if err := checkUser("user", req.User); err != nil {
		return nil, err
	}
	if err := checkGroupID("group_id", req.GroupId); err != nil {
		return nil, err
	}
	limit, err := s.cfg.Limits.page("limit", req.Limit, 50)
	if err != nil {
		return nil, err
	}
	if err := s.home(GroupKeyBit|req.GroupId, "group "+itoa(req.GroupId)); err != nil {
		return nil, err
	}
	fwd, err, at := fromLeader(ctx, s, func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.GroupHistoryResponse, error) {
		return seqdv1.NewMessagesClient(cc).GroupHistory(ctx, req)
	})
	if at == atLeader {
		return fwd, err
	}
	events, next, err := s.fsm.GroupHistory(req.User, req.GroupId, req.BeforeGseq, limit)
	if err != nil {
		return nil, readGroupErr(err, at, req.GroupId)
	}
	return &seqdv1.GroupHistoryResponse{Events: events, NextBeforeGseq: next, MaybeStale: at == hereLagging}, nil
}

// StoreNode.

func (r *server) Deliver(ctx context.Context, req *clusterv1.DeliverRequest) (*clusterv1.DeliverResponse, error) {
	s := r.s
	if len(req.Items) == 0 {
		return &clusterv1.DeliverResponse{}, nil
	}
	for i, it := range req.Items {
		if it.Event == nil || it.Event.MessageId == "" || eventKind(it.Kind) == seqdv1.EventKind_EVENT_KIND_UNSPECIFIED {
			return nil, invalid("items[%d] is malformed", i)
		}
		if len(it.Event.MessageId) > maxMessageIDLen {
			return nil, invalid("items[%d].event.message_id is %d bytes; the limit is %d", i, len(it.Event.MessageId), maxMessageIDLen)
		}
		if err := checkUser(fmt.Sprintf("items[%d].user", i), it.User); err != nil {
			return nil, err
		}
		if err := s.home(it.User, "user "+itoa(it.User)); err != nil {
			return nil, err
		}
	}
	if resp, err, ok := toLeader(ctx, s, func(ctx context.Context, cc *grpc.ClientConn) (*clusterv1.DeliverResponse, error) {
		return clusterv1.NewStoreNodeClient(cc).Deliver(ctx, req)
	}); ok {
		return resp, err
	}
	b, err := s.newDeliverBuilder(req.Items)
	if err != nil {
		return nil, err
	}
	res, err := s.submit(ctx, b)
	if err != nil {
		return nil, err
	}
	if err := s.opErr("deliver", res); err != nil {
		return nil, err
	}
	return &clusterv1.DeliverResponse{Delivered: res.Delivered}, nil
}

func (r *server) ReadChangeLog(ctx context.Context, req *clusterv1.ReadChangeLogRequest) (*clusterv1.ReadChangeLogResponse, error) {
	limit := int(req.Limit)
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	entries, first, err := r.s.fsm.ChangeLog(req.AfterIndex, limit)
	var trimmed *LogTrimmedError
	if errors.As(err, &trimmed) {
		return nil, status.Error(codes.OutOfRange, err.Error())
	}
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &clusterv1.ReadChangeLogResponse{Entries: entries, LastIndex: r.s.fsm.AppliedIndex(), FirstIndex: first}, nil
}

func (r *server) ReplicaInfo(ctx context.Context, req *clusterv1.ReplicaInfoRequest) (*clusterv1.ReplicaInfoResponse, error) {
	resp := &clusterv1.ReplicaInfoResponse{ShardId: r.s.cfg.ShardID, ReplicaId: r.s.cfg.ReplicaID, StoreFormat: r.s.fsm.format,
		AppliedIndex: r.s.fsm.AppliedIndex(), RaftAddr: string(r.s.node.Transport.LocalAddr())}
	if vs, err := r.s.voters(); err == nil {
		resp.Voters = vs
		resp.Voter = hasVoter(vs, r.s.cfg.ReplicaID)
	}
	if err := r.s.Halted(); err != nil {
		resp.Halted = err.Error()
	} else {
		resp.Leader = r.s.IsLeader()
	}
	if err := r.s.RaftLogErr(); err != nil {
		resp.LogWriteError = err.Error()
	}
	return resp, nil
}

func (r *server) TimelineCount(ctx context.Context, req *clusterv1.TimelineCountRequest) (*clusterv1.TimelineCountResponse, error) {
	if err := checkGroupID("group_id", req.GroupId); err != nil {
		return nil, err
	}
	if err := checkUser("user", req.User); err != nil {
		return nil, err
	}
	if err := r.s.home(GroupKeyBit|req.GroupId, "group "+itoa(req.GroupId)); err != nil {
		return nil, err
	}
	// The leader's state holds every acknowledged membership change; a
	// lagging follower would call a member just added a stranger.
	resp, err, at := fromLeader(ctx, r.s, func(ctx context.Context, cc *grpc.ClientConn) (*clusterv1.TimelineCountResponse, error) {
		return clusterv1.NewStoreNodeClient(cc).TimelineCount(ctx, req)
	})
	if at == atLeader {
		return resp, err
	}
	resp, err = r.s.timelineCount(ctx, req.GroupId, req.UpToGseq, req.User)
	if at == hereLagging && (err != nil || refuses(req, resp)) {
		// The asking shard would refuse the read marker for good on this
		// answer (or error: no such group), and this replica's state may
		// lack the group or the group seq the member was hinted (a leader
		// deposed while paused or cut off, seqjepsen messages-retention
		// seed 11, or a lagging follower): only a current leader refuses.
		return nil, status.Errorf(codes.Unavailable, "group %d's shard has no leader to confirm this answer; retry", req.GroupId)
	}
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// refuses says whether the member's shard refuses a read marker on
// resp: a read-fanout group's seq beyond its newest, or a user who is not
// a member (markReadBuilder.plan).
func refuses(req *clusterv1.TimelineCountRequest, resp *clusterv1.TimelineCountResponse) bool {
	return resp.ReadFanout && (req.UpToGseq > resp.LastGseq || !resp.Member)
}
