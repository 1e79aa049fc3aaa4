package arbiter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/forward"
	"github.com/seqd/seqd/internal/gossip"
	"github.com/seqd/seqd/internal/groupcommit"
	"github.com/seqd/seqd/internal/nodeid"
	"github.com/seqd/seqd/internal/rpcerr"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// Limits on what one AllocateSections call may ask for.
const (
	maxOpsPerCall = 1024
	maxStep       = 1 << 40
)

type server struct {
	clusterv1.UnimplementedArbiterServer
	seqdv1.UnimplementedAdminServer
	seqdv1.UnimplementedRoutingServer
	a *Arbiter
}

// RegisterServices adds the arbiter's gRPC services to s.
func (a *Arbiter) RegisterServices(s grpc.ServiceRegistrar) {
	srv := &server{a: a}
	clusterv1.RegisterArbiterServer(s, srv)
	seqdv1.RegisterAdminServer(s, srv)
	seqdv1.RegisterRoutingServer(s, srv)
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func (s *server) leader() bool { return s.a.raft.State() == raft.Leader }

// caughtUp refuses, as UNAVAILABLE, a request at a leader whose FSM may
// still lack entries committed in earlier terms (the Raft log is applied
// after the election): an answer from it, such as "no AllocSvr named x
// is registered", could be stale. Handlers that decide from FSM state
// reach it through atLeader.
func (s *server) caughtUp(op string) error {
	if !s.a.readyNow() {
		return status.Errorf(codes.Unavailable, "%s: the arbiter leader is still catching up after an election; retry shortly", op)
	}
	return nil
}

// stateErr maps FSM errors to gRPC statuses.
func stateErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotInitialized):
		return status.Error(codes.Unavailable, "the cluster is not initialized yet; retry in a moment")
	case errors.Is(err, ErrStaleIncarnation), errors.Is(err, ErrNodeOwnsSlots), errors.Is(err, ErrAlreadyInitialized), errors.Is(err, ErrRemovedReplica):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrUnknownNode):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrBadCommand):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, groupcommit.ErrClosed):
		return status.Error(codes.Unavailable, "arbiter is shutting down; retry at another arbiter")
	}
	return rpcerr.FromRaft(err, "")
}

func (s *server) Register(ctx context.Context, req *clusterv1.RegisterRequest) (*clusterv1.RegisterResponse, error) {
	if err := nodeid.Validate(req.NodeId); err != nil {
		return nil, invalid("register: %v", err)
	}
	if req.Incarnation == 0 {
		return nil, invalid("register: incarnation 0 is reserved; use a fresh non-zero value per start")
	}
	if req.Addr == "" {
		return nil, invalid("register: node %s gave no gRPC address", req.NodeId)
	}
	if resp, answered, err := atLeader(ctx, s, "register", func(ctx context.Context, cc *grpc.ClientConn) (*clusterv1.RegisterResponse, error) {
		return clusterv1.NewArbiterClient(cc).Register(ctx, req)
	}); answered {
		return resp, err
	}
	meta := s.a.fsm.Meta()
	if meta == nil {
		return nil, stateErr(ErrNotInitialized)
	}
	if req.ClusterId != meta.ClusterId {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s is configured for cluster %q but these arbiters run cluster %q; fix --cluster-id", req.NodeId, req.ClusterId, meta.ClusterId)
	}
	res, err := s.a.apply(ctx, clusterv1.CommandType_COMMAND_TYPE_REGISTER_NODE, &clusterv1.RegisterNodeCommand{
		NodeId: req.NodeId, Incarnation: req.Incarnation, Addr: req.Addr, GossipAddr: req.GossipAddr,
	})
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		return nil, stateErr(res.Err)
	}
	s.a.log.Info("allocsvr registered", "allocsvr", req.NodeId, "incarnation", req.Incarnation, "addr", req.Addr)
	// The lease here only sizes the AllocSvr's renewal timeouts; the one
	// it serves by comes with each grant. Step is this leader's own: it
	// only says how far one ACQUIRE or RAISE moves max_seq, which the FSM
	// never lowers, so AllocSvrs with different steps keep G1 (a larger
	// step leaves larger gaps after a crash, a smaller one raises more
	// often).
	lt, _ := s.a.leaseTimes()
	resp := &clusterv1.RegisterResponse{
		Table:           s.a.fsm.RoutingTable(),
		LeaseMs:         lt.lease.Milliseconds(),
		RenewIntervalMs: lt.renew.Milliseconds(),
		Step:            s.a.cfg.Step,
	}
	for _, r := range s.a.fsm.Arbiters() {
		if r.GossipAddr != "" {
			resp.GossipSeeds = append(resp.GossipSeeds, r.GossipAddr)
		}
	}
	return resp, nil
}

func (s *server) refuse(reason, msg string) *clusterv1.RenewLeaseResponse {
	s.a.m.leaseRefusals.WithLabelValues(reason).Inc()
	return &clusterv1.RenewLeaseResponse{Granted: false, Reason: msg}
}

func (s *server) RenewLease(ctx context.Context, req *clusterv1.RenewLeaseRequest) (*clusterv1.RenewLeaseResponse, error) {
	if err := nodeid.Validate(req.NodeId); err != nil {
		return nil, invalid("renew: %v", err)
	}
	if resp, answered, err := atLeader(ctx, s, "renew", func(ctx context.Context, cc *grpc.ClientConn) (*clusterv1.RenewLeaseResponse, error) {
		return clusterv1.NewArbiterClient(cc).RenewLease(ctx, req)
	}); answered {
		return resp, err
	}
	// Ready implies a stored lease, and a stored lease never changes.
	lt, stored := s.a.leaseTimes()
	if !stored {
		return nil, status.Error(codes.Unavailable, "the cluster has no stored lease yet; retry shortly")
	}
	i := instance{req.NodeId, req.Incarnation}
	n := s.a.fsm.Node(req.NodeId)
	if n == nil || n.Incarnation != req.Incarnation {
		return s.refuse("unknown", "this instance is not registered (restarted or removed); register again"), nil
	}
	if s.a.gossipDown(i) {
		return s.refuse("gossip_dead", "gossip reports this instance dead; register again"), nil
	}
	if !s.a.leases.mayGrant(i) {
		return s.refuse("expired", "this instance's lease already ran out at the arbiter; register again"), nil
	}
	// Confirm with a quorum that no newer leader exists before granting: a
	// deposed leader's grant could outlive the new leader's wait.
	if err := s.a.raft.VerifyLeader().Error(); err != nil {
		addr, _ := s.a.leaderAddr()
		return nil, rpcerr.FromRaft(err, addr)
	}
	if err := s.caughtUp("renew"); err != nil { // leadership lost and regained meanwhile
		return nil, err
	}
	if !s.a.leases.grant(i) {
		return s.refuse("expired", "this instance's lease ran out at the arbiter; register again"), nil
	}
	s.a.m.leaseGrants.Inc()
	resp := &clusterv1.RenewLeaseResponse{
		Granted:        true,
		Slots:          s.a.fsm.OwnedSlots(req.NodeId, req.Incarnation),
		RoutingVersion: s.a.fsm.RoutingVersion(),
		LeaseMs:        lt.lease.Milliseconds(),
	}
	if req.RoutingVersion < resp.RoutingVersion {
		resp.Table = s.a.fsm.RoutingTable()
	}
	return resp, nil
}

func validateSectionOps(req *clusterv1.AllocateSectionsRequest) error {
	if err := nodeid.Validate(req.NodeId); err != nil {
		return invalid("allocate: %v", err)
	}
	if len(req.Ops) == 0 {
		return invalid("allocate: no section operations given")
	}
	if len(req.Ops) > maxOpsPerCall {
		return invalid("allocate: %d section operations in one call; the limit is %d", len(req.Ops), maxOpsPerCall)
	}
	for i, op := range req.Ops {
		switch op.Kind {
		case clusterv1.SectionOpKind_SECTION_OP_KIND_ACQUIRE:
			if op.Step == 0 || op.Step > maxStep {
				return invalid("allocate: op %d: step %d must be between 1 and 2^40", i, op.Step)
			}
		case clusterv1.SectionOpKind_SECTION_OP_KIND_RAISE:
		default:
			return invalid("allocate: op %d: unknown kind %v", i, op.Kind)
		}
	}
	return nil
}

func (s *server) AllocateSections(ctx context.Context, req *clusterv1.AllocateSectionsRequest) (*clusterv1.AllocateSectionsResponse, error) {
	if err := validateSectionOps(req); err != nil {
		return nil, err
	}
	if !s.leader() {
		return forwardToLeader(ctx, s.a, func(ctx context.Context, cc *grpc.ClientConn) (*clusterv1.AllocateSectionsResponse, error) {
			return clusterv1.NewArbiterClient(cc).AllocateSections(ctx, req)
		})
	}
	ops := make([]*clusterv1.OwnedSectionOp, len(req.Ops))
	for i, op := range req.Ops {
		ops[i] = &clusterv1.OwnedSectionOp{NodeId: req.NodeId, Incarnation: req.Incarnation, Op: op}
	}
	results, err := s.a.ops.Do(ctx, ops)
	if err != nil {
		return nil, stateErr(err)
	}
	return &clusterv1.AllocateSectionsResponse{Results: results}, nil
}

func (s *server) Deregister(ctx context.Context, req *clusterv1.DeregisterRequest) (*clusterv1.DeregisterResponse, error) {
	if err := nodeid.Validate(req.NodeId); err != nil {
		return nil, invalid("deregister: %v", err)
	}
	if !s.leader() {
		return forwardToLeader(ctx, s.a, func(ctx context.Context, cc *grpc.ClientConn) (*clusterv1.DeregisterResponse, error) {
			return clusterv1.NewArbiterClient(cc).Deregister(ctx, req)
		})
	}
	res, err := s.a.apply(ctx, clusterv1.CommandType_COMMAND_TYPE_DEREGISTER_NODE, &clusterv1.DeregisterNodeCommand{NodeId: req.NodeId, Incarnation: req.Incarnation})
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		return nil, stateErr(res.Err)
	}
	return &clusterv1.DeregisterResponse{}, nil
}

// replicaAnswers reports whether the store replica at addr answers, within
// a second, as replica id of shard.
func (s *server) replicaAnswers(ctx context.Context, addr, shard, id string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	info, err := s.askReplica(ctx, addr)
	return err == nil && info.ReplicaId == id && info.ShardId == shard
}

func (s *server) RegisterStoreReplica(ctx context.Context, req *clusterv1.RegisterStoreReplicaRequest) (*clusterv1.RegisterStoreReplicaResponse, error) {
	if err := nodeid.Validate(req.ReplicaId); err != nil {
		return nil, invalid("register store replica: %v", err)
	}
	if req.Addr == "" || req.Shard == "" {
		return nil, invalid("register store replica %s: shard and address are required", req.ReplicaId)
	}
	if resp, answered, err := atLeader(ctx, s, "register store replica", func(ctx context.Context, cc *grpc.ClientConn) (*clusterv1.RegisterStoreReplicaResponse, error) {
		return clusterv1.NewArbiterClient(cc).RegisterStoreReplica(ctx, req)
	}); answered {
		return resp, err
	}
	meta := s.a.fsm.Meta()
	if meta == nil {
		return nil, stateErr(ErrNotInitialized)
	}
	if req.ClusterId != meta.ClusterId {
		return nil, status.Errorf(codes.FailedPrecondition, "store replica %s is configured for cluster %q but these arbiters run cluster %q; fix --cluster-id", req.ReplicaId, req.ClusterId, meta.ClusterId)
	}
	// Checked here, before the command, so arbiters of older builds
	// apply it alike.
	for _, sh := range meta.Shards {
		for _, r := range sh.Replicas {
			switch {
			case r.Id != req.ReplicaId && r.Addr == req.Addr:
				// A replacement started at the addresses of a replica
				// still in the shard: that replica's peers would take
				// the newcomer, which has none of its state or votes,
				// for it.
				return nil, status.Errorf(codes.FailedPrecondition, "address %s belongs to store replica %s of shard %s: remove it first (seqctl replicas remove %s), or give replica %s other addresses",
					req.Addr, r.Id, sh.Id, r.Id, req.ReplicaId)
			case r.Id != req.ReplicaId:
			case sh.Id != req.Shard:
				// Its data, if it has any, is that shard's: serving it as
				// another shard's would split both.
				return nil, status.Errorf(codes.FailedPrecondition, "store replica %s belongs to shard %s, not %s: start it with --shard %s",
					req.ReplicaId, sh.Id, req.Shard, sh.Id)
			case r.Addr != req.Addr && s.replicaAnswers(ctx, r.Addr, sh.Id, r.Id):
				// Another process under this id (a copied config), while
				// the replica itself still serves: taking its address
				// would send its shard's calls to the newcomer.
				return nil, status.Errorf(codes.AlreadyExists, "store replica %s of shard %s is running at %s; give the new replica another id (it registered from %s)",
					r.Id, sh.Id, r.Addr, req.Addr)
			}
		}
	}
	res, err := s.a.apply(ctx, clusterv1.CommandType_COMMAND_TYPE_SET_STORE_REPLICA, &clusterv1.SetStoreReplicaCommand{Shard: req.Shard, ReplicaId: req.ReplicaId, Addr: req.Addr})
	if err != nil {
		return nil, err
	}
	if errors.Is(res.Err, ErrUnknownShard) {
		var ids []string
		for _, sh := range meta.Shards {
			ids = append(ids, sh.Id)
		}
		return nil, status.Errorf(codes.NotFound, "store shard %q does not exist; this cluster has shards %v", req.Shard, ids)
	}
	if res.Err != nil {
		return nil, stateErr(res.Err)
	}
	return &clusterv1.RegisterStoreReplicaResponse{Table: s.a.fsm.RoutingTable()}, nil
}

func (s *server) GetRoutingTable(ctx context.Context, req *seqdv1.GetRoutingTableRequest) (*seqdv1.GetRoutingTableResponse, error) {
	if req.FromLeader {
		if resp, answered, err := atLeader(ctx, s, "routing table", func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.GetRoutingTableResponse, error) {
			return seqdv1.NewRoutingClient(cc).GetRoutingTable(ctx, req)
		}); answered {
			return resp, err
		}
	}
	if !s.a.fsm.Initialized() {
		return nil, stateErr(ErrNotInitialized)
	}
	return &seqdv1.GetRoutingTableResponse{Table: s.a.fsm.RoutingTable()}, nil
}

func (s *server) Status(ctx context.Context, req *seqdv1.StatusRequest) (*seqdv1.StatusResponse, error) {
	if !s.leader() && !forward.Was(ctx) {
		if resp, err := forwardToLeader(ctx, s.a, func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.StatusResponse, error) {
			return seqdv1.NewAdminClient(cc).Status(ctx, req)
		}); err == nil {
			return resp, nil
		}
		// No reachable leader: report what this arbiter knows, marked
		// stale.
	}
	return s.a.status(), nil
}

// status builds the status report from this arbiter's state.
func (a *Arbiter) status() *seqdv1.StatusResponse {
	leaderAddr, leaderID := a.leaderAddr()
	lt, _ := a.leaseTimes()
	resp := &seqdv1.StatusResponse{
		LeaderId: leaderID, LeaderAddr: leaderAddr,
		Step: a.cfg.Step, LeaseMs: lt.lease.Milliseconds(),
		Sections: uint64(a.fsm.SectionCount()),
		// Only a leader that has applied every earlier term's entries
		// knows the nodes, slots and leases as they are.
		Stale: !a.readyNow(),
	}
	if m := a.fsm.Meta(); m != nil {
		resp.ClusterId, resp.RoutingVersion, resp.NumSlots, resp.SectionSize, resp.Dc = m.ClusterId, m.RoutingVersion, m.NumSlots, m.SectionSize, m.Dc
	}
	book := a.fsm.Arbiters()
	if cf := a.raft.GetConfiguration(); cf.Error() == nil {
		for _, srv := range cf.Configuration().Servers {
			st := &seqdv1.ArbiterStatus{Id: string(srv.ID), RaftAddr: string(srv.Address), Role: "voter", Gossip: string(gossip.Unknown)}
			if srv.Suffrage != raft.Voter {
				st.Role = "nonvoter"
			}
			if string(srv.ID) == leaderID {
				st.Role = "leader"
			}
			if r := book[string(srv.ID)]; r != nil {
				st.GrpcAddr = r.GrpcAddr
			}
			if a.gossip != nil {
				st.Gossip = string(a.gossip.State(gossip.ArbiterName(string(srv.ID))))
				if string(srv.ID) == a.cfg.ID {
					st.Gossip = string(gossip.Alive)
				}
			}
			resp.Arbiters = append(resp.Arbiters, st)
		}
	}
	slots := a.fsm.Slots()
	count := map[instance]uint32{}
	for _, s := range slots {
		if s.Owner == "" {
			resp.UnassignedSlots++
			continue
		}
		if s.MovingTo != "" {
			resp.MovingSlots++
		}
		count[instance{s.Owner, s.OwnerIncarnation}]++
	}
	for _, id := range sortedKeys(a.fsm.Nodes()) {
		n := a.fsm.Node(id)
		if n == nil {
			continue
		}
		i := instance{n.Id, n.Incarnation}
		st := &seqdv1.AllocSvrStatus{Id: n.Id, Addr: n.Addr, State: n.State, Slots: count[i], Incarnation: n.Incarnation, Lease: "unknown", Gossip: string(gossip.Unknown)}
		if !resp.Stale { // a new leader counts every lease as just granted
			st.LastRenewalMsAgo = a.leases.sinceGrant(i).Milliseconds()
			st.Lease = "valid"
			if a.leases.isExpired(i) || time.Duration(st.LastRenewalMsAgo)*time.Millisecond > lt.lease {
				st.Lease = "expired"
			}
		}
		if a.gossip != nil {
			st.Gossip = string(a.gossip.State(gossip.AllocSvrName(n.Id, n.Incarnation)))
		}
		resp.Allocsvrs = append(resp.Allocsvrs, st)
	}
	return resp
}

// hasTaker reports whether n's slots can go somewhere: it owns none, or
// another AllocSvr is active and alive.
func (s *server) hasTaker(n *clusterv1.NodeRecord) bool {
	if len(s.a.fsm.OwnedSlots(n.Id, n.Incarnation)) == 0 {
		return true
	}
	nodes := s.a.fsm.Nodes()
	lv := leaderLiveness{a: s.a, nodes: nodes}
	for id, m := range nodes {
		if id != n.Id && m.State == seqdv1.NodeState_NODE_STATE_ACTIVE && lv.alive(instance{id, m.Incarnation}) {
			return true
		}
	}
	return false
}

// maxDrainWait bounds a waiting Drain whose caller set no deadline.
const maxDrainWait = 2 * time.Minute

func (s *server) Drain(ctx context.Context, req *seqdv1.DrainRequest) (*seqdv1.DrainResponse, error) {
	if err := nodeid.Validate(req.Node); err != nil {
		return nil, invalid("drain: %v", err)
	}
	if resp, answered, err := atLeader(ctx, s, "drain", func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.DrainResponse, error) {
		return seqdv1.NewAdminClient(cc).Drain(ctx, req)
	}); answered {
		return resp, err
	}
	n := s.a.fsm.Node(req.Node)
	if n == nil {
		return nil, status.Errorf(codes.NotFound, "drain: no AllocSvr named %q is registered; `seqctl status` lists them", req.Node)
	}
	// A drain nobody can take the slots of would never end. One that
	// waits (an AllocSvr draining itself on shutdown, say, while the one
	// restarted before it registers again) waits for a taker up to its
	// deadline; one that does not is refused at once. The check and the
	// state change are one step (drainMu).
	s.a.drainMu.Lock()
	defer s.a.drainMu.Unlock()
	tctx, tcancel := ctx, context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		tctx, tcancel = context.WithTimeout(ctx, maxDrainWait)
	}
	defer tcancel()
	for !s.hasTaker(n) {
		if !req.Wait {
			return nil, status.Errorf(codes.FailedPrecondition, "drain: no other AllocSvr is active and alive to take %s's %d slots; start or undrain another first",
				req.Node, len(s.a.fsm.OwnedSlots(n.Id, n.Incarnation)))
		}
		select {
		case <-tctx.Done():
			return nil, status.Errorf(codes.FailedPrecondition, "drain: no other AllocSvr became active and alive to take %s's %d slots before the deadline; start or undrain another first",
				req.Node, len(s.a.fsm.OwnedSlots(n.Id, n.Incarnation)))
		case <-time.After(100 * time.Millisecond):
		}
	}
	res, err := s.a.apply(ctx, clusterv1.CommandType_COMMAND_TYPE_SET_NODE_STATE, &clusterv1.SetNodeStateCommand{NodeId: req.Node, State: seqdv1.NodeState_NODE_STATE_DRAINING})
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		return nil, stateErr(res.Err)
	}
	s.a.notify()
	remaining := func() uint32 { return uint32(len(s.a.fsm.OwnedSlots(n.Id, n.Incarnation))) }
	if !req.Wait {
		return &seqdv1.DrainResponse{RemainingSlots: remaining()}, nil
	}
	// Answer a little before the caller's deadline, so it hears how many
	// slots are left instead of only DEADLINE_EXCEEDED; a caller without
	// one hears after maxDrainWait.
	var wctx context.Context
	var cancel context.CancelFunc
	if dl, ok := ctx.Deadline(); ok {
		wctx, cancel = context.WithDeadline(ctx, dl.Add(-min(time.Until(dl)/10, 250*time.Millisecond)))
	} else {
		wctx, cancel = context.WithTimeout(ctx, maxDrainWait)
	}
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for remaining() > 0 {
		select {
		case <-wctx.Done():
			return &seqdv1.DrainResponse{RemainingSlots: remaining()}, nil
		case <-t.C:
		}
	}
	return &seqdv1.DrainResponse{}, nil
}

func (s *server) Undrain(ctx context.Context, req *seqdv1.UndrainRequest) (*seqdv1.UndrainResponse, error) {
	if err := nodeid.Validate(req.Node); err != nil {
		return nil, invalid("undrain: %v", err)
	}
	if resp, answered, err := atLeader(ctx, s, "undrain", func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.UndrainResponse, error) {
		return seqdv1.NewAdminClient(cc).Undrain(ctx, req)
	}); answered {
		return resp, err
	}
	if s.a.fsm.Node(req.Node) == nil {
		return nil, status.Errorf(codes.NotFound, "undrain: no AllocSvr named %q is registered; `seqctl status` lists them", req.Node)
	}
	res, err := s.a.apply(ctx, clusterv1.CommandType_COMMAND_TYPE_SET_NODE_STATE, &clusterv1.SetNodeStateCommand{NodeId: req.Node, State: seqdv1.NodeState_NODE_STATE_ACTIVE})
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		return nil, stateErr(res.Err)
	}
	s.a.notify()
	return &seqdv1.UndrainResponse{}, nil
}

func (s *server) JoinArbiter(ctx context.Context, req *seqdv1.JoinArbiterRequest) (*seqdv1.JoinArbiterResponse, error) {
	if err := nodeid.Validate(req.Id); err != nil {
		return nil, invalid("join: %v", err)
	}
	if req.RaftAddr == "" || req.GrpcAddr == "" {
		return nil, invalid("join: arbiter %s needs both a raft and a gRPC address", req.Id)
	}
	// A voter at an address nobody can dial counts toward the quorum and
	// never votes: one such join leaves the group a failure closer to
	// stopping.
	for _, a := range []struct{ field, addr string }{{"raft_addr", req.RaftAddr}, {"grpc_addr", req.GrpcAddr}, {"gossip_addr", req.GossipAddr}} {
		if a.addr == "" && a.field == "gossip_addr" {
			continue
		}
		if err := nodeid.ValidateAddr(a.field, a.addr); err != nil {
			return nil, invalid("join: arbiter %s: %v", req.Id, err)
		}
	}
	if resp, answered, err := atLeader(ctx, s, "join", func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.JoinArbiterResponse, error) {
		return seqdv1.NewAdminClient(cc).JoinArbiter(ctx, req)
	}); answered {
		return resp, err
	}
	if err := s.checkJoin(req); err != nil {
		return nil, err
	}
	rec := &clusterv1.ArbiterRecord{Id: req.Id, RaftAddr: req.RaftAddr, GrpcAddr: req.GrpcAddr, GossipAddr: req.GossipAddr}
	// Record the address first, so the new voter can find the leader as soon
	// as it has caught up.
	if _, err := s.a.apply(ctx, clusterv1.CommandType_COMMAND_TYPE_SET_ARBITER, &clusterv1.SetArbiterCommand{Arbiter: rec}); err != nil {
		return nil, err
	}
	if err := s.a.raft.AddVoter(raft.ServerID(req.Id), raft.ServerAddress(req.RaftAddr), 0, 30*time.Second).Error(); err != nil {
		addr, _ := s.a.leaderAddr()
		return nil, rpcerr.FromRaft(fmt.Errorf("join %s: %w", req.Id, err), addr)
	}
	s.a.log.Info("arbiter joined", "arbiter", req.Id, "raft", req.RaftAddr)
	return &seqdv1.JoinArbiterResponse{}, nil
}

// checkJoin refuses a join that would move a member or take another's
// Raft address: AddVoter would quietly rewrite the member's address, and
// the group would then dial it where it does not listen. Repeating a join
// with the same addresses (a retry) is allowed.
func (s *server) checkJoin(req *seqdv1.JoinArbiterRequest) error {
	cf := s.a.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return status.Errorf(codes.Unavailable, "join: read the Raft configuration: %v", err)
	}
	rec := s.a.fsm.Arbiters()[req.Id]
	for _, srv := range cf.Configuration().Servers {
		id, addr := string(srv.ID), string(srv.Address)
		switch {
		case id == req.Id && (addr != req.RaftAddr || rec != nil && rec.GrpcAddr != req.GrpcAddr):
			grpcAddr := "unknown"
			if rec != nil {
				grpcAddr = rec.GrpcAddr
			}
			return status.Errorf(codes.AlreadyExists, "join: %s is already an arbiter, with Raft address %s and gRPC address %s; remove it first to give it new addresses",
				req.Id, addr, grpcAddr)
		case id != req.Id && addr == req.RaftAddr:
			return status.Errorf(codes.AlreadyExists, "join: Raft address %s belongs to arbiter %s", req.RaftAddr, id)
		}
	}
	return nil
}

func (s *server) RemoveArbiter(ctx context.Context, req *seqdv1.RemoveArbiterRequest) (*seqdv1.RemoveArbiterResponse, error) {
	if err := nodeid.Validate(req.Id); err != nil {
		return nil, invalid("remove: %v", err)
	}
	if !s.leader() {
		return forwardToLeader(ctx, s.a, func(ctx context.Context, cc *grpc.ClientConn) (*seqdv1.RemoveArbiterResponse, error) {
			return seqdv1.NewAdminClient(cc).RemoveArbiter(ctx, req)
		})
	}
	known, otherVoters := false, 0
	if cf := s.a.raft.GetConfiguration(); cf.Error() == nil {
		for _, srv := range cf.Configuration().Servers {
			known = known || string(srv.ID) == req.Id
			if string(srv.ID) != req.Id && srv.Suffrage == raft.Voter {
				otherVoters++
			}
		}
	}
	if !known {
		return nil, status.Errorf(codes.NotFound, "remove: %q is not an arbiter of this group", req.Id)
	}
	if otherVoters == 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "remove: %s is the group's last voter; join another arbiter first", req.Id)
	}
	if err := s.a.raft.RemoveServer(raft.ServerID(req.Id), 0, 30*time.Second).Error(); err != nil {
		addr, _ := s.a.leaderAddr()
		return nil, rpcerr.FromRaft(fmt.Errorf("remove %s: %w", req.Id, err), addr)
	}
	if req.Id != s.a.cfg.ID {
		if _, err := s.a.apply(ctx, clusterv1.CommandType_COMMAND_TYPE_REMOVE_ARBITER, &clusterv1.RemoveArbiterCommand{Id: req.Id}); err != nil {
			return nil, err
		}
	}
	s.a.log.Info("arbiter removed", "arbiter", req.Id)
	return &seqdv1.RemoveArbiterResponse{}, nil
}
