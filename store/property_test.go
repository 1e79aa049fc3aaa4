package store

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// A model-based property test of the FSM (G2 and G3). Random sequences of
// sends (DIRECT, write- and read-fanout groups), client retries, mark-reads,
// recalls, deletes, membership changes, hint rounds, deliveries from other
// shards, outbox acks, retention, clock moves, leader changes (stale seqs,
// answered OUT_OF_ORDER and retried), replays of applied entries and
// restarts are applied both to the FSM and to a plain model; after every
// step the FSM's reads must match the model and the invariants must hold.
//
// One Badger serves every check (opening one costs ~100 ms): each check
// uses its own users, groups and a clock below every earlier check's, so
// retention never reaches an earlier check's events.

const (
	propTTL       = 20_000
	propWindow    = 6_000
	propThreshold = 4
)

type propConv struct {
	rf                               bool
	readUpTo, readCount, latestCount uint64
	recalled                         map[uint64]bool // read fanout: group counts of recalls hints carried
}

type propUser struct {
	inbox      []*seqdv1.Event
	last       uint64 // newest seq appended (UserState.last_seq)
	alloc      uint64 // the allocator's high-water mark for the user
	truncBelow uint64
	convs      map[string]*propConv
	// expiredThrough is UserState.expired_through_ms: the latest send time
	// of the events a step with drop_copies removed.
	expiredThrough int64
}

type propMsg struct {
	sender   uint64
	conv     *seqdv1.Conversation
	copies   []*clusterv1.Append
	remote   []uint64
	sentAt   int64
	recalled bool
	gseq     uint64
	gone     bool // retention removed its record with its last copy
}

type propGroup struct {
	info     *seqdv1.GroupInfo
	alloc    uint64 // the group key's allocator high-water mark
	count    uint64
	hinted   uint64
	timeline []*seqdv1.Event
	// marks holds the recall marks: recall entry gseq -> the recalled
	// message's count.
	marks map[uint64]uint64
	// Retention: the first gseq the timeline may hold, and the count of
	// the last entry removed.
	start, expired uint64
	// Format 7: the expired count the last round told, and whether a step
	// with hint_expired removed entries (a raised count is news then).
	hintedExpired uint64
	expiryHints   bool
}

// news reports whether the group is due a hint round (hasNews).
func (g *propGroup) news() bool {
	return g.info.ReadFanout && (g.info.LastGroupSeq > g.hinted || g.expiryHints && g.expired > g.hintedExpired)
}

type propDedup struct {
	sender  uint64
	cmid    string
	req     *seqdv1.SendRequest // the first send's
	remote  []uint64            // its recipients on another shard
	resp    *seqdv1.SendResponse
	expires int64
}

type propModel struct {
	h       *fsmHarness
	users   []uint64 // local users, ascending
	remote  []uint64 // users on another shard
	peer    uint64   // a sender on another shard
	u       map[uint64]*propUser
	msgs    map[string]*propMsg
	msgIDs  []string
	groups  map[uint64]*propGroup
	gids    []uint64
	dedup   map[string]*propDedup
	outbox  []string // kind:user:message id, in outbox order
	copies  map[string]uint64
	fanned  []*clusterv1.FanoutItem // items delivered from the peer
	acked   map[string]bool
	refused map[string]bool
	peerSeq uint64
	first   uint64 // first index of this check
	stats   map[string]int
}

type propPlan struct {
	what  string
	op    *clusterv1.StoreOp
	want  clusterv1.OpStatus
	check func(t *rapid.T, r *OpResult)
}

func newPropModel(h *fsmHarness, check int) *propModel {
	base := uint64(check) * 1000
	m := &propModel{h: h, peer: base + 900, u: map[uint64]*propUser{}, msgs: map[string]*propMsg{}, groups: map[uint64]*propGroup{},
		dedup: map[string]*propDedup{}, copies: map[string]uint64{}, acked: map[string]bool{}, refused: map[string]bool{}, first: h.idx + 1}
	for i := uint64(1); i <= 5; i++ {
		m.users = append(m.users, base+i)
		m.u[base+i] = &propUser{convs: map[string]*propConv{}}
	}
	m.remote = []uint64{base + 101, base + 102}
	h.now = 1_000_000_000_000 - int64(check)*100_000_000
	return m
}

func (m *propModel) conv(u uint64, c *seqdv1.Conversation) *propConv {
	pu := m.u[u]
	k := convName(c)
	if pu.convs[k] == nil {
		pu.convs[k] = &propConv{}
	}
	return pu.convs[k]
}

// next allocates a seq for u, sometimes skipping some (gaps are allowed).
func (m *propModel) next(t *rapid.T, u uint64) uint64 {
	pu := m.u[u]
	pu.alloc += 1 + uint64(rapid.IntRange(0, 2).Draw(t, "gap"))
	return pu.alloc
}

func (m *propModel) nextGroupSeq(t *rapid.T, g *propGroup) uint64 {
	g.alloc += 1 + uint64(rapid.IntRange(0, 2).Draw(t, "ggap"))
	return g.alloc
}

// leaderChange sometimes gives one append a seq from a leader that lost
// its allocator state: at or below the inbox's newest (the FSM must answer
// OUT_OF_ORDER and write nothing), or a never-used one above it (fine).
func (m *propModel) leaderChange(t *rapid.T, appends []*clusterv1.Append) {
	if len(appends) == 0 {
		return
	}
	mode := rapid.IntRange(0, 7).Draw(t, "leaderChange")
	if mode > 1 {
		return
	}
	a := appends[rapid.IntRange(0, len(appends)-1).Draw(t, "staleAppend")]
	pu := m.u[a.User]
	switch {
	case mode == 0 && pu.last > 0:
		a.Seq = rapid.Uint64Range(1, pu.last).Draw(t, "staleSeq")
	case mode == 1 && a.Seq > pu.last+1:
		a.Seq = rapid.Uint64Range(pu.last+1, a.Seq).Draw(t, "unusedSeq")
	}
}

// outOfOrder restates the FSM's rule: every append above the user's newest
// seq and above earlier appends for the same user in the op.
func (m *propModel) outOfOrder(appends []*clusterv1.Append) bool {
	last := map[uint64]uint64{}
	for _, a := range appends {
		l, ok := last[a.User]
		if !ok {
			l = m.u[a.User].last
		}
		if a.Seq <= l {
			return true
		}
		last[a.User] = a.Seq
	}
	return false
}

func (m *propModel) appendEvent(u uint64, e *seqdv1.Event) {
	pu := m.u[u]
	if e.SentAtMs == 0 {
		e.SentAtMs = m.h.now
	}
	pu.inbox = append(pu.inbox, e)
	pu.last = e.Seq
	pu.alloc = max(pu.alloc, e.Seq)
	cs := m.conv(u, e.Conversation)
	switch e.Kind {
	case kMessage:
		if e.Conversation.GetType() == seqdv1.ConversationType_CONVERSATION_TYPE_GROUP && e.GroupCount > 0 && e.Outgoing {
			cs.rf = true
			cs.readUpTo = max(cs.readUpTo, e.GroupSeq)
			cs.readCount = max(cs.readCount, e.GroupCount)
			cs.latestCount = max(cs.latestCount, e.GroupCount)
		}
	case kHint:
		cs.rf = true
		cs.latestCount = max(cs.latestCount, e.GroupCount)
		for _, c := range e.RecalledGroupCounts {
			if cs.recalled == nil {
				cs.recalled = map[uint64]bool{}
			}
			cs.recalled[c] = true
		}
	}
}

func (m *propModel) find(u, seq uint64) *seqdv1.Event {
	for _, e := range m.u[u].inbox {
		if e.Seq == seq {
			return e
		}
	}
	return nil
}

// implied is the unread count the inbox implies: incoming message copies,
// neither recalled nor deleted, above the conversation's read marker; for
// read-fanout groups, the timeline messages between the read marker and
// the latest hint, less those whose recall a hint carried.
func (m *propModel) implied(u uint64) (map[string]uint64, uint64) {
	pu := m.u[u]
	out := map[string]uint64{}
	for k, cs := range pu.convs {
		// Messages retention removed from the timeline are read.
		read := cs.readCount
		var id uint64
		if _, err := fmt.Sscanf(k, "g%d", &id); err == nil && m.groups[id] != nil {
			read = max(read, m.groups[id].expired)
		}
		if cs.rf && cs.latestCount > read {
			out[k] += cs.latestCount - read
			for c := range cs.recalled {
				if c > read && c <= cs.latestCount {
					out[k]--
				}
			}
		}
	}
	for _, e := range pu.inbox {
		k := convName(e.Conversation)
		cs := pu.convs[k]
		if e.Kind == kMessage && !e.Outgoing && !e.Recalled && !e.Deleted && !cs.rf && e.Seq > cs.readUpTo {
			out[k]++
		}
	}
	var total uint64
	for _, n := range out {
		total += n
	}
	return out, total
}

func (m *propModel) noteRefused(id string) {
	if !m.acked[id] {
		m.refused[id] = true
	}
}

func (m *propModel) run(t *rapid.T, plans ...*propPlan) {
	t.Helper()
	ops := make([]*clusterv1.StoreOp, len(plans))
	for i, p := range plans {
		ops[i] = p.op
	}
	m.h.t = t
	rs := m.h.apply(ops...)
	for i, p := range plans {
		m.stats[strings.Fields(p.what)[0]+" "+strings.TrimPrefix(p.want.String(), "OP_STATUS_")]++
		if rs[i].Status != p.want {
			t.Fatalf("%s (entry %d op %d): got %s, want %v", p.what, m.h.idx, i, statusOf(rs[i]), p.want)
		}
		if p.check != nil {
			p.check(t, rs[i])
		}
	}
}

// Planners: each builds an op the way the leader would, predicts its
// outcome and updates the model as if it were applied.

// otherCopy is tx.otherCopy in the model: the timeline entry, or one of
// the first four copies not the sender's, with its body still there.
func (m *propModel) otherCopy(msg *propMsg) *seqdv1.Event {
	if g := m.groups[msg.conv.GetId()]; msg.gseq > 0 && g != nil {
		for _, te := range g.timeline {
			if te.Seq == msg.gseq && !te.Recalled {
				return te
			}
		}
	}
	for i, c := range msg.copies {
		if i == 4 {
			break
		}
		if e := m.find(c.User, c.Seq); c.User != msg.sender && e != nil && !e.Recalled && !e.Deleted {
			return e
		}
	}
	return nil
}

func (m *propModel) predictSend(op *clusterv1.SendOp) *propPlan {
	req := op.Request
	id := op.MessageId
	p := &propPlan{what: "send " + id, op: opSendRaw(op)}
	dk := fmt.Sprintf("%d/%s", req.Sender, req.ClientMsgId)
	if d := m.dedup[dk]; d != nil && d.expires > m.h.now {
		// Another message under the id is refused; what is compared is
		// what the FSM still holds of the first (its record, and the
		// sender's copy unless retention removed it).
		var rec *clusterv1.MessageRecord
		if msg := m.msgs[d.resp.MessageId]; msg != nil && !msg.gone {
			rec = &clusterv1.MessageRecord{Sender: msg.sender, Conversation: msg.conv, Copies: msg.copies, Remote: msg.remote}
		}
		var first *seqdv1.Event
		if d.resp.SenderSeq != 0 {
			first = m.find(req.Sender, d.resp.SenderSeq)
		}
		if (first == nil || first.Deleted) && rec != nil {
			first = m.otherCopy(m.msgs[d.resp.MessageId])
		}
		if sendDiffers(req, rec, first) != "" {
			p.want = stRejected
			p.what += " (another message under " + req.ClientMsgId + ")"
			m.noteRefused(id)
			return p
		}
		p.want = stDuplicate
		want := proto.Clone(d.resp).(*seqdv1.SendResponse)
		want.Duplicate = true
		p.check = func(t *rapid.T, r *OpResult) {
			if diff := protoDiff(want, r.Send); diff != "" {
				t.Fatalf("retry of (%d, %s) answered differently:\n%s", req.Sender, req.ClientMsgId, diff)
			}
		}
		m.noteRefused(id)
		return p
	}
	var g *propGroup
	count := uint64(0)
	if op.GroupSeq > 0 {
		g = m.groups[req.Conversation.Id]
		count = g.count + 1
	}
	if m.outOfOrder(op.Appends) || g != nil && op.GroupSeq <= g.info.LastGroupSeq {
		p.want = stOutOfOrder
		m.noteRefused(id)
		return p
	}
	p.want = stOK
	now := m.h.now
	ev := &seqdv1.Event{Kind: kMessage, Conversation: req.Conversation, MessageId: id, Sender: req.Sender, Body: req.Body,
		SentAtMs: now, GroupSeq: op.GroupSeq, GroupCount: count}
	resp := &seqdv1.SendResponse{MessageId: id, GroupSeq: op.GroupSeq}
	for _, a := range op.Appends {
		e := proto.Clone(ev).(*seqdv1.Event)
		e.Seq, e.Outgoing = a.Seq, a.User == req.Sender
		m.appendEvent(a.User, e)
		if e.Outgoing {
			resp.SenderSeq = a.Seq
		} else {
			resp.Deliveries = append(resp.Deliveries, &seqdv1.Delivery{User: a.User, Seq: a.Seq})
		}
	}
	for _, u := range op.Remote {
		m.outbox = append(m.outbox, fmt.Sprintf("MESSAGE:%d:%s", u, id))
		resp.Deliveries = append(resp.Deliveries, &seqdv1.Delivery{User: u})
	}
	if g != nil {
		te := proto.Clone(ev).(*seqdv1.Event)
		te.Seq = op.GroupSeq
		g.timeline = append(g.timeline, te)
		g.info.LastGroupSeq, g.count = op.GroupSeq, count
	}
	var copies []*clusterv1.Append
	for _, a := range op.Appends {
		copies = append(copies, &clusterv1.Append{User: a.User, Seq: a.Seq})
	}
	m.msgs[id] = &propMsg{sender: req.Sender, conv: req.Conversation, copies: copies, remote: slices.Clone(op.Remote), sentAt: now, gseq: op.GroupSeq}
	m.msgIDs = append(m.msgIDs, id)
	m.dedup[dk] = &propDedup{sender: req.Sender, cmid: req.ClientMsgId, req: req, remote: slices.Clone(op.Remote), resp: resp, expires: now + propTTL}
	m.acked[id] = true
	delete(m.refused, id)
	p.check = func(t *rapid.T, r *OpResult) {
		if diff := protoDiff(resp, r.Send); diff != "" {
			t.Fatalf("send %s response:\n%s", id, diff)
		}
	}
	return p
}

type directParams struct {
	sender         uint64
	rcpts, remote  []uint64
	conv           uint64
	cmid           string
	body           []byte // nil: one naming the message
	mayChangeLeads bool
}

func (m *propModel) drawDirect(t *rapid.T) directParams {
	sender := rapid.SampledFrom(m.users).Draw(t, "sender")
	var others []uint64
	for _, u := range m.users {
		if u != sender {
			others = append(others, u)
		}
	}
	rcpts := rapid.SliceOfNDistinct(rapid.SampledFrom(others), 1, 3, rapid.ID[uint64]).Draw(t, "recipients")
	var remote []uint64
	if rapid.IntRange(0, 3).Draw(t, "withRemote") == 0 {
		remote = []uint64{rapid.SampledFrom(m.remote).Draw(t, "remote")}
	}
	return directParams{sender: sender, rcpts: rcpts, remote: remote, conv: uint64(rapid.IntRange(1, 3).Draw(t, "conv")),
		cmid: fmt.Sprintf("c%d", rapid.IntRange(0, 7).Draw(t, "cmid")), mayChangeLeads: true}
}

func (m *propModel) planDirect(t *rapid.T, p directParams) *propPlan {
	appends := []*clusterv1.Append{{User: p.sender, Seq: m.next(t, p.sender)}}
	for _, r := range p.rcpts {
		appends = append(appends, &clusterv1.Append{User: r, Seq: m.next(t, r)})
	}
	if p.mayChangeLeads {
		m.leaderChange(t, appends)
	}
	id := DirectMessageID(p.sender, appends[0].Seq)
	req := &seqdv1.SendRequest{Sender: p.sender, Conversation: dconv(p.conv), Recipients: append(slices.Clone(p.rcpts), p.remote...),
		ClientMsgId: p.cmid, Body: p.body}
	if req.Body == nil {
		req.Body = []byte("body of " + id)
	}
	return m.predictSend(&clusterv1.SendOp{Request: req, MessageId: id, Appends: appends, Remote: p.remote, DedupTtlMs: propTTL})
}

// sendDirect sends, and like the leader's pipeline sends an op answered
// OUT_OF_ORDER round again with fresh seqs.
func (m *propModel) sendDirect(t *rapid.T) {
	p := m.drawDirect(t)
	plan := m.planDirect(t, p)
	m.run(t, plan)
	if plan.want == stOutOfOrder {
		p.mayChangeLeads = false
		m.run(t, m.planDirect(t, p))
	}
}

func (m *propModel) drawGroup(t *rapid.T, rfOnly bool) *propGroup {
	var ids []uint64
	for _, id := range m.gids {
		if !rfOnly || m.groups[id].info.ReadFanout {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		t.Skip("no such group yet")
	}
	return m.groups[rapid.SampledFrom(ids).Draw(t, "group")]
}

func (m *propModel) planGroupSend(t *rapid.T, g *propGroup, sender uint64, cmid, body string, mayChangeLeader bool) *propPlan {
	gseq := m.nextGroupSeq(t, g)
	var appends []*clusterv1.Append
	if g.info.ReadFanout {
		appends = []*clusterv1.Append{{User: sender, Seq: m.next(t, sender)}}
		if mayChangeLeader && g.info.LastGroupSeq > 0 && rapid.IntRange(0, 7).Draw(t, "staleGseq") == 0 {
			gseq = rapid.Uint64Range(1, g.info.LastGroupSeq).Draw(t, "gseq")
		}
	} else {
		for _, mem := range g.info.Members {
			appends = append(appends, &clusterv1.Append{User: mem.User, Seq: m.next(t, mem.User)})
		}
	}
	if mayChangeLeader {
		m.leaderChange(t, appends)
	}
	op := opGroupSend(g.info.GroupId, gseq, g.info.ReadFanout, sender, cmid, body, appends...)
	return m.predictSend(op.GetSend())
}

func (m *propModel) sendGroup(t *rapid.T) {
	g := m.drawGroup(t, false)
	var members []uint64
	for _, mem := range g.info.Members {
		members = append(members, mem.User)
	}
	sender := rapid.SampledFrom(members).Draw(t, "sender")
	cmid := fmt.Sprintf("c%d", rapid.IntRange(0, 7).Draw(t, "cmid"))
	body := fmt.Sprintf("to group %d", g.info.GroupId)
	plan := m.planGroupSend(t, g, sender, cmid, body, true)
	m.run(t, plan)
	if plan.want == stOutOfOrder {
		m.run(t, m.planGroupSend(t, g, sender, cmid, body, false))
	}
}

// retry resends an earlier (sender, client_msg_id), as a client that timed
// out would: a duplicate while the record lives, a new message after. Or
// it sends another message under it, as a client that reuses ids would:
// refused while the record lives.
func (m *propModel) retry(t *rapid.T) {
	if len(m.dedup) == 0 {
		t.Skip("nothing sent yet")
	}
	keys := make([]string, 0, len(m.dedup))
	for k := range m.dedup {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	d := m.dedup[rapid.SampledFrom(keys).Draw(t, "retryOf")]
	var others []uint64
	for _, u := range m.users {
		if u != d.sender {
			others = append(others, u)
		}
	}
	if g := m.groups[d.req.Conversation.GetId()]; d.req.Conversation.GetType() == seqdv1.ConversationType_CONVERSATION_TYPE_GROUP && g != nil && rapid.Bool().Draw(t, "groupReplay") {
		// The same group send again, or another body under its id: told
		// apart by the sender's copy, or the timeline's entry or another
		// member's copy once the sender's is deleted.
		body := string(d.req.Body)
		if rapid.Bool().Draw(t, "changedBody") {
			body += " (changed)"
		}
		plan := m.planGroupSend(t, g, d.sender, d.cmid, body, false)
		m.run(t, plan)
		if plan.want == stOutOfOrder {
			m.run(t, m.planGroupSend(t, g, d.sender, d.cmid, body, false))
		}
		return
	}
	if d.req.Conversation.GetType() == seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT && rapid.Bool().Draw(t, "replay") {
		rcpts := slices.DeleteFunc(slices.Clone(d.req.Recipients), func(u uint64) bool { return slices.Contains(d.remote, u) })
		m.run(t, m.planDirect(t, directParams{sender: d.sender, rcpts: rcpts, remote: d.remote, conv: d.req.Conversation.Id, cmid: d.cmid, body: d.req.Body}))
		return
	}
	m.run(t, m.planDirect(t, directParams{sender: d.sender, rcpts: others[:1], conv: 1, cmid: d.cmid}))
}

// timelineCount counts the timeline's messages up to upTo; those
// retention removed count wherever upTo is.
func (m *propModel) timelineCount(g *propGroup, upTo uint64) uint64 {
	n := g.expired
	for _, e := range g.timeline {
		if e.Seq <= upTo && e.Kind == kMessage {
			n++
		}
	}
	return n
}

// planMarkRead returns nil when the drawn conversation has nothing to read.
func (m *propModel) planMarkRead(t *rapid.T) *propPlan {
	u := rapid.SampledFrom(m.users).Draw(t, "reader")
	pu := m.u[u]
	names := map[string]*seqdv1.Conversation{"d1": dconv(1)}
	for _, e := range pu.inbox {
		names[convName(e.Conversation)] = e.Conversation
	}
	for _, id := range m.gids {
		if _, ok := isMember(m.groups[id].info, u); ok {
			names[convName(gconv(id))] = gconv(id)
		}
	}
	keys := make([]string, 0, len(names))
	for k := range names {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	conv := names[rapid.SampledFrom(keys).Draw(t, "readConv")]
	seq := m.next(t, u)
	if pu.last > 0 && rapid.IntRange(0, 7).Draw(t, "staleRead") == 0 {
		seq = rapid.Uint64Range(1, pu.last).Draw(t, "staleReadSeq")
	}
	var op *clusterv1.StoreOp
	var upTo, count uint64
	g := m.groups[conv.Id]
	rf := conv.Type == seqdv1.ConversationType_CONVERSATION_TYPE_GROUP && g != nil && g.info.ReadFanout
	switch {
	case rf:
		if g.info.LastGroupSeq == 0 {
			return nil // nothing to read yet
		}
		upTo = rapid.Uint64Range(1, g.info.LastGroupSeq).Draw(t, "upToGseq")
		count = m.timelineCount(g, upTo)
		if n, _, err := timelineCount(m.h.f, g.info.GroupId, upTo); err != nil || n != count {
			t.Fatalf("TimelineCount(%d, %d) = %d, %v; model %d", g.info.GroupId, upTo, n, err, count)
		}
		op = opMarkReadFanout(u, conv.Id, upTo, count, seq)
	case rapid.IntRange(0, 5).Draw(t, "future") == 0:
		upTo = pu.last + uint64(rapid.IntRange(1, 3).Draw(t, "ahead"))
		op = opMarkRead(u, conv, upTo, seq)
	default:
		if pu.last == 0 {
			return nil // nothing to read yet
		}
		upTo = rapid.Uint64Range(1, pu.last).Draw(t, "upTo")
		op = opMarkRead(u, conv, upTo, seq)
	}
	p := &propPlan{what: fmt.Sprintf("mark-read user %d %s up to %d", u, convName(conv), upTo), op: op}
	switch {
	case seq <= pu.last:
		p.want = stOutOfOrder
	case !rf && upTo > pu.last:
		p.want = stRejected
	default:
		p.want = stOK
		cs := m.conv(u, conv)
		if rf {
			cs.rf = true
			cs.readUpTo = max(cs.readUpTo, upTo)
			cs.readCount = max(cs.readCount, count)
		} else {
			cs.readUpTo = max(cs.readUpTo, upTo)
		}
		m.appendEvent(u, &seqdv1.Event{Seq: seq, Kind: kRead, Conversation: conv, ReadUpTo: upTo, GroupCount: count, Sender: u, Outgoing: true})
		convs, total := m.implied(u)
		want := &seqdv1.MarkReadResponse{Seq: seq, Unread: convs[convName(conv)], TotalUnread: total}
		p.check = func(t *rapid.T, r *OpResult) {
			if diff := protoDiff(want, r.MarkRead); diff != "" {
				t.Fatalf("%s response:\n%s", p.what, diff)
			}
		}
	}
	return p
}

func (m *propModel) markRead(t *rapid.T) {
	p := m.planMarkRead(t)
	if p == nil {
		t.Skip("nothing to read")
	}
	m.run(t, p)
}

// batch puts several sends and mark-reads in one entry (group commit).
func (m *propModel) batch(t *rapid.T) {
	n := rapid.IntRange(2, 4).Draw(t, "batchSize")
	var plans []*propPlan
	for i := 0; i < n; i++ {
		if rapid.Bool().Draw(t, "batchSend") {
			plans = append(plans, m.planDirect(t, m.drawDirect(t)))
		} else if p := m.planMarkRead(t); p != nil {
			plans = append(plans, p)
		}
	}
	m.run(t, plans...)
}

func (m *propModel) recall(t *rapid.T) {
	if len(m.msgIDs) == 0 || rapid.IntRange(0, 9).Draw(t, "unknownRecall") == 0 {
		u := rapid.SampledFrom(m.users).Draw(t, "recaller")
		m.run(t, &propPlan{what: "recall of an unknown message", op: opRecall(u, DirectMessageID(u, 1<<40), propWindow, 0), want: stRejected})
		return
	}
	id := rapid.SampledFrom(m.msgIDs).Draw(t, "recallID")
	rec := m.msgs[id]
	sender := rec.sender
	if rapid.IntRange(0, 4).Draw(t, "notSender") == 0 {
		sender = rapid.SampledFrom(m.users).Draw(t, "recaller")
	}
	var appends []*clusterv1.Append
	for _, c := range rec.copies {
		appends = append(appends, &clusterv1.Append{User: c.User, Seq: m.next(t, c.User)})
	}
	var g *propGroup
	gseq := uint64(0)
	if rec.gseq > 0 {
		g = m.groups[rec.conv.Id]
		gseq = m.nextGroupSeq(t, g)
		if rapid.IntRange(0, 7).Draw(t, "staleRecallGseq") == 0 {
			gseq = rapid.Uint64Range(0, g.info.LastGroupSeq).Draw(t, "recallGseq")
		}
	}
	m.leaderChange(t, appends)
	p := &propPlan{what: fmt.Sprintf("recall %s by %d", id, sender), op: opRecall(sender, id, propWindow, gseq, appends...)}
	now := m.h.now
	switch {
	case rec.gone, sender != rec.sender:
		p.want = stRejected
	case rec.recalled:
		p.want = stOK
		p.check = func(t *rapid.T, r *OpResult) {
			if r.Recalled != 0 {
				t.Fatalf("repeated recall of %s recalled %d copies", id, r.Recalled)
			}
		}
	case now-rec.sentAt > propWindow:
		p.want = stRejected
	case m.outOfOrder(appends), g != nil && gseq <= g.info.LastGroupSeq:
		p.want = stOutOfOrder
	default:
		p.want = stOK
		n := uint32(0)
		for _, c := range rec.copies {
			if e := m.find(c.User, c.Seq); e != nil && !e.Recalled {
				e.Recalled, e.Body, e.Metadata = true, nil, nil
				n++
			}
		}
		ev := &seqdv1.Event{Kind: kRecall, Conversation: rec.conv, MessageId: id, Sender: rec.sender, SentAtMs: now}
		for _, a := range appends {
			e := proto.Clone(ev).(*seqdv1.Event)
			e.Seq, e.Outgoing = a.Seq, a.User == rec.sender
			m.appendEvent(a.User, e)
		}
		for _, u := range rec.remote {
			m.outbox = append(m.outbox, fmt.Sprintf("RECALL:%d:%s", u, id))
		}
		if g != nil {
			for _, te := range g.timeline {
				if te.Seq == rec.gseq {
					te.Recalled, te.Body, te.Metadata = true, nil, nil
					if g.marks == nil {
						g.marks = map[uint64]uint64{}
					}
					g.marks[gseq] = te.GroupCount
				}
			}
			re := proto.Clone(ev).(*seqdv1.Event)
			re.Seq, re.GroupSeq, re.GroupCount = gseq, gseq, g.count
			g.timeline = append(g.timeline, re)
			g.info.LastGroupSeq = gseq
		}
		rec.recalled = true
		p.check = func(t *rapid.T, r *OpResult) {
			if r.Recalled != n {
				t.Fatalf("recall of %s recalled %d copies, want %d", id, r.Recalled, n)
			}
		}
	}
	m.run(t, p)
}

func (m *propModel) del(t *rapid.T) {
	u := rapid.SampledFrom(m.users).Draw(t, "deleter")
	ids := slices.Clone(m.msgIDs)
	for _, it := range m.fanned {
		if it.Kind == clusterv1.FanoutItem_KIND_MESSAGE && !slices.Contains(ids, it.Event.MessageId) {
			ids = append(ids, it.Event.MessageId)
		}
	}
	if len(ids) == 0 {
		t.Skip("no messages")
	}
	id := rapid.SampledFrom(ids).Draw(t, "deleteID")
	var cseq uint64
	found := false
	if rec := m.msgs[id]; rec != nil && !rec.gone {
		for _, c := range rec.copies {
			if c.User == u {
				cseq, found = c.Seq, true
			}
		}
	}
	if !found {
		cseq, found = m.copies[copyName(u, kMessage, id)]
	}
	pu := m.u[u]
	seq := m.next(t, u)
	if pu.last > 0 && rapid.IntRange(0, 7).Draw(t, "staleDelete") == 0 {
		seq = rapid.Uint64Range(1, pu.last).Draw(t, "staleDeleteSeq")
	}
	p := &propPlan{what: fmt.Sprintf("delete %s by %d", id, u), op: opDelete(u, id, seq)}
	var e *seqdv1.Event
	if found {
		e = m.find(u, cseq)
	}
	switch {
	case e == nil:
		p.want = stRejected
	case e.Deleted:
		p.want = stOK
		p.check = func(t *rapid.T, r *OpResult) {
			if r.DeleteSeq != 0 {
				t.Fatalf("repeated delete used seq %d", r.DeleteSeq)
			}
		}
	case seq <= pu.last:
		p.want = stOutOfOrder
	default:
		p.want = stOK
		e.Deleted, e.Body, e.Metadata = true, nil, nil
		m.appendEvent(u, &seqdv1.Event{Seq: seq, Kind: kDelete, Conversation: e.Conversation, MessageId: id, Sender: u, Outgoing: true})
		p.check = func(t *rapid.T, r *OpResult) {
			if r.DeleteSeq != seq {
				t.Fatalf("delete seq %d, want %d", r.DeleteSeq, seq)
			}
		}
	}
	m.run(t, p)
}

func (m *propModel) createGroup(t *rapid.T) {
	if len(m.gids) > 0 && rapid.IntRange(0, 5).Draw(t, "recreate") == 0 {
		g := m.drawGroup(t, false)
		// A create naming only the owner differs from the group unless
		// the owner is its only member (then it is a retried create).
		want := stRejected
		if len(g.info.Members) == 1 {
			want = stOK
		}
		m.run(t, &propPlan{what: "create an existing group", op: opCreateGroup(g.info.GroupId, g.info.Owner, false, propThreshold), want: want})
		return
	}
	if len(m.gids) >= 4 {
		t.Skip("enough groups")
	}
	owner := rapid.SampledFrom(m.users).Draw(t, "owner")
	members := rapid.SliceOfN(rapid.SampledFrom(m.users), 0, 6).Draw(t, "members")
	rf := rapid.Bool().Draw(t, "readFanout")
	id := m.users[0] + uint64(len(m.gids))
	info := &seqdv1.GroupInfo{GroupId: id, Owner: owner}
	for _, u := range append([]uint64{owner}, members...) {
		if _, ok := isMember(info, u); !ok {
			info.Members = append(info.Members, &seqdv1.GroupMember{User: u})
		}
	}
	info.ReadFanout = rf || len(info.Members) > propThreshold
	m.groups[id] = &propGroup{info: info}
	m.gids = append(m.gids, id)
	want := proto.Clone(info).(*seqdv1.GroupInfo)
	m.run(t, &propPlan{what: fmt.Sprintf("create group %d", id), op: opCreateGroup(id, owner, rf, propThreshold, members...), want: stOK,
		check: func(t *rapid.T, r *OpResult) {
			if diff := protoDiff(want, r.Group); diff != "" {
				t.Fatalf("created group:\n%s", diff)
			}
		}})
}

func (m *propModel) addMembers(t *rapid.T) {
	g := m.drawGroup(t, false)
	users := rapid.SliceOfN(rapid.SampledFrom(m.users), 1, 3).Draw(t, "add")
	hist := rapid.Bool().Draw(t, "withHistory")
	// Leaders propose unread_from_join; entries from before it must
	// still replay as they were applied.
	legacy := hist && rapid.Bool().Draw(t, "legacyEntry")
	next := proto.Clone(g.info).(*seqdv1.GroupInfo)
	for _, u := range users {
		if _, ok := isMember(next, u); ok {
			continue
		}
		joined := g.info.LastGroupSeq
		if hist {
			joined = 0
		}
		next.Members = append(next.Members, &seqdv1.GroupMember{User: u, JoinedAfterGseq: joined})
	}
	p := &propPlan{what: fmt.Sprintf("add %v to group %d (history %v, legacy %v)", users, g.info.GroupId, hist, legacy),
		op: opAddMembers(g.info.GroupId, hist, propThreshold, users...)}
	p.op.GetAddMembers().UnreadFromJoin = !legacy
	if !g.info.ReadFanout && len(next.Members) > propThreshold {
		p.want = stRejected
	} else {
		p.want = stOK
		if g.info.ReadFanout {
			// A newcomer's unread counts from where it joined, or, in a
			// legacy with-history entry, from the start.
			floor := g.count
			if legacy {
				floor = 0
			}
			for _, mem := range next.Members[len(g.info.Members):] {
				cs := m.conv(mem.User, gconv(g.info.GroupId))
				cs.rf = true
				cs.readCount = max(cs.readCount, floor)
				cs.latestCount = max(cs.latestCount, floor)
				if legacy {
					// What it sees of the history was not recalled.
					for _, c := range g.recalledSince(0, g.info.LastGroupSeq) {
						if cs.recalled == nil {
							cs.recalled = map[uint64]bool{}
						}
						cs.recalled[c] = true
					}
				}
			}
		}
		g.info = next
	}
	m.run(t, p)
}

func (m *propModel) removeMembers(t *rapid.T) {
	g := m.drawGroup(t, false)
	users := rapid.SliceOfN(rapid.SampledFrom(m.users), 1, 2).Draw(t, "remove")
	p := &propPlan{what: fmt.Sprintf("remove %v from group %d", users, g.info.GroupId), op: opRemoveMembers(g.info.GroupId, users...)}
	if slices.Contains(users, g.info.Owner) {
		p.want = stRejected
	} else {
		p.want = stOK
		g.info.Members = slices.DeleteFunc(g.info.Members, func(mem *seqdv1.GroupMember) bool { return slices.Contains(users, mem.User) })
	}
	m.run(t, p)
}

// hint runs one hint round of a read-fanout group in one or two chunks;
// sometimes the round stops after its first chunk (the leader lost
// leadership), and the next round starts over.
// recalledSince returns the group counts of the messages recalled by the
// timeline's recall entries in (after, upTo], in timeline order.
func (g *propGroup) recalledSince(after, upTo uint64) []uint64 {
	var out []uint64
	for _, re := range g.timeline {
		if re.Kind != kRecall || re.GroupSeq <= after || re.GroupSeq > upTo {
			continue
		}
		if c, ok := g.marks[re.GroupSeq]; ok {
			out = append(out, c)
		}
	}
	return out
}

func (m *propModel) hint(t *rapid.T) {
	g := m.drawGroup(t, true)
	var members []uint64
	for _, mem := range g.info.Members {
		members = append(members, mem.User)
	}
	split := rapid.IntRange(0, len(members)).Draw(t, "split")
	chunks := [][]uint64{members}
	if split > 0 && split < len(members) {
		chunks = [][]uint64{members[:split], members[split:]}
	}
	interrupted := len(chunks) > 1 && rapid.IntRange(0, 3).Draw(t, "interrupted") == 0
	// A leader of a shard with every replica on formatHintExpired sets
	// with_expired; one with a replica before it does not.
	withExpired := rapid.Bool().Draw(t, "withExpired")
	// A leader of a shard with every replica on formatExpiryHints tells
	// the group's expired count in every round of a group with
	// expiry_hints, at the last round's group seq too.
	var told uint64
	if rapid.Bool().Draw(t, "tellExpired") {
		told = g.expired
	}
	gseq, count := g.info.LastGroupSeq, g.count
	recalled := g.recalledSince(g.hinted, gseq)
	for i, chunk := range chunks {
		if interrupted && i > 0 {
			return
		}
		final := i == len(chunks)-1
		var appends []*clusterv1.Append
		for _, u := range chunk {
			appends = append(appends, &clusterv1.Append{User: u, Seq: m.next(t, u)})
		}
		m.leaderChange(t, appends)
		op := opHint(g.info.GroupId, gseq, count, final, nil, appends...)
		op.GetGroupHint().WithExpired = withExpired
		op.GetGroupHint().ToldExpired = told
		var expired uint64
		if withExpired || told > 0 {
			expired = g.expired
		}
		id := fmt.Sprintf("h%d.%d", g.info.GroupId, gseq)
		if told > 0 {
			id = fmt.Sprintf("h%d.%d.x%d", g.info.GroupId, gseq, told)
		}
		p := &propPlan{what: fmt.Sprintf("hint group %d gseq %d chunk %d (with_expired %v, told %d)", g.info.GroupId, gseq, i, withExpired, told), op: op}
		switch {
		case gseq < g.hinted || gseq == g.hinted && final && told <= g.hintedExpired:
			p.want = stOK
		case m.outOfOrder(appends):
			p.want = stOutOfOrder
		default:
			p.want = stOK
			for _, a := range appends {
				m.appendEvent(a.User, &seqdv1.Event{Seq: a.Seq, Kind: kHint, Conversation: gconv(g.info.GroupId), GroupSeq: gseq, GroupCount: count,
					MessageId: id, RecalledGroupCounts: recalled, GroupExpiredCount: expired})
			}
			if final {
				if gseq == g.hinted {
					m.stats["(rounds telling a count at the last round's group seq)"]++
				}
				g.hinted = gseq
				g.hintedExpired = max(g.hintedExpired, told)
			}
		}
		m.run(t, p)
		if p.want == stOutOfOrder {
			return
		}
	}
}

// deliver applies items a peer shard queued: new messages, retries of
// earlier deliveries, and recalls.
func (m *propModel) deliver(t *rapid.T) {
	var items []*clusterv1.FanoutItem
	switch mode := rapid.IntRange(0, 2).Draw(t, "deliverMode"); {
	case mode == 0 || len(m.fanned) == 0:
		m.peerSeq++
		id := DirectMessageID(m.peer, m.peerSeq)
		sent := m.h.now - int64(rapid.IntRange(0, 2000).Draw(t, "age"))
		for _, u := range rapid.SliceOfNDistinct(rapid.SampledFrom(m.users), 1, 2, rapid.ID[uint64]).Draw(t, "deliverTo") {
			items = append(items, &clusterv1.FanoutItem{Kind: clusterv1.FanoutItem_KIND_MESSAGE, User: u, Event: &seqdv1.Event{
				Kind: kMessage, Conversation: dconv(77), MessageId: id, Sender: m.peer, Body: []byte("from the peer " + id), SentAtMs: sent}})
		}
		m.fanned = append(m.fanned, items...)
	case mode == 1:
		items = rapid.SliceOfNDistinct(rapid.SampledFrom(m.fanned), 1, 2, func(it *clusterv1.FanoutItem) string {
			return fmt.Sprintf("%d/%v/%s", it.User, it.Kind, it.Event.MessageId)
		}).Draw(t, "redeliver")
	default:
		it := rapid.SampledFrom(m.fanned).Draw(t, "recallOf")
		rec := &clusterv1.FanoutItem{Kind: clusterv1.FanoutItem_KIND_RECALL, User: it.User, Event: &seqdv1.Event{
			Kind: kRecall, Conversation: it.Event.Conversation, MessageId: it.Event.MessageId, Sender: m.peer, SentAtMs: m.h.now}}
		items = []*clusterv1.FanoutItem{rec}
		if !slices.ContainsFunc(m.fanned, func(f *clusterv1.FanoutItem) bool { return proto.Equal(f, rec) }) {
			m.fanned = append(m.fanned, rec)
		}
	}
	var appends []*clusterv1.Append
	for _, it := range items {
		appends = append(appends, &clusterv1.Append{User: it.User, Seq: m.next(t, it.User)})
	}
	m.leaderChange(t, appends)
	seqs := make([]uint64, len(appends))
	var fresh []int
	var freshAppends []*clusterv1.Append
	for i, a := range appends {
		seqs[i] = a.Seq
		_, done := m.copies[copyName(items[i].User, eventKind(items[i].Kind), items[i].Event.MessageId)]
		// A message older than what retention removed (dropCopy): skipped
		// as applied.
		old := items[i].Kind == clusterv1.FanoutItem_KIND_MESSAGE && items[i].Event.SentAtMs > 0 &&
			items[i].Event.SentAtMs <= m.u[items[i].User].expiredThrough
		if !done && !old {
			fresh = append(fresh, i)
			freshAppends = append(freshAppends, a)
		}
	}
	p := &propPlan{what: fmt.Sprintf("deliver %d items", len(items)), op: opDeliver(items, seqs...)}
	if m.outOfOrder(freshAppends) {
		p.want = stOutOfOrder
	} else {
		p.want = stOK
		for _, i := range fresh {
			it := items[i]
			e := proto.Clone(it.Event).(*seqdv1.Event)
			e.Seq = seqs[i]
			if it.Kind == clusterv1.FanoutItem_KIND_MESSAGE {
				e.Outgoing = it.User == e.Sender
			} else if cseq, ok := m.copies[copyName(it.User, kMessage, e.MessageId)]; ok {
				if c := m.find(it.User, cseq); c != nil && !c.Recalled {
					c.Recalled, c.Body, c.Metadata = true, nil, nil
				}
			}
			e.Kind = eventKind(it.Kind)
			m.appendEvent(it.User, e)
			m.copies[copyName(it.User, e.Kind, e.MessageId)] = seqs[i]
		}
		n := uint32(len(items))
		p.check = func(t *rapid.T, r *OpResult) {
			if r.Delivered != n {
				t.Fatalf("delivered %d, want %d", r.Delivered, n)
			}
		}
	}
	m.run(t, p)
}

// myOutbox is the FSM's outbox restricted to this check's remote users.
func (m *propModel) myOutbox(t *rapid.T) ([]string, [][]byte) {
	items, err := m.h.f.Outbox(1 << 20)
	if err != nil {
		t.Fatalf("Outbox: %v", err)
	}
	var got []string
	var keys [][]byte
	for _, it := range items {
		if slices.Contains(m.remote, it.Item.User) {
			got = append(got, fmt.Sprintf("%s:%d:%s", strings.TrimPrefix(it.Item.Kind.String(), "KIND_"), it.Item.User, it.Item.Event.GetMessageId()))
			keys = append(keys, it.Key)
		}
	}
	return got, keys
}

func (m *propModel) outboxAck(t *rapid.T) {
	_, keys := m.myOutbox(t)
	if len(keys) == 0 {
		t.Skip("outbox empty")
	}
	idx := rapid.SliceOfNDistinct(rapid.IntRange(0, len(keys)-1), 1, len(keys), rapid.ID[int]).Draw(t, "ack")
	var ack [][]byte
	for _, i := range idx {
		ack = append(ack, keys[i])
	}
	slices.Sort(idx)
	for j := len(idx) - 1; j >= 0; j-- {
		m.outbox = slices.Delete(m.outbox, idx[j], idx[j]+1)
	}
	m.run(t, &propPlan{what: "outbox ack", op: opOutboxAck(ack...), want: stOK})
}

// expire applies retention: per user (in key order) the oldest events sent
// before the cut, up to the limit, stopping at each user's first newer one.
func (m *propModel) expire(t *rapid.T) {
	before := m.h.now - int64(rapid.IntRange(0, 15_000).Draw(t, "retention"))
	limit := rapid.IntRange(1, 30).Draw(t, "expireLimit")
	removed := 0
	for _, u := range m.users {
		pu := m.u[u]
		for len(pu.inbox) > 0 && removed < limit && pu.inbox[0].SentAtMs < before {
			pu.truncBelow = max(pu.truncBelow, pu.inbox[0].Seq+1)
			pu.inbox = pu.inbox[1:]
			removed++
		}
	}
	m.stats["(events expired)"] += removed
	m.run(t, &propPlan{what: fmt.Sprintf("expire before %d limit %d", before, limit), op: opExpire(before, uint32(limit)), want: stOK})
}

// expireScan is one retention step: from a user, per user in key order
// the oldest events sent before a time, at most maxUsers users (those that
// ever had an inbox event) and limit events; a message's record goes once a step
// removes a copy and none of its copies is left.
func (m *propModel) expireScan(t *rapid.T) {
	before := m.h.now - int64(rapid.IntRange(0, 15_000).Draw(t, "retention"))
	from := m.users[0] - 1 + rapid.Uint64Range(0, uint64(len(m.users))).Draw(t, "expireFrom")
	maxUsers := rapid.IntRange(1, 6).Draw(t, "expireUsers")
	limit := rapid.IntRange(1, 30).Draw(t, "expireLimit")
	// A leader whose replicas all apply formatDropCopies sets drop_copies.
	dropCopies := rapid.Bool().Draw(t, "dropCopies")
	removed, next := modelSteps(m.users, from, maxUsers, limit,
		func(u uint64) bool { return m.u[u].last != 0 }, // the users that ever had an event
		func(u uint64) bool { return len(m.u[u].inbox) > 0 && m.u[u].inbox[0].SentAtMs < before },
		func(u uint64) {
			pu := m.u[u]
			e := pu.inbox[0]
			pu.truncBelow = max(pu.truncBelow, e.Seq+1)
			pu.inbox = pu.inbox[1:]
			// The record goes with the last of its copies to leave.
			m.dropIfNoCopy(e)
			if dropCopies && (e.Kind == kMessage || e.Kind == kRecall || e.Kind == kHint) {
				pu.expiredThrough = max(pu.expiredThrough, e.SentAtMs)
				delete(m.copies, copyName(u, e.Kind, e.MessageId))
			}
		})
	m.stats["(events expired by steps)"] += removed
	op := opExpireScan(before, from, uint32(maxUsers), uint32(limit))
	op.GetExpireScan().DropCopies = dropCopies
	m.run(t, stepPlan(fmt.Sprintf("expire step before %d from %d users %d limit %d drop_copies %v", before, from, maxUsers, limit, dropCopies),
		op, removed, next))
}

// modelSteps is a retention step over owners (users or groups, in key
// order) from `from` on: it looks at up to maxOwners owners that count,
// and while an owner's oldest is due removes it (remove), at most limit in
// all. It returns how many it removed and the owner the next step starts
// at (0: it passed the last one).
func modelSteps(owners []uint64, from uint64, maxOwners, limit int, counts, due func(uint64) bool, remove func(uint64)) (removed int, next uint64) {
	looked := 0
	for _, o := range owners {
		if o < from || !counts(o) {
			continue
		}
		if looked == maxOwners {
			return removed, o
		}
		looked++
		for due(o) {
			if removed == limit {
				return removed, o
			}
			remove(o)
			removed++
		}
	}
	return removed, 0
}

// stepPlan is the plan of a retention step, which must remove `removed`
// and say the next step starts at next.
func stepPlan(what string, op *clusterv1.StoreOp, removed int, next uint64) *propPlan {
	return &propPlan{what: what, op: op, want: stOK,
		check: func(t *rapid.T, r *OpResult) {
			if int(r.Expired) != removed || r.ExpireNext != next {
				t.Fatalf("step expired %d and stopped at %d, want %d and %d", r.Expired, r.ExpireNext, removed, next)
			}
		}}
}

// copyName names a delivered copy in propModel.copies, as the FSM's copy
// key does: user, event kind, message id.
func copyName(user uint64, kind seqdv1.EventKind, id string) string {
	return fmt.Sprintf("%d/%v/%s", user, kind, id)
}

// dropIfNoCopy marks the record of message event e gone if none of the
// copies it lists is left in an inbox.
func (m *propModel) dropIfNoCopy(e *seqdv1.Event) {
	if rec := m.msgs[e.MessageId]; e.Kind == kMessage && rec != nil && !slices.ContainsFunc(rec.copies,
		func(c *clusterv1.Append) bool { return m.find(c.User, c.Seq) != nil }) {
		rec.gone = true
	}
}

// expireTimelines is one retention step over the read-fanout timelines:
// entries older than the cutoff that a hint round has covered go, oldest
// first per group, with their recall marks.
func (m *propModel) expireTimelines(t *rapid.T) {
	// From everything sent so far being due (0) to a few ticks' worth.
	before := m.h.now + 1 - int64(rapid.IntRange(0, 3_000).Draw(t, "retention"))
	from := m.users[0] - 1 + rapid.Uint64Range(0, 5).Draw(t, "timelinesFrom")
	maxGroups := rapid.IntRange(1, 3).Draw(t, "timelinesGroups")
	limit := rapid.IntRange(1, 10).Draw(t, "timelinesLimit")
	// A leader of a shard with every replica on formatExpiryHints lists
	// the groups whose expired count a step raises for a hint round.
	hintExpired := rapid.Bool().Draw(t, "hintExpired")
	ids := slices.Sorted(slices.Values(m.gids))
	removed, next := modelSteps(ids, from, maxGroups, limit,
		func(id uint64) bool { g := m.groups[id]; return g.info.ReadFanout && g.info.LastGroupSeq != 0 }, // a timeline
		func(id uint64) bool {
			g := m.groups[id]
			return len(g.timeline) > 0 && g.timeline[0].SentAtMs < before && g.timeline[0].Seq <= g.hinted
		},
		func(id uint64) {
			g := m.groups[id]
			e := g.timeline[0]
			g.timeline = g.timeline[1:]
			g.start, g.expired = e.Seq+1, e.GroupCount
			g.expiryHints = g.expiryHints || hintExpired
			delete(g.marks, e.Seq)
			// A message's record goes with its entry once no copy it
			// lists is left.
			m.dropIfNoCopy(e)
		})
	m.stats["(timeline entries expired)"] += removed
	op := opExpireTimelines(before, from, uint32(maxGroups), uint32(limit))
	op.GetExpireTimelines().HintExpired = hintExpired
	m.run(t, stepPlan(fmt.Sprintf("expire timelines before %d from %d groups %d limit %d (hint_expired %v)", before, from, maxGroups, limit, hintExpired),
		op, removed, next))
}

// sweepDedup deletes dedup records past their TTL and a grace: no answer
// changes (checkAll asks Dedup for every record the model remembers).
func (m *propModel) sweepDedup(t *rapid.T) {
	limit := rapid.IntRange(1, 20).Draw(t, "sweepLimit")
	grace := rapid.Int64Range(0, 5000).Draw(t, "sweepGrace")
	m.run(t, &propPlan{what: fmt.Sprintf("sweep limit %d grace %d", limit, grace), op: opSweep(uint32(limit), grace), want: stOK})
}

func (m *propModel) tick(t *rapid.T) {
	m.h.now += int64(rapid.IntRange(0, 3000).Draw(t, "ms"))
}

// replay hands the FSM an entry it already applied (Raft does after a
// restart): nothing happens.
func (m *propModel) replay(t *rapid.T) {
	if m.h.idx < m.first {
		t.Skip("nothing applied yet")
	}
	i := rapid.Uint64Range(m.first, m.h.idx).Draw(t, "replayIndex")
	r := m.h.f.Apply(&raft.Log{Type: raft.LogCommand, Index: i, Data: m.h.entries[i]}).(*BatchResult)
	if r.Err != nil || r.Results != nil {
		t.Fatalf("replay of entry %d: %+v", i, r)
	}
}

// restart closes and reopens Badger, then replays the last entries.
func (m *propModel) restart(t *rapid.T) {
	if rapid.IntRange(0, 9).Draw(t, "restartDice") != 0 {
		t.Skip("restarts are slow; keep them rare")
	}
	m.h.reopen(t)
	if m.h.f.AppliedIndex() != m.h.idx {
		t.Fatalf("applied index %d after restart, want %d", m.h.f.AppliedIndex(), m.h.idx)
	}
	for i := max(m.first, m.h.idx-5); i <= m.h.idx && i >= m.first; i++ {
		m.h.f.Apply(&raft.Log{Type: raft.LogCommand, Index: i, Data: m.h.entries[i]})
	}
}

// checkAll compares every read with the model and checks the invariants.
func (m *propModel) checkAll(t *rapid.T) {
	f := m.h.f
	inboxes := map[uint64][]*seqdv1.Event{}
	for _, u := range m.users {
		pu := m.u[u]
		res, err := f.Sync(u, 0, 1<<20)
		if err != nil {
			t.Fatalf("Sync(%d): %v", u, err)
		}
		evs := res.Events
		inboxes[u] = evs
		for i := 1; i < len(evs); i++ {
			if evs[i].Seq <= evs[i-1].Seq {
				t.Fatalf("user %d inbox not strictly increasing: %v", u, seqsOf(evs))
			}
		}
		if len(evs) != len(pu.inbox) {
			t.Fatalf("user %d inbox %v, model %v", u, seqsOf(evs), seqsOf(pu.inbox))
		}
		for i, e := range evs {
			if !proto.Equal(e, pu.inbox[i]) {
				t.Fatalf("user %d event %d:\n got %s\nwant %s", u, i, prototext.Format(e), prototext.Format(pu.inbox[i]))
			}
		}
		if res.Truncated != (pu.truncBelow > 1) || res.Truncated && res.EarliestSeq != pu.truncBelow {
			t.Fatalf("user %d: truncated %v earliest %d, model truncated below %d", u, res.Truncated, res.EarliestSeq, pu.truncBelow)
		}
		if last, _ := f.LastSeq(u); last != pu.last {
			t.Fatalf("user %d last seq %d, model %d", u, last, pu.last)
		}

		// Unread equals what the inbox implies, and the total is the sum.
		gotConvs, gotTotal := unreadOf(t, f, u)
		wantConvs, wantTotal := m.implied(u)
		for k, n := range wantConvs {
			if n == 0 {
				delete(wantConvs, k)
			}
		}
		var sum uint64
		for _, n := range gotConvs {
			sum += n
		}
		if fmt.Sprint(gotConvs) != fmt.Sprint(wantConvs) || gotTotal != wantTotal || sum != gotTotal {
			t.Fatalf("user %d unread %v total %d (sum %d); the inbox implies %v total %d", u, gotConvs, gotTotal, sum, wantConvs, wantTotal)
		}

		// No message twice in an inbox; refused sends in none.
		seen := map[string]bool{}
		for _, e := range evs {
			if e.Kind != kMessage {
				continue
			}
			if seen[e.MessageId] {
				t.Fatalf("user %d holds message %s twice", u, e.MessageId)
			}
			seen[e.MessageId] = true
			if m.refused[e.MessageId] {
				t.Fatalf("user %d holds message %s of a refused send", u, e.MessageId)
			}
		}

		// Sync from any checkpoint, in pages of any size, returns exactly
		// the events above it, in order.
		cps := []uint64{0, pu.last, pu.last + 1}
		for _, e := range evs {
			cps = append(cps, e.Seq, e.Seq-1)
		}
		cp := rapid.SampledFrom(cps).Draw(t, "checkpoint")
		limit := rapid.IntRange(1, 5).Draw(t, "pageSize")
		var want, got []uint64
		for _, e := range evs {
			if e.Seq > cp {
				want = append(want, e.Seq)
			}
		}
		for pages := 0; ; pages++ {
			page, err := f.Sync(u, cp, limit)
			if err != nil || pages > len(evs)+1 {
				t.Fatalf("paging user %d: %v after %d pages", u, err, pages)
			}
			got = append(got, seqsOf(page.Events)...)
			cp = page.NextCheckpoint
			if !page.HasMore {
				break
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) && len(got)+len(want) > 0 {
			t.Fatalf("user %d: paged Sync returned %v, want %v", u, got, want)
		}
	}

	// Every acknowledged message is in each intended inbox exactly once
	// (unless retention removed it).
	for _, id := range m.msgIDs {
		for _, c := range m.msgs[id].copies {
			n := 0
			for _, e := range inboxes[c.User] {
				if e.Kind == kMessage && e.MessageId == id {
					n++
				}
			}
			want := 1
			if m.find(c.User, c.Seq) == nil {
				want = 0
			}
			if n != want {
				t.Fatalf("message %s is %d times in user %d's inbox, want %d", id, n, c.User, want)
			}
		}
		rec, err := f.Message(id)
		if msg := m.msgs[id]; err != nil || (rec == nil) != msg.gone || rec != nil && rec.Recalled != msg.recalled {
			t.Fatalf("message record %s: %v %v (model: recalled %v, removed %v)", id, rec, err, msg.recalled, msg.gone)
		}
	}

	// History of one conversation: its live message copies, newest first.
	u := rapid.SampledFrom(m.users).Draw(t, "historyUser")
	convs := []*seqdv1.Conversation{dconv(1)}
	for _, e := range m.u[u].inbox {
		convs = append(convs, e.Conversation)
	}
	c := rapid.SampledFrom(convs).Draw(t, "historyConv")
	hist, _, err := f.History(u, c, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var wantHist []uint64
	for i := len(m.u[u].inbox) - 1; i >= 0; i-- {
		e := m.u[u].inbox[i]
		if e.Kind == kMessage && !e.Deleted && convName(e.Conversation) == convName(c) {
			wantHist = append(wantHist, e.Seq)
		}
	}
	if fmt.Sprint(seqsOf(hist)) != fmt.Sprint(wantHist) && len(hist)+len(wantHist) > 0 {
		t.Fatalf("History(%d, %s) = %v, want %v", u, convName(c), seqsOf(hist), wantHist)
	}

	// Groups, timelines and who may read them.
	unhinted := map[uint64]bool{}
	for _, id := range m.gids {
		g := m.groups[id]
		rec, err := f.Group(id)
		if err != nil || !proto.Equal(rec.Info, g.info) || rec.MessageCount != g.count || rec.HintedGseq != g.hinted {
			t.Fatalf("group %d: %v %v; model %v count %d hinted %d", id, rec, err, g.info, g.count, g.hinted)
		}
		if g.news() {
			unhinted[id] = true
		}
		for _, u := range m.users {
			res, err := f.SyncGroup(u, id, 0, 1<<20)
			mem, ok := isMember(g.info, u)
			if !ok {
				if !errors.Is(err, ErrNotMember) {
					t.Fatalf("non-member %d reads group %d: %v", u, id, err)
				}
				continue
			}
			if !g.info.ReadFanout {
				if !errors.Is(err, ErrWriteFanout) {
					t.Fatalf("member %d reads write-fanout group %d's timeline: %v", u, id, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("SyncGroup(%d, %d): %v", u, id, err)
			}
			var want []*seqdv1.Event
			for _, e := range g.timeline {
				if e.Seq > mem.JoinedAfterGseq {
					want = append(want, e)
				}
			}
			if truncated := g.start > mem.JoinedAfterGseq+1; res.Truncated != truncated || truncated && res.EarliestSeq != g.start {
				t.Fatalf("member %d of group %d: truncated %v from %d, want %v from %d", u, id, res.Truncated, res.EarliestSeq, truncated, g.start)
			}
			if len(res.Events) != len(want) {
				t.Fatalf("member %d of group %d sees %v, want %v", u, id, seqsOf(res.Events), seqsOf(want))
			}
			for i := range want {
				if !proto.Equal(res.Events[i], want[i]) {
					t.Fatalf("group %d timeline entry:\n got %s\nwant %s", id, prototext.Format(res.Events[i]), prototext.Format(want[i]))
				}
			}
		}
	}
	listed, err := f.ReadFanoutGroups()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range listed {
		if _, mine := m.groups[g.Info.GroupId]; mine && !unhinted[g.Info.GroupId] {
			t.Fatalf("group %d listed for hints without news", g.Info.GroupId)
		}
		if mg := m.groups[g.Info.GroupId]; mg != nil && (g.Counters.ExpiredCount != mg.expired || g.Counters.HintedExpired != mg.hintedExpired || g.Counters.ExpiryHints != mg.expiryHints) {
			t.Fatalf("group %d listed with counters %v; model expired %d, told %d, expiry hints %v", g.Info.GroupId, g.Counters, mg.expired, mg.hintedExpired, mg.expiryHints)
		}
		delete(unhinted, g.Info.GroupId)
	}
	if len(unhinted) > 0 {
		t.Fatalf("groups with news not listed for hints: %v", unhinted)
	}

	// The outbox holds exactly the queued deliveries, in order.
	if got, _ := m.myOutbox(t); fmt.Sprint(got) != fmt.Sprint(m.outbox) && len(got)+len(m.outbox) > 0 {
		t.Fatalf("outbox %v, model %v", got, m.outbox)
	}
	// Dedup answers while the record lives.
	for _, d := range m.dedup {
		got, err := f.Dedup(d.sender, d.cmid, m.h.now)
		if err != nil {
			t.Fatal(err)
		}
		if d.expires > m.h.now {
			want := proto.Clone(d.resp).(*seqdv1.SendResponse)
			want.Duplicate = true
			if diff := protoDiff(want, got); diff != "" {
				t.Fatalf("Dedup(%d, %s):\n%s", d.sender, d.cmid, diff)
			}
		} else if got != nil {
			t.Fatalf("expired dedup record (%d, %s) still answers", d.sender, d.cmid)
		}
	}
	if f.AppliedIndex() != m.h.idx {
		t.Fatalf("applied index %d, want %d", f.AppliedIndex(), m.h.idx)
	}
}

func TestPropStoreModel(t *testing.T) {
	runPropModel(t, func(m *propModel) map[string]func(*rapid.T) {
		actions := groupActions(m)
		maps.Copy(actions, map[string]func(*rapid.T){
			"sendDirect":  m.sendDirect,
			"sendDirect2": m.sendDirect,
			"retry":       m.retry,
			"batch":       m.batch,
			"delete":      m.del,
			"deliver":     m.deliver,
			"outboxAck":   m.outboxAck,
			"expire":      m.expire,
			"sweepDedup":  m.sweepDedup,
			"replay":      m.replay,
		})
		return actions
	})
}

// TestPropGroupRetention runs the model with the group operations and
// retention only, so that read-fanout timelines, hint rounds, recalls and
// their removal meet often (the whole model above meets them seldom).
func TestPropGroupRetention(t *testing.T) {
	runPropModel(t, func(m *propModel) map[string]func(*rapid.T) {
		actions := groupActions(m)
		actions["expireTimelines2"] = m.expireTimelines
		return actions
	})
}

// groupActions are the model's actions on groups, marks, recalls and
// retention, with ticks, restarts and the checks: what both property
// tests run.
func groupActions(m *propModel) map[string]func(*rapid.T) {
	return map[string]func(*rapid.T){
		"sendGroup":       m.sendGroup,
		"sendGroup2":      m.sendGroup,
		"markRead":        m.markRead,
		"recall":          m.recall,
		"createGroup":     m.createGroup,
		"addMembers":      m.addMembers,
		"removeMembers":   m.removeMembers,
		"hint":            m.hint,
		"hint2":           m.hint,
		"expireScan":      m.expireScan,
		"expireTimelines": m.expireTimelines,
		"tick":            m.tick,
		"restart":         m.restart,
		"":                m.checkAll,
	}
}

// runPropModel checks the model against the FSM with the actions
// actions(m) gives each check.
func runPropModel(t *testing.T, actions func(m *propModel) map[string]func(*rapid.T)) {
	h := newHarness(t)
	check := 0
	stats := map[string]int{}
	rapid.Check(t, func(rt *rapid.T) {
		check++
		h.t = rt
		m := newPropModel(h, check)
		m.stats = stats
		// Drop earlier checks' outbox so reading it stays cheap.
		if items, err := h.f.Outbox(1 << 20); err == nil && len(items) > 0 {
			var keys [][]byte
			for _, it := range items {
				keys = append(keys, it.Key)
			}
			h.apply(opOutboxAck(keys...))
		}
		m.first = h.idx + 1
		rt.Repeat(actions(m))
	})
	// With -v, show how often each op met each outcome.
	keys := make([]string, 0, len(stats))
	for k := range stats {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		t.Logf("%-28s %d", k, stats[k])
	}
}
