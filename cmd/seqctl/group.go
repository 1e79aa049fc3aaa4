package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

func runGroup(ctx context.Context, e *env, cmd *command, args []string) error {
	if len(args) == 0 {
		return usagef(cmd, "group: missing subcommand; use create, add, remove, show, sync or history")
	}
	sub, rest := args[0], args[1:]
	switch {
	case isHelp(sub):
		printCommandHelp(cmd, nil, e.stdout)
		return errHelp
	case sub == "create":
		return runGroupCreate(ctx, e, cmd, rest)
	case sub == "add":
		return runGroupMembers(ctx, e, cmd, "group add", rest)
	case sub == "remove":
		return runGroupMembers(ctx, e, cmd, "group remove", rest)
	case sub == "show":
		return runGroupShow(ctx, e, cmd, rest)
	case sub == "sync":
		return runGroupSync(ctx, e, cmd, rest)
	case sub == "history":
		return runGroupHistory(ctx, e, cmd, rest)
	default:
		return usagef(cmd, "group: unknown subcommand %q; use create, add, remove, show, sync or history", sub)
	}
}

// groupArg checks the one positional G of a group subcommand.
func groupArg(cmd *command, what string, pos []string) (uint64, error) {
	switch {
	case len(pos) == 0:
		return 0, usagef(cmd, "%s: missing G (a group id, 1..2^63-1)", what)
	case len(pos) > 1:
		return 0, usagef(cmd, "%s takes one G; got %q", what, pos)
	}
	return parseID(cmd, what+": G", "group", pos[0])
}

func runGroupCreate(ctx context.Context, e *env, cmd *command, args []string) error {
	fs := flag.NewFlagSet("group create", flag.ContinueOnError)
	owner := fs.String("owner", "", "the owner's user id `A`, also a member (required)")
	var members listFlag
	fs.Var(&members, "members", "the other members `a,b,c` (repeatable)")
	readFanout := fs.Bool("read-fanout", false, "members pull one group timeline instead of getting a copy each (fixed at creation; large groups get it anyway)")
	pos, err := parseArgs(cmd, e, fs, args)
	if err != nil {
		return err
	}
	g, err := groupArg(cmd, "group create", pos)
	if err != nil {
		return err
	}
	req := &seqdv1.CreateGroupRequest{GroupId: g, ReadFanout: *readFanout}
	if req.Owner, err = parseID(cmd, "--owner", "user", *owner); err != nil {
		return err
	}
	if req.Members, err = parseIDs(cmd, "--members", members); err != nil {
		return err
	}
	return withMessages(ctx, e, func(ctx context.Context, c *conn, m *router.Messages) error {
		resp, err := m.CreateGroup(ctx, req)
		if err != nil {
			return c.explain(err)
		}
		if e.json {
			return writeProto(e.stdout, resp)
		}
		return printGroup(e.stdout, resp.Group)
	})
}

// runGroupMembers is group add and group remove.
func runGroupMembers(ctx context.Context, e *env, cmd *command, what string, args []string) error {
	add := what == "group add"
	fs := flag.NewFlagSet(what, flag.ContinueOnError)
	var members listFlag
	fs.Var(&members, "members", "the users `a,b` (repeatable; required)")
	var withHistory *bool
	if add {
		withHistory = fs.Bool("with-history", false, "let the new members read the group's messages from before they joined (read-fanout groups only; their unread count starts at the join either way)")
	}
	pos, err := parseArgs(cmd, e, fs, args)
	if err != nil {
		return err
	}
	g, err := groupArg(cmd, what, pos)
	if err != nil {
		return err
	}
	if len(members) == 0 {
		return usagef(cmd, "%s: --members is required (user ids, such as --members 4,5)", what)
	}
	users, err := parseIDs(cmd, "--members", members)
	if err != nil {
		return err
	}
	return withMessages(ctx, e, func(ctx context.Context, c *conn, m *router.Messages) error {
		var info *seqdv1.GroupInfo
		if add {
			resp, err := m.AddMembers(ctx, &seqdv1.AddMembersRequest{GroupId: g, Members: users, WithHistory: *withHistory})
			if err != nil {
				return c.explain(err)
			}
			if e.json {
				return writeProto(e.stdout, resp)
			}
			info = resp.Group
		} else {
			resp, err := m.RemoveMembers(ctx, &seqdv1.RemoveMembersRequest{GroupId: g, Members: users})
			if err != nil {
				return c.explain(err)
			}
			if e.json {
				return writeProto(e.stdout, resp)
			}
			info = resp.Group
		}
		return printGroup(e.stdout, info)
	})
}

func runGroupShow(ctx context.Context, e *env, cmd *command, args []string) error {
	pos, err := parseArgs(cmd, e, flag.NewFlagSet("group show", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	g, err := groupArg(cmd, "group show", pos)
	if err != nil {
		return err
	}
	return withMessages(ctx, e, func(ctx context.Context, c *conn, m *router.Messages) error {
		resp, err := m.GetGroup(ctx, &seqdv1.GetGroupRequest{GroupId: g})
		if err != nil {
			return c.explain(err)
		}
		warnMaybeStale(e, resp.MaybeStale)
		if e.json {
			return writeProto(e.stdout, resp)
		}
		return printGroup(e.stdout, resp.Group)
	})
}

func runGroupSync(ctx context.Context, e *env, cmd *command, args []string) error {
	fs := flag.NewFlagSet("group sync", flag.ContinueOnError)
	user := fs.String("user", "", "the member `B` reading (required)")
	after := fs.Uint64("after", 0, "entries after group seq `S` (0 = from when B joined)")
	limit := fs.Uint("limit", 0, "at most `N` entries per page, 1..1000 (default 100)")
	all := fs.Bool("all", false, "page until the timeline is exhausted")
	g, u, err := memberRead(cmd, e, fs, "group sync", args, user, limit)
	if err != nil {
		return err
	}
	return withMessages(ctx, e, func(_ context.Context, c *conn, m *router.Messages) error {
		out := &seqdv1.SyncGroupResponse{NextCheckpoint: *after}
		cp := *after
		for {
			resp, err := page(ctx, e, func(ctx context.Context) (*seqdv1.SyncGroupResponse, error) {
				return m.SyncGroup(ctx, &seqdv1.SyncGroupRequest{User: u, GroupId: g, AfterGseq: cp, Limit: uint32(*limit)})
			})
			if err != nil {
				return c.explain(err)
			}
			out.Events = append(out.Events, resp.Events...)
			out.HasMore = resp.HasMore
			out.NextCheckpoint = max(out.NextCheckpoint, resp.NextCheckpoint)
			out.MaybeStale = out.MaybeStale || resp.MaybeStale
			if resp.HistoryTruncated && !out.HistoryTruncated {
				out.HistoryTruncated, out.EarliestGseq = true, resp.EarliestGseq
			}
			if !*all || !resp.HasMore || resp.NextCheckpoint <= cp {
				break
			}
			cp = resp.NextCheckpoint
		}
		if out.HistoryTruncated {
			fmt.Fprintf(e.stderr, "seqctl: warning: history truncated: timeline entries after group seq %d were removed by retention; the timeline now starts at group seq %d\n", *after, out.EarliestGseq)
		}
		warnMaybeStale(e, out.MaybeStale)
		if e.json {
			return writeProto(e.stdout, out)
		}
		if len(out.Events) == 0 {
			fmt.Fprintf(e.stdout, "(no timeline entries for user %d after group seq %d)\n", u, *after)
		} else if err := writeEvents(e.stdout, out.Events); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "\nnext group checkpoint %d\n", out.NextCheckpoint)
		if out.HasMore {
			fmt.Fprintf(e.stdout, "more entries follow: run again with --after %d (or use --all)\n", out.NextCheckpoint)
		}
		return nil
	})
}

func printGroup(w io.Writer, g *seqdv1.GroupInfo) error {
	if g == nil {
		return fmt.Errorf("the cluster returned no group")
	}
	fanout := "write (every member's inbox gets a copy)"
	if g.ReadFanout {
		fanout = "read (members pull the timeline: seqctl group sync)"
	}
	tw := newTable(w)
	row(tw, "group", g.GroupId)
	row(tw, "owner", g.Owner)
	row(tw, "fanout", fanout)
	if g.ReadFanout {
		row(tw, "last group seq", g.LastGroupSeq) // write fanout has none
	}
	row(tw, "members", len(g.Members))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	row(tw, "MEMBER", "SEES GROUP SEQS AFTER")
	for _, m := range g.Members {
		row(tw, m.User, m.JoinedAfterGseq)
	}
	return tw.Flush()
}

// memberRead parses the arguments of a read of group G by member --user
// (group sync, group history): G, the user and the page limit.
func memberRead(cmd *command, e *env, fs *flag.FlagSet, what string, args []string, user *string, limit *uint) (g, u uint64, err error) {
	pos, err := parseArgs(cmd, e, fs, args)
	if err != nil {
		return 0, 0, err
	}
	if g, err = groupArg(cmd, what, pos); err != nil {
		return 0, 0, err
	}
	if u, err = parseID(cmd, "--user", "user", *user); err != nil {
		return 0, 0, err
	}
	return g, u, checkLimit(cmd, fs, *limit)
}

func runGroupHistory(ctx context.Context, e *env, cmd *command, args []string) error {
	fs := flag.NewFlagSet("group history", flag.ContinueOnError)
	user := fs.String("user", "", "the member `B` reading (required)")
	before := fs.Uint64("before", 0, "page backwards from group seq `S`, exclusive (0 = from the newest)")
	limit := fs.Uint("limit", 0, "at most `N` entries, 1..1000 (default 50)")
	g, u, err := memberRead(cmd, e, fs, "group history", args, user, limit)
	if err != nil {
		return err
	}
	return withMessages(ctx, e, func(ctx context.Context, c *conn, m *router.Messages) error {
		resp, err := m.GroupHistory(ctx, &seqdv1.GroupHistoryRequest{User: u, GroupId: g, BeforeGseq: *before, Limit: uint32(*limit)})
		if err != nil {
			return c.explain(err)
		}
		warnMaybeStale(e, resp.MaybeStale)
		if e.json {
			return writeProto(e.stdout, resp)
		}
		if len(resp.Events) == 0 {
			fmt.Fprintf(e.stdout, "(no timeline entries of group %d for user %d)\n", g, u)
		} else if err := writeEvents(e.stdout, resp.Events); err != nil {
			return err
		}
		if resp.NextBeforeGseq != 0 {
			fmt.Fprintf(e.stdout, "\nolder entries: run again with --before %d\n", resp.NextBeforeGseq)
		}
		return nil
	})
}
