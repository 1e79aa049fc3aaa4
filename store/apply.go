package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/seqd/seqd/internal/bugs"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// Bounds on ids inside ops, checked by the FSM itself (the RPC layer
// checks tighter ones): a key over Badger's limit would refuse the whole
// entry.
const (
	maxMessageIDLen   = 256
	maxClientMsgIDLen = 1024
)

func okResult() *OpResult { return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK} }

// rejected refuses an op; the caller gets FAILED_PRECONDITION.
func rejected(format string, args ...any) *OpResult {
	return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_REJECTED, Msg: fmt.Sprintf(format, args...)}
}

// rejectedAs refuses an op with the status code the caller gets.
func rejectedAs(code codes.Code, format string, args ...any) *OpResult {
	r := rejected(format, args...)
	r.Code = code
	return r
}

func outOfOrder(user, seq, last uint64) *OpResult {
	return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OUT_OF_ORDER,
		Msg: fmt.Sprintf("seq %d for user %d is not above the inbox's newest %d", seq, user, last)}
}

// applyOp runs one op. Every op checks everything before it writes, so a
// refused op leaves no trace.
func (x *tx) applyOp(index uint64, n uint32, now int64, op *clusterv1.StoreOp) *OpResult {
	switch o := op.GetOp().(type) {
	case *clusterv1.StoreOp_Send:
		return x.send(index, n, now, o.Send)
	case *clusterv1.StoreOp_Deliver:
		return x.deliver(now, o.Deliver)
	case *clusterv1.StoreOp_MarkRead:
		return x.markRead(o.MarkRead)
	case *clusterv1.StoreOp_Recall:
		return x.recall(index, n, now, o.Recall)
	case *clusterv1.StoreOp_Delete:
		return x.deleteCopy(o.Delete)
	case *clusterv1.StoreOp_CreateGroup:
		return x.createGroup(o.CreateGroup)
	case *clusterv1.StoreOp_AddMembers:
		return x.addMembers(index, n, o.AddMembers)
	case *clusterv1.StoreOp_RemoveMembers:
		return x.removeMembers(o.RemoveMembers)
	case *clusterv1.StoreOp_GroupHint:
		return x.groupHint(index, n, o.GroupHint)
	case *clusterv1.StoreOp_OutboxAck:
		return x.outboxAck(o.OutboxAck)
	case *clusterv1.StoreOp_Expire:
		return x.expire(o.Expire)
	case *clusterv1.StoreOp_SweepDedup:
		return x.sweepDedup(now, o.SweepDedup)
	case *clusterv1.StoreOp_ExpireScan:
		return x.expireScan(o.ExpireScan)
	case *clusterv1.StoreOp_TrimChangeLog:
		return x.trimChangeLog(o.TrimChangeLog)
	case *clusterv1.StoreOp_ExpireTimelines:
		return x.expireTimelines(o.ExpireTimelines)
	}
	return rejected("unknown op %T", op.GetOp())
}

func (x *tx) userState(u uint64) *clusterv1.UserState {
	var s clusterv1.UserState
	x.getCached(userKey(u), &s)
	return &s
}

func (x *tx) putUser(u uint64, s *clusterv1.UserState) { x.putCached(userKey(u), s) }

func (x *tx) convState(u uint64, c *seqdv1.Conversation) *clusterv1.ConvState {
	var s clusterv1.ConvState
	x.getCached(convKey(u, c), &s)
	return &s
}

// group reads a group's membership and its counters.
func (x *tx) group(g uint64) (*clusterv1.GroupRecord, *clusterv1.GroupCounters, bool) {
	var rec clusterv1.GroupRecord
	if !x.getCached(groupKey(g), &rec) {
		return nil, nil, false
	}
	c := &clusterv1.GroupCounters{}
	if !x.getCached(countersKey(g), c) {
		c = legacyCounters(&rec)
	}
	return &rec, c, true
}

// counters reads a group's counters, whether it uses read fanout, and
// whether it exists: from the counters' own record when it has one (a
// read-fanout group since its first message: only those have one, and a
// group's fanout never changes), without the group record, whose member
// list (90,000 members make about 2 MB) costs a big group's sends and
// hints far more to copy than the rest of their op; otherwise from the
// group record (group).
func (x *tx) counters(g uint64) (c *clusterv1.GroupCounters, readFanout, ok bool) {
	c = &clusterv1.GroupCounters{}
	if x.getCached(countersKey(g), c) {
		return c, true, true
	}
	rec, c, ok := x.group(g)
	return c, ok && rec.Info.GetReadFanout(), ok
}

// legacyCounters are the counters of a group written before counters had
// their own record: its record's fields.
func legacyCounters(rec *clusterv1.GroupRecord) *clusterv1.GroupCounters {
	return &clusterv1.GroupCounters{LastGroupSeq: rec.Info.GetLastGroupSeq(), MessageCount: rec.MessageCount, HintedGseq: rec.HintedGseq}
}

// putCounters records a read-fanout group's counters and whether it has
// news its members have not been hinted about (hasNews).
func (x *tx) putCounters(g uint64, c *clusterv1.GroupCounters) {
	x.putCached(countersKey(g), c)
	if hasNews(c) {
		x.putRaw(newsKey(g), nil)
	} else {
		x.del(newsKey(g))
	}
}

// hasNews reports whether a group's members have not been hinted about
// its newest timeline entries, or (store format 7, expiry_hints) about
// the messages retention removed from it.
func hasNews(c *clusterv1.GroupCounters) bool {
	return c.LastGroupSeq > c.HintedGseq || c.ExpiryHints && c.ExpiredCount > c.HintedExpired
}

// putMembers records a membership change.
func (x *tx) putMembers(g uint64, rec *clusterv1.GroupRecord) {
	x.putCached(groupKey(g), rec)
	x.touchGroup(g)
}

// convUnread is what a conversation contributes to the unread total:
// messages in the inbox, plus timeline messages past the read marker for
// read-fanout groups.
func convUnread(cs *clusterv1.ConvState) uint64 {
	n := cs.Unread
	if cs.LatestCount > cs.ReadCount {
		n += cs.LatestCount - cs.ReadCount
		for _, c := range cs.RecalledUnread {
			// Distinct counts, so at most LatestCount-ReadCount of them.
			if c > cs.ReadCount && c <= cs.LatestCount {
				n--
			}
		}
	}
	return n
}

// updateConv changes one conversation's state and moves the user's total
// by the same amount, so the two can never disagree.
func (x *tx) updateConv(u uint64, c *seqdv1.Conversation, us *clusterv1.UserState, change func(cs *clusterv1.ConvState)) *clusterv1.ConvState {
	cs := x.convState(u, c)
	old := proto.Clone(cs)
	before := convUnread(cs)
	change(cs)
	cs.RecalledUnread = slices.DeleteFunc(cs.RecalledUnread, func(c uint64) bool { return c <= cs.ReadCount })
	after := convUnread(cs)
	us.TotalUnread = us.TotalUnread + after - before
	if after != before && bugs.Enabled(bugs.UnreadOutsideBatch) {
		x.unreadLater(u, c, cs, after-before)
		us.TotalUnread = us.TotalUnread - after + before
		o := old.(*clusterv1.ConvState)
		cs.Unread, cs.ReadCount, cs.LatestCount, cs.RecalledUnread = o.Unread, o.ReadCount, o.LatestCount, o.RecalledUnread
	}
	if !proto.Equal(old, cs) {
		x.putCached(convKey(u, c), cs)
	}
	return cs
}

// unreadLater writes an unread change in a transaction of its own, a
// moment after the entry: the planted bug UnreadOutsideBatch.
func (x *tx) unreadLater(u uint64, c *seqdv1.Conversation, cs *clusterv1.ConvState, delta uint64) {
	cs = proto.Clone(cs).(*clusterv1.ConvState)
	db := x.db
	go func() {
		time.Sleep(100 * time.Millisecond)
		db.Update(func(txn *badger.Txn) error {
			var us clusterv1.UserState
			if it, err := txn.Get(userKey(u)); err == nil {
				it.Value(func(v []byte) error { return proto.Unmarshal(v, &us) })
			}
			us.TotalUnread += delta
			ub, _ := proto.Marshal(&us)
			cb, _ := proto.Marshal(cs)
			txn.Set(userKey(u), ub)
			return txn.Set(convKey(u, c), cb)
		})
	}()
}

// seqsAscend checks that every append is above its user's newest seq and
// above earlier appends for the same user.
func (x *tx) seqsAscend(appends []*clusterv1.Append) *OpResult {
	last := map[uint64]uint64{}
	for _, a := range appends {
		l, ok := last[a.User]
		if !ok {
			l = x.userState(a.User).LastSeq
		}
		if a.User == 0 || a.Seq <= l {
			return outOfOrder(a.User, a.Seq, l)
		}
		last[a.User] = a.Seq
	}
	return nil
}

// counted reports whether a message copy counts as unread.
func counted(e *seqdv1.Event, cs *clusterv1.ConvState) bool {
	return e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE && !e.Outgoing && !e.Recalled && !e.Deleted &&
		!cs.ReadFanout && e.Seq > cs.ReadUpTo
}

// appendEvent writes e into user's inbox at e.Seq and keeps the user's and
// the conversation's counters in step, in the same transaction.
func (x *tx) appendEvent(user uint64, e *seqdv1.Event) {
	x.appendEventAs(user, e, e)
}

// appendEventAs is appendEvent with the counters moved as for event as
// (e itself, or e without a field the entry may not act on yet).
func (x *tx) appendEventAs(user uint64, e, as *seqdv1.Event) {
	if e.SentAtMs == 0 {
		e.SentAtMs = x.now
	}
	us := x.userState(user)
	x.put(inboxKey(user, e.Seq), e)
	if change := convChange(as); change != nil {
		x.updateConv(user, e.Conversation, us, change)
	}
	if e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE {
		x.putRaw(historyKey(user, e.Conversation, e.Seq), nil)
	}
	us.LastSeq = e.Seq
	x.putUser(user, us)
	x.touchUser(user)
}

// appendCopies appends a copy of ev to each inbox in appends, at its seq,
// outgoing in sender's (0: none). One copy serves them all: appendEvent
// keeps nothing of the event it is given, so only the seq and the
// direction change between inboxes (docs/benchmarks.md, "One replica's
// FSM alone").
func (x *tx) appendCopies(ev *seqdv1.Event, sender uint64, appends []*clusterv1.Append) {
	e := proto.Clone(ev).(*seqdv1.Event)
	for _, a := range appends {
		e.Seq, e.Outgoing = a.Seq, sender != 0 && a.User == sender
		x.appendEvent(a.User, e)
	}
}

// convChange returns how appending e changes its conversation's state,
// or nil if it cannot. Events that cannot (the sender's own copy, read
// markers, recalls, deletes) skip the conversation read: in a new
// conversation that is the read of a record that does not exist, which
// costs Badger as much as a write.
func convChange(e *seqdv1.Event) func(cs *clusterv1.ConvState) {
	switch {
	case e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE && !e.Outgoing:
		return func(cs *clusterv1.ConvState) {
			if counted(e, cs) {
				cs.Unread++
			}
		}
	case e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE && e.GroupCount > 0 &&
		e.Conversation.GetType() == seqdv1.ConversationType_CONVERSATION_TYPE_GROUP:
		// Sending to a read-fanout group reads it up to one's own message.
		return func(cs *clusterv1.ConvState) {
			cs.ReadFanout = true
			cs.ReadUpTo = max(cs.ReadUpTo, e.GroupSeq)
			cs.ReadCount = max(cs.ReadCount, e.GroupCount)
			cs.LatestCount = max(cs.LatestCount, e.GroupCount)
		}
	case e.Kind == seqdv1.EventKind_EVENT_KIND_GROUP_HINT:
		return func(cs *clusterv1.ConvState) {
			cs.ReadFanout = true
			cs.LatestCount = max(cs.LatestCount, e.GroupCount)
			cs.ExpiredCount = max(cs.ExpiredCount, e.GroupExpiredCount)
			addRecalled(cs, e.RecalledGroupCounts)
		}
	}
	return nil
}

// addRecalled notes recalled messages (group counts), each once: they are
// not unread. It runs inside updateConv, which drops those at or below the
// read marker.
func addRecalled(cs *clusterv1.ConvState, counts []uint64) {
	for _, c := range counts {
		if !slices.Contains(cs.RecalledUnread, c) {
			cs.RecalledUnread = append(cs.RecalledUnread, c)
		}
	}
}

// recalledCounts returns the group counts of the messages recalled by a
// group's recall entries in (after, upTo], in group seq order.
func (x *tx) recalledCounts(g, after, upTo uint64) []uint64 {
	p := recallPrefix(g)
	it := x.t.NewIterator(seekOpts(p))
	defer it.Close()
	var out []uint64
	for it.Seek(recallKey(g, after+1)); it.ValidForPrefix(p); it.Next() {
		if beU64(it.Item().Key()[len(p):]) > upTo {
			break
		}
		err := it.Item().Value(func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("recall mark %x holds %d bytes", it.Item().Key(), len(v))
			}
			out = append(out, beU64(v))
			return nil
		})
		if err != nil {
			panic(fmt.Sprintf("store: %v", err))
		}
	}
	return out
}

// queue adds one delivery for another shard to the outbox.
func (x *tx) queue(index uint64, n uint32, j *uint32, kind clusterv1.FanoutItem_Kind, user uint64, e *seqdv1.Event) {
	if *j >= 1<<16 || n >= 1<<16 {
		// Outbox keys hold 16 bits of each: refuse the entry rather than
		// let one op's items overwrite the next op's.
		if x.err == nil {
			x.err = fmt.Errorf("op %d queues more than %d outbox items", n, 1<<16)
		}
		return
	}
	x.put(outboxKey(index, n<<16|*j), &clusterv1.FanoutItem{Kind: kind, User: user, Event: e})
	*j++
}

func (x *tx) send(index uint64, n uint32, now int64, op *clusterv1.SendOp) *OpResult {
	req := op.GetRequest()
	if req == nil || op.MessageId == "" || req.Conversation == nil || len(op.MessageId) > maxMessageIDLen ||
		len(req.ClientMsgId) > maxClientMsgIDLen {
		return rejected("send op without a request, conversation or message id, or with oversized ids")
	}
	dk := dedupKey(req.Sender, req.ClientMsgId)
	var d clusterv1.DedupRecord
	if x.get(dk, &d) && d.ExpiresMs > now && !bugs.Enabled(bugs.SkipClientMsgIDDedup) {
		if f := x.reused(req, d.Response); f != "" {
			return rejectedAs(codes.InvalidArgument, "%s", reusedID(req, d.Response.GetMessageId(), f))
		}
		resp := proto.Clone(d.Response).(*seqdv1.SendResponse)
		resp.Duplicate = true
		return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_DUPLICATE, Send: resp}
	}
	if r := x.seqsAscend(op.Appends); r != nil {
		return r
	}
	conv := req.Conversation
	var gc *clusterv1.GroupCounters
	count := uint64(0)
	if op.GroupSeq > 0 {
		c, readFanout, _ := x.counters(conv.Id)
		if !readFanout {
			return rejected("group %d is not a read-fanout group on this shard", conv.Id)
		}
		if op.GroupSeq <= c.LastGroupSeq {
			return outOfOrder(conv.Id, op.GroupSeq, c.LastGroupSeq)
		}
		gc = c
		count = c.MessageCount + 1
	}
	ev := &seqdv1.Event{
		Kind: seqdv1.EventKind_EVENT_KIND_MESSAGE, Conversation: conv, MessageId: op.MessageId, Sender: req.Sender,
		Body: req.Body, Metadata: req.Metadata, SentAtMs: now, GroupSeq: op.GroupSeq, GroupCount: count,
	}
	resp := &seqdv1.SendResponse{MessageId: op.MessageId, GroupSeq: op.GroupSeq}
	x.appendCopies(ev, req.Sender, op.Appends)
	for _, a := range op.Appends {
		if a.User == req.Sender {
			resp.SenderSeq = a.Seq
		} else {
			resp.Deliveries = append(resp.Deliveries, &seqdv1.Delivery{User: a.User, Seq: a.Seq})
		}
	}
	var j uint32
	remote := append([]uint64(nil), op.Remote...)
	for _, u := range op.Remote {
		x.queue(index, n, &j, clusterv1.FanoutItem_KIND_MESSAGE, u, ev)
		resp.Deliveries = append(resp.Deliveries, &seqdv1.Delivery{User: u})
	}
	if op.RemoteSender {
		x.queue(index, n, &j, clusterv1.FanoutItem_KIND_MESSAGE, req.Sender, ev)
		remote = append(remote, req.Sender)
	}
	if op.GroupSeq > 0 {
		te := proto.Clone(ev).(*seqdv1.Event)
		te.Seq = op.GroupSeq
		x.put(timelineKey(conv.Id, op.GroupSeq), te)
		gc.LastGroupSeq, gc.MessageCount = op.GroupSeq, count
		x.putCounters(conv.Id, gc)
	}
	x.put(messageKey(op.MessageId), &clusterv1.MessageRecord{
		Sender: req.Sender, Conversation: conv, Copies: op.Appends, Remote: remote, SentAtMs: now, GroupSeq: op.GroupSeq,
	})
	x.put(dk, &clusterv1.DedupRecord{Response: resp, ExpiresMs: now + int64(op.DedupTtlMs)})
	return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK, Send: resp}
}

// reused names the first field in which req differs from the send that
// first used its client_msg_id, whose answer was first ("" if none does),
// from the first message's record and the sender's copy (sendDiffers).
func (x *tx) reused(req *seqdv1.SendRequest, first *seqdv1.SendResponse) string {
	rec, ev := &clusterv1.MessageRecord{}, &seqdv1.Event{}
	if !x.get(messageKey(first.GetMessageId()), rec) {
		rec = nil
	}
	if first.GetSenderSeq() == 0 || !x.get(inboxKey(req.Sender, first.GetSenderSeq()), ev) {
		ev = nil
	}
	if (ev == nil || ev.Deleted) && rec != nil {
		ev = x.otherCopy(rec)
	}
	return sendDiffers(req, rec, ev)
}

// otherCopy returns a copy of rec's message on this shard with its body
// still there, for when the sender's is not (the sender lives on another
// shard, deleted it, or retention removed it): the group timeline's entry, or another
// member's or a recipient's copy. Only reads: a send answered as a
// duplicate and one refused write the same (nothing), so replicas that
// compare less still agree on the state.
func (x *tx) otherCopy(rec *clusterv1.MessageRecord) *seqdv1.Event {
	ev := &seqdv1.Event{}
	if rec.GroupSeq > 0 && x.get(timelineKey(rec.Conversation.GetId(), rec.GroupSeq), ev) && !ev.Recalled {
		return ev
	}
	// A few lookups at most: a deleted copy has no body, and most copies
	// of a message are alike.
	for i, c := range rec.Copies {
		if i == 4 {
			break
		}
		ev = &seqdv1.Event{}
		if c.User != rec.Sender && x.get(inboxKey(c.User, c.Seq), ev) && !ev.Recalled && !ev.Deleted {
			return ev
		}
	}
	return nil
}

// sendDiffers names the first field in which req differs from the send
// that first used its client_msg_id, as its message record (rec) and the
// sender's copy (ev, or another copy on this shard: otherCopy) show it;
// "" if none does. Either may be nil (retention removed them, or every
// copy here was deleted), and a recalled or deleted copy has no body
// left: what cannot be compared counts as the same.
func sendDiffers(req *seqdv1.SendRequest, rec *clusterv1.MessageRecord, ev *seqdv1.Event) string {
	if rec != nil {
		if !proto.Equal(rec.Conversation, req.Conversation) {
			return "conversation"
		}
		if req.Conversation.GetType() == seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT {
			was := map[uint64]bool{}
			for _, c := range rec.Copies {
				was[c.User] = true
			}
			for _, u := range rec.Remote {
				was[u] = true
			}
			delete(was, req.Sender)
			now := map[uint64]bool{}
			for _, u := range req.Recipients {
				now[u] = true
			}
			if !maps.Equal(was, now) {
				return "recipients"
			}
		}
	}
	if ev != nil && !ev.Recalled && !ev.Deleted {
		if !bytes.Equal(ev.Body, req.Body) {
			return "body"
		}
		if !maps.Equal(ev.Metadata, req.Metadata) {
			return "metadata"
		}
	}
	return ""
}

// reusedID says that req reuses its client_msg_id for another message.
func reusedID(req *seqdv1.SendRequest, id, field string) string {
	return fmt.Sprintf("client_msg_id %q was already used by sender %d for message %s, which had another %s: a retry must repeat the request, and a new message needs a new client_msg_id",
		req.ClientMsgId, req.Sender, id, field)
}

// eventKind is the inbox event kind of a fanout item (a join, which
// appends no event, shares the hint's for its delivery record).
func eventKind(k clusterv1.FanoutItem_Kind) seqdv1.EventKind {
	switch k {
	case clusterv1.FanoutItem_KIND_MESSAGE:
		return seqdv1.EventKind_EVENT_KIND_MESSAGE
	case clusterv1.FanoutItem_KIND_RECALL:
		return seqdv1.EventKind_EVENT_KIND_RECALL
	case clusterv1.FanoutItem_KIND_GROUP_HINT, clusterv1.FanoutItem_KIND_GROUP_JOIN:
		return seqdv1.EventKind_EVENT_KIND_GROUP_HINT
	}
	return seqdv1.EventKind_EVENT_KIND_UNSPECIFIED
}

// deliver applies items another shard queued. Items already applied (a
// retry) are skipped, so the sender can retry until it hears success.
func (x *tx) deliver(now int64, op *clusterv1.DeliverOp) *OpResult {
	if len(op.Seqs) != len(op.Items) {
		return rejected("deliver op has %d seqs for %d items", len(op.Seqs), len(op.Items))
	}
	var fresh []int
	var appends []*clusterv1.Append
	seen := map[string]bool{}
	for i, it := range op.Items {
		if it.Event == nil || it.User == 0 || it.Event.MessageId == "" || len(it.Event.MessageId) > maxMessageIDLen ||
			eventKind(it.Kind) == seqdv1.EventKind_EVENT_KIND_UNSPECIFIED {
			return rejected("deliver item %d is malformed", i)
		}
		ck := copyKey(it.User, eventKind(it.Kind), it.Event.MessageId)
		if seen[string(ck)] || x.has(ck) && !bugs.Enabled(bugs.RedeliverWithoutDedup) {
			continue // delivered before, or twice in this op
		}
		if it.Kind == clusterv1.FanoutItem_KIND_MESSAGE && it.Event.SentAtMs > 0 && it.Event.SentAtMs <= x.userState(it.User).ExpiredThroughMs {
			continue // older than what retention removed here, which may include its copy (dropCopy)
		}
		seen[string(ck)] = true
		fresh = append(fresh, i)
		if it.Kind != clusterv1.FanoutItem_KIND_GROUP_JOIN {
			appends = append(appends, &clusterv1.Append{User: it.User, Seq: op.Seqs[i]})
		}
	}
	if r := x.seqsAscend(appends); r != nil {
		return r
	}
	for _, i := range fresh {
		it, seq := op.Items[i], op.Seqs[i]
		if it.Kind == clusterv1.FanoutItem_KIND_GROUP_JOIN {
			x.joinFloor(it.User, it.Event.Conversation, it.Event.GroupCount, it.Event.RecalledGroupCounts)
			x.putU64(copyKey(it.User, eventKind(it.Kind), it.Event.MessageId), 0)
			continue
		}
		e := proto.Clone(it.Event).(*seqdv1.Event)
		e.Seq = seq
		switch it.Kind {
		case clusterv1.FanoutItem_KIND_MESSAGE:
			e.Outgoing = it.User == e.Sender
		case clusterv1.FanoutItem_KIND_RECALL:
			if cseq, ok := x.getU64(copyKey(it.User, seqdv1.EventKind_EVENT_KIND_MESSAGE, e.MessageId)); ok {
				x.recallCopy(it.User, cseq)
			}
		}
		e.Kind = eventKind(it.Kind)
		as := e
		if e.GroupExpiredCount > 0 && !op.WithExpired {
			// A replica of format 4 writes the hint as it came and leaves
			// the count out of the member's state; so does this one, until
			// the entry says every replica takes it in.
			as = proto.Clone(e).(*seqdv1.Event)
			as.GroupExpiredCount = 0
		}
		if as.GroupExpiredCount > 0 {
			x.noteTimelinesExpired()
		}
		x.appendEventAs(it.User, e, as)
		x.putU64(copyKey(it.User, e.Kind, e.MessageId), seq)
	}
	return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK, Delivered: uint32(len(op.Items))}
}

// recount counts the unread message copies of a conversation after a read
// marker moved.
func (x *tx) recount(user uint64, c *seqdv1.Conversation, cs *clusterv1.ConvState) uint64 {
	p := historyPrefix(user, c)
	var n uint64
	for _, k := range x.keys(p, historyKey(user, c, cs.ReadUpTo+1), 0) {
		seq := beU64(k[len(k)-8:])
		var e seqdv1.Event
		if x.get(inboxKey(user, seq), &e) && counted(&e, cs) {
			n++
		}
	}
	return n
}

func (x *tx) markRead(op *clusterv1.MarkReadOp) *OpResult {
	req := op.GetRequest()
	if req == nil || req.User == 0 || req.Conversation == nil {
		return rejected("mark-read op without a user or conversation")
	}
	us := x.userState(req.User)
	if op.Seq <= us.LastSeq {
		return outOfOrder(req.User, op.Seq, us.LastSeq)
	}
	if !op.ReadFanout && req.UpToSeq > us.LastSeq {
		return rejectedAs(codes.InvalidArgument, "up_to_seq %d is beyond the newest event %d in user %d's inbox", req.UpToSeq, us.LastSeq, req.User)
	}
	if op.Monotonic {
		// A marker that applied after this one was planned may cover it:
		// then it writes nothing, and its seq goes unused.
		if resp := x.coveredMarker(req.User, req.Conversation, req.UpToSeq); resp != nil {
			return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK, MarkRead: resp}
		}
	}
	cs := x.updateConv(req.User, req.Conversation, us, func(cs *clusterv1.ConvState) {
		if op.ReadFanout {
			cs.ReadFanout = true
			cs.ReadUpTo = max(cs.ReadUpTo, req.UpToSeq)
			cs.ReadCount = max(cs.ReadCount, op.GroupCount)
			return
		}
		if req.UpToSeq > cs.ReadUpTo {
			cs.ReadUpTo = req.UpToSeq
			cs.Unread = x.recount(req.User, req.Conversation, cs)
		}
	})
	x.putUser(req.User, us)
	x.appendEvent(req.User, &seqdv1.Event{
		Seq: op.Seq, Kind: seqdv1.EventKind_EVENT_KIND_READ, Conversation: req.Conversation,
		ReadUpTo: req.UpToSeq, GroupCount: op.GroupCount, Sender: req.User, Outgoing: true,
	})
	return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK, MarkRead: x.unreadAnswer(req.User, req.Conversation, cs, op.Seq)}
}

// coveredMarker is the answer to a read marker of user in conv up to upTo
// when the user has read up to there or further (nil otherwise): the
// counts, and seq 0, as such a marker writes nothing. A READ event below
// the user's marker would move back every device that replays it, while
// the state keeps the higher one.
func (x *tx) coveredMarker(user uint64, conv *seqdv1.Conversation, upTo uint64) *seqdv1.MarkReadResponse {
	if cs := x.convState(user, conv); upTo > 0 && cs.ReadUpTo >= upTo {
		return x.unreadAnswer(user, conv, cs, 0)
	}
	return nil
}

// timelinesExpired says whether keyTimelinesExpired is set: from the
// state cache, mostly, so a mark-read reads no Badger key for it.
func (x *tx) timelinesExpired() bool { return x.getCached(keyTimelinesExpired, &emptypb.Empty{}) }

// noteTimelinesExpired sets keyTimelinesExpired: mark-read answers look
// for removed messages from now on.
func (x *tx) noteTimelinesExpired() {
	if !x.timelinesExpired() {
		x.putCached(keyTimelinesExpired, &emptypb.Empty{})
	}
}

// unreadAnswer is a mark-read's answer: the conversation's unread count
// and the user's total, as Unread reports them (less the messages
// retention removed from read-fanout timelines, once it has removed any).
func (x *tx) unreadAnswer(user uint64, conv *seqdv1.Conversation, cs *clusterv1.ConvState, seq uint64) *seqdv1.MarkReadResponse {
	resp := &seqdv1.MarkReadResponse{Seq: seq, Unread: convUnread(cs), TotalUnread: x.userState(user).TotalUnread}
	if !x.timelinesExpired() {
		return resp
	}
	// A read-fanout conversation is a group's. Only the counters record:
	// the group record holds every member. Without one the group never had
	// an entry removed here (it may live on another shard: the member's
	// state has the latest hint's count).
	expired := func(c *seqdv1.Conversation) uint64 {
		var gc clusterv1.GroupCounters
		x.getCached(countersKey(c.GetId()), &gc)
		return gc.ExpiredCount
	}
	if resp.Unread > 0 && cs.ReadFanout {
		resp.Unread = unreadAfterExpiry(cs, expired(conv), resp.Unread)
	}
	// The user's group conversations only: they sort together, after the
	// direct ones. Only read-fanout ones with unread messages can have
	// some of them removed.
	p := append(convPrefix(user), byte(seqdv1.ConversationType_CONVERSATION_TYPE_GROUP))
	it := x.t.NewIterator(seekOpts(p))
	var states []*clusterv1.ConvState
	var convs []*seqdv1.Conversation
	for it.Rewind(); it.ValidForPrefix(p); it.Next() {
		var s clusterv1.ConvState
		if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, &s) }); err != nil {
			panic(fmt.Sprintf("store: corrupt conversation record: %v", err))
		}
		if s.ReadFanout && convUnread(&s) > 0 {
			states, convs = append(states, &s), append(convs, convFromKey(it.Item().Key()))
		}
	}
	it.Close() // getCached reads with the transaction's one iterator closed
	for i, s := range states {
		n := convUnread(s)
		resp.TotalUnread -= n - unreadAfterExpiry(s, expired(convs[i]), n)
	}
	return resp
}

// recallCopy blanks one copy of a recalled message and stops counting it.
func (x *tx) recallCopy(user, seq uint64) bool {
	var e seqdv1.Event
	if !x.get(inboxKey(user, seq), &e) || e.Recalled {
		return false
	}
	us := x.userState(user)
	x.updateConv(user, e.Conversation, us, func(cs *clusterv1.ConvState) {
		if counted(&e, cs) {
			cs.Unread--
		}
	})
	x.putUser(user, us)
	e.Recalled, e.Body, e.Metadata = true, nil, nil
	x.put(inboxKey(user, seq), &e)
	x.touchUser(user)
	return true
}

func (x *tx) recall(index uint64, n uint32, now int64, op *clusterv1.RecallOp) *OpResult {
	req := op.GetRequest()
	if req == nil {
		return rejected("recall op without a request")
	}
	var rec clusterv1.MessageRecord
	found := x.get(messageKey(req.MessageId), &rec)
	if r := recallCheck(req, &rec, found, now, time.Duration(op.WindowMs)*time.Millisecond); r != nil {
		return r
	}
	if r := x.seqsAscend(op.Appends); r != nil {
		return r
	}
	var gc *clusterv1.GroupCounters
	if rec.GroupSeq > 0 {
		c, _, ok := x.counters(rec.Conversation.Id)
		if !ok {
			return rejectedAs(codes.NotFound, "group %d of message %s is gone", rec.Conversation.Id, req.MessageId)
		}
		if op.GroupSeq <= c.LastGroupSeq {
			return outOfOrder(rec.Conversation.Id, op.GroupSeq, c.LastGroupSeq)
		}
		gc = c
	}
	recalled := uint32(0)
	for _, c := range rec.Copies {
		if x.recallCopy(c.User, c.Seq) {
			recalled++
		}
	}
	ev := &seqdv1.Event{Kind: seqdv1.EventKind_EVENT_KIND_RECALL, Conversation: rec.Conversation, MessageId: req.MessageId,
		Sender: rec.Sender, SentAtMs: now}
	x.appendCopies(ev, rec.Sender, op.Appends)
	var j uint32
	for _, u := range rec.Remote {
		x.queue(index, n, &j, clusterv1.FanoutItem_KIND_RECALL, u, ev)
	}
	if rec.GroupSeq > 0 {
		var te seqdv1.Event
		if x.get(timelineKey(rec.Conversation.Id, rec.GroupSeq), &te) {
			te.Recalled, te.Body, te.Metadata = true, nil, nil
			x.put(timelineKey(rec.Conversation.Id, rec.GroupSeq), &te)
			// Members stop counting it once a hint round carries the mark,
			// and members who join with history from the start.
			x.putU64(recallKey(rec.Conversation.Id, op.GroupSeq), te.GroupCount)
		}
		re := proto.Clone(ev).(*seqdv1.Event)
		re.Seq, re.GroupSeq, re.GroupCount = op.GroupSeq, op.GroupSeq, gc.MessageCount
		x.put(timelineKey(rec.Conversation.Id, op.GroupSeq), re)
		gc.LastGroupSeq = op.GroupSeq
		x.putCounters(rec.Conversation.Id, gc)
	}
	rec.Recalled = true
	x.put(messageKey(req.MessageId), &rec)
	return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK, Recalled: recalled}
}

// recallCheck is what a recall must pass, checked by the leader before it
// allocates seqs and by the FSM: nil if it goes ahead, OK if the message
// is recalled already (nothing to do), else the refusal. rec is the
// message's record, if found.
func recallCheck(req *seqdv1.RecallRequest, rec *clusterv1.MessageRecord, found bool, now int64, window time.Duration) *OpResult {
	switch {
	case !found:
		return rejectedAs(codes.NotFound, "message %s does not exist", req.MessageId)
	case rec.Sender != req.Sender:
		return rejectedAs(codes.PermissionDenied, "user %d did not send message %s; only its sender can recall it", req.Sender, req.MessageId)
	case rec.Recalled:
		return okResult()
	}
	if age := time.Duration(now-rec.SentAtMs) * time.Millisecond; age > window {
		return rejected("message %s was sent %v ago; the recall window is %v", req.MessageId, age, window)
	}
	return nil
}

// deleteCheck is what a delete must pass, as recallCheck: seq is the
// user's copy (0: none), e its event (nil: removed by retention).
func deleteCheck(req *seqdv1.DeleteRequest, seq uint64, e *seqdv1.Event) *OpResult {
	switch {
	case seq == 0:
		return rejectedAs(codes.NotFound, "user %d has no copy of message %s", req.User, req.MessageId)
	case e == nil:
		return rejectedAs(codes.NotFound, "user %d's copy of message %s was removed by retention", req.User, req.MessageId)
	case e.Deleted:
		return okResult()
	}
	return nil
}

// copyOf finds user's copy of message id: its seq (0 if none) and its
// event (nil if retention removed it).
func (x *tx) copyOf(user uint64, id string) (uint64, *seqdv1.Event) {
	seq, ok := x.copySeq(user, id)
	if !ok || seq == 0 {
		return 0, nil
	}
	var e seqdv1.Event
	if !x.get(inboxKey(user, seq), &e) {
		return seq, nil
	}
	return seq, &e
}

// copySeq finds user's copy of a message on this shard.
func (x *tx) copySeq(user uint64, id string) (uint64, bool) {
	var rec clusterv1.MessageRecord
	if x.get(messageKey(id), &rec) {
		for _, c := range rec.Copies {
			if c.User == user {
				return c.Seq, true
			}
		}
	}
	return x.getU64(copyKey(user, seqdv1.EventKind_EVENT_KIND_MESSAGE, id))
}

func (x *tx) deleteCopy(op *clusterv1.DeleteOp) *OpResult {
	req := op.GetRequest()
	if req == nil {
		return rejected("delete op without a request")
	}
	seq, e := x.copyOf(req.User, req.MessageId)
	if r := deleteCheck(req, seq, e); r != nil {
		return r
	}
	us := x.userState(req.User)
	if op.Seq <= us.LastSeq {
		return outOfOrder(req.User, op.Seq, us.LastSeq)
	}
	x.updateConv(req.User, e.Conversation, us, func(cs *clusterv1.ConvState) {
		if counted(e, cs) {
			cs.Unread--
		}
	})
	x.putUser(req.User, us)
	e.Deleted, e.Body, e.Metadata = true, nil, nil
	x.put(inboxKey(req.User, seq), e)
	x.del(historyKey(req.User, e.Conversation, seq))
	x.appendEvent(req.User, &seqdv1.Event{Seq: op.Seq, Kind: seqdv1.EventKind_EVENT_KIND_DELETE, Conversation: e.Conversation,
		MessageId: req.MessageId, Sender: req.User, Outgoing: true})
	return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK, DeleteSeq: op.Seq}
}

func (x *tx) createGroup(op *clusterv1.CreateGroupOp) *OpResult {
	req := op.GetRequest()
	if req == nil || req.GroupId == 0 || req.Owner == 0 {
		return rejected("create-group op without a group id or owner")
	}
	if rec, gc, ok := x.group(req.GroupId); ok {
		if sameCreate(rec.Info, req) {
			// A retry of the create that made it.
			return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK, Group: withCounters(rec.Info, gc)}
		}
		return rejectedAs(codes.AlreadyExists, "group %d already exists with other members, owner or fanout; a retried create must repeat them", req.GroupId)
	}
	info := &seqdv1.GroupInfo{GroupId: req.GroupId, Owner: req.Owner}
	seen := map[uint64]bool{}
	for _, m := range append([]uint64{req.Owner}, req.Members...) {
		if !seen[m] {
			seen[m] = true
			info.Members = append(info.Members, &seqdv1.GroupMember{User: m})
		}
	}
	info.ReadFanout = req.ReadFanout || len(info.Members) > int(op.ReadFanoutThreshold)
	x.putMembers(req.GroupId, &clusterv1.GroupRecord{Info: info})
	return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK, Group: info}
}

// sameCreate reports whether req would have created info as it stands
// (same owner, members and fanout mode): a retried create.
func sameCreate(info *seqdv1.GroupInfo, req *seqdv1.CreateGroupRequest) bool {
	if info.Owner != req.Owner || (req.ReadFanout && !info.ReadFanout) {
		return false
	}
	want := map[uint64]bool{req.Owner: true}
	for _, m := range req.Members {
		want[m] = true
	}
	if len(want) != len(info.Members) {
		return false
	}
	for _, m := range info.Members {
		if !want[m.User] {
			return false
		}
	}
	return true
}

// joinFloor sets where a read-fanout group's unread count starts for a
// member who just joined: messages up to count are not unread for them,
// nor the recalled ones (their group counts).
func (x *tx) joinFloor(user uint64, conv *seqdv1.Conversation, count uint64, recalled []uint64) {
	us := x.userState(user)
	x.updateConv(user, conv, us, func(cs *clusterv1.ConvState) {
		cs.ReadFanout = true
		cs.ReadCount = max(cs.ReadCount, count)
		cs.LatestCount = max(cs.LatestCount, count)
		addRecalled(cs, recalled)
	})
	x.putUser(user, us)
	x.touchUser(user)
}

func (x *tx) addMembers(index uint64, n uint32, op *clusterv1.MembersOp) *OpResult {
	g, gc, ok := x.group(op.GroupId)
	if !ok {
		return rejectedAs(codes.NotFound, "group %d does not exist", op.GroupId)
	}
	have := map[uint64]bool{}
	for _, m := range g.Info.Members {
		have[m.User] = true
	}
	var added []uint64
	for _, u := range op.Members {
		if have[u] || u == 0 {
			continue
		}
		have[u] = true
		joined := gc.LastGroupSeq
		if op.WithHistory {
			joined = 0
		}
		g.Info.Members = append(g.Info.Members, &seqdv1.GroupMember{User: u, JoinedAfterGseq: joined})
		added = append(added, u)
	}
	if op.MaxGroupSize > 0 && len(g.Info.Members) > int(op.MaxGroupSize) {
		// Another add planned at the same time applied first.
		return rejectedAs(codes.FailedPrecondition, "%s", groupTooLarge(op.GroupId, len(g.Info.Members)-len(added), len(g.Info.Members), int(op.MaxGroupSize)))
	}
	if !g.Info.ReadFanout && len(g.Info.Members) > int(op.ReadFanoutThreshold) {
		return rejected("group %d uses write fanout, which is limited to %d members (it would have %d); create large groups with read_fanout",
			op.GroupId, op.ReadFanoutThreshold, len(g.Info.Members))
	}
	if g.Info.ReadFanout {
		// Unread for a newcomer counts from where it joined. Entries from
		// before unread_from_join counted a with-history newcomer's whole
		// history, less what was recalled in it (every recall mark, with
		// no bound): they replay the way they were applied.
		floor := gc.MessageCount
		var recalled []uint64
		if op.WithHistory && !op.UnreadFromJoin {
			floor = 0
			recalled = x.recalledCounts(op.GroupId, 0, gc.LastGroupSeq)
		}
		conv := &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_GROUP, Id: op.GroupId}
		remote := map[uint64]bool{}
		for _, u := range op.Remote {
			remote[u] = true
		}
		var j uint32
		for _, u := range added {
			if remote[u] {
				x.queue(index, n, &j, clusterv1.FanoutItem_KIND_GROUP_JOIN, u, &seqdv1.Event{Conversation: conv, GroupCount: floor,
					RecalledGroupCounts: recalled, MessageId: fmt.Sprintf("j%d.%d.%d.%d", op.GroupId, u, index, n)})
			} else {
				x.joinFloor(u, conv, floor, recalled)
			}
		}
	}
	x.putMembers(op.GroupId, g)
	return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK, Group: withCounters(g.Info, gc)}
}

// withCounters returns info with the counters filled in, for answers.
func withCounters(info *seqdv1.GroupInfo, c *clusterv1.GroupCounters) *seqdv1.GroupInfo {
	out := proto.Clone(info).(*seqdv1.GroupInfo)
	out.LastGroupSeq = c.LastGroupSeq
	return out
}

func (x *tx) removeMembers(op *clusterv1.MembersOp) *OpResult {
	g, gc, ok := x.group(op.GroupId)
	if !ok {
		return rejectedAs(codes.NotFound, "group %d does not exist", op.GroupId)
	}
	drop := map[uint64]bool{}
	for _, u := range op.Members {
		if u == g.Info.Owner {
			return rejected("user %d owns group %d and cannot be removed", u, op.GroupId)
		}
		drop[u] = true
	}
	kept := g.Info.Members[:0]
	for _, m := range g.Info.Members {
		if !drop[m.User] {
			kept = append(kept, m)
		}
	}
	g.Info.Members = kept
	x.putMembers(op.GroupId, g)
	return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK, Group: withCounters(g.Info, gc)}
}

func (x *tx) groupHint(index uint64, n uint32, op *clusterv1.GroupHintOp) *OpResult {
	gc, _, ok := x.counters(op.GroupId)
	if !ok {
		return rejectedAs(codes.NotFound, "group %d does not exist", op.GroupId)
	}
	if op.ToldExpired > gc.ExpiredCount {
		return rejected("group hint tells expired count %d; group %d has %d", op.ToldExpired, op.GroupId, gc.ExpiredCount)
	}
	// A round at the group seq the last one covered is a retry of it,
	// unless it tells a higher expired count than that one did.
	if op.GroupSeq < gc.HintedGseq || op.GroupSeq == gc.HintedGseq && op.Final && op.ToldExpired <= gc.HintedExpired {
		return okResult()
	}
	if r := x.seqsAscend(op.Appends); r != nil {
		return r
	}
	conv := &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_GROUP, Id: op.GroupId}
	// The id is what a member's shard knows a delivered hint by: a round
	// telling a count has one of its own, as it may repeat a group seq.
	id := fmt.Sprintf("h%d.%d", op.GroupId, op.GroupSeq)
	if op.ToldExpired > 0 {
		id = fmt.Sprintf("h%d.%d.x%d", op.GroupId, op.GroupSeq, op.ToldExpired)
	}
	ev := &seqdv1.Event{Kind: seqdv1.EventKind_EVENT_KIND_GROUP_HINT, Conversation: conv, GroupSeq: op.GroupSeq, GroupCount: op.GroupCount,
		MessageId: id}
	ev.RecalledGroupCounts = x.recalledCounts(op.GroupId, gc.HintedGseq, op.GroupSeq)
	if op.WithExpired || op.ToldExpired > 0 {
		ev.GroupExpiredCount = gc.ExpiredCount
	}
	x.appendCopies(ev, 0, op.Appends)
	var j uint32
	for _, u := range op.Remote {
		x.queue(index, n, &j, clusterv1.FanoutItem_KIND_GROUP_HINT, u, ev)
	}
	if op.Final {
		gc.HintedGseq = op.GroupSeq
		// What the leader read, not the count at this chunk: a step
		// between two chunks of the round raised the count after the
		// first chunk's members were told the lower one, and the next
		// round tells them.
		gc.HintedExpired = max(gc.HintedExpired, op.ToldExpired)
		x.putCounters(op.GroupId, gc)
	}
	return okResult()
}

func (x *tx) outboxAck(op *clusterv1.OutboxAckOp) *OpResult {
	for _, k := range op.Keys {
		if len(k) == 13 && k[0] == tagOutbox {
			x.del(k)
		}
	}
	return okResult()
}

// expire removes inbox events sent before op.BeforeMs (retention), oldest
// first per user, keeping unread counts and truncation marks in step.
func (x *tx) expire(op *clusterv1.ExpireOp) *OpResult {
	removed := uint32(0)
	it := x.t.NewIterator(seekOpts([]byte{tagInbox}))
	var doomed []*seqdv1.Event
	var users []uint64
	for it.Rewind(); it.Valid() && removed < op.Limit; {
		k := it.Item().Key()
		user := beU64(k[1:9])
		var e seqdv1.Event
		if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, &e) }); err != nil {
			panic(fmt.Sprintf("store: corrupt inbox record: %v", err))
		}
		if e.SentAtMs >= op.BeforeMs {
			// This user's remaining events are newer: skip to the next user.
			it.Seek(inboxPrefix(user + 1))
			if user == ^uint64(0) {
				break
			}
			continue
		}
		doomed = append(doomed, &e)
		users = append(users, user)
		removed++
		it.Next()
	}
	it.Close()
	for i, e := range doomed {
		x.expireEvent(users[i], e, false)
	}
	return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK, Expired: removed}
}

// refuseCount refuses a leader's housekeeping op whose count (what names
// it) is outside 1..max; nil if it is inside.
func refuseCount(what string, n, max uint32) *OpResult {
	if n == 0 || n > max {
		return rejectedAs(codes.InvalidArgument, "%s %d: want 1..%d", what, n, max)
	}
	return nil
}

// refuseCutoff refuses a housekeeping op (what) whose cutoff time is not
// after 1970; nil if it is.
func refuseCutoff(what string, ms int64) *OpResult {
	if ms <= 0 {
		return rejectedAs(codes.InvalidArgument, "%s before %d ms: want a time after 1970", what, ms)
	}
	return nil
}

// expireEvent removes user's event e (retention), keeping the unread
// counts and the truncation mark in step.
func (x *tx) expireEvent(user uint64, e *seqdv1.Event, dropCopies bool) {
	us := x.userState(user)
	x.updateConv(user, e.Conversation, us, func(cs *clusterv1.ConvState) {
		if counted(e, cs) && !bugs.Enabled(bugs.ExpireKeepsUnread) {
			cs.Unread--
		}
	})
	us.TruncatedBelow = max(us.TruncatedBelow, e.Seq+1)
	if dropCopies && deliveredKind(e.Kind) {
		us.ExpiredThroughMs = max(us.ExpiredThroughMs, e.SentAtMs)
	}
	x.putUser(user, us)
	x.del(inboxKey(user, e.Seq))
	x.del(historyKey(user, e.Conversation, e.Seq))
	x.touchUser(user)
}

// deliveredKind says whether deliveries from other shards write events of
// kind k (with a copy key each).
func deliveredKind(k seqdv1.EventKind) bool {
	switch k {
	case seqdv1.EventKind_EVENT_KIND_MESSAGE, seqdv1.EventKind_EVENT_KIND_RECALL, seqdv1.EventKind_EVENT_KIND_GROUP_HINT:
		return true
	}
	return false
}

// dropCopy removes the copy key of event e, which retention has just
// removed, if another shard delivered it. expireEvent has raised the
// user's expired_through_ms to its send time, so a redelivery of a
// message, or any delivery of a message sent no later, is skipped
// (deliver) instead of appended again. Recalls and hints are not skipped
// (a hint item carries no send time, and a recall still blanks a copy held
// behind a newer event): one redelivered after its copy key went is
// appended again, which changes no count. A message whose record is on
// this shard (records, as lastCopyGone left it) was sent here and has no
// copy key: no lookup.
func (x *tx) dropCopy(user uint64, e *seqdv1.Event, records map[string]*clusterv1.MessageRecord) {
	if !deliveredKind(e.Kind) {
		return
	}
	if e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE && records[e.MessageId] != nil {
		return
	}
	if ck := copyKey(user, e.Kind, e.MessageId); x.has(ck) {
		x.del(ck)
	}
}

// Bounds of one retention step (ExpireScanOp), so that one entry's work
// stays small whatever the shard holds.
const (
	maxExpireEvents = 10_000
	maxExpireUsers  = 100_000
)

// expireScan is one step of a retention pass: see ExpireScanOp. Its work
// is bounded by the users it looks at (one seek each) and the events it
// removes, whatever the shard holds, and the leader's next step starts
// where it stopped (OpResult.ExpireNext).
func (x *tx) expireScan(op *clusterv1.ExpireScanOp) *OpResult {
	if r := cmp.Or(refuseCutoff("expire", op.BeforeMs), refuseCount("expire limit", op.Limit, maxExpireEvents),
		refuseCount("expire max_users", op.MaxUsers, maxExpireUsers)); r != nil {
		return r
	}
	doomed, owners, next := x.dueWalk(op.BeforeMs, op.FromUser, op.MaxUsers, op.Limit)
	records := map[string]*clusterv1.MessageRecord{}
	for i, e := range doomed {
		x.expireEvent(owners[i], e, op.DropCopies)
		if e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE && x.lastCopyGone(records, e.MessageId) {
			x.del(messageKey(e.MessageId))
		}
		if op.DropCopies {
			x.dropCopy(owners[i], e, records)
		}
	}
	return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK, Expired: uint32(len(doomed)), ExpireNext: next}
}

// dueWalk walks the inboxes of the users from user `from` on, at most
// maxUsers users (inboxHeads), and returns their events sent before
// `before`, oldest first per user up to its first newer one, at most limit
// of them, with their owners, and the user the next walk starts at (0: it
// passed the last user; eventWalk).
func (x *tx) dueWalk(before int64, from uint64, maxUsers, limit uint32) (doomed []*seqdv1.Event, owners []uint64, next uint64) {
	next = x.eventWalk(tagInbox, x.inboxHeads, before, from, maxUsers, limit, func(user uint64, e *seqdv1.Event) {
		doomed, owners = append(doomed, e), append(owners, user)
	})
	return doomed, owners, next
}

// walkHead is where a retention walk reads one inbox or timeline: its
// owner (a user or a group), the seq it starts at (those below were
// removed), and the last seq it may remove.
type walkHead struct{ owner, start, last uint64 }

// eventWalk walks the event logs of table tag (inboxes or timelines) of
// the owners from `from` on, at most maxOwners of them, which heads finds
// headBatch at a time, and calls visit with each event sent before
// `before`, oldest first per owner up to its first newer one or its head's
// last seq, at most limit of them. It returns the owner the next walk
// starts at (0: it passed the last one). The heads come in small batches
// (a Badger read-write transaction holds one iterator at a time), so a
// walk that reaches its limit early reads few more than it used.
func (x *tx) eventWalk(tag byte, heads func(from uint64, max uint32) ([]walkHead, uint32, uint64),
	before int64, from uint64, maxOwners, limit uint32, visit func(owner uint64, e *seqdv1.Event)) (next uint64) {
	n := uint32(0)
	for left := maxOwners; ; {
		hs, looked, after := heads(from, min(left, headBatch))
		it := x.t.NewIterator(seekOpts([]byte{tag}))
		for _, h := range hs {
			p := u64([]byte{tag}, h.owner)
			for it.Seek(u64(p, h.start)); it.ValidForPrefix(p); it.Next() {
				e := &seqdv1.Event{}
				if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, e) }); err != nil {
					panic(fmt.Sprintf("store: corrupt event %x: %v", it.Item().Key(), err))
				}
				if e.SentAtMs >= before || e.Seq > h.last {
					break
				}
				if n == limit {
					it.Close()
					return h.owner // the rest of this owner's are for the next walk
				}
				visit(h.owner, e)
				n++
			}
		}
		it.Close()
		left -= looked
		if after == 0 || left == 0 {
			return after
		}
		from = after
	}
}

// firstDue returns the first user from user `from` on with an inbox event
// sent before `before` (ok false: none): where a retention step has work.
// The leader asks it of its own state before each step, so that a pass
// with nothing due proposes nothing.
func (x *tx) firstDue(before int64, from uint64) (user uint64, ok bool) {
	_, owners, _ := x.dueWalk(before, from, math.MaxUint32, 1)
	if len(owners) == 0 {
		return 0, false
	}
	return owners[0], true
}

// headBatch is how many users' records a retention walk reads at a time.
const headBatch = 64

// inboxHeads walks the user records from user `from` on, in order: it
// looks at up to max users that ever had an inbox event (a record with a
// last seq) and returns those whose inbox still holds events, with where
// they start, how many it looked at, and the user after them (0: it passed
// the last one). The walk goes by the user records, one per user, rather
// than by the inbox keys: Badger keeps a deleted key as a tombstone until
// compaction drops it, and a seek to the start of an inbox that retention
// has cleared steps over every tombstone it left, a cost that grew with
// each pass.
func (x *tx) inboxHeads(from uint64, max uint32) (heads []walkHead, looked uint32, next uint64) {
	return walkHeads(x, tagUser, from, max, func(user uint64, us *clusterv1.UserState) (bool, walkHead, bool) {
		// A user without a last seq never had an event (a group member's
		// counters only): it does not count.
		return us.LastSeq != 0, walkHead{owner: user, start: us.TruncatedBelow, last: math.MaxUint64}, us.LastSeq >= us.TruncatedBelow
	})
}

// walkHeads reads the records of table tag (keyed by the tag and a uint64
// id) from id from on, in order, for a retention walk. head says of each
// record whether it counts (a user that ever had an inbox event, a group
// that ever had a timeline entry) and, if so, the head to return for it
// (ok false: it holds nothing to remove). It looks at up to max records
// that count and returns their heads, how many it looked at, and the id
// after them (0: it passed the last one).
func walkHeads[H, M any, PM interface {
	*M
	proto.Message
}](x *tx, tag byte, from uint64, max uint32, head func(id uint64, m PM) (counts bool, h H, ok bool)) (heads []H, looked uint32, next uint64) {
	p := []byte{tag}
	it := x.t.NewIterator(seekOpts(p))
	defer it.Close()
	m := PM(new(M)) // one for every record: head keeps nothing of it
	for it.Seek(u64([]byte{tag}, from)); it.ValidForPrefix(p); it.Next() {
		id := beU64(it.Item().Key()[1:9])
		if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, m) }); err != nil {
			panic(fmt.Sprintf("store: corrupt record %x: %v", it.Item().Key(), err))
		}
		counts, h, ok := head(id, m)
		if !counts {
			continue
		}
		if looked == max {
			return heads, looked, id
		}
		looked++
		if ok {
			heads = append(heads, h)
		}
	}
	return heads, looked, 0
}

// maxTrim bounds the change-log entries one TrimChangeLogOp removes.
const maxTrim = 10_000

// trimChangeLog removes change-log entries from the start of the log that
// were applied before op.BeforeMs (trimWalk), and moves keyLogStart past
// them.
func (x *tx) trimChangeLog(op *clusterv1.TrimChangeLogOp) *OpResult {
	if r := cmp.Or(refuseCutoff("trim", op.BeforeMs), refuseCount("trim limit", op.Limit, maxTrim)); r != nil {
		return r
	}
	doomed, more := x.trimWalk(op.BeforeMs, op.Limit)
	for _, index := range doomed {
		x.del(logKey(index))
	}
	if n := len(doomed); n > 0 {
		x.putU64(keyLogStart, doomed[n-1]+1)
	}
	res := okResult()
	res.LogTrimmed, res.LogMore = uint32(len(doomed)), more
	return res
}

// trimWalk returns the indexes of the change-log entries from the start of
// the log applied before before, up to the first newer one or the dedup
// sweep's cursor (the sweep reads the sends of the entries after it), at
// most limit of them (more: it stopped there with more due).
func (x *tx) trimWalk(before int64, limit uint32) (doomed []uint64, more bool) {
	start, _ := x.getU64(keyLogStart)
	swept, _ := x.getU64(keySweep)
	p := []byte{tagLog}
	it := x.t.NewIterator(iteratorOpts(p))
	defer it.Close()
	for it.Seek(logKey(start)); it.ValidForPrefix(p); it.Next() {
		index := beU64(it.Item().Key()[1:])
		if index > swept {
			break
		}
		var e clusterv1.ChangeLogEntry
		if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, &e) }); err != nil {
			panic(fmt.Sprintf("store: corrupt change-log entry %d: %v", index, err))
		}
		if e.NowMs >= before {
			break
		}
		if uint32(len(doomed)) == limit {
			return doomed, true
		}
		doomed = append(doomed, index)
	}
	return doomed, false
}

// removedRecord stands in lastCopyGone's records for a record the step
// removed: nil is a message with no record on this shard. It is shared:
// never change it.
var removedRecord = &clusterv1.MessageRecord{}

// lastCopyGone reports whether a retention step has removed the last
// copy on this shard of message id, whose record then goes with it: every
// copy its record lists has left the inbox (a step's deletes are visible
// to its own reads). records keeps each record a step looked up, its
// copies sorted by user, highest first: the walk goes by user, so until
// the last copy goes the first one checked is still there.
func (x *tx) lastCopyGone(records map[string]*clusterv1.MessageRecord, id string) bool {
	rec, ok := records[id]
	if !ok {
		rec = &clusterv1.MessageRecord{}
		if !x.get(messageKey(id), rec) {
			rec = nil
		} else {
			slices.SortFunc(rec.Copies, func(a, b *clusterv1.Append) int { return cmp.Compare(b.User, a.User) })
		}
		records[id] = rec
	}
	if rec == nil || len(rec.Copies) == 0 {
		return false
	}
	for _, c := range rec.Copies {
		if x.has(inboxKey(c.User, c.Seq)) {
			return false
		}
	}
	records[id] = removedRecord // a later copy in this step finds no record
	return true
}

// maxSweep bounds the work of one sweep op (sweepWalk's limit), so that
// one entry's work stays small whatever the log holds.
const maxSweep = 10_000

// sweepDedup deletes the dedup records of the sends in the change log
// after keySweep whose TTL ran out at least op.GraceMs before now, entry
// by entry, and moves keySweep past the entries it finished. Its work is
// the expired sends', whatever the number of records still remembered.
// Such a record answers nothing already (Dedup, Reused and send treat it
// as absent), so a sweep changes no answer; it gives the disk back.
func (x *tx) sweepDedup(now int64, op *clusterv1.SweepDedupOp) *OpResult {
	if r := refuseCount("sweep limit", op.Limit, maxSweep); r != nil {
		return r
	}
	if op.GraceMs < 0 {
		return rejectedAs(codes.InvalidArgument, "sweep grace %d ms is negative", op.GraceMs)
	}
	cutoff := now - op.GraceMs
	doomed, done, last, more := x.sweepWalk(cutoff, op.Limit)
	res := okResult()
	for _, k := range doomed {
		var rec clusterv1.DedupRecord
		// A later send under the id may have replaced the record: it stays
		// until that send's own entry is swept.
		if x.get(k, &rec) && rec.ExpiresMs <= cutoff {
			x.del(k)
			res.Swept++
		}
	}
	if last != done {
		x.putRaw(keySweep, binary.BigEndian.AppendUint64(nil, last))
	}
	res.SweepMore = more
	return res
}

// sweepWalk walks the change log after keySweep (done) as a sweep at
// cutoff does: entry by entry, up to the first holding a send still
// remembered at cutoff, or until its work reaches limit (more), each entry
// counting one plus its sends, so that a long stretch of entries without
// sends is walked in bounded steps too. It returns the dedup keys of those
// entries' sends and the last entry it finished.
func (x *tx) sweepWalk(cutoff int64, limit uint32) (doomed [][]byte, done, last uint64, more bool) {
	done, _ = x.getU64(keySweep)
	last, looked := done, uint32(0)
	p := []byte{tagLog}
	it := x.t.NewIterator(iteratorOpts(p))
	defer it.Close()
	for it.Seek(logKey(done + 1)); it.Valid(); it.Next() {
		if looked >= limit {
			return doomed, done, last, true
		}
		var e clusterv1.ChangeLogEntry
		if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, &e) }); err != nil {
			panic(fmt.Sprintf("store: corrupt change-log entry %d: %v", beU64(it.Item().Key()[1:]), err))
		}
		sends := appliedSends(&e)
		if remembered(&e, sends, cutoff) {
			break // not yet: this entry, and what follows, waits for a later sweep
		}
		for _, s := range sends {
			doomed = append(doomed, dedupKey(s.Request.GetSender(), s.Request.GetClientMsgId()))
		}
		looked += 1 + uint32(len(sends))
		last = e.Index
	}
	return doomed, done, last, false
}

// remembered reports whether any of sends, applied by e, is still
// remembered at cutoff.
func remembered(e *clusterv1.ChangeLogEntry, sends []*clusterv1.SendOp, cutoff int64) bool {
	return slices.ContainsFunc(sends, func(s *clusterv1.SendOp) bool { return e.NowMs+int64(s.DedupTtlMs) > cutoff })
}

// appliedSends returns the sends e applied (each wrote a dedup record).
func appliedSends(e *clusterv1.ChangeLogEntry) []*clusterv1.SendOp {
	var out []*clusterv1.SendOp
	for i, o := range e.Ops {
		if s := o.GetSend(); s != nil && i < len(e.Applied) && e.Applied[i] {
			out = append(out, s)
		}
	}
	return out
}

// maxExpireGroups bounds the groups one timeline retention step looks at.
const maxExpireGroups = 100_000

// expireTimelines is one step of a retention pass over read-fanout group
// timelines: see ExpireTimelinesOp. Like expireScan, its work is bounded
// by the groups it looks at and the entries it removes, and the leader's
// next step starts where it stopped (OpResult.ExpireNext, a group here).
func (x *tx) expireTimelines(op *clusterv1.ExpireTimelinesOp) *OpResult {
	if r := cmp.Or(refuseCutoff("expire", op.BeforeMs), refuseCount("expire limit", op.Limit, maxExpireEvents),
		refuseCount("expire max_groups", op.MaxGroups, maxExpireGroups)); r != nil {
		return r
	}
	doomed, next := x.timelineWalk(op.BeforeMs, op.FromGroup, op.MaxGroups, op.Limit)
	if len(doomed) > 0 {
		x.noteTimelinesExpired()
	}
	for i, d := range doomed {
		x.del(timelineKey(d.group, d.gseq))
		if d.recall {
			x.del(recallKey(d.group, d.gseq))
		} else if x.copiesGone(d.id) {
			// Its record goes with the entry if no copy it lists is left:
			// a sender on another shard left none here, and a local
			// sender's copy took it along when the inbox step removed it.
			x.del(messageKey(d.id))
		}
		if i+1 == len(doomed) || doomed[i+1].group != d.group {
			// The group's last entry removed by this step.
			gc, _, ok := x.counters(d.group)
			if !ok {
				panic(fmt.Sprintf("store: group %d has timeline entries and no record", d.group))
			}
			gc.TimelineStart, gc.ExpiredCount = d.gseq+1, d.count
			gc.ExpiryHints = gc.ExpiryHints || op.HintExpired
			// With expiry_hints its members hear of the removed messages
			// (hasNews); without, its news key stays as it was.
			x.putCounters(d.group, gc)
		}
	}
	return &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OK, Expired: uint32(len(doomed)), ExpireNext: next}
}

// timelineEntry is a timeline entry a retention step removes: its group,
// group seq, the running message count it carries, its message id, and
// whether it is a recall entry (with a recall mark under the same group
// seq).
type timelineEntry struct {
	group, gseq, count uint64
	id                 string
	recall             bool
}

// copiesGone reports whether message id has a record on this shard and
// none of the inbox copies it lists is left.
func (x *tx) copiesGone(id string) bool {
	var rec clusterv1.MessageRecord
	return x.get(messageKey(id), &rec) &&
		!slices.ContainsFunc(rec.Copies, func(c *clusterv1.Append) bool { return x.has(inboxKey(c.User, c.Seq)) })
}

// timelineWalk walks the timelines of the groups from group `from` on, at
// most maxGroups groups (timelineHeads), and returns their entries sent
// before `before` and covered by the group's last hint round, oldest first
// per group up to its first other one, at most limit of them, and the
// group the next walk starts at (0: it passed the last group; eventWalk).
func (x *tx) timelineWalk(before int64, from uint64, maxGroups, limit uint32) (doomed []timelineEntry, next uint64) {
	next = x.eventWalk(tagTimeline, x.timelineHeads, before, from, maxGroups, limit, func(g uint64, e *seqdv1.Event) {
		doomed = append(doomed, timelineEntry{group: g, gseq: e.Seq, count: e.GroupCount, id: e.MessageId,
			recall: e.Kind == seqdv1.EventKind_EVENT_KIND_RECALL})
	})
	return doomed, next
}

// firstTimelineDue returns the first group from group `from` on with a
// timeline entry a retention step would remove (ok false: none).
func (x *tx) firstTimelineDue(before int64, from uint64) (group uint64, ok bool) {
	doomed, _ := x.timelineWalk(before, from, math.MaxUint32, 1)
	if len(doomed) == 0 {
		return 0, false
	}
	return doomed[0].group, true
}

// timelineHeads walks the group counters from group `from` on, in order,
// as inboxHeads walks the user records: it looks at up to max groups that
// ever had a timeline entry and returns those with hinted entries still
// held, how many it looked at, and the group after them (0: it passed the
// last one).
func (x *tx) timelineHeads(from uint64, max uint32) (heads []walkHead, looked uint32, next uint64) {
	return walkHeads(x, tagCounters, from, max, func(g uint64, c *clusterv1.GroupCounters) (bool, walkHead, bool) {
		// Entries past the last hint round stay: the next round reads the
		// recall marks above it.
		start := cmp.Or(c.TimelineStart, 1)
		return c.LastGroupSeq != 0, walkHead{owner: g, start: start, last: c.HintedGseq}, start <= c.HintedGseq
	})
}
