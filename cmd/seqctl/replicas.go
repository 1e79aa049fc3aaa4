package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/seqd/seqd/internal/grpcconn"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// replicaRow is what one store replica says of itself (StoreNode.ReplicaInfo).
type replicaRow struct {
	Shard   string `json:"shard"`
	Replica string `json:"replica"`
	Addr    string `json:"addr"`
	Leader  bool   `json:"leader"`
	// Format is the store format its build applies; -1 if it did not say.
	Format  int64  `json:"store_format"`
	Applied uint64 `json:"applied_index"`
	// State is "ok", "halted", "log failing" (a Raft log write failed
	// lately), "not a voter", "old build" (no ReplicaInfo: format 0),
	// "unreachable", or "not registered" (a voter of its shard's Raft
	// configuration that is not in the shard map, so no Addr); Detail
	// says more.
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`

	voters []*clusterv1.ReplicaPeer // its shard's voters as it knows them
}

// runReplicas asks every store replica in the shard map which store format
// it runs, how far it has applied, and whether it halted: during a rolling
// upgrade, what is left to upgrade.
func runReplicas(ctx context.Context, e *env, cmd *command, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "add", "remove":
			return runReplicasChange(ctx, e, cmd, args[0], args[1:])
		}
	}
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	shard := fs.String("shard", "", "only this shard's replicas")
	if err := flagsOnly(cmd, e, fs, args); err != nil {
		return err
	}
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "shard" })
	if given && *shard == "" {
		return usagef(cmd, "replicas: --shard is empty; name a shard (`seqctl routes` lists them), or leave the flag out for all")
	}
	ctx, c, release, err := dialTimed(ctx, e)
	if err != nil {
		return err
	}
	defer release()
	t, err := c.table(ctx)
	if err != nil {
		return err
	}
	var rows []*replicaRow
	for _, sh := range t.Shards {
		if *shard != "" && sh.Id != *shard {
			continue
		}
		for _, r := range sh.Replicas {
			rows = append(rows, &replicaRow{Shard: sh.Id, Replica: r.Id, Addr: r.Addr, Format: -1})
		}
	}
	if len(rows) == 0 {
		if *shard != "" {
			return fmt.Errorf("the shard map names no replica of shard %q; `seqctl routes` lists the shards", *shard)
		}
		return fmt.Errorf("the shard map names no store replica; the cluster runs no message store, or its replicas have not registered yet")
	}
	var wg sync.WaitGroup
	for _, r := range rows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			askReplica(ctx, r)
		}()
	}
	wg.Wait()
	rows = append(rows, unregisteredVoters(rows)...)
	if e.json {
		return writeJSON(e.stdout, rows)
	}
	tw := newTable(e.stdout)
	row(tw, "SHARD", "REPLICA", "ADDR", "ROLE", "FORMAT", "APPLIED", "STATE")
	for _, r := range rows {
		role, format, applied := "follower", fmt.Sprint(r.Format), fmt.Sprint(r.Applied)
		if r.Leader {
			role = "leader"
		}
		switch r.State {
		case "unreachable":
			role, format, applied = "-", "-", "-"
		case "old build":
			role, format, applied = "-", "0", "-"
		case "not registered":
			role, format, applied = "-", "-", "-"
		}
		addr := r.Addr
		if addr == "" {
			addr = "-"
		}
		state := r.State
		if r.Detail != "" {
			state += ": " + r.Detail
		}
		row(tw, r.Shard, r.Replica, addr, role, format, applied, state)
	}
	return tw.Flush()
}

// unregisteredVoters returns a row for each voter of a shard's Raft
// configuration that is not in the shard map: one in the --store-peer
// list whose process never started, or cannot reach the arbiters. The
// configuration is the shard leader's, else the first answering
// follower's.
func unregisteredVoters(rows []*replicaRow) []*replicaRow {
	known := map[string][]*clusterv1.ReplicaPeer{}
	inMap := map[string]bool{}
	var shards []string
	for _, r := range rows {
		inMap[r.Replica] = true
		if _, seen := known[r.Shard]; !seen {
			shards = append(shards, r.Shard)
			known[r.Shard] = nil
		}
		if len(r.voters) > 0 && (r.Leader || known[r.Shard] == nil) {
			known[r.Shard] = r.voters
		}
	}
	var out []*replicaRow
	for _, sh := range shards {
		for _, v := range known[sh] {
			if !inMap[v.Id] {
				out = append(out, &replicaRow{Shard: sh, Replica: v.Id, Format: -1, State: "not registered",
					Detail: "a voter of the shard (Raft address " + v.RaftAddr + ") that never registered: its process has not started, or cannot reach the arbiters; if it is gone for good, seqctl replicas remove " + v.Id})
			}
		}
	}
	return out
}

// askReplica fills r from its replica's answer.
func askReplica(ctx context.Context, r *replicaRow) {
	cc, err := grpc.NewClient(r.Addr, grpcconn.DialOptions()...)
	if err != nil {
		r.State, r.Detail = "unreachable", err.Error()
		return
	}
	defer cc.Close()
	info, err := clusterv1.NewStoreNodeClient(cc).ReplicaInfo(ctx, &clusterv1.ReplicaInfoRequest{})
	switch {
	case status.Code(err) == codes.Unimplemented:
		r.Format, r.State, r.Detail = 0, "old build", "a build from before store formats (format 0)"
	case err != nil:
		r.State, r.Detail = "unreachable", status.Convert(err).Message()
	case info.ReplicaId != r.Replica || info.ShardId != r.Shard:
		r.State, r.Detail = "unreachable", fmt.Sprintf("%s answers as replica %s of shard %s", r.Addr, info.ReplicaId, info.ShardId)
	default:
		r.Format, r.Applied, r.Leader, r.State, r.voters = int64(info.StoreFormat), info.AppliedIndex, info.Leader, "ok", info.Voters
		switch {
		case info.Halted != "":
			r.State, r.Detail = "halted", info.Halted
		case info.LogWriteError != "":
			r.State, r.Detail = "log failing", info.LogWriteError
		case info.RaftAddr != "" && !info.Voter:
			// (Builds from before membership changes say neither.)
			r.State, r.Detail = "not a voter", "not added to its shard yet (seqctl replicas add "+r.Replica+"), or removed"
		}
	}
}

// runReplicasChange runs `replicas add ID` or `replicas remove ID`.
func runReplicasChange(ctx context.Context, e *env, cmd *command, sub string, args []string) error {
	what := "replicas " + sub
	pos, err := parseArgs(cmd, e, flag.NewFlagSet(what, flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	if err := oneID(cmd, what, pos); err != nil {
		return err
	}
	id := pos[0]
	var resp interface {
		proto.Message
		GetShard() string
		GetVoters() []string
	}
	return adminCallWith(ctx, e, func(ctx context.Context, c seqdv1.AdminClient) (proto.Message, error) {
		var err error
		if sub == "add" {
			resp, err = c.AddStoreReplica(ctx, &seqdv1.AddStoreReplicaRequest{Id: id})
		} else {
			resp, err = c.RemoveStoreReplica(ctx, &seqdv1.RemoveStoreReplicaRequest{Id: id})
		}
		return resp, err
	}, func() string {
		voters := strings.Join(resp.GetVoters(), ", ")
		if sub == "add" {
			return fmt.Sprintf("store replica %s is a voter of shard %s; voters now %s", id, resp.GetShard(), voters)
		}
		return fmt.Sprintf("store replica %s removed from shard %s; voters now %s; stop its process", id, resp.GetShard(), voters)
	})
}
