package allocsvr

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/bugs"
	"github.com/seqd/seqd/internal/rpcerr"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	"github.com/seqd/seqd/seqfmt"
)

// errNotOwner is returned inside the package when a slot is not served
// here; the RPC layer turns it into a NOT_OWNER status with the table.
var errNotOwner = errors.New("allocsvr: not the owner")

// notOwnerError names the key the refusal is about.
type notOwnerError struct {
	key, section uint64
	slot         uint32
}

func (e *notOwnerError) Error() string {
	return fmt.Sprintf("key %d (section %d, slot %d) is not served by this node now", e.key, e.section, e.slot)
}

func (e *notOwnerError) Unwrap() error { return errNotOwner }

const loadTimeout = 5 * time.Second

// errKeyZero explains why key 0 is refused.
var errKeyZero = status.Error(codes.InvalidArgument, "key 0 is reserved; keys start at 1")

// section returns the loaded section id for slot generation gen, loading it
// through the arbiter if needed. Concurrent callers share one load. waited
// reports that it did not find the section ready: the caller then checks
// the lease again, as time has passed since it did.
func (s *Server) section(ctx context.Context, ls *leases, id uint64, slot uint32, gen uint64, key uint64) (sc *section, waited bool, err error) {
	for {
		if v, ok := s.sections.Load(id); ok {
			sc := v.(*section)
			select {
			case <-sc.ready: // the hot path: loaded, no timer
			default:
				waited = true
				if err := waitLeased(ctx, ls, sc.ready); err != nil {
					return nil, waited, notOwnerIfLapsed(err, key, id, slot)
				}
			}
			if sc.loadErr == nil && sc.gen == gen && !sc.dead.Load() {
				return sc, waited, nil
			}
			s.sections.CompareAndDelete(id, sc)
			if sc.gen == gen && sc.loadErr != nil {
				return nil, waited, sc.loadErr
			}
			if sc.gen > gen {
				return nil, waited, &notOwnerError{key, id, slot}
			}
			continue
		}
		sc := &section{id: id, slot: slot, gen: gen, ready: make(chan struct{})}
		if _, loaded := s.sections.LoadOrStore(id, sc); loaded {
			continue
		}
		s.load(sc, ls, key)
		if sc.loadErr != nil {
			return nil, true, sc.loadErr
		}
		return sc, true, nil
	}
}

// load acquires the section from the arbiter: its floor (nothing above it
// was ever handed out for any of its keys) and a raised max_seq.
func (s *Server) load(sc *section, ls *leases, key uint64) {
	defer close(sc.ready)
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	// Give up when the lease lapses rather than at the timeout.
	go func() {
		if waitLeased(ctx, ls, ctx.Done()) == errLeaseLapsed {
			cancel()
		}
	}()
	res, err := s.ops.Do(ctx, &clusterv1.SectionOp{
		Kind: clusterv1.SectionOpKind_SECTION_OP_KIND_ACQUIRE, Section: sc.id, Generation: sc.gen, Step: s.step.Load(),
	})
	if err == nil {
		err = s.opError(res, sc, key)
	} else if ls.remaining() <= 0 {
		err = &notOwnerError{key, sc.id, sc.slot}
	}
	if err != nil {
		sc.loadErr = err
		s.sections.CompareAndDelete(sc.id, sc)
		return
	}
	s.m.loads.Inc()
	sc.epoch, sc.floor, sc.max, sc.hwm = res.Epoch, res.Floor, res.MaxSeq, res.Floor
	sc.keys = newCounters(uint32(s.lay.Load().sectionSize))
}

// opError turns a section op's status into an error.
func (s *Server) opError(res *clusterv1.SectionOpResult, sc *section, key uint64) error {
	switch res.Status {
	case clusterv1.SectionOpStatus_SECTION_OP_STATUS_OK:
		return nil
	case clusterv1.SectionOpStatus_SECTION_OP_STATUS_FENCED:
		// The slot changed hands: learn the new owner now.
		go s.renewNow(context.Background(), 0)
		return &notOwnerError{key, sc.id, sc.slot}
	case clusterv1.SectionOpStatus_SECTION_OP_STATUS_EXHAUSTED:
		return status.Errorf(codes.ResourceExhausted, "section %d has used all %d counters of epoch %d; it needs a new epoch", sc.id, uint64(seqfmt.MaxCounter), res.Epoch)
	}
	return status.Errorf(codes.Internal, "arbiter answered section op with %v", res.Status)
}

// raise is one in-flight max_seq raise of a section.
type raise struct {
	done chan struct{}
	err  error
}

// startRaise raises sc.max by a step in the background. Called with sc.mu held.
func (s *Server) startRaise(sc *section, mode string, key uint64) *raise {
	if sc.raising != nil {
		return sc.raising
	}
	r := &raise{done: make(chan struct{})}
	sc.raising = r
	minMax := sc.max + s.step.Load()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
		defer cancel()
		res, err := s.ops.Do(ctx, &clusterv1.SectionOp{
			Kind: clusterv1.SectionOpKind_SECTION_OP_KIND_RAISE, Section: sc.id, Generation: sc.gen, MinMax: minMax,
		})
		if err == nil {
			err = s.opError(res, sc, key)
		}
		outcome := "ok"
		sc.mu.Lock()
		if err != nil {
			outcome = "error"
			r.err = err
			if errors.Is(err, errNotOwner) {
				sc.dead.Store(true)
			}
		} else if res.MaxSeq > sc.max {
			sc.max = res.MaxSeq
		}
		sc.raising = nil
		sc.mu.Unlock()
		close(r.done)
		s.m.raises.WithLabelValues(mode, outcome).Inc()
	}()
	return r
}

// errLeaseLapsed means the lease ran out while a caller waited.
var errLeaseLapsed = errors.New("lease lapsed")

// waitLeased waits for done (a raise or a section load), but no longer than
// the lease lasts: a node cut off from the arbiters must not hold its
// callers until the arbiter RPC times out, long after the slot may already
// be served elsewhere. Renewals that land meanwhile extend the wait.
func waitLeased(ctx context.Context, ls *leases, done <-chan struct{}) error {
	for {
		left := ls.remaining()
		if left <= 0 && bugs.Enabled(bugs.AcceptStaleRoutingTable) {
			left = time.Hour // planted bug: a lapsed lease does not matter
		}
		if left <= 0 {
			return errLeaseLapsed
		}
		t := time.NewTimer(max(left, time.Millisecond))
		select {
		case <-done:
			t.Stop()
			return nil
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// servingGen is the generation in which slot may be served now, or 0.
func servingGen(ls *leases, slot uint32) uint64 {
	gen := ls.serving(slot)
	if gen == 0 && bugs.Enabled(bugs.AcceptStaleRoutingTable) {
		gen = ls.owned[slot].Load() // planted bug: trust the last granted table, not the lease
	}
	return gen
}

// notOwnerIfLapsed turns a wait that the lease ended into NOT_OWNER for key.
func notOwnerIfLapsed(err error, key, id uint64, slot uint32) error {
	if errors.Is(err, errLeaseLapsed) {
		return &notOwnerError{key, id, slot}
	}
	return err
}

// stillServes re-checks, under sc's lock, that sc may hand out numbers: a
// planned hand-over marks the slot released, then collects each section's
// high-water mark under this same lock. After a wait (a load, a raise) the
// lease must still hold too; without one the caller checked it just now.
func stillServes(ls *leases, sc *section, waited bool) bool {
	return !sc.dead.Load() && ls.owns(sc.slot, sc.gen) && (!waited || servingGen(ls, sc.slot) == sc.gen)
}

// nextOne hands out the next seq for key. The caller checked key != 0.
func (s *Server) nextOne(ctx context.Context, lay *layout, ls *leases, key uint64) (uint64, error) {
	id, slot, off := lay.locate(key)
	gen := servingGen(ls, slot)
	if gen == 0 {
		return 0, &notOwnerError{key, id, slot}
	}
	sc, waited, err := s.section(ctx, ls, id, slot, gen, key)
	if err != nil {
		return 0, err
	}
	step := s.step.Load()
	sc.mu.Lock()
	for {
		if !stillServes(ls, sc, waited) {
			sc.mu.Unlock()
			return 0, &notOwnerError{key, id, slot}
		}
		cur := sc.floor + sc.keys.get(off) + 1
		if cur <= sc.max {
			sc.keys.set(off, cur-sc.floor)
			if cur > sc.hwm {
				sc.hwm = cur
			}
			if sc.raising == nil && sc.headroomLow(cur, step) {
				s.startRaise(sc, "background", key)
			}
			epoch := sc.epoch
			sc.mu.Unlock()
			s.m.allocations.Inc()
			return seqfmt.Make(epoch, cur)
		}
		// Out of committed room: wait for a raise. Never hand out a number
		// above a max_seq the arbiter has not committed.
		r := s.startRaise(sc, "sync", key)
		if bugs.Enabled(bugs.AckBeforeRaiseCommit) {
			sc.max = cur // planted bug: count the raise as committed before it is
			continue
		}
		sc.mu.Unlock()
		start := time.Now()
		waited = true
		if err := waitLeased(ctx, ls, r.done); err != nil {
			return 0, notOwnerIfLapsed(err, key, id, slot)
		}
		s.m.raiseWait.Observe(time.Since(start).Seconds())
		if r.err != nil {
			return 0, r.err
		}
		sc.mu.Lock()
	}
}

// current returns the last seq handed out for key, loading its section if
// needed. Keys never used since the load report the floor: no number above
// it was handed out, and the next one will be above it.
func (s *Server) current(ctx context.Context, lay *layout, ls *leases, key uint64) (uint64, error) {
	id, slot, off := lay.locate(key)
	gen := servingGen(ls, slot)
	if gen == 0 {
		return 0, &notOwnerError{key, id, slot}
	}
	sc, waited, err := s.section(ctx, ls, id, slot, gen, key)
	if err != nil {
		return 0, err
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !stillServes(ls, sc, waited) {
		return 0, &notOwnerError{key, id, slot}
	}
	return seqfmt.Make(sc.epoch, sc.floor+sc.keys.get(off))
}

// ready returns the layout and leases, or an error while unregistered.
func (s *Server) serveState() (*layout, *leases, error) {
	lay, ls := s.lay.Load(), s.ls.Load()
	if lay == nil || ls == nil {
		return nil, nil, status.Errorf(codes.Unavailable, "allocsvr %s is starting and not registered with the arbiters yet; retry shortly", s.cfg.ID)
	}
	return lay, ls, nil
}

// nextBatch hands out one seq per key. It checks that every key's slot is
// served here before it allocates anything.
func (s *Server) nextBatch(ctx context.Context, keys []uint64) ([]uint64, error) {
	if len(keys) == 0 {
		return nil, status.Error(codes.InvalidArgument, "keys is empty; send at least one key")
	}
	if len(keys) > s.cfg.MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "%d keys in one batch; the limit is %d", len(keys), s.cfg.MaxBatch)
	}
	lay, ls, err := s.serveState()
	if err != nil {
		return nil, err
	}
	for i, k := range keys {
		if k == 0 {
			return nil, status.Errorf(codes.InvalidArgument, "keys[%d] is 0; key 0 is reserved, keys start at 1", i)
		}
		if id, slot, _ := lay.locate(k); servingGen(ls, slot) == 0 {
			return nil, &notOwnerError{k, id, slot}
		}
	}
	out := make([]uint64, len(keys))
	for i, k := range keys {
		v, err := s.nextOne(ctx, lay, ls, k)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// statusErr turns package errors into gRPC statuses.
func (s *Server) statusErr(err error) error {
	var no *notOwnerError
	switch {
	case errors.As(err, &no):
		s.m.notOwner.Inc()
		t := s.table.Load()
		return rpcerr.NotOwner(t, "%s (node %s, routing table version %d attached)", no.Error(), s.cfg.ID, t.Version)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Unavailable, err.Error())
}
