package arbiter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/seqd/seqd/internal/gossip"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// monitorLeadership starts the leader-only loop when this arbiter gains
// leadership and stops it when it loses it, from this one goroutine, so a
// quick lose-then-regain never leaves two loops running.
func (a *Arbiter) monitorLeadership() {
	defer a.wg.Done()
	var stopLoop func()
	for {
		select {
		case isLeader := <-a.raft.LeaderCh():
			// A true while the loop runs may hide a lost-then-regained
			// leadership (LeaderCh keeps only the latest value): restart the
			// loop so it forgets the old term's lease grants.
			if stopLoop != nil {
				stopLoop()
				stopLoop = nil
			}
			if isLeader {
				stopLoop = a.startLeaderLoop()
			}
		case <-a.stop:
			if stopLoop != nil {
				stopLoop()
			}
			return
		}
	}
}

// startLeaderLoop runs runLeader and returns a function that stops it and
// waits for it to return.
func (a *Arbiter) startLeaderLoop() func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.runLeader(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// observeLeaders counts the leaders this arbiter sees elected anywhere in
// the group. Raft also reports losing a leader (an observation with no
// leader), which is not an election: counting it too made each election
// count twice.
func (a *Arbiter) observeLeaders() {
	defer a.wg.Done()
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, electedLeader)
	a.raft.RegisterObserver(obs)
	defer a.raft.DeregisterObserver(obs)
	for {
		select {
		case <-ch:
			a.m.leaderChanges.Inc()
		case <-a.stop:
			return
		}
	}
}

// electedLeader says whether o reports a leader elected (not one lost).
func electedLeader(o *raft.Observation) bool {
	lo, ok := o.Data.(raft.LeaderObservation)
	return ok && lo.LeaderID != ""
}

func (a *Arbiter) runLeader(ctx context.Context) {
	a.m.isLeader.Set(1)
	defer a.m.isLeader.Set(0)
	defer a.m.unassignedSlots.Set(0) // a follower's last value would alert forever
	defer a.m.unservedSlots.Set(0)
	defer a.ready.Store(false)
	// Forget grant times from any earlier term; every instance counts as
	// granted now.
	a.leases.reset()
	// Renewals list the slots the FSM says an instance owns: wait until the
	// FSM holds every entry committed before this term (a reassignment by
	// the previous leader, say) before granting any.
	// Still leading while these fail (or the loop would have been
	// stopped): they are tried again, or this term would never grant a
	// lease or move a slot.
	var term uint64
	barrier := func() error {
		term = a.raft.CurrentTerm()
		err := a.raft.Barrier(a.cfg.ElectionTimeout * 5).Error()
		if err == nil && a.raft.CurrentTerm() != term {
			err = errors.New("the term changed during the barrier")
		}
		return err
	}
	if !a.untilDone(ctx, "leader barrier", barrier) {
		return
	}
	// Grant nothing before the cluster has a stored lease: a grant made
	// with this arbiter's own, were it longer than the one stored later,
	// would outlive a later leader's wait.
	if !a.untilDone(ctx, "cluster init", func() error { return a.initCluster(ctx) }) {
		return
	}
	lt, _ := a.leaseTimes()
	a.leases.setTimes(lt.lease, lt.margin)
	a.log.Info("became leader; waiting one lease before moving any owned slot", "lease", lt.lease+lt.margin)
	a.readyTerm.Store(term)
	a.ready.Store(true)
	a.ensureArbiterRecords(ctx)

	t := time.NewTicker(a.cfg.AssignInterval)
	defer t.Stop()
	records := time.NewTicker(time.Second)
	defer records.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.changed:
		case <-records.C:
			a.ensureArbiterRecords(ctx)
		}
		if err := a.assignOnce(ctx); err != nil && ctx.Err() == nil {
			a.log.Debug("assignment round failed", "err", err)
		}
	}
}

// untilDone calls f every AssignInterval until it succeeds, and reports
// false if ctx ended first. The first failure is a warning, the next ones
// are logged at debug level.
func (a *Arbiter) untilDone(ctx context.Context, what string, f func() error) bool {
	for failures := 0; ; failures++ {
		err := f()
		if err == nil {
			return true
		}
		if failures == 0 {
			a.log.Warn(what+" failed; retrying", "err", err)
		} else {
			a.log.Debug(what+" failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(a.cfg.AssignInterval):
		}
	}
}

// initCluster creates the cluster with this arbiter's settings, or, on a
// cluster created by a build that stored no lease, records this arbiter's
// lease (once: whoever leads first after the upgrade). With a lease
// stored, it proposes it again at the start of every term: an arbiter of
// an older build applies the recording as a plain retry and keeps no
// lease, nor do its snapshots, and a replica that restored one of those
// gets it back from this (INIT_CLUSTER fills a missing lease only). It
// returns nil once the cluster has a stored lease.
func (a *Arbiter) initCluster(ctx context.Context) error {
	cmd := &clusterv1.InitClusterCommand{
		ClusterId: a.cfg.ClusterID, SectionSize: a.cfg.SectionSize, NumSlots: a.cfg.NumSlots, Dc: a.cfg.DC,
		ShardSplits: a.cfg.ShardSplits, LeaseMs: a.cfg.Lease.Milliseconds(),
	}
	m := a.fsm.Meta()
	if m != nil {
		// The stored settings (checkSettings warned if the config
		// differs), so the command is a retry but for a missing lease.
		cmd.ClusterId, cmd.SectionSize, cmd.NumSlots, cmd.Dc, cmd.ShardSplits = m.ClusterId, m.SectionSize, m.NumSlots, m.Dc, storedSplits(m)
		if m.LeaseMs != 0 {
			cmd.LeaseMs = m.LeaseMs
		}
	}
	res, err := a.apply(ctx, clusterv1.CommandType_COMMAND_TYPE_INIT_CLUSTER, cmd)
	if err != nil {
		return err
	}
	if res.Err != nil {
		return res.Err
	}
	if _, ok := a.leaseTimes(); !ok {
		return fmt.Errorf("the cluster still has no stored lease after INIT_CLUSTER (lease %v)", a.cfg.Lease)
	}
	switch {
	case m != nil && m.LeaseMs != 0:
	case m == nil:
		a.log.Info("initialized cluster", "cluster", a.cfg.ClusterID, "section_size", a.cfg.SectionSize, "slots", a.cfg.NumSlots, "lease", a.fsm.Lease())
	default:
		a.log.Info("recorded the lease of a cluster created without one; it is fixed from now on", "cluster", m.ClusterId, "lease", a.fsm.Lease())
	}
	return nil
}

// ensureArbiterRecords keeps the address book complete: entries the
// bootstrap list knows and the FSM lacks (for members of the group only:
// one removed since stays out), this arbiter's own current addresses, and
// gossip addresses learned from the pool, so any arbiter can find the
// leader's gRPC address and AllocSvrs can join every arbiter's gossip.
func (a *Arbiter) ensureArbiterRecords(ctx context.Context) {
	have := a.fsm.Arbiters()
	want := map[string]*clusterv1.ArbiterRecord{
		a.cfg.ID: {Id: a.cfg.ID, RaftAddr: string(a.trans.LocalAddr()), GrpcAddr: a.cfg.GRPCAddr, GossipAddr: a.GossipAddr()},
	}
	cf := a.raft.GetConfiguration()
	member := func(id string) bool {
		return cf.Error() == nil && slices.ContainsFunc(cf.Configuration().Servers, func(s raft.Server) bool { return string(s.ID) == id })
	}
	for _, p := range a.cfg.Bootstrap {
		if p.ID != a.cfg.ID && have[p.ID] == nil && member(p.ID) {
			want[p.ID] = &clusterv1.ArbiterRecord{Id: p.ID, RaftAddr: p.RaftAddr, GrpcAddr: p.GRPCAddr, GossipAddr: p.GossipAddr}
		}
	}
	if a.gossip != nil {
		for id, r := range have {
			if addr := a.gossip.MemberAddr(gossip.ArbiterName(id)); addr != "" && addr != r.GossipAddr && id != a.cfg.ID {
				nr := proto.Clone(r).(*clusterv1.ArbiterRecord)
				nr.GossipAddr = addr
				want[id] = nr
			}
		}
	}
	for id, r := range want {
		if h := have[id]; h != nil && proto.Equal(h, r) {
			continue
		}
		if _, err := a.apply(ctx, clusterv1.CommandType_COMMAND_TYPE_SET_ARBITER, &clusterv1.SetArbiterCommand{Arbiter: r}); err != nil {
			a.log.Warn("recording arbiter address failed", "arbiter", id, "err", err)
		}
	}
}

// maintainGossip makes every arbiter, leader or not, keep joining the
// other arbiters' gossip until it sees them, so a follower that started
// before its peers still ends up in the pool.
func (a *Arbiter) maintainGossip() {
	defer a.wg.Done()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		var seeds []string
		missing := false
		for id, r := range a.fsm.Arbiters() {
			if id == a.cfg.ID || r.GossipAddr == "" {
				continue
			}
			seeds = append(seeds, r.GossipAddr)
			if s := a.gossip.State(gossip.ArbiterName(id)); s != gossip.Alive && s != gossip.Suspect {
				missing = true
			}
		}
		for _, p := range a.cfg.Bootstrap {
			if p.ID != a.cfg.ID && p.GossipAddr != "" {
				seeds = append(seeds, p.GossipAddr)
			}
		}
		if missing || (a.gossip.NumMembers() == 1 && len(seeds) > 0) {
			a.gossip.Join(seeds)
		}
		select {
		case <-t.C:
		case <-a.stop:
			return
		}
	}
}

// leaderLiveness answers the planner from the leader's lease table and gossip.
type leaderLiveness struct {
	a     *Arbiter
	nodes map[string]*clusterv1.NodeRecord
}

func (l leaderLiveness) alive(i instance) bool {
	n := l.nodes[i.id]
	if n == nil || n.Incarnation != i.inc || n.State == seqdv1.NodeState_NODE_STATE_REMOVED {
		return false
	}
	if l.a.gossipDown(i) {
		return false
	}
	return !l.a.leases.expireIfDue(i)
}

func (l leaderLiveness) expired(i instance) bool { return l.a.leases.expireIfDue(i) }

func (a *Arbiter) gossipDown(i instance) bool {
	return a.gossip != nil && a.gossip.IsDown(gossip.AllocSvrName(i.id, i.inc))
}

// assignOnce runs one round of the assignment loop.
func (a *Arbiter) assignOnce(ctx context.Context) error {
	meta := a.fsm.Meta()
	if meta == nil {
		return nil
	}
	slots := a.fsm.Slots()
	nodes := a.fsm.Nodes()
	a.m.routingVersion.Set(float64(meta.RoutingVersion))
	lv := leaderLiveness{a, nodes}
	unassigned, unserved := 0, 0
	for _, s := range slots {
		switch {
		case s.Owner == "":
			unassigned++
			unserved++
		case lv.expired(instance{s.Owner, s.OwnerIncarnation}):
			// Its owner's lease ran out: no one serves it until the
			// round moves it, and no one can if every AllocSvr is gone.
			unserved++
		}
	}
	a.m.unassignedSlots.Set(float64(unassigned))
	a.m.unservedSlots.Set(float64(unserved))

	p := planAssignments(slots, nodes, lv, int(meta.NumSlots))
	if len(p.assign) > 0 {
		res, err := a.apply(ctx, clusterv1.CommandType_COMMAND_TYPE_ASSIGN_SLOTS, &clusterv1.AssignSlotsCommand{Moves: p.assign})
		if err != nil {
			return err
		}
		// One line per (expired owner, new owner), not one per slot: a
		// dead AllocSvr's 128 slots made 128 lines.
		type pair struct{ from, to string }
		var order []pair
		moved := map[pair][]uint32{}
		for i, m := range p.assign {
			if res.Applied[i] {
				kind := "expired"
				if from := slots[m.Slot].Owner; from == "" {
					kind = "initial"
				} else {
					k := pair{from, m.ToNode}
					if moved[k] == nil {
						order = append(order, k)
					}
					moved[k] = append(moved[k], m.Slot)
				}
				a.m.slotMoves.WithLabelValues(kind).Inc()
			}
		}
		for _, k := range order {
			a.log.Info("moved slots of expired owner", "from", k.from, "to", k.to, "count", len(moved[k]), "slots", moved[k])
		}
	}
	if len(p.begin) > 0 {
		res, err := a.apply(ctx, clusterv1.CommandType_COMMAND_TYPE_BEGIN_MOVES, &clusterv1.BeginMovesCommand{Moves: p.begin})
		if err != nil {
			return err
		}
		for i, m := range p.begin {
			if res.Applied[i] {
				p.complete = append(p.complete, m)
			}
		}
	}
	if len(p.complete) > 0 {
		a.completeMoves(ctx, slots, nodes, p.complete)
	}
	a.leases.forget(func(i instance) bool {
		if n := nodes[i.id]; n != nil && n.Incarnation == i.inc {
			return true
		}
		for _, s := range slots {
			if s.Owner == i.id && s.OwnerIncarnation == i.inc {
				return true
			}
		}
		return false
	})
	return nil
}

// completeMoves finishes planned moves: each old owner stops serving and
// reports its high-water marks, then the slots change owner with the marks,
// so the new owner serves at once without waiting out a lease.
func (a *Arbiter) completeMoves(ctx context.Context, slots []*clusterv1.SlotRecord, nodes map[string]*clusterv1.NodeRecord, moves []*clusterv1.SlotMove) {
	byOwner := map[instance][]*clusterv1.SlotMove{}
	for _, m := range moves {
		s := slots[m.Slot]
		i := instance{s.Owner, s.OwnerIncarnation}
		byOwner[i] = append(byOwner[i], m)
	}
	var done []*clusterv1.SlotMove
	for owner, ms := range byOwner {
		n := nodes[owner.id]
		if n == nil || n.Incarnation != owner.inc {
			continue
		}
		req := &clusterv1.ReleaseRequest{Incarnation: owner.inc}
		for _, m := range ms {
			req.Slots = append(req.Slots, &clusterv1.OwnedSlot{Slot: m.Slot, Generation: m.FromGeneration})
		}
		cc, err := a.conns.Get(n.Addr)
		if err != nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := clusterv1.NewAllocNodeClient(cc).Release(rctx, req)
		cancel()
		if err != nil {
			// Retried next round; if the owner dies, its lease runs out and
			// the planner hands the slots over without marks.
			a.log.Debug("release failed", "owner", owner.id, "slots", len(ms), "err", err)
			continue
		}
		numSlots := uint64(len(slots))
		for _, m := range ms {
			for _, mk := range resp.Marks {
				if mk.Section%numSlots == uint64(m.Slot) {
					m.Marks = append(m.Marks, mk)
				}
			}
			done = append(done, m)
		}
	}
	if len(done) == 0 {
		return
	}
	res, err := a.apply(ctx, clusterv1.CommandType_COMMAND_TYPE_ASSIGN_SLOTS, &clusterv1.AssignSlotsCommand{Moves: done})
	if err != nil {
		a.log.Debug("assigning released slots failed", "err", err)
		return
	}
	for i := range done {
		if res.Applied[i] {
			a.m.slotMoves.WithLabelValues("planned").Inc()
		}
	}
}
