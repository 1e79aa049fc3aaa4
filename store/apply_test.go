package store

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// Unit tests of every store op: what it writes when it succeeds, and that
// each refusal writes nothing.

const (
	stOK         = clusterv1.OpStatus_OP_STATUS_OK
	stDuplicate  = clusterv1.OpStatus_OP_STATUS_DUPLICATE
	stOutOfOrder = clusterv1.OpStatus_OP_STATUS_OUT_OF_ORDER
	stRejected   = clusterv1.OpStatus_OP_STATUS_REJECTED

	kMessage = seqdv1.EventKind_EVENT_KIND_MESSAGE
	kRead    = seqdv1.EventKind_EVENT_KIND_READ
	kRecall  = seqdv1.EventKind_EVENT_KIND_RECALL
	kDelete  = seqdv1.EventKind_EVENT_KIND_DELETE
	kHint    = seqdv1.EventKind_EVENT_KIND_GROUP_HINT
)

// refusal is one op that must be refused with status, leaving no trace.
type refusal struct {
	name   string
	op     *clusterv1.StoreOp
	status clusterv1.OpStatus
	msg    string // a substring of the refusal's message, if any
}

func checkRefusals(t *testing.T, h *fsmHarness, cases []refusal) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			before := dumpState(t, h.f)
			r := h.one(c.op)
			if r.Status != c.status {
				t.Fatalf("got %s, want %v", statusOf(r), c.status)
			}
			if c.msg != "" && !strings.Contains(r.Msg, c.msg) {
				t.Fatalf("message %q does not mention %q", r.Msg, c.msg)
			}
			requireUnchanged(t, before, h.f, c.name)
		})
	}
	h.t = t
}

func wantSeqs(t testTB, f *FSM, user uint64, want ...uint64) []*seqdv1.Event {
	t.Helper()
	evs := syncAllEvents(t, f, user)
	if got := seqsOf(evs); fmt.Sprint(got) != fmt.Sprint(want) && !(len(got) == 0 && len(want) == 0) {
		t.Fatalf("user %d inbox seqs %v, want %v", user, got, want)
	}
	return evs
}

func wantUnread(t testTB, f *FSM, user uint64, total uint64, convs map[string]uint64) {
	t.Helper()
	got, gotTotal := unreadOf(t, f, user)
	if convs == nil {
		convs = map[string]uint64{}
	}
	if fmt.Sprint(got) != fmt.Sprint(convs) || gotTotal != total {
		t.Fatalf("user %d unread %v total %d, want %v total %d", user, got, gotTotal, convs, total)
	}
}

// readRecord reads the record under key into m.
func readRecord(t testTB, f *FSM, key []byte, m proto.Message) {
	t.Helper()
	if err := f.view(func(txn *badger.Txn) error {
		it, err := txn.Get(key)
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error { return proto.Unmarshal(v, m) })
	}); err != nil {
		t.Fatalf("read %x: %v", key, err)
	}
}

func eventAt(t testTB, f *FSM, user, seq uint64) *seqdv1.Event {
	t.Helper()
	for _, e := range syncAllEvents(t, f, user) {
		if e.Seq == seq {
			return e
		}
	}
	t.Fatalf("user %d has no event at seq %d", user, seq)
	return nil
}

func TestApplySendDirect(t *testing.T) {
	h := newHarness(t)
	r := h.must(opSend(7, "c1", "hello", apps(1, 10, 2, 20, 3, 30)...))
	want := &seqdv1.SendResponse{MessageId: "1.10", SenderSeq: 10,
		Deliveries: []*seqdv1.Delivery{{User: 2, Seq: 20}, {User: 3, Seq: 30}}}
	if d := protoDiff(want, r.Send); d != "" {
		t.Fatalf("send response:\n%s", d)
	}
	own := wantSeqs(t, h.f, 1, 10)[0]
	wantOwn := &seqdv1.Event{Seq: 10, Kind: kMessage, Conversation: dconv(7), MessageId: "1.10", Sender: 1,
		Body: []byte("hello"), SentAtMs: h.now, Outgoing: true}
	if d := protoDiff(wantOwn, own); d != "" {
		t.Fatalf("sender's copy:\n%s", d)
	}
	for _, u := range []uint64{2, 3} {
		e := wantSeqs(t, h.f, u, u*10)[0]
		if e.Outgoing || e.MessageId != "1.10" || string(e.Body) != "hello" || e.Sender != 1 {
			t.Fatalf("user %d's copy: %v", u, e)
		}
		wantUnread(t, h.f, u, 1, map[string]uint64{"d7": 1})
		hist, _, err := h.f.History(u, dconv(7), 0, 10)
		if err != nil || len(hist) != 1 || hist[0].Seq != u*10 {
			t.Fatalf("History(%d): %v %v", u, hist, err)
		}
	}
	wantUnread(t, h.f, 1, 0, nil)
	rec, err := h.f.Message("1.10")
	if err != nil || rec == nil {
		t.Fatalf("Message: %v %v", rec, err)
	}
	if rec.Sender != 1 || rec.SentAtMs != h.now || len(rec.Copies) != 3 || rec.Recalled {
		t.Fatalf("message record %v", rec)
	}
	if last, _ := h.f.LastSeq(2); last != 20 {
		t.Fatalf("LastSeq(2) = %d", last)
	}
}

func TestApplySendRefusals(t *testing.T) {
	h := newHarness(t)
	h.must(opSend(7, "c1", "hello", apps(1, 10, 2, 20)...))
	h.must(opCreateGroup(50, 1, true, 100, 2))
	h.must(opCreateGroup(60, 1, false, 100, 2))
	h.must(opGroupSend(50, 3, true, 1, "g1", "to 50", apps(1, 11)...))

	full := func(mut func(*clusterv1.SendOp)) *clusterv1.StoreOp {
		op := opSend(7, "c2", "x", apps(1, 12, 2, 21)...)
		mut(op.GetSend())
		return op
	}
	checkRefusals(t, h, []refusal{
		{"no request", full(func(o *clusterv1.SendOp) { o.Request = nil }), stRejected, ""},
		{"no message id", full(func(o *clusterv1.SendOp) { o.MessageId = "" }), stRejected, ""},
		{"no conversation", full(func(o *clusterv1.SendOp) { o.Request.Conversation = nil }), stRejected, ""},
		{"sender seq equals newest", opSend(7, "c2", "x", apps(1, 11, 2, 21)...), stOutOfOrder, "user 1"},
		{"recipient seq below newest", opSend(7, "c2", "x", apps(1, 12, 2, 19)...), stOutOfOrder, "user 2"},
		{"user 0", opSend(7, "c2", "x", apps(1, 12, 0, 5)...), stOutOfOrder, ""},
		{"same user twice not ascending", full(func(o *clusterv1.SendOp) { o.Appends = apps(1, 13, 1, 12) }), stOutOfOrder, ""},
		{"read fanout to unknown group", opGroupSend(99, 1, true, 1, "g2", "x", apps(1, 12)...), stRejected, "group 99"},
		{"read fanout to write-fanout group", opGroupSend(60, 1, true, 1, "g2", "x", apps(1, 12)...), stRejected, "group 60"},
		{"group seq equals newest", opGroupSend(50, 3, true, 1, "g2", "x", apps(1, 12)...), stOutOfOrder, ""},
		{"group seq below newest", opGroupSend(50, 2, true, 1, "g2", "x", apps(1, 12)...), stOutOfOrder, ""},
	})
	// A refused send leaves no dedup record: the retry with fresh seqs goes through.
	r := h.must(opSend(7, "c2", "x", apps(1, 12, 2, 21)...))
	if r.Send.Duplicate || r.Send.SenderSeq != 12 {
		t.Fatalf("retry after refusals: %v", r.Send)
	}
	r = h.must(opGroupSend(50, 4, true, 1, "g2", "x", apps(1, 13)...))
	if r.Send.GroupSeq != 4 {
		t.Fatalf("group retry: %v", r.Send)
	}
}

func TestApplySendDuplicate(t *testing.T) {
	t.Run("retry returns the first result and writes nothing", func(t *testing.T) {
		h := newHarness(t)
		first := h.must(opSend(7, "c1", "hello", apps(1, 10, 2, 20)...)).Send
		before := dumpState(t, h.f)
		h.now += 1000
		// The retry went through a new leader: new seqs.
		r := h.one(opSend(7, "c1", "hello", apps(1, 11, 2, 21)...))
		if r.Status != stDuplicate {
			t.Fatalf("retry: %s", statusOf(r))
		}
		want := proto.Clone(first).(*seqdv1.SendResponse)
		want.Duplicate = true
		if d := protoDiff(want, r.Send); d != "" {
			t.Fatalf("retry's response:\n%s", d)
		}
		requireUnchanged(t, before, h.f, "a duplicate send")
		got, err := h.f.Dedup(1, "c1", h.now)
		if err != nil || protoDiff(want, got) != "" {
			t.Fatalf("Dedup read: %v %v", got, err)
		}
	})
	t.Run("the same id for another message is refused", func(t *testing.T) {
		h := newHarness(t)
		first := remoteTo(opSend(7, "c1", "hello", apps(1, 10, 2, 20)...), 200)
		first.GetSend().Request.Metadata = map[string]string{"k": "v"}
		h.must(first)
		h.now += 1000
		other := func(change func(r *seqdv1.SendRequest)) *clusterv1.StoreOp {
			op := proto.Clone(first).(*clusterv1.StoreOp)
			op.GetSend().Appends = apps(1, 11, 2, 21)
			change(op.GetSend().Request)
			return op
		}
		checkRefusals(t, h, []refusal{
			{"another body", other(func(r *seqdv1.SendRequest) { r.Body = []byte("changed") }), stRejected, "another body"},
			{"other recipients", other(func(r *seqdv1.SendRequest) { r.Recipients = []uint64{3, 200} }), stRejected, "another recipients"},
			{"more recipients", other(func(r *seqdv1.SendRequest) { r.Recipients = []uint64{2, 3, 200} }), stRejected, "another recipients"},
			{"fewer recipients", other(func(r *seqdv1.SendRequest) { r.Recipients = []uint64{2} }), stRejected, "another recipients"},
			{"another conversation", other(func(r *seqdv1.SendRequest) { r.Conversation = dconv(8) }), stRejected, "another conversation"},
			{"other metadata", other(func(r *seqdv1.SendRequest) { r.Metadata = nil }), stRejected, "another metadata"},
		})
		if r := h.one(other(func(*seqdv1.SendRequest) {})); r.Status != stDuplicate {
			t.Fatalf("the same request again: %s, want DUPLICATE", statusOf(r))
		}
		if r := h.one(other(func(r *seqdv1.SendRequest) { r.Body = []byte("changed") })); r.Code != codes.InvalidArgument {
			t.Fatalf("another body: code %v, want INVALID_ARGUMENT", r.Code)
		}
		// The sender deleted its copy: the recipient's still has the body.
		h.must(opDelete(1, "1.10", 11))
		if r := h.one(other(func(r *seqdv1.SendRequest) { r.Body = []byte("changed") })); r.Code != codes.InvalidArgument {
			t.Fatalf("another body after the sender deleted its copy: %s code %v, want INVALID_ARGUMENT", statusOf(r), r.Code)
		}
		// Once the first message's body is gone (recalled), only what is
		// left is compared.
		h.must(opRecall(1, "1.10", 60_000, 0, apps(1, 12, 2, 22)...))
		if r := h.one(other(func(r *seqdv1.SendRequest) { r.Body = []byte("changed") })); r.Status != stDuplicate {
			t.Fatalf("another body after a recall: %s, want DUPLICATE", statusOf(r))
		}
		// A sender on another shard has no copy here: the record and a
		// recipient's copy are compared.
		far := func(body string, rcpts ...uint64) *clusterv1.StoreOp {
			op := opSend(8, "c9", body, apps(2, 30)...)
			op.GetSend().Request.Sender, op.GetSend().Request.Recipients = 300, rcpts
			op.GetSend().MessageId, op.GetSend().RemoteSender = "300.5", true
			return op
		}
		h.must(far("from afar", 2))
		if r := h.one(far("from afar", 2)); r.Status != stDuplicate {
			t.Fatalf("a retry from a remote sender: %s, want DUPLICATE", statusOf(r))
		}
		if r := h.one(far("changed", 2)); r.Code != codes.InvalidArgument || !strings.Contains(r.Msg, "another body") {
			t.Fatalf("another body from a remote sender: %s %q, want INVALID_ARGUMENT naming the body", statusOf(r), r.Msg)
		}
		if r := h.one(far("from afar", 2, 3)); r.Status != stRejected {
			t.Fatalf("other recipients from a remote sender: %s, want REJECTED", statusOf(r))
		}
		// With the only copy here deleted there is no body to compare.
		h.must(opDelete(2, "300.5", 31))
		if r := h.one(far("changed", 2)); r.Status != stDuplicate {
			t.Fatalf("another body from a remote sender, its copy deleted: %s, want DUPLICATE", statusOf(r))
		}
	})
	t.Run("group send from a sender on another shard", func(t *testing.T) {
		// The group's shard holds the timeline entry (read fanout) or the
		// members' copies (write fanout), not the sender's: a changed
		// body under the same id is told from a retry by those.
		h := newHarness(t)
		h.must(opCreateGroup(50, 300, true, 10, 2))
		h.must(opCreateGroup(60, 300, false, 10, 2, 3))
		read := func(body string) *clusterv1.StoreOp {
			op := opGroupSend(50, 1, true, 300, "r1", body)
			op.GetSend().RemoteSender = true
			return op
		}
		write := func(body string) *clusterv1.StoreOp {
			op := opGroupSend(60, 1, false, 300, "w1", body, apps(2, 40, 3, 40)...)
			op.GetSend().RemoteSender = true
			return op
		}
		h.must(read("first"))
		h.must(write("first"))
		for name, op := range map[string]func(string) *clusterv1.StoreOp{"read fanout": read, "write fanout": write} {
			if r := h.one(op("first")); r.Status != stDuplicate {
				t.Fatalf("%s retry: %s, want DUPLICATE", name, statusOf(r))
			}
			if r := h.one(op("second, different")); r.Code != codes.InvalidArgument || !strings.Contains(r.Msg, "another body") {
				t.Fatalf("%s with another body: %s %q, want INVALID_ARGUMENT", name, statusOf(r), r.Msg)
			}
		}
	})
	t.Run("retry in the same entry", func(t *testing.T) {
		h := newHarness(t)
		rs := h.apply(opSend(7, "c1", "hello", apps(1, 10, 2, 20)...), opSend(7, "c1", "hello", apps(1, 11, 2, 21)...))
		if rs[0].Status != stOK || rs[1].Status != stDuplicate || rs[1].Send.MessageId != "1.10" {
			t.Fatalf("results %s / %s", statusOf(rs[0]), statusOf(rs[1]))
		}
		wantSeqs(t, h.f, 2, 20)
		wantUnread(t, h.f, 2, 1, map[string]uint64{"d7": 1})
	})
	t.Run("another sender's id is not a duplicate", func(t *testing.T) {
		h := newHarness(t)
		h.must(opSend(7, "c1", "hello", apps(1, 10, 2, 20)...))
		r := h.must(opSend(7, "c1", "hello", apps(2, 21, 1, 11)...))
		if r.Send.Duplicate || r.Send.MessageId != "2.21" {
			t.Fatalf("%v", r.Send)
		}
	})
	t.Run("expired record lets the id through", func(t *testing.T) {
		h := newHarness(t)
		sent := h.now
		h.must(opSend(7, "c1", "hello", apps(1, 10, 2, 20)...))
		h.now = sent + testDedupTTL - 1
		if r := h.one(opSend(7, "c1", "hello", apps(1, 11, 2, 21)...)); r.Status != stDuplicate {
			t.Fatalf("1 ms before expiry: %s", statusOf(r))
		}
		if d, _ := h.f.Dedup(1, "c1", sent+testDedupTTL); d != nil {
			t.Fatalf("Dedup at expiry still answers %v", d)
		}
		h.now = sent + testDedupTTL
		r := h.one(opSend(7, "c1", "hello again", apps(1, 12, 2, 22)...))
		if r.Status != stOK || r.Send.MessageId != "1.12" {
			t.Fatalf("at expiry: %s %v", statusOf(r), r.Send)
		}
		wantSeqs(t, h.f, 2, 20, 22)
		// The new record answers later retries.
		h.now++
		r = h.one(opSend(7, "c1", "hello again", apps(1, 13, 2, 23)...))
		if r.Status != stDuplicate || r.Send.MessageId != "1.12" {
			t.Fatalf("retry of the second send: %s %v", statusOf(r), r.Send)
		}
	})
}

func TestApplySendRemote(t *testing.T) {
	h := newHarness(t)
	r := h.must(remoteTo(opSend(7, "c1", "hello", apps(1, 10, 2, 20)...), 200, 201))
	want := &seqdv1.SendResponse{MessageId: "1.10", SenderSeq: 10,
		Deliveries: []*seqdv1.Delivery{{User: 2, Seq: 20}, {User: 200}, {User: 201}}}
	if d := protoDiff(want, r.Send); d != "" {
		t.Fatalf("response:\n%s", d)
	}
	// The sender lives on another shard: its copy is queued too.
	op := opSend(8, "c9", "from afar", apps(2, 21)...)
	op.GetSend().Request.Sender = 300
	op.GetSend().MessageId = "300.5"
	op.GetSend().RemoteSender = true
	r = h.must(op)
	if r.Send.SenderSeq != 0 || len(r.Send.Deliveries) != 1 {
		t.Fatalf("remote-sender response %v", r.Send)
	}
	items, err := h.f.Outbox(100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		if it.Item.Kind != clusterv1.FanoutItem_KIND_MESSAGE || it.Item.Event.Seq != 0 || it.Item.Event.Outgoing {
			t.Fatalf("outbox item %v", it.Item)
		}
		got = append(got, fmt.Sprintf("%d:%s:%s", it.Item.User, it.Item.Event.MessageId, it.Item.Event.Body))
	}
	if fmt.Sprint(got) != "[200:1.10:hello 201:1.10:hello 300:300.5:from afar]" {
		t.Fatalf("outbox %v", got)
	}
	if items, _ := h.f.Outbox(2); len(items) != 2 {
		t.Fatalf("Outbox(2) returned %d items", len(items))
	}
	rec, _ := h.f.Message("300.5")
	if fmt.Sprint(rec.Remote) != "[300]" {
		t.Fatalf("record of a remote sender's message lists remote %v", rec.Remote)
	}
	rec, _ = h.f.Message("1.10")
	if fmt.Sprint(rec.Remote) != "[200 201]" {
		t.Fatalf("record lists remote %v", rec.Remote)
	}
}

func TestApplySendGroups(t *testing.T) {
	h := newHarness(t)
	h.must(opCreateGroup(50, 1, true, 100, 2, 3))
	h.must(opCreateGroup(60, 1, false, 100, 2, 3))

	// Read fanout: the sender's copy plus one timeline entry.
	r := h.must(opGroupSend(50, 5, true, 1, "a", "first", apps(1, 1)...))
	if r.Send.GroupSeq != 5 || r.Send.MessageId != "g50.5" || r.Send.SenderSeq != 1 {
		t.Fatalf("response %v", r.Send)
	}
	h.must(opGroupSend(50, 9, true, 2, "b", "second", apps(2, 1)...))
	own := eventAt(t, h.f, 2, 1)
	if own.GroupSeq != 9 || own.GroupCount != 2 || !own.Outgoing {
		t.Fatalf("sender's copy %v", own)
	}
	tl, err := h.f.SyncGroup(3, 50, 0, 10)
	if err != nil || fmt.Sprint(seqsOf(tl.Events)) != "[5 9]" || tl.Events[1].GroupCount != 2 || string(tl.Events[0].Body) != "first" {
		t.Fatalf("timeline %v %v", tl, err)
	}
	g, _ := h.f.Group(50)
	if g.Info.LastGroupSeq != 9 || g.MessageCount != 2 {
		t.Fatalf("group record %v", g)
	}
	for _, c := range []struct{ upTo, count uint64 }{{0, 0}, {4, 0}, {5, 1}, {8, 1}, {9, 2}, {100, 2}} {
		n, last, err := timelineCount(h.f, 50, c.upTo)
		if err != nil || n != c.count || last != 9 {
			t.Fatalf("TimelineCount(50, %d) = %d, %d, %v; want %d, 9", c.upTo, n, last, err, c.count)
		}
	}
	// Sending reads the group up to one's own message; others' news only
	// counts once a hint tells the member about it.
	wantUnread(t, h.f, 1, 0, nil)
	wantUnread(t, h.f, 2, 0, nil)
	h.must(opHint(50, 9, 2, true, nil, apps(1, 2, 2, 2, 3, 1)...))
	wantUnread(t, h.f, 1, 1, map[string]uint64{"g50": 1})
	wantUnread(t, h.f, 2, 0, nil)
	wantUnread(t, h.f, 3, 2, map[string]uint64{"g50": 2})

	// Write fanout: one copy per member, no timeline.
	r = h.must(opGroupSend(60, 3, false, 2, "c", "wf", apps(1, 3, 2, 3, 3, 2)...))
	if r.Send.MessageId != "g60.3" || r.Send.GroupSeq != 0 || r.Send.SenderSeq != 3 || len(r.Send.Deliveries) != 2 {
		t.Fatalf("write-fanout response %v", r.Send)
	}
	for u, seq := range map[uint64]uint64{1: 3, 2: 3, 3: 2} {
		e := eventAt(t, h.f, u, seq)
		if e.MessageId != "g60.3" || e.Outgoing != (u == 2) || e.Conversation.GetId() != 60 {
			t.Fatalf("user %d copy %v", u, e)
		}
	}
	wantUnread(t, h.f, 3, 3, map[string]uint64{"g50": 2, "g60": 1})
	if g, _ := h.f.Group(60); g.Info.LastGroupSeq != 0 || g.MessageCount != 0 {
		t.Fatalf("write-fanout group record %v", g)
	}
}

func fanItem(kind clusterv1.FanoutItem_Kind, user uint64, id string, sender uint64) *clusterv1.FanoutItem {
	k := eventKind(kind)
	return &clusterv1.FanoutItem{Kind: kind, User: user, Event: &seqdv1.Event{Kind: k, Conversation: dconv(9),
		MessageId: id, Sender: sender, Body: []byte("remote " + id), SentAtMs: 500}}
}

func TestApplyDeliver(t *testing.T) {
	msg := clusterv1.FanoutItem_KIND_MESSAGE
	t.Run("idempotent", func(t *testing.T) {
		h := newHarness(t)
		items := []*clusterv1.FanoutItem{fanItem(msg, 2, "9.1", 9), fanItem(msg, 3, "9.1", 9)}
		r := h.must(opDeliver(items, 1, 1))
		if r.Delivered != 2 {
			t.Fatalf("delivered %d", r.Delivered)
		}
		e := wantSeqs(t, h.f, 2, 1)[0]
		if e.Kind != kMessage || e.Outgoing || e.SentAtMs != 500 || string(e.Body) != "remote 9.1" {
			t.Fatalf("delivered copy %v", e)
		}
		wantUnread(t, h.f, 2, 1, map[string]uint64{"d9": 1})
		before := dumpState(t, h.f)
		// The sender retries (it did not hear the answer): new seqs.
		r = h.must(opDeliver(items, 2, 2))
		if r.Delivered != 2 {
			t.Fatalf("retry delivered %d", r.Delivered)
		}
		requireUnchanged(t, before, h.f, "a repeated delivery")
		// One old item and one new: only the new one is appended.
		r = h.must(opDeliver([]*clusterv1.FanoutItem{items[0], fanItem(msg, 2, "9.2", 9)}, 3, 4))
		wantSeqs(t, h.f, 2, 1, 4)
		// A stale seq on an old item does not matter: it is skipped.
		h.must(opDeliver([]*clusterv1.FanoutItem{items[0]}, 1))
		wantSeqs(t, h.f, 2, 1, 4)
	})
	t.Run("sender's own copy is outgoing", func(t *testing.T) {
		h := newHarness(t)
		h.must(opDeliver([]*clusterv1.FanoutItem{fanItem(msg, 9, "9.1", 9)}, 1))
		if e := wantSeqs(t, h.f, 9, 1)[0]; !e.Outgoing {
			t.Fatalf("copy %v", e)
		}
		wantUnread(t, h.f, 9, 0, nil)
	})
	t.Run("recall item recalls the local copy", func(t *testing.T) {
		h := newHarness(t)
		h.must(opDeliver([]*clusterv1.FanoutItem{fanItem(msg, 2, "9.1", 9)}, 1))
		rec := fanItem(clusterv1.FanoutItem_KIND_RECALL, 2, "9.1", 9)
		rec.Event.Body = nil
		h.must(opDeliver([]*clusterv1.FanoutItem{rec}, 2))
		evs := wantSeqs(t, h.f, 2, 1, 2)
		if !evs[0].Recalled || len(evs[0].Body) != 0 || evs[1].Kind != kRecall || evs[1].MessageId != "9.1" {
			t.Fatalf("after recall: %v", evs)
		}
		wantUnread(t, h.f, 2, 0, nil)
		before := dumpState(t, h.f)
		h.must(opDeliver([]*clusterv1.FanoutItem{rec}, 3))
		requireUnchanged(t, before, h.f, "a repeated recall delivery")
	})
	t.Run("message and its recall in one op", func(t *testing.T) {
		h := newHarness(t)
		h.must(opDeliver([]*clusterv1.FanoutItem{fanItem(msg, 2, "9.1", 9), fanItem(clusterv1.FanoutItem_KIND_RECALL, 2, "9.1", 9)}, 1, 2))
		if evs := wantSeqs(t, h.f, 2, 1, 2); !evs[0].Recalled {
			t.Fatalf("copy not recalled: %v", evs[0])
		}
		wantUnread(t, h.f, 2, 0, nil)
	})
	t.Run("hint item counts the group's news", func(t *testing.T) {
		h := newHarness(t)
		it := &clusterv1.FanoutItem{Kind: clusterv1.FanoutItem_KIND_GROUP_HINT, User: 2,
			Event: &seqdv1.Event{Kind: kHint, Conversation: gconv(70), MessageId: "h70.9", GroupSeq: 9, GroupCount: 5}}
		h.must(opDeliver([]*clusterv1.FanoutItem{it}, 1))
		wantUnread(t, h.f, 2, 5, map[string]uint64{"g70": 5})
		h.must(opMarkReadFanout(2, 70, 4, 3, 2))
		wantUnread(t, h.f, 2, 2, map[string]uint64{"g70": 2})
	})
	t.Run("refusals", func(t *testing.T) {
		h := newHarness(t)
		h.must(opDeliver([]*clusterv1.FanoutItem{fanItem(msg, 2, "9.1", 9)}, 5))
		good := fanItem(msg, 3, "9.2", 9)
		mut := func(f func(*clusterv1.FanoutItem)) []*clusterv1.FanoutItem {
			it := proto.Clone(good).(*clusterv1.FanoutItem)
			f(it)
			return []*clusterv1.FanoutItem{good, it}
		}
		checkRefusals(t, h, []refusal{
			{"fewer seqs than items", opDeliver(mut(func(*clusterv1.FanoutItem) {}), 1), stRejected, "seqs"},
			{"no event", opDeliver(mut(func(i *clusterv1.FanoutItem) { i.Event = nil }), 1, 1), stRejected, "item 1"},
			{"user 0", opDeliver(mut(func(i *clusterv1.FanoutItem) { i.User = 0 }), 1, 1), stRejected, "item 1"},
			{"no message id", opDeliver(mut(func(i *clusterv1.FanoutItem) { i.Event.MessageId = "" }), 1, 1), stRejected, "item 1"},
			{"unknown kind", opDeliver(mut(func(i *clusterv1.FanoutItem) { i.Kind = 0 }), 1, 1), stRejected, "item 1"},
			{"kind out of range", opDeliver(mut(func(i *clusterv1.FanoutItem) { i.Kind = 42 }), 1, 1), stRejected, "item 1"},
			{"stale seq", opDeliver([]*clusterv1.FanoutItem{good, fanItem(msg, 2, "9.3", 9)}, 1, 5), stOutOfOrder, "user 2"},
		})
	})
}

// Two identical items in one DeliverOp are both fresh when checked, so the
// copy is appended twice. The outbox can hold such a pair for a hint: a
// hint round whose final chunk failed is re-run from its first chunk,
// which queues the remote members' hints again under new outbox keys, and
// deliverOutbox then sends both in one request.
func TestApplyDeliverSameItemTwiceInOneOp(t *testing.T) {
	h := newHarness(t)
	it := fanItem(clusterv1.FanoutItem_KIND_MESSAGE, 2, "9.1", 9)
	h.must(opDeliver([]*clusterv1.FanoutItem{it, it}, 1, 2))
	n := 0
	for _, e := range syncAllEvents(t, h.f, 2) {
		if e.MessageId == "9.1" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("message 9.1 is %d times in user 2's inbox, want once", n)
	}
	wantUnread(t, h.f, 2, 1, map[string]uint64{"d9": 1})
}

func TestApplyMarkRead(t *testing.T) {
	h := newHarness(t)
	for i := uint64(1); i <= 3; i++ {
		h.must(opSend(7, fmt.Sprint("a", i), "m", apps(1, i, 2, i)...))
	}
	h.must(opSend(8, "b", "m", apps(3, 1, 2, 4)...))
	wantUnread(t, h.f, 2, 4, map[string]uint64{"d7": 3, "d8": 1})

	r := h.must(opMarkRead(2, dconv(7), 2, 5))
	want := &seqdv1.MarkReadResponse{Seq: 5, Unread: 1, TotalUnread: 2}
	if d := protoDiff(want, r.MarkRead); d != "" {
		t.Fatalf("response:\n%s", d)
	}
	e := eventAt(t, h.f, 2, 5)
	wantEv := &seqdv1.Event{Seq: 5, Kind: kRead, Conversation: dconv(7), ReadUpTo: 2, Sender: 2, Outgoing: true, SentAtMs: h.now}
	if d := protoDiff(wantEv, e); d != "" {
		t.Fatalf("read event:\n%s", d)
	}
	wantUnread(t, h.f, 2, 2, map[string]uint64{"d7": 1, "d8": 1})
	u, _ := h.f.Unread(2, nil, 0)
	for _, c := range u.Conversations {
		if convName(c.Conversation) == "d7" && c.ReadUpTo != 2 {
			t.Fatalf("d7 read_up_to %d", c.ReadUpTo)
		}
	}

	// A lower marker is an event too, but does not move the marker back.
	r = h.must(opMarkRead(2, dconv(7), 1, 6))
	if r.MarkRead.Unread != 1 || r.MarkRead.TotalUnread != 2 {
		t.Fatalf("lower marker: %v", r.MarkRead)
	}
	wantSeqs(t, h.f, 2, 1, 2, 3, 4, 5, 6)

	checkRefusals(t, h, []refusal{
		{"from the future", opMarkRead(2, dconv(7), 7, 7), stRejected, "beyond"},
		{"seq not above newest", opMarkRead(2, dconv(7), 3, 6), stOutOfOrder, ""},
		{"no request", &clusterv1.StoreOp{Op: &clusterv1.StoreOp_MarkRead{MarkRead: &clusterv1.MarkReadOp{Seq: 7}}}, stRejected, ""},
		{"user 0", opMarkRead(0, dconv(7), 1, 7), stRejected, ""},
		{"no conversation", opMarkRead(2, nil, 1, 7), stRejected, ""},
	})

	// Everything read, including a marker past the conversation's own
	// newest message (seqs are per inbox, not per conversation).
	r = h.must(opMarkRead(2, dconv(8), 6, 7))
	if r.MarkRead.Unread != 0 || r.MarkRead.TotalUnread != 1 {
		t.Fatalf("%v", r.MarkRead)
	}
	// Marking one's own messages read counts nothing: they never counted.
	r = h.must(opMarkRead(1, dconv(7), 3, 4))
	if r.MarkRead.Unread != 0 || r.MarkRead.TotalUnread != 0 {
		t.Fatalf("sender's marker %v", r.MarkRead)
	}
	// A new message after the marker counts.
	h.must(opSend(7, "a4", "m", apps(1, 5, 2, 8)...))
	wantUnread(t, h.f, 2, 2, map[string]uint64{"d7": 2})
}

func TestApplyMarkReadRecountsSkipsRecalledAndDeleted(t *testing.T) {
	h := newHarness(t)
	for i := uint64(1); i <= 4; i++ {
		h.must(opSend(7, fmt.Sprint("a", i), "m", apps(1, i, 2, i)...))
	}
	h.must(opRecall(1, "1.2", 1000, 0, apps(1, 5, 2, 5)...))
	h.must(opDelete(2, "1.3", 6))
	wantUnread(t, h.f, 2, 2, map[string]uint64{"d7": 2})
	// Read up to 1: 4 is left (2 is recalled, 3 deleted).
	r := h.must(opMarkRead(2, dconv(7), 1, 7))
	if r.MarkRead.Unread != 1 || r.MarkRead.TotalUnread != 1 {
		t.Fatalf("%v", r.MarkRead)
	}
}

func TestApplyRecall(t *testing.T) {
	const window = 120_000
	setup := func(t *testing.T) *fsmHarness {
		h := newHarness(t)
		op := remoteTo(opSend(7, "c1", "secret", apps(1, 1, 2, 1, 3, 1)...), 200)
		op.GetSend().Request.Metadata = map[string]string{"k": "v"}
		h.must(op)
		h.must(opSend(7, "c2", "kept", apps(1, 2, 2, 2)...))
		return h
	}
	t.Run("blanks every copy", func(t *testing.T) {
		h := setup(t)
		h.now += window // exactly at the window's end: still allowed
		r := h.must(opRecall(1, "1.1", window, 0, apps(1, 3, 2, 3, 3, 2)...))
		if r.Recalled != 3 {
			t.Fatalf("recalled %d copies, want 3", r.Recalled)
		}
		for u, seqs := range map[uint64][2]uint64{1: {1, 3}, 2: {1, 3}, 3: {1, 2}} {
			c := eventAt(t, h.f, u, seqs[0])
			if !c.Recalled || len(c.Body) != 0 || len(c.Metadata) != 0 || c.MessageId != "1.1" {
				t.Fatalf("user %d copy %v", u, c)
			}
			re := eventAt(t, h.f, u, seqs[1])
			if re.Kind != kRecall || re.MessageId != "1.1" || re.Sender != 1 || re.Outgoing != (u == 1) {
				t.Fatalf("user %d recall event %v", u, re)
			}
		}
		if e := eventAt(t, h.f, 2, 2); e.Recalled || string(e.Body) != "kept" {
			t.Fatalf("other message touched: %v", e)
		}
		wantUnread(t, h.f, 2, 1, map[string]uint64{"d7": 1})
		wantUnread(t, h.f, 3, 0, nil)
		items, _ := h.f.Outbox(10)
		if len(items) != 2 || items[1].Item.Kind != clusterv1.FanoutItem_KIND_RECALL || items[1].Item.User != 200 || items[1].Item.Event.MessageId != "1.1" {
			t.Fatalf("outbox %v", items)
		}
		if rec, _ := h.f.Message("1.1"); !rec.Recalled {
			t.Fatalf("record not marked recalled")
		}
		// Again: OK, nothing more.
		before := dumpState(t, h.f)
		r = h.must(opRecall(1, "1.1", window, 0, apps(1, 4, 2, 4, 3, 3)...))
		if r.Recalled != 0 {
			t.Fatalf("second recall recalled %d", r.Recalled)
		}
		requireUnchanged(t, before, h.f, "a repeated recall")
	})
	t.Run("refusals", func(t *testing.T) {
		h := setup(t)
		late := opRecall(1, "1.1", window, 0, apps(1, 3, 2, 3, 3, 2)...)
		checkRefusals(t, h, []refusal{
			{"not the sender", opRecall(2, "1.1", window, 0, apps(1, 3, 2, 3, 3, 2)...), stRejected, "only its sender"},
			{"unknown message", opRecall(1, "1.99", window, 0, apps(1, 3)...), stRejected, "1.99"},
			{"no request", &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Recall{Recall: &clusterv1.RecallOp{}}}, stRejected, ""},
			{"stale seq", opRecall(1, "1.1", window, 0, apps(1, 3, 2, 2, 3, 2)...), stOutOfOrder, "user 2"},
		})
		h.now += window + 1
		checkRefusals(t, h, []refusal{{"outside the window", late, stRejected, "window"}})
		if rec, _ := h.f.Message("1.1"); rec.Recalled {
			t.Fatalf("refused recall marked the record")
		}
		wantUnread(t, h.f, 2, 2, map[string]uint64{"d7": 2})
	})
	t.Run("read copies and deleted copies", func(t *testing.T) {
		h := setup(t)
		h.must(opMarkRead(2, dconv(7), 1, 3))
		h.must(opDelete(3, "1.1", 2))
		r := h.must(opRecall(1, "1.1", window, 0, apps(1, 3, 2, 4, 3, 3)...))
		if r.Recalled != 3 {
			t.Fatalf("recalled %d", r.Recalled)
		}
		wantUnread(t, h.f, 2, 1, map[string]uint64{"d7": 1})
		wantUnread(t, h.f, 3, 0, nil)
	})
	t.Run("read-fanout group message", func(t *testing.T) {
		h := newHarness(t)
		h.must(opCreateGroup(50, 1, true, 100, 2))
		h.must(opGroupSend(50, 3, true, 1, "g", "oops", apps(1, 1)...))
		h.must(opGroupSend(50, 4, true, 2, "g", "other", apps(2, 1)...))
		checkRefusals(t, h, []refusal{
			{"group seq not above newest", opRecall(1, "g50.3", window, 4, apps(1, 2)...), stOutOfOrder, ""},
			{"no group seq", opRecall(1, "g50.3", window, 0, apps(1, 2)...), stOutOfOrder, ""},
		})
		r := h.must(opRecall(1, "g50.3", window, 6, apps(1, 2)...))
		if r.Recalled != 1 {
			t.Fatalf("recalled %d", r.Recalled)
		}
		tl, _ := h.f.SyncGroup(2, 50, 0, 10)
		if fmt.Sprint(seqsOf(tl.Events)) != "[3 4 6]" {
			t.Fatalf("timeline %v", seqsOf(tl.Events))
		}
		if e := tl.Events[0]; !e.Recalled || len(e.Body) != 0 {
			t.Fatalf("timeline entry not blanked: %v", e)
		}
		if e := tl.Events[2]; e.Kind != kRecall || e.MessageId != "g50.3" || e.GroupSeq != 6 || e.GroupCount != 2 {
			t.Fatalf("recall entry %v", e)
		}
		g, _ := h.f.Group(50)
		// The recalled message still counts among the timeline's messages
		// (read-fanout unread is a count, not a scan).
		if g.Info.LastGroupSeq != 6 || g.MessageCount != 2 {
			t.Fatalf("group %v", g)
		}
		if groups, _ := h.f.ReadFanoutGroups(); len(groups) != 1 {
			t.Fatalf("a recall is news to hint: %v", groups)
		}
	})
}

func TestApplyDelete(t *testing.T) {
	h := newHarness(t)
	h.must(opSend(7, "a", "one", apps(1, 1, 2, 1)...))
	h.must(opSend(7, "b", "two", apps(1, 2, 2, 2)...))
	h.must(opDeliver([]*clusterv1.FanoutItem{fanItem(clusterv1.FanoutItem_KIND_MESSAGE, 2, "9.1", 9)}, 3))
	wantUnread(t, h.f, 2, 3, map[string]uint64{"d7": 2, "d9": 1})

	r := h.must(opDelete(2, "1.1", 4))
	if r.DeleteSeq != 4 {
		t.Fatalf("delete seq %d", r.DeleteSeq)
	}
	c := eventAt(t, h.f, 2, 1)
	if !c.Deleted || len(c.Body) != 0 {
		t.Fatalf("copy %v", c)
	}
	de := eventAt(t, h.f, 2, 4)
	wantDe := &seqdv1.Event{Seq: 4, Kind: kDelete, Conversation: dconv(7), MessageId: "1.1", Sender: 2, Outgoing: true, SentAtMs: h.now}
	if d := protoDiff(wantDe, de); d != "" {
		t.Fatalf("delete event:\n%s", d)
	}
	wantUnread(t, h.f, 2, 2, map[string]uint64{"d7": 1, "d9": 1})
	hist, _, _ := h.f.History(2, dconv(7), 0, 10)
	if fmt.Sprint(seqsOf(hist)) != "[2]" {
		t.Fatalf("history after delete %v", seqsOf(hist))
	}
	// Only user 2's copy is gone.
	if e := eventAt(t, h.f, 1, 1); e.Deleted || string(e.Body) != "one" {
		t.Fatalf("sender's copy %v", e)
	}

	before := dumpState(t, h.f)
	r = h.must(opDelete(2, "1.1", 5))
	if r.DeleteSeq != 0 {
		t.Fatalf("repeated delete used seq %d", r.DeleteSeq)
	}
	requireUnchanged(t, before, h.f, "a repeated delete")

	checkRefusals(t, h, []refusal{
		{"no copy", opDelete(3, "1.1", 1), stRejected, "no copy"},
		{"unknown message", opDelete(2, "1.77", 5), stRejected, "no copy"},
		{"no request", &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Delete{Delete: &clusterv1.DeleteOp{Seq: 5}}}, stRejected, ""},
		{"stale seq", opDelete(2, "1.2", 4), stOutOfOrder, ""},
	})

	// A copy delivered from another shard is found through its copy key.
	h.must(opDelete(2, "9.1", 5))
	wantUnread(t, h.f, 2, 1, map[string]uint64{"d7": 1})
	// The sender may delete its own copy; no unread changes.
	h.must(opDelete(1, "1.2", 3))
	wantUnread(t, h.f, 2, 1, map[string]uint64{"d7": 1})
}

func TestApplyCreateGroup(t *testing.T) {
	h := newHarness(t)
	r := h.must(opCreateGroup(50, 1, false, 5, 2, 1, 3, 2))
	var members []uint64
	for _, m := range r.Group.Members {
		members = append(members, m.User)
	}
	if fmt.Sprint(members) != "[1 2 3]" || r.Group.Owner != 1 || r.Group.ReadFanout {
		t.Fatalf("group %v", r.Group)
	}
	if g, err := h.f.Group(50); err != nil || protoDiff(r.Group, g.Info) != "" {
		t.Fatalf("stored group %v %v", g, err)
	}
	// More members than the threshold: read fanout, even if not asked.
	if r := h.must(opCreateGroup(51, 1, false, 2, 2, 3)); !r.Group.ReadFanout {
		t.Fatalf("3 members over threshold 2: %v", r.Group)
	}
	if r := h.must(opCreateGroup(52, 1, false, 3, 2, 3)); r.Group.ReadFanout {
		t.Fatalf("3 members at threshold 3: %v", r.Group)
	}
	if r := h.must(opCreateGroup(53, 1, true, 100)); !r.Group.ReadFanout {
		t.Fatalf("asked for read fanout: %v", r.Group)
	}
	if _, err := h.f.Group(99); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Group(99): %v", err)
	}
	// A client retry of a create that succeeded answers the group; a
	// different create of the same id is refused.
	if r := h.must(opCreateGroup(50, 1, false, 5, 3, 2)); fmt.Sprint(len(r.Group.Members)) != "3" {
		t.Fatalf("retried create answered %v", r.Group)
	}
	checkRefusals(t, h, []refusal{
		{"same id, other members", opCreateGroup(50, 1, false, 5, 2), stRejected, "already exists"},
		{"same id, other owner", opCreateGroup(50, 2, false, 5, 1, 3), stRejected, "already exists"},
		{"group 0", opCreateGroup(0, 1, false, 5), stRejected, ""},
		{"owner 0", opCreateGroup(54, 0, false, 5), stRejected, ""},
		{"no request", &clusterv1.StoreOp{Op: &clusterv1.StoreOp_CreateGroup{CreateGroup: &clusterv1.CreateGroupOp{}}}, stRejected, ""},
	})
}

func memberList(info *seqdv1.GroupInfo) string {
	var s []string
	for _, m := range info.Members {
		s = append(s, fmt.Sprintf("%d@%d", m.User, m.JoinedAfterGseq))
	}
	return strings.Join(s, " ")
}

func TestApplyMembers(t *testing.T) {
	h := newHarness(t)
	h.must(opCreateGroup(50, 1, true, 3, 2))
	h.must(opGroupSend(50, 1, true, 1, "a", "before", apps(1, 1)...))
	h.must(opGroupSend(50, 2, true, 2, "b", "before", apps(2, 1)...))

	r := h.must(opAddMembers(50, false, 3, 3, 2, 0, 3))
	if got := memberList(r.Group); got != "1@0 2@0 3@2" {
		t.Fatalf("members %q, want 1@0 2@0 3@2 (existing and 0 skipped)", got)
	}
	h.must(opAddMembers(50, true, 3, 4))
	h.must(opGroupSend(50, 3, true, 1, "c", "after", apps(1, 2)...))

	for u, want := range map[uint64]string{3: "[3]", 4: "[1 2 3]", 2: "[1 2 3]"} {
		res, err := h.f.SyncGroup(u, 50, 0, 10)
		if err != nil || fmt.Sprint(seqsOf(res.Events)) != want {
			t.Fatalf("SyncGroup(%d) = %v, %v; want %s", u, seqsOf(res.Events), err, want)
		}
	}
	// Checkpoint before the join point: the member starts at it.
	if res, _ := h.f.SyncGroup(3, 50, 1, 10); fmt.Sprint(seqsOf(res.Events)) != "[3]" {
		t.Fatalf("SyncGroup(3, after 1) = %v", seqsOf(res.Events))
	}

	r = h.must(opRemoveMembers(50, 3, 77))
	if got := memberList(r.Group); got != "1@0 2@0 4@0" {
		t.Fatalf("after remove: %q", got)
	}
	if _, err := h.f.SyncGroup(3, 50, 0, 10); !errors.Is(err, ErrNotMember) {
		t.Fatalf("removed member's SyncGroup: %v, want ErrNotMember", err)
	}
	// Re-added: joins at the current point again.
	r = h.must(opAddMembers(50, false, 3, 3))
	if got := memberList(r.Group); got != "1@0 2@0 4@0 3@3" {
		t.Fatalf("re-added: %q", got)
	}

	checkRefusals(t, h, []refusal{
		{"add to unknown group", opAddMembers(99, false, 3, 5), stRejected, "99"},
		{"remove from unknown group", opRemoveMembers(99, 5), stRejected, "99"},
		{"remove the owner", opRemoveMembers(50, 2, 1), stRejected, "owns"},
	})

	// Write fanout is capped at the threshold.
	h.must(opCreateGroup(60, 1, false, 4, 2, 3))
	checkRefusals(t, h, []refusal{
		{"write fanout over the limit", opAddMembers(60, false, 4, 4, 5), stRejected, "limited to 4"},
	})
	if r := h.must(opAddMembers(60, false, 4, 4)); len(r.Group.Members) != 4 {
		t.Fatalf("%v", r.Group)
	}
	// Read fanout is not capped.
	if r := h.must(opAddMembers(50, false, 3, 10, 11, 12)); len(r.Group.Members) != 7 {
		t.Fatalf("%v", r.Group)
	}
	if _, err := h.f.SyncGroup(2, 99, 0, 10); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SyncGroup of unknown group: %v", err)
	}
}

func TestApplyGroupHint(t *testing.T) {
	h := newHarness(t)
	h.must(opCreateGroup(50, 1, true, 10, 2, 3))
	h.must(opGroupSend(50, 1, true, 1, "a", "x", apps(1, 1)...))
	h.must(opGroupSend(50, 2, true, 1, "b", "y", apps(1, 2)...))
	listed := func() bool {
		gs, err := h.f.ReadFanoutGroups()
		if err != nil {
			t.Fatal(err)
		}
		return len(gs) == 1 && gs[0].Info.GroupId == 50
	}
	if !listed() {
		t.Fatalf("group with news not listed")
	}

	// First chunk: members here plus the remote ones.
	h.must(opHint(50, 2, 2, false, []uint64{200}, apps(2, 1)...))
	e := eventAt(t, h.f, 2, 1)
	wantHint := &seqdv1.Event{Seq: 1, Kind: kHint, Conversation: gconv(50), GroupSeq: 2, GroupCount: 2, MessageId: "h50.2", SentAtMs: h.now}
	if d := protoDiff(wantHint, e); d != "" {
		t.Fatalf("hint:\n%s", d)
	}
	wantUnread(t, h.f, 2, 2, map[string]uint64{"g50": 2})
	if !listed() {
		t.Fatalf("a non-final chunk recorded the round")
	}
	items, _ := h.f.Outbox(10)
	if len(items) != 1 || items[0].Item.Kind != clusterv1.FanoutItem_KIND_GROUP_HINT || items[0].Item.User != 200 || items[0].Item.Event.GroupCount != 2 {
		t.Fatalf("outbox %v", items)
	}
	// Last chunk records the round.
	h.must(opHint(50, 2, 2, true, nil, apps(3, 1)...))
	if listed() {
		t.Fatalf("group still listed after the final chunk")
	}
	if g, _ := h.f.Group(50); g.HintedGseq != 2 {
		t.Fatalf("hinted gseq %d", g.HintedGseq)
	}

	checkRefusals(t, h, []refusal{
		{"replayed final chunk", opHint(50, 2, 2, true, []uint64{200}, apps(2, 5, 3, 5)...), stOK, ""},
		{"older round", opHint(50, 1, 1, false, []uint64{200}, apps(2, 5, 3, 5)...), stOK, ""},
		{"unknown group", opHint(99, 2, 2, true, nil, apps(2, 5)...), stRejected, "99"},
		{"stale seq", opHint(50, 3, 3, true, nil, apps(2, 1)...), stOutOfOrder, ""},
	})

	// Reading part of the timeline leaves the rest unread.
	h.must(opMarkReadFanout(2, 50, 1, 1, 2))
	wantUnread(t, h.f, 2, 1, map[string]uint64{"g50": 1})
	// Sending to the group reads it up to one's own message.
	h.must(opGroupSend(50, 3, true, 2, "c", "z", apps(2, 3)...))
	wantUnread(t, h.f, 2, 0, nil)
}

// A member added without history counts as unread only what it can see:
// the messages from after it joined, not the group's whole history.
func TestApplyReadFanoutJoinerUnreadStartsAtJoinPoint(t *testing.T) {
	h := newHarness(t)
	h.must(opCreateGroup(50, 1, true, 10, 2))
	for g := uint64(1); g <= 3; g++ {
		h.must(opGroupSend(50, g, true, 1, fmt.Sprint("m", g), "old", apps(1, g)...))
	}
	h.must(opAddMembers(50, false, 10, 3))
	h.must(opGroupSend(50, 4, true, 1, "m4", "new", apps(1, 4)...))
	h.must(opHint(50, 4, 4, true, nil, apps(2, 1, 3, 1)...))
	visible, _ := h.f.SyncGroup(3, 50, 0, 10)
	if fmt.Sprint(seqsOf(visible.Events)) != "[4]" {
		t.Fatalf("joiner sees %v", seqsOf(visible.Events))
	}
	wantUnread(t, h.f, 2, 4, map[string]uint64{"g50": 4}) // a founding member: all four
	wantUnread(t, h.f, 3, 1, map[string]uint64{"g50": 1}) // the joiner: only what it can see
}

// Recalling a read-fanout group message stops it counting as unread for
// members once a hint round carries the recall, as a write-fanout recall
// does at once; a recall of a message a member already read changes
// nothing for it, and a hint round replayed or split counts a recall once.
func TestApplyReadFanoutRecallLeavesUnread(t *testing.T) {
	h := newHarness(t)
	h.must(opCreateGroup(50, 1, true, 10, 2, 3))
	for g := uint64(1); g <= 3; g++ {
		h.must(opGroupSend(50, g, true, 1, fmt.Sprint("m", g), "x", apps(1, g)...))
	}
	h.must(opHint(50, 3, 3, true, []uint64{200}, apps(2, 1, 3, 1)...))
	h.must(opMarkReadFanout(3, 50, 1, 1, 2)) // member 3 has read message 1
	wantUnread(t, h.f, 2, 3, map[string]uint64{"g50": 3})
	wantUnread(t, h.f, 3, 2, map[string]uint64{"g50": 2})

	// Recall messages 1 (read by 3) and 2 (unread by both).
	h.must(opRecall(1, GroupMessageID(50, 1), 120_000, 4, apps(1, 4)...))
	h.must(opRecall(1, GroupMessageID(50, 2), 120_000, 5, apps(1, 5)...))
	if g, _ := h.f.Group(50); g.MessageCount != 3 {
		t.Fatalf("message count %d", g.MessageCount)
	}
	// Until a hint carries them, the counts stand, as for a new message.
	wantUnread(t, h.f, 2, 3, map[string]uint64{"g50": 3})
	// A round split in two chunks, the first replayed: each recall counts once.
	h.must(opHint(50, 5, 3, false, []uint64{200}, apps(2, 2)...))
	h.must(opHint(50, 5, 3, false, nil, apps(2, 3)...))
	e := eventAt(t, h.f, 2, 2)
	if fmt.Sprint(e.RecalledGroupCounts) != "[1 2]" {
		t.Fatalf("hint carries recalled counts %v, want [1 2]", e.RecalledGroupCounts)
	}
	wantUnread(t, h.f, 2, 1, map[string]uint64{"g50": 1})
	h.must(opHint(50, 5, 3, true, nil, apps(3, 3)...))
	wantUnread(t, h.f, 3, 1, map[string]uint64{"g50": 1}) // message 3 only

	// A remote member gets the recalls through the outbox item.
	items, _ := h.f.Outbox(10)
	var fan []*clusterv1.FanoutItem
	var seqs []uint64
	for _, it := range items {
		fan = append(fan, it.Item)
		seqs = append(seqs, uint64(len(seqs)+1))
	}
	h.must(opDeliver(fan, seqs...))
	wantUnread(t, h.f, 200, 1, map[string]uint64{"g50": 1})

	// The next round carries no old recalls; a new message counts again.
	h.must(opGroupSend(50, 6, true, 1, "m6", "x", apps(1, 6)...))
	h.must(opHint(50, 6, 4, true, nil, apps(2, 4, 3, 4)...))
	if e := eventAt(t, h.f, 2, 4); len(e.RecalledGroupCounts) != 0 {
		t.Fatalf("next round carries %v", e.RecalledGroupCounts)
	}
	wantUnread(t, h.f, 2, 2, map[string]uint64{"g50": 2})
	// Reading past the recalled messages drops their marks.
	h.must(opMarkReadFanout(2, 50, 6, 4, 5))
	wantUnread(t, h.f, 2, 0, nil)
	var cs clusterv1.ConvState
	readRecord(t, h.f, convKey(2, gconv(50)), &cs)
	if len(cs.RecalledUnread) != 0 {
		t.Fatalf("marks below the read marker kept: %v", cs.RecalledUnread)
	}

	// Members added later, with history or without, here and on another
	// shard, count only what comes after their join, and their join
	// carries no recall marks. An entry proposed before unread_from_join
	// (legacy) replays as it was applied: a with-history newcomer counts
	// the history less what was recalled in it.
	op := opAddMembers(50, true, 10, 4, 400)
	op.GetAddMembers().Remote = []uint64{400}
	h.must(op)
	h.must(opAddMembers(50, false, 10, 5))
	legacy := opAddMembers(50, true, 10, 6, 600)
	legacy.GetAddMembers().Remote = []uint64{600}
	legacy.GetAddMembers().UnreadFromJoin = false
	h.must(legacy)
	items, _ = h.f.Outbox(100)
	fan, seqs = nil, nil
	for _, it := range items {
		if it.Item.Kind == clusterv1.FanoutItem_KIND_GROUP_JOIN {
			fan = append(fan, it.Item)
			seqs = append(seqs, 0)
			marks := len(it.Item.Event.RecalledGroupCounts)
			if (it.Item.User == 400) != (marks == 0) {
				t.Fatalf("join item for %d carries %d recall marks", it.Item.User, marks)
			}
		}
	}
	if len(fan) != 2 {
		t.Fatalf("join items %v, want one each for 400 and 600", fan)
	}
	h.must(opDeliver(fan, seqs...))
	h.must(opGroupSend(50, 7, true, 1, "m7", "x", apps(1, 7)...))
	h.must(opHint(50, 7, 5, true, nil, apps(4, 1, 5, 1, 6, 1, 400, 5, 600, 5)...))
	for _, u := range []uint64{4, 400, 5} {
		wantUnread(t, h.f, u, 1, map[string]uint64{"g50": 1}) // m7 only
	}
	wantUnread(t, h.f, 6, 3, map[string]uint64{"g50": 3})   // legacy: m3, m6, m7
	wantUnread(t, h.f, 600, 3, map[string]uint64{"g50": 3}) // the same on another shard
	var cs4 clusterv1.ConvState
	readRecord(t, h.f, convKey(4, gconv(50)), &cs4)
	if len(cs4.RecalledUnread) != 0 {
		t.Fatalf("a newcomer holds recall marks %v", cs4.RecalledUnread)
	}
}

// A member removed and added again gets a join item of its own each time,
// so a member on another shard ends where one on this shard does.
func TestApplyReadFanoutRejoinOnOtherShard(t *testing.T) {
	h := newHarness(t)
	h.must(opCreateGroup(50, 1, true, 10))
	h.must(opGroupSend(50, 1, true, 1, "a", "x", apps(1, 1)...))
	h.must(opGroupSend(50, 2, true, 1, "b", "y", apps(1, 2)...))
	add := func(withHistory bool) {
		op := opAddMembers(50, withHistory, 10, 3, 300)
		op.GetAddMembers().Remote = []uint64{300}
		h.must(op)
	}
	add(true)
	h.must(opRemoveMembers(50, 3, 300))
	add(false)
	items, _ := h.f.Outbox(10)
	if len(items) != 2 || items[0].Item.Event.MessageId == items[1].Item.Event.MessageId {
		t.Fatalf("join items %v", items)
	}
	var fan []*clusterv1.FanoutItem
	for _, it := range items {
		fan = append(fan, it.Item)
	}
	h.must(opDeliver(fan, 0, 0))
	h.must(opHint(50, 2, 2, true, nil, apps(3, 1, 300, 1)...))
	wantUnread(t, h.f, 3, 0, nil)
	wantUnread(t, h.f, 300, 0, nil)
}

// A write-fanout group has no timeline to read: the error says where its
// messages are.
func TestSyncGroupOfWriteFanoutGroup(t *testing.T) {
	h := newHarness(t)
	h.must(opCreateGroup(40, 1, false, 10, 2))
	h.must(opGroupSend(40, 1, false, 1, "w1", "hi", apps(1, 1, 2, 1)...))
	_, err := h.f.SyncGroup(2, 40, 0, 10)
	if !errors.Is(err, ErrWriteFanout) || !strings.Contains(err.Error(), "group 40 uses write fanout") {
		t.Fatalf("SyncGroup of a write-fanout group: %v", err)
	}
	if st := groupErr(err); status.Code(st) != codes.FailedPrecondition {
		t.Fatalf("status %v, want FailedPrecondition", st)
	}
	if _, err := h.f.SyncGroup(9, 40, 0, 10); !errors.Is(err, ErrNotMember) {
		t.Fatalf("non-member: %v, want ErrNotMember first", err)
	}
}

func TestApplyOutboxAckDeletesOnlyOutboxKeys(t *testing.T) {
	h := newHarness(t)
	h.must(remoteTo(opSend(7, "abcd", "hello", apps(1, 1, 2, 1)...), 200, 201)) // dedup key: 'D' + 8 + 4 = 13 bytes
	items, _ := h.f.Outbox(10)
	if len(items) != 2 {
		t.Fatalf("outbox %v", items)
	}
	dk := dedupKey(1, "abcd")
	if len(dk) != 13 || len(items[0].Key) != 13 {
		t.Fatalf("test premise: key lengths %d %d", len(dk), len(items[0].Key))
	}
	before := dumpState(t, h.f)
	h.must(opOutboxAck(items[0].Key, dk, userKey(1), inboxKey(1, 1), keyApplied, []byte{tagOutbox}, nil,
		append([]byte{tagInbox}, make([]byte, 12)...)))
	after := dumpState(t, h.f)
	delete(before, string(items[0].Key))
	if d := diffKeys(before, after); d != "" {
		t.Fatalf("outbox ack touched other keys:\n%s", d)
	}
	left, _ := h.f.Outbox(10)
	if len(left) != 1 || left[0].Item.User != 201 {
		t.Fatalf("outbox after ack %v", left)
	}
	if r := h.one(remoteTo(opSend(7, "abcd", "hello", apps(1, 2, 2, 2)...), 200, 201)); r.Status != stDuplicate {
		t.Fatalf("dedup record lost: %s", statusOf(r))
	}
	// Acking a key twice, or one never queued, is fine.
	h.must(opOutboxAck(items[0].Key, outboxKey(999, 0)))
}

// expireSetup holds three messages from user 1 to user 2: 1.1 at 1000
// ms (read by 2), 1.2 at 2000 (unread) and 1.3 at 5000 (unread); user 2's
// mark-read event (seq 3) at 2000.
func expireSetup(t *testing.T) *fsmHarness {
	h := newHarness(t)
	h.now = 1000
	h.must(opSend(7, "a", "old", apps(1, 1, 2, 1)...))
	h.now = 2000
	h.must(opSend(7, "b", "old unread", apps(1, 2, 2, 2)...))
	h.must(opMarkRead(2, dconv(7), 1, 3))
	h.now = 5000
	h.must(opSend(7, "c", "new", apps(1, 3, 2, 4)...))
	return h
}

func TestApplyExpire(t *testing.T) {
	setup := expireSetup
	t.Run("removes old events and keeps counts", func(t *testing.T) {
		h := setup(t)
		wantUnread(t, h.f, 2, 2, map[string]uint64{"d7": 2})
		h.must(opExpire(3000, 100))
		wantSeqs(t, h.f, 1, 3)
		wantSeqs(t, h.f, 2, 4)
		// The unread message from 2000 went; the one from 5000 stays.
		wantUnread(t, h.f, 2, 1, map[string]uint64{"d7": 1})
		hist, _, _ := h.f.History(2, dconv(7), 0, 10)
		if fmt.Sprint(seqsOf(hist)) != "[4]" {
			t.Fatalf("history %v", seqsOf(hist))
		}
		for _, c := range []struct {
			after     uint64
			truncated bool
		}{{0, true}, {1, true}, {2, true}, {3, false}, {4, false}} {
			res, err := h.f.Sync(2, c.after, 10)
			if err != nil || res.Truncated != c.truncated {
				t.Fatalf("Sync(2, %d): truncated %v, want %v (%v)", c.after, res.Truncated, c.truncated, err)
			}
			if c.truncated && res.EarliestSeq != 4 {
				t.Fatalf("Sync(2, %d): earliest %d, want 4", c.after, res.EarliestSeq)
			}
			if c.after < 4 && fmt.Sprint(seqsOf(res.Events)) != "[4]" {
				t.Fatalf("Sync(2, %d) events %v", c.after, seqsOf(res.Events))
			}
		}
		if res, _ := h.f.Sync(1, 0, 10); !res.Truncated || res.EarliestSeq != 3 {
			t.Fatalf("Sync(1, 0) = %+v", res)
		}
		// The expired copy can no longer be deleted; recall counts what is left.
		checkRefusals(t, h, []refusal{{"delete an expired copy", opDelete(2, "1.1", 5), stRejected, "retention"}})
		r := h.must(opRecall(1, "1.3", 1<<40, 0, apps(1, 4, 2, 5)...))
		if r.Recalled != 2 {
			t.Fatalf("recalled %d", r.Recalled)
		}
		wantUnread(t, h.f, 2, 0, nil)
		// Appends continue above the truncation.
		h.must(opSend(7, "d", "newer", apps(1, 5, 2, 6)...))
		if res, _ := h.f.Sync(2, 0, 10); fmt.Sprint(seqsOf(res.Events)) != "[4 5 6]" || res.EarliestSeq != 4 {
			t.Fatalf("after new send: %v earliest %d", seqsOf(res.Events), res.EarliestSeq)
		}
	})
	t.Run("limit", func(t *testing.T) {
		h := setup(t)
		h.must(opExpire(3000, 0))
		wantSeqs(t, h.f, 1, 1, 2, 3)
		h.must(opExpire(3000, 3))
		// Users in key order: all of user 1's old events, then user 2's first.
		wantSeqs(t, h.f, 1, 3)
		wantSeqs(t, h.f, 2, 2, 3, 4)
		wantUnread(t, h.f, 2, 2, map[string]uint64{"d7": 2})
		if res, _ := h.f.Sync(2, 0, 10); !res.Truncated || res.EarliestSeq != 2 {
			t.Fatalf("Sync(2, 0) = %+v", res)
		}
	})
	t.Run("stops at the first newer event of each user", func(t *testing.T) {
		h := setup(t)
		// A delivery from another shard carries its own, older send time.
		h.now = 6000
		h.must(opDeliver([]*clusterv1.FanoutItem{fanItem(clusterv1.FanoutItem_KIND_MESSAGE, 2, "9.1", 9)}, 5))
		if e := eventAt(t, h.f, 2, 5); e.SentAtMs != 500 {
			t.Fatalf("delivered send time %d", e.SentAtMs)
		}
		h.must(opExpire(3000, 100))
		wantSeqs(t, h.f, 2, 4, 5)
		wantUnread(t, h.f, 2, 2, map[string]uint64{"d7": 1, "d9": 1})
	})
}

// wantStep applies a retention step and checks what it removed and where
// it says the next step starts.
func wantStep(t testTB, h *fsmHarness, op *clusterv1.StoreOp, expired uint32, next uint64) {
	t.Helper()
	r := h.must(op)
	if r.Expired != expired || r.ExpireNext != next {
		t.Fatalf("step %v: expired %d, next %d; want %d and %d", op, r.Expired, r.ExpireNext, expired, next)
	}
}

// passSteps runs the retention steps op(from) of one pass, from 0 until a
// step ends it, and returns what each removed and where the next started
// ("[expired:next ...]").
func passSteps(t *testing.T, h *fsmHarness, op func(from uint64) *clusterv1.StoreOp) string {
	t.Helper()
	var steps []string
	for from, n := uint64(0), 0; ; n++ {
		if n > 10 {
			t.Fatalf("no end to the pass: %v", steps)
		}
		r := h.must(op(from))
		steps = append(steps, fmt.Sprintf("%d:%d", r.Expired, r.ExpireNext))
		if r.ExpireNext == 0 {
			return fmt.Sprint(steps)
		}
		from = r.ExpireNext
	}
}

// A retention step (ExpireScanOp) removes what the whole-shard ExpireOp
// does, resumes where the step before it stopped, and removes a message's
// record with the last of its copies.
func TestApplyExpireScan(t *testing.T) {
	hasRecord := func(t *testing.T, h *fsmHarness, id string) bool {
		t.Helper()
		rec, err := h.f.Message(id)
		if err != nil {
			t.Fatal(err)
		}
		return rec != nil
	}
	// step applies a step and checks what it removed and where it stopped.
	step := func(t *testing.T, h *fsmHarness, from uint64, maxUsers, limit uint32, expired uint32, next uint64) {
		t.Helper()
		wantStep(t, h, opExpireScan(3000, from, maxUsers, limit), expired, next)
	}
	firstDue := func(t *testing.T, h *fsmHarness, from uint64, want uint64, wantOK bool) {
		t.Helper()
		if u, ok, err := h.f.FirstDue(3000, from); err != nil || u != want || ok != wantOK {
			t.Fatalf("FirstDue(3000, %d) = %d, %v, %v; want %d, %v", from, u, ok, err, want, wantOK)
		}
	}
	t.Run("a step over every user", func(t *testing.T) {
		h := expireSetup(t)
		firstDue(t, h, 0, 1, true)
		firstDue(t, h, 2, 2, true)
		firstDue(t, h, 3, 0, false)
		step(t, h, 0, 100, 100, 5, 0) // 0: the pass is over
		firstDue(t, h, 0, 0, false)
		wantSeqs(t, h.f, 1, 3)
		wantSeqs(t, h.f, 2, 4)
		wantUnread(t, h.f, 2, 1, map[string]uint64{"d7": 1})
		if res, _ := h.f.Sync(2, 0, 10); !res.Truncated || res.EarliestSeq != 4 {
			t.Fatalf("Sync(2, 0) = %+v", res)
		}
		for id, want := range map[string]bool{"1.1": false, "1.2": false, "1.3": true} {
			if got := hasRecord(t, h, id); got != want {
				t.Fatalf("record of %s kept: %v, want %v", id, got, want)
			}
		}
		// The same state as the whole-shard op, but for the records.
		g := expireSetup(t)
		g.must(opExpire(3000, 100))
		want, got := dumpState(t, g.f), dumpState(t, h.f)
		for _, id := range []string{"1.1", "1.2"} {
			delete(want, string(messageKey(id)))
		}
		// This entry needed format 3 (and a seqdnext build's mark-read in
		// the setup the next one).
		delete(got, string(keyFormatSeen))
		delete(want, string(keyFormatSeen))
		if !maps.Equal(got, want) {
			t.Fatalf("state after the step differs from ExpireOp's, the records of 1.1 and 1.2 aside:\n%v\n%v", got, want)
		}
		// Recalling or deleting what retention removed is refused.
		checkRefusals(t, h, []refusal{
			{"recall of a removed message", opRecall(1, "1.2", 1<<40, 0, apps(1, 4, 2, 5)...), stRejected, "does not exist"},
			{"delete of a removed copy", opDelete(2, "1.2", 5), stRejected, "no copy"},
		})
		// A pass with nothing due changes nothing.
		before := dumpState(t, h.f)
		step(t, h, 0, 100, 100, 0, 0)
		requireUnchanged(t, before, h.f, "a second pass")
	})
	t.Run("max users", func(t *testing.T) {
		h := expireSetup(t)
		step(t, h, 0, 1, 100, 2, 2) // user 1's two events, then user 2
		wantSeqs(t, h.f, 1, 3)
		wantSeqs(t, h.f, 2, 1, 2, 3, 4)
		// User 2's copies are left: the records stay until they go.
		if !hasRecord(t, h, "1.1") || !hasRecord(t, h, "1.2") {
			t.Fatal("a record went before its last copy")
		}
		step(t, h, 2, 1, 100, 3, 0)
		wantSeqs(t, h.f, 2, 4)
		if hasRecord(t, h, "1.1") || hasRecord(t, h, "1.2") {
			t.Fatal("a record outlived its last copy")
		}
		// A step from past the last user finds nothing and ends the pass.
		step(t, h, 3, 1, 100, 0, 0)
	})
	t.Run("limit", func(t *testing.T) {
		h := expireSetup(t)
		// Two events a step; a step that stops at its limit starts the next
		// one at the same user.
		if steps := passSteps(t, h, func(from uint64) *clusterv1.StoreOp { return opExpireScan(3000, from, 100, 2) }); steps != "[2:2 2:2 1:0]" {
			t.Fatalf("steps (expired:next) %v", steps)
		}
		wantSeqs(t, h.f, 1, 3)
		wantSeqs(t, h.f, 2, 4)
		wantUnread(t, h.f, 2, 1, map[string]uint64{"d7": 1})
	})
	t.Run("drop_copies removes the copy keys of removed deliveries", func(t *testing.T) {
		msg, recall := clusterv1.FanoutItem_KIND_MESSAGE, clusterv1.FanoutItem_KIND_RECALL
		dropStep := func(h *fsmHarness, expired uint32) {
			t.Helper()
			op := opExpireScan(3000, 0, 100, 100)
			op.GetExpireScan().DropCopies = true
			wantStep(t, h, op, expired, 0)
		}
		copyKeys := func(h *fsmHarness) int {
			t.Helper()
			return len(dump(t, h.f, func(k []byte) bool { return k[0] == tagCopy }))
		}
		holds := func(h *fsmHarness, want bool) {
			t.Helper()
			if held, err := h.f.HoldsCopyKeys(); err != nil || held != want {
				t.Fatalf("HoldsCopyKeys = %v, %v; want %v", held, err, want)
			}
		}
		h := newHarness(t)
		holds(h, false) // a leader leaves drop_copies off
		h.now = 1000
		// User 2 gets 9.1 (sent at 500) and its recall from another shard,
		// and a local message from user 1.
		h.must(opDeliver([]*clusterv1.FanoutItem{fanItem(msg, 2, "9.1", 9)}, 1))
		h.must(opDeliver([]*clusterv1.FanoutItem{fanItem(recall, 2, "9.1", 9)}, 2))
		h.must(opSend(7, "l", "local", apps(1, 1, 2, 3)...))
		if n := copyKeys(h); n != 2 {
			t.Fatalf("%d copy keys before retention, want 2", n)
		}
		h.now = 5000
		// Without drop_copies (a replica before format 6) they stay.
		g := h.replica(t)
		wantStep(t, g, opExpireScan(3000, 0, 100, 100), 4, 0)
		if n := copyKeys(g); n != 2 {
			t.Fatalf("%d copy keys after a step without drop_copies, want 2", n)
		}
		holds(h, true)
		dropStep(h, 4)
		if n := copyKeys(h); n != 0 {
			t.Fatalf("%d copy keys after the step, want 0", n)
		}
		holds(h, false)
		var us clusterv1.UserState
		readRecord(t, h.f, userKey(2), &us)
		if us.ExpiredThroughMs != 1000 {
			t.Fatalf("user 2's expired_through_ms %d, want 1000 (the local message's send time)", us.ExpiredThroughMs)
		}
		// A late redelivery of 9.1, and a first delivery of a message sent
		// before the removed ones, are skipped as applied; a newer one is
		// appended. The seqs of the skipped ones stay unused.
		late := fanItem(msg, 2, "9.2", 9)
		late.Event.SentAtMs = 900
		fresh := fanItem(msg, 2, "9.3", 9)
		fresh.Event.SentAtMs = 4000
		if r := h.must(opDeliver([]*clusterv1.FanoutItem{fanItem(msg, 2, "9.1", 9), late, fresh}, 4, 5, 6)); r.Delivered != 3 {
			t.Fatalf("delivered %d, want 3", r.Delivered)
		}
		wantSeqs(t, h.f, 2, 6)
		wantUnread(t, h.f, 2, 1, map[string]uint64{"d9": 1})
		if n := copyKeys(h); n != 1 {
			t.Fatalf("%d copy keys after the deliveries, want 1 (9.3's)", n)
		}
		// A join is never skipped, however old: it adds no event, only the
		// member's starting point in a group.
		join := fanItem(clusterv1.FanoutItem_KIND_GROUP_JOIN, 2, "j60.1", 9)
		join.Event.Conversation, join.Event.GroupCount = gconv(60), 3
		h.must(opDeliver([]*clusterv1.FanoutItem{join}, 7))
		if n := copyKeys(h); n != 2 {
			t.Fatalf("%d copy keys after an old join, want 2", n)
		}

		// Recalls and hints are never skipped: a recall still blanks a copy
		// that retention left behind a newer event, and a hint item has no
		// send time. User 2 holds 9.6 (sent at 600) behind 9.5 (4500) after
		// 9.4 (800) went.
		k := newHarness(t)
		k.now = 1000
		for i, sent := range []int64{800, 4500, 600} {
			it := fanItem(msg, 2, fmt.Sprintf("9.%d", i+4), 9)
			it.Event.SentAtMs = sent
			k.must(opDeliver([]*clusterv1.FanoutItem{it}, uint64(i+1)))
		}
		k.now = 5000
		dropStep(k, 1)
		wantSeqs(t, k.f, 2, 2, 3)
		oldRecall := fanItem(recall, 2, "9.6", 9)
		oldRecall.Event.SentAtMs = 700
		hint := fanItem(clusterv1.FanoutItem_KIND_GROUP_HINT, 2, "h80.2", 0)
		hint.Event.SentAtMs, hint.Event.Conversation, hint.Event.GroupSeq, hint.Event.GroupCount = 0, gconv(80), 2, 2
		k.must(opDeliver([]*clusterv1.FanoutItem{oldRecall, hint}, 4, 5))
		wantSeqs(t, k.f, 2, 2, 3, 4, 5)
		if e := eventAt(t, k.f, 2, 3); !e.Recalled {
			t.Fatalf("9.6 after its recall: %v; want recalled", e)
		}
		wantUnread(t, k.f, 2, 3, map[string]uint64{"d9": 1, "g80": 2})
	})
	t.Run("a copy behind a newer event keeps the record", func(t *testing.T) {
		// A leader whose clock is behind stamps user 1's copy of 2.1 older
		// than the event before it: the step stops at that event, and the
		// record stays for user 1's copy.
		h := newHarness(t)
		h.now = 5000
		h.must(opSend(13, "n", "newer", apps(1, 1, 3, 1)...))
		h.now = 1000
		h.must(opSend(12, "m", "older", apps(2, 1, 1, 2)...))
		step(t, h, 0, 100, 100, 1, 0) // user 2's copy only
		wantSeqs(t, h.f, 1, 1, 2)
		if !hasRecord(t, h, "2.1") {
			t.Fatal("the record went while user 1's copy remains")
		}
		h.must(opDelete(1, "2.1", 3)) // user 1 still finds its copy
	})
	t.Run("group message record goes with the last member's copy", func(t *testing.T) {
		h := newHarness(t)
		h.must(opCreateGroup(50, 1, false, 5, 2, 3))
		h.now = 1000
		h.must(opGroupSend(50, 1, false, 1, "g", "hello", apps(1, 1, 2, 1, 3, 1)...))
		id := GroupMessageID(50, 1)
		step(t, h, 0, 2, 100, 2, 3)
		if !hasRecord(t, h, id) {
			t.Fatal("the group message's record went before member 3's copy")
		}
		step(t, h, 3, 2, 100, 1, 0)
		if hasRecord(t, h, id) {
			t.Fatal("the group message's record outlived its copies")
		}
	})
	h := expireSetup(t)
	h.must(opExpireScan(1, 0, 1, 1)) // nothing due; the data is marked as format 3's
	checkRefusals(t, h, []refusal{
		{"before 0", opExpireScan(0, 0, 10, 10), stRejected, "expire before 0"},
		{"before negative", opExpireScan(-1, 0, 10, 10), stRejected, "expire before -1"},
		{"limit 0", opExpireScan(3000, 0, 10, 0), stRejected, "limit 0"},
		{"limit too large", opExpireScan(3000, 0, 10, maxExpireEvents+1), stRejected, "limit 10001"},
		{"max users 0", opExpireScan(3000, 0, 0, 10), stRejected, "max_users 0"},
		{"max users too large", opExpireScan(3000, 0, maxExpireUsers+1, 10), stRejected, "max_users 100001"},
	})
}

// A change-log trim removes the entries applied before its time from the
// start of the log, never past the dedup sweep's cursor, and a read from
// before the log's new start says so.
func TestApplyTrimChangeLog(t *testing.T) {
	h := expireSetup(t) // entries 1 (1000 ms), 2 and 3 (2000), 4 (5000)
	trim := func(before int64, limit uint32, trimmed uint32, more bool) {
		t.Helper()
		r := h.must(opTrimLog(before, limit))
		if r.LogTrimmed != trimmed || r.LogMore != more {
			t.Fatalf("trim before %d limit %d: trimmed %d, more %v; want %d, %v", before, limit, r.LogTrimmed, r.LogMore, trimmed, more)
		}
	}
	// Nothing swept yet: the sweep still has to read every entry's sends.
	trim(3000, 10, 0, false)
	if due, err := h.f.TrimDue(3000); err != nil || due {
		t.Fatalf("TrimDue before any sweep: %v, %v", due, err)
	}
	// Sweep past entries 1..3 (their sends' TTL, 60 s, ran out; entry 4's
	// did not), then trim up to 3000 ms in steps.
	h.now = 62_001
	if r := h.must(opSweep(100, 0)); r.Swept != 2 {
		t.Fatalf("swept %d", r.Swept)
	}
	if due, err := h.f.TrimDue(3000); err != nil || !due {
		t.Fatalf("TrimDue after the sweep: %v, %v", due, err)
	}
	trim(3000, 2, 2, true)
	log, first, err := h.f.ChangeLog(2, 10)
	if err != nil || first != 3 || len(log) == 0 || log[0].Index != 3 {
		t.Fatalf("ChangeLog(2): first %d, %d entries, %v; want the log from 3", first, len(log), err)
	}
	var trimmed *LogTrimmedError
	if _, _, err := h.f.ChangeLog(0, 10); !errors.As(err, &trimmed) || trimmed.First != 3 || !strings.Contains(err.Error(), "retention") {
		t.Fatalf("ChangeLog(0) after a trim: %v, want a LogTrimmedError from 3", err)
	}
	trim(3000, 2, 1, false)
	// Entry 4's send is still remembered: the trim stops at the cursor.
	trim(1<<40, 10, 0, false)
	if _, first, err := h.f.ChangeLog(3, 10); err != nil || first != 4 {
		t.Fatalf("ChangeLog(3): first %d, %v", first, err)
	}
	checkRefusals(t, h, []refusal{
		{"before 0", opTrimLog(0, 10), stRejected, "trim before 0"},
		{"limit 0", opTrimLog(3000, 0), stRejected, "limit 0"},
		{"limit too large", opTrimLog(3000, maxTrim+1), stRejected, "limit 10001"},
	})
}

// Refusals the client could have avoided carry the status code that says
// why (the leader answers with it); the rest leave Code unset, which
// callers get as FAILED_PRECONDITION.
func TestApplyRefusalCodes(t *testing.T) {
	h := newHarness(t)
	h.must(opSend(7, "c1", "hi", apps(1, 1, 2, 1)...))
	h.must(opCreateGroup(50, 1, false, 5, 2))
	const window = 120_000
	cases := []struct {
		name string
		op   *clusterv1.StoreOp
		want codes.Code
	}{
		{"recall of an unknown message", opRecall(1, "1.99", window, 0, apps(1, 2)...), codes.NotFound},
		{"recall by another user", opRecall(2, "1.1", window, 0, apps(1, 2, 2, 2)...), codes.PermissionDenied},
		{"delete without a copy", opDelete(3, "1.1", 1), codes.NotFound},
		{"delete of an unknown message", opDelete(2, "1.77", 2), codes.NotFound},
		{"create over another group", opCreateGroup(50, 2, false, 5, 3), codes.AlreadyExists},
		{"add to an unknown group", opAddMembers(99, false, 5, 3), codes.NotFound},
		{"remove from an unknown group", opRemoveMembers(99, 3), codes.NotFound},
		{"mark read from the future", opMarkRead(2, dconv(7), 9, 2), codes.InvalidArgument},
		{"remove the owner", opRemoveMembers(50, 1), codes.OK},
	}
	for _, c := range cases {
		if r := h.one(c.op); r.Status != stRejected || r.Code != c.want {
			t.Errorf("%s: %s (code %v), want REJECTED with code %v", c.name, statusOf(r), r.Code, c.want)
		}
	}
	h.now += window + 1
	if r := h.one(opRecall(1, "1.1", window, 0, apps(1, 2, 2, 2)...)); r.Status != stRejected || r.Code != codes.OK {
		t.Errorf("recall outside the window: %s (code %v), want REJECTED without a code", statusOf(r), r.Code)
	}
}

func opSweep(limit uint32, grace int64) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_SweepDedup{SweepDedup: &clusterv1.SweepDedupOp{Limit: limit, GraceMs: grace}}}
}

// dedupKeys returns the dedup records' keys, in order.
func dedupKeys(t testTB, f *FSM) []string {
	t.Helper()
	var out []string
	for k := range dump(t, f, func(k []byte) bool { return k[0] == tagDedup }) {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// sweepAll applies sweeps until one says there is no more to look at, and
// returns how many records they deleted and how many ops it took.
func sweepAll(h *fsmHarness, limit uint32, grace int64) (swept uint32, ops int) {
	for {
		r := h.must(opSweep(limit, grace))
		swept, ops = swept+r.Swept, ops+1
		if !r.SweepMore {
			return swept, ops
		}
	}
}

// A sweep deletes the dedup records past their TTL (and its grace), and
// only those, walking the change log in order from where the last sweep
// stopped; no answer changes, and every replica sweeps alike.
func TestApplySweepDedup(t *testing.T) {
	h := newHarness(t)
	first := h.now
	for i := range 5 { // users 1..5, each in an entry of its own, expiring at first+TTL
		u := uint64(i + 1)
		h.must(opSend(7, "old", "hello", apps(u, 10, 100, 20+u)...))
	}
	h.now += 1000
	for i := range 3 { // expiring 1 s later
		u := uint64(i + 1)
		h.must(opSend(7, "new", "hello", apps(u, 11, 100, 30+u)...))
	}
	if n := len(dedupKeys(t, h.f)); n != 8 {
		t.Fatalf("%d dedup records, want 8", n)
	}
	before := dumpState(t, h.f)

	// Not yet expired, or within the grace: nothing goes, nothing moves.
	for _, tc := range []struct {
		now, grace int64
	}{{first + testDedupTTL - 1, 0}, {first + testDedupTTL, 1}} {
		h.now = tc.now
		if due, err := h.f.SweepDue(tc.now - tc.grace); err != nil || due {
			t.Fatalf("SweepDue at %d with grace %d: %v %v, want false", tc.now, tc.grace, due, err)
		}
		if r := h.must(opSweep(100, tc.grace)); r.Swept != 0 || r.SweepMore {
			t.Fatalf("sweep at %d with grace %d: swept %d, more %v", tc.now, tc.grace, r.Swept, r.SweepMore)
		}
	}
	// The sweeps need store format 2, and the data says so from then on
	// (a format-1 build refuses to open it).
	after := dumpState(t, h.f)
	if v := after[string(keyFormatSeen)]; v != "\x00\x00\x00\x02" {
		t.Fatalf("format seen after a sweep: %x, want 2", v)
	}
	delete(after, string(keyFormatSeen))
	if d := diffKeys(before, after); d != "" {
		t.Fatalf("sweeps with nothing expired wrote state:\n%s", d)
	}

	// The first five expire; sweep them two entries at a time (each
	// counts one, and one for its send).
	h.now = first + testDedupTTL
	if due, err := h.f.SweepDue(h.now); err != nil || !due {
		t.Fatalf("SweepDue once five records expired: %v %v, want true", due, err)
	}
	if swept, ops := sweepAll(h, 4, 0); swept != 5 || ops != 3 {
		t.Fatalf("swept %d records in %d ops, want 5 in 3 (two entries a time)", swept, ops)
	}
	left := dedupKeys(t, h.f)
	if len(left) != 3 {
		t.Fatalf("%d dedup records left, want the 3 unexpired", len(left))
	}
	for _, k := range left {
		if !strings.HasSuffix(k, "new") {
			t.Fatalf("record %q left, want only the unexpired ones", k)
		}
	}
	if due, _ := h.f.SweepDue(h.now); due {
		t.Fatal("SweepDue with only unexpired records left")
	}
	// The unexpired ones still answer retries; a swept one's id is new,
	// and its record, written now, outlives the sweep of its first send.
	if r := h.one(opSend(7, "new", "hello", apps(1, 12, 100, 40)...)); r.Status != stDuplicate {
		t.Fatalf("retry of an unexpired send after the sweep: %s", statusOf(r))
	}
	if r := h.must(opSend(7, "old", "hello", apps(1, 13, 100, 41)...)); r.Send.MessageId != "1.13" {
		t.Fatalf("send under a swept id: %v, want a new message", r.Send)
	}
	h.now = first + testDedupTTL + 1000
	if swept, _ := sweepAll(h, 100, 0); swept != 3 {
		t.Fatalf("second sweep deleted %d records, want the 3 of the second batch", swept)
	}
	// Only the sweeps' own entries are left after the resend: nothing is
	// due, or each sweep would call for the next.
	if due, _ := h.f.SweepDue(h.now); due {
		t.Fatal("SweepDue with only sweep entries and an unexpired send left")
	}
	if r := h.one(opSend(7, "old", "hello", apps(1, 14, 100, 42)...)); r.Status != stDuplicate || r.Send.MessageId != "1.13" {
		t.Fatalf("retry of the resend after the sweep: %s %v, want the resend's answer", statusOf(r), r.Send)
	}
	// Replicas sweep alike: another replica applying the same entries
	// ends in the same state.
	other := h.replica(t)
	if d := diffKeys(dumpState(t, h.f), dumpState(t, other.f)); d != "" {
		t.Fatalf("a replica applying the same entries differs:\n%s", d)
	}
}

func TestApplySweepDedupRefusals(t *testing.T) {
	h := newHarness(t)
	h.must(opSend(7, "c1", "hello", apps(1, 10, 2, 20)...))
	h.now += testDedupTTL
	h.must(opSweep(1, testDedupTTL)) // nothing expired that long ago; marks the data format 2
	before := dumpState(t, h.f)
	for _, tc := range []struct {
		name string
		op   *clusterv1.StoreOp
		want string
	}{
		{"limit 0", opSweep(0, 0), "sweep limit 0"},
		{"huge limit", opSweep(maxSweep+1, 0), "want 1..10000"},
		{"negative grace", opSweep(10, -1), "sweep grace -1 ms is negative"},
	} {
		r := h.one(tc.op)
		if r.Status != clusterv1.OpStatus_OP_STATUS_REJECTED || r.Code != codes.InvalidArgument || !strings.Contains(r.Msg, tc.want) {
			t.Fatalf("%s: %s %q, want REJECTED naming %q", tc.name, statusOf(r), r.Msg, tc.want)
		}
	}
	requireUnchanged(t, before, h.f, "refused sweeps")
	// A limit of 1 takes the one expired send and stops with entries left
	// (the sweeps' own); the next walks them, sends none, and is done.
	if r := h.must(opSweep(1, 0)); r.Swept != 1 || !r.SweepMore {
		t.Fatalf("sweep of the only expired record with limit 1: swept %d, more %v", r.Swept, r.SweepMore)
	}
	if r := h.must(opSweep(100, 0)); r.Swept != 0 || r.SweepMore {
		t.Fatalf("sweep of what is left: swept %d, more %v", r.Swept, r.SweepMore)
	}

	// A stretch of entries without sends (here refused sweeps) before an
	// expired send: walked in steps of the limit, then the record goes.
	h.must(opSend(7, "c2", "hello", apps(1, 11, 2, 21)...))
	for range 5 {
		h.one(opSweep(0, 0))
	}
	h.must(opSend(7, "c3", "hello", apps(1, 12, 2, 22)...))
	h.now += testDedupTTL
	h.must(opSweep(1, testDedupTTL)) // nothing expired that long ago: it stops at the first send
	if due, err := h.f.SweepDue(h.now); err != nil || !due {
		t.Fatalf("SweepDue with two expired sends around a stretch without: %v %v", due, err)
	}
	if swept, ops := sweepAll(h, 2, 0); swept != 2 || ops < 4 {
		t.Fatalf("swept %d records in %d ops, want 2 in at least 4 (8 entries, 2 a time)", swept, ops)
	}
	if due, _ := h.f.SweepDue(h.now); due {
		t.Fatal("SweepDue after the stretch was swept")
	}
}
