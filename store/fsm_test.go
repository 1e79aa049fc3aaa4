package store

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/seqd/seqd/internal/testwait"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// This file holds the FSM test harness (shared by every FSM test in the
// package) and the tests of Apply's entry handling: the applied index,
// undecodable entries, the change log and oversized entries.

var runKnownBugs = flag.Bool("store-run-bugs", false, "run the store tests that are skipped for known bugs (they fail until fixed)")

// knownBug skips a test that demonstrates an open bug, unless
// -store-run-bugs is given; the test body is the repro and fails until the
// bug is fixed.
func knownBug(t *testing.T, desc string) {
	t.Helper()
	if !*runKnownBugs {
		t.Skip("BUG: " + desc)
	}
}

// testTB is what the harness needs from *testing.T and *rapid.T.
type testTB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// fsmHarness drives one FSM the way Raft does: entries with increasing
// indexes, each carrying the leader's clock.
type fsmHarness struct {
	t       testTB
	dir     string
	f       *FSM
	idx     uint64
	now     int64
	entries map[uint64][]byte
	// leak skips closing Badger at cleanup (after a failure that can
	// wedge it, where Close would block).
	leak bool
}

func openTestFSM(t testTB, dir string) *FSM {
	t.Helper()
	f, err := OpenFSM(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("OpenFSM: %v", err)
	}
	return f
}

func newHarness(t testing.TB) *fsmHarness {
	t.Helper()
	dir := t.TempDir()
	h := &fsmHarness{t: t, dir: dir, f: openTestFSM(t, dir), now: 1_000_000, entries: map[uint64][]byte{}}
	t.Cleanup(func() {
		if !h.leak {
			h.f.Close()
		}
	})
	return h
}

// replica is another replica of h's shard: a new harness that has
// applied every entry h has.
func (h *fsmHarness) replica(t testing.TB) *fsmHarness {
	t.Helper()
	r := newHarness(t)
	for i := uint64(1); i <= h.idx; i++ {
		r.applyData(h.entries[i])
	}
	return r
}

// reopen closes Badger and opens it again, as a replica restart does.
func (h *fsmHarness) reopen(t testTB) {
	t.Helper()
	if err := h.f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	h.f = openTestFSM(t, h.dir)
}

func encodeOps(t testTB, now int64, ops ...*clusterv1.StoreOp) []byte {
	t.Helper()
	data, err := EncodeBatch(&clusterv1.StoreBatch{NowMs: now, Ops: ops})
	if err != nil {
		t.Fatalf("EncodeBatch: %v", err)
	}
	return data
}

// applyData applies raw entry bytes at the next index.
func (h *fsmHarness) applyData(data []byte) *BatchResult {
	h.t.Helper()
	h.idx++
	h.entries[h.idx] = data
	r := h.f.Apply(&raft.Log{Type: raft.LogCommand, Index: h.idx, Data: data})
	br, ok := r.(*BatchResult)
	if !ok || br == nil {
		h.t.Fatalf("Apply returned %T, want *BatchResult", r)
	}
	return br
}

// apply applies one entry holding ops at the harness clock and returns
// the per-op results.
func (h *fsmHarness) apply(ops ...*clusterv1.StoreOp) []*OpResult {
	h.t.Helper()
	br := h.applyData(encodeOps(h.t, h.now, ops...))
	if br.Err != nil {
		h.t.Fatalf("entry %d refused: %v", h.idx, br.Err)
	}
	if len(br.Results) != len(ops) {
		h.t.Fatalf("entry %d: %d results for %d ops", h.idx, len(br.Results), len(ops))
	}
	if h.f.AppliedIndex() != h.idx {
		h.t.Fatalf("applied index %d after entry %d", h.f.AppliedIndex(), h.idx)
	}
	return br.Results
}

func (h *fsmHarness) one(op *clusterv1.StoreOp) *OpResult {
	h.t.Helper()
	return h.apply(op)[0]
}

// must applies op and fails unless it is OK.
func (h *fsmHarness) must(op *clusterv1.StoreOp) *OpResult {
	h.t.Helper()
	r := h.one(op)
	if r.Status != clusterv1.OpStatus_OP_STATUS_OK {
		h.t.Fatalf("op %v: %v %s", op, r.Status, r.Msg)
	}
	return r
}

// dumpState returns every key and value in Badger except the bookkeeping
// every entry writes (the applied index and the entry's change-log record),
// so "the op wrote nothing" is dumpBefore == dumpAfter.
func dumpState(t testTB, f *FSM) map[string]string {
	t.Helper()
	return dump(t, f, func(k []byte) bool { return k[0] != tagLog && !bytes.Equal(k, keyApplied) })
}

// dumpAll is dumpState including the change log and the applied index.
func dumpAll(t testTB, f *FSM) map[string]string {
	t.Helper()
	return dump(t, f, func([]byte) bool { return true })
}

// dump returns the keys keep accepts, with their values.
func dump(t testTB, f *FSM, keep func(key []byte) bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := f.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			if !keep(k) {
				continue
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(k)] = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	return out
}

// diffKeys describes how two dumps differ, by table tag and key.
func diffKeys(before, after map[string]string) string {
	var d []string
	for k, v := range after {
		if bv, ok := before[k]; !ok {
			d = append(d, fmt.Sprintf("added %q", k))
		} else if bv != v {
			d = append(d, fmt.Sprintf("changed %q", k))
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			d = append(d, fmt.Sprintf("removed %q", k))
		}
	}
	sort.Strings(d)
	return strings.Join(d, "\n")
}

func requireUnchanged(t testTB, before map[string]string, f *FSM, what string) {
	t.Helper()
	if d := diffKeys(before, dumpState(t, f)); d != "" {
		t.Fatalf("%s wrote state:\n%s", what, d)
	}
}

// Op builders. Seqs are chosen by the tests, as the leader would allocate
// them.

func dconv(id uint64) *seqdv1.Conversation {
	return &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT, Id: id}
}

func gconv(id uint64) *seqdv1.Conversation {
	return &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_GROUP, Id: id}
}

// apps builds appends from user, seq pairs.
func apps(pairs ...uint64) []*clusterv1.Append {
	if len(pairs)%2 != 0 {
		panic("apps wants user, seq pairs")
	}
	var out []*clusterv1.Append
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, &clusterv1.Append{User: pairs[i], Seq: pairs[i+1]})
	}
	return out
}

const testDedupTTL = 60_000

// opSend is a DIRECT send from the first append's user to the others;
// the message id is the sender's seq, as the leader names it.
func opSend(conv uint64, cmid, body string, appends ...*clusterv1.Append) *clusterv1.StoreOp {
	sender := appends[0].User
	var rcpts []uint64
	for _, a := range appends[1:] {
		rcpts = append(rcpts, a.User)
	}
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Send{Send: &clusterv1.SendOp{
		Request:    &seqdv1.SendRequest{Sender: sender, Conversation: dconv(conv), Recipients: rcpts, ClientMsgId: cmid, Body: []byte(body)},
		MessageId:  DirectMessageID(sender, appends[0].Seq),
		Appends:    appends,
		DedupTtlMs: testDedupTTL,
	}}}
}

// remoteTo makes a send's op also go to users on another shard: listed in
// the request's recipients, and queued for them, as the leader builds it.
func remoteTo(op *clusterv1.StoreOp, users ...uint64) *clusterv1.StoreOp {
	s := op.GetSend()
	s.Remote = append(s.Remote, users...)
	s.Request.Recipients = append(s.Request.Recipients, users...)
	return op
}

// opGroupSend is a GROUP send. For read fanout give gseq (and only the
// sender's append); for write fanout gseq names the message only.
func opGroupSend(group, gseq uint64, readFanout bool, sender uint64, cmid, body string, appends ...*clusterv1.Append) *clusterv1.StoreOp {
	op := &clusterv1.SendOp{
		Request:    &seqdv1.SendRequest{Sender: sender, Conversation: gconv(group), ClientMsgId: cmid, Body: []byte(body)},
		MessageId:  GroupMessageID(group, gseq),
		Appends:    appends,
		DedupTtlMs: testDedupTTL,
	}
	if readFanout {
		op.GroupSeq = gseq
	}
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Send{Send: op}}
}

func opSendRaw(op *clusterv1.SendOp) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Send{Send: op}}
}

func opDeliver(items []*clusterv1.FanoutItem, seqs ...uint64) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Deliver{Deliver: &clusterv1.DeliverOp{Items: items, Seqs: seqs}}}
}

func opMarkRead(user uint64, conv *seqdv1.Conversation, upTo, seq uint64) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_MarkRead{MarkRead: &clusterv1.MarkReadOp{
		Request: &seqdv1.MarkReadRequest{User: user, Conversation: conv, UpToSeq: upTo}, Seq: seq}}}
}

func opMarkReadFanout(user, group, upToGseq, count, seq uint64) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_MarkRead{MarkRead: &clusterv1.MarkReadOp{
		Request: &seqdv1.MarkReadRequest{User: user, Conversation: gconv(group), UpToSeq: upToGseq}, Seq: seq,
		ReadFanout: true, GroupCount: count}}}
}

func opRecall(sender uint64, id string, window uint64, gseq uint64, appends ...*clusterv1.Append) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Recall{Recall: &clusterv1.RecallOp{
		Request: &seqdv1.RecallRequest{Sender: sender, MessageId: id}, Appends: appends, WindowMs: window, GroupSeq: gseq}}}
}

func opDelete(user uint64, id string, seq uint64) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Delete{Delete: &clusterv1.DeleteOp{
		Request: &seqdv1.DeleteRequest{User: user, MessageId: id}, Seq: seq}}}
}

func opCreateGroup(group, owner uint64, readFanout bool, threshold uint32, members ...uint64) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_CreateGroup{CreateGroup: &clusterv1.CreateGroupOp{
		Request:             &seqdv1.CreateGroupRequest{GroupId: group, Owner: owner, Members: members, ReadFanout: readFanout},
		ReadFanoutThreshold: threshold}}}
}

// opAddMembers is an add as leaders propose it now (unread from the join).
func opAddMembers(group uint64, withHistory bool, threshold uint32, members ...uint64) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_AddMembers{AddMembers: &clusterv1.MembersOp{
		GroupId: group, Members: members, WithHistory: withHistory, UnreadFromJoin: true, ReadFanoutThreshold: threshold}}}
}

func opRemoveMembers(group uint64, members ...uint64) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_RemoveMembers{RemoveMembers: &clusterv1.MembersOp{GroupId: group, Members: members}}}
}

func opHint(group, gseq, count uint64, final bool, remote []uint64, appends ...*clusterv1.Append) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_GroupHint{GroupHint: &clusterv1.GroupHintOp{
		GroupId: group, GroupSeq: gseq, GroupCount: count, Final: final, Appends: appends, Remote: remote}}}
}

func opOutboxAck(keys ...[]byte) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_OutboxAck{OutboxAck: &clusterv1.OutboxAckOp{Keys: keys}}}
}

func opExpire(before int64, limit uint32) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Expire{Expire: &clusterv1.ExpireOp{BeforeMs: before, Limit: limit}}}
}

func opTrimLog(before int64, limit uint32) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_TrimChangeLog{TrimChangeLog: &clusterv1.TrimChangeLogOp{BeforeMs: before, Limit: limit}}}
}

func opExpireScan(before int64, from uint64, maxUsers, limit uint32) *clusterv1.StoreOp {
	return &clusterv1.StoreOp{Op: &clusterv1.StoreOp_ExpireScan{ExpireScan: &clusterv1.ExpireScanOp{
		BeforeMs: before, FromUser: from, MaxUsers: maxUsers, Limit: limit}}}
}

// Read helpers.

func syncAllEvents(t testTB, f *FSM, user uint64) []*seqdv1.Event {
	t.Helper()
	res, err := f.Sync(user, 0, 1<<20)
	if err != nil {
		t.Fatalf("Sync(%d): %v", user, err)
	}
	return res.Events
}

func seqsOf(evs []*seqdv1.Event) []uint64 {
	out := []uint64{}
	for _, e := range evs {
		out = append(out, e.Seq)
	}
	return out
}

func unreadOf(t testTB, f *FSM, user uint64) (map[string]uint64, uint64) {
	t.Helper()
	u, err := f.Unread(user, nil, 0)
	if err != nil {
		t.Fatalf("Unread(%d): %v", user, err)
	}
	m := map[string]uint64{}
	for _, c := range u.Conversations {
		m[convName(c.Conversation)] = c.Count
	}
	return m, u.Total
}

func convName(c *seqdv1.Conversation) string {
	switch c.GetType() {
	case seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT:
		return fmt.Sprintf("d%d", c.GetId())
	case seqdv1.ConversationType_CONVERSATION_TYPE_GROUP:
		return fmt.Sprintf("g%d", c.GetId())
	}
	return fmt.Sprintf("?%d:%d", c.GetType(), c.GetId())
}

// protoDiff is "" when two messages are equal, else both in text form.
func protoDiff(want, got proto.Message) string {
	if proto.Equal(want, got) {
		return ""
	}
	return fmt.Sprintf("want: %s\ngot:  %s", prototext.Format(want), prototext.Format(got))
}

func statusOf(r *OpResult) string { return r.Status.String() + " " + r.Msg }

// Tests of entry handling.

func TestFSMAppliedIndexSkipsReplays(t *testing.T) {
	h := newHarness(t)
	h.must(opSend(7, "a", "hello", apps(1, 1, 2, 1)...))
	before := dumpAll(t, h.f)

	// The same index again, and an older one, with different contents:
	// both are replays Raft may hand a restarted replica, and do nothing.
	for _, idx := range []uint64{1, 0} {
		data := encodeOps(t, h.now, opSend(7, "b", "other", apps(1, 5, 2, 5)...))
		br, ok := h.f.Apply(&raft.Log{Type: raft.LogCommand, Index: idx, Data: data}).(*BatchResult)
		if !ok || br.Err != nil || br.Results != nil {
			t.Fatalf("replay of index %d: got %+v, want an empty result", idx, br)
		}
	}
	if d := diffKeys(before, dumpAll(t, h.f)); d != "" {
		t.Fatalf("replayed entries changed state:\n%s", d)
	}
	if h.f.AppliedIndex() != 1 {
		t.Fatalf("applied index %d, want 1", h.f.AppliedIndex())
	}
}

func TestFSMNonCommandEntriesChangeNothing(t *testing.T) {
	h := newHarness(t)
	h.must(opSend(7, "a", "hello", apps(1, 1, 2, 1)...))
	before := dumpAll(t, h.f)
	for i, typ := range []raft.LogType{raft.LogNoop, raft.LogBarrier, raft.LogConfiguration} {
		r := h.f.Apply(&raft.Log{Type: typ, Index: uint64(10 + i), Data: []byte("x")})
		if br := r.(*BatchResult); br.Err != nil || br.Results != nil {
			t.Fatalf("%v entry: %+v", typ, br)
		}
	}
	if d := diffKeys(before, dumpAll(t, h.f)); d != "" {
		t.Fatalf("non-command entries changed state:\n%s", d)
	}
	// A later command still applies.
	h.idx = 12
	h.must(opSend(7, "b", "again", apps(1, 2, 2, 2)...))
}

func TestFSMUndecodableEntryAdvancesIndex(t *testing.T) {
	payload, _ := proto.Marshal(&clusterv1.StoreBatch{NowMs: 1})
	cases := map[string][]byte{
		"garbage":      []byte("\xff\xff\xff\xff not protobuf"),
		"unknown type": mustMarshal(t, &clusterv1.StoreCommand{Type: clusterv1.StoreCommandType(99), Payload: payload}),
		"unspecified":  mustMarshal(t, &clusterv1.StoreCommand{Payload: payload}),
		"bad payload":  mustMarshal(t, &clusterv1.StoreCommand{Type: clusterv1.StoreCommandType_STORE_COMMAND_TYPE_BATCH, Payload: []byte{0x0a, 0xff}}),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			h.must(opSend(7, "a", "hello", apps(1, 1, 2, 1)...))
			before := dumpState(t, h.f)
			br := h.applyData(data)
			if !errors.Is(br.Err, ErrBadCommand) {
				t.Fatalf("Err = %v, want ErrBadCommand", br.Err)
			}
			if h.f.AppliedIndex() != 2 {
				t.Fatalf("applied index %d after a refused entry 2", h.f.AppliedIndex())
			}
			requireUnchanged(t, before, h.f, "an undecodable entry")
			log, _, err := h.f.ChangeLog(1, 10)
			if err != nil || len(log) != 0 {
				t.Fatalf("change log after 1: %v %v; an undecodable entry changes no user data", log, err)
			}
			// The index survives a restart, so the entry is not applied twice.
			h.reopen(t)
			if h.f.AppliedIndex() != 2 {
				t.Fatalf("applied index %d after reopen, want 2", h.f.AppliedIndex())
			}
			h.must(opSend(7, "b", "next", apps(1, 2, 2, 2)...))
		})
	}
}

func mustMarshal(t testTB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return b
}

func TestFSMReopenThenReplayChangesNothing(t *testing.T) {
	h := newHarness(t)
	h.must(opSend(7, "a", "hello", apps(1, 1, 2, 1)...))
	h.must(opMarkRead(2, dconv(7), 1, 2))
	h.must(opCreateGroup(50, 1, true, 10, 2, 3))
	h.must(opGroupSend(50, 1, true, 1, "g", "to group", apps(1, 2)...))
	before := dumpAll(t, h.f)
	h.reopen(t)
	if h.f.AppliedIndex() != h.idx {
		t.Fatalf("applied index %d after reopen, want %d", h.f.AppliedIndex(), h.idx)
	}
	// Raft replays its log from the last snapshot after a restart.
	for i := uint64(1); i <= h.idx; i++ {
		h.f.Apply(&raft.Log{Type: raft.LogCommand, Index: i, Data: h.entries[i]})
	}
	if d := diffKeys(before, dumpAll(t, h.f)); d != "" {
		t.Fatalf("replay after reopen changed state:\n%s", d)
	}
}

func TestFSMChangeLogOneEntryPerIndex(t *testing.T) {
	h := newHarness(t)
	send := opSend(7, "a", "hello", apps(1, 1, 2, 1)...)
	h.must(send)
	// One entry with an OK op, a DUPLICATE, an OUT_OF_ORDER and a REJECTED.
	h.now += 5
	ops := []*clusterv1.StoreOp{
		opSend(7, "b", "second", apps(1, 2, 2, 2)...),
		opSend(7, "a", "hello", apps(1, 3, 2, 3)...),
		opSend(7, "c", "stale", apps(1, 1, 2, 9)...),
		opDelete(3, "1.1", 1),
	}
	rs := h.apply(ops...)
	wantStatus := []clusterv1.OpStatus{clusterv1.OpStatus_OP_STATUS_OK, clusterv1.OpStatus_OP_STATUS_DUPLICATE,
		clusterv1.OpStatus_OP_STATUS_OUT_OF_ORDER, clusterv1.OpStatus_OP_STATUS_REJECTED}
	for i, r := range rs {
		if r.Status != wantStatus[i] {
			t.Fatalf("op %d: %s, want %v", i, statusOf(r), wantStatus[i])
		}
	}
	h.applyData([]byte("junk")) // index 3: consumed, no change-log record
	h.now += 5
	h.must(opMarkRead(2, dconv(7), 2, 4))

	log, _, err := h.f.ChangeLog(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var idx []uint64
	for _, e := range log {
		idx = append(idx, e.Index)
	}
	if fmt.Sprint(idx) != "[1 2 4]" {
		t.Fatalf("change log indexes %v, want [1 2 4]", idx)
	}
	e := log[1]
	if e.NowMs != 1_000_005 || fmt.Sprint(e.Applied) != "[true false false false]" || len(e.Ops) != 4 {
		t.Fatalf("entry 2: now %d applied %v ops %d", e.NowMs, e.Applied, len(e.Ops))
	}
	if d := protoDiff(ops[0], e.Ops[0]); d != "" {
		t.Fatalf("entry 2 op 0 differs from what was applied:\n%s", d)
	}
	if fmt.Sprint(log[0].Applied) != "[true]" || log[0].NowMs != 1_000_000 {
		t.Fatalf("entry 1: %v", log[0])
	}
	// Paging.
	page, _, _ := h.f.ChangeLog(1, 1)
	if len(page) != 1 || page[0].Index != 2 {
		t.Fatalf("ChangeLog(1, 1) = %v", page)
	}
	page, _, _ = h.f.ChangeLog(2, 10)
	if len(page) != 1 || page[0].Index != 4 {
		t.Fatalf("ChangeLog(2, 10) = %v", page)
	}
	page, _, _ = h.f.ChangeLog(4, 10)
	if len(page) != 0 {
		t.Fatalf("ChangeLog(4, 10) = %v", page)
	}
}

// An entry over Badger's transaction limit is refused as a whole, on every
// replica alike, and the next entry applies normally.
func TestFSMEntryTooLargeIsRefusedWhole(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a very large entry")
	}
	h := newHarness(t)
	h.must(opSend(7, "a", "hello", apps(1, 1, 2, 1)...))
	before := dumpState(t, h.f)
	// 40,000 recipients: each append writes four keys, beyond Badger's
	// per-transaction entry count.
	a := apps(1, 2)
	for u := uint64(1000); u < 41_000; u++ {
		a = append(a, &clusterv1.Append{User: u, Seq: 1})
	}
	br := h.applyData(encodeOps(t, h.now, opSend(7, "big", "x", a...)))
	if br.Err == nil || !strings.Contains(br.Err.Error(), "too large") {
		t.Fatalf("Err = %v, want a too-large refusal", br.Err)
	}
	if h.f.AppliedIndex() != 2 {
		t.Fatalf("applied index %d, want 2", h.f.AppliedIndex())
	}
	requireUnchanged(t, before, h.f, "an oversized entry")
	h.must(opSend(7, "big", "x", apps(1, 2, 2, 2)...))
}

// A key longer than Badger's 65,000-byte limit makes the transaction's
// Set fail with an error that is not ErrTxnTooBig, and applyBatch panics.
// Deliver items come from the StoreNode.Deliver RPC, which is served on the
// same gRPC server as the public API and only checks that message_id is
// non-empty, so one request crashes every replica of the shard.
func TestFSMOversizedKeyDoesNotPanic(t *testing.T) {
	for name, op := range map[string]*clusterv1.StoreOp{
		"deliver": opDeliver([]*clusterv1.FanoutItem{{Kind: clusterv1.FanoutItem_KIND_MESSAGE, User: 2,
			Event: &seqdv1.Event{Kind: seqdv1.EventKind_EVENT_KIND_MESSAGE, MessageId: strings.Repeat("x", 70_000), Sender: 9, Conversation: dconv(9), Body: []byte("b")}}}, 1),
		"send": opSend(7, strings.Repeat("c", 70_000), "hello", apps(1, 1, 2, 1)...),
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			var br *BatchResult
			func() {
				defer func() {
					if p := recover(); p != nil {
						msg := fmt.Sprint(p)
						t.Fatalf("Apply panicked: %s", msg[:min(len(msg), 160)])
					}
				}()
				br = h.applyData(encodeOps(t, h.now, op))
			}()
			if br.Err == nil && br.Results[0].Status == clusterv1.OpStatus_OP_STATUS_OK {
				t.Fatalf("an op with a 70,000-byte key was applied")
			}
			if h.f.AppliedIndex() != 1 {
				t.Fatalf("applied index %d, want 1", h.f.AppliedIndex())
			}
		})
	}
}

func TestFSMUnknownOpIsRejected(t *testing.T) {
	h := newHarness(t)
	before := dumpState(t, h.f)
	r := h.one(&clusterv1.StoreOp{})
	if r.Status != clusterv1.OpStatus_OP_STATUS_REJECTED {
		t.Fatalf("empty op: %s", statusOf(r))
	}
	requireUnchanged(t, before, h.f, "an empty op")
}

// Every entry tells the subscription hub which users it touched (and which
// groups' membership changed), after it committed; refused ops touch
// nothing.
func TestFSMNotifiesTouchedUsersAndGroups(t *testing.T) {
	h := newHarness(t)
	var gotUsers, gotGroups []uint64
	h.f.notify = func(u, g []uint64) { gotUsers, gotGroups = u, g }
	h.must(opCreateGroup(50, 1, true, 10, 2))
	if fmt.Sprint(gotGroups) != "[50]" || len(gotUsers) != 0 {
		t.Fatalf("create group notified users %v groups %v, want [] [50]", gotUsers, gotGroups)
	}
	h.apply(opSend(7, "a", "x", apps(3, 1, 2, 1)...), opGroupSend(50, 1, true, 1, "g", "y", apps(1, 1)...))
	if fmt.Sprint(gotUsers) != "[1 2 3]" {
		t.Fatalf("sends notified users %v, want [1 2 3]", gotUsers)
	}
	gotUsers, gotGroups = nil, nil
	h.one(opSend(7, "b", "x", apps(3, 1)...)) // OUT_OF_ORDER
	if len(gotUsers) != 0 || len(gotGroups) != 0 {
		t.Fatalf("a refused op notified users %v groups %v", gotUsers, gotGroups)
	}
	h.must(opHint(50, 1, 1, true, nil, apps(2, 2)...))
	if fmt.Sprint(gotUsers) != "[2]" {
		t.Fatalf("hint notified users %v, want [2]", gotUsers)
	}
}

// Reads run while entries apply (replicas serve Sync from applied state):
// each read sees whole entries, so the unread total always equals the sum
// of the conversations and every inbox ascends.
func TestFSMReadsDuringApplySeeWholeEntries(t *testing.T) {
	h := newHarness(t)
	const entries = 300
	data := make([][]byte, entries)
	for i := range data {
		s := uint64(2*i + 1)
		// A send and a mark-read in one entry: the counts move together.
		data[i] = encodeOps(t, h.now, opSend(uint64(7+i%3), fmt.Sprint("c", i), "x", apps(1, uint64(i+1), 2, s)...),
			opMarkRead(2, dconv(uint64(7+(i+1)%3)), s, s+1))
	}
	done := make(chan struct{})
	errs := make(chan string, 4)
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				u, err := h.f.Unread(2, nil, 0)
				if err != nil {
					errs <- err.Error()
					return
				}
				var sum uint64
				for _, c := range u.Conversations {
					sum += c.Count
				}
				if sum != u.Total {
					errs <- fmt.Sprintf("unread total %d, conversations sum to %d", u.Total, sum)
					return
				}
				res, err := h.f.Sync(2, 0, 1<<20)
				if err != nil {
					errs <- err.Error()
					return
				}
				// Entries append the message then the marker: an inbox
				// ending in a message would be half an entry.
				if n := len(res.Events); n > 0 && (n%2 != 0 || res.Events[n-1].Kind != kRead) {
					errs <- fmt.Sprintf("inbox of %d events ends in %v: half an entry", n, res.Events[n-1].Kind)
					return
				}
			}
		}()
	}
	for i, d := range data {
		br, ok := h.f.Apply(&raft.Log{Type: raft.LogCommand, Index: uint64(i + 1), Data: d}).(*BatchResult)
		if !ok || br.Err != nil || br.Results[0].Status != clusterv1.OpStatus_OP_STATUS_OK || br.Results[1].Status != clusterv1.OpStatus_OP_STATUS_OK {
			close(done)
			wg.Wait()
			t.Fatalf("entry %d: %+v", i+1, br)
		}
	}
	close(done)
	wg.Wait()
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
	evs := syncAllEvents(t, h.f, 2)
	if len(evs) != 2*entries {
		t.Fatalf("%d events, want %d", len(evs), 2*entries)
	}
}

// TestApplyAfterClose: Raft's shutdown stops waiting for a busy FSM
// goroutine, and the replica then closes its FSM. The apply that goes on
// afterwards writes nothing and does not panic on the closed database;
// the entry is applied at the next start.
func TestApplyAfterClose(t *testing.T) {
	h := newHarness(t)
	h.must(opSend(1, "a", "first", apps(1, 1, 2, 1)...))
	entered, held := make(chan struct{}), make(chan struct{})
	hook := func(g *FSM) {
		if g == h.f {
			close(entered)
			<-held
		}
	}
	beforeApply.Store(&hook)
	t.Cleanup(func() { beforeApply.Store(nil) })
	data := encodeOps(t, h.now, opSend(1, "b", "second", apps(1, 2, 2, 2)...))
	res := make(chan any, 1)
	go func() { res <- h.f.Apply(&raft.Log{Type: raft.LogCommand, Index: 2, Data: data}) }()
	<-entered
	if err := h.f.Close(); err != nil {
		t.Fatalf("Close with an apply waiting to start: %v", err)
	}
	close(held)
	br, ok := (<-res).(*BatchResult)
	if !ok || !errors.Is(br.Halted, errFSMClosed) || br.Results != nil {
		t.Fatalf("Apply after Close: %+v, want the closed result", br)
	}
	beforeApply.Store(nil)
	if err := h.f.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	if err := h.f.Restore(io.NopCloser(strings.NewReader(""))); !errors.Is(err, errFSMClosed) {
		t.Fatalf("Restore after Close: %v, want errFSMClosed", err)
	}
	// Reopened, the replica holds the first entry only and applies the
	// second.
	h.f = openTestFSM(t, h.dir)
	if got := h.f.AppliedIndex(); got != 1 {
		t.Fatalf("applied index after reopening: %d, want 1", got)
	}
	if br := h.f.Apply(&raft.Log{Type: raft.LogCommand, Index: 2, Data: data}).(*BatchResult); br.Err != nil || br.Halted != nil || len(br.Results) != 1 {
		t.Fatalf("the entry after reopening: %+v", br)
	}
	if evs := syncAllEvents(t, h.f, 2); len(evs) != 2 {
		t.Fatalf("user 2 holds %d events, want 2", len(evs))
	}
}

// TestCloseWaitsForARestore: Close waits for a snapshot restore in
// progress up to closeWait, then gives up with an error, and the database
// closes once the restore ends; nothing applies after.
func TestCloseWaitsForARestore(t *testing.T) {
	defer func(old time.Duration) { closeWait = old }(closeWait)
	closeWait = 100 * time.Millisecond
	h := newHarness(t)
	h.must(opSend(1, "a", "first", apps(1, 1, 2, 1)...))
	pr, pw := io.Pipe()
	restored := make(chan error, 1)
	go func() { restored <- h.f.Restore(pr) }() // waits on the snapshot's first bytes
	time.Sleep(50 * time.Millisecond)
	if err := h.f.Close(); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("Close during a restore: %v, want it to give up", err)
	}
	pw.Write([]byte("not a snapshot"))
	pw.Close()
	if err := <-restored; err == nil {
		t.Fatal("Restore of a bad snapshot succeeded")
	}
	testwait.For(t, 5*time.Second, "the database to close after the restore", func() bool {
		h.f.applyMu.Lock()
		defer h.f.applyMu.Unlock()
		return h.f.closed
	})
	br := h.f.Apply(&raft.Log{Type: raft.LogCommand, Index: 2, Data: encodeOps(t, h.now, opSend(1, "b", "x", apps(1, 2, 2, 2)...))}).(*BatchResult)
	if !errors.Is(br.Halted, errFSMClosed) {
		t.Fatalf("Apply after the late close: %+v", br)
	}
}

// TestApplyMonotonicMarkRead: a format-8 read marker (monotonic) at or
// below the user's marker writes nothing and answers seq 0: two devices
// marking at once cannot append a lower READ event after a higher one.
// Without the field (an entry of an older leader) it applies as before.
func TestApplyMonotonicMarkRead(t *testing.T) {
	h := newHarness(t)
	for i := uint64(1); i <= 3; i++ {
		h.must(opSend(7, fmt.Sprint("m", i), "body", apps(1, i, 2, i)...))
	}
	monotonic := func(upTo, seq uint64) *clusterv1.StoreOp {
		op := opMarkRead(2, dconv(7), upTo, seq)
		op.GetMarkRead().Monotonic = true
		return op
	}
	if r := h.must(monotonic(3, 4)); r.MarkRead.Seq != 4 || r.MarkRead.Unread != 0 {
		t.Fatalf("marker up to 3: %v", r.MarkRead)
	}
	before := len(syncAllEvents(t, h.f, 2))
	for _, upTo := range []uint64{3, 2} {
		if r := h.must(monotonic(upTo, 5)); r.MarkRead.Seq != 0 || r.MarkRead.Unread != 0 || r.MarkRead.TotalUnread != 0 {
			t.Fatalf("monotonic marker up to %d under one up to 3: %v, want seq 0", upTo, r.MarkRead)
		}
	}
	if n := len(syncAllEvents(t, h.f, 2)); n != before {
		t.Fatalf("covered markers appended %d events", n-before)
	}
	// The seq they were given is free for the next event.
	h.must(opSend(7, "m4", "body", apps(1, 4, 2, 5)...))
	// An older leader's marker (no monotonic) appends as it always did.
	if r := h.must(opMarkRead(2, dconv(7), 1, 6)); r.MarkRead.Seq != 6 || r.MarkRead.Unread != 1 {
		t.Fatalf("a format-7 marker below the marker: %v, want it appended with the counts unchanged", r.MarkRead)
	}
	// (A seqdnext build lists every mark-read at its own format.)
	kind := opFormats[kindMarkRead]
	if got := opFormat(monotonic(1, 7)); got != max(formatMonotonicMarks, kind) {
		t.Fatalf("a monotonic marker needs format %d, want %d", got, max(formatMonotonicMarks, kind))
	}
	if got := opFormat(opMarkRead(2, dconv(7), 1, 7)); got != kind {
		t.Fatalf("a marker without monotonic needs format %d, want %d", got, kind)
	}
}

// Store format 9: adds planned at once against the same members, which
// together would pass the group size limit, are checked again as they
// apply. The second is refused and writes nothing; an add without the
// limit (an older leader's) applies as it always did.
func TestApplyAddMembersSizeLimit(t *testing.T) {
	for _, readFanout := range []bool{false, true} {
		t.Run(fmt.Sprint("read_fanout=", readFanout), func(t *testing.T) {
			h := newHarness(t)
			h.must(opCreateGroup(9, 1, readFanout, 500, 2, 3))
			limited := func(members ...uint64) *clusterv1.StoreOp {
				op := opAddMembers(9, false, 500, members...)
				op.GetAddMembers().MaxGroupSize = 5
				return op
			}
			rs := h.apply(limited(4, 5), limited(6, 7))
			if rs[0].Status != clusterv1.OpStatus_OP_STATUS_OK || len(rs[0].Group.Members) != 5 {
				t.Fatalf("first add: %v", rs[0])
			}
			if rs[1].Status != clusterv1.OpStatus_OP_STATUS_REJECTED || rs[1].Code != codes.FailedPrecondition ||
				!strings.Contains(rs[1].Msg, "group 9 has 5 members and would have 7; a group holds at most 5") {
				t.Fatalf("second add, past the limit: %v", rs[1])
			}
			// The refused add wrote nothing: the state is that of a
			// replica that applied the first add alone.
			alone := newHarness(t)
			alone.must(opCreateGroup(9, 1, readFanout, 500, 2, 3))
			alone.apply(limited(4, 5))
			if got, want := dumpState(t, h.f), dumpState(t, alone.f); !maps.Equal(got, want) {
				t.Fatalf("the refused add wrote something: %d keys, want %d", len(got), len(want))
			}
			// Adding members the group has is fine at the limit.
			h.must(limited(2, 5))
			// An add from a leader of an older format has no limit.
			if r := h.must(opAddMembers(9, false, 500, 6, 7)); len(r.Group.Members) != 7 {
				t.Fatalf("add without a limit: %v", r.Group)
			}
			if got := opFormat(limited(8)); got != formatGroupSizeLimit {
				t.Fatalf("an add with a limit needs format %d, want %d", got, formatGroupSizeLimit)
			}
			if got := opFormat(opAddMembers(9, false, 500, 8)); got != 0 {
				t.Fatalf("an add without a limit needs format %d, want 0", got)
			}
		})
	}
}

// timelineCount is FSM.TimelineCount's count and newest gseq.
func timelineCount(f *FSM, g, upTo uint64) (count, last uint64, err error) {
	r, err := f.TimelineCount(g, upTo, 0)
	if err != nil {
		return 0, 0, err
	}
	return r.Count, r.LastGseq, nil
}
