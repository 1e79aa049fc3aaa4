package arbiter

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

var updateSnapshotGolden = flag.Bool("update-snapshot-golden", false, "rewrite arbiter/testdata/snapshot-v1.bin")

// memSink is a raft.SnapshotSink over a buffer. If failAfter > 0, writes
// fail once that many bytes have been accepted.
type memSink struct {
	bytes.Buffer
	failAfter int
	closed    bool
	cancelled bool
}

var errSinkFull = errors.New("sink: disk full")

func (s *memSink) Write(p []byte) (int, error) {
	if s.failAfter > 0 && s.Len()+len(p) > s.failAfter {
		n := s.failAfter - s.Len()
		s.Buffer.Write(p[:n])
		return n, errSinkFull
	}
	return s.Buffer.Write(p)
}
func (s *memSink) ID() string     { return "mem" }
func (s *memSink) Close() error   { s.closed = true; return nil }
func (s *memSink) Cancel() error  { s.cancelled = true; return nil }
func (s *memSink) String() string { return "memSink" }

// richFSM builds an FSM holding every kind of record: moves in progress, a
// draining node, hand-over marks, arbiters and many sections.
func richFSM(t testing.TB, sections uint64) *FSM {
	t.Helper()
	f := NewFSM()
	must := func(typ clusterv1.CommandType, payload proto.Message) *ApplyResult {
		t.Helper()
		res := applyData(f, encodeCmd(t, typ, payload))
		if res.Err != nil {
			t.Fatalf("%v: %v", typ, res.Err)
		}
		return res
	}
	must(cmdInit, &clusterv1.InitClusterCommand{ClusterId: "rich", SectionSize: 1000, NumSlots: 8, Dc: "dc-a"})
	for _, n := range []string{"n1", "n2", "n3"} {
		must(cmdRegister, &clusterv1.RegisterNodeCommand{NodeId: n, Incarnation: 3, Addr: n + ":7000", GossipAddr: n + ":7946"})
	}
	var moves []*clusterv1.SlotMove
	for slot := range uint32(8) {
		moves = append(moves, &clusterv1.SlotMove{Slot: slot, ToNode: []string{"n1", "n2", "n3"}[slot%3], ToIncarnation: 3})
	}
	must(cmdAssign, &clusterv1.AssignSlotsCommand{Moves: moves})
	var ops []*clusterv1.OwnedSectionOp
	for sec := range sections {
		slot := sec % 8
		ops = append(ops, &clusterv1.OwnedSectionOp{NodeId: []string{"n1", "n2", "n3"}[slot%3], Incarnation: 3, Op: acquireOp(sec, 1, 100+sec)})
	}
	must(cmdOps, &clusterv1.SectionOpsCommand{Ops: ops})
	// Slot 0: a planned move completed with a mark still unused.
	must(cmdAssign, &clusterv1.AssignSlotsCommand{Moves: []*clusterv1.SlotMove{{Slot: 0, FromGeneration: 1, ToNode: "n2", ToIncarnation: 3,
		Marks: []*clusterv1.SectionMark{{Section: 8, HighWater: 50}}}}})
	// Slot 1: a move in progress.
	must(cmdBegin, &clusterv1.BeginMovesCommand{Moves: []*clusterv1.SlotMove{{Slot: 1, FromGeneration: 1, ToNode: "n3", ToIncarnation: 3}}})
	must(cmdNodeState, &clusterv1.SetNodeStateCommand{NodeId: "n3", State: stateDraining})
	must(cmdSetArb, &clusterv1.SetArbiterCommand{Arbiter: &clusterv1.ArbiterRecord{Id: "a1", RaftAddr: "r1:7401", GrpcAddr: "r1:7400", GossipAddr: "r1:7402"}})
	must(cmdSetArb, &clusterv1.SetArbiterCommand{Arbiter: &clusterv1.ArbiterRecord{Id: "a2", RaftAddr: "r2:7401", GrpcAddr: "r2:7400"}})
	// Store replicas, one of them replaced.
	for _, id := range []string{"s1-r1", "s1-r2", "s1-r3", "s1-r4"} {
		must(cmdSetStore, &clusterv1.SetStoreReplicaCommand{Shard: "s1", ReplicaId: id, Addr: id + ":7500"})
	}
	must(cmdRemStore, &clusterv1.RemoveStoreReplicaCommand{Shard: "s1", ReplicaId: "s1-r3"})
	return f
}

// sameState fails unless a and b hold equal state, compared through the
// read accessors.
func sameState(t *testing.T, a, b *FSM) {
	t.Helper()
	if !proto.Equal(a.Meta(), b.Meta()) {
		t.Errorf("meta: %v vs %v", a.Meta(), b.Meta())
	}
	sa, sb := a.Slots(), b.Slots()
	if len(sa) != len(sb) {
		t.Fatalf("%d vs %d slots", len(sa), len(sb))
	}
	for i := range sa {
		if !proto.Equal(sa[i], sb[i]) {
			t.Errorf("slot %d: %v vs %v", i, sa[i], sb[i])
		}
	}
	na, nb := a.Nodes(), b.Nodes()
	if len(na) != len(nb) {
		t.Errorf("%d vs %d nodes", len(na), len(nb))
	}
	for id, n := range na {
		if !proto.Equal(n, nb[id]) {
			t.Errorf("node %s: %v vs %v", id, n, nb[id])
		}
	}
	aa, ab := a.Arbiters(), b.Arbiters()
	if len(aa) != len(ab) {
		t.Errorf("%d vs %d arbiters", len(aa), len(ab))
	}
	for id, r := range aa {
		if !proto.Equal(r, ab[id]) {
			t.Errorf("arbiter %s: %v vs %v", id, r, ab[id])
		}
	}
	if a.SectionCount() != b.SectionCount() {
		t.Errorf("%d vs %d sections", a.SectionCount(), b.SectionCount())
	}
	for sec := range uint64(1000) {
		if !proto.Equal(a.Section(sec), b.Section(sec)) {
			t.Errorf("section %d: %v vs %v", sec, a.Section(sec), b.Section(sec))
		}
	}
	if !proto.Equal(a.RoutingTable(), b.RoutingTable()) {
		t.Errorf("routing tables differ")
	}
}

func restoreBytes(f *FSM, b []byte) error {
	return f.Restore(io.NopCloser(bytes.NewReader(b)))
}

func TestSnapshotRoundTrip(t *testing.T) {
	src := richFSM(t, 1000)
	data := persistFSM(t, src)
	if !bytes.HasPrefix(data, []byte(snapshotMagic)) {
		t.Fatalf("snapshot does not start with the magic: %q", data[:min(len(data), 16)])
	}

	dst := NewFSM()
	changes := 0
	dst.onChange = func() { changes++ }
	if err := restoreBytes(dst, data); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	sameState(t, src, dst)
	if changes != 1 {
		t.Errorf("onChange called %d times by Restore, want 1", changes)
	}
	if again := persistFSM(t, dst); !bytes.Equal(data, again) {
		t.Fatal("re-persisting a restored snapshot gives different bytes")
	}

	// The restored FSM keeps working: the unused mark still applies, and
	// the same commands give the same results on both.
	for _, f := range []*FSM{src, dst} {
		res := applyData(f, encodeCmd(t, cmdOps, &clusterv1.SectionOpsCommand{Ops: []*clusterv1.OwnedSectionOp{
			{NodeId: "n2", Incarnation: 3, Op: acquireOp(8, 2, 10)},
		}}))
		if got := res.SectionResults[0]; got.Status != opOK || got.Floor != 50 {
			t.Fatalf("load of section 8 after restore = %v floor %d, want OK floor 50", got.Status, got.Floor)
		}
	}
	if !bytes.Equal(persistFSM(t, src), persistFSM(t, dst)) {
		t.Fatal("source and restored FSMs diverge after the same command")
	}
}

// TestSnapshotKeepsLease: the stored lease survives a snapshot, or an
// arbiter restored from one would grant and wait its own configured lease
// (or, seeing none, record its own) while others use the stored one.
func TestSnapshotKeepsLease(t *testing.T) {
	src := NewFSM()
	if res := applyData(src, encodeCmd(t, cmdInit, &clusterv1.InitClusterCommand{ClusterId: "c", SectionSize: 10, NumSlots: 2, LeaseMs: 7500})); res.Err != nil {
		t.Fatal(res.Err)
	}
	dst := NewFSM()
	if err := restoreBytes(dst, persistFSM(t, src)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := dst.Meta().LeaseMs; got != 7500 {
		t.Fatalf("restored lease %d ms, want 7500", got)
	}
	// Stored, it is not replaced by a later INIT_CLUSTER's.
	applyData(dst, encodeCmd(t, cmdInit, &clusterv1.InitClusterCommand{ClusterId: "c", SectionSize: 10, NumSlots: 2, LeaseMs: 1000}))
	if got := dst.Meta().LeaseMs; got != 7500 {
		t.Fatalf("restored lease replaced: %d ms, want 7500", got)
	}
}

func TestSnapshotOfEmptyFSM(t *testing.T) {
	data := persistFSM(t, NewFSM())
	f := richFSM(t, 1000)
	if err := restoreBytes(f, data); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if f.Initialized() || f.SectionCount() != 0 || len(f.Nodes()) != 0 || len(f.Arbiters()) != 0 || len(f.Slots()) != 0 {
		t.Fatal("restoring an empty snapshot did not replace the old state")
	}
	if tb := f.RoutingTable(); tb.Version != 0 || len(tb.Slots) != 0 {
		t.Fatalf("routing table after restoring an empty snapshot = %v", tb)
	}
}

// TestSnapshotIsACopy: Persist may run while Apply continues, so a
// snapshot must not see later commands.
func TestSnapshotIsACopy(t *testing.T) {
	f := richFSM(t, 1000)
	want := persistFSM(t, f)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	applyData(f, encodeCmd(t, cmdOps, &clusterv1.SectionOpsCommand{Ops: []*clusterv1.OwnedSectionOp{{NodeId: "n3", Incarnation: 3, Op: raiseOp(2, 1, 1e9)}}}))
	applyData(f, encodeCmd(t, cmdRegister, &clusterv1.RegisterNodeCommand{NodeId: "n4", Incarnation: 1, Addr: "n4:1"}))
	applyData(f, encodeCmd(t, cmdAssign, &clusterv1.AssignSlotsCommand{Moves: []*clusterv1.SlotMove{{Slot: 3, FromGeneration: 1, ToNode: "n4", ToIncarnation: 1}}}))
	if f.Section(2).MaxSeq != 1e9 || f.Slots()[3].Owner != "n4" {
		t.Fatal("the commands after Snapshot did not apply; the test proves nothing")
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.Bytes(), want) {
		t.Fatal("a snapshot taken before some commands persisted their effects")
	}
}

func TestSnapshotPersistCancelsOnWriteError(t *testing.T) {
	full := len(persistFSM(t, richFSM(t, 1000)))
	if full <= 4096 {
		t.Fatalf("snapshot is %d bytes; make richFSM bigger so a write fails before the final flush", full)
	}
	for _, failAfter := range []int{1, len(snapshotMagic) + 1, 4096, full - 1} {
		snap, err := richFSM(t, 1000).Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		sink := &memSink{failAfter: failAfter}
		err = snap.Persist(sink)
		if !errors.Is(err, errSinkFull) {
			t.Errorf("failAfter %d: Persist err = %v, want the sink's error", failAfter, err)
		}
		if !sink.cancelled {
			t.Errorf("failAfter %d: Persist did not cancel the sink", failAfter)
		}
		if sink.closed {
			t.Errorf("failAfter %d: Persist closed the sink after an error (a partial snapshot would be kept)", failAfter)
		}
	}
}

// snapshotFrom writes records after the magic and a header of the given
// format version.
func snapshotFrom(t *testing.T, format uint32, records ...*clusterv1.SnapshotRecord) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(snapshotMagic)
	if _, err := protodelim.MarshalTo(&b, &clusterv1.SnapshotHeader{FormatVersion: format}); err != nil {
		t.Fatal(err)
	}
	for _, r := range records {
		if _, err := protodelim.MarshalTo(&b, r); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func metaRec(slots uint32) *clusterv1.SnapshotRecord {
	return &clusterv1.SnapshotRecord{Record: &clusterv1.SnapshotRecord_Meta{Meta: &clusterv1.ClusterMeta{ClusterId: "c", SectionSize: 10, NumSlots: slots, RoutingVersion: 1}}}
}

func slotRec(i uint32) *clusterv1.SnapshotRecord {
	return &clusterv1.SnapshotRecord{Record: &clusterv1.SnapshotRecord_Slot{Slot: &clusterv1.SlotRecord{Slot: i}}}
}

func TestSnapshotRestoreRejects(t *testing.T) {
	valid := persistFSM(t, richFSM(t, 1000))
	tests := []struct {
		name    string
		data    []byte
		wantMsg string
	}{
		{"empty", nil, "bad magic"},
		{"short magic", []byte("SEQD"), "bad magic"},
		{"bad magic", append([]byte("SEQDXXX\n"), valid[len(snapshotMagic):]...), "bad magic"},
		{"other file", []byte("{\"json\": true}\n"), "bad magic"},
		{"no header", []byte(snapshotMagic), "header"},
		{"format 0", snapshotFrom(t, 0, metaRec(1), slotRec(0)), "format 0 is not supported"},
		{"future format", snapshotFrom(t, snapshotFormat+1, metaRec(1), slotRec(0)), fmt.Sprintf("format %d is not supported", snapshotFormat+1)},
		{"truncated record", valid[:len(valid)-3], "snapshot record"},
		{"record length past the end", append(snapshotFrom(t, 1, metaRec(1), slotRec(0)), 0x7f, 0x0a), "snapshot record"},
		{"too few slot records", snapshotFrom(t, 1, metaRec(3), slotRec(0), slotRec(1)), "2 slot records for 3 slots"},
		{"too many slot records", snapshotFrom(t, 1, metaRec(1), slotRec(0), slotRec(1)), "2 slot records for 1 slots"},
		{"slots out of order", snapshotFrom(t, 1, metaRec(2), slotRec(1), slotRec(0)), "out of order"},
		{"negative lease", snapshotFrom(t, 1, &clusterv1.SnapshotRecord{Record: &clusterv1.SnapshotRecord_Meta{Meta: &clusterv1.ClusterMeta{ClusterId: "c", SectionSize: 10, NumSlots: 1, LeaseMs: -5}}}, slotRec(0)), "lease -5 ms"},
		{"empty record", snapshotFrom(t, 1, metaRec(1), slotRec(0), &clusterv1.SnapshotRecord{}), "unknown record"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := richFSM(t, 1000)
			before := persistFSM(t, f)
			changes := 0
			f.onChange = func() { changes++ }
			err := restoreBytes(f, tc.data)
			if err == nil {
				t.Fatal("Restore accepted a bad snapshot")
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tc.wantMsg)
			}
			if !strings.HasPrefix(err.Error(), "arbiter: snapshot") {
				t.Errorf("error %q does not say it is about the arbiter snapshot", err)
			}
			if !bytes.Equal(before, persistFSM(t, f)) || changes != 0 {
				t.Fatal("a failed Restore changed the FSM")
			}
		})
	}
}

// TestSnapshotRestoreRejectsTruncationMidRecord cuts a valid snapshot at
// every byte that is not a record boundary.
func TestSnapshotRestoreRejectsTruncationMidRecord(t *testing.T) {
	valid := persistFSM(t, richFSM(t, 40))
	boundaries := recordBoundaries(t, valid)
	for n := 0; n < len(valid); n++ {
		if boundaries[n] {
			continue
		}
		if err := restoreBytes(NewFSM(), valid[:n]); err == nil {
			t.Fatalf("Restore accepted the first %d of %d bytes", n, len(valid))
		}
	}
}

// TestSnapshotRestoreRejectsTruncationAtRecordBoundary cuts a valid
// snapshot between records, after all slot records: the section records
// (max_seq) are lost, and a restore that accepted this would hand out
// numbers again.
func TestSnapshotRestoreRejectsTruncationAtRecordBoundary(t *testing.T) {
	valid := persistFSM(t, richFSM(t, 40))
	for n := range recordBoundaries(t, valid) {
		if n == len(valid) {
			continue
		}
		if err := restoreBytes(NewFSM(), valid[:n]); err == nil {
			t.Fatalf("Restore accepted the first %d of %d bytes (cut between records)", n, len(valid))
		}
	}
}

// recordBoundaries returns the offsets where a record (or the header) ends.
func recordBoundaries(t *testing.T, data []byte) map[int]bool {
	t.Helper()
	r := bytes.NewReader(data[len(snapshotMagic):])
	out := map[int]bool{}
	if err := protodelim.UnmarshalFrom(r, &clusterv1.SnapshotHeader{}); err != nil {
		t.Fatal(err)
	}
	out[len(data)-r.Len()] = true
	for r.Len() > 0 {
		if err := protodelim.UnmarshalFrom(r, &clusterv1.SnapshotRecord{}); err != nil {
			t.Fatal(err)
		}
		out[len(data)-r.Len()] = true
	}
	return out
}

// TestSnapshotRestoreRejectsInconsistentMeta: a snapshot whose records
// cannot come from a valid FSM must not load, because the first command
// after it would crash the node (Apply panics on every replica alike).
func TestSnapshotRestoreRejectsInconsistentMeta(t *testing.T) {
	tests := []struct {
		name    string
		records []*clusterv1.SnapshotRecord
		cmdType clusterv1.CommandType
		cmd     proto.Message
	}{
		{"zero slots", []*clusterv1.SnapshotRecord{metaRec(0)}, cmdOps,
			&clusterv1.SectionOpsCommand{Ops: []*clusterv1.OwnedSectionOp{{NodeId: "n1", Incarnation: 1, Op: raiseOp(1, 0, 1)}}}},
		{"nodes without meta", []*clusterv1.SnapshotRecord{{Record: &clusterv1.SnapshotRecord_Node{Node: &clusterv1.NodeRecord{Id: "n1", Incarnation: 1, State: stateActive}}}},
			cmdNodeState, &clusterv1.SetNodeStateCommand{NodeId: "n1", State: stateDraining}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFSM()
			if err := restoreBytes(f, snapshotFrom(t, 1, tc.records...)); err != nil {
				return // rejected: fine
			}
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("Restore accepted an inconsistent snapshot and the next %v panicked: %v", tc.cmdType, p)
				}
			}()
			applyData(f, encodeCmd(t, tc.cmdType, tc.cmd))
		})
	}
}

// goldenRecords is the content of testdata/snapshot-v1.bin, written by
// hand so it does not depend on how today's commands behave.
func goldenRecords() []*clusterv1.SnapshotRecord {
	rec := func(r any) *clusterv1.SnapshotRecord {
		switch x := r.(type) {
		case *clusterv1.ClusterMeta:
			return &clusterv1.SnapshotRecord{Record: &clusterv1.SnapshotRecord_Meta{Meta: x}}
		case *clusterv1.SlotRecord:
			return &clusterv1.SnapshotRecord{Record: &clusterv1.SnapshotRecord_Slot{Slot: x}}
		case *clusterv1.NodeRecord:
			return &clusterv1.SnapshotRecord{Record: &clusterv1.SnapshotRecord_Node{Node: x}}
		case *clusterv1.ArbiterRecord:
			return &clusterv1.SnapshotRecord{Record: &clusterv1.SnapshotRecord_Arbiter{Arbiter: x}}
		case *clusterv1.SectionRecord:
			return &clusterv1.SnapshotRecord{Record: &clusterv1.SnapshotRecord_Section{Section: x}}
		}
		panic("unknown record")
	}
	return []*clusterv1.SnapshotRecord{
		rec(&clusterv1.ClusterMeta{ClusterId: "golden", SectionSize: 100000, NumSlots: 4, RoutingVersion: 17, Dc: "dc-east"}),
		rec(&clusterv1.SlotRecord{Slot: 0, Owner: "alloc-1", OwnerIncarnation: 1700000000001, Generation: 3}),
		rec(&clusterv1.SlotRecord{Slot: 1, Owner: "alloc-2", OwnerIncarnation: 1700000000002, Generation: 5, MovingTo: "alloc-1", MovingToIncarnation: 1700000000001}),
		rec(&clusterv1.SlotRecord{Slot: 2, Generation: 2}),
		rec(&clusterv1.SlotRecord{Slot: 3, Owner: "alloc-1", OwnerIncarnation: 1700000000001, Generation: 1}),
		rec(&clusterv1.NodeRecord{Id: "alloc-1", Incarnation: 1700000000001, Addr: "10.0.0.1:7500", GossipAddr: "10.0.0.1:7946", State: seqdv1.NodeState_NODE_STATE_ACTIVE}),
		rec(&clusterv1.NodeRecord{Id: "alloc-2", Incarnation: 1700000000002, Addr: "10.0.0.2:7500", State: seqdv1.NodeState_NODE_STATE_DRAINING}),
		rec(&clusterv1.ArbiterRecord{Id: "arb-1", RaftAddr: "10.0.1.1:7401", GrpcAddr: "10.0.1.1:7400", GossipAddr: "10.0.1.1:7402"}),
		rec(&clusterv1.ArbiterRecord{Id: "arb-2", RaftAddr: "10.0.1.2:7401", GrpcAddr: "10.0.1.2:7400"}),
		rec(&clusterv1.SectionRecord{Section: 0, MaxSeq: 40000}),
		rec(&clusterv1.SectionRecord{Section: 4, MaxSeq: 1 << 40, Epoch: 2}),
		rec(&clusterv1.SectionRecord{Section: 5, MaxSeq: 25000, HandoffGeneration: 5, HandoffFloor: 21234}),
		rec(&clusterv1.SectionRecord{Section: 1_000_003, MaxSeq: 281474976710655, Epoch: 65535}),
	}
}

const goldenPath = "testdata/snapshot-v1.bin"

// TestSnapshotGoldenV1 restores a snapshot written in format 1. It must
// keep passing for as long as format 1 snapshots may exist on disk: do
// not regenerate the file for a new format; add a new golden file.
func TestSnapshotGoldenV1(t *testing.T) {
	if *updateSnapshotGolden {
		if snapshotFormat != 1 {
			t.Fatalf("snapshot-v1.bin must stay a format 1 snapshot; this build writes format %d", snapshotFormat)
		}
		var b bytes.Buffer
		if err := writeSnapshot(&b, goldenRecords()); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(goldenPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenPath, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (generate it with: go test ./arbiter -run TestSnapshotGoldenV1 -update-snapshot-golden)", err)
	}
	f := NewFSM()
	if err := restoreBytes(f, data); err != nil {
		t.Fatalf("Restore of a format 1 snapshot: %v", err)
	}

	m := f.Meta()
	if m.ClusterId != "golden" || m.SectionSize != 100000 || m.NumSlots != 4 || m.RoutingVersion != 17 || m.Dc != "dc-east" {
		t.Errorf("meta = %v", m)
	}
	if m.LeaseMs != 0 {
		t.Errorf("a snapshot from before the lease was stored restores with lease %d ms, want 0 (recorded by the next leader)", m.LeaseMs)
	}
	slots := f.Slots()
	if len(slots) != 4 {
		t.Fatalf("%d slots, want 4", len(slots))
	}
	if s := slots[1]; s.Owner != "alloc-2" || s.OwnerIncarnation != 1700000000002 || s.Generation != 5 || s.MovingTo != "alloc-1" || s.MovingToIncarnation != 1700000000001 {
		t.Errorf("slot 1 = %v", s)
	}
	if s := slots[2]; s.Owner != "" || s.Generation != 2 {
		t.Errorf("slot 2 = %v", s)
	}
	if n := f.Node("alloc-2"); n == nil || n.State != seqdv1.NodeState_NODE_STATE_DRAINING || n.Addr != "10.0.0.2:7500" {
		t.Errorf("node alloc-2 = %v", n)
	}
	if n := f.Node("alloc-1"); n == nil || n.GossipAddr != "10.0.0.1:7946" || n.Incarnation != 1700000000001 {
		t.Errorf("node alloc-1 = %v", n)
	}
	if a := f.Arbiters(); len(a) != 2 || a["arb-1"].GrpcAddr != "10.0.1.1:7400" || a["arb-2"].RaftAddr != "10.0.1.2:7401" {
		t.Errorf("arbiters = %v", a)
	}
	if f.SectionCount() != 4 {
		t.Errorf("%d sections, want 4", f.SectionCount())
	}
	if s := f.Section(4); s.MaxSeq != 1<<40 || s.Epoch != 2 {
		t.Errorf("section 4 = %v", s)
	}
	if s := f.Section(1_000_003); s.MaxSeq != 281474976710655 || s.Epoch != 65535 {
		t.Errorf("section 1000003 = %v", s)
	}
	if tb := f.RoutingTable(); tb.Version != 17 || tb.Slots[0].Owner != "alloc-1" || tb.Slots[0].Generation != 3 || len(tb.Nodes) != 2 {
		t.Errorf("routing table = %v", tb)
	}

	// The restored state is live: the recorded hand-over mark of section 5
	// (slot 1, generation 5) is the floor of the owner's next load, and
	// section 0 loads from its max_seq.
	res := applyData(f, encodeCmd(t, cmdOps, &clusterv1.SectionOpsCommand{Ops: []*clusterv1.OwnedSectionOp{
		{NodeId: "alloc-2", Incarnation: 1700000000002, Op: acquireOp(5, 5, 10000)},
		{NodeId: "alloc-1", Incarnation: 1700000000001, Op: acquireOp(0, 3, 10000)},
		{NodeId: "alloc-1", Incarnation: 1700000000001, Op: acquireOp(4, 3, 10000)}, // slot 0 in generation 3
	}}))
	want := []struct{ floor, max uint64 }{{21234, 31234}, {40000, 50000}, {1 << 40, 1<<40 + 10000}}
	for i, w := range want {
		if g := res.SectionResults[i]; g.Status != opOK || g.Floor != w.floor || g.MaxSeq != w.max {
			t.Errorf("op %d after restore = %v floor %d max %d, want OK floor %d max %d", i, g.Status, g.Floor, g.MaxSeq, w.floor, w.max)
		}
	}

	// The first leader after the upgrade records its lease, once.
	for _, l := range []int64{2500, 1000} {
		if res := applyData(f, encodeCmd(t, cmdInit, &clusterv1.InitClusterCommand{ClusterId: "golden", SectionSize: 100000, NumSlots: 4, Dc: "dc-east", LeaseMs: l})); res.Err != nil {
			t.Fatalf("recording lease %d ms on the restored cluster: %v", l, res.Err)
		}
	}
	if got := f.Meta().LeaseMs; got != 2500 {
		t.Errorf("lease recorded on the restored cluster = %d ms, want the first recorded, 2500", got)
	}

	// While this build still writes format 1, it must write the golden
	// file byte for byte: a change in the encoding needs a format bump.
	if snapshotFormat == 1 {
		if again := persistFSM(t, restoredGolden(t, data)); !bytes.Equal(again, data) {
			t.Error("this build writes format 1 snapshots that differ from testdata/snapshot-v1.bin; bump snapshotFormat if the encoding changed on purpose")
		}
	}
}

func restoredGolden(t *testing.T, data []byte) *FSM {
	t.Helper()
	f := NewFSM()
	if err := restoreBytes(f, data); err != nil {
		t.Fatal(err)
	}
	return f
}
