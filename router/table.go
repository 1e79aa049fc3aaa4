package router

import (
	"github.com/seqd/seqd/internal/bugs"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// view is a routing table compiled for lookups.
type view struct {
	raw         *seqdv1.RoutingTable
	version     uint64
	sectionSize uint64
	numSlots    uint64
	owners      []string // gRPC address per slot; "" if unassigned
}

func compile(t *seqdv1.RoutingTable) *view {
	v := &view{raw: t, version: t.Version, sectionSize: t.SectionSize, numSlots: uint64(t.NumSlots)}
	addr := make(map[string]string, len(t.Nodes))
	for _, n := range t.Nodes {
		addr[n.Id] = n.Addr
	}
	v.owners = make([]string, len(t.Slots))
	for i, s := range t.Slots {
		v.owners[i] = addr[s.Owner]
	}
	return v
}

// valid reports whether the table can route anything.
func (v *view) valid() bool {
	return v != nil && v.sectionSize > 0 && v.numSlots > 0 && uint64(len(v.owners)) == v.numSlots
}

// owner returns the gRPC address serving key, or "".
func (v *view) owner(key uint64) string {
	return v.owners[(key/v.sectionSize)%v.numSlots]
}

// acceptTable decides whether a table with version got replaces one with
// version have. Tables only move forward: an older table (a slow node's
// answer) must never undo a newer one.
func acceptTable(have, got uint64) bool {
	return got > have || bugs.Enabled(bugs.AcceptStaleRoutingTable) && got != have
}
