// Package arbiter keeps one datacenter's sequence state safe in a Raft group:
// per-section max_seq and epoch, the routing table, the AllocSvr registry and
// slot leases, and the leader's assignment loop.
package arbiter

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/seqfmt"
)

// Errors returned by FSM commands. They travel back to the caller of Apply.
var (
	ErrNotInitialized     = errors.New("arbiter: cluster not initialized yet")
	ErrAlreadyInitialized = errors.New("arbiter: cluster already initialized with different settings")
	ErrStaleIncarnation   = errors.New("arbiter: a newer incarnation of this node is already registered")
	ErrUnknownNode        = errors.New("arbiter: unknown node")
	ErrNodeOwnsSlots      = errors.New("arbiter: node still owns slots; drain it first")
	ErrUnknownCommand     = errors.New("arbiter: unknown command type")
	ErrBadCommand         = errors.New("arbiter: malformed command")
	ErrRemovedReplica     = errors.New("arbiter: store replica was removed from its shard")
)

// MaxSlots bounds num_slots so the routing table stays small enough to ship
// in a response.
const MaxSlots = 4096

// MaxSectionSize bounds keys per section: an AllocSvr keeps a key's offset
// in its section in 32 bits and may hold a whole section as an array.
const MaxSectionSize = 1 << 24

// ApplyResult is what FSM.Apply returns for every command.
type ApplyResult struct {
	Type clusterv1.CommandType
	Err  error
	// SECTION_OPS: one result per op, in order.
	SectionResults []*clusterv1.SectionOpResult
	// ASSIGN_SLOTS and BEGIN_MOVES: whether each move took effect.
	Applied []bool
}

// FSM is the arbiter's deterministic state machine. It reads no clock, no
// randomness and no configuration: everything it needs is in the command.
type FSM struct {
	mu       sync.RWMutex
	meta     *clusterv1.ClusterMeta // nil until INIT_CLUSTER
	sections map[uint64]*clusterv1.SectionRecord
	slots    []*clusterv1.SlotRecord
	nodes    map[string]*clusterv1.NodeRecord
	arbiters map[string]*clusterv1.ArbiterRecord

	// table caches the public routing table for meta.RoutingVersion.
	table *seqdv1.RoutingTable

	// onChange, if set, is called (without the lock) after a command changed
	// the routing table or the registry.
	onChange func()
}

// NewFSM returns an empty, uninitialized FSM.
func NewFSM() *FSM {
	return &FSM{
		sections: make(map[uint64]*clusterv1.SectionRecord),
		nodes:    make(map[string]*clusterv1.NodeRecord),
		arbiters: make(map[string]*clusterv1.ArbiterRecord),
	}
}

// EncodeCommand wraps a payload in the command envelope.
func EncodeCommand(t clusterv1.CommandType, payload proto.Message) ([]byte, error) {
	p, err := proto.Marshal(payload)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(&clusterv1.Command{Type: t, Payload: p})
}

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) interface{} {
	if l.Type != raft.LogCommand {
		return &ApplyResult{}
	}
	res, changed := f.applyCommand(l.Data)
	if changed && f.onChange != nil {
		f.onChange()
	}
	return res
}

// applyCommand decodes and runs one command. changed reports whether the
// routing table or registry changed.
func (f *FSM) applyCommand(data []byte) (res *ApplyResult, changed bool) {
	var cmd clusterv1.Command
	if err := proto.Unmarshal(data, &cmd); err != nil {
		return &ApplyResult{Err: fmt.Errorf("%w: %v", ErrBadCommand, err)}, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	before := f.version()
	switch cmd.Type {
	case clusterv1.CommandType_COMMAND_TYPE_INIT_CLUSTER:
		var c clusterv1.InitClusterCommand
		if err := proto.Unmarshal(cmd.Payload, &c); err != nil {
			return badPayload(err), false
		}
		leaseBefore := f.meta != nil && f.meta.LeaseMs != 0
		res = f.initCluster(&c)
		changed = !leaseBefore && f.meta != nil && f.meta.LeaseMs != 0
	case clusterv1.CommandType_COMMAND_TYPE_REGISTER_NODE:
		var c clusterv1.RegisterNodeCommand
		if err := proto.Unmarshal(cmd.Payload, &c); err != nil {
			return badPayload(err), false
		}
		res = f.registerNode(&c)
	case clusterv1.CommandType_COMMAND_TYPE_SECTION_OPS:
		var c clusterv1.SectionOpsCommand
		if err := proto.Unmarshal(cmd.Payload, &c); err != nil {
			return badPayload(err), false
		}
		res = f.sectionOps(&c)
	case clusterv1.CommandType_COMMAND_TYPE_ASSIGN_SLOTS:
		var c clusterv1.AssignSlotsCommand
		if err := proto.Unmarshal(cmd.Payload, &c); err != nil {
			return badPayload(err), false
		}
		res = f.assignSlots(&c)
	case clusterv1.CommandType_COMMAND_TYPE_BEGIN_MOVES:
		var c clusterv1.BeginMovesCommand
		if err := proto.Unmarshal(cmd.Payload, &c); err != nil {
			return badPayload(err), false
		}
		res = f.beginMoves(&c)
	case clusterv1.CommandType_COMMAND_TYPE_SET_NODE_STATE:
		var c clusterv1.SetNodeStateCommand
		if err := proto.Unmarshal(cmd.Payload, &c); err != nil {
			return badPayload(err), false
		}
		res = f.setNodeState(&c)
	case clusterv1.CommandType_COMMAND_TYPE_DEREGISTER_NODE:
		var c clusterv1.DeregisterNodeCommand
		if err := proto.Unmarshal(cmd.Payload, &c); err != nil {
			return badPayload(err), false
		}
		res = f.deregisterNode(&c)
	case clusterv1.CommandType_COMMAND_TYPE_SET_ARBITER:
		var c clusterv1.SetArbiterCommand
		if err := proto.Unmarshal(cmd.Payload, &c); err != nil {
			return badPayload(err), false
		}
		res = f.setArbiter(&c)
		changed = true
	case clusterv1.CommandType_COMMAND_TYPE_SET_STORE_REPLICA:
		var c clusterv1.SetStoreReplicaCommand
		if err := proto.Unmarshal(cmd.Payload, &c); err != nil {
			return badPayload(err), false
		}
		res = f.setStoreReplica(&c)
	case clusterv1.CommandType_COMMAND_TYPE_REMOVE_STORE_REPLICA:
		var c clusterv1.RemoveStoreReplicaCommand
		if err := proto.Unmarshal(cmd.Payload, &c); err != nil {
			return badPayload(err), false
		}
		res = f.removeStoreReplica(&c)
	case clusterv1.CommandType_COMMAND_TYPE_REMOVE_ARBITER:
		var c clusterv1.RemoveArbiterCommand
		if err := proto.Unmarshal(cmd.Payload, &c); err != nil {
			return badPayload(err), false
		}
		delete(f.arbiters, c.Id)
		res = &ApplyResult{}
		changed = true
	default:
		return &ApplyResult{Err: fmt.Errorf("%w %d", ErrUnknownCommand, cmd.Type)}, false
	}
	res.Type = cmd.Type
	if f.version() != before {
		f.table = nil
		changed = true
	}
	return res, changed
}

func badPayload(err error) *ApplyResult {
	return &ApplyResult{Err: fmt.Errorf("%w: payload: %v", ErrBadCommand, err)}
}

func (f *FSM) version() uint64 {
	if f.meta == nil {
		return 0
	}
	return f.meta.RoutingVersion
}

func (f *FSM) bump() { f.meta.RoutingVersion++ }

// ErrUnknownShard is returned for a store replica of a shard the map lacks.
var ErrUnknownShard = errors.New("arbiter: unknown store shard")

// shardsFromSplits builds the shard map: shard i (named s<i+1>) owns the
// sections from splits[i-1] up to splits[i].
func shardsFromSplits(splits []uint64) ([]*seqdv1.ShardInfo, error) {
	var shards []*seqdv1.ShardInfo
	lo := uint64(0)
	for i, sp := range splits {
		if sp <= lo {
			return nil, fmt.Errorf("%w: shard splits must increase and be above 0 (split %d is %d)", ErrBadCommand, i, sp)
		}
		shards = append(shards, &seqdv1.ShardInfo{Id: fmt.Sprintf("s%d", i+1), FirstSection: lo, EndSection: sp})
		lo = sp
	}
	return append(shards, &seqdv1.ShardInfo{Id: fmt.Sprintf("s%d", len(splits)+1), FirstSection: lo}), nil
}

// initCluster creates the cluster. Repeated with the same id, section
// size and slots it is a retry, except that it records the lease of a
// cluster created without one (lease_ms 0: by a build that did not store
// it). A stored lease never changes: every leader's wait before moving a
// slot relies on no earlier leader having granted a longer one.
func (f *FSM) initCluster(c *clusterv1.InitClusterCommand) *ApplyResult {
	if c.ClusterId == "" || c.SectionSize == 0 || c.SectionSize > MaxSectionSize || c.NumSlots == 0 || c.NumSlots > MaxSlots {
		return &ApplyResult{Err: fmt.Errorf("%w: init needs a cluster id, section_size 1..%d and 1..%d slots", ErrBadCommand, MaxSectionSize, MaxSlots)}
	}
	if c.LeaseMs < 0 {
		return &ApplyResult{Err: fmt.Errorf("%w: lease %d ms is negative", ErrBadCommand, c.LeaseMs)}
	}
	shards, err := shardsFromSplits(c.ShardSplits)
	if err != nil {
		return &ApplyResult{Err: err}
	}
	if f.meta != nil {
		if f.meta.ClusterId == c.ClusterId && f.meta.SectionSize == c.SectionSize && f.meta.NumSlots == c.NumSlots {
			if f.meta.LeaseMs == 0 {
				f.meta.LeaseMs = c.LeaseMs
			}
			return &ApplyResult{}
		}
		return &ApplyResult{Err: fmt.Errorf("%w: have cluster %q section_size %d slots %d", ErrAlreadyInitialized,
			f.meta.ClusterId, f.meta.SectionSize, f.meta.NumSlots)}
	}
	f.meta = &clusterv1.ClusterMeta{ClusterId: c.ClusterId, SectionSize: c.SectionSize, NumSlots: c.NumSlots, Dc: c.Dc, RoutingVersion: 1, Shards: shards, LeaseMs: c.LeaseMs}
	f.slots = make([]*clusterv1.SlotRecord, c.NumSlots)
	for i := range f.slots {
		f.slots[i] = &clusterv1.SlotRecord{Slot: uint32(i)}
	}
	return &ApplyResult{}
}

func (f *FSM) setStoreReplica(c *clusterv1.SetStoreReplicaCommand) *ApplyResult {
	if f.meta == nil {
		return &ApplyResult{Err: ErrNotInitialized}
	}
	if c.ReplicaId == "" || c.Addr == "" {
		return &ApplyResult{Err: fmt.Errorf("%w: a store replica needs an id and an address", ErrBadCommand)}
	}
	if sh, ok := f.meta.RemovedStoreReplicas[c.ReplicaId]; ok {
		return &ApplyResult{Err: fmt.Errorf("%w: %s was removed from shard %s; start a replacement under a new id, with an empty --data", ErrRemovedReplica, c.ReplicaId, sh)}
	}
	for _, sh := range f.meta.Shards {
		if sh.Id != c.Shard {
			continue
		}
		for _, r := range sh.Replicas {
			if r.Id == c.ReplicaId {
				if r.Addr != c.Addr {
					r.Addr = c.Addr
					f.bump()
				}
				return &ApplyResult{}
			}
		}
		sh.Replicas = append(sh.Replicas, &seqdv1.ReplicaInfo{Id: c.ReplicaId, Addr: c.Addr})
		sort.Slice(sh.Replicas, func(i, j int) bool { return sh.Replicas[i].Id < sh.Replicas[j].Id })
		f.bump()
		return &ApplyResult{}
	}
	return &ApplyResult{Err: fmt.Errorf("%w %q", ErrUnknownShard, c.Shard)}
}

// removeStoreReplica drops a replica from its shard's map and remembers
// its id, so that it cannot register again (a removed replica restarted
// would otherwise take its place in the map, though no longer a voter).
func (f *FSM) removeStoreReplica(c *clusterv1.RemoveStoreReplicaCommand) *ApplyResult {
	if f.meta == nil {
		return &ApplyResult{Err: ErrNotInitialized}
	}
	if c.ReplicaId == "" {
		return &ApplyResult{Err: fmt.Errorf("%w: removing a store replica needs its id", ErrBadCommand)}
	}
	for _, sh := range f.meta.Shards {
		if sh.Id != c.Shard {
			continue
		}
		sh.Replicas = slices.DeleteFunc(sh.Replicas, func(r *seqdv1.ReplicaInfo) bool { return r.Id == c.ReplicaId })
		if f.meta.RemovedStoreReplicas == nil {
			f.meta.RemovedStoreReplicas = map[string]string{}
		}
		f.meta.RemovedStoreReplicas[c.ReplicaId] = c.Shard
		f.bump()
		return &ApplyResult{}
	}
	return &ApplyResult{Err: fmt.Errorf("%w %q", ErrUnknownShard, c.Shard)}
}

func (f *FSM) registerNode(c *clusterv1.RegisterNodeCommand) *ApplyResult {
	if f.meta == nil {
		return &ApplyResult{Err: ErrNotInitialized}
	}
	if c.NodeId == "" || c.Incarnation == 0 || c.Addr == "" {
		return &ApplyResult{Err: fmt.Errorf("%w: register needs node id, incarnation and address", ErrBadCommand)}
	}
	n := f.nodes[c.NodeId]
	if n != nil && c.Incarnation < n.Incarnation {
		return &ApplyResult{Err: fmt.Errorf("%w: node %s has incarnation %d, got %d", ErrStaleIncarnation, c.NodeId, n.Incarnation, c.Incarnation)}
	}
	if n != nil && n.Incarnation == c.Incarnation && n.Addr == c.Addr && n.GossipAddr == c.GossipAddr &&
		n.State == seqdv1.NodeState_NODE_STATE_ACTIVE {
		return &ApplyResult{} // a retried registration
	}
	f.nodes[c.NodeId] = &clusterv1.NodeRecord{
		Id: c.NodeId, Incarnation: c.Incarnation, Addr: c.Addr, GossipAddr: c.GossipAddr,
		State: seqdv1.NodeState_NODE_STATE_ACTIVE,
	}
	f.bump()
	return &ApplyResult{}
}

// fenced reports whether (node, incarnation) owns section's slot in generation gen.
func (f *FSM) fenced(node string, inc uint64, section, gen uint64) bool {
	if node == "" || inc == 0 {
		return true // the empty identity of an unowned slot owns nothing
	}
	s := f.slots[section%uint64(f.meta.NumSlots)]
	return s.Owner != node || s.OwnerIncarnation != inc || s.Generation != gen
}

func (f *FSM) sectionOps(c *clusterv1.SectionOpsCommand) *ApplyResult {
	if f.meta == nil {
		return &ApplyResult{Err: ErrNotInitialized}
	}
	out := make([]*clusterv1.SectionOpResult, len(c.Ops))
	for i, o := range c.Ops {
		out[i] = f.sectionOp(o)
	}
	return &ApplyResult{SectionResults: out}
}

func (f *FSM) sectionOp(o *clusterv1.OwnedSectionOp) *clusterv1.SectionOpResult {
	op := o.GetOp()
	if op == nil {
		return &clusterv1.SectionOpResult{Status: clusterv1.SectionOpStatus_SECTION_OP_STATUS_INVALID}
	}
	if f.fenced(o.NodeId, o.Incarnation, op.Section, op.Generation) {
		return &clusterv1.SectionOpResult{Status: clusterv1.SectionOpStatus_SECTION_OP_STATUS_FENCED}
	}
	rec := f.sections[op.Section]
	if rec == nil {
		rec = &clusterv1.SectionRecord{Section: op.Section}
	}
	var floor, newMax uint64
	switch op.Kind {
	case clusterv1.SectionOpKind_SECTION_OP_KIND_ACQUIRE:
		if op.Step == 0 {
			return &clusterv1.SectionOpResult{Status: clusterv1.SectionOpStatus_SECTION_OP_STATUS_INVALID}
		}
		floor = rec.MaxSeq
		if rec.HandoffGeneration == op.Generation && rec.HandoffFloor <= rec.MaxSeq {
			floor = rec.HandoffFloor
		}
		newMax = max(rec.MaxSeq, satAdd(floor, op.Step))
	case clusterv1.SectionOpKind_SECTION_OP_KIND_RAISE:
		newMax = max(rec.MaxSeq, op.MinMax)
	default:
		return &clusterv1.SectionOpResult{Status: clusterv1.SectionOpStatus_SECTION_OP_STATUS_INVALID}
	}
	if newMax > seqfmt.MaxCounter {
		// Serve what is left; the section needs a new epoch to go further.
		if rec.MaxSeq >= seqfmt.MaxCounter || op.Kind == clusterv1.SectionOpKind_SECTION_OP_KIND_RAISE {
			return &clusterv1.SectionOpResult{Status: clusterv1.SectionOpStatus_SECTION_OP_STATUS_EXHAUSTED, MaxSeq: rec.MaxSeq, Epoch: rec.Epoch}
		}
		newMax = seqfmt.MaxCounter
	}
	if op.Kind == clusterv1.SectionOpKind_SECTION_OP_KIND_ACQUIRE {
		// A hand-over mark is good for one load only: a second load in the
		// same generation may follow seqs handed out after the first.
		rec.HandoffGeneration, rec.HandoffFloor = 0, 0
	}
	rec.MaxSeq = newMax
	f.sections[op.Section] = rec
	return &clusterv1.SectionOpResult{Status: clusterv1.SectionOpStatus_SECTION_OP_STATUS_OK, Floor: floor, MaxSeq: newMax, Epoch: rec.Epoch}
}

func satAdd(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}

// moveTarget returns the node record a move may hand a slot to, or nil.
func (f *FSM) moveTarget(m *clusterv1.SlotMove) (*clusterv1.NodeRecord, bool) {
	if m.ToNode == "" {
		return nil, true // unassign
	}
	n := f.nodes[m.ToNode]
	if n == nil || n.Incarnation != m.ToIncarnation || n.State != seqdv1.NodeState_NODE_STATE_ACTIVE {
		return nil, false
	}
	return n, true
}

func (f *FSM) assignSlots(c *clusterv1.AssignSlotsCommand) *ApplyResult {
	if f.meta == nil {
		return &ApplyResult{Err: ErrNotInitialized}
	}
	applied := make([]bool, len(c.Moves))
	changed := false
	for i, m := range c.Moves {
		if m.Slot >= f.meta.NumSlots {
			continue
		}
		s := f.slots[m.Slot]
		if s.Generation != m.FromGeneration {
			continue
		}
		n, ok := f.moveTarget(m)
		if !ok {
			continue
		}
		s.Generation++
		s.MovingTo, s.MovingToIncarnation = "", 0
		if n == nil {
			s.Owner, s.OwnerIncarnation = "", 0
		} else {
			s.Owner, s.OwnerIncarnation = n.Id, n.Incarnation
		}
		for _, mk := range m.Marks {
			if mk.Section%uint64(f.meta.NumSlots) != uint64(m.Slot) {
				continue
			}
			if rec := f.sections[mk.Section]; rec != nil && mk.HighWater <= rec.MaxSeq {
				rec.HandoffGeneration, rec.HandoffFloor = s.Generation, mk.HighWater
			}
		}
		applied[i] = true
		changed = true
	}
	if changed {
		f.bump()
	}
	return &ApplyResult{Applied: applied}
}

func (f *FSM) beginMoves(c *clusterv1.BeginMovesCommand) *ApplyResult {
	if f.meta == nil {
		return &ApplyResult{Err: ErrNotInitialized}
	}
	applied := make([]bool, len(c.Moves))
	for i, m := range c.Moves {
		if m.Slot >= f.meta.NumSlots || m.ToNode == "" {
			continue
		}
		s := f.slots[m.Slot]
		if s.Generation != m.FromGeneration || s.Owner == "" {
			continue
		}
		if _, ok := f.moveTarget(m); !ok {
			continue
		}
		s.MovingTo, s.MovingToIncarnation = m.ToNode, m.ToIncarnation
		applied[i] = true
	}
	return &ApplyResult{Applied: applied}
}

func (f *FSM) setNodeState(c *clusterv1.SetNodeStateCommand) *ApplyResult {
	n := f.nodes[c.NodeId]
	if n == nil {
		return &ApplyResult{Err: fmt.Errorf("%w %q", ErrUnknownNode, c.NodeId)}
	}
	switch c.State {
	case seqdv1.NodeState_NODE_STATE_ACTIVE, seqdv1.NodeState_NODE_STATE_DRAINING:
	default:
		return &ApplyResult{Err: fmt.Errorf("%w: state %v cannot be set directly", ErrBadCommand, c.State)}
	}
	if n.State != c.State {
		n.State = c.State
		f.bump()
	}
	return &ApplyResult{}
}

func (f *FSM) deregisterNode(c *clusterv1.DeregisterNodeCommand) *ApplyResult {
	n := f.nodes[c.NodeId]
	if n == nil || n.Incarnation != c.Incarnation {
		return &ApplyResult{} // already gone or replaced
	}
	for _, s := range f.slots {
		if s.Owner == c.NodeId {
			return &ApplyResult{Err: fmt.Errorf("%w: %s", ErrNodeOwnsSlots, c.NodeId)}
		}
	}
	delete(f.nodes, c.NodeId)
	f.bump()
	return &ApplyResult{}
}

func (f *FSM) setArbiter(c *clusterv1.SetArbiterCommand) *ApplyResult {
	a := c.GetArbiter()
	if a == nil || a.Id == "" {
		return &ApplyResult{Err: fmt.Errorf("%w: arbiter needs an id", ErrBadCommand)}
	}
	f.arbiters[a.Id] = proto.Clone(a).(*clusterv1.ArbiterRecord)
	return &ApplyResult{}
}

// Snapshot implements raft.FSM. It copies the state so Persist can run
// while Apply continues.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{records: f.recordsLocked()}, nil
}

// recordsLocked returns a deep copy of the state as snapshot records, in a
// deterministic order.
func (f *FSM) recordsLocked() []*clusterv1.SnapshotRecord {
	var out []*clusterv1.SnapshotRecord
	if f.meta != nil {
		out = append(out, &clusterv1.SnapshotRecord{Record: &clusterv1.SnapshotRecord_Meta{Meta: proto.Clone(f.meta).(*clusterv1.ClusterMeta)}})
	}
	for _, s := range f.slots {
		out = append(out, &clusterv1.SnapshotRecord{Record: &clusterv1.SnapshotRecord_Slot{Slot: proto.Clone(s).(*clusterv1.SlotRecord)}})
	}
	for _, id := range sortedKeys(f.nodes) {
		out = append(out, &clusterv1.SnapshotRecord{Record: &clusterv1.SnapshotRecord_Node{Node: proto.Clone(f.nodes[id]).(*clusterv1.NodeRecord)}})
	}
	for _, id := range sortedKeys(f.arbiters) {
		out = append(out, &clusterv1.SnapshotRecord{Record: &clusterv1.SnapshotRecord_Arbiter{Arbiter: proto.Clone(f.arbiters[id]).(*clusterv1.ArbiterRecord)}})
	}
	secs := make([]uint64, 0, len(f.sections))
	for s := range f.sections {
		secs = append(secs, s)
	}
	sort.Slice(secs, func(i, j int) bool { return secs[i] < secs[j] })
	for _, s := range secs {
		out = append(out, &clusterv1.SnapshotRecord{Record: &clusterv1.SnapshotRecord_Section{Section: proto.Clone(f.sections[s]).(*clusterv1.SectionRecord)}})
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Restore implements raft.FSM.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	records, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	n := NewFSM()
	for _, r := range records {
		switch x := r.Record.(type) {
		case *clusterv1.SnapshotRecord_Meta:
			n.meta = x.Meta
		case *clusterv1.SnapshotRecord_Slot:
			n.slots = append(n.slots, x.Slot)
		case *clusterv1.SnapshotRecord_Node:
			n.nodes[x.Node.Id] = x.Node
		case *clusterv1.SnapshotRecord_Arbiter:
			n.arbiters[x.Arbiter.Id] = x.Arbiter
		case *clusterv1.SnapshotRecord_End:
			// readSnapshot consumed it.
		case *clusterv1.SnapshotRecord_Section:
			n.sections[x.Section.Section] = x.Section
		default:
			return fmt.Errorf("arbiter: snapshot: unknown record %T", r.Record)
		}
	}
	if n.meta == nil && (len(n.slots) > 0 || len(n.nodes) > 0 || len(n.sections) > 0) {
		return errors.New("arbiter: snapshot: state records without the cluster settings record")
	}
	if n.meta != nil {
		if n.meta.NumSlots == 0 || n.meta.NumSlots > MaxSlots || n.meta.SectionSize == 0 || n.meta.SectionSize > MaxSectionSize || n.meta.ClusterId == "" || n.meta.LeaseMs < 0 {
			return fmt.Errorf("arbiter: snapshot: invalid cluster settings (cluster %q, %d slots, section size %d, lease %d ms)", n.meta.ClusterId, n.meta.NumSlots, n.meta.SectionSize, n.meta.LeaseMs)
		}
		if uint32(len(n.slots)) != n.meta.NumSlots {
			return fmt.Errorf("arbiter: snapshot: %d slot records for %d slots", len(n.slots), n.meta.NumSlots)
		}
	}
	for i, s := range n.slots {
		if s.Slot != uint32(i) {
			return fmt.Errorf("arbiter: snapshot: slot record %d out of order (%d)", i, s.Slot)
		}
	}
	f.mu.Lock()
	f.meta, f.sections, f.slots, f.nodes, f.arbiters, f.table = n.meta, n.sections, n.slots, n.nodes, n.arbiters, nil
	f.mu.Unlock()
	if f.onChange != nil {
		f.onChange()
	}
	return nil
}
