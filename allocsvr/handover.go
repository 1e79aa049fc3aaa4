package allocsvr

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

// Release stops serving the given slots for a planned move and reports each
// loaded section's high-water mark, so the new owner can start right above
// it without waiting out our lease. It is idempotent: a retried call
// returns the same marks.
func (r *server) Release(ctx context.Context, req *clusterv1.ReleaseRequest) (*clusterv1.ReleaseResponse, error) {
	s := r.s
	ls := s.leases()
	if ls == nil {
		return nil, status.Error(codes.Unavailable, "allocsvr is not registered yet")
	}
	if inc := s.inc.Load(); req.Incarnation != inc {
		return nil, status.Errorf(codes.FailedPrecondition, "release names incarnation %d but this is incarnation %d", req.Incarnation, inc)
	}
	gens := make(map[uint32]uint64, len(req.Slots))
	for _, o := range req.Slots {
		if o.Slot >= uint32(len(ls.owned)) {
			return nil, status.Errorf(codes.InvalidArgument, "slot %d does not exist (the cluster has %d)", o.Slot, len(ls.owned))
		}
		gens[o.Slot] = o.Generation
	}
	// Mark first: from here on no section of these slots hands out a number,
	// because the hot path re-checks this under the section lock.
	for slot, gen := range gens {
		ls.release(slot, gen)
	}
	fresh := map[uint32][]*clusterv1.SectionMark{}
	s.sections.Range(func(k, v any) bool {
		sc := v.(*section)
		gen, ok := gens[sc.slot]
		if !ok || sc.gen > gen {
			return true
		}
		<-sc.ready
		sc.mu.Lock()
		sc.dead.Store(true)
		// Only a section loaded in the released generation reports its
		// mark: one left from an older generation may be behind what
		// another owner served in between.
		if sc.loadErr == nil && sc.gen == gen {
			fresh[sc.slot] = append(fresh[sc.slot], &clusterv1.SectionMark{Section: sc.id, HighWater: sc.hwm})
		}
		sc.mu.Unlock()
		s.sections.CompareAndDelete(k, sc)
		return true
	})
	resp := &clusterv1.ReleaseResponse{}
	s.markMu.Lock()
	defer s.markMu.Unlock()
	for slot, gen := range gens {
		rs := s.marks[slot]
		if rs == nil || rs.gen != gen {
			rs = &releasedSlot{gen: gen}
			s.marks[slot] = rs
		}
		rs.marks = append(rs.marks, fresh[slot]...)
		resp.Marks = append(resp.Marks, rs.marks...)
	}
	s.log.Debug("released slots for a planned move", "slots", len(gens), "marks", len(resp.Marks))
	return resp, nil
}
