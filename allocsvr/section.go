package allocsvr

import (
	"sync"
	"sync/atomic"
)

// section holds the in-memory counters of one loaded section.
//
// A section is loaded for one slot generation: floor is the counter every
// key starts from (no key of the section was ever given more before the
// load), max is the committed max_seq. Numbers above max are never handed
// out until a raise of max is committed by the arbiter.
type section struct {
	id   uint64
	slot uint32
	gen  uint64

	ready   chan struct{} // closed once loaded (or failed)
	loadErr error

	mu      sync.Mutex
	epoch   uint32
	floor   uint64
	max     uint64
	hwm     uint64      // highest counter handed out, reported on hand-over
	dead    atomic.Bool // dropped or handed over: never serve again; written under mu
	raising *raise
	keys    *counters
}

// headroomLow reports whether the background raise should start: less than
// half a step left below max for the key just served.
func (s *section) headroomLow(cur, step uint64) bool {
	return s.max-cur < step/2
}
