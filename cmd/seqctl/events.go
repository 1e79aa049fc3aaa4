package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// bodyRunes is how much of a body a table shows.
const bodyRunes = 60

var eventHeader = []any{"SEQ", "KIND", "CONVERSATION", "MESSAGE", "SENDER", "FLAGS", "CONTENT"}

// eventCells is one event as table cells: every cell but the last is one
// word ("-" when empty), so scripts can split on spaces.
func eventCells(e *seqdv1.Event) []any {
	sender := "-"
	if e.Sender != 0 {
		sender = strconv.FormatUint(e.Sender, 10)
	}
	return []any{e.Seq, eventKind(e.Kind), convString(e.Conversation), orDash(e.MessageId), sender, eventFlags(e), eventContent(e)}
}

// eventLine is one event on one line, for tail.
func eventLine(e *seqdv1.Event) string {
	cells := eventCells(e)
	s := make([]string, len(cells))
	for i, c := range cells {
		s[i] = fmt.Sprint(c)
	}
	return strings.Join(s, "  ")
}

// writeEvents prints events as a table.
func writeEvents(w io.Writer, events []*seqdv1.Event) error {
	tw := newTable(w)
	row(tw, eventHeader...)
	for _, e := range events {
		row(tw, eventCells(e)...)
	}
	return tw.Flush()
}

// eventKind prints EVENT_KIND_GROUP_HINT as "group-hint".
func eventKind(k seqdv1.EventKind) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k.String(), "EVENT_KIND_")), "_", "-")
}

// convString prints a conversation as direct:ID or group:G.
func convString(c *seqdv1.Conversation) string {
	switch c.GetType() {
	case seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT:
		return fmt.Sprintf("direct:%d", c.Id)
	case seqdv1.ConversationType_CONVERSATION_TYPE_GROUP:
		return fmt.Sprintf("group:%d", c.Id)
	case seqdv1.ConversationType_CONVERSATION_TYPE_UNSPECIFIED:
		if c == nil {
			return "-"
		}
	}
	return fmt.Sprintf("%d:%d", c.GetType(), c.GetId())
}

func eventFlags(e *seqdv1.Event) string {
	var f []string
	if e.Outgoing {
		f = append(f, "outgoing")
	}
	if e.Recalled {
		f = append(f, "recalled")
	}
	if e.Deleted {
		f = append(f, "deleted")
	}
	if len(f) == 0 {
		return "-"
	}
	return strings.Join(f, ",")
}

// eventContent is what the event says: the quoted body of a message, or
// the detail of a marker.
func eventContent(e *seqdv1.Event) string {
	switch e.Kind {
	case seqdv1.EventKind_EVENT_KIND_MESSAGE:
		var s string
		switch {
		case e.Recalled:
			s = "(recalled)"
		case e.Deleted:
			s = "(deleted)"
		default:
			s = quoteBody(e.Body)
		}
		if len(e.Metadata) > 0 {
			s += " " + metaString(e.Metadata)
		}
		if e.GroupSeq != 0 {
			s += fmt.Sprintf(" (group seq %d)", e.GroupSeq)
		}
		return s
	case seqdv1.EventKind_EVENT_KIND_READ:
		return fmt.Sprintf("read up to %d", e.ReadUpTo)
	case seqdv1.EventKind_EVENT_KIND_RECALL:
		return "recalled by its sender"
	case seqdv1.EventKind_EVENT_KIND_DELETE:
		return "deleted here"
	case seqdv1.EventKind_EVENT_KIND_GROUP_HINT:
		s := fmt.Sprintf("group has news up to group seq %d (%s in all", e.GroupSeq, plural(e.GroupCount, "message"))
		if e.GroupExpiredCount > 0 {
			s += fmt.Sprintf(", the first %d removed by retention", e.GroupExpiredCount)
		}
		return s + fmt.Sprintf("): see `seqctl group sync %d --user USER`", e.Conversation.GetId())
	}
	return "-"
}

// quoteBody quotes a body with Go escapes, cut to bodyRunes characters.
func quoteBody(b []byte) string {
	cut, n := len(b), 0
	for i := 0; i < len(b); n++ {
		if n == bodyRunes {
			cut = i
			break
		}
		_, size := utf8.DecodeRune(b[i:])
		i += size
	}
	q := strconv.Quote(string(b[:cut]))
	if cut < len(b) {
		q += fmt.Sprintf("…(%d bytes)", len(b))
	}
	return q
}

// metaString prints metadata as {k=v k2="v 2"}, keys sorted.
func metaString(md map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(md)) {
		parts = append(parts, quoteIfNeeded(k)+"="+quoteIfNeeded(md[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func quoteIfNeeded(s string) string {
	q := strconv.Quote(s)
	if s == "" || q[1:len(q)-1] != s || strings.ContainsAny(s, " ={}") {
		return q
	}
	return s
}

// protoLine is m as one line of JSON with the .proto field names, for
// streams of JSON objects.
func protoLine(m proto.Message) ([]byte, error) {
	return protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
}

// protoMap is m's JSON form as a map, so a command can add fields the
// response lacks (such as the client_msg_id it chose).
func protoMap(m proto.Message) (map[string]any, error) {
	b, err := protoLine(m)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	return out, d.Decode(&out)
}

// plural writes "1 message" or "2 messages".
func plural(n uint64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
