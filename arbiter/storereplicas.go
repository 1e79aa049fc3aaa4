package arbiter

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/nodeid"
	"github.com/seqd/seqd/internal/rpcerr"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// This file holds the Admin calls that change a store shard's replicas.
// The arbiter leader finds the replica in the shard map, has the shard's
// leader change its Raft configuration (store.ChangeReplicas), and for a
// removal then drops the replica from the map.

// storeReplica finds a registered store replica by id in the shard map.
// A removed one is found too, with its shard and no record (removed).
func (s *server) storeReplica(id string) (sh *seqdv1.ShardInfo, rep *seqdv1.ReplicaInfo, removed bool, err error) {
	meta := s.a.fsm.Meta()
	if meta == nil {
		return nil, nil, false, stateErr(ErrNotInitialized)
	}
	for _, sh := range meta.Shards {
		for _, r := range sh.Replicas {
			if r.Id == id {
				return sh, r, false, nil
			}
		}
	}
	if was, ok := meta.RemovedStoreReplicas[id]; ok {
		for _, sh := range meta.Shards {
			if sh.Id == was {
				return sh, nil, true, nil
			}
		}
	}
	return nil, nil, false, status.Errorf(codes.NotFound, "no store replica %s has registered; start it first (seqd start --role store --id %s --shard ..., with an empty --data and no --store-peer)", id, id)
}

func (s *server) AddStoreReplica(ctx context.Context, req *seqdv1.AddStoreReplicaRequest) (*seqdv1.AddStoreReplicaResponse, error) {
	if err := nodeid.Validate(req.Id); err != nil {
		return nil, invalid("add store replica: %v", err)
	}
	if resp, answered, err := atLeader(ctx, s, "add store replica", func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.AddStoreReplicaResponse, error) {
		return seqdv1.NewAdminClient(cc).AddStoreReplica(ctx, req)
	}); answered {
		return resp, err
	}
	sh, rep, removed, err := s.storeReplica(req.Id)
	switch {
	case err != nil:
		return nil, err
	case removed:
		return nil, status.Errorf(codes.FailedPrecondition, "store replica %s was removed from shard %s, and its id is not used again: start the replacement under a new id, with an empty --data", req.Id, sh.Id)
	}
	// Its Raft address is the one it listens on: ask it.
	info, err := s.askReplica(ctx, rep.Addr)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "add store replica %s: it does not answer at %s (%v); start it, then retry", req.Id, rep.Addr, err)
	}
	if info.ReplicaId != req.Id || info.ShardId != sh.Id {
		return nil, status.Errorf(codes.FailedPrecondition, "add store replica %s: %s answers as replica %s of shard %s", req.Id, rep.Addr, info.ReplicaId, info.ShardId)
	}
	if info.RaftAddr == "" {
		return nil, status.Errorf(codes.FailedPrecondition, "add store replica %s: its build does not say its Raft address; upgrade it first", req.Id)
	}
	resp, err := s.changeStoreReplicas(ctx, sh, &clusterv1.ChangeReplicasRequest{ShardId: sh.Id,
		Change: &clusterv1.ChangeReplicasRequest_Add{Add: &clusterv1.ReplicaPeer{Id: req.Id, RaftAddr: info.RaftAddr}}})
	if err != nil {
		return nil, err
	}
	s.a.log.Info("store replica added", "shard", sh.Id, "replica", req.Id, "raft", info.RaftAddr)
	return &seqdv1.AddStoreReplicaResponse{Shard: sh.Id, Voters: peerList(resp.Voters)}, nil
}

func (s *server) RemoveStoreReplica(ctx context.Context, req *seqdv1.RemoveStoreReplicaRequest) (*seqdv1.RemoveStoreReplicaResponse, error) {
	if err := nodeid.Validate(req.Id); err != nil {
		return nil, invalid("remove store replica: %v", err)
	}
	if resp, answered, err := atLeader(ctx, s, "remove store replica", func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.RemoveStoreReplicaResponse, error) {
		return seqdv1.NewAdminClient(cc).RemoveStoreReplica(ctx, req)
	}); answered {
		return resp, err
	}
	// A removed replica is removed again (a retry whose answer was lost):
	// both steps are idempotent.
	sh, _, _, err := s.storeReplica(req.Id)
	if status.Code(err) == codes.NotFound {
		// A voter that never registered (its host never came up, say):
		// only its shard's Raft configuration names it.
		if sh = s.shardWithVoter(ctx, req.Id); sh == nil {
			return nil, status.Errorf(codes.NotFound, "no store replica %s is registered, nor a voter of any shard as its replicas know it (replicas of builds from before this check say nothing); `seqctl replicas` lists them", req.Id)
		}
		err = nil
	}
	if err != nil {
		return nil, err
	}
	// Out of the Raft configuration first: the map lists it until it no
	// longer votes, so a failure in between leaves a voter clients can
	// still find, and a retry finishes the job.
	resp, err := s.changeStoreReplicas(ctx, sh, &clusterv1.ChangeReplicasRequest{ShardId: sh.Id,
		Change: &clusterv1.ChangeReplicasRequest_Remove{Remove: req.Id}})
	if err != nil {
		return nil, err
	}
	res, err := s.a.apply(ctx, clusterv1.CommandType_COMMAND_TYPE_REMOVE_STORE_REPLICA, &clusterv1.RemoveStoreReplicaCommand{Shard: sh.Id, ReplicaId: req.Id})
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		return nil, stateErr(res.Err)
	}
	s.a.log.Info("store replica removed", "shard", sh.Id, "replica", req.Id)
	return &seqdv1.RemoveStoreReplicaResponse{Shard: sh.Id, Voters: peerList(resp.Voters)}, nil
}

// shardWithVoter finds the shard whose Raft configuration has voter id,
// as its leader knows it, else as the first of its replicas to answer
// does; nil if none. Every replica is asked at once, so that dead ones
// cost one timeout in all.
func (s *server) shardWithVoter(ctx context.Context, id string) *seqdv1.ShardInfo {
	type answer struct {
		leader bool
		voters []*clusterv1.ReplicaPeer
	}
	shards := s.a.fsm.Meta().GetShards()
	answers := make([][]answer, len(shards))
	var wg sync.WaitGroup
	for i, sh := range shards {
		answers[i] = make([]answer, len(sh.Replicas))
		for j, r := range sh.Replicas {
			wg.Go(func() {
				info, err := s.askReplica(ctx, r.Addr)
				if err == nil && info.ShardId == sh.Id && info.ReplicaId == r.Id {
					answers[i][j] = answer{info.Leader, info.Voters}
				}
			})
		}
	}
	wg.Wait()
	for i, sh := range shards {
		var known []*clusterv1.ReplicaPeer
		for _, a := range answers[i] {
			if a.leader || known == nil {
				known = a.voters
			}
			if a.leader {
				break
			}
		}
		for _, v := range known {
			if v.Id == id {
				return sh
			}
		}
	}
	return nil
}

// askReplica asks the store replica at addr who it is.
func (s *server) askReplica(ctx context.Context, addr string) (*clusterv1.ReplicaInfoResponse, error) {
	cc, err := s.a.conns.Get(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return clusterv1.NewStoreNodeClient(cc).ReplicaInfo(ctx, &clusterv1.ReplicaInfoRequest{})
}

// changeStoreReplicas has the shard's leader make a configuration change:
// it tries the replicas in the map in turn, going to the leader a replica
// names, until one leads or ctx ends.
func (s *server) changeStoreReplicas(ctx context.Context, sh *seqdv1.ShardInfo, req *clusterv1.ChangeReplicasRequest) (*clusterv1.ChangeReplicasResponse, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	if len(sh.Replicas) == 0 {
		return nil, status.Errorf(codes.Unavailable, "store shard %s has no registered replica", sh.Id)
	}
	var last error
	next, followed := "", false
	for attempt := 0; ; attempt++ {
		addr := next
		if addr == "" {
			addr = sh.Replicas[attempt%len(sh.Replicas)].Addr
		}
		next = ""
		cc, err := s.a.conns.Get(addr)
		if err == nil {
			// A replica that does not answer (a dead host, or the one
			// being replaced) must not hold the change up for long.
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			var resp *clusterv1.ChangeReplicasResponse
			resp, err = clusterv1.NewStoreNodeClient(cc).ChangeReplicas(cctx, req)
			cancel()
			if err == nil {
				return resp, nil
			}
			if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
				return nil, err // refused: the leader's answer
			}
			next = rpcerr.LeaderHint(err)
		}
		last = err
		if next != "" && next != addr && !followed {
			followed = true // to the leader at once, but only once per pause
			continue
		}
		followed = false
		select {
		case <-ctx.Done():
			return nil, status.Errorf(codes.Unavailable, "store shard %s: no leader took the change (last error: %v)", sh.Id, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// peerList is voters as id=raft_addr.
func peerList(voters []*clusterv1.ReplicaPeer) []string {
	out := make([]string, len(voters))
	for i, v := range voters {
		out[i] = fmt.Sprintf("%s=%s", v.Id, v.RaftAddr)
	}
	return out
}
