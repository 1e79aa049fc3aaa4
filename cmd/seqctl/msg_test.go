package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/seqd/seqd/keyspace"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/seqd/seqd/internal/testwait"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

var kvLine = regexp.MustCompile(`^(\S+(?: \S+)*) {2,}(.*)$`)

// kv parses the key-value block a command prints first ("message  1.2").
func kv(t *testing.T, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if l == "" {
			break
		}
		g := kvLine.FindStringSubmatch(l)
		if g == nil {
			t.Fatalf("line %q is not KEY  VALUE in:\n%s", l, out)
		}
		m[g[1]] = strings.TrimSpace(g[2])
	}
	return m
}

// sent is what send printed.
type sent struct {
	id, conv, clientID string
	senderSeq          uint64
	duplicate          bool
	out                string
}

func send(t *testing.T, addr string, args ...string) sent {
	t.Helper()
	out := ok(t, append([]string{"--addr", addr, "send"}, args...)...)
	m := kv(t, out)
	s := sent{id: m["message"], out: out, duplicate: strings.HasPrefix(m["duplicate"], "true")}
	s.conv, _, _ = strings.Cut(m["conversation"], " ")
	s.clientID, _, _ = strings.Cut(m["client msg id"], " ")
	s.senderSeq, _ = strconv.ParseUint(m["sender seq"], 10, 64)
	if s.id == "" || s.conv == "" || s.clientID == "" {
		t.Fatalf("send printed no message id, conversation or client msg id:\n%s", out)
	}
	return s
}

// syncAll reads a user's whole inbox after a checkpoint through sync --json --all.
func syncAll(t *testing.T, addr string, user uint64, after uint64) *seqdv1.SyncResponse {
	t.Helper()
	out := ok(t, "--addr", addr, "--json", "sync", "--user", fmt.Sprint(user), "--after", fmt.Sprint(after), "--all", "--limit", "2")
	var r seqdv1.SyncResponse
	if err := protojson.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("sync --json: %v\n%s", err, out)
	}
	return &r
}

// Reads are served by any replica of the shard, and a follower may lag
// the write just acknowledged by a moment (a fresh client does not know
// the leader), so checks after a write poll until they hold.
const settle = 5 * time.Second

// okUntil reruns a read until cond holds or settle passes, and returns
// the last output for the caller to check.
func okUntil(t *testing.T, cond func(string) bool, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(settle)
	for {
		out := ok(t, args...)
		if cond(out) || time.Now().After(deadline) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncUntil is syncAll polled until cond holds.
func syncUntil(t *testing.T, addr string, user, after uint64, cond func(*seqdv1.SyncResponse) bool) *seqdv1.SyncResponse {
	t.Helper()
	deadline := time.Now().Add(settle)
	for {
		r := syncAll(t, addr, user, after)
		if cond(r) || time.Now().After(deadline) {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// has reports whether r holds a copy of every message in ids.
func has(ids ...string) func(*seqdv1.SyncResponse) bool {
	return func(r *seqdv1.SyncResponse) bool {
		for _, id := range ids {
			if n, _ := copies(r, id); n == 0 {
				return false
			}
		}
		return true
	}
}

// copies counts the MESSAGE events with message id id.
func copies(r *seqdv1.SyncResponse, id string) (n int, ev *seqdv1.Event) {
	for _, e := range r.Events {
		if e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE && e.MessageId == id {
			n, ev = n+1, e
		}
	}
	return n, ev
}

func TestSendThenSyncBothInboxes(t *testing.T) {
	addr := msgCluster(t)
	s := send(t, addr, "--from", "1001", "--to", "1002", "--meta", "lang=en", "hello, world")
	if want := fmt.Sprintf("direct:%d", keyspace.DirectConversationID(1001, []uint64{1002})); s.conv != want {
		t.Errorf("conversation %s, want %s", s.conv, want)
	}
	if s.duplicate || !strings.HasPrefix(s.clientID, "seqctl-") || !strings.Contains(s.out, "--client-msg-id "+s.clientID) {
		t.Errorf("first send: duplicate %v, client id %q:\n%s", s.duplicate, s.clientID, s.out)
	}
	deliveries := section(t, s.out, "DELIVERED TO")
	if len(deliveries) != 1 || deliveries[0][0] != "1002" {
		t.Errorf("deliveries %q, want one to 1002", deliveries)
	}
	for _, u := range []uint64{1001, 1002} {
		r := syncUntil(t, addr, u, 0, has(s.id))
		n, e := copies(r, s.id)
		if n != 1 {
			t.Fatalf("user %d holds %d copies of %s", u, n, s.id)
		}
		if e.Outgoing != (u == 1001) || string(e.Body) != "hello, world" || e.Metadata["lang"] != "en" || e.Sender != 1001 {
			t.Errorf("user %d's copy: %v", u, e)
		}
		if u == 1001 && e.Seq != s.senderSeq {
			t.Errorf("sender's copy at seq %d; send printed %d", e.Seq, s.senderSeq)
		}
		if r.NextCheckpoint != r.Events[len(r.Events)-1].Seq || r.HasMore {
			t.Errorf("user %d: next checkpoint %d, has_more %v after %d events", u, r.NextCheckpoint, r.HasMore, len(r.Events))
		}
	}
	// The reply shares the conversation.
	reply := send(t, addr, "--from", "1002", "--to", "1001", "hi back")
	if reply.conv != s.conv {
		t.Errorf("reply in %s, first message in %s", reply.conv, s.conv)
	}

	// The table: one row per event, the body quoted.
	out := okUntil(t, func(out string) bool { return strings.Contains(out, reply.id) }, "--addr", addr, "sync", "--user", "1002")
	rows := section(t, out, "SEQ")
	if len(rows) != 2 {
		t.Fatalf("sync --user 1002 printed %d rows:\n%s", len(rows), out)
	}
	if r := rows[0]; r[1] != "message" || r[2] != s.conv || r[3] != s.id || r[4] != "1001" || r[5] != "-" || !strings.Contains(out, `"hello, world" {lang=en}`) {
		t.Errorf("row %q:\n%s", r, out)
	}
	if r := rows[1]; r[5] != "outgoing" {
		t.Errorf("reply row %q: want outgoing", r)
	}
	if !strings.Contains(out, "next checkpoint "+rows[1][0]) {
		t.Errorf("sync does not print the next checkpoint %s:\n%s", rows[1][0], out)
	}
	// Paging by hand: the checkpoint of the first page starts the second.
	first := ok(t, "--addr", addr, "sync", "--user", "1002", "--limit", "1")
	if !strings.Contains(first, "run again with --after "+rows[0][0]) {
		t.Errorf("sync --limit 1 does not say how to continue:\n%s", first)
	}
	second := section(t, ok(t, "--addr", addr, "sync", "--user", "1002", "--after", rows[0][0]), "SEQ")
	if len(second) != 1 || second[0][0] != rows[1][0] {
		t.Errorf("sync --after %s gave %q, want only seq %s", rows[0][0], second, rows[1][0])
	}
	if out := ok(t, "--addr", addr, "sync", "--user", "1002", "--after", rows[1][0]); !strings.HasPrefix(out, "(no events after "+rows[1][0]+")") {
		t.Errorf("sync at the end:\n%s", out)
	}
}

func TestSendRetryIsDeduplicated(t *testing.T) {
	addr := msgCluster(t)
	a := send(t, addr, "--from", "1101", "--to", "1102,1103", "--client-msg-id", "retry-1", "once")
	b := send(t, addr, "--from", "1101", "--to", "1102,1103", "--client-msg-id", "retry-1", "once")
	if a.duplicate || !b.duplicate || a.id != b.id || a.senderSeq != b.senderSeq {
		t.Fatalf("retry: first %+v, second %+v; want the same message, the second a duplicate", a, b)
	}
	// The random client id printed by send dedups the same way.
	c := send(t, addr, "--from", "1101", "--to", "1102", "twice?")
	d := send(t, addr, "--from", "1101", "--to", "1102", "--client-msg-id", c.clientID, "twice?")
	if !d.duplicate || d.id != c.id {
		t.Fatalf("retry with the printed client id %s: %+v", c.clientID, d)
	}
	for _, u := range []uint64{1101, 1102} {
		r := syncUntil(t, addr, u, 0, has(a.id, c.id))
		for _, id := range []string{a.id, c.id} {
			if n, _ := copies(r, id); n != 1 {
				t.Errorf("user %d holds %d copies of %s", u, n, id)
			}
		}
		if len(r.Events) != 2 {
			t.Errorf("user %d has %d events, want 2", u, len(r.Events))
		}
	}
	if n, _ := copies(syncUntil(t, addr, 1103, 0, has(a.id)), a.id); n != 1 {
		t.Errorf("user 1103 holds %d copies of %s", n, a.id)
	}
}

// unreadUntil runs unread --json until the total is want.
func unreadUntil(t *testing.T, addr string, user, want uint64) *seqdv1.UnreadResponse {
	t.Helper()
	var r seqdv1.UnreadResponse
	out := okUntil(t, func(out string) bool {
		return protojson.Unmarshal([]byte(out), &r) == nil && r.Total == want
	}, "--addr", addr, "--json", "unread", "--user", fmt.Sprint(user))
	if err := protojson.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("unread --json: %v\n%s", err, out)
	}
	return &r
}

func TestUnreadThenRead(t *testing.T) {
	addr := msgCluster(t)
	a := send(t, addr, "--from", "1201", "--to", "1203", "one")
	send(t, addr, "--from", "1201", "--to", "1203", "two")
	last := send(t, addr, "--from", "1202", "--to", "1203", "--conv", "777", "three")
	if a.conv == "direct:777" || last.conv != "direct:777" {
		t.Fatalf("conversations %s and %s", a.conv, last.conv)
	}
	out := okUntil(t, func(out string) bool { return strings.Contains(out, "direct:777") }, "--addr", addr, "unread", "--user", "1203")
	counts := map[string]string{}
	for _, r := range section(t, out, "CONVERSATION") {
		counts[r[0]] = r[1]
	}
	if counts[a.conv] != "2" || counts["direct:777"] != "1" || counts["total"] != "3" {
		t.Fatalf("unread --user 1203: %v\n%s", counts, out)
	}

	r := syncUntil(t, addr, 1203, 0, has(last.id))
	seq := r.Events[1].Seq // the second message of a.conv
	// --conv takes the conversation as sync prints it.
	out = ok(t, "--addr", addr, "read", "--user", "1203", "--conv", a.conv, "--up-to", fmt.Sprint(seq))
	if !strings.Contains(out, "unread there 0, in total 1") {
		t.Errorf("read printed:\n%s", out)
	}
	// Again: the marker is there already.
	out = ok(t, "--addr", addr, "read", "--user", "1203", "--conv", a.conv, "--up-to", fmt.Sprint(seq))
	if !strings.Contains(out, "or further: nothing changed; unread there 0, in total 1") {
		t.Errorf("a repeated read printed:\n%s", out)
	}
	u := unreadUntil(t, addr, 1203, 1)
	if u.Total != 1 {
		t.Errorf("after read: total %d, want 1: %v", u.Total, u)
	}
	for _, c := range u.Conversations {
		if c.Conversation.Id != 777 && c.Count != 0 {
			t.Errorf("after read: %v", c)
		}
	}
	// The read marker is an inbox event, for the user's other devices.
	r = syncUntil(t, addr, 1203, seq, func(r *seqdv1.SyncResponse) bool { return len(r.Events) == 2 })
	if len(r.Events) != 2 || r.Events[1].Kind != seqdv1.EventKind_EVENT_KIND_READ || r.Events[1].ReadUpTo != seq {
		t.Errorf("events after %d: %v", seq, r.Events)
	}
	var mr seqdv1.MarkReadResponse
	out = ok(t, "--addr", addr, "--json", "read", "--user", "1203", "--conv", "777", "--up-to", fmt.Sprint(r.Events[0].Seq))
	if err := protojson.Unmarshal([]byte(out), &mr); err != nil || mr.TotalUnread != 0 || mr.Seq == 0 {
		t.Errorf("read --json: %v, %v\n%s", err, &mr, out)
	}
	zero := regexp.MustCompile(`(?m)^total +0$`)
	if out := okUntil(t, zero.MatchString, "--addr", addr, "unread", "--user", "1203"); !zero.MatchString(out) {
		t.Errorf("unread after reading everything:\n%s", out)
	}
}

func TestHistoryRecallDelete(t *testing.T) {
	addr := msgCluster(t)
	a := send(t, addr, "--from", "1301", "--to", "1302", "first")
	b := send(t, addr, "--from", "1301", "--to", "1302", "second")
	c := send(t, addr, "--from", "1301", "--to", "1302", "third")
	conv := strings.TrimPrefix(a.conv, "direct:")

	out := okUntil(t, func(out string) bool { return strings.Contains(out, c.id) }, "--addr", addr, "history", "--user", "1302", "--conv", conv, "--limit", "2")
	rows := section(t, out, "SEQ")
	if len(rows) != 2 || rows[0][3] != c.id || rows[1][3] != b.id {
		t.Fatalf("history --limit 2: want %s then %s:\n%s", c.id, b.id, out)
	}
	if !strings.Contains(out, "run again with --before "+rows[1][0]) {
		t.Errorf("history does not say how to page:\n%s", out)
	}
	rows = section(t, ok(t, "--addr", addr, "history", "--user", "1302", "--conv", conv, "--before", rows[1][0]), "SEQ")
	if len(rows) != 1 || rows[0][3] != a.id {
		t.Errorf("second page %q, want %s", rows, a.id)
	}

	if out := ok(t, "--addr", addr, "recall", "--from", "1301", "--msg", a.id); !strings.Contains(out, "recalled: 2 copies") {
		t.Errorf("recall printed:\n%s", out)
	}
	if out := ok(t, "--addr", addr, "delete", "--user", "1302", "--msg", b.id); !strings.Contains(out, "deleted from user 1302") {
		t.Errorf("delete printed:\n%s", out)
	}
	// Again: nothing changes, and the output says so.
	if out := ok(t, "--addr", addr, "recall", "--from", "1301", "--msg", a.id); !strings.Contains(out, "no copy here left to recall") {
		t.Errorf("second recall printed:\n%s", out)
	}
	if out := ok(t, "--addr", addr, "delete", "--user", "1302", "--msg", b.id); !strings.Contains(out, "deleted from user 1302's inbox before; nothing changed") {
		t.Errorf("second delete printed:\n%s", out)
	}
	for _, u := range []uint64{1301, 1302} {
		r := syncUntil(t, addr, u, 0, func(r *seqdv1.SyncResponse) bool {
			_, ea := copies(r, a.id)
			_, eb := copies(r, b.id)
			return ea.GetRecalled() && (u == 1301 || eb.GetDeleted())
		})
		_, ea := copies(r, a.id)
		_, eb := copies(r, b.id)
		if !ea.Recalled || len(ea.Body) != 0 {
			t.Errorf("user %d: %s not recalled: %v", u, a.id, ea)
		}
		if eb.Deleted != (u == 1302) {
			t.Errorf("user %d: %s deleted=%v", u, b.id, eb.Deleted)
		}
	}
	wants := []string{"recalled  (recalled)", "deleted   (deleted)", "recall   ", "delete   "}
	out = okUntil(t, func(out string) bool {
		for _, w := range wants {
			if !strings.Contains(out, w) {
				return false
			}
		}
		return true
	}, "--addr", addr, "sync", "--user", "1302")
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("sync lacks %q:\n%s", want, out)
		}
	}
	// Only the sender may recall.
	r := seqctl(t, "--addr", addr, "recall", "--from", "1302", "--msg", c.id)
	if r.code != 3 || !strings.Contains(r.stderr, "1302") {
		t.Errorf("recall by a recipient: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestGroups(t *testing.T) {
	addr := msgCluster(t)
	out := ok(t, "--addr", addr, "group", "create", "1400", "--owner", "1401", "--members", "1402,1403")
	if m := kv(t, out); m["group"] != "1400" || m["owner"] != "1401" || m["members"] != "3" || !strings.HasPrefix(m["fanout"], "write") {
		t.Errorf("group create printed:\n%s", out)
	}
	first := send(t, addr, "--from", "1402", "--group", "1400", "to the group")
	if first.conv != "group:1400" || !strings.HasPrefix(first.id, "g1400.") {
		t.Errorf("group send: %+v", first)
	}
	ok(t, "--addr", addr, "group", "add", "1400", "--members", "1404")
	ok(t, "--addr", addr, "group", "remove", "1400", "--members", "1403")
	second := send(t, addr, "--from", "1401", "--group", "1400", "after the changes")
	// The removed member last: once the others hold the second message,
	// the replica has applied it.
	for _, w := range []struct {
		user uint64
		ids  []string
	}{{1401, []string{first.id, second.id}}, {1402, []string{first.id, second.id}}, {1404, []string{second.id}}, {1403, []string{first.id}}} {
		u, ids := w.user, w.ids
		var got []string
		for _, e := range syncUntil(t, addr, u, 0, has(ids...)).Events {
			got = append(got, e.MessageId)
			if e.Conversation.GetType() != seqdv1.ConversationType_CONVERSATION_TYPE_GROUP || e.Conversation.Id != 1400 {
				t.Errorf("user %d: event in %v", u, e.Conversation)
			}
		}
		if strings.Join(got, " ") != strings.Join(ids, " ") {
			t.Errorf("user %d has %v, want %v", u, got, ids)
		}
	}
	if rows := section(t, ok(t, "--addr", addr, "history", "--user", "1402", "--conv", "group:1400"), "SEQ"); len(rows) != 2 || rows[0][3] != second.id {
		t.Errorf("history --conv group:1400 = %q, want %s first", rows, second.id)
	}
	var g seqdv1.GetGroupResponse
	out = okUntil(t, func(out string) bool { return strings.Contains(out, `"1404"`) && !strings.Contains(out, `"1403"`) },
		"--addr", addr, "--json", "group", "show", "1400")
	if err := protojson.Unmarshal([]byte(out), &g); err != nil {
		t.Fatalf("group show --json: %v\n%s", err, out)
	}
	var members []uint64
	for _, m := range g.Group.GetMembers() {
		members = append(members, m.User)
	}
	if fmt.Sprint(members) != "[1401 1402 1404]" {
		t.Errorf("members %v", members)
	}
	out = ok(t, "--addr", addr, "group", "show", "1400")
	if rows := section(t, out, "MEMBER"); len(rows) != 3 {
		t.Errorf("group show lists %d members", len(rows))
	}
	if strings.Contains(out, "last group seq") {
		t.Errorf("group show of a write-fanout group, which has no group seqs, shows one:\n%s", out)
	}

	// Read fanout: members pull the timeline and their inbox gets a hint.
	out = ok(t, "--addr", addr, "group", "create", "1410", "--owner", "1411", "--members", "1412", "--read-fanout")
	if !strings.HasPrefix(kv(t, out)["fanout"], "read") {
		t.Errorf("group create --read-fanout:\n%s", out)
	}
	m := send(t, addr, "--from", "1411", "--group", "1410", "pull me")
	if !strings.Contains(m.out, "group seq") {
		t.Errorf("read-fanout send prints no group seq:\n%s", m.out)
	}
	if out := ok(t, "--addr", addr, "group", "show", "1410"); kv(t, out)["last group seq"] == "" {
		t.Errorf("group show of a read-fanout group shows no group seq:\n%s", out)
	}
	out = okUntil(t, func(out string) bool { return strings.Contains(out, m.id) }, "--addr", addr, "group", "sync", "1410", "--user", "1412")
	rows := section(t, out, "SEQ")
	if len(rows) != 1 || rows[0][3] != m.id || !strings.Contains(out, `"pull me"`) || !strings.Contains(out, "next group checkpoint "+rows[0][0]) {
		t.Errorf("group sync:\n%s", out)
	}
	// History of a read-fanout group says where its messages are; of a
	// write-fanout group it says nothing more.
	if r := seqctl(t, "--addr", addr, "history", "--user", "1412", "--group", "1410"); r.code != 0 ||
		!strings.Contains(r.stderr, "group 1410 uses read fanout: its messages are in the group timeline (seqctl group history 1410 --user 1412)") {
		t.Errorf("history of a read-fanout group: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := seqctl(t, "--addr", addr, "history", "--user", "1402", "--group", "1400"); r.code != 0 || r.stderr != "" {
		t.Errorf("history of a write-fanout group: exit %d, stderr %q", r.code, r.stderr)
	}
	var gs seqdv1.SyncGroupResponse
	out = ok(t, "--addr", addr, "--json", "group", "sync", "1410", "--user", "1412", "--all")
	if err := protojson.Unmarshal([]byte(out), &gs); err != nil || len(gs.Events) != 1 {
		t.Errorf("group sync --json: %v\n%s", err, out)
	}
	r := seqctl(t, "--addr", addr, "group", "sync", "1410", "--user", "1499")
	if r.code != 3 || !strings.Contains(r.stderr, "not a member") {
		t.Errorf("group sync by a non-member: exit %d, stderr %q", r.code, r.stderr)
	}
	r = seqctl(t, "--addr", addr, "group", "sync", "1400", "--user", "1402")
	if r.code != 3 || !strings.Contains(r.stderr, "group 1400 uses write fanout") {
		t.Errorf("group sync of a write-fanout group: exit %d, stderr %q", r.code, r.stderr)
	}

	// Group history pages backwards through the timeline, newest first.
	m2 := send(t, addr, "--from", "1412", "--group", "1410", "second")
	out = ok(t, "--addr", addr, "group", "history", "1410", "--user", "1411", "--limit", "1")
	rows = section(t, out, "SEQ")
	if len(rows) != 1 || rows[0][3] != m2.id || !strings.Contains(out, "older entries: run again with --before "+rows[0][0]) {
		t.Fatalf("group history, newest page:\n%s", out)
	}
	out = ok(t, "--addr", addr, "group", "history", "1410", "--user", "1411", "--before", rows[0][0])
	if rows := section(t, out, "SEQ"); len(rows) != 1 || rows[0][3] != m.id || strings.Contains(out, "older entries") {
		t.Errorf("group history, second page:\n%s", out)
	}
	var gh seqdv1.GroupHistoryResponse
	out = ok(t, "--addr", addr, "--json", "group", "history", "1410", "--user", "1412")
	if err := protojson.Unmarshal([]byte(out), &gh); err != nil || len(gh.Events) != 2 || gh.Events[0].MessageId != m2.id || gh.NextBeforeGseq != 0 {
		t.Errorf("group history --json: %v\n%s", err, out)
	}
	r = seqctl(t, "--addr", addr, "group", "history", "1410", "--user", "1499")
	if r.code != 3 || !strings.Contains(r.stderr, "not a member") {
		t.Errorf("group history by a non-member: exit %d, stderr %q", r.code, r.stderr)
	}
	r = seqctl(t, "--addr", addr, "group", "history", "1400", "--user", "1402")
	if r.code != 3 || !strings.Contains(r.stderr, "group 1400 uses write fanout") {
		t.Errorf("group history of a write-fanout group: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := seqctl(t, "--addr", addr, "group", "history", "1410"); r.code != 2 || !strings.Contains(r.stderr, "--user") {
		t.Errorf("group history without --user: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestMessagesJSON(t *testing.T) {
	addr := msgCluster(t)
	var s struct {
		MessageID    string `json:"message_id"`
		SenderSeq    string `json:"sender_seq"`
		ClientMsgID  string `json:"client_msg_id"`
		Duplicate    *bool  `json:"duplicate"`
		Conversation struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		} `json:"conversation"`
		Deliveries []struct{ User, Seq string } `json:"deliveries"`
	}
	out := ok(t, "--addr", addr, "--json", "send", "--from", "1501", "--to", "1502", "json")
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("send --json: %v\n%s", err, out)
	}
	if s.MessageID == "" || s.SenderSeq == "" || !strings.HasPrefix(s.ClientMsgID, "seqctl-") || s.Duplicate == nil || *s.Duplicate ||
		s.Conversation.Type != "CONVERSATION_TYPE_DIRECT" || s.Conversation.ID != fmt.Sprint(keyspace.DirectConversationID(1501, []uint64{1502})) ||
		len(s.Deliveries) != 1 || s.Deliveries[0].User != "1502" {
		t.Errorf("send --json:\n%s", out)
	}
	r := syncUntil(t, addr, 1502, 0, has(s.MessageID))
	if n, e := copies(r, s.MessageID); n != 1 || string(e.Body) != "json" {
		t.Errorf("sync --json: %v", r)
	}
	var h seqdv1.HistoryResponse
	out = okUntil(t, func(out string) bool { return strings.Contains(out, s.MessageID) }, "--addr", addr, "--json", "history", "--user", "1502", "--conv", s.Conversation.ID)
	if err := protojson.Unmarshal([]byte(out), &h); err != nil || len(h.Events) != 1 {
		t.Errorf("history --json: %v\n%s", err, out)
	}
	var del seqdv1.DeleteResponse
	out = ok(t, "--addr", addr, "--json", "delete", "--user", "1502", "--msg", s.MessageID)
	if err := protojson.Unmarshal([]byte(out), &del); err != nil || del.Seq == 0 {
		t.Errorf("delete --json: %v\n%s", err, out)
	}
	var rec seqdv1.RecallResponse
	out = ok(t, "--addr", addr, "--json", "recall", "--from", "1501", "--msg", s.MessageID)
	if err := protojson.Unmarshal([]byte(out), &rec); err != nil || rec.RecalledCopies != 2 {
		t.Errorf("recall --json: %v\n%s", err, out)
	}
	var cg seqdv1.CreateGroupResponse
	out = ok(t, "--addr", addr, "--json", "group", "create", "1500", "--owner", "1501")
	if err := protojson.Unmarshal([]byte(out), &cg); err != nil || cg.Group.GetGroupId() != 1500 {
		t.Errorf("group create --json: %v\n%s", err, out)
	}
}

// tailRun is seqctl tail running in the background.
type tailRun struct {
	stdout, stderr testwait.Buffer
	cancel         context.CancelFunc
	done           chan int
}

func startTail(t *testing.T, args ...string) *tailRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &tailRun{cancel: cancel, done: make(chan int, 1)}
	go func() { tr.done <- run(ctx, args, &tr.stdout, &tr.stderr) }()
	t.Cleanup(func() { tr.cancel() })
	return tr
}

// stop interrupts tail as Ctrl-C would and returns its exit code.
func (tr *tailRun) stop(t *testing.T) int {
	t.Helper()
	tr.cancel()
	select {
	case code := <-tr.done:
		return code
	case <-time.After(10 * time.Second):
		t.Fatalf("tail did not stop; stderr:\n%s", tr.stderr.String())
		return -1
	}
}

var stoppedAt = regexp.MustCompile(`tail stopped at checkpoint (\d+) \(resume with --after (\d+)\)`)

// tailSeqs returns the seq and message id of each event line tail printed.
func tailSeqs(t *testing.T, out string) (seqs []uint64, ids []string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] == "heartbeat" {
			continue
		}
		s, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil || len(f) < 7 {
			t.Fatalf("tail line %q is not an event", sc.Text())
		}
		seqs, ids = append(seqs, s), append(ids, f[3])
	}
	return seqs, ids
}

func TestTailLiveThenResume(t *testing.T) {
	addr := msgCluster(t)
	early := send(t, addr, "--from", "1601", "--to", "1602", "backlog")
	tr := startTail(t, "--addr", addr, "tail", "--user", "1602", "--verbose", "--heartbeat", "200ms")
	testwait.For(t, 10*time.Second, "the backlog", func() bool { return strings.Contains(tr.stdout.String(), early.id) })
	testwait.For(t, 10*time.Second, "a heartbeat", func() bool { return strings.Contains(tr.stdout.String(), "heartbeat  checkpoint") })
	live := send(t, addr, "--from", "1603", "--to", "1602", "live")
	testwait.For(t, 10*time.Second, "the live message", func() bool { return strings.Contains(tr.stdout.String(), live.id) })
	if code := tr.stop(t); code != 0 {
		t.Fatalf("tail exit %d after Ctrl-C; stderr:\n%s", code, tr.stderr.String())
	}
	seqs, ids := tailSeqs(t, tr.stdout.String())
	if len(ids) != 2 || ids[0] != early.id || ids[1] != live.id || !strings.Contains(tr.stdout.String(), `"live"`) {
		t.Fatalf("tail printed %v:\n%s", ids, tr.stdout.String())
	}
	m := stoppedAt.FindStringSubmatch(tr.stderr.String())
	if m == nil || m[1] != fmt.Sprint(seqs[1]) {
		t.Fatalf("tail did not print checkpoint %d on stopping; stderr:\n%s", seqs[1], tr.stderr.String())
	}

	// Resume from the printed checkpoint: only what came after, once.
	after := send(t, addr, "--from", "1601", "--to", "1602", "while away")
	tr = startTail(t, "--addr", addr, "--json", "tail", "--user", "1602", "--after", m[1])
	testwait.For(t, 10*time.Second, "the resumed stream", func() bool { return strings.Contains(tr.stdout.String(), after.id) })
	more := send(t, addr, "--from", "1601", "--to", "1602", "and live again")
	testwait.For(t, 10*time.Second, "the second live message", func() bool { return strings.Contains(tr.stdout.String(), more.id) })
	if code := tr.stop(t); code != 0 {
		t.Fatalf("tail exit %d", code)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(tr.stdout.String()), "\n") {
		var r seqdv1.SubscribeResponse
		if err := protojson.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("tail --json line %q: %v", l, err)
		}
		if r.Heartbeat {
			t.Errorf("heartbeat printed without --verbose: %s", l)
			continue
		}
		if len(r.Events) != 1 || r.Checkpoint != r.Events[0].Seq {
			t.Fatalf("tail --json line %s: want one event and its checkpoint", l)
		}
		got = append(got, r.Events[0].MessageId)
	}
	if strings.Join(got, " ") != after.id+" "+more.id {
		t.Errorf("resumed tail printed %v, want [%s %s]", got, after.id, more.id)
	}
}

func TestTailReconnectsWhenItsReplicaDies(t *testing.T) {
	c := ownClusterShards(t, 1)
	addr := c.GatewayAddr()
	tr := startTail(t, "--addr", addr, "tail", "--user", "1702", "--heartbeat", "200ms")
	var want []string
	sendOne := func(i int) {
		t.Helper()
		id := fmt.Sprintf("r%d", i)
		// A send during an election may fail; the retry is safe.
		for try := 0; ; try++ {
			r := seqctl(t, "--addr", addr, "--timeout", "5s", "send", "--from", "1701", "--to", "1702", "--client-msg-id", id, fmt.Sprint("message ", i))
			if r.code == 0 {
				want = append(want, kv(t, r.stdout)["message"])
				return
			}
			if try == 5 {
				t.Fatalf("send %d: exit %d: %s", i, r.code, r.stderr)
			}
		}
	}
	sendOne(0)
	testwait.For(t, 10*time.Second, "the first message", func() bool { return strings.Contains(tr.stdout.String(), want[0]) })
	// Restart every replica in turn: whichever one serves the stream dies.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 3 {
		c.KillStore(0, i)
		sendOne(2*i + 1)
		if err := c.RestartStore(ctx, 0, i); err != nil {
			t.Fatalf("restart store %d: %v", i, err)
		}
		sendOne(2*i + 2)
	}
	testwait.For(t, 20*time.Second, "every message", func() bool {
		_, ids := tailSeqs(t, tr.stdout.String())
		return len(ids) >= len(want)
	})
	if code := tr.stop(t); code != 0 {
		t.Fatalf("tail exit %d", code)
	}
	seqs, ids := tailSeqs(t, tr.stdout.String())
	if strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Errorf("tail printed %v, want %v (no gap, no duplicate)", ids, want)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Errorf("seq %d after %d", seqs[i], seqs[i-1])
		}
	}
	if !strings.Contains(tr.stderr.String(), "reconnecting from checkpoint") {
		t.Errorf("tail never said it reconnected; stderr:\n%s", tr.stderr.String())
	}
	t.Logf("tail stderr:\n%s", tr.stderr.String())
}

func TestMessagesServerErrors(t *testing.T) {
	addr := msgCluster(t)
	sent := send(t, addr, "--from", "1803", "--to", "1804", "hello")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"send", "--from", "1801", "--group", "1899", "hi"}, "group 1899 does not exist"},
		{[]string{"read", "--user", "1801", "--conv", "5", "--up-to", "1"}, "user 1801 has no messages in direct conversation 5"},
		{[]string{"read", "--user", "1804", "--conv", strings.TrimPrefix(sent.conv, "direct:"), "--up-to", "999999999999"}, "up_to_seq"},
		{[]string{"group", "show", "1899"}, "group 1899 does not exist"},
		{[]string{"delete", "--user", "1801", "--msg", "1802.99999999"}, ""},
	} {
		r := seqctl(t, append([]string{"--addr", addr}, tc.args...)...)
		if r.code != 3 || !strings.Contains(r.stderr, tc.want) || strings.Contains(r.stderr, "usage:") {
			t.Errorf("%v: exit %d, stderr %q; want exit 3 (refused) with %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	// A cluster without a message store says so at once.
	r := seqctl(t, "--addr", sharedCluster(t), "unread", "--user", "1")
	if r.code != 1 || !strings.Contains(r.stderr, "has no message store") {
		t.Errorf("unread against a cluster without a store: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestMessagesBadInput(t *testing.T) {
	big := strings.Repeat("x", 64<<10+1)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"send", "--to", "2", "hi"}, "--from is required"},
		{[]string{"send", "--from", "1", "hi"}, "--to is required"},
		{[]string{"send", "--from", "0", "--to", "2", "hi"}, "--from 0: user ids start at 1"},
		{[]string{"send", "--from", "1", "--to", "0", "hi"}, "--to 0: user ids start at 1"},
		{[]string{"send", "--from", "x", "--to", "2", "hi"}, `--from "x" is not a user id`},
		{[]string{"send", "--from", "9223372036854775808", "--to", "2", "hi"}, "is too large; user ids are 1..2^63-1"},
		{[]string{"send", "--from", "1", "--to", "2,,3", "hi"}, "has an empty item"},
		{[]string{"send", "--from", "1", "--to", "2,3", "--to", "3", "hi"}, "--to lists user 3 twice"},
		{[]string{"send", "--from", "1", "--to", "1", "hi"}, "--to includes the sender 1"},
		{[]string{"send", "--from", "1", "--to", "2"}, "missing TEXT"},
		{[]string{"send", "--from", "1", "--to", "2", ""}, "TEXT is empty"},
		{[]string{"send", "--from", "1", "--to", "2", "hello", "world"}, "send takes one TEXT"},
		{[]string{"send", "--from", "1", "--to", "2", big}, "TEXT is 65537 bytes; the limit is 65536"},
		{[]string{"send", "--from", "1", "--to", "2", "--group", "3", "hi"}, "not both"},
		{[]string{"send", "--from", "1", "--group", "3", "--conv", "4", "hi"}, "--conv is for DIRECT messages"},
		{[]string{"send", "--from", "1", "--group", "0", "hi"}, "--group 0: group ids start at 1"},
		{[]string{"send", "--from", "1", "--to", "2", "--conv", "0", "hi"}, "--conv 0"},
		{[]string{"send", "--from", "1", "--to", "2", "--meta", "novalue", "hi"}, `--meta "novalue": want key=value`},
		{[]string{"send", "--from", "1", "--to", "2", "--meta", "=v", "hi"}, "the key is empty"},
		{[]string{"send", "--from", "1", "--to", "2", "--meta", "k=1", "--meta", "k=2", "hi"}, `--meta key "k" is given twice`},
		{[]string{"send", "--from", "1", "--to", "2", "--client-msg-id", "", "hi"}, "--client-msg-id is empty"},
		{[]string{"send", "--from", "1", "--to", "2", "--client-msg-id", strings.Repeat("c", 129), "hi"}, "--client-msg-id is 129 bytes"},
		{[]string{"send", "--from", "1", "--to", "2", "--bogus", "hi"}, "flag provided but not defined: -bogus"},
		{[]string{"sync"}, "--user is required"},
		{[]string{"sync", "--user", "0"}, "--user 0: user ids start at 1"},
		{[]string{"sync", "--user", "2", "--after", "-1"}, `invalid value "-1" for flag -after`},
		{[]string{"sync", "--user", "2", "extra"}, "sync takes no arguments"},
		{[]string{"sync", "--user", "2", "--limit", "0"}, "--limit 0: want 1..1000"},
		{[]string{"send", "--from", "1", "--from", "3", "--to", "2", "hi"}, "--from is given twice; give it once"},
		{[]string{"sync", "--user", "2", "--user", "3"}, "--user is given twice; give it once"},
		{[]string{"send", "--from", "1", "--to", "2", "hi", "--from", "3"}, "--from is given twice; give it once"},
		{[]string{"sync", "--user", "2", "--limit", "1001"}, "--limit 1001: want 1..1000"},
		{[]string{"history", "--user", "2", "--conv", "5", "--limit", "0"}, "--limit 0: want 1..1000"},
		{[]string{"group", "sync", "5", "--user", "2", "--limit", "4294967296"}, "--limit 4294967296: want 1..1000"},
		{[]string{"tail"}, "--user is required"},
		{[]string{"tail", "--user", "2", "--heartbeat", "10ms"}, "--heartbeat 10ms"},
		{[]string{"tail", "--user", "2", "--heartbeat", "6m"}, "--heartbeat 6m0s: give 100ms..5m"},
		{[]string{"unread"}, "--user is required"},
		{[]string{"read", "--user", "2", "--up-to", "5"}, "give --conv ID"},
		{[]string{"read", "--user", "2", "--conv", "1", "--group", "2", "--up-to", "5"}, "give --conv or --group, not both"},
		{[]string{"read", "--user", "2", "--conv", "1"}, "--up-to is required"},
		{[]string{"read", "--user", "2", "--conv", "abc", "--up-to", "1"}, `--conv "abc" is not a conversation id`},
		{[]string{"history", "--user", "2"}, "give --conv ID"},
		{[]string{"recall", "--from", "1"}, "--msg is required"},
		{[]string{"recall", "--from", "1", "--msg", "nonsense"}, `message_id "nonsense" is not a seqd message id`},
		{[]string{"delete", "--msg", "1.2"}, "--user is required"},
		{[]string{"delete", "--user", "2", "--msg", "0.5"}, "is not a seqd message id"},
		{[]string{"group"}, "group: missing subcommand"},
		{[]string{"group", "rename", "1"}, `unknown subcommand "rename"`},
		{[]string{"group", "create", "--owner", "1"}, "group create: missing G"},
		{[]string{"group", "create", "5"}, "--owner is required"},
		{[]string{"group", "create", "0", "--owner", "1"}, "G 0: group ids start at 1"},
		{[]string{"group", "create", "5", "6", "--owner", "1"}, "group create takes one G"},
		{[]string{"group", "add", "5"}, "group add: --members is required"},
		{[]string{"group", "remove", "5", "--members", "a"}, `--members "a" is not a user id`},
		{[]string{"group", "add", "5", "--members", "1", "--read-fanout"}, "flag provided but not defined: -read-fanout"},
		{[]string{"group", "show"}, "group show: missing G"},
		{[]string{"group", "sync", "5"}, "--user is required"},
	} {
		t.Run(strings.Join(tc.args, "_")[:min(60, len(strings.Join(tc.args, "_")))], func(t *testing.T) {
			// Nothing listens on --addr: exit 2 proves nothing was sent.
			r := seqctl(t, append([]string{"--addr", "127.0.0.1:1"}, tc.args...)...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2; stderr: %s", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "usage: seqctl ") {
				t.Errorf("stderr %q does not contain %q and a usage line", r.stderr, tc.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

func TestMessageHelp(t *testing.T) {
	out := ok(t, "send", "-h")
	for _, want := range []string{"--client-msg-id X", "--meta k=v", "FNV-1a", "sorted", "64 KiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("send -h lacks %q:\n%s", want, out)
		}
	}
	if out := ok(t, "tail", "-h"); !strings.Contains(out, "--verbose") || !strings.Contains(out, "reconnects") {
		t.Errorf("tail -h:\n%s", out)
	}
	if out := ok(t, "group", "create", "-h"); !strings.Contains(out, "--read-fanout") {
		t.Errorf("group create -h:\n%s", out)
	}
	if out := ok(t, "group", "-h"); !strings.Contains(out, "group sync G") {
		t.Errorf("group -h:\n%s", out)
	}
}

func TestQuoteBody(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"hi", `"hi"`},
		{"tab\there\nnl", `"tab\there\nnl"`},
		{"\xff\xfe", `"\xff\xfe"`},
		{strings.Repeat("é", 61), `"` + strings.Repeat("é", 60) + `"…(122 bytes)`},
		{strings.Repeat("a", 60), `"` + strings.Repeat("a", 60) + `"`},
	} {
		if got := quoteBody([]byte(tc.in)); got != tc.want {
			t.Errorf("quoteBody(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// A read answered by a replica without its leader is printed with a
// warning on stderr; a current one without.
func TestWarnMaybeStale(t *testing.T) {
	for _, stale := range []bool{false, true} {
		var out bytes.Buffer
		warnMaybeStale(&env{stderr: &out}, stale)
		if got := strings.Contains(out.String(), "leader could not be reached"); got != stale {
			t.Errorf("maybe_stale %v: stderr %q", stale, out.String())
		}
	}
}

// A stream whose replica has lost its leader warns once, and after
// staleReconnect such messages in a row tail reconnects; a message from a
// replica with a leader resets the count.
func TestTailCountsStaleMessages(t *testing.T) {
	var stdout, stderr bytes.Buffer
	tl := &tailer{e: &env{stdout: &stdout, stderr: &stderr}}
	stale := &seqdv1.SubscribeResponse{Heartbeat: true, Checkpoint: 4, MaybeStale: true}
	for i := 1; i <= 2; i++ {
		if err := tl.print(stale); err != nil || tl.stale != i {
			t.Fatalf("after %d stale heartbeats: count %d, %v", i, tl.stale, err)
		}
	}
	if n := strings.Count(stderr.String(), "has lost its shard's leader"); n != 1 {
		t.Fatalf("warned %d times: %q", n, stderr.String())
	}
	if err := tl.print(&seqdv1.SubscribeResponse{Heartbeat: true, Checkpoint: 4}); err != nil || tl.stale != 0 {
		t.Fatalf("a heartbeat with a leader left the count at %d, %v", tl.stale, err)
	}
	for range staleReconnect {
		tl.print(stale)
	}
	if tl.stale != staleReconnect || tl.cp != 4 {
		t.Fatalf("count %d, checkpoint %d", tl.stale, tl.cp)
	}
	if n := strings.Count(stderr.String(), "has lost its shard's leader"); n != 2 {
		t.Fatalf("warned %d times in two stale spells: %q", n, stderr.String())
	}
}
