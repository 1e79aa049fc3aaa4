package store

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// Table tests of the request validators: every bad input is refused with
// InvalidArgument and a message naming the field; the limits themselves
// are accepted.

// wantInvalid checks err is InvalidArgument naming field ("" = must pass).
func wantInvalid(t *testing.T, err error, field string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Fatalf("refused a valid request: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("accepted; want InvalidArgument naming %q", field)
	}
	if c := status.Code(err); c != codes.InvalidArgument {
		t.Fatalf("code %v, want InvalidArgument (%v)", c, err)
	}
	if msg := status.Convert(err).Message(); !strings.Contains(msg, field) {
		t.Fatalf("message %q does not name %q", msg, field)
	}
}

const maxUser = GroupKeyBit - 1

func validSend() *seqdv1.SendRequest {
	return &seqdv1.SendRequest{Sender: 1, Conversation: dconv(7), Recipients: []uint64{2, 3}, ClientMsgId: "c1",
		Body: []byte("hello"), Metadata: map[string]string{"k": "v"}}
}

func TestValidateSend(t *testing.T) {
	many := func(n int) []uint64 {
		out := make([]uint64, n)
		for i := range out {
			out[i] = uint64(i + 2)
		}
		return out
	}
	cases := []struct {
		name  string
		mut   func(r *seqdv1.SendRequest)
		field string // "" = valid
	}{
		{"valid", func(r *seqdv1.SendRequest) {}, ""},
		{"largest user ids", func(r *seqdv1.SendRequest) { r.Sender, r.Recipients = maxUser, []uint64{maxUser - 1} }, ""},
		{"body at the limit", func(r *seqdv1.SendRequest) { r.Body = make([]byte, 64<<10) }, ""},
		{"client_msg_id at the limit", func(r *seqdv1.SendRequest) { r.ClientMsgId = strings.Repeat("é", 64) }, ""},
		{"recipients at the limit", func(r *seqdv1.SendRequest) { r.Recipients = many(100) }, ""},
		{"metadata at the limit", func(r *seqdv1.SendRequest) { r.Metadata = map[string]string{"k": strings.Repeat("v", 4095)} }, ""},
		{"no metadata", func(r *seqdv1.SendRequest) { r.Metadata = nil }, ""},
		{"group message", func(r *seqdv1.SendRequest) { r.Conversation, r.Recipients = gconv(maxUser), nil }, ""},

		{"sender 0", func(r *seqdv1.SendRequest) { r.Sender = 0 }, "sender"},
		{"sender in the group space", func(r *seqdv1.SendRequest) { r.Sender = GroupKeyBit | 1 }, "sender"},
		{"sender max uint64", func(r *seqdv1.SendRequest) { r.Sender = ^uint64(0) }, "sender"},
		{"no conversation", func(r *seqdv1.SendRequest) { r.Conversation = nil }, "conversation"},
		{"conversation type unspecified", func(r *seqdv1.SendRequest) { r.Conversation.Type = 0 }, "conversation.type"},
		{"conversation type unknown", func(r *seqdv1.SendRequest) { r.Conversation.Type = 99 }, "conversation.type"},
		{"conversation type negative", func(r *seqdv1.SendRequest) { r.Conversation.Type = -1 }, "conversation.type"},
		{"direct conversation id 0", func(r *seqdv1.SendRequest) { r.Conversation.Id = 0 }, "conversation.id"},
		{"group id 0", func(r *seqdv1.SendRequest) { r.Conversation, r.Recipients = gconv(0), nil }, "conversation.id"},
		{"group id in the group key space", func(r *seqdv1.SendRequest) { r.Conversation, r.Recipients = gconv(GroupKeyBit|5), nil }, "conversation.id"},
		{"no recipients", func(r *seqdv1.SendRequest) { r.Recipients = nil }, "recipients"},
		{"too many recipients", func(r *seqdv1.SendRequest) { r.Recipients = many(101) }, "recipients"},
		{"recipient 0", func(r *seqdv1.SendRequest) { r.Recipients = []uint64{2, 0} }, "recipients[1]"},
		{"recipient in the group space", func(r *seqdv1.SendRequest) { r.Recipients = []uint64{GroupKeyBit} }, "recipients[0]"},
		{"recipient twice", func(r *seqdv1.SendRequest) { r.Recipients = []uint64{2, 3, 2} }, "recipients"},
		{"sender among recipients", func(r *seqdv1.SendRequest) { r.Recipients = []uint64{2, 1} }, "recipients"},
		{"recipients on a group message", func(r *seqdv1.SendRequest) { r.Conversation = gconv(5) }, "recipients"},
		{"empty client_msg_id", func(r *seqdv1.SendRequest) { r.ClientMsgId = "" }, "client_msg_id"},
		{"client_msg_id too long", func(r *seqdv1.SendRequest) { r.ClientMsgId = strings.Repeat("x", 129) }, "client_msg_id"},
		{"client_msg_id not UTF-8", func(r *seqdv1.SendRequest) { r.ClientMsgId = "a\xffb" }, "client_msg_id"},
		{"empty body", func(r *seqdv1.SendRequest) { r.Body = nil }, "body"},
		{"body too large", func(r *seqdv1.SendRequest) { r.Body = make([]byte, 64<<10+1) }, "body"},
		{"huge body", func(r *seqdv1.SendRequest) { r.Body = make([]byte, 4<<20) }, "body"},
		{"metadata empty key", func(r *seqdv1.SendRequest) { r.Metadata = map[string]string{"": "v"} }, "metadata"},
		{"metadata too large", func(r *seqdv1.SendRequest) { r.Metadata = map[string]string{"k": strings.Repeat("v", 4096)} }, "metadata"},
		{"metadata too large in sum", func(r *seqdv1.SendRequest) {
			r.Metadata = map[string]string{}
			for i := 0; i < 100; i++ {
				r.Metadata[fmt.Sprintf("key%03d", i)] = strings.Repeat("v", 40)
			}
		}, "metadata"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := validSend()
			c.mut(r)
			wantInvalid(t, DefaultLimits.ValidateSend(r), c.field)
		})
	}
}

func TestValidateSendCustomLimits(t *testing.T) {
	l := Limits{MaxBody: 4, MaxRecipients: 1, MaxMetadataBytes: 2, MaxClientMsgID: 3, MaxGroupMembers: 2, MaxPage: 5}
	r := &seqdv1.SendRequest{Sender: 1, Conversation: dconv(7), Recipients: []uint64{2}, ClientMsgId: "abc", Body: []byte("1234"),
		Metadata: map[string]string{"k": "v"}}
	wantInvalid(t, l.ValidateSend(r), "")
	for field, mut := range map[string]func(*seqdv1.SendRequest){
		"body":          func(r *seqdv1.SendRequest) { r.Body = []byte("12345") },
		"recipients":    func(r *seqdv1.SendRequest) { r.Recipients = []uint64{2, 3} },
		"metadata":      func(r *seqdv1.SendRequest) { r.Metadata = map[string]string{"k": "vv"} },
		"client_msg_id": func(r *seqdv1.SendRequest) { r.ClientMsgId = "abcd" },
	} {
		t.Run(field, func(t *testing.T) {
			c := &seqdv1.SendRequest{Sender: r.Sender, Conversation: dconv(7), Recipients: r.Recipients, ClientMsgId: r.ClientMsgId,
				Body: r.Body, Metadata: r.Metadata}
			mut(c)
			wantInvalid(t, l.ValidateSend(c), field)
		})
	}
}

func TestValidateMarkRead(t *testing.T) {
	cases := []struct {
		name  string
		r     *seqdv1.MarkReadRequest
		field string
	}{
		{"valid", &seqdv1.MarkReadRequest{User: 1, Conversation: dconv(7), UpToSeq: 5}, ""},
		{"valid group", &seqdv1.MarkReadRequest{User: 1, Conversation: gconv(7), UpToSeq: 5}, ""},
		{"user 0", &seqdv1.MarkReadRequest{User: 0, Conversation: dconv(7), UpToSeq: 5}, "user"},
		{"user in the group space", &seqdv1.MarkReadRequest{User: GroupKeyBit, Conversation: dconv(7), UpToSeq: 5}, "user"},
		{"no conversation", &seqdv1.MarkReadRequest{User: 1, UpToSeq: 5}, "conversation"},
		{"unknown conversation type", &seqdv1.MarkReadRequest{User: 1, Conversation: &seqdv1.Conversation{Type: 3, Id: 7}, UpToSeq: 5}, "conversation.type"},
		{"conversation id 0", &seqdv1.MarkReadRequest{User: 1, Conversation: dconv(0), UpToSeq: 5}, "conversation.id"},
		{"group id in the group space", &seqdv1.MarkReadRequest{User: 1, Conversation: gconv(GroupKeyBit), UpToSeq: 5}, "conversation.id"},
		{"up_to_seq 0", &seqdv1.MarkReadRequest{User: 1, Conversation: dconv(7)}, "up_to_seq"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { wantInvalid(t, ValidateMarkRead(c.r), c.field) })
	}
}

func TestValidateMessageRef(t *testing.T) {
	cases := []struct {
		user  uint64
		id    string
		field string
	}{
		{1, "1.5", ""},
		{1, "g7.5", ""},
		{1, "9223372036854775807.18446744073709551615", ""},
		{0, "1.5", "sender"},
		{GroupKeyBit, "1.5", "sender"},
		{1, "", "message_id"},
		{1, "15", "message_id"},
		{1, "1.", "message_id"},
		{1, ".5", "message_id"},
		{1, "0.5", "message_id"},
		{1, "1.0", "message_id"},
		{1, "g0.5", "message_id"},
		{1, "g.5", "message_id"},
		{1, "gg1.5", "message_id"},
		{1, "G1.5", "message_id"},
		{1, "h1.5", "message_id"},
		{1, "-1.5", "message_id"},
		{1, "+1.5", "message_id"},
		{1, " 1.5", "message_id"},
		{1, "1.5.6", "message_id"},
		{1, "1.x", "message_id"},
		{1, "9223372036854775808.5", "message_id"}, // 2^63: a group key, not a sender
		{1, "18446744073709551616.5", "message_id"},
		{1, "1.18446744073709551616", "message_id"},
		{1, "1.5\x00", "message_id"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%d/%q", c.user, c.id), func(t *testing.T) {
			wantInvalid(t, ValidateMessageRef("sender", c.user, c.id), c.field)
		})
	}
	// The field name is the caller's.
	wantInvalid(t, ValidateMessageRef("user", 0, "1.5"), "user is 0")
}

func TestParseMessageIDRoundTrip(t *testing.T) {
	for _, c := range []struct {
		id       string
		key, seq uint64
	}{
		{DirectMessageID(1, 5), 1, 5},
		{DirectMessageID(maxUser, ^uint64(0)), maxUser, ^uint64(0)},
		{GroupMessageID(7, 9), GroupKeyBit | 7, 9},
		{GroupMessageID(maxUser, 1), GroupKeyBit | maxUser, 1},
	} {
		key, seq, err := ParseMessageID(c.id)
		if err != nil || key != c.key || seq != c.seq {
			t.Fatalf("ParseMessageID(%q) = %d, %d, %v; want %d, %d", c.id, key, seq, err, c.key, c.seq)
		}
	}
}

func TestValidateGroupMembers(t *testing.T) {
	big := make([]uint64, 10_001)
	for i := range big {
		big[i] = uint64(i + 1)
	}
	cases := []struct {
		name    string
		group   uint64
		members []uint64
		needOne bool
		field   string
	}{
		{"valid", 5, []uint64{1, 2}, true, ""},
		{"no members, none needed", 5, nil, false, ""},
		{"at the limit", maxUser, big[:10_000], true, ""},
		{"group 0", 0, []uint64{1}, true, "group_id"},
		{"group in the group space", GroupKeyBit | 5, []uint64{1}, true, "group_id"},
		{"no members", 5, nil, true, "members"},
		{"member 0", 5, []uint64{1, 0}, true, "members[1]"},
		{"member in the group space", 5, []uint64{GroupKeyBit | 1}, true, "members[0]"},
		{"member twice", 5, []uint64{1, 2, 1}, true, "members"},
		{"too many", 5, big, true, "members"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantInvalid(t, DefaultLimits.ValidateGroupMembers(c.group, c.members, c.needOne), c.field)
		})
	}
}

func TestValidatePage(t *testing.T) {
	for _, c := range []struct {
		n     uint32
		want  int
		field string
	}{{0, 100, ""}, {1, 1, ""}, {1000, 1000, ""}, {1001, 0, "limit"}, {^uint32(0), 0, "limit"}} {
		got, err := DefaultLimits.page("limit", c.n, 100)
		wantInvalid(t, err, c.field)
		if got != c.want {
			t.Fatalf("page(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}
