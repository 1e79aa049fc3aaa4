package arbiter

import (
	"bytes"
	"os"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	"github.com/seqd/seqd/seqfmt"
)

// fuzzBase is the state every FuzzFSMApply input is applied to: 4 slots,
// n1 owning 0 and 1, n2 owning 2 with a planned move of slot 2 to n1 in
// progress, slot 3 unowned, sections 0..7 loaded, one unused hand-over mark.
func fuzzBase(t testing.TB) *FSM {
	f := NewFSM()
	for _, c := range fuzzBaseCommands(t) {
		if res := applyData(f, c); res.Err != nil {
			t.Fatalf("fuzz base: %v", res.Err)
		}
	}
	return f
}

func fuzzBaseCommands(t testing.TB) [][]byte {
	return [][]byte{
		encodeCmd(t, cmdInit, &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 100, NumSlots: 4, Dc: "dc1"}),
		encodeCmd(t, cmdRegister, &clusterv1.RegisterNodeCommand{NodeId: "n1", Incarnation: 1, Addr: "n1:1"}),
		encodeCmd(t, cmdRegister, &clusterv1.RegisterNodeCommand{NodeId: "n2", Incarnation: 1, Addr: "n2:1"}),
		encodeCmd(t, cmdAssign, &clusterv1.AssignSlotsCommand{Moves: []*clusterv1.SlotMove{
			{Slot: 0, ToNode: "n1", ToIncarnation: 1}, {Slot: 1, ToNode: "n1", ToIncarnation: 1}, {Slot: 2, ToNode: "n2", ToIncarnation: 1},
		}}),
		encodeCmd(t, cmdOps, &clusterv1.SectionOpsCommand{Ops: []*clusterv1.OwnedSectionOp{
			{NodeId: "n1", Incarnation: 1, Op: acquireOp(0, 1, 100)},
			{NodeId: "n1", Incarnation: 1, Op: acquireOp(4, 1, 100)},
			{NodeId: "n1", Incarnation: 1, Op: acquireOp(1, 1, 100)},
			{NodeId: "n1", Incarnation: 1, Op: acquireOp(5, 1, 100)},
			{NodeId: "n2", Incarnation: 1, Op: acquireOp(2, 1, 100)},
			{NodeId: "n2", Incarnation: 1, Op: raiseOp(6, 1, 1000)},
		}}),
		encodeCmd(t, cmdAssign, &clusterv1.AssignSlotsCommand{Moves: []*clusterv1.SlotMove{
			{Slot: 1, FromGeneration: 1, ToNode: "n1", ToIncarnation: 1, Marks: []*clusterv1.SectionMark{{Section: 5, HighWater: 40}}},
		}}),
		encodeCmd(t, cmdBegin, &clusterv1.BeginMovesCommand{Moves: []*clusterv1.SlotMove{{Slot: 2, FromGeneration: 1, ToNode: "n1", ToIncarnation: 1}}}),
	}
}

// fuzzSeedCommands is one valid (or nearly valid) command of every type.
func fuzzSeedCommands(t testing.TB) [][]byte {
	return [][]byte{
		encodeCmd(t, cmdInit, &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 100, NumSlots: 4}),
		encodeCmd(t, cmdInit, &clusterv1.InitClusterCommand{ClusterId: "c2", SectionSize: 1, NumSlots: MaxSlots}),
		encodeCmd(t, cmdInit, &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 100, NumSlots: 4, LeaseMs: 2000}),
		encodeCmd(t, cmdInit, &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 100, NumSlots: 4, LeaseMs: -1}),
		encodeCmd(t, cmdRegister, &clusterv1.RegisterNodeCommand{NodeId: "n3", Incarnation: 1, Addr: "n3:1"}),
		encodeCmd(t, cmdRegister, &clusterv1.RegisterNodeCommand{NodeId: "n1", Incarnation: 2, Addr: "n1:2"}),
		encodeCmd(t, cmdOps, &clusterv1.SectionOpsCommand{Ops: []*clusterv1.OwnedSectionOp{
			{NodeId: "n1", Incarnation: 1, Op: acquireOp(4, 1, 50)},
			{NodeId: "n1", Incarnation: 1, Op: acquireOp(5, 2, 50)},
			{NodeId: "n2", Incarnation: 1, Op: raiseOp(2, 1, seqfmt.MaxCounter)},
			{NodeId: "n1", Incarnation: 1, Op: raiseOp(0, 1, seqfmt.MaxCounter+1)},
			{NodeId: "n1", Incarnation: 1},
		}}),
		encodeCmd(t, cmdAssign, &clusterv1.AssignSlotsCommand{Moves: []*clusterv1.SlotMove{
			{Slot: 3, ToNode: "n2", ToIncarnation: 1},
			{Slot: 0, FromGeneration: 1, ToNode: "n2", ToIncarnation: 1, Marks: []*clusterv1.SectionMark{{Section: 4, HighWater: 99}, {Section: 1, HighWater: 1}}},
			{Slot: 2, FromGeneration: 1},
			{Slot: 9, ToNode: "n2", ToIncarnation: 1},
		}}),
		encodeCmd(t, cmdBegin, &clusterv1.BeginMovesCommand{Moves: []*clusterv1.SlotMove{{Slot: 0, FromGeneration: 1, ToNode: "n2", ToIncarnation: 1}}}),
		encodeCmd(t, cmdNodeState, &clusterv1.SetNodeStateCommand{NodeId: "n2", State: stateDraining}),
		encodeCmd(t, cmdDeregister, &clusterv1.DeregisterNodeCommand{NodeId: "n2", Incarnation: 1}),
		encodeCmd(t, cmdSetArb, &clusterv1.SetArbiterCommand{Arbiter: &clusterv1.ArbiterRecord{Id: "a1", RaftAddr: "r:1"}}),
		encodeCmd(t, cmdRemoveArb, &clusterv1.RemoveArbiterCommand{Id: "a1"}),
		{},
		{0xff},
	}
}

// fsmView is what the fuzz invariants compare across an apply.
type fsmView struct {
	version  uint64
	numSlots uint32
	slots    []*clusterv1.SlotRecord
	nodes    map[string]*clusterv1.NodeRecord
	maxSeq   map[uint64]uint64
}

func viewOf(f *FSM) fsmView {
	v := fsmView{version: f.RoutingVersion(), slots: f.Slots(), nodes: f.Nodes(), maxSeq: map[uint64]uint64{}}
	if m := f.Meta(); m != nil {
		v.numSlots = m.NumSlots
	}
	f.mu.RLock()
	for s, r := range f.sections {
		v.maxSeq[s] = r.MaxSeq
	}
	f.mu.RUnlock()
	return v
}

// checkApply applies data and checks the invariants that hold for any
// input: no panic, max_seq and generations never go down, the version
// never goes down, owners were registered before or after.
func checkApply(t *testing.T, f *FSM, data []byte) {
	t.Helper()
	before := viewOf(f)
	res, ok := f.Apply(&raft.Log{Type: raft.LogCommand, Data: data}).(*ApplyResult)
	if !ok || res == nil {
		t.Fatalf("Apply returned %T, want *ApplyResult", res)
	}
	after := viewOf(f)
	if after.version < before.version {
		t.Fatalf("routing version went down: %d -> %d", before.version, after.version)
	}
	if before.numSlots != 0 && after.numSlots != before.numSlots {
		t.Fatalf("num_slots changed after init: %d -> %d", before.numSlots, after.numSlots)
	}
	if uint32(len(after.slots)) != after.numSlots {
		t.Fatalf("%d slot records for %d slots", len(after.slots), after.numSlots)
	}
	for s, m := range before.maxSeq {
		if after.maxSeq[s] < m {
			t.Fatalf("section %d max_seq went down: %d -> %d", s, m, after.maxSeq[s])
		}
	}
	for s, m := range after.maxSeq {
		if m > seqfmt.MaxCounter {
			t.Fatalf("section %d max_seq %d passes MaxCounter", s, m)
		}
	}
	for i, s := range after.slots {
		if i < len(before.slots) && s.Generation < before.slots[i].Generation {
			t.Fatalf("slot %d generation went down: %d -> %d", i, before.slots[i].Generation, s.Generation)
		}
		if s.Owner == "" {
			continue
		}
		if before.nodes[s.Owner] == nil && after.nodes[s.Owner] == nil {
			t.Fatalf("slot %d owned by %q, which is not and was not registered", i, s.Owner)
		}
	}
	if res.Err == nil && len(data) > 0 {
		var cmd clusterv1.Command
		if err := proto.Unmarshal(data, &cmd); err == nil && res.Type != cmd.Type {
			t.Fatalf("result type %v for command type %v", res.Type, cmd.Type)
		}
	}
}

// FuzzFSMApply feeds arbitrary bytes to Apply as two consecutive commands,
// on an initialized FSM and on an empty one.
func FuzzFSMApply(f *testing.F) {
	seeds := append(fuzzSeedCommands(f), fuzzBaseCommands(f)...)
	for _, a := range seeds {
		f.Add(a, []byte(nil))
	}
	for i, a := range seeds {
		f.Add(a, seeds[(i+3)%len(seeds)])
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		for _, fsm := range []*FSM{fuzzBase(t), NewFSM()} {
			checkApply(t, fsm, a)
			checkApply(t, fsm, b)
			// Whatever happened, the state still snapshots and restores.
			data := persistFSM(t, fsm)
			g := NewFSM()
			if err := restoreBytes(g, data); err != nil {
				t.Fatalf("restoring the FSM's own snapshot: %v", err)
			}
			if !bytes.Equal(persistFSM(t, g), data) {
				t.Fatal("snapshot round trip changed the bytes")
			}
		}
	})
}

// FuzzSnapshotRestore feeds arbitrary bytes to Restore. It must return an
// error or a state that persists to a stable snapshot, never panic.
func FuzzSnapshotRestore(f *testing.F) {
	f.Add(persistFSM(f, NewFSM()))
	f.Add(persistFSM(f, fuzzBase(f)))
	f.Add(persistFSM(f, richFSM(f, 20)))
	if golden, err := os.ReadFile(goldenPath); err == nil {
		f.Add(golden)
	}
	f.Add([]byte(snapshotMagic))
	f.Add([]byte("SEQDARB\n\x02\x08\x02"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := NewFSM()
		if err := restoreBytes(fsm, data); err != nil {
			if fsm.Initialized() || fsm.SectionCount() != 0 || len(fsm.Nodes()) != 0 {
				t.Fatalf("failed Restore (%v) left state behind", err)
			}
			return
		}
		// Read paths the server uses right after a restore.
		fsm.RoutingTable()
		fsm.Slots()
		fsm.Arbiters()
		once := persistFSM(t, fsm)
		g := NewFSM()
		if err := restoreBytes(g, once); err != nil {
			t.Fatalf("restoring a re-persisted snapshot: %v", err)
		}
		if twice := persistFSM(t, g); !bytes.Equal(once, twice) {
			t.Fatal("persist(restore(x)) is not stable")
		}
	})
}
