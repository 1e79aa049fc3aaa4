package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/nodeid"
	"github.com/seqd/seqd/internal/rpcerr"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

// This file holds changes to a shard's Raft configuration: a replica added
// (a replacement started without --store-peer, or a voter at a new Raft
// address) or removed. Arbiters call ChangeReplicas for the Admin
// service; only the shard leader makes the change.

// changeTimeout bounds how long the leader waits for a configuration
// change to commit.
const changeTimeout = 30 * time.Second

// voters returns the shard's voters in the Raft configuration this
// replica knows.
func (s *Shard) voters() ([]*clusterv1.ReplicaPeer, error) {
	fut := s.node.Raft.GetConfiguration()
	if err := fut.Error(); err != nil {
		return nil, rpcerr.FromRaft(err, s.leaderAddr())
	}
	var out []*clusterv1.ReplicaPeer
	for _, srv := range fut.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			out = append(out, &clusterv1.ReplicaPeer{Id: string(srv.ID), RaftAddr: string(srv.Address)})
		}
	}
	return out, nil
}

// isVoter reports whether this replica is a voter in the configuration it
// knows: one started without --store-peer is not until it is added, and
// one removed is not any more.
func (s *Shard) isVoter() bool {
	vs, err := s.voters()
	return err == nil && hasVoter(vs, s.cfg.ReplicaID)
}

// hasVoter reports whether replica id is among voters.
func hasVoter(voters []*clusterv1.ReplicaPeer, id string) bool {
	return slices.ContainsFunc(voters, func(v *clusterv1.ReplicaPeer) bool { return v.Id == id })
}

// liveMajorityWithout refuses, with FAILED_PRECONDITION naming the silent
// replicas, unless a majority of the voters left once id is removed
// answer ReplicaInfo (this leader counts itself).
func (s *Shard) liveMajorityWithout(ctx context.Context, voters []*clusterv1.ReplicaPeer, id string) error {
	var left, silent []string
	live := 0
	for _, v := range voters {
		if v.Id == id {
			continue
		}
		left = append(left, v.Id)
		if v.Id == s.cfg.ReplicaID || s.answers(ctx, v.Id) {
			live++
		} else {
			silent = append(silent, v.Id)
		}
	}
	if live > len(left)/2 {
		return nil
	}
	return status.Errorf(codes.FailedPrecondition, "change replicas: removing %s would leave shard %s with voters %v, of which %v do not answer: the shard could not commit, nor elect a leader. Bring them back, or remove a dead replica instead",
		id, s.cfg.ShardID, left, silent)
}

// answers reports whether replica id of this shard answers ReplicaInfo
// within a second, without having halted.
func (s *Shard) answers(ctx context.Context, id string) bool {
	return s.askReplica(ctx, id, time.Second, func(ctx context.Context, c clusterv1.StoreNodeClient) error {
		info, err := replicaInfoAt(ctx, c, s.cfg.ShardID, id)
		if err == nil && info.Halted != "" {
			err = errors.New(info.Halted)
		}
		return err
	}) == nil
}

// bootstrap starts the shard's Raft configuration from the peer list
// (--store-peer) on a replica that has no Raft state, unless the shard
// runs already. It asks the shard's registered replicas for the voters
// they know:
//   - none knows any (or none answers): the shard is new, and this is one
//     of its first replicas; it bootstraps, as the others do with the
//     same list;
//   - one knows this replica as a voter: the shard runs with it (one of
//     its first replicas, started late, or one that lost its data), and
//     its leader brings it in; a bootstrap of its own would only start a
//     log that leader overwrites;
//   - one knows voters without it: a replacement given a stale or copied
//     peer list. It would bootstrap a second shard under the same id, with
//     none of the first one's data and, with two such replicas, a majority
//     of its own. Refused.
//
// The registered replicas are the arbiter leader's (leaderTable): an
// arbiter restarted from an old snapshot could list none. Replicas of
// builds from before ReplicaInfo.voters say nothing, and count as knowing
// none.
func (s *Shard) bootstrap(ctx context.Context) error {
	if !s.node.BootstrapOwed() {
		return nil
	}
	table, err := s.leaderTable(ctx)
	if err != nil {
		// No proof either way: a bootstrap now could split a running
		// shard.
		return fmt.Errorf("store: bootstrap: %w", err)
	}
	for _, sh := range table.GetShards() {
		if sh.Id != s.cfg.ShardID {
			continue
		}
		for _, r := range sh.Replicas {
			if r.Addr == s.cfg.GRPCAddr {
				continue // this replica's own earlier registration
			}
			var info *clusterv1.ReplicaInfoResponse
			err := s.askReplica(ctx, r.Id, 2*time.Second, func(ctx context.Context, c clusterv1.StoreNodeClient) (err error) {
				info, err = replicaInfoAt(ctx, c, s.cfg.ShardID, r.Id)
				return err
			})
			switch {
			case err != nil || len(info.Voters) == 0:
				continue // down, or has no configuration yet itself
			case hasVoter(info.Voters, s.cfg.ReplicaID):
				s.log.Info("the shard runs with this replica as a voter: not bootstrapping, its leader brings it in (if none does, see seqctl replicas: a replica removed from the shard starts again under a new id, and one at a new Raft address needs seqctl replicas add)", "asked", r.Id)
				return nil
			}
			var voters, peers []string
			for _, v := range info.Voters {
				voters = append(voters, v.Id)
			}
			for _, p := range s.cfg.Peers {
				peers = append(peers, p.ID)
			}
			return fmt.Errorf("store: shard %s already runs, with voters %v (replica %s says so), but this replica has no Raft state and was started with --store-peer for %v: bootstrapping would start a second shard %s with none of its data. Start it with no --store-peer, then add it to the shard: seqctl replicas add %s",
				s.cfg.ShardID, voters, r.Id, peers, s.cfg.ShardID, s.cfg.ReplicaID)
		}
	}
	if err := ctx.Err(); err != nil {
		// The questions failed for want of time (a start cut short): no
		// answer is no proof that the shard is new.
		return fmt.Errorf("store: bootstrap: %w", err)
	}
	s.log.Info("bootstrapping the shard's Raft configuration", "peers", len(s.cfg.Peers))
	return s.node.Bootstrap()
}

func (r *server) ChangeReplicas(ctx context.Context, req *clusterv1.ChangeReplicasRequest) (*clusterv1.ChangeReplicasResponse, error) {
	s := r.s
	if req.ShardId != s.cfg.ShardID {
		return nil, status.Errorf(codes.FailedPrecondition, "change replicas: this replica serves shard %s, not %q", s.cfg.ShardID, req.ShardId)
	}
	switch c := req.Change.(type) {
	case *clusterv1.ChangeReplicasRequest_Add:
		if c.Add == nil {
			return nil, status.Error(codes.InvalidArgument, "change replicas: add: missing the replica")
		}
		if err := nodeid.Validate(c.Add.Id); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "change replicas: add: %v", err)
		}
		if err := nodeid.ValidateAddr("raft_addr", c.Add.RaftAddr); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "change replicas: add %s: %v", c.Add.Id, err)
		}
	case *clusterv1.ChangeReplicasRequest_Remove:
		if err := nodeid.Validate(c.Remove); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "change replicas: remove: %v", err)
		}
	default:
		return nil, status.Error(codes.InvalidArgument, "change replicas: give a replica to add or one to remove")
	}
	if err := s.Halted(); err != nil {
		return nil, haltedErr(err)
	}
	if !s.IsLeader() {
		return nil, rpcerr.NotLeader(s.leaderAddr())
	}
	// One change at a time: Raft refuses a second while one is under way,
	// and two callers checking the same configuration could each pass.
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	voters, err := s.voters()
	if err != nil {
		return nil, err
	}
	var fut raft.IndexFuture
	switch c := req.Change.(type) {
	case *clusterv1.ChangeReplicasRequest_Add:
		for _, v := range voters {
			switch {
			case v.Id == c.Add.Id && v.RaftAddr == c.Add.RaftAddr:
				return &clusterv1.ChangeReplicasResponse{Voters: voters}, nil // a retry
			case v.Id != c.Add.Id && v.RaftAddr == c.Add.RaftAddr:
				return nil, status.Errorf(codes.AlreadyExists, "change replicas: Raft address %s belongs to replica %s of shard %s; remove it first",
					c.Add.RaftAddr, v.Id, s.cfg.ShardID)
			}
		}
		// AddVoter of a voter gives it the new address (a replica that
		// moved hosts, keeping its id and data).
		s.log.Info("adding store replica", "replica", c.Add.Id, "raft", c.Add.RaftAddr)
		fut = s.node.Raft.AddVoter(raft.ServerID(c.Add.Id), raft.ServerAddress(c.Add.RaftAddr), 0, changeTimeout)
	case *clusterv1.ChangeReplicasRequest_Remove:
		if !hasVoter(voters, c.Remove) {
			return &clusterv1.ChangeReplicasResponse{Voters: voters}, nil // removed already
		}
		if len(voters) == 1 {
			return nil, status.Errorf(codes.FailedPrecondition, "change replicas: %s is shard %s's last voter; add another replica first", c.Remove, s.cfg.ShardID)
		}
		// The new configuration counts as soon as it is appended: without
		// a majority of its voters alive it can never commit, and the
		// shard is left with no leader until a dead replica comes back.
		if err := s.liveMajorityWithout(ctx, voters, c.Remove); err != nil {
			return nil, err
		}
		s.log.Info("removing store replica", "replica", c.Remove)
		fut = s.node.Raft.RemoveServer(raft.ServerID(c.Remove), 0, changeTimeout)
	}
	if err := fut.Error(); err != nil {
		return nil, rpcerr.FromRaft(fmt.Errorf("change replicas of shard %s: %w", s.cfg.ShardID, err), s.leaderAddr())
	}
	voters, err = s.voters()
	if err != nil {
		return nil, err
	}
	return &clusterv1.ChangeReplicasResponse{Voters: voters}, nil
}
