package arbiter

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/seqfmt"
)

// fsmRig drives an FSM through encoded commands, the way Raft does.
type fsmRig struct {
	t *testing.T
	f *FSM
}

func newFSMRig(t *testing.T) *fsmRig {
	t.Helper()
	return &fsmRig{t: t, f: NewFSM()}
}

// encode builds a command envelope; it fails the test on a marshal error.
func encodeCmd(t testing.TB, typ clusterv1.CommandType, payload proto.Message) []byte {
	t.Helper()
	data, err := EncodeCommand(typ, payload)
	if err != nil {
		t.Fatalf("EncodeCommand(%v): %v", typ, err)
	}
	return data
}

func applyData(f *FSM, data []byte) *ApplyResult {
	return f.Apply(&raft.Log{Type: raft.LogCommand, Data: data}).(*ApplyResult)
}

func (r *fsmRig) apply(typ clusterv1.CommandType, payload proto.Message) *ApplyResult {
	r.t.Helper()
	return applyData(r.f, encodeCmd(r.t, typ, payload))
}

// mustApply applies a command that must not fail.
func (r *fsmRig) mustApply(typ clusterv1.CommandType, payload proto.Message) *ApplyResult {
	r.t.Helper()
	res := r.apply(typ, payload)
	if res.Err != nil {
		r.t.Fatalf("%v: %v", typ, res.Err)
	}
	return res
}

func (r *fsmRig) init(slots uint32) {
	r.t.Helper()
	r.mustApply(clusterv1.CommandType_COMMAND_TYPE_INIT_CLUSTER, &clusterv1.InitClusterCommand{
		ClusterId: "c1", SectionSize: 100, NumSlots: slots, Dc: "dc1",
	})
}

func (r *fsmRig) register(id string, inc uint64) {
	r.t.Helper()
	r.mustApply(clusterv1.CommandType_COMMAND_TYPE_REGISTER_NODE, &clusterv1.RegisterNodeCommand{
		NodeId: id, Incarnation: inc, Addr: id + ":7000", GossipAddr: id + ":7946",
	})
}

// assign moves one slot and reports whether the move took effect.
func (r *fsmRig) assign(slot uint32, fromGen uint64, to string, toInc uint64, marks ...*clusterv1.SectionMark) bool {
	r.t.Helper()
	res := r.mustApply(clusterv1.CommandType_COMMAND_TYPE_ASSIGN_SLOTS, &clusterv1.AssignSlotsCommand{Moves: []*clusterv1.SlotMove{
		{Slot: slot, FromGeneration: fromGen, ToNode: to, ToIncarnation: toInc, Marks: marks},
	}})
	return res.Applied[0]
}

// op runs a single section op as (node, inc).
func (r *fsmRig) op(node string, inc uint64, op *clusterv1.SectionOp) *clusterv1.SectionOpResult {
	r.t.Helper()
	res := r.mustApply(clusterv1.CommandType_COMMAND_TYPE_SECTION_OPS, &clusterv1.SectionOpsCommand{Ops: []*clusterv1.OwnedSectionOp{
		{NodeId: node, Incarnation: inc, Op: op},
	}})
	if len(res.SectionResults) != 1 {
		r.t.Fatalf("SECTION_OPS with one op returned %d results", len(res.SectionResults))
	}
	return res.SectionResults[0]
}

func acquireOp(section, gen, step uint64) *clusterv1.SectionOp {
	return &clusterv1.SectionOp{Kind: clusterv1.SectionOpKind_SECTION_OP_KIND_ACQUIRE, Section: section, Generation: gen, Step: step}
}

func raiseOp(section, gen, minMax uint64) *clusterv1.SectionOp {
	return &clusterv1.SectionOp{Kind: clusterv1.SectionOpKind_SECTION_OP_KIND_RAISE, Section: section, Generation: gen, MinMax: minMax}
}

func (r *fsmRig) maxSeq(section uint64) uint64 {
	if rec := r.f.Section(section); rec != nil {
		return rec.MaxSeq
	}
	return 0
}

// persisted returns the FSM's snapshot bytes.
func persistFSM(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	snap.Release()
	if !sink.closed || sink.cancelled {
		t.Fatalf("Persist succeeded but sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

var (
	cmdInit       = clusterv1.CommandType_COMMAND_TYPE_INIT_CLUSTER
	cmdRegister   = clusterv1.CommandType_COMMAND_TYPE_REGISTER_NODE
	cmdOps        = clusterv1.CommandType_COMMAND_TYPE_SECTION_OPS
	cmdAssign     = clusterv1.CommandType_COMMAND_TYPE_ASSIGN_SLOTS
	cmdBegin      = clusterv1.CommandType_COMMAND_TYPE_BEGIN_MOVES
	cmdNodeState  = clusterv1.CommandType_COMMAND_TYPE_SET_NODE_STATE
	cmdDeregister = clusterv1.CommandType_COMMAND_TYPE_DEREGISTER_NODE
	cmdSetArb     = clusterv1.CommandType_COMMAND_TYPE_SET_ARBITER
	cmdRemoveArb  = clusterv1.CommandType_COMMAND_TYPE_REMOVE_ARBITER
	cmdSetStore   = clusterv1.CommandType_COMMAND_TYPE_SET_STORE_REPLICA
	cmdRemStore   = clusterv1.CommandType_COMMAND_TYPE_REMOVE_STORE_REPLICA

	opOK        = clusterv1.SectionOpStatus_SECTION_OP_STATUS_OK
	opFenced    = clusterv1.SectionOpStatus_SECTION_OP_STATUS_FENCED
	opExhausted = clusterv1.SectionOpStatus_SECTION_OP_STATUS_EXHAUSTED
	opInvalid   = clusterv1.SectionOpStatus_SECTION_OP_STATUS_INVALID

	stateActive   = seqdv1.NodeState_NODE_STATE_ACTIVE
	stateDraining = seqdv1.NodeState_NODE_STATE_DRAINING
)

func TestFSMInitCluster(t *testing.T) {
	tests := []struct {
		name    string
		cmd     *clusterv1.InitClusterCommand
		wantErr error
	}{
		{"ok", &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 100, NumSlots: 4, Dc: "dc1"}, nil},
		{"max slots", &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 100, NumSlots: MaxSlots}, nil},
		{"no cluster id", &clusterv1.InitClusterCommand{SectionSize: 100, NumSlots: 4}, ErrBadCommand},
		{"zero section size", &clusterv1.InitClusterCommand{ClusterId: "c1", NumSlots: 4}, ErrBadCommand},
		{"zero slots", &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 100}, ErrBadCommand},
		{"too many slots", &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 100, NumSlots: MaxSlots + 1}, ErrBadCommand},
		{"section too large", &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: MaxSectionSize + 1, NumSlots: 8}, ErrBadCommand},
		{"section size 2^32 (wraps to 0 in 32 bits)", &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 1 << 32, NumSlots: 8}, ErrBadCommand},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newFSMRig(t)
			res := r.apply(cmdInit, tc.cmd)
			if !errors.Is(res.Err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", res.Err, tc.wantErr)
			}
			if tc.wantErr != nil {
				if r.f.Initialized() || r.f.RoutingVersion() != 0 {
					t.Fatalf("rejected init changed state: initialized=%v version=%d", r.f.Initialized(), r.f.RoutingVersion())
				}
				return
			}
			if res.Type != cmdInit {
				t.Errorf("result type = %v, want %v", res.Type, cmdInit)
			}
			m := r.f.Meta()
			if m.ClusterId != tc.cmd.ClusterId || m.SectionSize != tc.cmd.SectionSize || m.NumSlots != tc.cmd.NumSlots || m.Dc != tc.cmd.Dc {
				t.Errorf("meta = %v, want the command's settings", m)
			}
			if m.RoutingVersion != 1 {
				t.Errorf("routing version after init = %d, want 1", m.RoutingVersion)
			}
			slots := r.f.Slots()
			if uint32(len(slots)) != tc.cmd.NumSlots {
				t.Fatalf("%d slots, want %d", len(slots), tc.cmd.NumSlots)
			}
			for i, s := range slots {
				if s.Slot != uint32(i) || s.Owner != "" || s.Generation != 0 {
					t.Fatalf("slot %d = %v, want an unowned slot numbered %d in generation 0", i, s, i)
				}
			}
		})
	}
}

func TestFSMInitClusterTwice(t *testing.T) {
	tests := []struct {
		name    string
		again   *clusterv1.InitClusterCommand
		wantErr error
	}{
		{"same settings is a retry", &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 100, NumSlots: 4}, nil},
		{"other cluster id", &clusterv1.InitClusterCommand{ClusterId: "c2", SectionSize: 100, NumSlots: 4}, ErrAlreadyInitialized},
		{"other section size", &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 200, NumSlots: 4}, ErrAlreadyInitialized},
		{"other slot count", &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 100, NumSlots: 8}, ErrAlreadyInitialized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newFSMRig(t)
			r.init(4)
			r.register("n1", 1)
			r.assign(0, 0, "n1", 1)
			before := persistFSM(t, r.f)
			res := r.apply(cmdInit, tc.again)
			if !errors.Is(res.Err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", res.Err, tc.wantErr)
			}
			if after := persistFSM(t, r.f); !bytes.Equal(before, after) {
				t.Fatal("a second INIT_CLUSTER changed the state")
			}
		})
	}
}

// TestFSMInitClusterStoresLease: the lease is stored with the cluster and
// never changes afterwards; a cluster created without one (by a build that
// did not store it) gets it from the first INIT_CLUSTER that gives one with
// the stored settings, once. Each leader's wait before moving a slot is the
// stored lease, so a lease that changed could leave an earlier, longer
// grant running past a later leader's wait.
func TestFSMInitClusterStoresLease(t *testing.T) {
	initCmd := func(leaseMs int64) *clusterv1.InitClusterCommand {
		return &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 100, NumSlots: 4, LeaseMs: leaseMs}
	}
	lease := func(r *fsmRig) int64 { return r.f.Meta().LeaseMs }

	r := newFSMRig(t)
	r.mustApply(cmdInit, initCmd(3000))
	if lease(r) != 3000 {
		t.Fatalf("stored lease %d ms, want the command's 3000", lease(r))
	}
	before := persistFSM(t, r.f)
	for _, again := range []*clusterv1.InitClusterCommand{initCmd(1000), initCmd(0), initCmd(5000)} {
		r.mustApply(cmdInit, again)
	}
	if res := r.apply(cmdInit, &clusterv1.InitClusterCommand{ClusterId: "c2", SectionSize: 100, NumSlots: 4, LeaseMs: 1000}); !errors.Is(res.Err, ErrAlreadyInitialized) {
		t.Fatalf("init of another cluster: err %v, want %v", res.Err, ErrAlreadyInitialized)
	}
	if !bytes.Equal(before, persistFSM(t, r.f)) {
		t.Fatalf("a repeated INIT_CLUSTER changed the state; stored lease now %d ms", lease(r))
	}

	// A cluster created without a lease.
	r = newFSMRig(t)
	r.init(4)
	r.register("n1", 1)
	r.assign(0, 0, "n1", 1)
	if lease(r) != 0 {
		t.Fatalf("cluster created without a lease has %d ms stored", lease(r))
	}
	calls := 0
	r.f.onChange = func() { calls++ }
	version := r.f.RoutingVersion()
	r.mustApply(cmdInit, initCmd(1500))
	if lease(r) != 1500 {
		t.Fatalf("stored lease %d ms after recording 1500", lease(r))
	}
	if calls != 1 {
		t.Errorf("onChange called %d times when the lease was recorded, want 1 (settings are checked on change)", calls)
	}
	if r.f.RoutingVersion() != version || len(r.f.OwnedSlots("n1", 1)) != 1 {
		t.Errorf("recording the lease changed the routing: version %d -> %d, n1 owns %v", version, r.f.RoutingVersion(), r.f.OwnedSlots("n1", 1))
	}
	r.mustApply(cmdInit, initCmd(500))
	if lease(r) != 1500 || calls != 1 {
		t.Fatalf("after a second recording: lease %d ms, onChange calls %d; want 1500 and 1", lease(r), calls)
	}

	r = newFSMRig(t)
	if res := r.apply(cmdInit, initCmd(-1)); !errors.Is(res.Err, ErrBadCommand) || r.f.Initialized() {
		t.Fatalf("init with a negative lease: err %v, initialized %v; want %v and no cluster", res.Err, r.f.Initialized(), ErrBadCommand)
	}
}

func TestFSMUndecodableCommands(t *testing.T) {
	r := newFSMRig(t)
	r.init(4)
	r.register("n1", 1)
	before := persistFSM(t, r.f)

	envelope := func(typ clusterv1.CommandType, payload []byte) []byte {
		b, err := proto.Marshal(&clusterv1.Command{Type: typ, Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// 0x0a 0x05 'a': field 1 (length-delimited) claiming 5 bytes but holding 1.
	truncated := []byte{0x0a, 0x05, 'a'}
	tests := []struct {
		name    string
		data    []byte
		wantErr error
	}{
		{"garbage envelope", []byte{0xff, 0xff, 0xff}, ErrBadCommand},
		{"unknown command type", envelope(clusterv1.CommandType(999), nil), ErrUnknownCommand},
		{"unspecified command type", envelope(clusterv1.CommandType_COMMAND_TYPE_UNSPECIFIED, nil), ErrUnknownCommand},
	}
	for _, typ := range []clusterv1.CommandType{cmdInit, cmdRegister, cmdOps, cmdAssign, cmdBegin, cmdNodeState, cmdDeregister, cmdSetArb, cmdRemoveArb} {
		tests = append(tests, struct {
			name    string
			data    []byte
			wantErr error
		}{fmt.Sprintf("bad payload %v", typ), envelope(typ, truncated), ErrBadCommand})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			changed := 0
			r.f.onChange = func() { changed++ }
			defer func() { r.f.onChange = nil }()
			res := applyData(r.f, tc.data)
			if !errors.Is(res.Err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", res.Err, tc.wantErr)
			}
			if after := persistFSM(t, r.f); !bytes.Equal(before, after) {
				t.Fatal("a rejected command changed the state")
			}
			if changed != 0 {
				t.Fatalf("onChange called %d times for a rejected command", changed)
			}
		})
	}
}

func TestFSMIgnoresNonCommandLogs(t *testing.T) {
	r := newFSMRig(t)
	data := encodeCmd(t, cmdInit, &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 100, NumSlots: 4})
	for _, typ := range []raft.LogType{raft.LogNoop, raft.LogBarrier, raft.LogConfiguration} {
		res, ok := r.f.Apply(&raft.Log{Type: typ, Data: data}).(*ApplyResult)
		if !ok || res.Err != nil {
			t.Fatalf("Apply(%v) = %#v, want an empty *ApplyResult", typ, res)
		}
	}
	if r.f.Initialized() {
		t.Fatal("a non-command log entry was applied as a command")
	}
}

func TestFSMRequiresInit(t *testing.T) {
	tests := []struct {
		typ     clusterv1.CommandType
		payload proto.Message
	}{
		{cmdRegister, &clusterv1.RegisterNodeCommand{NodeId: "n1", Incarnation: 1, Addr: "a:1"}},
		{cmdOps, &clusterv1.SectionOpsCommand{Ops: []*clusterv1.OwnedSectionOp{{NodeId: "n1", Incarnation: 1, Op: acquireOp(0, 0, 10)}}}},
		{cmdAssign, &clusterv1.AssignSlotsCommand{Moves: []*clusterv1.SlotMove{{Slot: 0}}}},
		{cmdBegin, &clusterv1.BeginMovesCommand{Moves: []*clusterv1.SlotMove{{Slot: 0, ToNode: "n1", ToIncarnation: 1}}}},
	}
	for _, tc := range tests {
		t.Run(tc.typ.String(), func(t *testing.T) {
			r := newFSMRig(t)
			res := r.apply(tc.typ, tc.payload)
			if !errors.Is(res.Err, ErrNotInitialized) {
				t.Fatalf("err = %v, want ErrNotInitialized", res.Err)
			}
			if r.f.Initialized() || len(r.f.Nodes()) != 0 || r.f.SectionCount() != 0 {
				t.Fatal("a command before init changed the state")
			}
		})
	}
}

func TestFSMRegisterNode(t *testing.T) {
	reg := func(id string, inc uint64, addr, gossip string) *clusterv1.RegisterNodeCommand {
		return &clusterv1.RegisterNodeCommand{NodeId: id, Incarnation: inc, Addr: addr, GossipAddr: gossip}
	}
	tests := []struct {
		name        string
		setup       func(r *fsmRig)
		cmd         *clusterv1.RegisterNodeCommand
		wantErr     error
		wantBump    bool
		wantInc     uint64 // registry entry afterwards (0: absent)
		wantAddr    string
		wantGossip  string
		wantDrained bool
	}{
		{name: "new node", cmd: reg("n1", 5, "a:1", "g:1"), wantBump: true, wantInc: 5, wantAddr: "a:1", wantGossip: "g:1"},
		{name: "no id", cmd: reg("", 5, "a:1", ""), wantErr: ErrBadCommand},
		{name: "no incarnation", cmd: reg("n1", 0, "a:1", ""), wantErr: ErrBadCommand},
		{name: "no address", cmd: reg("n1", 5, "", ""), wantErr: ErrBadCommand},
		{
			name:  "retry is a no-op",
			setup: func(r *fsmRig) { r.mustApply(cmdRegister, reg("n1", 5, "a:1", "g:1")) },
			cmd:   reg("n1", 5, "a:1", "g:1"), wantInc: 5, wantAddr: "a:1", wantGossip: "g:1",
		},
		{
			name:  "same incarnation new address",
			setup: func(r *fsmRig) { r.mustApply(cmdRegister, reg("n1", 5, "a:1", "g:1")) },
			cmd:   reg("n1", 5, "a:2", "g:1"), wantBump: true, wantInc: 5, wantAddr: "a:2", wantGossip: "g:1",
		},
		{
			name:  "newer incarnation replaces",
			setup: func(r *fsmRig) { r.mustApply(cmdRegister, reg("n1", 5, "a:1", "g:1")) },
			cmd:   reg("n1", 6, "a:1", "g:1"), wantBump: true, wantInc: 6, wantAddr: "a:1", wantGossip: "g:1",
		},
		{
			name:  "stale incarnation",
			setup: func(r *fsmRig) { r.mustApply(cmdRegister, reg("n1", 5, "a:1", "g:1")) },
			cmd:   reg("n1", 4, "a:9", "g:9"), wantErr: ErrStaleIncarnation, wantInc: 5, wantAddr: "a:1", wantGossip: "g:1",
		},
		{
			name: "re-registering a draining node makes it active",
			setup: func(r *fsmRig) {
				r.mustApply(cmdRegister, reg("n1", 5, "a:1", "g:1"))
				r.mustApply(cmdNodeState, &clusterv1.SetNodeStateCommand{NodeId: "n1", State: stateDraining})
			},
			cmd: reg("n1", 5, "a:1", "g:1"), wantBump: true, wantInc: 5, wantAddr: "a:1", wantGossip: "g:1",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newFSMRig(t)
			r.init(4)
			if tc.setup != nil {
				tc.setup(r)
			}
			v := r.f.RoutingVersion()
			res := r.apply(cmdRegister, tc.cmd)
			if !errors.Is(res.Err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", res.Err, tc.wantErr)
			}
			wantV := v
			if tc.wantBump {
				wantV++
			}
			if got := r.f.RoutingVersion(); got != wantV {
				t.Errorf("routing version = %d, want %d", got, wantV)
			}
			n := r.f.Node(tc.cmd.NodeId)
			if tc.wantInc == 0 {
				if n != nil {
					t.Fatalf("node %q registered: %v", tc.cmd.NodeId, n)
				}
				return
			}
			if n == nil {
				t.Fatalf("node %q not registered", tc.cmd.NodeId)
			}
			if n.Incarnation != tc.wantInc || n.Addr != tc.wantAddr || n.GossipAddr != tc.wantGossip || n.State != stateActive {
				t.Errorf("node = %v, want incarnation %d addr %s gossip %s ACTIVE", n, tc.wantInc, tc.wantAddr, tc.wantGossip)
			}
		})
	}
}

// sectionRig: 4 slots; n1 (inc 1) owns slot 1 in generation 1; n2 (inc 1)
// is registered and owns nothing. Section 5 lives in slot 1.
func sectionRig(t *testing.T) *fsmRig {
	r := newFSMRig(t)
	r.init(4)
	r.register("n1", 1)
	r.register("n2", 1)
	if !r.assign(1, 0, "n1", 1) {
		t.Fatal("initial assignment not applied")
	}
	return r
}

func TestFSMSectionOpsFencing(t *testing.T) {
	tests := []struct {
		name string
		node string
		inc  uint64
		op   *clusterv1.SectionOp
		want clusterv1.SectionOpStatus
	}{
		{"owner acquires", "n1", 1, acquireOp(5, 1, 10), opOK},
		{"owner raises", "n1", 1, raiseOp(5, 1, 10), opOK},
		{"other node", "n2", 1, acquireOp(5, 1, 10), opFenced},
		{"other node raises", "n2", 1, raiseOp(5, 1, 10), opFenced},
		{"old incarnation", "n1", 0, acquireOp(5, 1, 10), opFenced},
		{"newer incarnation than owner", "n1", 2, raiseOp(5, 1, 10), opFenced},
		{"older generation", "n1", 1, acquireOp(5, 0, 10), opFenced},
		{"newer generation", "n1", 1, raiseOp(5, 2, 10), opFenced},
		{"section of a slot it does not own", "n1", 1, acquireOp(6, 1, 10), opFenced},
		{"unowned slot", "n1", 1, acquireOp(4, 0, 10), opFenced},
		{"section far away in the same slot", "n1", 1, acquireOp(4*1_000_000+1, 1, 10), opOK},
		{"missing op", "n1", 1, nil, opInvalid},
		{"acquire with step 0", "n1", 1, acquireOp(5, 1, 0), opInvalid},
		{"unspecified kind", "n1", 1, &clusterv1.SectionOp{Section: 5, Generation: 1, Step: 10}, opInvalid},
		{"unknown kind", "n1", 1, &clusterv1.SectionOp{Kind: 77, Section: 5, Generation: 1, Step: 10}, opInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := sectionRig(t)
			var section uint64
			if tc.op != nil {
				section = tc.op.Section
			}
			got := r.op(tc.node, tc.inc, tc.op)
			if got.Status != tc.want {
				t.Fatalf("status = %v, want %v", got.Status, tc.want)
			}
			if tc.want != opOK && r.f.Section(section) != nil {
				t.Fatalf("a %v op created section %d: %v", got.Status, section, r.f.Section(section))
			}
			if tc.want == opOK && r.maxSeq(section) != 10 {
				t.Fatalf("max_seq = %d after an OK op to 10 on a new section", r.maxSeq(section))
			}
		})
	}
}

// TestFSMEmptyIdentityOwnsNothing: the fence is the FSM's, not the RPC
// layer's; an op without a node id must not count as the owner of an
// unowned slot.
func TestFSMEmptyIdentityOwnsNothing(t *testing.T) {
	r := sectionRig(t)
	// Slot 2 is unowned in generation 0.
	if got := r.op("", 0, acquireOp(2, 0, 10)); got.Status != opFenced {
		t.Fatalf("op by an empty identity on an unowned slot = %v, want FENCED", got.Status)
	}
}

func TestFSMAcquireAndRaise(t *testing.T) {
	type step struct {
		op        *clusterv1.SectionOp
		want      clusterv1.SectionOpStatus
		wantFloor uint64
		wantMax   uint64 // in the result and in the FSM afterwards
	}
	const near = seqfmt.MaxCounter - 5
	tests := []struct {
		name  string
		steps []step
	}{
		{"first acquire starts at 0", []step{
			{acquireOp(5, 1, 100), opOK, 0, 100},
		}},
		{"acquire floors at max_seq", []step{
			{acquireOp(5, 1, 100), opOK, 0, 100},
			{acquireOp(5, 1, 100), opOK, 100, 200},
			{raiseOp(5, 1, 1000), opOK, 0, 1000},
			{acquireOp(5, 1, 7), opOK, 1000, 1007},
		}},
		{"raise never lowers max", []step{
			{raiseOp(5, 1, 500), opOK, 0, 500},
			{raiseOp(5, 1, 499), opOK, 0, 500},
			{raiseOp(5, 1, 0), opOK, 0, 500},
			{raiseOp(5, 1, 501), opOK, 0, 501},
		}},
		{"raise to exactly MaxCounter", []step{
			{raiseOp(5, 1, seqfmt.MaxCounter), opOK, 0, seqfmt.MaxCounter},
			{raiseOp(5, 1, seqfmt.MaxCounter), opOK, 0, seqfmt.MaxCounter},
		}},
		{"raise past MaxCounter is exhausted", []step{
			{raiseOp(5, 1, 100), opOK, 0, 100},
			{raiseOp(5, 1, seqfmt.MaxCounter+1), opExhausted, 0, 100},
		}},
		{"acquire near the end serves what is left", []step{
			{raiseOp(5, 1, near), opOK, 0, near},
			{acquireOp(5, 1, 100), opOK, near, seqfmt.MaxCounter},
			{acquireOp(5, 1, 100), opExhausted, 0, seqfmt.MaxCounter},
			{raiseOp(5, 1, seqfmt.MaxCounter), opOK, 0, seqfmt.MaxCounter},
		}},
		{"acquire with a step that overflows uint64", []step{
			{raiseOp(5, 1, 10), opOK, 0, 10},
			{acquireOp(5, 1, ^uint64(0)), opOK, 10, seqfmt.MaxCounter},
			{acquireOp(5, 1, ^uint64(0)), opExhausted, 0, seqfmt.MaxCounter},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := sectionRig(t)
			for i, s := range tc.steps {
				got := r.op("n1", 1, s.op)
				if got.Status != s.want {
					t.Fatalf("step %d: status = %v, want %v", i, got.Status, s.want)
				}
				if got.MaxSeq != s.wantMax {
					t.Errorf("step %d: result max_seq = %d, want %d", i, got.MaxSeq, s.wantMax)
				}
				if s.op.Kind == clusterv1.SectionOpKind_SECTION_OP_KIND_ACQUIRE && s.want == opOK && got.Floor != s.wantFloor {
					t.Errorf("step %d: floor = %d, want %d", i, got.Floor, s.wantFloor)
				}
				if m := r.maxSeq(5); m != s.wantMax {
					t.Errorf("step %d: stored max_seq = %d, want %d", i, m, s.wantMax)
				}
			}
		})
	}
}

func TestFSMSectionOpsBatch(t *testing.T) {
	r := sectionRig(t)
	res := r.mustApply(cmdOps, &clusterv1.SectionOpsCommand{Ops: []*clusterv1.OwnedSectionOp{
		{NodeId: "n1", Incarnation: 1, Op: acquireOp(5, 1, 10)},
		{NodeId: "n2", Incarnation: 1, Op: raiseOp(5, 1, 1_000)},
		{NodeId: "n1", Incarnation: 1, Op: raiseOp(5, 1, 50)},
		{NodeId: "n1", Incarnation: 1},
		{NodeId: "n1", Incarnation: 1, Op: acquireOp(9, 1, 10)},
	}})
	want := []struct {
		status clusterv1.SectionOpStatus
		max    uint64
	}{{opOK, 10}, {opFenced, 0}, {opOK, 50}, {opInvalid, 0}, {opOK, 10}}
	if len(res.SectionResults) != len(want) {
		t.Fatalf("%d results for %d ops", len(res.SectionResults), len(want))
	}
	for i, w := range want {
		if g := res.SectionResults[i]; g.Status != w.status || g.MaxSeq != w.max {
			t.Errorf("op %d: %v max %d, want %v max %d", i, g.Status, g.MaxSeq, w.status, w.max)
		}
	}
	if r.maxSeq(5) != 50 || r.maxSeq(9) != 10 {
		t.Errorf("max_seq: section 5 = %d (want 50), section 9 = %d (want 10)", r.maxSeq(5), r.maxSeq(9))
	}
	if res.Type != cmdOps {
		t.Errorf("result type = %v", res.Type)
	}
}

// TestFSMHandoffFloor follows a planned move of slot 1 from n1 to n2 with a
// high-water mark, and checks the mark is the floor of exactly one load in
// exactly the generation it was handed over for.
func TestFSMHandoffFloor(t *testing.T) {
	mark := func(section, hw uint64) *clusterv1.SectionMark {
		return &clusterv1.SectionMark{Section: section, HighWater: hw}
	}
	// Before each case: n1 loaded sections 5 and 9 (slot 1) and 6 (slot 2,
	// owned by n1 as well) in generation 1, and raised 5 to 300.
	prepare := func(t *testing.T) *fsmRig {
		r := sectionRig(t)
		if !r.assign(2, 0, "n1", 1) {
			t.Fatal("assign slot 2")
		}
		for _, s := range []uint64{5, 9} {
			if st := r.op("n1", 1, acquireOp(s, 1, 100)).Status; st != opOK {
				t.Fatalf("acquire %d: %v", s, st)
			}
		}
		if st := r.op("n1", 1, acquireOp(6, 1, 100)).Status; st != opOK {
			t.Fatalf("acquire 6: %v", st)
		}
		if st := r.op("n1", 1, raiseOp(5, 1, 300)).Status; st != opOK {
			t.Fatalf("raise: %v", st)
		}
		return r
	}

	t.Run("floor is the mark once", func(t *testing.T) {
		r := prepare(t)
		if !r.assign(1, 1, "n2", 1, mark(5, 150)) {
			t.Fatal("move not applied")
		}
		got := r.op("n2", 1, acquireOp(5, 2, 100))
		if got.Status != opOK || got.Floor != 150 || got.MaxSeq != 300 {
			t.Fatalf("first load = %v floor %d max %d, want OK floor 150 max 300 (max_seq never lowers)", got.Status, got.Floor, got.MaxSeq)
		}
		got = r.op("n2", 1, acquireOp(5, 2, 100))
		if got.Status != opOK || got.Floor != 300 || got.MaxSeq != 400 {
			t.Fatalf("second load = %v floor %d max %d, want OK floor 300 max 400: a mark is good for one load", got.Status, got.Floor, got.MaxSeq)
		}
	})
	t.Run("mark raises the new owner's max to floor+step", func(t *testing.T) {
		r := prepare(t)
		r.assign(1, 1, "n2", 1, mark(5, 290))
		got := r.op("n2", 1, acquireOp(5, 2, 100))
		if got.Floor != 290 || got.MaxSeq != 390 {
			t.Fatalf("load = floor %d max %d, want floor 290 max 390", got.Floor, got.MaxSeq)
		}
	})
	t.Run("mark equal to max is used", func(t *testing.T) {
		r := prepare(t)
		r.assign(1, 1, "n2", 1, mark(5, 300))
		if got := r.op("n2", 1, acquireOp(5, 2, 100)); got.Floor != 300 || got.MaxSeq != 400 {
			t.Fatalf("load = floor %d max %d, want floor 300 max 400", got.Floor, got.MaxSeq)
		}
	})
	t.Run("mark above max is ignored", func(t *testing.T) {
		r := prepare(t)
		r.assign(1, 1, "n2", 1, mark(5, 301))
		if got := r.op("n2", 1, acquireOp(5, 2, 100)); got.Floor != 300 || got.MaxSeq != 400 {
			t.Fatalf("load = floor %d max %d, want floor 300 (the mark was above max_seq)", got.Floor, got.MaxSeq)
		}
	})
	t.Run("mark above max is not kept for later", func(t *testing.T) {
		r := prepare(t)
		r.assign(1, 1, "n2", 1, mark(5, 301))
		if rec := r.f.Section(5); rec.HandoffGeneration != 0 || rec.HandoffFloor != 0 {
			t.Fatalf("a mark above max_seq was recorded: %v", rec)
		}
		r.op("n2", 1, raiseOp(5, 2, 1000))
		if got := r.op("n2", 1, acquireOp(5, 2, 100)); got.Floor != 1000 {
			t.Fatalf("load after a raise = floor %d, want max_seq 1000", got.Floor)
		}
	})
	t.Run("mark for a section of another slot is ignored", func(t *testing.T) {
		r := prepare(t)
		// Slot 2 (section 6) moves to n1 again, into generation 2: the same
		// generation slot 1 is about to enter.
		if !r.assign(2, 1, "n1", 1) {
			t.Fatal("re-assign slot 2")
		}
		r.assign(1, 1, "n2", 1, mark(6, 1), mark(5, 150))
		if rec := r.f.Section(6); rec.HandoffFloor != 0 || rec.HandoffGeneration != 0 {
			t.Fatalf("section 6 (slot 2) got a hand-over mark from a move of slot 1: %v", rec)
		}
		if got := r.op("n1", 1, acquireOp(6, 2, 100)); got.Floor != 100 {
			t.Fatalf("slot 2's section 6 loads from %d, want its max_seq 100: a mark for another slot must not apply", got.Floor)
		}
		if got := r.op("n2", 1, acquireOp(5, 2, 100)); got.Floor != 150 {
			t.Fatalf("section 5 loads from %d, want 150", got.Floor)
		}
	})
	t.Run("mark for a never-used section is ignored", func(t *testing.T) {
		r := prepare(t)
		r.assign(1, 1, "n2", 1, mark(13, 40))
		if r.f.Section(13) != nil {
			t.Fatalf("a mark created section 13: %v", r.f.Section(13))
		}
		if got := r.op("n2", 1, acquireOp(13, 2, 100)); got.Floor != 0 || got.MaxSeq != 100 {
			t.Fatalf("load = floor %d max %d, want 0/100", got.Floor, got.MaxSeq)
		}
	})
	t.Run("mark only in its generation", func(t *testing.T) {
		r := prepare(t)
		r.assign(1, 1, "n2", 1, mark(5, 150))
		// n2 dies before loading; the slot moves on without marks.
		if !r.assign(1, 2, "n1", 1) {
			t.Fatal("second move not applied")
		}
		if got := r.op("n1", 1, acquireOp(5, 3, 100)); got.Floor != 300 {
			t.Fatalf("load in generation 3 = floor %d, want max_seq 300: the mark was for generation 2", got.Floor)
		}
	})
	t.Run("a fenced acquire does not use up the mark", func(t *testing.T) {
		r := prepare(t)
		r.assign(1, 1, "n2", 1, mark(5, 150))
		if st := r.op("n1", 1, acquireOp(5, 1, 100)).Status; st != opFenced {
			t.Fatalf("old owner's acquire = %v, want FENCED", st)
		}
		if got := r.op("n2", 1, acquireOp(5, 2, 100)); got.Floor != 150 {
			t.Fatalf("new owner's load = floor %d, want 150", got.Floor)
		}
	})
	t.Run("marks are per section", func(t *testing.T) {
		r := prepare(t)
		r.assign(1, 1, "n2", 1, mark(5, 150), mark(9, 60))
		if got := r.op("n2", 1, acquireOp(9, 2, 100)); got.Floor != 60 || got.MaxSeq != 160 {
			t.Fatalf("section 9 load = floor %d max %d, want 60/160", got.Floor, got.MaxSeq)
		}
		if got := r.op("n2", 1, acquireOp(5, 2, 100)); got.Floor != 150 {
			t.Fatalf("section 5 load = floor %d, want 150 (loading section 9 used only its own mark)", got.Floor)
		}
	})
}

func TestFSMAssignSlots(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(r *fsmRig)
		moves      []*clusterv1.SlotMove
		wantApply  []bool
		wantOwners map[uint32]string // checked slots
		wantGens   map[uint32]uint64
	}{
		{
			name:       "unowned to node",
			moves:      []*clusterv1.SlotMove{{Slot: 0, FromGeneration: 0, ToNode: "n1", ToIncarnation: 1}},
			wantApply:  []bool{true},
			wantOwners: map[uint32]string{0: "n1"}, wantGens: map[uint32]uint64{0: 1},
		},
		{
			name:       "stale from_generation is a no-op",
			setup:      func(r *fsmRig) { r.assign(0, 0, "n1", 1) },
			moves:      []*clusterv1.SlotMove{{Slot: 0, FromGeneration: 0, ToNode: "n2", ToIncarnation: 1}},
			wantApply:  []bool{false},
			wantOwners: map[uint32]string{0: "n1"}, wantGens: map[uint32]uint64{0: 1},
		},
		{
			name:       "future from_generation is a no-op",
			moves:      []*clusterv1.SlotMove{{Slot: 0, FromGeneration: 1, ToNode: "n2", ToIncarnation: 1}},
			wantApply:  []bool{false},
			wantOwners: map[uint32]string{0: ""}, wantGens: map[uint32]uint64{0: 0},
		},
		{
			name:      "slot out of range",
			moves:     []*clusterv1.SlotMove{{Slot: 4, ToNode: "n1", ToIncarnation: 1}},
			wantApply: []bool{false},
		},
		{
			name:       "unknown target",
			moves:      []*clusterv1.SlotMove{{Slot: 0, ToNode: "n9", ToIncarnation: 1}},
			wantApply:  []bool{false},
			wantOwners: map[uint32]string{0: ""},
		},
		{
			name:       "target's old incarnation",
			moves:      []*clusterv1.SlotMove{{Slot: 0, ToNode: "n1", ToIncarnation: 2}},
			wantApply:  []bool{false},
			wantOwners: map[uint32]string{0: ""},
		},
		{
			name: "draining target",
			setup: func(r *fsmRig) {
				r.mustApply(cmdNodeState, &clusterv1.SetNodeStateCommand{NodeId: "n2", State: stateDraining})
			},
			moves:      []*clusterv1.SlotMove{{Slot: 0, ToNode: "n2", ToIncarnation: 1}},
			wantApply:  []bool{false},
			wantOwners: map[uint32]string{0: ""},
		},
		{
			name:       "unassign",
			setup:      func(r *fsmRig) { r.assign(0, 0, "n1", 1) },
			moves:      []*clusterv1.SlotMove{{Slot: 0, FromGeneration: 1}},
			wantApply:  []bool{true},
			wantOwners: map[uint32]string{0: ""}, wantGens: map[uint32]uint64{0: 2},
		},
		{
			name: "several moves, each checked on its own",
			moves: []*clusterv1.SlotMove{
				{Slot: 0, FromGeneration: 0, ToNode: "n1", ToIncarnation: 1},
				{Slot: 0, FromGeneration: 0, ToNode: "n2", ToIncarnation: 1}, // stale after the first
				{Slot: 1, FromGeneration: 0, ToNode: "n2", ToIncarnation: 1},
				{Slot: 2, FromGeneration: 0, ToNode: "n3", ToIncarnation: 1},
				{Slot: 0, FromGeneration: 1, ToNode: "n2", ToIncarnation: 1}, // sees the first move
			},
			wantApply:  []bool{true, false, true, false, true},
			wantOwners: map[uint32]string{0: "n2", 1: "n2", 2: ""}, wantGens: map[uint32]uint64{0: 2, 1: 1, 2: 0},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newFSMRig(t)
			r.init(4)
			r.register("n1", 1)
			r.register("n2", 1)
			if tc.setup != nil {
				tc.setup(r)
			}
			v := r.f.RoutingVersion()
			res := r.mustApply(cmdAssign, &clusterv1.AssignSlotsCommand{Moves: tc.moves})
			if fmt.Sprint(res.Applied) != fmt.Sprint(tc.wantApply) {
				t.Fatalf("applied = %v, want %v", res.Applied, tc.wantApply)
			}
			anyApplied := false
			for _, a := range tc.wantApply {
				anyApplied = anyApplied || a
			}
			wantV := v
			if anyApplied {
				wantV++ // once per command, however many moves
			}
			if got := r.f.RoutingVersion(); got != wantV {
				t.Errorf("routing version = %d, want %d", got, wantV)
			}
			slots := r.f.Slots()
			for slot, owner := range tc.wantOwners {
				if slots[slot].Owner != owner {
					t.Errorf("slot %d owner = %q, want %q", slot, slots[slot].Owner, owner)
				}
				if owner != "" && slots[slot].OwnerIncarnation != 1 {
					t.Errorf("slot %d owner incarnation = %d, want 1", slot, slots[slot].OwnerIncarnation)
				}
				if owner == "" && slots[slot].OwnerIncarnation != 0 {
					t.Errorf("unowned slot %d keeps incarnation %d", slot, slots[slot].OwnerIncarnation)
				}
			}
			for slot, gen := range tc.wantGens {
				if slots[slot].Generation != gen {
					t.Errorf("slot %d generation = %d, want %d", slot, slots[slot].Generation, gen)
				}
			}
		})
	}
}

func TestFSMBeginMoves(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(r *fsmRig)
		move      *clusterv1.SlotMove
		wantApply bool
	}{
		{name: "owned slot to active node", move: &clusterv1.SlotMove{Slot: 0, FromGeneration: 1, ToNode: "n2", ToIncarnation: 1}, wantApply: true},
		{name: "no target", move: &clusterv1.SlotMove{Slot: 0, FromGeneration: 1}},
		{name: "unowned slot", move: &clusterv1.SlotMove{Slot: 1, FromGeneration: 0, ToNode: "n2", ToIncarnation: 1}},
		{name: "stale generation", move: &clusterv1.SlotMove{Slot: 0, FromGeneration: 0, ToNode: "n2", ToIncarnation: 1}},
		{name: "slot out of range", move: &clusterv1.SlotMove{Slot: 99, FromGeneration: 1, ToNode: "n2", ToIncarnation: 1}},
		{name: "unknown target", move: &clusterv1.SlotMove{Slot: 0, FromGeneration: 1, ToNode: "n9", ToIncarnation: 1}},
		{name: "wrong target incarnation", move: &clusterv1.SlotMove{Slot: 0, FromGeneration: 1, ToNode: "n2", ToIncarnation: 7}},
		{
			name: "draining target",
			setup: func(r *fsmRig) {
				r.mustApply(cmdNodeState, &clusterv1.SetNodeStateCommand{NodeId: "n2", State: stateDraining})
			},
			move: &clusterv1.SlotMove{Slot: 0, FromGeneration: 1, ToNode: "n2", ToIncarnation: 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newFSMRig(t)
			r.init(4)
			r.register("n1", 1)
			r.register("n2", 1)
			r.assign(0, 0, "n1", 1)
			if tc.setup != nil {
				tc.setup(r)
			}
			v := r.f.RoutingVersion()
			before := r.f.Slots()
			res := r.mustApply(cmdBegin, &clusterv1.BeginMovesCommand{Moves: []*clusterv1.SlotMove{tc.move}})
			if res.Applied[0] != tc.wantApply {
				t.Fatalf("applied = %v, want %v", res.Applied[0], tc.wantApply)
			}
			// A move in progress is not in the public table.
			if got := r.f.RoutingVersion(); got != v {
				t.Errorf("routing version %d -> %d for BEGIN_MOVES", v, got)
			}
			after := r.f.Slots()
			for i := range after {
				want := proto.Clone(before[i]).(*clusterv1.SlotRecord)
				if tc.wantApply && uint32(i) == tc.move.Slot {
					want.MovingTo, want.MovingToIncarnation = tc.move.ToNode, tc.move.ToIncarnation
				}
				if !proto.Equal(after[i], want) {
					t.Errorf("slot %d = %v, want %v", i, after[i], want)
				}
			}
		})
	}
}

func TestFSMCompletedMoveClearsMovingTo(t *testing.T) {
	r := newFSMRig(t)
	r.init(4)
	r.register("n1", 1)
	r.register("n2", 1)
	r.assign(0, 0, "n1", 1)
	r.mustApply(cmdBegin, &clusterv1.BeginMovesCommand{Moves: []*clusterv1.SlotMove{{Slot: 0, FromGeneration: 1, ToNode: "n2", ToIncarnation: 1}}})
	if !r.assign(0, 1, "n2", 1) {
		t.Fatal("completing move not applied")
	}
	s := r.f.Slots()[0]
	if s.Owner != "n2" || s.Generation != 2 || s.MovingTo != "" || s.MovingToIncarnation != 0 {
		t.Fatalf("slot after completed move = %v, want owner n2 generation 2 and no move in progress", s)
	}
}

func TestFSMSetNodeState(t *testing.T) {
	tests := []struct {
		name      string
		node      string
		states    []seqdv1.NodeState // applied in order; the last one is checked
		wantErr   error
		wantState seqdv1.NodeState
		wantBumps uint64
	}{
		{"drain", "n1", []seqdv1.NodeState{stateDraining}, nil, stateDraining, 1},
		{"drain twice bumps once", "n1", []seqdv1.NodeState{stateDraining, stateDraining}, nil, stateDraining, 1},
		{"drain and reactivate", "n1", []seqdv1.NodeState{stateDraining, stateActive}, nil, stateActive, 2},
		{"active is a no-op", "n1", []seqdv1.NodeState{stateActive}, nil, stateActive, 0},
		{"removed cannot be set", "n1", []seqdv1.NodeState{seqdv1.NodeState_NODE_STATE_REMOVED}, ErrBadCommand, stateActive, 0},
		{"unspecified cannot be set", "n1", []seqdv1.NodeState{seqdv1.NodeState_NODE_STATE_UNSPECIFIED}, ErrBadCommand, stateActive, 0},
		{"unknown node", "n9", []seqdv1.NodeState{stateDraining}, ErrUnknownNode, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newFSMRig(t)
			r.init(4)
			r.register("n1", 1)
			v := r.f.RoutingVersion()
			var res *ApplyResult
			for _, st := range tc.states {
				res = r.apply(cmdNodeState, &clusterv1.SetNodeStateCommand{NodeId: tc.node, State: st})
			}
			if !errors.Is(res.Err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", res.Err, tc.wantErr)
			}
			if got := r.f.RoutingVersion() - v; got != tc.wantBumps {
				t.Errorf("routing version bumped %d times, want %d", got, tc.wantBumps)
			}
			if n := r.f.Node(tc.node); tc.wantErr != ErrUnknownNode && n.State != tc.wantState {
				t.Errorf("state = %v, want %v", n.State, tc.wantState)
			}
			if tc.wantErr == ErrUnknownNode && r.f.Node(tc.node) != nil {
				t.Errorf("SET_NODE_STATE created node %q", tc.node)
			}
		})
	}
}

func TestFSMDeregisterNode(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(r *fsmRig)
		cmd      *clusterv1.DeregisterNodeCommand
		wantErr  error
		wantGone bool
	}{
		{name: "owns nothing", cmd: &clusterv1.DeregisterNodeCommand{NodeId: "n2", Incarnation: 1}, wantGone: true},
		{name: "owns slots", cmd: &clusterv1.DeregisterNodeCommand{NodeId: "n1", Incarnation: 1}, wantErr: ErrNodeOwnsSlots},
		{
			name:     "after its slots moved away",
			setup:    func(r *fsmRig) { r.assign(0, 1, "n2", 1) },
			cmd:      &clusterv1.DeregisterNodeCommand{NodeId: "n1", Incarnation: 1},
			wantGone: true,
		},
		{name: "other incarnation is ignored", cmd: &clusterv1.DeregisterNodeCommand{NodeId: "n2", Incarnation: 2}},
		{name: "unknown node is ignored", cmd: &clusterv1.DeregisterNodeCommand{NodeId: "n9", Incarnation: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newFSMRig(t)
			r.init(4)
			r.register("n1", 1)
			r.register("n2", 1)
			r.assign(0, 0, "n1", 1)
			if tc.setup != nil {
				tc.setup(r)
			}
			v := r.f.RoutingVersion()
			res := r.apply(cmdDeregister, tc.cmd)
			if !errors.Is(res.Err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", res.Err, tc.wantErr)
			}
			gone := r.f.Node(tc.cmd.NodeId) == nil
			if tc.cmd.NodeId != "n9" && gone != tc.wantGone {
				t.Fatalf("node gone = %v, want %v", gone, tc.wantGone)
			}
			wantV := v
			if tc.wantGone {
				wantV++
			}
			if got := r.f.RoutingVersion(); got != wantV {
				t.Errorf("routing version = %d, want %d", got, wantV)
			}
		})
	}
}

func TestFSMArbiterRecords(t *testing.T) {
	r := newFSMRig(t)
	r.init(4)
	v := r.f.RoutingVersion()
	changes := 0
	r.f.onChange = func() { changes++ }

	rec := &clusterv1.ArbiterRecord{Id: "a1", RaftAddr: "r:1", GrpcAddr: "g:1", GossipAddr: "m:1"}
	r.mustApply(cmdSetArb, &clusterv1.SetArbiterCommand{Arbiter: rec})
	if got := r.f.Arbiters()["a1"]; !proto.Equal(got, rec) {
		t.Fatalf("arbiter a1 = %v, want %v", got, rec)
	}
	r.mustApply(cmdSetArb, &clusterv1.SetArbiterCommand{Arbiter: &clusterv1.ArbiterRecord{Id: "a1", RaftAddr: "r:2"}})
	if got := r.f.Arbiters()["a1"].RaftAddr; got != "r:2" {
		t.Fatalf("SET_ARBITER did not replace the record: raft addr %q", got)
	}
	r.mustApply(cmdSetArb, &clusterv1.SetArbiterCommand{Arbiter: &clusterv1.ArbiterRecord{Id: "a2"}})
	for _, bad := range []*clusterv1.SetArbiterCommand{{}, {Arbiter: &clusterv1.ArbiterRecord{RaftAddr: "r:3"}}} {
		if res := r.apply(cmdSetArb, bad); !errors.Is(res.Err, ErrBadCommand) {
			t.Errorf("SET_ARBITER %v: err = %v, want ErrBadCommand", bad, res.Err)
		}
	}
	r.mustApply(cmdRemoveArb, &clusterv1.RemoveArbiterCommand{Id: "a1"})
	r.mustApply(cmdRemoveArb, &clusterv1.RemoveArbiterCommand{Id: "never-there"})
	got := r.f.Arbiters()
	if len(got) != 1 || got["a2"] == nil {
		t.Fatalf("arbiters = %v, want only a2", got)
	}
	if r.f.RoutingVersion() != v {
		t.Errorf("arbiter records changed the routing version %d -> %d", v, r.f.RoutingVersion())
	}
	if changes < 5 {
		t.Errorf("onChange called %d times for 5 address book changes", changes)
	}
}

func TestFSMRoutingTable(t *testing.T) {
	r := newFSMRig(t)
	if tb := r.f.RoutingTable(); tb.Version != 0 || len(tb.Slots) != 0 {
		t.Fatalf("table before init = %v, want empty", tb)
	}
	r.init(4)
	r.register("n1", 1)
	r.register("n2", 1)
	r.assign(2, 0, "n2", 1)
	tb := r.f.RoutingTable()
	if tb.Version != r.f.RoutingVersion() || tb.ClusterId != "c1" || tb.SectionSize != 100 || tb.NumSlots != 4 || tb.Dc != "dc1" {
		t.Fatalf("table header = %v", tb)
	}
	if tb.Slots[2].Owner != "n2" || tb.Slots[2].Generation != 1 || tb.Slots[0].Owner != "" {
		t.Fatalf("table slots = %v", tb.Slots)
	}
	if len(tb.Nodes) != 2 || tb.Nodes[0].Id != "n1" || tb.Nodes[1].Id != "n2" || tb.Nodes[0].Addr != "n1:7000" {
		t.Fatalf("table nodes = %v, want n1 and n2 sorted by id", tb.Nodes)
	}
	// The cached table must follow later changes.
	r.assign(2, 1, "n1", 1)
	tb2 := r.f.RoutingTable()
	if tb2.Version != tb.Version+1 || tb2.Slots[2].Owner != "n1" {
		t.Fatalf("table after a move = version %d owner %q, want version %d owner n1", tb2.Version, tb2.Slots[2].Owner, tb.Version+1)
	}
	if tb.Slots[2].Owner != "n2" {
		t.Fatal("an earlier returned table was modified in place")
	}
}

// publicTable is the routing table without its version, for comparing
// content.
func publicTable(f *FSM) *seqdv1.RoutingTable {
	tb := proto.Clone(f.RoutingTable()).(*seqdv1.RoutingTable)
	tb.Version = 0
	return tb
}

// cmdGen produces random commands over a small universe, so most of them
// hit existing nodes, slots and sections. With f set, most ops and moves
// are aimed at f's current owners and generations, so they take effect.
type cmdGen struct {
	rng   *rand.Rand
	nodes []string
	slots uint32
	f     *FSM
}

// current returns a random slot's record from f, or nil.
func (g *cmdGen) current() *clusterv1.SlotRecord {
	if g.f == nil || g.rng.IntN(3) == 0 {
		return nil
	}
	slots := g.f.Slots()
	if len(slots) == 0 {
		return nil
	}
	return slots[g.rng.IntN(len(slots))]
}

// registered returns a random registered node's id and incarnation.
func (g *cmdGen) registered() (string, uint64) {
	if g.f != nil && g.rng.IntN(3) != 0 {
		for _, n := range g.f.Nodes() {
			return n.Id, n.Incarnation
		}
	}
	return g.node(), g.inc()
}

func (g *cmdGen) node() string { return g.nodes[g.rng.IntN(len(g.nodes))] }
func (g *cmdGen) inc() uint64  { return uint64(g.rng.IntN(3)) + 1 }
func (g *cmdGen) gen() uint64  { return uint64(g.rng.IntN(5)) }

func (g *cmdGen) moves(n int) []*clusterv1.SlotMove {
	out := make([]*clusterv1.SlotMove, n)
	for i := range out {
		m := &clusterv1.SlotMove{Slot: uint32(g.rng.IntN(int(g.slots) + 1)), FromGeneration: g.gen()}
		if s := g.current(); s != nil {
			m.Slot, m.FromGeneration = s.Slot, s.Generation
		}
		if g.rng.IntN(6) != 0 {
			m.ToNode, m.ToIncarnation = g.registered()
		}
		for range g.rng.IntN(3) {
			m.Marks = append(m.Marks, &clusterv1.SectionMark{Section: uint64(g.rng.IntN(12)), HighWater: uint64(g.rng.IntN(2000))})
		}
		out[i] = m
	}
	return out
}

func (g *cmdGen) next() (clusterv1.CommandType, proto.Message) {
	switch g.rng.IntN(20) {
	case 0:
		return cmdInit, &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 100, NumSlots: g.slots, LeaseMs: int64(g.rng.IntN(3)) * 1000}
	case 1, 2:
		n := g.node()
		return cmdRegister, &clusterv1.RegisterNodeCommand{NodeId: n, Incarnation: g.inc(), Addr: n + ":1", GossipAddr: fmt.Sprintf("%s:%d", n, g.rng.IntN(2))}
	case 3, 4, 5, 6, 7, 8:
		var ops []*clusterv1.OwnedSectionOp
		for range g.rng.IntN(4) + 1 {
			op := &clusterv1.SectionOp{
				Kind:    clusterv1.SectionOpKind(g.rng.IntN(3)),
				Section: uint64(g.rng.IntN(12)), Generation: g.gen(),
				Step: uint64(g.rng.IntN(200)), MinMax: uint64(g.rng.IntN(3000)),
			}
			if g.rng.IntN(50) == 0 {
				op.MinMax = seqfmt.MaxCounter - uint64(g.rng.IntN(100))
			}
			own := &clusterv1.OwnedSectionOp{NodeId: g.node(), Incarnation: g.inc(), Op: op}
			if s := g.current(); s != nil && s.Owner != "" {
				own.NodeId, own.Incarnation, op.Generation = s.Owner, s.OwnerIncarnation, s.Generation
				op.Section = uint64(s.Slot) + uint64(g.slots)*uint64(g.rng.IntN(3))
			}
			ops = append(ops, own)
		}
		return cmdOps, &clusterv1.SectionOpsCommand{Ops: ops}
	case 9, 10, 11, 12:
		return cmdAssign, &clusterv1.AssignSlotsCommand{Moves: g.moves(g.rng.IntN(3) + 1)}
	case 13, 14:
		return cmdBegin, &clusterv1.BeginMovesCommand{Moves: g.moves(g.rng.IntN(2) + 1)}
	case 15, 16:
		return cmdNodeState, &clusterv1.SetNodeStateCommand{NodeId: g.node(), State: seqdv1.NodeState(g.rng.IntN(4))}
	case 17:
		return cmdDeregister, &clusterv1.DeregisterNodeCommand{NodeId: g.node(), Incarnation: g.inc()}
	case 18:
		return cmdSetArb, &clusterv1.SetArbiterCommand{Arbiter: &clusterv1.ArbiterRecord{Id: fmt.Sprintf("a%d", g.rng.IntN(3)), RaftAddr: fmt.Sprint(g.rng.IntN(9))}}
	default:
		return cmdRemoveArb, &clusterv1.RemoveArbiterCommand{Id: fmt.Sprintf("a%d", g.rng.IntN(3))}
	}
}

func resultString(r *ApplyResult) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%v err=%v applied=%v", r.Type, r.Err, r.Applied)
	for _, s := range r.SectionResults {
		fmt.Fprintf(&b, " [%v]", s)
	}
	return b.String()
}

// TestFSMDeterministic applies the same random command sequences to two
// FSMs, which must agree on every result and on their snapshot bytes.
func TestFSMDeterministic(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			a, b := NewFSM(), NewFSM()
			g := &cmdGen{rng: rand.New(rand.NewPCG(seed, 1)), nodes: []string{"n1", "n2", "n3"}, slots: 4, f: a}
			applyData(a, encodeCmd(t, cmdInit, &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 100, NumSlots: 4}))
			applyData(b, encodeCmd(t, cmdInit, &clusterv1.InitClusterCommand{ClusterId: "c1", SectionSize: 100, NumSlots: 4}))
			oks := 0
			for i := range 400 {
				typ, payload := g.next()
				data := encodeCmd(t, typ, payload)
				ra, rb := applyData(a, data), applyData(b, data)
				if sa, sb := resultString(ra), resultString(rb); sa != sb {
					t.Fatalf("command %d (%v): results differ:\n%s\n%s", i, typ, sa, sb)
				}
				if ra.Err == nil {
					oks++
				}
				if i%50 == 49 {
					if !bytes.Equal(persistFSM(t, a), persistFSM(t, b)) {
						t.Fatalf("snapshots differ after command %d", i)
					}
				}
			}
			if !bytes.Equal(persistFSM(t, a), persistFSM(t, b)) {
				t.Fatal("final snapshots differ")
			}
			if oks < 100 {
				t.Fatalf("only %d of 400 random commands succeeded; the generator is not exercising the FSM", oks)
			}
		})
	}
}

// TestFSMInvariantsUnderRandomCommands checks, after every random command:
// max_seq and slot generations never decrease, the routing version goes up
// by exactly one whenever the public table changes and never otherwise
// unless the registry changed, every owner was registered at some point,
// and a stored lease never changes (the leaders' waits rely on it).
func TestFSMInvariantsUnderRandomCommands(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			r := newFSMRig(t)
			r.init(4)
			g := &cmdGen{rng: rand.New(rand.NewPCG(seed, 2)), nodes: []string{"n1", "n2", "n3"}, slots: 4, f: r.f}
			everRegistered := map[string]bool{}
			maxSeen := map[uint64]uint64{}
			moved, raised := 0, 0
			for i := range 400 {
				beforeTable, beforeV, beforeNodes, beforeSlots, beforeLease := publicTable(r.f), r.f.RoutingVersion(), r.f.Nodes(), r.f.Slots(), r.f.Meta().LeaseMs
				typ, payload := g.next()
				res := r.apply(typ, payload)
				for _, a := range res.Applied {
					if a && typ == cmdAssign {
						moved++
					}
				}
				for _, sr := range res.SectionResults {
					if sr.Status == opOK {
						raised++
					}
				}
				afterTable, afterV, afterNodes, afterSlots := publicTable(r.f), r.f.RoutingVersion(), r.f.Nodes(), r.f.Slots()

				if l := r.f.Meta().LeaseMs; beforeLease != 0 && l != beforeLease {
					t.Fatalf("command %d (%v) changed the stored lease %d ms -> %d ms", i, typ, beforeLease, l)
				}
				tableChanged := !proto.Equal(beforeTable, afterTable)
				registryChanged := len(beforeNodes) != len(afterNodes)
				for id, n := range afterNodes {
					registryChanged = registryChanged || !proto.Equal(n, beforeNodes[id])
					everRegistered[id] = true
				}
				switch {
				case tableChanged && afterV != beforeV+1:
					t.Fatalf("command %d (%v) changed the public table but moved the version %d -> %d", i, typ, beforeV, afterV)
				case !tableChanged && !registryChanged && afterV != beforeV:
					t.Fatalf("command %d (%v) changed nothing public but moved the version %d -> %d", i, typ, beforeV, afterV)
				case afterV < beforeV || afterV > beforeV+1:
					t.Fatalf("command %d (%v) moved the version %d -> %d", i, typ, beforeV, afterV)
				}
				for j, s := range afterSlots {
					if s.Generation < beforeSlots[j].Generation {
						t.Fatalf("command %d (%v): slot %d generation %d -> %d", i, typ, j, beforeSlots[j].Generation, s.Generation)
					}
					if s.Owner != "" && !everRegistered[s.Owner] {
						t.Fatalf("command %d (%v): slot %d owned by %q, which was never registered", i, typ, j, s.Owner)
					}
					if s.MovingTo != "" && s.Owner == "" {
						t.Fatalf("command %d (%v): unowned slot %d has a move in progress to %q", i, typ, j, s.MovingTo)
					}
				}
				for sec := range uint64(12) {
					m := r.maxSeq(sec)
					if m < maxSeen[sec] {
						t.Fatalf("command %d (%v): section %d max_seq %d -> %d", i, typ, sec, maxSeen[sec], m)
					}
					if m > seqfmt.MaxCounter {
						t.Fatalf("section %d max_seq %d passes MaxCounter", sec, m)
					}
					maxSeen[sec] = m
				}
			}
			if moved < 20 || raised < 30 {
				t.Fatalf("only %d slot moves and %d section ops took effect; the generator is not exercising the FSM", moved, raised)
			}
		})
	}
}

func TestFSMOnChange(t *testing.T) {
	r := newFSMRig(t)
	r.init(4)
	r.register("n1", 1)
	calls := 0
	r.f.onChange = func() { calls++ }

	r.op("n1", 1, acquireOp(0, 0, 10)) // fenced: nothing public changes
	if calls != 0 {
		t.Fatalf("onChange called %d times for a section op", calls)
	}
	r.assign(0, 0, "n1", 1)
	if calls != 1 {
		t.Fatalf("onChange called %d times for a slot move, want 1", calls)
	}
	r.op("n1", 1, acquireOp(0, 1, 10))
	if calls != 1 {
		t.Fatalf("onChange called for a section op (%d calls)", calls)
	}
	r.mustApply(cmdNodeState, &clusterv1.SetNodeStateCommand{NodeId: "n1", State: stateDraining})
	if calls != 2 {
		t.Fatalf("onChange called %d times after a state change, want 2", calls)
	}
}

// A removed store replica leaves the shard map and cannot register again
// under its id; the others are untouched.
func TestFSMRemoveStoreReplica(t *testing.T) {
	r := newFSMRig(t)
	if res := r.apply(cmdRemStore, &clusterv1.RemoveStoreReplicaCommand{Shard: "s1", ReplicaId: "s1-r1"}); !errors.Is(res.Err, ErrNotInitialized) {
		t.Fatalf("remove before init: %v, want ErrNotInitialized", res.Err)
	}
	r.init(4)
	for _, id := range []string{"s1-r1", "s1-r2", "s1-r3"} {
		r.mustApply(cmdSetStore, &clusterv1.SetStoreReplicaCommand{Shard: "s1", ReplicaId: id, Addr: id + ":7500"})
	}
	v := r.f.RoutingVersion()
	r.mustApply(cmdRemStore, &clusterv1.RemoveStoreReplicaCommand{Shard: "s1", ReplicaId: "s1-r2"})
	if r.f.RoutingVersion() == v {
		t.Errorf("removing a store replica left the routing version at %d", v)
	}
	var ids []string
	for _, rep := range r.f.RoutingTable().Shards[0].Replicas {
		ids = append(ids, rep.Id)
	}
	if !slices.Equal(ids, []string{"s1-r1", "s1-r3"}) {
		t.Fatalf("shard s1 replicas after removing s1-r2: %v", ids)
	}
	res := r.apply(cmdSetStore, &clusterv1.SetStoreReplicaCommand{Shard: "s1", ReplicaId: "s1-r2", Addr: "elsewhere:7500"})
	if !errors.Is(res.Err, ErrRemovedReplica) || !strings.Contains(res.Err.Error(), "s1-r2 was removed from shard s1") {
		t.Fatalf("registering the removed replica again: %v, want ErrRemovedReplica", res.Err)
	}
	// Removing it again, or one never registered, is harmless.
	r.mustApply(cmdRemStore, &clusterv1.RemoveStoreReplicaCommand{Shard: "s1", ReplicaId: "s1-r2"})
	for _, bad := range []*clusterv1.RemoveStoreReplicaCommand{{Shard: "s1"}, {}} {
		if res := r.apply(cmdRemStore, bad); !errors.Is(res.Err, ErrBadCommand) {
			t.Errorf("REMOVE_STORE_REPLICA %v: %v, want ErrBadCommand", bad, res.Err)
		}
	}
	if res := r.apply(cmdRemStore, &clusterv1.RemoveStoreReplicaCommand{Shard: "s9", ReplicaId: "s9-r1"}); !errors.Is(res.Err, ErrUnknownShard) {
		t.Errorf("removing from an unknown shard: %v, want ErrUnknownShard", res.Err)
	}
}
