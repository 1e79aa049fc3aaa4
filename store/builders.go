package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/seqd/seqd/internal/bugs"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// sendBuilder plans a Send: which inboxes here get a copy (one seq each),
// which users on other shards get it through the outbox.
type sendBuilder struct {
	req        *seqdv1.SendRequest
	ttl        time.Duration
	threshold  int
	group      bool
	readFanout bool
	local      []uint64 // users appended here, in seq order
	remote     []uint64
	remoteSelf bool
}

// estBytes: a copy of the event per inbox append and per outbox item,
// plus the message record, the dedup record and the change log's copy of
// the request.
func (b *sendBuilder) estBytes(appends int) int {
	return (appends + len(b.remote) + 3) * (proto.Size(b.req) + 128)
}

func (b *sendBuilder) opKind() protoreflect.FieldNumber { return kindSend }

func (b *sendBuilder) plan(s *Shard) ([]uint64, error) {
	r := b.req
	if resp, err := s.fsm.Dedup(r.Sender, r.ClientMsgId, s.now().UnixMilli()); err == nil && resp != nil && !bugs.Enabled(bugs.SkipClientMsgIDDedup) {
		// A failed read lets the send through, as a failed Dedup does: the
		// FSM checks again.
		if f, err := s.fsm.Reused(r, resp); err == nil && f != "" {
			return nil, status.Error(codes.InvalidArgument, reusedID(r, resp.MessageId, f))
		}
		s.m.duplicates.Inc()
		return nil, &answered{&OpResult{Status: clusterv1.OpStatus_OP_STATUS_DUPLICATE, Send: resp}}
	}
	b.local, b.remote, b.remoteSelf = nil, nil, false
	if r.Conversation.Type == seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT {
		b.local = append(b.local, r.Sender)
		for _, u := range r.Recipients {
			if s.isLocal(u) {
				b.local = append(b.local, u)
			} else {
				b.remote = append(b.remote, u)
			}
		}
		return b.local, nil
	}
	gid := r.Conversation.Id
	rec, err := s.groupMembers(gid)
	if err != nil {
		return nil, groupErr(err)
	}
	if _, ok := isMember(rec.Info, r.Sender); !ok {
		return nil, status.Errorf(codes.PermissionDenied, "user %d is not a member of group %d", r.Sender, gid)
	}
	b.group, b.readFanout = true, rec.Info.ReadFanout
	keys := []uint64{GroupKeyBit | gid}
	if b.readFanout {
		if s.isLocal(r.Sender) {
			b.local = []uint64{r.Sender}
		} else {
			b.remoteSelf = true
		}
		return append(keys, b.local...), nil
	}
	for _, m := range rec.Info.Members {
		if s.isLocal(m.User) {
			b.local = append(b.local, m.User)
		} else {
			b.remote = append(b.remote, m.User)
		}
	}
	return append(keys, b.local...), nil
}

func (b *sendBuilder) build(seqs []uint64) *clusterv1.StoreOp {
	op := &clusterv1.SendOp{Request: b.req, Remote: b.remote, RemoteSender: b.remoteSelf, DedupTtlMs: uint64(b.ttl.Milliseconds())}
	if b.group {
		gseq := seqs[0]
		seqs = seqs[1:]
		op.MessageId = GroupMessageID(b.req.Conversation.Id, gseq)
		if b.readFanout {
			op.GroupSeq = gseq
		}
	} else {
		op.MessageId = DirectMessageID(b.req.Sender, seqs[0])
	}
	for i, u := range b.local {
		op.Appends = append(op.Appends, &clusterv1.Append{User: u, Seq: seqs[i]})
	}
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Send{Send: op}}
}

func groupErr(err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrNotMember):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrWriteFanout):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// deliverBuilder applies items another shard queued for users here.
type deliverBuilder struct {
	items []*clusterv1.FanoutItem
	// withExpired: a hint item carries a group_expired_count and every
	// replica applies formatHintExpired (newDeliverBuilder).
	withExpired bool
}

// newDeliverBuilder delivers items here, with hints' expired counts taken
// into the members' states once every replica can (while a replica runs
// an older format the hints are written, and the counts only shown to
// devices). While the replicas' formats are being asked it fails
// (UNAVAILABLE; the sender retries) rather than let a count go unused.
func (s *Shard) newDeliverBuilder(items []*clusterv1.FanoutItem) (*deliverBuilder, error) {
	b := &deliverBuilder{items: items}
	for _, it := range items {
		if it.Kind == clusterv1.FanoutItem_KIND_GROUP_HINT && it.Event.GetGroupExpiredCount() > 0 {
			err := s.formatReady(formatHintExpired)
			if status.Code(err) == codes.Unavailable {
				return nil, err
			}
			b.withExpired = err == nil
			break
		}
	}
	return b, nil
}

func (b *deliverBuilder) opKind() protoreflect.FieldNumber { return kindDeliver }

func (b *deliverBuilder) plan(s *Shard) ([]uint64, error) {
	var keys []uint64
	for _, it := range b.items {
		if !s.isLocal(it.User) {
			return nil, status.Errorf(codes.FailedPrecondition, "user %d does not live on shard %s", it.User, s.cfg.ShardID)
		}
		if it.Kind != clusterv1.FanoutItem_KIND_GROUP_JOIN { // a join appends no event
			keys = append(keys, it.User)
		}
	}
	return keys, nil
}

// estBytes: each item's event is written once, plus the change log's copy.
func (b *deliverBuilder) estBytes(int) int {
	n := 0
	for _, it := range b.items {
		n += 2*proto.Size(it) + 128
	}
	return n
}

func (b *deliverBuilder) build(seqs []uint64) *clusterv1.StoreOp {
	all := make([]uint64, len(b.items))
	for i, it := range b.items {
		if it.Kind != clusterv1.FanoutItem_KIND_GROUP_JOIN {
			all[i], seqs = seqs[0], seqs[1:]
		}
	}
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Deliver{Deliver: &clusterv1.DeliverOp{Items: b.items, Seqs: all, WithExpired: b.withExpired}}}
}

// createGroupBuilder creates a group of at most MaxGroupSize members. A
// retry of a create that made a group is the FSM's to answer, whatever the
// limit is now.
type createGroupBuilder struct{ op *clusterv1.CreateGroupOp }

func (b *createGroupBuilder) plan(s *Shard) ([]uint64, error) {
	req := b.op.Request
	if 1+len(req.Members) <= s.cfg.MaxGroupSize {
		return nil, nil // under the limit even before duplicates are dropped
	}
	n := len(slices.Compact(slices.Sorted(slices.Values(append([]uint64{req.Owner}, req.Members...)))))
	if n <= s.cfg.MaxGroupSize {
		return nil, nil
	}
	if _, err := s.groupMembers(req.GroupId); err == nil {
		return nil, nil
	} else if !errors.Is(err, ErrNotFound) {
		return nil, groupErr(err)
	}
	return nil, status.Errorf(codes.InvalidArgument, "members: the group would have %d members with its owner; a group holds at most %d (--max-group-size)", n, s.cfg.MaxGroupSize)
}

func (b *createGroupBuilder) build([]uint64) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_CreateGroup{CreateGroup: b.op}}
}

// membersBuilder adds members, noting which live on other shards.
type membersBuilder struct{ op *clusterv1.MembersOp }

func (b *membersBuilder) plan(s *Shard) ([]uint64, error) {
	rec, err := s.groupMembers(b.op.GroupId)
	if err != nil {
		return nil, groupErr(err)
	}
	if b.op.WithHistory && !rec.Info.ReadFanout {
		// A group's fanout is fixed when it is created, so this holds
		// when the add applies too.
		return nil, status.Errorf(codes.FailedPrecondition, "group %d uses write fanout: its past messages are only in the inboxes of the members who got them, so with_history cannot show them to new members (it needs a read-fanout group's timeline); add the members without it", b.op.GroupId)
	}
	have := make(map[uint64]bool, len(rec.Info.Members))
	for _, m := range rec.Info.Members {
		have[m.User] = true
	}
	n := len(have)
	for _, u := range b.op.Members {
		if !have[u] {
			have[u] = true
			n++
		}
	}
	if n > s.cfg.MaxGroupSize {
		return nil, status.Error(codes.FailedPrecondition, groupTooLarge(b.op.GroupId, len(rec.Info.Members), n, s.cfg.MaxGroupSize))
	}
	// Other adds to the group may be planned before this one applies,
	// each checked against the same members: from store format 9 every
	// replica checks the limit again as it applies the add. While the
	// leader is still asking its replicas' formats the add waits (retry),
	// rather than go out unchecked; a shard with an older replica adds
	// without the check, as that build did.
	b.op.MaxGroupSize = 0
	switch err := s.formatReady(formatGroupSizeLimit); status.Code(err) {
	case codes.OK:
		b.op.MaxGroupSize = uint32(min(s.cfg.MaxGroupSize, math.MaxUint32))
	case codes.Unavailable:
		return nil, err
	}
	b.op.Remote = b.op.Remote[:0]
	for _, u := range b.op.Members {
		if !s.isLocal(u) {
			b.op.Remote = append(b.op.Remote, u)
		}
	}
	return nil, nil
}

// groupTooLarge says why an add of members is refused: the group has
// have members and would have n, over its limit of max.
func groupTooLarge(g uint64, have, n, max int) string {
	return fmt.Sprintf("group %d has %d members and would have %d; a group holds at most %d (--max-group-size)", g, have, n, max)
}

func (b *membersBuilder) build([]uint64) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_AddMembers{AddMembers: b.op}}
}

// markReadBuilder appends a read marker.
type markReadBuilder struct {
	req        *seqdv1.MarkReadRequest
	remote     *clusterv1.TimelineCountResponse // a group on another shard: asked before submitting
	readFanout bool
	count      uint64
	// monotonic: every replica applies store format 8, so the op may ask
	// them to write nothing for a marker the user has passed (one planned
	// before a higher marker applied).
	monotonic bool
}

func (b *markReadBuilder) opKind() protoreflect.FieldNumber { return kindMarkRead }

func (b *markReadBuilder) plan(s *Shard) ([]uint64, error) {
	r := b.req
	b.readFanout, b.count = false, 0
	b.monotonic = s.formatReady(formatMonotonicMarks) == nil
	if r.Conversation.Type == seqdv1.ConversationType_CONVERSATION_TYPE_GROUP {
		// A local group is read here; a remote one was asked by the
		// handler, so the proposer never waits on another shard.
		resp := b.remote
		if resp == nil {
			if !s.isLocal(GroupKeyBit | r.Conversation.Id) {
				// The group's shard changed since the handler looked: the
				// proposer does not call another shard.
				return nil, status.Errorf(codes.Unavailable, "group %d moved to another shard; retry", r.Conversation.Id)
			}
			var err error
			if resp, err = s.timelineCount(context.Background(), r.Conversation.Id, r.UpToSeq, r.User); err != nil {
				return nil, err
			}
		}
		if resp.ReadFanout {
			if !resp.Member {
				// A member removed since keeps its state, so it can
				// still clear what it had unread.
				if has, err := s.fsm.HasConversation(r.User, r.Conversation); err != nil || !has {
					return nil, noConversation(err, codes.PermissionDenied, "user %d is not a member of group %d", r.User, r.Conversation.Id)
				}
			}
			if r.UpToSeq > resp.LastGseq {
				return nil, status.Errorf(codes.InvalidArgument, "up_to_seq %d is beyond group %d's newest group seq %d", r.UpToSeq, r.Conversation.Id, resp.LastGseq)
			}
			b.readFanout, b.count = true, resp.Count
			return []uint64{r.User}, nil
		}
	}
	if has, err := s.fsm.HasConversation(r.User, r.Conversation); err != nil || !has {
		return nil, noConversation(err, codes.NotFound, "user %d has no messages in %s", r.User, convLabel(r.Conversation))
	}
	last, err := s.fsm.LastSeq(r.User)
	if err != nil {
		return nil, err
	}
	if r.UpToSeq > last {
		return nil, status.Errorf(codes.InvalidArgument, "up_to_seq %d is beyond the newest event %d in user %d's inbox", r.UpToSeq, last, r.User)
	}
	return []uint64{r.User}, nil
}

// covered answers a marker at or below the user's applied one in the
// conversation without proposing it (seq 0), as a repeated delete or
// recall is (tx.coveredMarker).
func (b *markReadBuilder) covered(s *Shard) (*OpResult, error) {
	r := b.req
	resp, err := s.fsm.ReadMarkerCovers(r.User, r.Conversation, r.UpToSeq)
	if err != nil || resp == nil {
		return nil, err
	}
	return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK, MarkRead: resp}, nil
}

// noConversation refuses a read marker for a conversation the user does not
// have: nothing would be marked, and the marker would make one up.
func noConversation(err error, code codes.Code, format string, args ...any) error {
	if err != nil {
		return err
	}
	return status.Errorf(code, format, args...)
}

// convLabel names a conversation in messages: "direct conversation 7",
// "group 50".
func convLabel(c *seqdv1.Conversation) string {
	if c.GetType() == seqdv1.ConversationType_CONVERSATION_TYPE_GROUP {
		return "group " + itoa(c.GetId())
	}
	return "direct conversation " + itoa(c.GetId())
}

func (b *markReadBuilder) build(seqs []uint64) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_MarkRead{MarkRead: &clusterv1.MarkReadOp{
		Request: b.req, Seq: seqs[0], ReadFanout: b.readFanout, GroupCount: b.count, Monotonic: b.monotonic}}}
}

// recallBuilder appends recall events to every local copy's inbox.
type recallBuilder struct {
	req    *seqdv1.RecallRequest
	window time.Duration
	users  []uint64
	group  bool
}

func (b *recallBuilder) plan(s *Shard) ([]uint64, error) {
	rec, err := s.fsm.Message(b.req.MessageId)
	if err != nil {
		return nil, err
	}
	// The FSM checks this again when it applies the op; checked here too,
	// a refused or repeated recall allocates no seqs (which would leave
	// gaps), and is answered as the FSM would.
	if r := recallCheck(b.req, rec, rec != nil, s.now().UnixMilli(), b.window); r != nil {
		return nil, &answered{r}
	}
	b.users = b.users[:0]
	for _, c := range rec.Copies {
		b.users = append(b.users, c.User)
	}
	var keys []uint64
	b.group = rec.GroupSeq > 0
	if b.group {
		keys = append(keys, GroupKeyBit|rec.Conversation.Id)
	}
	return append(keys, b.users...), nil
}

func (b *recallBuilder) build(seqs []uint64) *clusterv1.StoreOp {
	op := &clusterv1.RecallOp{Request: b.req, WindowMs: uint64(b.window.Milliseconds())}
	if b.group {
		op.GroupSeq = seqs[0]
		seqs = seqs[1:]
	}
	for i, u := range b.users {
		op.Appends = append(op.Appends, &clusterv1.Append{User: u, Seq: seqs[i]})
	}
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Recall{Recall: op}}
}

// deleteBuilder appends a delete event.
type deleteBuilder struct{ req *seqdv1.DeleteRequest }

func (b *deleteBuilder) plan(s *Shard) ([]uint64, error) {
	// As for a recall, the FSM checks again; checked here, a refused or
	// repeated delete allocates no seq.
	seq, e, err := s.fsm.Copy(b.req.User, b.req.MessageId)
	if err != nil {
		return nil, err
	}
	if r := deleteCheck(b.req, seq, e); r != nil {
		return nil, &answered{r}
	}
	return []uint64{b.req.User}, nil
}

func (b *deleteBuilder) build(seqs []uint64) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Delete{Delete: &clusterv1.DeleteOp{Request: b.req, Seq: seqs[0]}}}
}

// plainBuilder proposes an op that needs no seqs.
type plainBuilder struct{ op *clusterv1.StoreOp }

func (b *plainBuilder) plan(*Shard) ([]uint64, error)     { return nil, nil }
func (b *plainBuilder) build([]uint64) *clusterv1.StoreOp { return b.op }

// hintBuilder tells a read-fanout group's members it has news.
type hintBuilder struct {
	group, gseq, count uint64
	local, remote      []uint64
	final              bool
	// withExpired: every replica applies formatHintExpired.
	withExpired bool
	// told: the group's expired count, for a round that tells it
	// (formatExpiryHints); 0 for one that does not.
	told uint64
}

func (b *hintBuilder) plan(*Shard) ([]uint64, error) { return b.local, nil }

func (b *hintBuilder) build(seqs []uint64) *clusterv1.StoreOp {
	op := &clusterv1.GroupHintOp{GroupId: b.group, GroupSeq: b.gseq, GroupCount: b.count, Remote: b.remote, Final: b.final,
		WithExpired: b.withExpired, ToldExpired: b.told}
	for i, u := range b.local {
		op.Appends = append(op.Appends, &clusterv1.Append{User: u, Seq: seqs[i]})
	}
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_GroupHint{GroupHint: op}}
}
