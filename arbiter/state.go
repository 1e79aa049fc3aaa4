package arbiter

import (
	"time"

	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// Read-only views of FSM state for the server and the leader loops. Every
// returned message is a copy or immutable; callers must not modify it.

// Initialized reports whether INIT_CLUSTER has been applied.
func (f *FSM) Initialized() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.meta != nil
}

// Meta returns a copy of the cluster settings, or nil before init.
func (f *FSM) Meta() *clusterv1.ClusterMeta {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.meta == nil {
		return nil
	}
	return proto.Clone(f.meta).(*clusterv1.ClusterMeta)
}

// Lease returns the cluster's stored lease: 0 before init, and on a
// cluster created without one until a leader records it.
func (f *FSM) Lease() time.Duration {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.meta == nil {
		return 0
	}
	return time.Duration(f.meta.LeaseMs) * time.Millisecond
}

// RoutingVersion returns the routing-table version (0 before init).
func (f *FSM) RoutingVersion() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.version()
}

// RoutingTable returns the public routing table. The result is shared and
// immutable.
func (f *FSM) RoutingTable() *seqdv1.RoutingTable {
	f.mu.RLock()
	t := f.table
	f.mu.RUnlock()
	if t != nil {
		return t
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.table == nil {
		f.table = f.buildTableLocked()
	}
	return f.table
}

func (f *FSM) buildTableLocked() *seqdv1.RoutingTable {
	if f.meta == nil {
		return &seqdv1.RoutingTable{}
	}
	t := &seqdv1.RoutingTable{
		Version:     f.meta.RoutingVersion,
		ClusterId:   f.meta.ClusterId,
		SectionSize: f.meta.SectionSize,
		NumSlots:    f.meta.NumSlots,
		Dc:          f.meta.Dc,
		Slots:       make([]*seqdv1.SlotAssignment, len(f.slots)),
	}
	for _, sh := range f.meta.Shards {
		t.Shards = append(t.Shards, proto.Clone(sh).(*seqdv1.ShardInfo))
	}
	for i, s := range f.slots {
		t.Slots[i] = &seqdv1.SlotAssignment{Owner: s.Owner, Generation: s.Generation}
	}
	for _, id := range sortedKeys(f.nodes) {
		n := f.nodes[id]
		t.Nodes = append(t.Nodes, &seqdv1.NodeInfo{Id: n.Id, Addr: n.Addr, State: n.State})
	}
	return t
}

// Slots returns a copy of every slot record.
func (f *FSM) Slots() []*clusterv1.SlotRecord {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*clusterv1.SlotRecord, len(f.slots))
	for i, s := range f.slots {
		out[i] = proto.Clone(s).(*clusterv1.SlotRecord)
	}
	return out
}

// Nodes returns a copy of the AllocSvr registry.
func (f *FSM) Nodes() map[string]*clusterv1.NodeRecord {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]*clusterv1.NodeRecord, len(f.nodes))
	for id, n := range f.nodes {
		out[id] = proto.Clone(n).(*clusterv1.NodeRecord)
	}
	return out
}

// Node returns a copy of one registry entry, or nil.
func (f *FSM) Node(id string) *clusterv1.NodeRecord {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if n := f.nodes[id]; n != nil {
		return proto.Clone(n).(*clusterv1.NodeRecord)
	}
	return nil
}

// OwnedSlots returns the slots (node, incarnation) owns, with generations.
func (f *FSM) OwnedSlots(node string, inc uint64) []*clusterv1.OwnedSlot {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*clusterv1.OwnedSlot
	for _, s := range f.slots {
		if s.Owner == node && s.OwnerIncarnation == inc {
			out = append(out, &clusterv1.OwnedSlot{Slot: s.Slot, Generation: s.Generation})
		}
	}
	return out
}

// Arbiters returns a copy of the arbiter address book.
func (f *FSM) Arbiters() map[string]*clusterv1.ArbiterRecord {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]*clusterv1.ArbiterRecord, len(f.arbiters))
	for id, a := range f.arbiters {
		out[id] = proto.Clone(a).(*clusterv1.ArbiterRecord)
	}
	return out
}

// Section returns a copy of one section record, or nil if it was never used.
func (f *FSM) Section(s uint64) *clusterv1.SectionRecord {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if r := f.sections[s]; r != nil {
		return proto.Clone(r).(*clusterv1.SectionRecord)
	}
	return nil
}

// SectionCount returns how many sections have ever been used.
func (f *FSM) SectionCount() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.sections)
}
