package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/seqd/seqd/keyspace"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

const sendNotes = `A DIRECT message goes to the sender's inbox and to every recipient's, in
one conversation. Without --conv its id is derived from the participants
so that both sides share it: FNV-1a (64-bit) of the sorted ids of the
sender and the recipients, in decimal, joined by commas ("1,2"), with the
top bit cleared (0 becomes 1). "send --from 1 --to 2" and
"send --from 2 --to 1" therefore use the same conversation.

Without --client-msg-id send picks a random one and prints it; sending
again with the same --from and --client-msg-id is a retry: the cluster
answers with the first result and writes nothing ("duplicate true").
TEXT is at most 64 KiB.
`

const syncNotes = `Without --all, sync prints one page; pass the printed next checkpoint as
--after to continue. --all pages until the inbox is exhausted (--limit is
then the page size). A "history truncated" warning means events after
--after were removed by retention; resync from the earliest seq printed.
In --json output, bodies are base64 (the proto JSON mapping of bytes).
`

func runSend(ctx context.Context, e *env, cmd *command, args []string) error {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	from := fs.String("from", "", "the sender's user id `A` (required)")
	var to, meta listFlag
	fs.Var(&to, "to", "recipient user ids `B[,C...]` (repeatable); DIRECT messages only")
	conv := fs.String("conv", "", "the DIRECT conversation `ID` (default: derived from the participants, see below)")
	group := fs.String("group", "", "send to group `G` instead (no --to)")
	clientID := fs.String("client-msg-id", "", "the idempotency key `X`, unique per sender, 1..128 bytes (default: random, printed)")
	fs.Var(&meta, "meta", "metadata `k=v` (repeatable)")
	pos, err := parseArgs(cmd, e, fs, args)
	if err != nil {
		return err
	}
	req := &seqdv1.SendRequest{}
	if req.Sender, err = parseID(cmd, "--from", "user", *from); err != nil {
		return err
	}
	derived := false
	switch {
	case *group != "" && len(to) > 0:
		return usagef(cmd, "send: give --to (a DIRECT message) or --group (a GROUP message), not both")
	case *group != "" && *conv != "":
		return usagef(cmd, "send: --conv is for DIRECT messages; a group's conversation is the group itself")
	case *group != "":
		g, err := parseID(cmd, "--group", "group", *group)
		if err != nil {
			return err
		}
		req.Conversation = groupConv(g)
	case len(to) == 0:
		return usagef(cmd, "send: --to is required (recipient user ids, such as --to 2,3), or --group G for a group message")
	default:
		if req.Recipients, err = parseIDs(cmd, "--to", to); err != nil {
			return err
		}
		for _, u := range req.Recipients {
			if u == req.Sender {
				return usagef(cmd, "send: --to includes the sender %d; the sender gets its own copy anyway", u)
			}
		}
		id := keyspace.DirectConversationID(req.Sender, req.Recipients)
		derived = *conv == ""
		if !derived {
			if id, err = parseConvID(cmd, *conv); err != nil {
				return err
			}
		}
		req.Conversation = directConv(id)
	}
	if req.Metadata, err = parseMeta(cmd, meta); err != nil {
		return err
	}
	switch {
	case len(pos) == 0:
		return usagef(cmd, "send: missing TEXT (the message body; quote it)")
	case len(pos) > 1:
		return usagef(cmd, "send takes one TEXT; got %q (quote a text with spaces)", pos)
	case pos[0] == "":
		return usagef(cmd, "send: TEXT is empty; send at least one byte")
	case len(pos[0]) > maxBody:
		return usagef(cmd, "send: TEXT is %d bytes; the limit is %d (64 KiB)", len(pos[0]), maxBody)
	}
	req.Body = []byte(pos[0])
	randomID := !flagSet(fs, "client-msg-id")
	req.ClientMsgId = *clientID
	switch {
	case randomID:
		req.ClientMsgId = randomClientID()
	case req.ClientMsgId == "":
		return usagef(cmd, "send: --client-msg-id is empty; give 1..%d bytes or leave it out for a random one", maxClientMsgID)
	case len(req.ClientMsgId) > maxClientMsgID:
		return usagef(cmd, "send: --client-msg-id is %d bytes; the limit is %d", len(req.ClientMsgId), maxClientMsgID)
	case !utf8.ValidString(req.ClientMsgId):
		return usagef(cmd, "send: --client-msg-id is not valid UTF-8")
	}

	return withMessages(ctx, e, func(ctx context.Context, c *conn, m *router.Messages) error {
		resp, err := m.Send(ctx, req)
		if err != nil {
			return c.explain(err)
		}
		if e.json {
			out, err := protoMap(resp)
			if err != nil {
				return err
			}
			out["client_msg_id"] = req.ClientMsgId
			if out["conversation"], err = protoMap(req.Conversation); err != nil {
				return err
			}
			return writeJSON(e.stdout, out)
		}
		return printSend(e.stdout, req, resp, randomID, derived)
	})
}

func printSend(w io.Writer, req *seqdv1.SendRequest, resp *seqdv1.SendResponse, randomID, derived bool) error {
	tw := newTable(w)
	row(tw, "message", resp.MessageId)
	conv := convString(req.Conversation)
	if derived {
		conv += " (derived from the participants; see send -h)"
	}
	row(tw, "conversation", conv)
	id := req.ClientMsgId
	if randomID {
		id += fmt.Sprintf(" (random; send again with --client-msg-id %s to see dedup)", req.ClientMsgId)
	}
	row(tw, "client msg id", id)
	dup := "false"
	if resp.Duplicate {
		dup = "true (a retry: this is the first send's result and nothing new was written)"
	}
	row(tw, "duplicate", dup)
	row(tw, "sender seq", queued(resp.SenderSeq))
	if resp.GroupSeq != 0 {
		row(tw, "group seq", resp.GroupSeq)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	row(tw, "DELIVERED TO", "SEQ")
	for _, d := range resp.Deliveries {
		row(tw, d.User, queued(d.Seq))
	}
	if len(resp.Deliveries) == 0 {
		if resp.GroupSeq != 0 {
			row(tw, "(read fanout: members pull the group timeline)")
		} else {
			row(tw, "(nobody else)")
		}
	}
	return tw.Flush()
}

// queued prints a delivery seq; 0 means it waits in the outbox for
// another shard.
func queued(seq uint64) string {
	if seq == 0 {
		return "queued (another shard applies it)"
	}
	return fmt.Sprint(seq)
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func randomClientID() string {
	var b [8]byte
	rand.Read(b[:])
	return "seqctl-" + hex.EncodeToString(b[:])
}

func runSync(ctx context.Context, e *env, cmd *command, args []string) error {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	user := fs.String("user", "", "the user `B` whose inbox to read (required)")
	after := fs.Uint64("after", 0, "return events after checkpoint `S` (0 = from the start)")
	limit := fs.Uint("limit", 0, "at most `N` events per page, 1..1000 (default 100)")
	all := fs.Bool("all", false, "page until the inbox is exhausted")
	if err := flagsOnly(cmd, e, fs, args); err != nil {
		return err
	}
	u, err := parseID(cmd, "--user", "user", *user)
	if err != nil {
		return err
	}
	if err := checkLimit(cmd, fs, *limit); err != nil {
		return err
	}
	return withMessages(ctx, e, func(_ context.Context, c *conn, m *router.Messages) error {
		out := &seqdv1.SyncResponse{NextCheckpoint: *after}
		cp := *after
		for {
			resp, err := page(ctx, e, func(ctx context.Context) (*seqdv1.SyncResponse, error) {
				return m.Sync(ctx, &seqdv1.SyncRequest{User: u, AfterSeq: cp, Limit: uint32(*limit)})
			})
			if err != nil {
				return c.explain(err)
			}
			out.Events = append(out.Events, resp.Events...)
			out.HasMore = resp.HasMore
			out.Header = resp.Header
			out.MaybeStale = out.MaybeStale || resp.MaybeStale
			if resp.HistoryTruncated && !out.HistoryTruncated {
				out.HistoryTruncated, out.EarliestSeq = true, resp.EarliestSeq
			}
			if resp.NextCheckpoint > out.NextCheckpoint {
				out.NextCheckpoint = resp.NextCheckpoint
			}
			// A page that does not advance would loop forever.
			if !*all || !resp.HasMore || resp.NextCheckpoint <= cp {
				break
			}
			cp = resp.NextCheckpoint
		}
		if out.HistoryTruncated {
			fmt.Fprintf(e.stderr, "seqctl: warning: history truncated: events after %d were removed by retention; the earliest retained seq is %d\n", *after, out.EarliestSeq)
		}
		warnMaybeStale(e, out.MaybeStale)
		if e.json {
			return writeProto(e.stdout, out)
		}
		if len(out.Events) == 0 {
			fmt.Fprintf(e.stdout, "(no events after %d)\n", *after)
		} else if err := writeEvents(e.stdout, out.Events); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "\nnext checkpoint %d\n", out.NextCheckpoint)
		if out.HasMore {
			fmt.Fprintf(e.stdout, "more events follow: run again with --after %d (or use --all)\n", out.NextCheckpoint)
		}
		return nil
	})
}

// warnMaybeStale tells the user that a replica without its leader
// answered (maybe_stale).
func warnMaybeStale(e *env, stale bool) {
	if stale {
		fmt.Fprintln(e.stderr, "seqctl: warning: the shard's leader could not be reached; a replica answered from what it has applied, which may lack the newest writes")
	}
}

func runUnread(ctx context.Context, e *env, cmd *command, args []string) error {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	user := fs.String("user", "", "the user `B` (required)")
	if err := flagsOnly(cmd, e, fs, args); err != nil {
		return err
	}
	u, err := parseID(cmd, "--user", "user", *user)
	if err != nil {
		return err
	}
	return withMessages(ctx, e, func(ctx context.Context, c *conn, m *router.Messages) error {
		resp, err := m.UnreadAll(ctx, u)
		if err != nil {
			return c.explain(err)
		}
		warnMaybeStale(e, resp.MaybeStale)
		if e.json {
			return writeProto(e.stdout, resp)
		}
		tw := newTable(e.stdout)
		row(tw, "CONVERSATION", "UNREAD", "READ UP TO")
		for _, cu := range resp.Conversations {
			row(tw, convString(cu.Conversation), cu.Count, cu.ReadUpTo)
		}
		if len(resp.Conversations) == 0 {
			row(tw, "(no unread conversations)")
		}
		row(tw, "total", resp.Total)
		return tw.Flush()
	})
}

func runRead(ctx context.Context, e *env, cmd *command, args []string) error {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	user := fs.String("user", "", "the reader `B` (required)")
	var cf convFlags
	cf.register(fs)
	upTo := fs.Uint64("up-to", 0, "read up to inbox seq `S` (for a read-fanout group, its group seq; required)")
	if err := flagsOnly(cmd, e, fs, args); err != nil {
		return err
	}
	u, err := parseID(cmd, "--user", "user", *user)
	if err != nil {
		return err
	}
	conv, err := cf.resolve(cmd)
	if err != nil {
		return err
	}
	if *upTo == 0 {
		return usagef(cmd, "read: --up-to is required and at least 1: the seq read up to, as sync prints it")
	}
	return withMessages(ctx, e, func(ctx context.Context, c *conn, m *router.Messages) error {
		resp, err := m.MarkRead(ctx, &seqdv1.MarkReadRequest{User: u, Conversation: conv, UpToSeq: *upTo})
		if err != nil {
			return c.explain(err)
		}
		if e.json {
			return writeProto(e.stdout, resp)
		}
		if resp.Seq == 0 {
			_, err = fmt.Fprintf(e.stdout, "user %d had read %s up to %d or further: nothing changed; unread there %d, in total %d\n",
				u, convString(conv), *upTo, resp.Unread, resp.TotalUnread)
			return err
		}
		_, err = fmt.Fprintf(e.stdout, "user %d read %s up to %d (read marker seq %d); unread there %d, in total %d\n",
			u, convString(conv), *upTo, resp.Seq, resp.Unread, resp.TotalUnread)
		return err
	})
}

func runHistory(ctx context.Context, e *env, cmd *command, args []string) error {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	user := fs.String("user", "", "the user `B` whose copy to read (required)")
	var cf convFlags
	cf.register(fs)
	before := fs.Uint64("before", 0, "page backwards from seq `S`, exclusive (0 = from the newest)")
	limit := fs.Uint("limit", 0, "at most `N` messages, 1..1000 (default 50)")
	if err := flagsOnly(cmd, e, fs, args); err != nil {
		return err
	}
	u, err := parseID(cmd, "--user", "user", *user)
	if err != nil {
		return err
	}
	conv, err := cf.resolve(cmd)
	if err != nil {
		return err
	}
	if err := checkLimit(cmd, fs, *limit); err != nil {
		return err
	}
	return withMessages(ctx, e, func(ctx context.Context, c *conn, m *router.Messages) error {
		resp, err := m.History(ctx, &seqdv1.HistoryRequest{User: u, Conversation: conv, BeforeSeq: *before, Limit: uint32(*limit)})
		if err != nil {
			return c.explain(err)
		}
		warnMaybeStale(e, resp.MaybeStale)
		if conv.Type == seqdv1.ConversationType_CONVERSATION_TYPE_GROUP {
			// A read-fanout group's messages are not in the inbox.
			if g, err := m.GetGroup(ctx, &seqdv1.GetGroupRequest{GroupId: conv.Id}); err == nil && g.Group.GetReadFanout() {
				fmt.Fprintf(e.stderr, "seqctl: note: group %d uses read fanout: its messages are in the group timeline (seqctl group history %d --user %d); history lists only user %d's own sends to it\n",
					conv.Id, conv.Id, u, u)
			}
		}
		if e.json {
			return writeProto(e.stdout, resp)
		}
		if len(resp.Events) == 0 {
			fmt.Fprintf(e.stdout, "(no messages in %s for user %d)\n", convString(conv), u)
		} else if err := writeEvents(e.stdout, resp.Events); err != nil {
			return err
		}
		if resp.NextBeforeSeq != 0 {
			fmt.Fprintf(e.stdout, "\nolder messages: run again with --before %d\n", resp.NextBeforeSeq)
		}
		return nil
	})
}

// userAndMessage parses the flags of a command on one user's copy of one
// message (recall, delete).
func userAndMessage(e *env, cmd *command, args []string, userFlag, userHelp, msgHelp string) (uint64, string, error) {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	user := fs.String(userFlag, "", userHelp)
	msg := fs.String("msg", "", msgHelp)
	if err := flagsOnly(cmd, e, fs, args); err != nil {
		return 0, "", err
	}
	u, err := parseID(cmd, "--"+userFlag, "user", *user)
	if err != nil {
		return 0, "", err
	}
	id, err := parseMessageID(cmd, *msg)
	if err != nil {
		return 0, "", err
	}
	return u, id, nil
}

func runRecall(ctx context.Context, e *env, cmd *command, args []string) error {
	sender, id, err := userAndMessage(e, cmd, args, "from", "the message's sender `A` (required)", "the message `ID`, as send prints it (required)")
	if err != nil {
		return err
	}
	return withMessages(ctx, e, func(ctx context.Context, c *conn, m *router.Messages) error {
		resp, err := m.Recall(ctx, &seqdv1.RecallRequest{Sender: sender, MessageId: id})
		if err != nil {
			return c.explain(err)
		}
		if e.json {
			return writeProto(e.stdout, resp)
		}
		if resp.RecalledCopies == 0 {
			_, err = fmt.Fprintf(e.stdout, "message %s: no copy here left to recall (it was recalled before, or its copies are on other shards and follow)\n", id)
			return err
		}
		_, err = fmt.Fprintf(e.stdout, "message %s recalled: %d copies now (copies on other shards follow)\n", id, resp.RecalledCopies)
		return err
	})
}

func runDelete(ctx context.Context, e *env, cmd *command, args []string) error {
	u, id, err := userAndMessage(e, cmd, args, "user", "the user `B` whose copy to hide (required)", "the message `ID`, as send and sync print it (required)")
	if err != nil {
		return err
	}
	return withMessages(ctx, e, func(ctx context.Context, c *conn, m *router.Messages) error {
		resp, err := m.Delete(ctx, &seqdv1.DeleteRequest{User: u, MessageId: id})
		if err != nil {
			return c.explain(err)
		}
		if e.json {
			return writeProto(e.stdout, resp)
		}
		if resp.Seq == 0 {
			_, err = fmt.Fprintf(e.stdout, "message %s was deleted from user %d's inbox before; nothing changed\n", id, u)
			return err
		}
		_, err = fmt.Fprintf(e.stdout, "message %s deleted from user %d's inbox (delete event seq %d)\n", id, u, resp.Seq)
		return err
	})
}
