package arbiter

import (
	"fmt"
	"sort"
	"testing"

	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// fakeLiveness answers the planner from two sets. Instances in neither set
// are neither alive nor expired (lease still running, renewals missing).
type fakeLiveness struct {
	live    map[instance]bool
	gone    map[instance]bool // lease certainly ran out
	askedEx map[instance]int
}

func newFakeLiveness() *fakeLiveness {
	return &fakeLiveness{live: map[instance]bool{}, gone: map[instance]bool{}, askedEx: map[instance]int{}}
}

func (l *fakeLiveness) alive(i instance) bool { return l.live[i] }
func (l *fakeLiveness) expired(i instance) bool {
	l.askedEx[i]++
	return l.gone[i]
}

// planInput is a cluster state for the planner.
type planInput struct {
	slots []*clusterv1.SlotRecord
	nodes map[string]*clusterv1.NodeRecord
	lv    *fakeLiveness
}

// newPlanInput registers the given nodes (incarnation 1, active, alive)
// and makes numSlots unowned slots, slot i in generation 10+i.
func newPlanInput(numSlots int, nodes ...string) *planInput {
	in := &planInput{nodes: map[string]*clusterv1.NodeRecord{}, lv: newFakeLiveness()}
	for i := range numSlots {
		in.slots = append(in.slots, &clusterv1.SlotRecord{Slot: uint32(i), Generation: uint64(10 + i)})
	}
	for _, n := range nodes {
		in.nodes[n] = &clusterv1.NodeRecord{Id: n, Incarnation: 1, Addr: n + ":1", State: stateActive}
		in.lv.live[instance{n, 1}] = true
	}
	return in
}

// own gives slots to node (incarnation 1).
func (in *planInput) own(node string, slots ...int) *planInput {
	for _, s := range slots {
		in.slots[s].Owner, in.slots[s].OwnerIncarnation = node, 1
	}
	return in
}

func (in *planInput) plan(maxPlanned int) plan {
	return planAssignments(in.slots, in.nodes, in.lv, maxPlanned)
}

func slotRange(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// checkMoves fails unless every move names its slot's current generation
// and a registered target incarnation.
func (in *planInput) checkMoves(t *testing.T, what string, moves []*clusterv1.SlotMove) {
	t.Helper()
	for _, m := range moves {
		if m.FromGeneration != in.slots[m.Slot].Generation {
			t.Errorf("%s move of slot %d from generation %d, but the slot is in %d", what, m.Slot, m.FromGeneration, in.slots[m.Slot].Generation)
		}
		if n := in.nodes[m.ToNode]; n == nil || n.Incarnation != m.ToIncarnation {
			t.Errorf("%s move of slot %d to %s/%d, which is not a registered incarnation", what, m.Slot, m.ToNode, m.ToIncarnation)
		}
		if len(m.Marks) != 0 {
			t.Errorf("%s move of slot %d carries marks; only the old owner can report them", what, m.Slot)
		}
	}
}

// loadsAfter returns each node's slot count once the moves are done.
func loadsAfter(slots []*clusterv1.SlotRecord, moves ...[]*clusterv1.SlotMove) map[string]int {
	owner := map[uint32]string{}
	for _, s := range slots {
		owner[s.Slot] = s.Owner
	}
	for _, ms := range moves {
		for _, m := range ms {
			owner[m.Slot] = m.ToNode
		}
	}
	load := map[string]int{}
	for _, o := range owner {
		if o != "" {
			load[o]++
		}
	}
	return load
}

func movedSlots(moves []*clusterv1.SlotMove) []uint32 {
	var out []uint32
	for _, m := range moves {
		out = append(out, m.Slot)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func TestPlanSpreadsUnownedSlots(t *testing.T) {
	tests := []struct {
		name      string
		in        *planInput
		wantLoads map[string]int
	}{
		{"12 slots over 3 nodes", newPlanInput(12, "n1", "n2", "n3"), map[string]int{"n1": 4, "n2": 4, "n3": 4}},
		{"10 slots over 3 nodes", newPlanInput(10, "n1", "n2", "n3"), map[string]int{"n1": 4, "n2": 3, "n3": 3}},
		{"1 node takes all", newPlanInput(5, "n1"), map[string]int{"n1": 5}},
		{"fills the less loaded node first", newPlanInput(8, "n1", "n2").own("n1", 0, 1, 2, 3), map[string]int{"n1": 4, "n2": 4}},
		{"no nodes: nothing to do", newPlanInput(4), map[string]int{}},
		{
			name: "draining and dead nodes get nothing",
			in: func() *planInput {
				in := newPlanInput(6, "n1", "n2", "n3", "n4")
				in.nodes["n2"].State = stateDraining
				delete(in.lv.live, instance{"n3", 1})
				return in
			}(),
			wantLoads: map[string]int{"n1": 3, "n4": 3},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.in.plan(len(tc.in.slots))
			tc.in.checkMoves(t, "assign", p.assign)
			if len(p.begin) != 0 || len(p.complete) != 0 {
				t.Errorf("planned moves for a cluster with nothing to move: begin %v complete %v", p.begin, p.complete)
			}
			got := loadsAfter(tc.in.slots, p.assign)
			if fmt.Sprint(got) != fmt.Sprint(tc.wantLoads) {
				t.Fatalf("loads after assignment = %v, want %v", got, tc.wantLoads)
			}
			for _, m := range p.assign {
				if tc.in.slots[m.Slot].Owner != "" {
					t.Errorf("slot %d is owned by %s but was assigned", m.Slot, tc.in.slots[m.Slot].Owner)
				}
			}
		})
	}
}

func TestPlanOwnerWithoutLease(t *testing.T) {
	// n3 owns slots 0..3 and has stopped renewing.
	setup := func() *planInput {
		in := newPlanInput(6, "n1", "n2", "n3").own("n3", 0, 1, 2, 3).own("n1", 4).own("n2", 5)
		delete(in.lv.live, instance{"n3", 1})
		return in
	}
	t.Run("lease still running: slots stay", func(t *testing.T) {
		in := setup()
		p := in.plan(6)
		if len(p.assign)+len(p.begin)+len(p.complete) != 0 {
			t.Fatalf("moved slots of an owner whose lease may still run: assign %v begin %v complete %v", p.assign, p.begin, p.complete)
		}
		if in.lv.askedEx[instance{"n3", 1}] == 0 {
			t.Error("the planner never asked whether n3 expired")
		}
	})
	t.Run("expired: slots reassigned at once", func(t *testing.T) {
		in := setup()
		in.lv.gone[instance{"n3", 1}] = true
		p := in.plan(0) // not planned moves: maxPlanned does not hold them back
		in.checkMoves(t, "assign", p.assign)
		if got := movedSlots(p.assign); fmt.Sprint(got) != "[0 1 2 3]" {
			t.Fatalf("assigned slots %v, want [0 1 2 3]", got)
		}
		for _, m := range p.assign {
			if m.ToNode == "n3" {
				t.Fatalf("slot %d given back to the expired owner", m.Slot)
			}
		}
		if got := loadsAfter(in.slots, p.assign); got["n1"] != 3 || got["n2"] != 3 {
			t.Fatalf("loads after = %v, want n1 3 n2 3", got)
		}
	})
	t.Run("owner restarted: old incarnation's slots wait for its expiry", func(t *testing.T) {
		in := setup()
		in.nodes["n3"].Incarnation = 2
		in.lv.live[instance{"n3", 2}] = true
		p := in.plan(6)
		for _, m := range append(append(p.assign, p.begin...), p.complete...) {
			if m.Slot <= 3 {
				t.Fatalf("slot %d of n3's old incarnation moved before it expired", m.Slot)
			}
		}
		in.lv.gone[instance{"n3", 1}] = true
		p = in.plan(6)
		if got := movedSlots(p.assign); fmt.Sprint(got) != "[0 1 2 3]" {
			t.Fatalf("assigned %v once the old incarnation expired, want [0 1 2 3]", got)
		}
		// The new incarnation is a valid target.
		if got := loadsAfter(in.slots, p.assign); got["n3"] != 2 || got["n1"] != 2 || got["n2"] != 2 {
			t.Fatalf("loads after = %v, want 2 each", got)
		}
	})
	t.Run("alive owner keeps its slots whatever expired says", func(t *testing.T) {
		in := newPlanInput(4, "n1", "n2").own("n1", 0, 1).own("n2", 2, 3)
		in.lv.gone[instance{"n1", 1}] = true // would be wrong to act on
		p := in.plan(4)
		if len(p.assign)+len(p.begin) != 0 {
			t.Fatalf("moved slots of alive, balanced owners: %v %v", p.assign, p.begin)
		}
	})
}

func TestPlanDrain(t *testing.T) {
	tests := []struct {
		name       string
		maxPlanned int
		wantBegins int
	}{
		{"all at once", 10, 4},
		{"capped", 3, 3},
		{"one", 1, 1},
		{"none", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := newPlanInput(8, "n1", "n2", "n3").own("n1", 0, 1, 2, 3).own("n2", 4, 5).own("n3", 6, 7)
			in.nodes["n1"].State = stateDraining
			p := in.plan(tc.maxPlanned)
			in.checkMoves(t, "begin", p.begin)
			if len(p.assign) != 0 || len(p.complete) != 0 {
				t.Fatalf("drain produced immediate moves: assign %v complete %v", p.assign, p.complete)
			}
			if len(p.begin) != tc.wantBegins {
				t.Fatalf("%d planned moves, want %d", len(p.begin), tc.wantBegins)
			}
			for _, m := range p.begin {
				if in.slots[m.Slot].Owner != "n1" {
					t.Errorf("moved slot %d of %s while draining n1", m.Slot, in.slots[m.Slot].Owner)
				}
				if m.ToNode == "n1" {
					t.Errorf("slot %d moved to the draining node", m.Slot)
				}
			}
			if tc.wantBegins == 4 {
				if got := loadsAfter(in.slots, p.begin); got["n1"] != 0 || got["n2"] != 4 || got["n3"] != 4 {
					t.Fatalf("loads after the drain = %v, want n2 4 n3 4", got)
				}
			}
		})
	}
}

func TestPlanMovesInProgress(t *testing.T) {
	tests := []struct {
		name  string
		setup func(in *planInput)
		// want: "complete", "re-aim" or "none"
		want string
	}{
		{"target alive: complete", func(in *planInput) {}, "complete"},
		{"target dead: re-aim", func(in *planInput) { delete(in.lv.live, instance{"n2", 1}) }, "re-aim"},
		{"target restarted: re-aim", func(in *planInput) {
			in.nodes["n2"].Incarnation = 2
			in.lv.live[instance{"n2", 2}] = true
		}, "re-aim"},
		{"target draining: re-aim", func(in *planInput) { in.nodes["n2"].State = stateDraining }, "re-aim"},
		{"target deregistered: re-aim", func(in *planInput) { delete(in.nodes, "n2") }, "re-aim"},
		{"owner without lease: wait", func(in *planInput) { delete(in.lv.live, instance{"n1", 1}) }, "none"},
		{"owner expired: assign", func(in *planInput) {
			delete(in.lv.live, instance{"n1", 1})
			in.lv.gone[instance{"n1", 1}] = true
		}, "assign"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Slot 0 is moving from n1 to n2; everything else balanced.
			in := newPlanInput(6, "n1", "n2", "n3").own("n1", 0, 1).own("n2", 2, 3).own("n3", 4, 5)
			in.slots[0].MovingTo, in.slots[0].MovingToIncarnation = "n2", 1
			tc.setup(in)
			p := in.plan(6)
			var mine []*clusterv1.SlotMove
			kind := "none"
			for k, ms := range map[string][]*clusterv1.SlotMove{"assign": p.assign, "re-aim": p.begin, "complete": p.complete} {
				for _, m := range ms {
					if m.Slot == 0 {
						mine = append(mine, m)
						kind = k
					}
				}
			}
			if len(mine) > 1 {
				t.Fatalf("slot 0 planned %d times: %v", len(mine), mine)
			}
			if kind != tc.want {
				t.Fatalf("slot 0: %s, want %s (plan %+v)", kind, tc.want, p)
			}
			if kind == "none" {
				return
			}
			m := mine[0]
			if m.FromGeneration != in.slots[0].Generation {
				t.Errorf("move from generation %d, slot is in %d", m.FromGeneration, in.slots[0].Generation)
			}
			switch kind {
			case "complete":
				if m.ToNode != "n2" || m.ToIncarnation != 1 {
					t.Errorf("completed to %s/%d, want n2/1", m.ToNode, m.ToIncarnation)
				}
			case "re-aim", "assign":
				n := in.nodes[m.ToNode]
				if n == nil || n.Incarnation != m.ToIncarnation || n.State != stateActive || !in.lv.live[instance{m.ToNode, m.ToIncarnation}] {
					t.Errorf("move aimed at %s/%d, which is not an active live node", m.ToNode, m.ToIncarnation)
				}
				if m.ToNode == "n1" {
					t.Errorf("move aimed back at its owner")
				}
			}
		})
	}
}

func TestPlanMaxPlanned(t *testing.T) {
	// 12 slots on n1, n2 joined empty, n3 draining with 2 more, 2 unowned.
	setup := func() *planInput {
		in := newPlanInput(16, "n1", "n2", "n3").own("n1", slotRange(0, 12)...).own("n3", 12, 13)
		in.nodes["n3"].State = stateDraining
		return in
	}
	for _, maxPlanned := range []int{0, 1, 2, 3, 5, 100} {
		t.Run(fmt.Sprint(maxPlanned), func(t *testing.T) {
			in := setup()
			p := in.plan(maxPlanned)
			if len(p.begin) > maxPlanned {
				t.Fatalf("%d planned moves, max %d", len(p.begin), maxPlanned)
			}
			if got := movedSlots(p.assign); fmt.Sprint(got) != "[14 15]" {
				t.Fatalf("unowned slots assigned = %v, want [14 15] whatever the cap", got)
			}
			drains := 0
			for _, m := range p.begin {
				if in.slots[m.Slot].Owner == "n3" {
					drains++
				}
			}
			if want := min(2, maxPlanned); drains != want {
				t.Errorf("%d drain moves, want %d (drains go before balancing)", drains, want)
			}
			if maxPlanned == 100 {
				loads := loadsAfter(in.slots, p.assign, p.begin)
				if loads["n3"] != 0 || absInt(loads["n1"]-loads["n2"]) > 1 {
					t.Errorf("uncapped plan ends with loads %v, want n3 empty and n1, n2 within one", loads)
				}
			}
		})
	}
}

func absInt(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func TestPlanIsReproducible(t *testing.T) {
	in := newPlanInput(32, "n5", "n1", "n4", "n2", "n3").own("n1", slotRange(0, 20)...).own("n2", 20, 21)
	in.nodes["n2"].State = stateDraining
	want := in.plan(100)
	for range 20 {
		got := in.plan(100)
		for _, pair := range [][2][]*clusterv1.SlotMove{{want.assign, got.assign}, {want.begin, got.begin}, {want.complete, got.complete}} {
			if len(pair[0]) != len(pair[1]) {
				t.Fatalf("plans differ in length: %v vs %v", pair[0], pair[1])
			}
			for i := range pair[0] {
				if !proto.Equal(pair[0][i], pair[1][i]) {
					t.Fatalf("plans differ at %d: %v vs %v", i, pair[0][i], pair[1][i])
				}
			}
		}
	}
}

// simulateLeader runs assignment rounds the way assignOnce does, against
// a real FSM, with every release succeeding at once. It returns the number
// of rounds until the plan is empty and the number of planned moves.
func simulateLeader(t *testing.T, r *fsmRig, lv liveness, maxRounds int) (rounds, planned int) {
	t.Helper()
	for rounds = 0; rounds < maxRounds; rounds++ {
		p := planAssignments(r.f.Slots(), r.f.Nodes(), lv, int(r.f.Meta().NumSlots))
		if len(p.assign)+len(p.begin)+len(p.complete) == 0 {
			return rounds, planned
		}
		if len(p.assign) > 0 {
			r.mustApply(cmdAssign, &clusterv1.AssignSlotsCommand{Moves: p.assign})
		}
		if len(p.begin) > 0 {
			res := r.mustApply(cmdBegin, &clusterv1.BeginMovesCommand{Moves: p.begin})
			for i, m := range p.begin {
				if res.Applied[i] {
					p.complete = append(p.complete, m)
					planned++
				}
			}
		}
		if len(p.complete) > 0 {
			r.mustApply(cmdAssign, &clusterv1.AssignSlotsCommand{Moves: p.complete})
		}
	}
	t.Fatalf("assignment did not settle in %d rounds", maxRounds)
	return
}

// registryLiveness: every registered incarnation is alive.
type registryLiveness struct{ f *FSM }

func (l registryLiveness) alive(i instance) bool {
	n := l.f.Node(i.id)
	return n != nil && n.Incarnation == i.inc
}
func (l registryLiveness) expired(i instance) bool { return !l.alive(i) }

func TestPlanBalanceAfterJoin(t *testing.T) {
	tests := []struct {
		slots       uint32
		first, join int
	}{
		{12, 2, 1}, {16, 1, 3}, {7, 2, 1}, {64, 3, 2}, {5, 1, 4}, {3, 1, 5},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d slots %d+%d nodes", tc.slots, tc.first, tc.join), func(t *testing.T) {
			r := newFSMRig(t)
			r.init(tc.slots)
			lv := registryLiveness{r.f}
			for i := range tc.first {
				r.register(fmt.Sprint("n", i), 1)
			}
			simulateLeader(t, r, lv, 5)
			for i := range tc.join {
				r.register(fmt.Sprint("n", tc.first+i), 1)
			}
			before := loadsAfter(r.f.Slots())
			_, planned := simulateLeader(t, r, lv, 5)

			loads := loadsAfter(r.f.Slots())
			lo, hi := int(tc.slots), 0
			for i := range tc.first + tc.join {
				l := loads[fmt.Sprint("n", i)]
				lo, hi = min(lo, l), max(hi, l)
			}
			if hi-lo > 1 {
				t.Fatalf("loads after the join = %v; they differ by %d", loads, hi-lo)
			}
			// Only the slots the new nodes end up with should have moved.
			minimal := 0
			for n, l := range loads {
				if d := l - before[n]; d > 0 {
					minimal += d
				}
			}
			if planned != minimal {
				t.Errorf("%d planned moves to go from %v to %v; %d would do", planned, before, loads, minimal)
			}
			for _, s := range r.f.Slots() {
				if s.Owner == "" || s.MovingTo != "" {
					t.Fatalf("slot %d left unowned or mid-move: %v", s.Slot, s)
				}
			}
		})
	}
}

// TestPlanBalanceCountsMovesInProgress: when a planned move is still
// pending (its release failed last round), the plan completes it; the
// balancing in the same round must count it, or it overshoots and the next
// round moves slots back.
func TestPlanBalanceCountsMovesInProgress(t *testing.T) {
	in := newPlanInput(12, "n1", "n2", "n3").own("n1", slotRange(0, 6)...).own("n2", slotRange(6, 12)...)
	for _, s := range []int{0, 1} {
		in.slots[s].MovingTo, in.slots[s].MovingToIncarnation = "n3", 1
	}
	p := in.plan(12)
	if got := movedSlots(p.complete); fmt.Sprint(got) != "[0 1]" {
		t.Fatalf("completed %v, want [0 1]", got)
	}
	loads := loadsAfter(in.slots, p.complete, p.begin)
	for _, n := range []string{"n1", "n2", "n3"} {
		if loads[n] != 4 {
			t.Fatalf("loads after the round = %v, want 4 each", loads)
		}
	}
}

func TestPlanSettlesAfterNodeLoss(t *testing.T) {
	r := newFSMRig(t)
	r.init(12)
	for _, n := range []string{"n1", "n2", "n3"} {
		r.register(n, 1)
	}
	lv := &switchLiveness{f: r.f, dead: map[string]bool{}}
	simulateLeader(t, r, lv, 5)
	lv.dead["n2"] = true
	if _, planned := simulateLeader(t, r, lv, 5); planned != 0 {
		t.Errorf("%d planned moves after a node died; its slots need no hand-over", planned)
	}
	loads := loadsAfter(r.f.Slots())
	if loads["n2"] != 0 || loads["n1"] != 6 || loads["n3"] != 6 {
		t.Fatalf("loads after n2 died = %v, want n1 6 n3 6", loads)
	}
}

// switchLiveness: registered incarnations are alive unless marked dead,
// and the dead are expired.
type switchLiveness struct {
	f    *FSM
	dead map[string]bool
}

func (l *switchLiveness) alive(i instance) bool {
	n := l.f.Node(i.id)
	return n != nil && n.Incarnation == i.inc && !l.dead[i.id] && n.State != seqdv1.NodeState_NODE_STATE_REMOVED
}
func (l *switchLiveness) expired(i instance) bool { return !l.alive(i) }
