package checker

import (
	"sync"
	"time"
)

// Recorder collects operations from many goroutines, timed on one
// monotonic clock.
type Recorder struct {
	origin time.Time
	mu     sync.Mutex
	ops    []SeqOp
}

// NewRecorder starts the clock.
func NewRecorder() *Recorder { return &Recorder{origin: time.Now()} }

// NewRecorderAt reads a clock started at origin, so several recorders (and
// a fault schedule) can share one time axis.
func NewRecorderAt(origin time.Time) *Recorder { return &Recorder{origin: origin} }

// Now returns the recorder's clock reading.
func (r *Recorder) Now() time.Duration { return time.Since(r.origin) }

// Add records an operation; a failed one carries its error in Err.
func (r *Recorder) Add(op SeqOp) {
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

// Ops returns a copy of everything recorded so far.
func (r *Recorder) Ops() []SeqOp {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]SeqOp(nil), r.ops...)
}

// Check runs every sequence checker.
func Check(ops []SeqOp) []Anomaly {
	return append(Unique(ops), Realtime(ops)...)
}
