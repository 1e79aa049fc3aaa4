package store_test

import (
	"context"
	"fmt"
	"github.com/seqd/seqd/router"
	"github.com/seqd/seqd/store"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/internal/localcluster"
	"github.com/seqd/seqd/internal/node"
	"github.com/seqd/seqd/internal/testwait"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

func group(g uint64) *seqdv1.Conversation {
	return &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_GROUP, Id: g}
}

func TestReadFanoutGroup(t *testing.T) {
	_, m := startCluster(t, localcluster.Options{HintWindow: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	members := []uint64{2, 3, 4, 5}
	if _, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 50, Owner: 1, Members: members, ReadFanout: true}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 0; i < 3; i++ {
		r, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 1, Conversation: group(50), ClientMsgId: "g" + string(rune('a'+i)), Body: []byte("to all")})
		if err != nil {
			t.Fatal(err)
		}
		if r.GroupSeq == 0 || len(r.Deliveries) != 0 {
			t.Fatalf("read-fanout send %v: want a group seq and no per-member deliveries", r)
		}
		ids = append(ids, r.MessageId)
	}
	// Members get a hint (not the messages) in their inbox, then pull.
	testwait.For(t, 5*time.Second, "hints", func() bool {
		for _, u := range members {
			evs := syncAll(t, m, u)
			if len(evs) == 0 || evs[len(evs)-1].Kind != seqdv1.EventKind_EVENT_KIND_GROUP_HINT || evs[len(evs)-1].GroupCount != 3 {
				return false
			}
		}
		return true
	})
	for _, u := range members {
		for _, e := range syncAll(t, m, u) {
			if e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE {
				t.Errorf("member %d got a message copy in its inbox under read fanout", u)
			}
		}
		un, err := m.Unread(ctx, &seqdv1.UnreadRequest{User: u})
		if err != nil || un.Total != 3 {
			t.Errorf("member %d unread %v (%v), want 3", u, un, err)
		}
	}
	sg, err := m.SyncGroup(ctx, &seqdv1.SyncGroupRequest{User: 3, GroupId: 50})
	if err != nil || len(sg.Events) != 3 || sg.Events[0].MessageId != ids[0] {
		t.Fatalf("SyncGroup: %v %v", sg, err)
	}
	// GroupHistory pages the other way, newest first.
	gh, err := m.GroupHistory(ctx, &seqdv1.GroupHistoryRequest{User: 3, GroupId: 50, Limit: 2})
	if err != nil || len(gh.Events) != 2 || gh.Events[0].MessageId != ids[2] || gh.Events[1].MessageId != ids[1] || gh.NextBeforeGseq != gh.Events[1].Seq {
		t.Fatalf("GroupHistory: %v %v", gh, err)
	}
	if gh, err := m.GroupHistory(ctx, &seqdv1.GroupHistoryRequest{User: 3, GroupId: 50, BeforeGseq: gh.NextBeforeGseq}); err != nil ||
		len(gh.Events) != 1 || gh.Events[0].MessageId != ids[0] || gh.NextBeforeGseq != 0 {
		t.Fatalf("GroupHistory's last page: %v %v", gh, err)
	}
	// The newest checkpoint is fine and holds nothing; one beyond it comes
	// from no entry a device received.
	last := sg.Events[2].Seq
	if sg, err := m.SyncGroup(ctx, &seqdv1.SyncGroupRequest{User: 3, GroupId: 50, AfterGseq: last}); err != nil || len(sg.Events) != 0 || sg.NextCheckpoint != last {
		t.Fatalf("SyncGroup from the newest checkpoint: %v %v", sg, err)
	}
	for _, after := range []uint64{last + 1, ^uint64(0)} {
		_, err := m.SyncGroup(ctx, &seqdv1.SyncGroupRequest{User: 3, GroupId: 50, AfterGseq: after})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "after_gseq") {
			t.Fatalf("SyncGroup from the future (%d, newest %d): %v, want INVALID_ARGUMENT naming after_gseq", after, last, err)
		}
	}
	// Reading up to the second message leaves one unread.
	mr, err := m.MarkRead(ctx, &seqdv1.MarkReadRequest{User: 3, Conversation: group(50), UpToSeq: sg.Events[1].Seq})
	if err != nil || mr.Unread != 1 || mr.TotalUnread != 1 {
		t.Fatalf("MarkRead: %v %v", mr, err)
	}
	// A lower one changes nothing and appends nothing.
	if mr, err := m.MarkRead(ctx, &seqdv1.MarkReadRequest{User: 3, Conversation: group(50), UpToSeq: sg.Events[0].Seq}); err != nil || mr.Seq != 0 || mr.Unread != 1 || mr.TotalUnread != 1 {
		t.Fatalf("a lower MarkRead: %v %v, want seq 0 and the same counts", mr, err)
	}
	// The sender's own send reads the group for it.
	if un, _ := m.Unread(ctx, &seqdv1.UnreadRequest{User: 1}); un.GetTotal() != 0 {
		t.Errorf("sender unread %v, want 0", un)
	}
	// A newcomer sees nothing from before it joined; a removed member
	// reads nothing at all.
	if _, err := m.AddMembers(ctx, &seqdv1.AddMembersRequest{GroupId: 50, Members: []uint64{9}}); err != nil {
		t.Fatal(err)
	}
	if sg, err := m.SyncGroup(ctx, &seqdv1.SyncGroupRequest{User: 9, GroupId: 50}); err != nil || len(sg.Events) != 0 {
		t.Fatalf("newcomer SyncGroup: %v %v", sg, err)
	}
	if _, err := m.AddMembers(ctx, &seqdv1.AddMembersRequest{GroupId: 50, Members: []uint64{10}, WithHistory: true}); err != nil {
		t.Fatal(err)
	}
	if sg, err := m.SyncGroup(ctx, &seqdv1.SyncGroupRequest{User: 10, GroupId: 50}); err != nil || len(sg.Events) != 3 {
		t.Fatalf("newcomer with history SyncGroup: %v %v", sg, err)
	}
	// It may read the history, but none of it is unread.
	if un, err := m.Unread(ctx, &seqdv1.UnreadRequest{User: 10}); err != nil || un.GetTotal() != 0 {
		t.Fatalf("newcomer with history unread: %v %v, want 0", un, err)
	}
	// A read marker needs the conversation: a user that never was a member
	// is refused and nothing is appended to its inbox.
	if _, err := m.MarkRead(ctx, &seqdv1.MarkReadRequest{User: 77, Conversation: group(50), UpToSeq: 1}); status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), "user 77 is not a member of group 50") {
		t.Fatalf("non-member MarkRead: %v, want PERMISSION_DENIED", err)
	}
	if evs := syncAll(t, m, 77); len(evs) != 0 {
		t.Fatalf("refused MarkRead wrote %v", evs)
	}
	if _, err := m.RemoveMembers(ctx, &seqdv1.RemoveMembersRequest{GroupId: 50, Members: []uint64{4}}); err != nil {
		t.Fatal(err)
	}
	// A removed member may still clear what it had unread.
	if mr, err := m.MarkRead(ctx, &seqdv1.MarkReadRequest{User: 4, Conversation: group(50), UpToSeq: sg.Events[2].Seq}); err != nil || mr.TotalUnread != 0 {
		t.Fatalf("removed member MarkRead: %v %v, want its unread cleared", mr, err)
	}
	if _, err := m.SyncGroup(ctx, &seqdv1.SyncGroupRequest{User: 4, GroupId: 50}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("removed member SyncGroup: %v, want PERMISSION_DENIED", err)
	}
	if _, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 4, Conversation: group(50), ClientMsgId: "x", Body: []byte("no")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("removed member Send: %v, want PERMISSION_DENIED", err)
	}
}

func TestWriteFanoutGroup(t *testing.T) {
	_, m := startCluster(t, localcluster.Options{WriteFanoutThreshold: 5})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 60, Owner: 1, Members: []uint64{2, 3}})
	if err != nil || info.Group.ReadFanout {
		t.Fatalf("create: %v %v", info, err)
	}
	r, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 2, Conversation: group(60), ClientMsgId: "w1", Body: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []uint64{1, 2, 3} {
		evs := syncAll(t, m, u)
		if n := checkInbox(t, u, evs)[r.MessageId]; n != 1 {
			t.Errorf("member %d holds %d copies", u, n)
		}
	}
	// It has no timeline to show a newcomer its history from: asking for
	// it is refused, and adds no one.
	_, err = m.AddMembers(ctx, &seqdv1.AddMembersRequest{GroupId: 60, Members: []uint64{4}, WithHistory: true})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "group 60 uses write fanout") || !strings.Contains(err.Error(), "with_history") {
		t.Fatalf("with_history on a write-fanout group: %v, want FAILED_PRECONDITION", err)
	}
	if g, err := m.GetGroup(ctx, &seqdv1.GetGroupRequest{GroupId: 60}); err != nil || len(g.Group.Members) != 3 {
		t.Fatalf("group after the refused add: %v %v", g, err)
	}
	// A member added later does not get the earlier message.
	if _, err := m.AddMembers(ctx, &seqdv1.AddMembersRequest{GroupId: 60, Members: []uint64{4}}); err != nil {
		t.Fatal(err)
	}
	if evs := syncAll(t, m, 4); len(evs) != 0 {
		t.Fatalf("newcomer inbox %v", evs)
	}
	// It has nothing to mark read yet; a member with a copy has.
	if _, err := m.MarkRead(ctx, &seqdv1.MarkReadRequest{User: 4, Conversation: group(60), UpToSeq: 1}); status.Code(err) != codes.NotFound ||
		!strings.Contains(err.Error(), "user 4 has no messages in group 60") {
		t.Fatalf("MarkRead with no copy: %v, want NOT_FOUND", err)
	}
	if _, err := m.MarkRead(ctx, &seqdv1.MarkReadRequest{User: 3, Conversation: group(60), UpToSeq: r.Deliveries[0].Seq}); err != nil {
		t.Fatalf("member MarkRead: %v", err)
	}
	// Write fanout stops at the threshold: the group cannot grow past it.
	_, err = m.AddMembers(ctx, &seqdv1.AddMembersRequest{GroupId: 60, Members: []uint64{5, 6, 7}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "read_fanout") {
		t.Fatalf("growing past the threshold: %v", err)
	}
}

func TestBadInputThroughGateway(t *testing.T) {
	c, _ := startCluster(t, localcluster.Options{})
	cc, err := grpc.NewClient(c.GatewayAddr(), grpcconn.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	m := seqdv1.NewMessagesClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ok := &seqdv1.SendRequest{Sender: 1, Recipients: []uint64{2}, Conversation: direct(12), ClientMsgId: "ok", Body: []byte("fine")}
	mod := func(f func(r *seqdv1.SendRequest)) *seqdv1.SendRequest {
		r := &seqdv1.SendRequest{Sender: ok.Sender, Recipients: append([]uint64(nil), ok.Recipients...), Conversation: direct(12), ClientMsgId: ok.ClientMsgId, Body: ok.Body}
		f(r)
		return r
	}
	many := make([]uint64, 101)
	for i := range many {
		many[i] = uint64(i + 10)
	}
	tests := []struct {
		name  string
		req   *seqdv1.SendRequest
		field string
	}{
		{"sender 0", mod(func(r *seqdv1.SendRequest) { r.Sender = 0 }), "sender is 0"},
		{"empty body", mod(func(r *seqdv1.SendRequest) { r.Body = nil }), "body is empty"},
		{"huge body", mod(func(r *seqdv1.SendRequest) { r.Body = make([]byte, 64<<10+1) }), "body is 65537 bytes"},
		{"too many recipients", mod(func(r *seqdv1.SendRequest) { r.Recipients = many }), "recipients has 101 users"},
		{"recipient 0", mod(func(r *seqdv1.SendRequest) { r.Recipients = []uint64{0} }), "recipients[0] is 0"},
		{"recipient twice", mod(func(r *seqdv1.SendRequest) { r.Recipients = []uint64{2, 2} }), "lists user 2 twice"},
		{"no conversation type", mod(func(r *seqdv1.SendRequest) { r.Conversation = &seqdv1.Conversation{Id: 5} }), "conversation.type"},
		{"no client_msg_id", mod(func(r *seqdv1.SendRequest) { r.ClientMsgId = "" }), "client_msg_id is empty"},
		{"group with recipients", mod(func(r *seqdv1.SendRequest) { r.Conversation = group(5) }), "recipients must be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Send(ctx, tt.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("got %v, want INVALID_ARGUMENT mentioning %q", err, tt.field)
			}
		})
	}
	// Nothing was written by any of them.
	for _, u := range []uint64{1, 2} {
		if r, err := m.Sync(ctx, &seqdv1.SyncRequest{User: u}); err != nil || len(r.Events) != 0 {
			t.Fatalf("user %d inbox after refused sends: %v %v", u, r, err)
		}
	}
	if _, err := m.Send(ctx, ok); err != nil {
		t.Fatal(err)
	}
	// The same client_msg_id again: a retry is answered with the first
	// result; another message under it is refused. Neither writes.
	if r, err := m.Send(ctx, ok); err != nil || !r.Duplicate {
		t.Fatalf("retry: %v %v, want the first result", r, err)
	}
	_, err = m.Send(ctx, mod(func(r *seqdv1.SendRequest) { r.Body = []byte("another") }))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `client_msg_id "ok" was already used`) {
		t.Fatalf("another message under a used client_msg_id: %v, want INVALID_ARGUMENT naming client_msg_id", err)
	}
	_, err = m.MarkRead(ctx, &seqdv1.MarkReadRequest{User: 2, Conversation: direct(12), UpToSeq: 999})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "beyond the newest event") {
		t.Fatalf("mark read from the future: %v", err)
	}
	// A conversation the user never had: refused, and its inbox unchanged.
	for _, u := range []uint64{2, 3} {
		_, err = m.MarkRead(ctx, &seqdv1.MarkReadRequest{User: u, Conversation: direct(13), UpToSeq: 1})
		if want := "user " + strconv.FormatUint(u, 10) + " has no messages in direct conversation 13"; status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), want) {
			t.Fatalf("mark read of a conversation user %d never had: %v, want NOT_FOUND %q", u, err, want)
		}
	}
	for u, want := range map[uint64]int{2: 1, 3: 0} { // user 2 got the one send
		if r, err := m.Sync(ctx, &seqdv1.SyncRequest{User: u}); err != nil || len(r.Events) != want {
			t.Fatalf("user %d inbox after refused mark reads: %v %v, want %d events", u, r, err, want)
		}
	}
	// A leader that has not applied everything before its term does not
	// refuse for good: the answer is "retry".
	// (Should leadership move during the call, the answer came from
	// elsewhere: ask again.)
	for attempt := 1; ; attempt++ {
		i := c.StoreLeader(0)
		leader := c.Store(0, i)
		lc, err2 := grpc.NewClient(leader.GRPCAddr(), grpcconn.DialOptions()...)
		if err2 != nil {
			t.Fatal(err2)
		}
		leader.Store().SetCaughtUp(false)
		_, err = seqdv1.NewMessagesClient(lc).MarkRead(ctx, &seqdv1.MarkReadRequest{User: 2, Conversation: direct(13), UpToSeq: 1})
		lc.Close()
		if c.StoreLeader(0) == i {
			leader.Store().SetCaughtUp(true)
			break
		}
		if attempt == 3 {
			t.Fatal("leadership moved during each of 3 mark reads")
		}
	}
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "just elected") {
		t.Fatalf("mark read at a leader still catching up: %v, want UNAVAILABLE (retry)", err)
	}
	// The sender has the conversation through its own copy.
	if _, err := m.MarkRead(ctx, &seqdv1.MarkReadRequest{User: 1, Conversation: direct(12), UpToSeq: 1}); err != nil {
		t.Fatalf("sender MarkRead: %v", err)
	}
	// A checkpoint from the future, at every replica: followers ask the
	// leader rather than wait for an event that will never come.
	for i := 0; i < 3; i++ {
		rc, err := grpc.NewClient(c.Store(0, i).GRPCAddr(), grpcconn.DialOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		st, err := seqdv1.NewMessagesClient(rc).Subscribe(ctx, &seqdv1.SubscribeRequest{User: 2, AfterSeq: 999})
		if err == nil {
			_, err = st.Recv()
		}
		rc.Close()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "beyond the newest event") {
			t.Fatalf("subscribe from the future at replica %d (leader %d): %v", i, c.StoreLeader(0), err)
		}
	}
	// Heartbeat bounds, checked before the checkpoint (a follower asks the
	// leader about that, so a plain input error should not wait for it).
	for _, tc := range []struct {
		req  *seqdv1.SubscribeRequest
		want string
	}{
		{&seqdv1.SubscribeRequest{User: 2, HeartbeatMs: 99}, "heartbeat_ms 99 is below the minimum 100"},
		{&seqdv1.SubscribeRequest{User: 2, HeartbeatMs: 300_001, AfterSeq: 999}, "heartbeat_ms 300001 is above the maximum 300000"},
		{&seqdv1.SubscribeRequest{User: 2, HeartbeatMs: math.MaxUint32}, "heartbeat_ms 4294967295 is above the maximum"},
	} {
		st, err := m.Subscribe(ctx, tc.req)
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("subscribe %v: %v, want INVALID_ARGUMENT %q", tc.req, err, tc.want)
		}
	}
	// Reads and group calls: ids, limits and checkpoints, each refused
	// with the code that says why and the field named.
	if _, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 70, Owner: 1, Members: []uint64{2}}); err != nil {
		t.Fatal(err)
	}
	const bigGroup = 1<<63 | 70
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		want string
	}{
		{"Sync user 0", func() error { return errOf(m.Sync(ctx, &seqdv1.SyncRequest{})) }, codes.InvalidArgument, "user is 0"},
		{"Sync from the future", func() error { return errOf(m.Sync(ctx, &seqdv1.SyncRequest{User: 2, AfterSeq: 999})) }, codes.InvalidArgument, "beyond the newest event"},
		{"Unread user 0", func() error { return errOf(m.Unread(ctx, &seqdv1.UnreadRequest{})) }, codes.InvalidArgument, "user is 0"},
		{"Unread after a conversation of no type", func() error {
			return errOf(m.Unread(ctx, &seqdv1.UnreadRequest{User: 2, After: &seqdv1.Conversation{Id: 12}}))
		}, codes.InvalidArgument, "after.type"},
		{"Unread over the limit", func() error { return errOf(m.Unread(ctx, &seqdv1.UnreadRequest{User: 2, Limit: 1001})) }, codes.InvalidArgument, "limit 1001"},
		{"History user 0", func() error { return errOf(m.History(ctx, &seqdv1.HistoryRequest{Conversation: direct(12)})) }, codes.InvalidArgument, "user is 0"},
		{"History without a conversation", func() error { return errOf(m.History(ctx, &seqdv1.HistoryRequest{User: 2})) }, codes.InvalidArgument, "conversation"},
		{"History of an unknown conversation type", func() error {
			return errOf(m.History(ctx, &seqdv1.HistoryRequest{User: 2, Conversation: &seqdv1.Conversation{Type: 99, Id: 12}}))
		}, codes.InvalidArgument, "conversation.type"},
		{"History limit 1001", func() error {
			return errOf(m.History(ctx, &seqdv1.HistoryRequest{User: 2, Conversation: direct(12), Limit: 1001}))
		}, codes.InvalidArgument, "limit 1001"},
		{"Subscribe user 0", func() error {
			st, err := m.Subscribe(ctx, &seqdv1.SubscribeRequest{})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		}, codes.InvalidArgument, "user is 0"},
		{"GetGroup 0", func() error { return errOf(m.GetGroup(ctx, &seqdv1.GetGroupRequest{})) }, codes.InvalidArgument, "group_id"},
		{"GetGroup with the group bit", func() error { return errOf(m.GetGroup(ctx, &seqdv1.GetGroupRequest{GroupId: bigGroup})) }, codes.InvalidArgument, "group_id"},
		{"GetGroup unknown", func() error { return errOf(m.GetGroup(ctx, &seqdv1.GetGroupRequest{GroupId: 71})) }, codes.NotFound, "group 71 does not exist"},
		{"SyncGroup user 0", func() error { return errOf(m.SyncGroup(ctx, &seqdv1.SyncGroupRequest{GroupId: 70})) }, codes.InvalidArgument, "user is 0"},
		{"SyncGroup with the group bit", func() error { return errOf(m.SyncGroup(ctx, &seqdv1.SyncGroupRequest{User: 2, GroupId: bigGroup})) }, codes.InvalidArgument, "group_id"},
		{"SyncGroup of a write-fanout group", func() error { return errOf(m.SyncGroup(ctx, &seqdv1.SyncGroupRequest{User: 2, GroupId: 70})) }, codes.FailedPrecondition, "uses write fanout"},
		{"SyncGroup by a non-member", func() error { return errOf(m.SyncGroup(ctx, &seqdv1.SyncGroupRequest{User: 3, GroupId: 70})) }, codes.PermissionDenied, "not a member"},
		{"GroupHistory user 0", func() error { return errOf(m.GroupHistory(ctx, &seqdv1.GroupHistoryRequest{GroupId: 70})) }, codes.InvalidArgument, "user is 0"},
		{"GroupHistory group 0", func() error { return errOf(m.GroupHistory(ctx, &seqdv1.GroupHistoryRequest{User: 2})) }, codes.InvalidArgument, "group_id"},
		{"GroupHistory with the group bit", func() error {
			return errOf(m.GroupHistory(ctx, &seqdv1.GroupHistoryRequest{User: 2, GroupId: bigGroup}))
		}, codes.InvalidArgument, "group_id"},
		{"GroupHistory over the limit", func() error {
			return errOf(m.GroupHistory(ctx, &seqdv1.GroupHistoryRequest{User: 2, GroupId: 70, Limit: 1001}))
		}, codes.InvalidArgument, "limit 1001"},
		{"GroupHistory unknown", func() error { return errOf(m.GroupHistory(ctx, &seqdv1.GroupHistoryRequest{User: 2, GroupId: 71})) }, codes.NotFound, "group 71 does not exist"},
		{"GroupHistory of a write-fanout group", func() error {
			return errOf(m.GroupHistory(ctx, &seqdv1.GroupHistoryRequest{User: 2, GroupId: 70}))
		}, codes.FailedPrecondition, "uses write fanout"},
		{"GroupHistory by a non-member", func() error {
			return errOf(m.GroupHistory(ctx, &seqdv1.GroupHistoryRequest{User: 3, GroupId: 70}))
		}, codes.PermissionDenied, "not a member"},
		{"CreateGroup owner 0", func() error {
			return errOf(m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 72, Members: []uint64{2}}))
		}, codes.InvalidArgument, "owner is 0"},
		{"CreateGroup again", func() error {
			return errOf(m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 70, Owner: 1, Members: []uint64{3}}))
		}, codes.AlreadyExists, "group 70"},
		{"RemoveMembers of the owner", func() error {
			return errOf(m.RemoveMembers(ctx, &seqdv1.RemoveMembersRequest{GroupId: 70, Members: []uint64{1}}))
		}, codes.FailedPrecondition, "owns group"},
		{"AddMembers none", func() error { return errOf(m.AddMembers(ctx, &seqdv1.AddMembersRequest{GroupId: 70})) }, codes.InvalidArgument, "members"},
		{"Recall of an unknown message", func() error { return errOf(m.Recall(ctx, &seqdv1.RecallRequest{Sender: 1, MessageId: "1.999"})) }, codes.NotFound, "1.999"},
	} {
		if err := tc.call(); status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %v naming %q", tc.name, err, tc.code, tc.want)
		}
	}
	if g, err := m.GetGroup(ctx, &seqdv1.GetGroupRequest{GroupId: 70}); err != nil || len(g.Group.Members) != 2 {
		t.Fatalf("group 70 after the refused calls: %v %v, want its 2 members", g, err)
	}

	// The shards' own RPCs, on the replicas' Messages port, check their
	// ids too.
	rc, err := grpc.NewClient(c.Store(0, 0).GRPCAddr(), grpcconn.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	node := clusterv1.NewStoreNodeClient(rc)
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"TimelineCount group 0", func() error {
			return errOf(node.TimelineCount(ctx, &clusterv1.TimelineCountRequest{GroupId: 0, User: 2}))
		}, "group_id"},
		{"TimelineCount group with the group bit", func() error {
			return errOf(node.TimelineCount(ctx, &clusterv1.TimelineCountRequest{GroupId: 1<<63 | 5, User: 2}))
		}, "group_id"},
		{"TimelineCount user 0", func() error {
			return errOf(node.TimelineCount(ctx, &clusterv1.TimelineCountRequest{GroupId: 5, User: 0}))
		}, "user is 0"},
		{"Deliver user 0", func() error {
			_, err := node.Deliver(ctx, &clusterv1.DeliverRequest{Items: []*clusterv1.FanoutItem{{User: 0, Kind: clusterv1.FanoutItem_KIND_MESSAGE,
				Event: &seqdv1.Event{MessageId: "1.1"}}}})
			return err
		}, "items[0].user is 0"},
	} {
		if err := tc.call(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want INVALID_ARGUMENT naming %q", tc.name, err, tc.want)
		}
	}
	_, err = m.Sync(ctx, &seqdv1.SyncRequest{User: 2, Limit: 5000})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "limit 5000") {
		t.Fatalf("huge page: %v", err)
	}
	_, err = m.Recall(ctx, &seqdv1.RecallRequest{Sender: 1, MessageId: "nonsense"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "message_id") {
		t.Fatalf("bad message id: %v", err)
	}
}

// Recalls, deletes and group changes the leader can tell are refused get
// the status code that says why, and a refused or repeated recall or
// delete allocates no seqs: the inboxes stay gap-free.
func TestRefusedRecallAndDeleteUseNoSeqs(t *testing.T) {
	_, m := startCluster(t, localcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	send := func(cmid string) *seqdv1.SendResponse {
		t.Helper()
		r, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 1, Recipients: []uint64{2}, Conversation: direct(12), ClientMsgId: cmid, Body: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	id := send("a").MessageId
	refusals := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"delete without a copy", func() error { return errOf(m.Delete(ctx, &seqdv1.DeleteRequest{User: 3, MessageId: id})) }, codes.NotFound},
		{"delete of an unknown message", func() error { return errOf(m.Delete(ctx, &seqdv1.DeleteRequest{User: 2, MessageId: "1.999"})) }, codes.NotFound},
		{"recall by a recipient", func() error { return errOf(m.Recall(ctx, &seqdv1.RecallRequest{Sender: 2, MessageId: id})) }, codes.PermissionDenied},
		{"add to an unknown group", func() error {
			return errOf(m.AddMembers(ctx, &seqdv1.AddMembersRequest{GroupId: 99, Members: []uint64{3}}))
		}, codes.NotFound},
		{"remove from an unknown group", func() error {
			return errOf(m.RemoveMembers(ctx, &seqdv1.RemoveMembersRequest{GroupId: 99, Members: []uint64{3}}))
		}, codes.NotFound},
	}
	for _, r := range refusals {
		if err := r.call(); status.Code(err) != r.want {
			t.Errorf("%s: %v, want %v", r.name, err, r.want)
		}
	}
	if _, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 50, Owner: 1, Members: []uint64{2}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 50, Owner: 1, Members: []uint64{3}}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("create over another group: %v, want AlreadyExists", err)
	}
	for i := 0; i < 2; i++ {
		if _, err := m.Delete(ctx, &seqdv1.DeleteRequest{User: 2, MessageId: id}); err != nil {
			t.Fatalf("delete %d: %v", i+1, err)
		}
		if _, err := m.Recall(ctx, &seqdv1.RecallRequest{Sender: 1, MessageId: id}); err != nil {
			t.Fatalf("recall %d: %v", i+1, err)
		}
	}
	send("b")
	// User 2: the message, its delete, the recall, the next message; user
	// 1: the message, the recall, the next message. One seq each.
	for u, want := range map[uint64]int{1: 3, 2: 4} {
		evs := syncAll(t, m, u)
		if len(evs) != want {
			t.Fatalf("user %d has %d events, want %d: %v", u, len(evs), want, evs)
		}
		for i := 1; i < len(evs); i++ {
			if evs[i].Seq != evs[i-1].Seq+1 {
				t.Fatalf("user %d's inbox has a gap after seq %d (next %d): a refused or repeated op allocated seqs", u, evs[i-1].Seq, evs[i].Seq)
			}
		}
	}
}

// A group holds at most --max-group-size members: a create or an add that
// would make it bigger is refused and changes nothing; adding members it
// has already is fine at the limit.
func TestMaxGroupSize(t *testing.T) {
	_, m := startCluster(t, localcluster.Options{MaxGroupSize: 5})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 80, Owner: 1, Members: []uint64{2, 3, 4, 5, 6}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "would have 6 members") {
		t.Fatalf("create over the limit: %v, want INVALID_ARGUMENT", err)
	}
	if _, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 80, Owner: 1, Members: []uint64{2, 3, 1}}); err != nil {
		t.Fatal(err)
	}
	_, err = m.AddMembers(ctx, &seqdv1.AddMembersRequest{GroupId: 80, Members: []uint64{4, 5, 6}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "has 3 members and would have 6") {
		t.Fatalf("add over the limit: %v, want FAILED_PRECONDITION", err)
	}
	g, err := m.AddMembers(ctx, &seqdv1.AddMembersRequest{GroupId: 80, Members: []uint64{2, 4, 5}})
	if err != nil || len(g.Group.Members) != 5 {
		t.Fatalf("add up to the limit: %v %v", g, err)
	}
	if _, err := m.AddMembers(ctx, &seqdv1.AddMembersRequest{GroupId: 80, Members: []uint64{3}}); err != nil {
		t.Fatalf("adding a member at the limit: %v", err)
	}
	if g, err := m.GetGroup(ctx, &seqdv1.GetGroupRequest{GroupId: 80}); err != nil || len(g.Group.Members) != 5 {
		t.Fatalf("group after the refused add: %v %v", g, err)
	}
}

// Adds to one group at the same time are each planned against the members
// the leader has applied; together they must not pass the limit (store
// format 9: every replica checks it again). Each add either applies whole
// or is refused whole.
func TestConcurrentAddsStayWithinMaxGroupSize(t *testing.T) {
	const limit, calls, each = 50, 20, 10
	_, m := startCluster(t, localcluster.Options{MaxGroupSize: limit})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 85, Owner: 1}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, calls)
	for i := range calls {
		wg.Go(func() {
			members := make([]uint64, each)
			for j := range members {
				members[j] = uint64(1000 + i*each + j)
			}
			_, errs[i] = m.AddMembers(ctx, &seqdv1.AddMembersRequest{GroupId: 85, Members: members})
		})
	}
	wg.Wait()
	added := 0
	for i, err := range errs {
		switch {
		case err == nil:
			added++
		case status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "a group holds at most 50"):
			t.Fatalf("add %d: %v, want OK or FAILED_PRECONDITION naming the limit", i, err)
		}
	}
	g, err := m.GetGroup(ctx, &seqdv1.GetGroupRequest{GroupId: 85})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(g.Group.Members); n > limit || n != 1+added*each {
		t.Fatalf("group has %d members after %d of %d adds of %d applied; want 1+%d*%d, at most %d", n, added, calls, each, added, each, limit)
	}
	if added != (limit-1)/each {
		t.Fatalf("%d adds applied, want %d (the group filled up)", added, (limit-1)/each)
	}
}

// A create retried after the limit was lowered (every replica restarted
// with a smaller --max-group-size) is still the FSM's to answer: the
// retry gets the group it made, another create under the same id is
// refused as a different group, and only a new group meets the new limit.
func TestCreateRetriedAfterTheLimitWasLowered(t *testing.T) {
	c, m := startCluster(t, localcluster.Options{MaxGroupSize: 10})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	create := &seqdv1.CreateGroupRequest{GroupId: 90, Owner: 1, Members: []uint64{2, 3, 4, 5, 6}}
	if _, err := m.CreateGroup(ctx, create); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := c.StopStore(0, i); err != nil {
			t.Fatalf("stopping replica %d: %v", i, err)
		}
		if err := c.RestartStoreWith(ctx, 0, i, func(cfg *node.Config) { cfg.MaxGroupSize = 3 }); err != nil {
			t.Fatalf("restarting replica %d: %v", i, err)
		}
	}
	g, err := m.CreateGroup(ctx, create)
	if err != nil || len(g.Group.GetMembers()) != 6 {
		t.Fatalf("retried create after the limit was lowered: %v %v, want the group of 6 it made", g, err)
	}
	other := &seqdv1.CreateGroupRequest{GroupId: 90, Owner: 1, Members: []uint64{2, 3, 4, 5, 7}}
	if _, err := m.CreateGroup(ctx, other); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("another create under the same id: %v, want ALREADY_EXISTS", err)
	}
	_, err = m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 91, Owner: 1, Members: []uint64{2, 3, 4}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "at most 3") {
		t.Fatalf("a new group over the lowered limit: %v, want INVALID_ARGUMENT naming 3", err)
	}
}

func TestRateLimit(t *testing.T) {
	_, m := startCluster(t, localcluster.Options{RateLimit: 20})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	limited := 0
	for i := 0; i < 200 && limited == 0; i++ {
		_, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 1, Recipients: []uint64{2}, Conversation: direct(12), ClientMsgId: "r" + itoa(i), Body: []byte("x")})
		if status.Code(err) == codes.ResourceExhausted {
			limited++
			if !strings.Contains(err.Error(), "rate limit") {
				t.Fatalf("message %q does not say it is a rate limit", err)
			}
		}
	}
	if limited == 0 {
		t.Fatal("200 sends at full speed were never rate limited at 20/s")
	}
}

func itoa(i int) string {
	return strings.TrimSpace(strings.Repeat(" ", 0) + string(rune('0'+i%10)) + string(rune('a'+i/10%26)) + string(rune('a'+i/260)))
}

// Concurrent large write-fanout sends would make one Raft entry too large
// for a Badger transaction if batched together; the pipeline splits them
// over entries, so every one of them succeeds.
func TestLargeConcurrentGroupSendsAllSucceed(t *testing.T) {
	_, m := startCluster(t, localcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	members := make([]uint64, 0, 499)
	for u := uint64(2); u <= 500; u++ {
		members = append(members, u)
	}
	if _, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 70, Owner: 1, Members: members}); err != nil {
		t.Fatal(err)
	}
	body := []byte(strings.Repeat("x", 900))
	const sends = 24 // about 12 MB of inbox copies: more than one Badger transaction takes
	var wg sync.WaitGroup
	errs := make(chan error, sends)
	for i := range sends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 1, Conversation: group(70), ClientMsgId: "big-" + itoa(i), Body: body})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	for _, u := range []uint64{1, 250, 500} {
		if n := len(syncAll(t, m, u)); n != sends {
			t.Errorf("member %d holds %d events, want %d", u, n, sends)
		}
	}
}

// TestUnfinishedHintRoundHintsNoOneTwice: a hint round goes out in chunks
// of members; when a later chunk fails (a leader change, a timeout), the
// next window's retry of the same round skips the members the applied
// chunks told. Before, they got the same hint (same message id) twice.
func TestUnfinishedHintRoundHintsNoOneTwice(t *testing.T) {
	var failed atomic.Int32
	store.SetHintFaults(t, 2, func(g uint64, i int) bool {
		// The second chunk of group 90's rounds fails twice.
		return g == 90 && i == 1 && failed.Add(1) <= 2
	})
	hintsEachMemberOnce(t, 90, &failed, 2)
}

// TestRefusedHintChunkIsRetried: a chunk of a hint round that the FSM
// refuses (out of order) told no one, so the round stops there and the
// next window goes on from it. Before, the round went on to its final
// chunk, which marked the group seq told, and the refused chunk's members
// never heard of it.
func TestRefusedHintChunkIsRetried(t *testing.T) {
	var refused atomic.Int32
	store.SetHintFaults(t, 2, nil)
	store.SetHintRefusals(t, func(g uint64, i int) bool {
		return g == 91 && i == 1 && refused.Add(1) <= 1
	})
	hintsEachMemberOnce(t, 91, &refused, 1)
}

// hintsEachMemberOnce sends a message to a new read-fanout group g of five
// members, under the hint faults the caller set, and checks that its
// owner and every member end up holding the round's hint exactly once.
// fired counts the faults, which must have fired at least need times.
func hintsEachMemberOnce(t *testing.T, g uint64, fired *atomic.Int32, need int32) {
	t.Helper()
	_, m := startCluster(t, localcluster.Options{HintWindow: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	members := []uint64{2, 3, 4, 5, 6}
	if _, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: g, Owner: 1, Members: members, ReadFanout: true}); err != nil {
		t.Fatal(err)
	}
	r, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 1, Conversation: group(g), ClientMsgId: "h", Body: []byte("news")})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("h%d.%d", g, r.GroupSeq)
	testwait.For(t, 10*time.Second, "every member to be hinted", func() bool {
		for _, u := range append(members, 1) {
			if hintIDs(t, m, u)[want] == 0 {
				return false
			}
		}
		return true
	})
	if n := fired.Load(); n < need {
		t.Fatalf("the fault fired %d times; the test needs %d", n, need)
	}
	time.Sleep(300 * time.Millisecond) // a few more windows: nothing more
	for _, u := range append(members, 1) {
		if got := hintIDs(t, m, u); got[want] != 1 || len(got) != 1 {
			t.Errorf("member %d holds hints %v, want %s once", u, got, want)
		}
	}
}

// TestStoppedHintWindowProposesNothing: a hint window whose loop was told
// to stop (a leadership change, a close) proposes no more chunks. Before,
// each group's next chunk still went into the pipeline and committed, the
// loop never learned it, and the next window hinted those members again.
func TestStoppedHintWindowProposesNothing(t *testing.T) {
	store.SetHintFaults(t, 1, nil) // one member per chunk
	c, m := startCluster(t, localcluster.Options{HintWindow: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	members := []uint64{2, 3, 4}
	for g := uint64(61); g <= 63; g++ {
		if _, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: g, Owner: 1, Members: members, ReadFanout: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 1, Conversation: group(g), ClientMsgId: fmt.Sprint("m", g), Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	sh := c.Store(0, storeLeader(t, c)).Store()
	stopped, stop := context.WithCancel(ctx)
	stop()
	sh.HintGroups(stopped) // proposes nothing (what it proposed would commit after it returned)
	sh.HintGroups(ctx)     // the next window
	for _, u := range append(members, 1) {
		got := hintIDs(t, m, u)
		for id, n := range got {
			if n != 1 {
				t.Errorf("member %d holds hint %s %d times", u, id, n)
			}
		}
		if len(got) != 3 {
			t.Errorf("member %d holds hints %v, want one of each of the 3 groups", u, got)
		}
	}
}

// TestHintBudgetSpreadsRounds: a hint window hints at most HintBudget
// members; a round it cuts off goes on in the next windows at its own
// group seq, though newer messages came, and the next round tells those.
// A small group that a big one's round kept out of a window goes first in
// the next.
func TestHintBudgetSpreadsRounds(t *testing.T) {
	store.SetHintFaults(t, 2, nil)
	c, m := startCluster(t, localcluster.Options{HintWindow: time.Hour, HintBudget: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	big := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11} // owner 1 and 10 more
	if _, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 70, Owner: 1, Members: big[1:], ReadFanout: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateGroup(ctx, &seqdv1.CreateGroupRequest{GroupId: 71, Owner: 20, Members: []uint64{21}, ReadFanout: true}); err != nil {
		t.Fatal(err)
	}
	send := func(g uint64, id string) string {
		t.Helper()
		r, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 1 + (g-70)*19, Conversation: group(g), ClientMsgId: id, Body: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("h%d.%d", g, r.GroupSeq)
	}
	first, small := send(70, "a"), send(71, "s")
	sh := c.Store(0, storeLeader(t, c)).Store()
	// holding counts the members of big holding each hint id, and fails
	// if any holds one twice.
	holding := func() map[string]int {
		t.Helper()
		out := map[string]int{}
		for _, u := range big {
			for id, n := range hintIDs(t, m, u) {
				if n != 1 {
					t.Fatalf("member %d holds hint %s %d times", u, id, n)
				}
				out[id]++
			}
		}
		return out
	}
	leader := fmt.Sprintf("s1-r%d", storeLeader(t, c)+1)
	sh.HintGroups(ctx)
	if got := holding(); got[first] != 4 || len(got) != 1 {
		t.Fatalf("after the first window: %v, want %s held by 4 members (the budget)", got, first)
	}
	if got := storeGauge(t, c, "seqd_store_group_hints_waiting", leader); got != float64(len(big)-4) {
		t.Fatalf("seqd_store_group_hints_waiting after the first window = %v, want %d", got, len(big)-4)
	}
	// The budget stopped the window before the small group; the next
	// starts after the big one, so the small group goes first.
	smallHinted := func() bool {
		return hintIDs(t, m, 20)[small] == 1 && hintIDs(t, m, 21)[small] == 1
	}
	if smallHinted() {
		t.Fatalf("the small group was hinted in a window whose budget the big one spent")
	}
	second := send(70, "b")
	sh.HintGroups(ctx) // small group (2), then 2 more of the big one's first round
	if !smallHinted() {
		t.Fatalf("the small group was not hinted in the second window")
	}
	if got := holding(); got[first] != 6 || len(got) != 1 {
		t.Fatalf("after the second window: %v, want %s held by 6 members", got, first)
	}
	sh.HintGroups(ctx) // 4 more
	sh.HintGroups(ctx) // the last one: the round ends at its own group seq
	if got := holding(); got[first] != len(big) || len(got) != 1 {
		t.Fatalf("after four windows: %v, want %s held by all %d members and nothing newer yet", got, first, len(big))
	}
	if got := storeGauge(t, c, "seqd_store_group_hints_waiting", leader); got != 0 {
		t.Fatalf("seqd_store_group_hints_waiting after the round = %v, want 0", got)
	}
	for range 3 {
		sh.HintGroups(ctx) // the next round: 4, 4, 3
	}
	if got := holding(); got[first] != len(big) || got[second] != len(big) || len(got) != 2 {
		t.Fatalf("after seven windows: %v, want %s and %s held by all %d members", got, first, second, len(big))
	}
	sh.HintGroups(ctx)
	if got := holding(); len(got) != 2 {
		t.Fatalf("a window with no news hinted: %v", got)
	}
}

// hintIDs counts u's group hints by message id.
func hintIDs(t *testing.T, m *router.Messages, u uint64) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, e := range hintsOf(t, m, u) {
		out[e.MessageId]++
	}
	return out
}

// errOf is the error of a call, for tables of calls that must fail.
func errOf[T any](_ T, err error) error { return err }
