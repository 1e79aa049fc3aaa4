package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/seqd/seqd/keyspace"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

// The store's documented default limits, checked here so an obviously bad
// request exits 2 without reaching the cluster. A server configured with
// other limits still has the last word on everything else.
const (
	maxBody        = 64 << 10
	maxClientMsgID = 128
	maxID          = keyspace.GroupBit - 1 // user and group ids are 1..2^63-1
)

// listFlag collects a repeatable flag; each value may hold a comma list.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }
func (l *listFlag) Repeatable()        {}

// parseID checks a user or group id given to flag name ("--from").
func parseID(cmd *command, name, what, s string) (uint64, error) {
	if s == "" {
		return 0, usagef(cmd, "%s: %s is required (a %s id)", cmd.name, name, what)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return 0, usagef(cmd, "%s %q is not a %s id; %s ids are 1..2^63-1", name, s, what, what)
	case err != nil || v > maxID:
		return 0, usagef(cmd, "%s %s is too large; %s ids are 1..2^63-1", name, s, what)
	case v == 0:
		return 0, usagef(cmd, "%s 0: %s ids start at 1 (0 is reserved)", name, what)
	}
	return v, nil
}

// parseIDs checks a list flag of user ids ("2,3" or repeated), rejecting
// repeats.
func parseIDs(cmd *command, name string, vals []string) ([]uint64, error) {
	var out []uint64
	for _, v := range vals {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				return nil, usagef(cmd, "%s %q has an empty item; write ids as 2,3,4", name, v)
			}
			id, err := parseID(cmd, name, "user", s)
			if err != nil {
				return nil, err
			}
			if slices.Contains(out, id) {
				return nil, usagef(cmd, "%s lists user %d twice", name, id)
			}
			out = append(out, id)
		}
	}
	return out, nil
}

// parseMeta turns repeated --meta k=v into a map.
func parseMeta(cmd *command, vals []string) (map[string]string, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	md := make(map[string]string, len(vals))
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		switch {
		case !ok:
			return nil, usagef(cmd, "--meta %q: want key=value", v)
		case k == "":
			return nil, usagef(cmd, "--meta %q: the key is empty", v)
		case !utf8.ValidString(k) || !utf8.ValidString(val):
			return nil, usagef(cmd, "--meta %q is not valid UTF-8", v)
		}
		if _, dup := md[k]; dup {
			return nil, usagef(cmd, "--meta key %q is given twice", k)
		}
		md[k] = val
	}
	return md, nil
}

// parseMessageID checks a --msg value.
func parseMessageID(cmd *command, s string) (string, error) {
	if s == "" {
		return "", usagef(cmd, "%s: --msg is required (a message id such as 1.12 or g50.3, as send and sync print)", cmd.name)
	}
	if _, _, err := keyspace.ParseMessageID(s); err != nil {
		return "", usagef(cmd, "--msg: %v", err)
	}
	return s, nil
}

// convFlags are --conv ID and --group G, naming one conversation.
type convFlags struct{ conv, group string }

func (f *convFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.conv, "conv", "", "a conversation `ID` as send and sync print it: 12 or direct:12 (or group:G)")
	fs.StringVar(&f.group, "group", "", "the conversation of group `G`")
}

// resolve returns the conversation the flags name; exactly one is needed.
func (f *convFlags) resolve(cmd *command) (*seqdv1.Conversation, error) {
	switch {
	case f.conv == "" && f.group == "":
		return nil, usagef(cmd, "%s: give --conv ID (a DIRECT conversation, as sync prints it) or --group G", cmd.name)
	case f.conv != "" && f.group != "":
		return nil, usagef(cmd, "%s: give --conv or --group, not both", cmd.name)
	case strings.HasPrefix(f.conv, "group:"):
		// As sync prints a group's conversation.
		g, err := parseID(cmd, "--conv group:G", "group", strings.TrimPrefix(f.conv, "group:"))
		if err != nil {
			return nil, err
		}
		return groupConv(g), nil
	case f.group != "":
		g, err := parseID(cmd, "--group", "group", f.group)
		if err != nil {
			return nil, err
		}
		return groupConv(g), nil
	}
	id, err := parseConvID(cmd, f.conv)
	if err != nil {
		return nil, err
	}
	return directConv(id), nil
}

// parseConvID checks a DIRECT conversation id: any 64-bit number but 0,
// bare or as sync prints it (direct:ID).
func parseConvID(cmd *command, s string) (uint64, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "direct:"), 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return 0, usagef(cmd, "--conv %s is too large; conversation ids are 1..2^64-1", s)
	case err != nil:
		return 0, usagef(cmd, "--conv %q is not a conversation id (a positive integer)", s)
	case v == 0:
		return 0, usagef(cmd, "--conv 0: conversation ids start at 1")
	}
	return v, nil
}

func directConv(id uint64) *seqdv1.Conversation {
	return &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT, Id: id}
}

func groupConv(g uint64) *seqdv1.Conversation {
	return &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_GROUP, Id: g}
}

// messages bootstraps a router from --addr and checks that the cluster
// has a message store, so a cluster without one fails at once rather than
// after --timeout of retries. The caller closes the client.
func messages(ctx context.Context, e *env, c *conn) (*router.Client, error) {
	bctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	rc, err := c.router(bctx)
	if err != nil {
		return nil, err
	}
	replicas := 0
	for _, sh := range rc.Table().GetShards() {
		replicas += len(sh.Replicas)
	}
	if replicas == 0 {
		rc.Close()
		return nil, fmt.Errorf("the cluster at %s has no message store (no store replica is registered in its routing table); `seqd demo` starts one", e.addr)
	}
	return rc, nil
}

// withMessages runs fn with a message-store client and a context that
// ends after --timeout. Commands that page use the parent context with
// --timeout per page instead, so a long inbox is not cut short.
func withMessages(ctx context.Context, e *env, fn func(ctx context.Context, c *conn, m *router.Messages) error) error {
	c, err := dial(e)
	if err != nil {
		return err
	}
	defer c.Close()
	rc, err := messages(ctx, e, c)
	if err != nil {
		return err
	}
	defer rc.Close()
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	return fn(ctx, c, rc.Messages())
}

// page runs one call of a paging command with its own --timeout.
func page[R any](ctx context.Context, e *env, call func(context.Context) (R, error)) (R, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	return call(ctx)
}

// maxPage is the most events or messages one page may ask for (the
// server's limit too).
const maxPage = 1000

// checkLimit refuses a --limit given as 0 or above maxPage (left out, the
// server's default applies).
func checkLimit(cmd *command, fs *flag.FlagSet, limit uint) error {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "limit" })
	if given && (limit == 0 || limit > maxPage) {
		return usagef(cmd, "--limit %d: want 1..%d, or leave it out for the default", limit, maxPage)
	}
	return nil
}
