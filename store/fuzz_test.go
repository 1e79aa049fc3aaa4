package store

import (
	"encoding/binary"
	"log/slog"
	"testing"
	"unicode/utf8"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// Fuzz tests of the decoders of untrusted bytes: Raft entries and Send
// requests. `go test` runs the seeds; fuzz with e.g.
//
//	go test ./store/ -run '^$' -fuzz FuzzFSMApply -fuzztime 30s

// seedOps is one op of every kind, valid against a fresh FSM when applied
// in order.
func seedOps() []*clusterv1.StoreOp {
	send := remoteTo(opSend(7, "c1", "hello", apps(1, 1, 2, 1, 3, 1)...), 200)
	return []*clusterv1.StoreOp{
		opCreateGroup(50, 1, true, 10, 2, 3),
		opCreateGroup(60, 1, false, 10, 2),
		send,
		opSend(7, "c1", "retry", apps(1, 2, 2, 2)...),
		opGroupSend(50, 1, true, 1, "g1", "to all", apps(1, 2)...),
		opGroupSend(60, 1, false, 2, "w1", "wf", apps(1, 3, 2, 2)...),
		opDeliver([]*clusterv1.FanoutItem{fanItem(clusterv1.FanoutItem_KIND_MESSAGE, 2, "9.1", 9)}, 3),
		opMarkRead(2, dconv(7), 3, 4),
		opMarkReadFanout(3, 50, 1, 1, 2),
		opHint(50, 1, 1, true, []uint64{201}, apps(2, 5, 3, 3)...),
		opRecall(1, "1.1", 120_000, 0, apps(1, 4, 2, 6, 3, 4)...),
		opDelete(2, "9.1", 7),
		opAddMembers(50, false, 10, 4),
		opRemoveMembers(50, 4),
		opOutboxAck(outboxKey(3, 0)),
		opExpire(500_000, 10),
		opExpireScan(500_000, 1, 2, 10),
		opSweep(10, 0),
		opTrimLog(500_000, 10),
		opExpireTimelines(500_000, 1, 2, 10),
		{},
	}
}

func FuzzDecodeBatch(f *testing.F) {
	for _, op := range seedOps() {
		f.Add(encodeOps(f, 1_000_000, op))
	}
	f.Add(encodeOps(f, 1_000_000, seedOps()...))
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x01})
	f.Add([]byte("\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := decodeBatch(data)
		if err != nil {
			if b != nil {
				t.Fatalf("decodeBatch returned a batch and an error")
			}
			return
		}
		again, err := EncodeBatch(b)
		if err != nil {
			t.Fatalf("re-encoding a decoded batch: %v", err)
		}
		b2, err := decodeBatch(again)
		if err != nil || !proto.Equal(b, b2) {
			t.Fatalf("batch does not survive a round trip: %v", err)
		}
	})
}

// FuzzFSMApply applies arbitrary entries to one FSM: none may panic, each
// advances the applied index, and the unread and inbox invariants hold for
// every user an entry touched.
func FuzzFSMApply(f *testing.F) {
	for _, op := range seedOps() {
		f.Add(encodeOps(f, 1_000_000, op))
	}
	f.Add(encodeOps(f, 1_000_000, seedOps()...))
	f.Add([]byte("not an entry"))
	f.Add(mustMarshal(f, &clusterv1.StoreCommand{Type: 7}))

	fsm, err := OpenFSM(f.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { fsm.Close() })
	var touched []uint64
	fsm.notify = func(users, _ []uint64) { touched = users }
	idx := uint64(0)

	f.Fuzz(func(t *testing.T, data []byte) {
		idx++
		touched = nil
		r := fsm.Apply(&raft.Log{Type: raft.LogCommand, Index: idx, Data: data})
		if _, ok := r.(*BatchResult); !ok {
			t.Fatalf("Apply returned %T", r)
		}
		if fsm.AppliedIndex() != idx {
			t.Fatalf("applied index %d after entry %d", fsm.AppliedIndex(), idx)
		}
		for _, u := range touched {
			checkUserInvariants(t, fsm, u)
		}
	})
}

// checkUserInvariants: the inbox ascends and ends at or below the user's
// newest seq, and the total unread is the sum of the conversations'.
func checkUserInvariants(t testTB, f *FSM, user uint64) {
	t.Helper()
	evs := syncAllEvents(t, f, user)
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq <= evs[i-1].Seq {
			t.Fatalf("user %d inbox not ascending: %v", user, seqsOf(evs))
		}
	}
	last, err := f.LastSeq(user)
	if err != nil {
		t.Fatalf("LastSeq: %v", err)
	}
	if len(evs) > 0 && evs[len(evs)-1].Seq > last {
		t.Fatalf("user %d: inbox ends at %d above last seq %d", user, evs[len(evs)-1].Seq, last)
	}
	u, err := f.Unread(user, nil, 0)
	if err != nil {
		t.Fatalf("Unread: %v", err)
	}
	var sum uint64
	for _, c := range u.Conversations {
		if c.Count > 1<<40 {
			t.Fatalf("user %d: unread of %v wrapped around: %d", user, c.Conversation, c.Count)
		}
		sum += c.Count
	}
	if sum != u.Total {
		t.Fatalf("user %d: total unread %d, conversations sum to %d", user, u.Total, sum)
	}
}

// sendValid restates the documented limits independently of ValidateSend.
func sendValid(r *seqdv1.SendRequest) bool {
	userOK := func(u uint64) bool { return u >= 1 && u < 1<<63 }
	if !userOK(r.Sender) || r.Conversation == nil {
		return false
	}
	switch r.Conversation.Type {
	case seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT:
		if r.Conversation.Id == 0 || len(r.Recipients) == 0 || len(r.Recipients) > 100 {
			return false
		}
		seen := map[uint64]bool{r.Sender: true}
		for _, u := range r.Recipients {
			if !userOK(u) || seen[u] {
				return false
			}
			seen[u] = true
		}
	case seqdv1.ConversationType_CONVERSATION_TYPE_GROUP:
		if !userOK(r.Conversation.Id) || len(r.Recipients) != 0 {
			return false
		}
	default:
		return false
	}
	if len(r.ClientMsgId) < 1 || len(r.ClientMsgId) > 128 || !utf8.ValidString(r.ClientMsgId) {
		return false
	}
	if len(r.Body) < 1 || len(r.Body) > 64<<10 {
		return false
	}
	md := 0
	for k, v := range r.Metadata {
		if k == "" {
			return false
		}
		md += len(k) + len(v)
	}
	return md <= 4<<10
}

// FuzzValidateSend: ValidateSend never panics, accepts exactly the
// requests within the limits, and refuses the rest with InvalidArgument.
func FuzzValidateSend(f *testing.F) {
	uv := func(us ...uint64) []byte {
		var b []byte
		for _, u := range us {
			b = binary.AppendUvarint(b, u)
		}
		return b
	}
	f.Add(uint64(1), int32(1), uint64(7), uv(2, 3), "c1", []byte("hello"), uint32(0), "k", "v", uint32(0))
	f.Add(uint64(1), int32(2), uint64(7), uv(), "c1", []byte("hello"), uint32(0), "", "", uint32(0))
	f.Add(uint64(1<<63-1), int32(1), uint64(1<<63), uv(1<<63-2), "é", []byte("x"), uint32(64<<10-1), "k", "v", uint32(4094))
	f.Add(uint64(1), int32(1), uint64(7), uv(2, 2), "c1", []byte("x"), uint32(0), "k", "v", uint32(0))
	f.Add(uint64(1), int32(1), uint64(7), uv(1), "c1", []byte("x"), uint32(0), "k", "v", uint32(0))
	f.Add(uint64(0), int32(-1), uint64(0), uv(0, 1<<63), "\xff", []byte{}, uint32(64<<10+1), "", "v", uint32(5000))
	f.Add(uint64(1), int32(9), uint64(7), uv(2), "c1", []byte("x"), uint32(0), "k", "v", uint32(0))
	f.Fuzz(func(t *testing.T, sender uint64, convType int32, convID uint64, recips []byte, cmid string, body []byte, pad uint32,
		mdKey, mdVal string, mdPad uint32) {
		r := &seqdv1.SendRequest{Sender: sender, ClientMsgId: cmid, Body: body}
		if convType != -1 {
			r.Conversation = &seqdv1.Conversation{Type: seqdv1.ConversationType(convType), Id: convID}
		}
		for len(recips) > 0 {
			u, n := binary.Uvarint(recips)
			if n <= 0 {
				break
			}
			r.Recipients = append(r.Recipients, u)
			recips = recips[n:]
		}
		// Reach the size limits without huge inputs.
		r.Body = append(r.Body, make([]byte, pad%(70<<10))...)
		if mdKey != "" || mdVal != "" || mdPad > 0 {
			r.Metadata = map[string]string{mdKey: mdVal + string(make([]byte, mdPad%(5<<10)))}
		}
		err := DefaultLimits.ValidateSend(r)
		if valid := sendValid(r); valid != (err == nil) {
			t.Fatalf("ValidateSend = %v, but the request is valid=%v: sender %d conv %v recipients %v cmid %q body %d bytes metadata %d keys",
				err, valid, r.Sender, r.Conversation, r.Recipients, r.ClientMsgId, len(r.Body), len(r.Metadata))
		}
		if err != nil && (status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() == "") {
			t.Fatalf("refusal %v is not InvalidArgument with a message", err)
		}
	})
}
