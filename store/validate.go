package store

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/keyspace"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// Limits bound what one request may carry.
type Limits struct {
	MaxBody          int // bytes (default 64 KiB)
	MaxRecipients    int // default 100
	MaxMetadataBytes int // keys plus values (default 4 KiB)
	MaxClientMsgID   int // default 128
	MaxGroupMembers  int // per call (default 10,000)
	MaxPage          int // Sync/History/SyncGroup/GroupHistory/Unread limit cap (default 1000)
}

// DefaultLimits are the documented defaults.
var DefaultLimits = Limits{MaxBody: 64 << 10, MaxRecipients: 100, MaxMetadataBytes: 4 << 10, MaxClientMsgID: 128, MaxGroupMembers: 10_000, MaxPage: 1000}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// checkUser validates a user id in field.
func checkUser(field string, u uint64) error {
	if err := keyspace.CheckUser(field, u); err != nil {
		return invalid("%v", err)
	}
	return nil
}

func checkGroupID(field string, g uint64) error {
	if err := keyspace.CheckGroup(field, g); err != nil {
		return invalid("%v", err)
	}
	return nil
}

// checkConversation validates a conversation reference.
func checkConversation(field string, c *seqdv1.Conversation) error {
	if c == nil {
		return invalid("%s is missing; give its type (DIRECT or GROUP) and id", field)
	}
	switch c.Type {
	case seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT:
		if c.Id == 0 {
			return invalid("%s.id is 0; conversation ids start at 1", field)
		}
	case seqdv1.ConversationType_CONVERSATION_TYPE_GROUP:
		return checkGroupID(field+".id", c.Id)
	default:
		return invalid("%s.type %d is not a known conversation type; use DIRECT or GROUP", field, c.Type)
	}
	return nil
}

// checkUsers validates a list of users: every id valid, no repeats, at most max.
func checkUsers(field string, users []uint64, max int) error {
	if len(users) > max {
		return invalid("%s has %d users; the limit is %d", field, len(users), max)
	}
	seen := make(map[uint64]bool, len(users))
	for i, u := range users {
		if err := checkUser(fmt.Sprintf("%s[%d]", field, i), u); err != nil {
			return err
		}
		if seen[u] {
			return invalid("%s lists user %d twice", field, u)
		}
		seen[u] = true
	}
	return nil
}

// ValidateSend checks a send request before anything is written.
func (l Limits) ValidateSend(r *seqdv1.SendRequest) error {
	if err := checkUser("sender", r.Sender); err != nil {
		return err
	}
	if err := checkConversation("conversation", r.Conversation); err != nil {
		return err
	}
	switch r.Conversation.Type {
	case seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT:
		if len(r.Recipients) == 0 {
			return invalid("recipients is empty; a DIRECT message needs at least one recipient")
		}
		if err := checkUsers("recipients", r.Recipients, l.MaxRecipients); err != nil {
			return err
		}
		for _, u := range r.Recipients {
			if u == r.Sender {
				return invalid("recipients includes the sender %d; the sender gets its own copy anyway", u)
			}
		}
	case seqdv1.ConversationType_CONVERSATION_TYPE_GROUP:
		if len(r.Recipients) > 0 {
			return invalid("recipients must be empty for a GROUP message; the group's members receive it")
		}
	}
	if r.ClientMsgId == "" {
		return invalid("client_msg_id is empty; give each message a unique id so retries are safe")
	}
	if len(r.ClientMsgId) > l.MaxClientMsgID {
		return invalid("client_msg_id is %d bytes; the limit is %d", len(r.ClientMsgId), l.MaxClientMsgID)
	}
	if !utf8.ValidString(r.ClientMsgId) {
		return invalid("client_msg_id is not valid UTF-8")
	}
	if len(r.Body) == 0 {
		return invalid("body is empty; send at least one byte")
	}
	if len(r.Body) > l.MaxBody {
		return invalid("body is %d bytes; the limit is %d", len(r.Body), l.MaxBody)
	}
	md := 0
	for k, v := range r.Metadata {
		if k == "" {
			return invalid("metadata has an empty key")
		}
		md += len(k) + len(v)
	}
	if md > l.MaxMetadataBytes {
		return invalid("metadata is %d bytes; the limit is %d", md, l.MaxMetadataBytes)
	}
	return nil
}

// page returns the page size for a limit field (0 = def).
func (l Limits) page(field string, n uint32, def int) (int, error) {
	if n == 0 {
		return def, nil
	}
	if int(n) > l.MaxPage {
		return 0, invalid("%s %d is above the maximum %d", field, n, l.MaxPage)
	}
	return int(n), nil
}

// ValidateMarkRead checks a read marker.
func ValidateMarkRead(r *seqdv1.MarkReadRequest) error {
	if err := checkUser("user", r.User); err != nil {
		return err
	}
	if err := checkConversation("conversation", r.Conversation); err != nil {
		return err
	}
	if r.UpToSeq == 0 {
		return invalid("up_to_seq is 0; give the seq read up to")
	}
	return nil
}

// ValidateMessageRef checks a (user, message_id) pair.
func ValidateMessageRef(userField string, user uint64, id string) error {
	if err := checkUser(userField, user); err != nil {
		return err
	}
	if _, _, err := ParseMessageID(id); err != nil {
		return err
	}
	return nil
}

// ValidateGroupMembers checks a group id and a member list.
func (l Limits) ValidateGroupMembers(group uint64, members []uint64, needOne bool) error {
	if err := checkGroupID("group_id", group); err != nil {
		return err
	}
	if needOne && len(members) == 0 {
		return invalid("members is empty; name at least one user")
	}
	return checkUsers("members", members, l.MaxGroupMembers)
}
