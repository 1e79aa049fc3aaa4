package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/seqd/seqd/internal/nodeid"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

func runStatus(ctx context.Context, e *env, cmd *command, args []string) error {
	if err := flagsOnly(cmd, e, flag.NewFlagSet(cmd.name, flag.ContinueOnError), args); err != nil {
		return err
	}
	ctx, c, release, err := dialTimed(ctx, e)
	if err != nil {
		return err
	}
	defer release()
	st, err := c.admin().Status(ctx, &seqdv1.StatusRequest{})
	if err != nil {
		return c.explain(err)
	}
	if e.json {
		return writeProto(e.stdout, st)
	}
	return printStatus(e, st)
}

func printStatus(e *env, st *seqdv1.StatusResponse) error {
	leader := "none elected; this is one arbiter's own view"
	if st.LeaderId != "" {
		leader = st.LeaderId
		if st.LeaderAddr != "" {
			leader += " at " + st.LeaderAddr
		}
		if st.Stale {
			leader += " (no answer from it caught up: this is one arbiter's own view, which may lack recent changes)"
		}
	}
	tw := newTable(e.stdout)
	row(tw, "cluster", orDash(st.ClusterId))
	row(tw, "dc", orDash(st.Dc))
	row(tw, "leader", leader)
	row(tw, "routing version", st.RoutingVersion)
	// A dead AllocSvr keeps its slots until a live one takes them: with
	// none alive they are assigned, yet no one serves them.
	expired := uint32(0)
	for _, a := range st.Allocsvrs {
		if a.Lease == "expired" {
			expired += a.Slots
		}
	}
	slots := fmt.Sprintf("%d (%d unassigned, %d moving)", st.NumSlots, st.UnassignedSlots, st.MovingSlots)
	if expired > 0 {
		slots = fmt.Sprintf("%d (%d unassigned, %d moving, %d held by AllocSvrs whose lease ran out: not served)", st.NumSlots, st.UnassignedSlots, st.MovingSlots, expired)
	}
	row(tw, "slots", slots)
	row(tw, "lease", millis(st.LeaseMs))
	row(tw, "step", st.Step)
	row(tw, "section size", fmt.Sprintf("%d keys", st.SectionSize))
	row(tw, "sections used", st.Sections)
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(e.stdout)
	tw = newTable(e.stdout)
	row(tw, "ARBITER", "ROLE", "RAFT ADDR", "GRPC ADDR", "GOSSIP")
	for _, a := range st.Arbiters {
		row(tw, a.Id, a.Role, orDash(a.RaftAddr), orDash(a.GrpcAddr), orDash(a.Gossip))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(e.stdout)
	tw = newTable(e.stdout)
	row(tw, "ALLOCSVR", "ADDR", "STATE", "SLOTS", "LEASE", "LAST RENEWAL", "GOSSIP", "INCARNATION")
	for _, a := range st.Allocsvrs {
		// Only the leader times leases; elsewhere the renewal age is unknown.
		renewal := "-"
		if a.Lease != "unknown" && a.Lease != "" {
			renewal = fmt.Sprintf("%dms ago", a.LastRenewalMsAgo)
		}
		state := nodeState(a.State)
		if a.Lease == "expired" && a.State == seqdv1.NodeState_NODE_STATE_ACTIVE {
			state += " (not serving)" // registered, but its lease ran out
		}
		row(tw, a.Id, orDash(a.Addr), state, a.Slots, orDash(a.Lease), renewal, orDash(a.Gossip), a.Incarnation)
	}
	if len(st.Allocsvrs) == 0 {
		row(tw, "(none registered)")
	}
	return tw.Flush()
}

// drainPoll is how often drain --wait checks the node's slot count.
const drainPoll = 100 * time.Millisecond

func runDrain(ctx context.Context, e *env, cmd *command, args []string) error {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	wait := fs.Bool("wait", false, "return only once the node owns no slots")
	waitTimeout := fs.Duration("wait-timeout", 2*time.Minute, "give up waiting after `D`")
	pos, err := parseArgs(cmd, e, fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) == 0:
		return usagef(cmd, "drain: missing NODE (an AllocSvr id; `seqctl status` lists them)")
	case len(pos) > 1:
		return usagef(cmd, "drain takes one NODE; got %q", pos)
	case *waitTimeout <= 0:
		return usagef(cmd, "--wait-timeout %v: give a positive duration such as 2m", *waitTimeout)
	}
	waitTimeoutSet := false
	fs.Visit(func(f *flag.Flag) { waitTimeoutSet = waitTimeoutSet || f.Name == "wait-timeout" })
	if waitTimeoutSet && !*wait {
		return usagef(cmd, "drain: --wait-timeout is for use with --wait, which is not given")
	}
	node := pos[0]
	if err := nodeid.Validate(node); err != nil {
		return usagef(cmd, "drain: %v", err)
	}
	c, err := dial(e)
	if err != nil {
		return err
	}
	defer c.Close()

	// Record the drain and return at once: the wait below polls Status, so
	// it survives an arbiter leader change that a server-side wait would not.
	rctx, cancel := context.WithTimeout(ctx, e.timeout)
	resp, err := c.admin().Drain(rctx, &seqdv1.DrainRequest{Node: node})
	cancel()
	if err != nil {
		return c.explain(err)
	}
	remaining := resp.RemainingSlots
	if *wait && remaining > 0 {
		if !e.json {
			fmt.Fprintf(e.stdout, "%s: draining; %d slots remaining\n", node, remaining)
		}
		remaining, err = waitDrained(ctx, e, c, node, remaining, *waitTimeout)
	}
	if e.json {
		if jerr := writeProto(e.stdout, &seqdv1.DrainResponse{RemainingSlots: remaining}); jerr != nil {
			return jerr
		}
	}
	if err != nil {
		return err
	}
	if e.json {
		return nil
	}
	switch {
	case remaining == 0:
		fmt.Fprintf(e.stdout, "%s: drained; 0 slots remaining\n", node)
	default:
		fmt.Fprintf(e.stdout, "%s: draining; %d slots remaining (add --wait to wait until none remain)\n", node, remaining)
	}
	return nil
}

func runUndrain(ctx context.Context, e *env, cmd *command, args []string) error {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	pos, err := parseArgs(cmd, e, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef(cmd, "undrain takes one NODE (an AllocSvr id; `seqctl status` lists them)")
	}
	node := pos[0]
	if err := nodeid.Validate(node); err != nil {
		return usagef(cmd, "undrain: %v", err)
	}
	c, err := dial(e)
	if err != nil {
		return err
	}
	defer c.Close()
	rctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	if _, err := c.admin().Undrain(rctx, &seqdv1.UndrainRequest{Node: node}); err != nil {
		return c.explain(err)
	}
	if e.json {
		return writeProto(e.stdout, &seqdv1.UndrainRequest{Node: node})
	}
	fmt.Fprintf(e.stdout, "%s: active; the arbiters will give it slots again\n", node)
	return nil
}

// waitDrained polls Status until node owns no slots, printing each change,
// and returns the slots it still owns when it stops.
func waitDrained(ctx context.Context, e *env, c *conn, node string, remaining uint32, timeout time.Duration) (uint32, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	var lastErr error
	for {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return remaining, fmt.Errorf("interrupted with %d slots still on %s; the drain goes on in the background", remaining, node)
			}
			msg := fmt.Sprintf("drain %s: timed out after %v with %d slots still on it; the drain goes on in the background (watch `seqctl status`). Is there another active AllocSvr to take them?", node, timeout, remaining)
			if lastErr != nil {
				msg += fmt.Sprintf(" Last error: %v", lastErr)
			}
			return remaining, errors.New(msg)
		case <-t.C:
		}
		rctx, rcancel := context.WithTimeout(ctx, e.timeout)
		st, err := c.admin().Status(rctx, &seqdv1.StatusRequest{})
		rcancel()
		if err != nil {
			// A leader election makes Status fail for a moment; keep going.
			if ctx.Err() == nil {
				lastErr = c.explain(err)
			}
			continue
		}
		if st.Stale {
			// One arbiter's own view (a leader still applying its log
			// after an election, say) may not have the node, or may
			// show it with slots it no longer owns, or none yet.
			lastErr = errors.New("the arbiters gave only a stale view (no caught-up leader answered)")
			continue
		}
		lastErr = nil
		var found *seqdv1.AllocSvrStatus
		for _, a := range st.Allocsvrs {
			if a.Id == node {
				found = a
			}
		}
		if found == nil {
			return remaining, fmt.Errorf("drain %s: the node is no longer registered; check `seqctl routes` for its slots", node)
		}
		if found.Slots != remaining && found.Slots > 0 && !e.json {
			fmt.Fprintf(e.stdout, "%s: draining; %d slots remaining\n", node, found.Slots)
		}
		remaining = found.Slots
		if remaining == 0 {
			return 0, nil
		}
	}
}

func runArbiter(ctx context.Context, e *env, cmd *command, args []string) error {
	if len(args) == 0 {
		return usagef(cmd, "arbiter: missing subcommand; use join or remove")
	}
	switch sub := args[0]; {
	case isHelp(sub):
		printCommandHelp(cmd, nil, e.stdout)
		return errHelp
	case sub == "join":
		return runArbiterJoin(ctx, e, cmd, args[1:])
	case sub == "remove":
		return runArbiterRemove(ctx, e, cmd, args[1:])
	default:
		return usagef(cmd, "arbiter: unknown subcommand %q; use join or remove", sub)
	}
}

func runArbiterJoin(ctx context.Context, e *env, cmd *command, args []string) error {
	fs := flag.NewFlagSet("arbiter join", flag.ContinueOnError)
	raftAddr := fs.String("raft-addr", "", "the new arbiter's Raft address `A` (host:port, required)")
	grpcAddr := fs.String("grpc-addr", "", "the new arbiter's gRPC address `B` (host:port, required)")
	gossipAddr := fs.String("gossip-addr", "", "the new arbiter's gossip address `C` (host:port, optional)")
	pos, err := parseArgs(cmd, e, fs, args)
	if err != nil {
		return err
	}
	if err := oneID(cmd, "arbiter join", pos); err != nil {
		return err
	}
	for _, a := range []struct{ flag, val string }{{"--raft-addr", *raftAddr}, {"--grpc-addr", *grpcAddr}, {"--gossip-addr", *gossipAddr}} {
		if a.val == "" && a.flag != "--gossip-addr" {
			return usagef(cmd, "arbiter join: %s is required", a.flag)
		}
		if a.val != "" {
			if err := nodeid.ValidateAddr(a.flag, a.val); err != nil {
				return usagef(cmd, "arbiter join: %v", err)
			}
		}
	}
	req := &seqdv1.JoinArbiterRequest{Id: pos[0], RaftAddr: *raftAddr, GrpcAddr: *grpcAddr, GossipAddr: *gossipAddr}
	return adminCall(ctx, e, req, func(ctx context.Context, c seqdv1.AdminClient) error {
		_, err := c.JoinArbiter(ctx, req)
		return err
	}, fmt.Sprintf("arbiter %s joined the group (raft %s, grpc %s)", req.Id, req.RaftAddr, req.GrpcAddr))
}

func runArbiterRemove(ctx context.Context, e *env, cmd *command, args []string) error {
	pos, err := parseArgs(cmd, e, flag.NewFlagSet("arbiter remove", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	if err := oneID(cmd, "arbiter remove", pos); err != nil {
		return err
	}
	req := &seqdv1.RemoveArbiterRequest{Id: pos[0]}
	return adminCall(ctx, e, req, func(ctx context.Context, c seqdv1.AdminClient) error {
		_, err := c.RemoveArbiter(ctx, req)
		return err
	}, fmt.Sprintf("arbiter %s removed from the group", req.Id))
}

func oneID(cmd *command, what string, pos []string) error {
	switch {
	case len(pos) == 0:
		return usagef(cmd, "%s: missing ID", what)
	case len(pos) > 1:
		return usagef(cmd, "%s takes one ID; got %q", what, pos)
	}
	if err := nodeid.Validate(pos[0]); err != nil {
		return usagef(cmd, "%s: %v", what, err)
	}
	return nil
}

// adminCall makes one membership call and reports it. The JSON form is the
// request, since the responses are empty.
func adminCall(ctx context.Context, e *env, req proto.Message, call func(context.Context, seqdv1.AdminClient) error, done string) error {
	return adminCallWith(ctx, e, func(ctx context.Context, c seqdv1.AdminClient) (proto.Message, error) {
		return req, call(ctx, c)
	}, func() string { return done })
}

// adminCallWith is adminCall for a call whose answer matters: --json
// prints the answer, and done (run after the call) says what it was.
func adminCallWith(ctx context.Context, e *env, call func(context.Context, seqdv1.AdminClient) (proto.Message, error), done func() string) error {
	ctx, c, release, err := dialTimed(ctx, e)
	if err != nil {
		return err
	}
	defer release()
	resp, err := call(ctx, c.admin())
	if err != nil {
		return c.explain(err)
	}
	if e.json {
		return writeProto(e.stdout, resp)
	}
	_, err = fmt.Fprintln(e.stdout, done())
	return err
}
