// Package allocsvr hands out per-key sequence numbers from leased sections.
package allocsvr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/seqd/seqd/internal/backoff"
	"github.com/seqd/seqd/internal/gossip"
	"github.com/seqd/seqd/internal/groupcommit"
	"github.com/seqd/seqd/internal/mclock"
	"github.com/seqd/seqd/internal/nodeid"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// DefaultMaxBatch caps the keys of one NextBatch.
const DefaultMaxBatch = 10_000

// Config configures an AllocSvr.
type Config struct {
	ID        string
	ClusterID string
	// Addr is the advertised gRPC address clients and arbiters dial.
	Addr string
	// Arbiters lists arbiter gRPC addresses; any one is enough.
	Arbiters []string
	// GossipAddr is the memberlist address; empty disables gossip.
	GossipAddr string
	// GossipAdvertiseHost, if set, is the host the pool is told, with
	// the gossip port (--advertise-host).
	GossipAdvertiseHost string
	GossipProfile       gossip.Profile
	// MaxBatch caps the keys of one NextBatch (default 10,000).
	MaxBatch int
	// DrainTimeout bounds the planned hand-over on Close (default 10 s).
	DrainTimeout time.Duration
	// ArbiterDialOptions are extra options for connections to arbiters
	// (tests inject faults here).
	ArbiterDialOptions []grpc.DialOption

	Logger   *slog.Logger
	Registry prometheus.Registerer
	Clock    mclock.Clock
}

// Validate checks the configuration and says what to fix.
func (c *Config) Validate() error {
	var errs []error
	if err := nodeid.Validate(c.ID); err != nil {
		errs = append(errs, fmt.Errorf("allocsvr: %w", err))
	}
	if c.Addr == "" {
		errs = append(errs, errors.New("allocsvr: gRPC address is empty; set --grpc-addr"))
	}
	if len(c.Arbiters) == 0 {
		errs = append(errs, errors.New("allocsvr: no arbiter addresses; set --arbiters host:port[,host:port...]"))
	}
	if c.MaxBatch < 0 {
		errs = append(errs, fmt.Errorf("allocsvr: max batch %d is negative", c.MaxBatch))
	}
	return errors.Join(errs...)
}

// layout is fixed at cluster creation and learned at registration.
type layout struct {
	sectionSize uint64
	numSlots    uint32
}

func (l *layout) locate(key uint64) (sec uint64, slot uint32, off uint32) {
	sec = key / l.sectionSize
	return sec, uint32(sec % uint64(l.numSlots)), uint32(key - sec*l.sectionSize)
}

type releasedSlot struct {
	gen   uint64
	marks []*clusterv1.SectionMark
}

// Server is one AllocSvr.
type Server struct {
	cfg    Config
	log    *slog.Logger
	m      *metrics
	arb    *arbiterClient
	ops    *groupcommit.Batcher[*clusterv1.SectionOp, *clusterv1.SectionOpResult]
	gossip *gossip.Pool

	inc        atomic.Uint64
	lay        atomic.Pointer[layout]
	ls         atomic.Pointer[leases]
	table      atomic.Pointer[seqdv1.RoutingTable]
	step       atomic.Uint64
	leaseDur   atomic.Int64
	renewEvery atomic.Int64

	sections sync.Map // section id -> *section

	markMu sync.Mutex
	marks  map[uint32]*releasedSlot

	renewMu sync.Mutex
	renewed chan struct{} // closed and replaced after every renewal attempt

	poke  chan struct{}
	ready chan struct{}
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

// New builds an AllocSvr. It serves nothing until Start has registered it.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Clock == nil {
		cfg.Clock = mclock.Real
	}
	if cfg.ClusterID == "" {
		cfg.ClusterID = "seqd"
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "allocsvr", "node", cfg.ID),
		arb:     newArbiterClient(cfg.Arbiters, cfg.ArbiterDialOptions),
		marks:   make(map[uint32]*releasedSlot),
		renewed: make(chan struct{}),
		poke:    make(chan struct{}, 1),
		ready:   make(chan struct{}),
		stop:    make(chan struct{}),
	}
	s.table.Store(&seqdv1.RoutingTable{})
	s.m = newMetrics(cfg.Registry, s)
	s.ops = groupcommit.New(maxOpsPerCall, 2, s.commitOps)
	return s, nil
}

// maxOpsPerCall matches the arbiter's limit on one AllocateSections call.
const maxOpsPerCall = 1024

// Start registers with the arbiters and keeps the lease renewed, in the
// background. Serving begins once the first renewal grants slots.
func (s *Server) Start(ctx context.Context) error {
	s.wg.Add(1)
	go s.run()
	return nil
}

// WaitReady blocks until the node has registered, or ctx ends.
func (s *Server) WaitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("allocsvr %s: not registered with the arbiters yet: %w", s.cfg.ID, ctx.Err())
	}
}

// ID returns the node id.
func (s *Server) ID() string { return s.cfg.ID }

func (s *Server) leases() *leases { return s.ls.Load() }

// Close hands every slot over to other AllocSvrs (planned, so they serve at
// once), deregisters, and stops.
func (s *Server) Close() error { return s.shutdown(true) }

// Kill stops at once, as a crash would: no hand-over, no goodbye. The
// arbiters move its slots once its lease has certainly run out.
func (s *Server) Kill() { s.shutdown(false) }

func (s *Server) shutdown(graceful bool) error {
	var err error
	s.once.Do(func() {
		if graceful && s.ls.Load() != nil {
			err = s.drainSelf()
		}
		close(s.stop)
		s.wg.Wait()
		s.ops.Close()
		if l := s.leases(); l != nil {
			l.revoke()
		}
		if s.gossip != nil {
			if graceful {
				s.gossip.Close()
			} else {
				s.gossip.Kill()
			}
		}
		s.arb.close()
	})
	return err
}

// drainSelf asks the arbiters to move this node's slots away and waits.
func (s *Server) drainSelf() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	var remaining uint32
	err := s.arb.call(ctx, func(ctx context.Context, _ clusterv1.ArbiterClient) error {
		cc, err := s.arb.pool.Get(s.arb.pick())
		if err != nil {
			return err
		}
		resp, err := seqdv1.NewAdminClient(cc).Drain(ctx, &seqdv1.DrainRequest{Node: s.cfg.ID, Wait: true})
		if err == nil {
			remaining = resp.RemainingSlots
		}
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			s.log.Warn("drain on shutdown timed out: no other AllocSvr took the slots within --drain-timeout; they move when one registers, after the lease runs out",
				"drain_timeout", s.cfg.DrainTimeout, "err", err)
			return nil
		}
		s.log.Warn("drain on shutdown failed; slots move when the lease runs out", "err", err)
		return nil
	}
	if remaining > 0 {
		s.log.Warn("drain on shutdown timed out; remaining slots move when the lease runs out", "slots", remaining)
		return nil
	}
	inc := s.inc.Load()
	if err := s.arb.call(ctx, func(ctx context.Context, c clusterv1.ArbiterClient) error {
		_, err := c.Deregister(ctx, &clusterv1.DeregisterRequest{NodeId: s.cfg.ID, Incarnation: inc})
		return err
	}); err != nil {
		// The slots have moved; the arbiters keep a record of this node
		// until it registers again.
		s.log.Warn("drained, but deregister failed: seqctl status lists this node until it starts again", "err", err)
		return nil
	}
	s.log.Info("drained and deregistered")
	return nil
}

func (s *Server) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// run registers, renews until refused, and registers again as a new
// incarnation, until Close.
func (s *Server) run() {
	defer s.wg.Done()
	retry := backoff.Policy{Base: 50 * time.Millisecond, Max: time.Second}
	for attempt := 0; !s.stopped(); {
		if err := s.register(); err != nil {
			if !s.stopped() {
				s.log.Info("register failed; retrying", "err", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-s.stop:
				case <-ctx.Done():
				}
				cancel()
			}()
			retry.Sleep(ctx, attempt)
			cancel()
			attempt++
			continue
		}
		attempt = 0
		s.renewLoop()
	}
}

func (s *Server) register() error {
	inc := uint64(time.Now().UnixNano())
	if prev := s.inc.Load(); inc <= prev {
		inc = prev + 1
	}
	g, err := s.restartGossip(inc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var resp *clusterv1.RegisterResponse
	err = s.arb.call(ctx, func(ctx context.Context, c clusterv1.ArbiterClient) error {
		var err error
		resp, err = c.Register(ctx, &clusterv1.RegisterRequest{
			ClusterId: s.cfg.ClusterID, NodeId: s.cfg.ID, Incarnation: inc, Addr: s.cfg.Addr, GossipAddr: gossipAddr(g),
		})
		return err
	})
	if err != nil {
		return err
	}
	t := resp.Table
	if t == nil || t.SectionSize == 0 || t.NumSlots == 0 {
		return errors.New("arbiter returned an empty routing table")
	}
	if t.SectionSize > 1<<24 {
		return fmt.Errorf("arbiter returned section size %d; an AllocSvr handles at most %d keys per section", t.SectionSize, 1<<24)
	}
	if lay := s.lay.Load(); lay != nil && (lay.sectionSize != t.SectionSize || lay.numSlots != t.NumSlots) {
		return fmt.Errorf("cluster layout changed under this node (section size %d->%d, slots %d->%d); restart it",
			lay.sectionSize, t.SectionSize, lay.numSlots, t.NumSlots)
	}
	if s.lay.Load() == nil {
		s.lay.Store(&layout{sectionSize: t.SectionSize, numSlots: t.NumSlots})
	}
	s.dropAll()
	s.inc.Store(inc)
	s.ls.Store(newLeases(s.cfg.Clock, t.NumSlots))
	s.setTable(t)
	s.step.Store(resp.Step)
	s.leaseDur.Store(int64(time.Duration(resp.LeaseMs) * time.Millisecond))
	s.renewEvery.Store(int64(time.Duration(resp.RenewIntervalMs) * time.Millisecond))
	if g != nil {
		if err := g.Join(resp.GossipSeeds); err != nil {
			s.log.Info("gossip join failed", "seeds", resp.GossipSeeds, "err", err)
		}
	}
	s.log.Info("registered", "incarnation", inc, "lease", time.Duration(resp.LeaseMs)*time.Millisecond, "step", resp.Step)
	select {
	case <-s.ready:
	default:
		close(s.ready)
	}
	return nil
}

func gossipAddr(g *gossip.Pool) string {
	if g == nil {
		return ""
	}
	return g.Addr()
}

// restartGossip joins the pool under this incarnation's name.
func (s *Server) restartGossip(inc uint64) (*gossip.Pool, error) {
	if s.cfg.GossipAddr == "" {
		return nil, nil
	}
	if s.gossip != nil {
		s.gossip.Close()
		s.gossip = nil
	}
	g, err := gossip.Start(gossip.Config{Name: gossip.AllocSvrName(s.cfg.ID, inc), Addr: s.cfg.GossipAddr, AdvertiseHost: s.cfg.GossipAdvertiseHost, Profile: s.cfg.GossipProfile, Logger: s.log})
	if err != nil {
		return nil, err
	}
	s.gossip = g
	return g, nil
}

func (s *Server) setTable(t *seqdv1.RoutingTable) {
	for {
		cur := s.table.Load()
		if t.Version <= cur.Version || s.table.CompareAndSwap(cur, t) {
			return
		}
	}
}

// renewLoop renews the lease every renew interval (or at once when poked)
// and returns when the arbiter refuses, so the caller registers anew.
func (s *Server) renewLoop() {
	for {
		res := s.renewOnce()
		if res == renewRefused {
			return
		}
		wait := time.Duration(s.renewEvery.Load())
		if res == renewFailed {
			// Try again sooner: an arbiter election or a lost packet
			// should cost as little of the lease as possible.
			wait /= 4
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.poke:
		case <-s.stop:
			t.Stop()
			return
		}
		t.Stop()
	}
}

// renewResult is how one renewal went.
type renewResult int

const (
	renewGranted renewResult = iota
	// renewFailed: no answer; the lease lapses by itself if this goes on.
	renewFailed
	// renewRefused: the arbiter refused; this incarnation is finished.
	renewRefused
)

// renewOnce sends one renewal.
func (s *Server) renewOnce() renewResult {
	defer s.signalRenewed()
	ls := s.leases()
	lease := time.Duration(s.leaseDur.Load())
	send := s.cfg.Clock.Now()
	ctx, cancel := context.WithTimeout(context.Background(), lease/2)
	defer cancel()
	var resp *clusterv1.RenewLeaseResponse
	err := s.arb.call(ctx, func(ctx context.Context, c clusterv1.ArbiterClient) error {
		var err error
		resp, err = c.RenewLease(ctx, &clusterv1.RenewLeaseRequest{NodeId: s.cfg.ID, Incarnation: s.inc.Load(), RoutingVersion: s.table.Load().Version})
		return err
	})
	switch {
	case err != nil:
		s.m.renewals.WithLabelValues("error").Inc()
		return renewFailed
	case !resp.Granted:
		s.m.renewals.WithLabelValues("refused").Inc()
		s.log.Warn("lease renewal refused; registering again", "reason", resp.Reason)
		ls.revoke()
		s.dropAll()
		return renewRefused
	}
	s.m.renewals.WithLabelValues("granted").Inc()
	// Ownership first, the lease after: until extend, nothing is served,
	// so no section of a slot that moved away while the lease had lapsed
	// can answer from its cache in between. Every move bumps the slot's
	// generation, so applyOwnership drops exactly the sections of slots
	// that moved, even away and back during a lapse; the rest keep serving
	// without a reload.
	if resp.Table != nil {
		s.setTable(resp.Table)
	}
	s.applyOwnership(ls, resp.Slots)
	ls.extend(send, time.Duration(resp.LeaseMs)*time.Millisecond)
	return renewGranted
}

func (s *Server) signalRenewed() {
	s.renewMu.Lock()
	close(s.renewed)
	s.renewed = make(chan struct{})
	s.renewMu.Unlock()
}

// renewedCh returns the channel the next renewal attempt closes.
func (s *Server) renewedCh() <-chan struct{} {
	s.renewMu.Lock()
	defer s.renewMu.Unlock()
	return s.renewed
}

// renewNow asks for an immediate renewal and waits for it, at most wait.
func (s *Server) renewNow(ctx context.Context, wait time.Duration) {
	ch := s.renewedCh()
	select {
	case s.poke <- struct{}{}:
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
	}
}

// awaitLease waits, at most wait, for renewals to make ls valid again, and
// reports whether it is.
func (s *Server) awaitLease(ctx context.Context, ls *leases, wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		ch := s.renewedCh()
		// Checked after taking ch: a renewal in between closes ch.
		if ls.valid() {
			return true
		}
		select {
		case <-ch:
		case <-t.C:
			return ls.valid()
		case <-ctx.Done():
			return false
		}
	}
}

// applyOwnership installs the slots the arbiter says this instance owns.
func (s *Server) applyOwnership(ls *leases, owned []*clusterv1.OwnedSlot) {
	want := make(map[uint32]uint64, len(owned))
	for _, o := range owned {
		if o.Slot < uint32(len(ls.owned)) {
			want[o.Slot] = o.Generation
		}
	}
	var lost []uint32
	for slot := range ls.owned {
		g := want[uint32(slot)]
		if old := ls.owned[slot].Swap(g); old != g && old != 0 {
			lost = append(lost, uint32(slot))
		}
	}
	s.markMu.Lock()
	for slot, r := range s.marks {
		if want[slot] != r.gen {
			delete(s.marks, slot)
		}
	}
	s.markMu.Unlock()
	if len(lost) == 0 {
		return
	}
	gone := make(map[uint32]bool, len(lost))
	for _, slot := range lost {
		gone[slot] = true
	}
	s.dropSections(func(sc *section) bool { return gone[sc.slot] && want[sc.slot] != sc.gen })
}

// dropAll forgets every section (a new incarnation starts from scratch).
func (s *Server) dropAll() { s.dropSections(func(*section) bool { return true }) }

func (s *Server) dropSections(match func(*section) bool) {
	s.sections.Range(func(k, v any) bool {
		sc := v.(*section)
		if match(sc) {
			sc.mu.Lock()
			sc.dead.Store(true)
			sc.mu.Unlock()
			s.sections.CompareAndDelete(k, sc)
		}
		return true
	})
}

// ServedSlots counts the slots this node serves now.
func (s *Server) ServedSlots() int {
	ls := s.leases()
	if ls == nil {
		return 0
	}
	n := 0
	for slot := range ls.owned {
		if ls.serving(uint32(slot)) != 0 {
			n++
		}
	}
	return n
}

// memoryStats returns the loaded sections and the bytes their counters hold.
func (s *Server) memoryStats() (sections, bytes int) {
	s.sections.Range(func(_, v any) bool {
		sc := v.(*section)
		select {
		case <-sc.ready:
		default:
			return true
		}
		sc.mu.Lock()
		if sc.keys != nil {
			bytes += sc.keys.bytes()
		}
		sc.mu.Unlock()
		sections++
		return true
	})
	return sections, bytes
}

// commitOps sends many callers' section operations in one RPC.
func (s *Server) commitOps(ops []*clusterv1.SectionOp) ([]*clusterv1.SectionOpResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var resp *clusterv1.AllocateSectionsResponse
	err := s.arb.call(ctx, func(ctx context.Context, c clusterv1.ArbiterClient) error {
		var err error
		resp, err = c.AllocateSections(ctx, &clusterv1.AllocateSectionsRequest{NodeId: s.cfg.ID, Incarnation: s.inc.Load(), Ops: ops})
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp.Results, nil
}
