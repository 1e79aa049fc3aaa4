package arbiter

import (
	"sort"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// plan is one round of the assignment loop's decisions.
type plan struct {
	// assign hands slots over at once: they are unowned, or their owner's
	// lease has certainly run out. No high-water marks.
	assign []*clusterv1.SlotMove
	// begin starts planned moves (drain, rebalance): the owner is alive and
	// will be asked to stop and report its high-water marks.
	begin []*clusterv1.SlotMove
	// complete lists planned moves already begun, to finish now.
	complete []*clusterv1.SlotMove
}

// liveness answers the planner's questions about instances. expired may
// declare an instance expired as a side effect (see leaseTable.expireIfDue).
type liveness interface {
	// alive: registered as the node's current incarnation, lease not
	// expired, and not reported dead by gossip.
	alive(i instance) bool
	// expired: the instance's lease has certainly run out at every
	// AllocSvr, so its slots may move without its cooperation.
	expired(i instance) bool
}

// planAssignments decides which slots move. It is a pure function of the
// FSM state and the liveness answers, so it can be tested alone.
// maxPlanned caps how many planned moves (drain and balance) it starts.
func planAssignments(slots []*clusterv1.SlotRecord, nodes map[string]*clusterv1.NodeRecord, lv liveness, maxPlanned int) plan {
	var p plan
	// Targets: active, alive nodes, with their current load.
	load := map[string]int{}
	target := map[string]*clusterv1.NodeRecord{}
	for id, n := range nodes {
		if n.State == seqdv1.NodeState_NODE_STATE_ACTIVE && lv.alive(instance{id, n.Incarnation}) {
			target[id] = n
			load[id] = 0
		}
	}
	for _, s := range slots {
		if _, ok := target[s.Owner]; ok && s.OwnerIncarnation == target[s.Owner].Incarnation {
			load[s.Owner]++
		}
	}
	// For ties, the lowest id wins so plans are reproducible.
	leastLoaded := func(exclude string) *clusterv1.NodeRecord {
		var best *clusterv1.NodeRecord
		for id, n := range target {
			if id == exclude {
				continue
			}
			if best == nil || load[id] < load[best.Id] || (load[id] == load[best.Id] && id < best.Id) {
				best = n
			}
		}
		return best
	}
	move := func(s *clusterv1.SlotRecord, to *clusterv1.NodeRecord) *clusterv1.SlotMove {
		return &clusterv1.SlotMove{Slot: s.Slot, FromGeneration: s.Generation, ToNode: to.Id, ToIncarnation: to.Incarnation}
	}
	planned := 0
	var keepers []*clusterv1.SlotRecord // slots staying put, candidates for balancing
	for _, s := range slots {
		if s.Owner == "" {
			if to := leastLoaded(""); to != nil {
				p.assign = append(p.assign, move(s, to))
				load[to.Id]++
			}
			continue
		}
		owner := instance{s.Owner, s.OwnerIncarnation}
		ownerAlive := lv.alive(owner)
		if !ownerAlive {
			if lv.expired(owner) {
				if to := leastLoaded(""); to != nil {
					p.assign = append(p.assign, move(s, to))
					load[to.Id]++
				}
			}
			continue
		}
		if s.MovingTo != "" {
			if t, ok := target[s.MovingTo]; ok && t.Incarnation == s.MovingToIncarnation {
				p.complete = append(p.complete, move(s, t))
				// Count it where it is going, so balancing this round does
				// not undo it.
				load[t.Id]++
				if _, ok := load[s.Owner]; ok {
					load[s.Owner]--
				}
				continue
			}
			// The target went away: aim the move elsewhere.
			if to := leastLoaded(s.Owner); to != nil {
				p.begin = append(p.begin, move(s, to))
				load[to.Id]++
				load[s.Owner]--
			}
			continue
		}
		if n := nodes[s.Owner]; n != nil && n.State == seqdv1.NodeState_NODE_STATE_DRAINING {
			if planned < maxPlanned {
				if to := leastLoaded(s.Owner); to != nil {
					p.begin = append(p.begin, move(s, to))
					load[to.Id]++
					planned++
				}
			}
			continue
		}
		keepers = append(keepers, s)
	}
	// Balance: move slots from the most to the least loaded target until
	// loads differ by at most one.
	byOwner := map[string][]*clusterv1.SlotRecord{}
	for _, s := range keepers {
		if _, ok := target[s.Owner]; ok {
			byOwner[s.Owner] = append(byOwner[s.Owner], s)
		}
	}
	for planned < maxPlanned {
		ids := make([]string, 0, len(target))
		for id := range target {
			ids = append(ids, id)
		}
		if len(ids) < 2 {
			break
		}
		sort.Slice(ids, func(i, j int) bool {
			if load[ids[i]] != load[ids[j]] {
				return load[ids[i]] > load[ids[j]]
			}
			return ids[i] < ids[j]
		})
		hi, lo := ids[0], ids[len(ids)-1]
		if load[hi]-load[lo] <= 1 || len(byOwner[hi]) == 0 {
			break
		}
		s := byOwner[hi][len(byOwner[hi])-1]
		byOwner[hi] = byOwner[hi][:len(byOwner[hi])-1]
		p.begin = append(p.begin, move(s, target[lo]))
		load[hi]--
		load[lo]++
		planned++
	}
	return p
}
