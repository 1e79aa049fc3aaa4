package allocsvr_test

import (
	"context"

	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seqd/seqd/internal/localcluster"
	"github.com/seqd/seqd/internal/testwait"
	"github.com/seqd/seqd/jepsen/checker"
	"github.com/seqd/seqd/router"
)

// Timings of the test clusters: Raft election 500 ms (localcluster Fast),
// AllocSvr lease 1 s with the default 10% margin.
const testLease = time.Second

func startCluster(t *testing.T, opts localcluster.Options) *localcluster.Cluster {
	t.Helper()
	opts.Fast = true
	if opts.Lease == 0 {
		opts.Lease = testLease
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := localcluster.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newClient(t *testing.T, c *localcluster.Cluster, cfg router.Config) *router.Client {
	t.Helper()
	cfg.Addrs = c.ArbiterAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := router.New(ctx, cfg)
	if err != nil {
		t.Fatalf("router client: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	// Tests read ownership from the table: take the leader's.
	if err := c.CatchUp(ctx, cl); err != nil {
		t.Fatal(err)
	}
	return cl
}

// keysOwnedBy returns n keys whose slots node owns in the client's table.
func keysOwnedBy(t *testing.T, cl *router.Client, nodeID string, n int) []uint64 {
	t.Helper()
	tab := cl.Table()
	var keys []uint64
	for k := uint64(1); len(keys) < n && k < 1<<40; k += tab.SectionSize / 7 {
		slot := (k / tab.SectionSize) % uint64(tab.NumSlots)
		if tab.Slots[slot].Owner == nodeID {
			keys = append(keys, k)
		}
	}
	if len(keys) < n {
		t.Fatalf("found only %d keys owned by %s", len(keys), nodeID)
	}
	return keys
}

// load runs workers that call Next on keys until stop, recording every
// successful operation.
type load struct {
	rec     *checker.Recorder
	stop    chan struct{}
	wg      sync.WaitGroup
	errs    atomic.Int64
	lastErr atomic.Value
}

func startLoad(cl *router.Client, keys []uint64, workers int) *load {
	l := &load{rec: checker.NewRecorder(), stop: make(chan struct{})}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func(w int) {
			defer l.wg.Done()
			for i := w; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				k := keys[i%len(keys)]
				start := l.rec.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				v, err := cl.Next(ctx, k)
				cancel()
				if err != nil {
					l.errs.Add(1)
					l.lastErr.Store(err.Error())
					continue
				}
				l.rec.Add(checker.SeqOp{Client: w, Key: k, Kind: checker.Next, Start: start, End: l.rec.Now(), Value: v})
			}
		}(w)
	}
	return l
}

func (l *load) finish() []checker.SeqOp {
	close(l.stop)
	l.wg.Wait()
	return l.rec.Ops()
}

func assertG1(t *testing.T, ops []checker.SeqOp) {
	t.Helper()
	if len(ops) == 0 {
		t.Fatal("no successful operations recorded")
	}
	if as := checker.Check(ops); len(as) > 0 {
		for i, a := range as {
			if i == 10 {
				t.Errorf("... and %d more", len(as)-10)
				break
			}
			t.Errorf("G1 violated: %v", a)
		}
	}
}

func TestKillAllocSvrMovesItsSlots(t *testing.T) {
	c := startCluster(t, localcluster.Options{})
	cl := newClient(t, c, router.Config{})
	victim := c.AllocSvr(0).AllocSvr().ID()
	victimKeys := keysOwnedBy(t, cl, victim, 8)
	otherKeys := keysOwnedBy(t, cl, c.AllocSvr(1).AllocSvr().ID(), 8)

	l := startLoad(cl, append(victimKeys, otherKeys...), 4)
	testwait.For(t, 5*time.Second, "load to get going", func() bool { return len(l.rec.Ops()) > 200 })
	killAt := l.rec.Now()
	c.KillAllocSvr(0)

	isVictim := map[uint64]bool{}
	for _, k := range victimKeys {
		isVictim[k] = true
	}
	var back time.Duration
	testwait.For(t, 10*time.Second, "a victim key to be served again", func() bool {
		for _, o := range l.rec.Ops() {
			if isVictim[o.Key] && o.Start > killAt {
				back = o.End - killAt
				return true
			}
		}
		return false
	})
	ops := l.finish()
	t.Logf("slots of the killed AllocSvr served again %v after the kill (lease %v); %d ops, %d client errors", back, testLease, len(ops), l.errs.Load())
	// Lease + margin, one assignment round, and client backoff.
	if limit := testLease + testLease/10 + time.Second; back > limit {
		t.Errorf("unavailable for %v, want at most %v", back, limit)
	}
	assertG1(t, ops)
}

func TestRestartAllocSvrNeverGoesBack(t *testing.T) {
	c := startCluster(t, localcluster.Options{})
	cl := newClient(t, c, router.Config{})
	keys := append(keysOwnedBy(t, cl, "alloc1", 20), keysOwnedBy(t, cl, "alloc2", 5)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	before := map[uint64]uint64{}
	for round := 0; round < 3; round++ {
		for _, k := range keys {
			v, err := cl.Next(ctx, k)
			if err != nil {
				t.Fatalf("Next(%d): %v", k, err)
			}
			before[k] = v
		}
	}
	c.KillAllocSvr(0)
	if err := c.RestartAllocSvr(ctx, 0); err != nil {
		t.Fatalf("restart: %v", err)
	}
	for _, k := range keys {
		v, err := cl.Next(ctx, k)
		if err != nil {
			t.Fatalf("Next(%d) after restart: %v", k, err)
		}
		if v <= before[k] {
			t.Errorf("key %d: %d after restart, but %d was handed out before", k, v, before[k])
		}
	}
}

func TestKillArbiterLeaderKeepsAllocating(t *testing.T) {
	// A small step makes the AllocSvrs raise max_seq through Raft all the
	// time, so the election is on the allocation path.
	c := startCluster(t, localcluster.Options{Step: 50})
	cl := newClient(t, c, router.Config{})
	keys := append(keysOwnedBy(t, cl, "alloc1", 4), keysOwnedBy(t, cl, "alloc2", 4)...)
	l := startLoad(cl, keys, 4)
	testwait.For(t, 5*time.Second, "load to get going", func() bool { return len(l.rec.Ops()) > 500 })

	leader := -1
	for i := range c.Arbiters {
		if n := c.Arbiter(i); n != nil && n.Arbiter().IsLeader() {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no leader")
	}
	killAt := l.rec.Now()
	c.KillArbiter(leader)
	testwait.For(t, 10*time.Second, "a new leader", func() bool { return c.Leader() != nil })
	elected := l.rec.Now() - killAt
	testwait.For(t, 10*time.Second, "allocations after the kill", func() bool {
		n := 0
		for _, o := range l.rec.Ops() {
			if o.Start > killAt+2*time.Second {
				n++
			}
		}
		return n > 100
	})
	ops := l.finish()
	var worst time.Duration
	var worstOp checker.SeqOp
	for _, o := range ops {
		if d := o.End - o.Start; d > worst {
			worst, worstOp = d, o
		}
	}
	t.Logf("longest Next across the leader kill: %v, from %v to %v after the kill; new leader seen %v after it (%d ops, %d client errors)",
		worst, worstOp.Start-killAt, worstOp.End-killAt, elected, len(ops), l.errs.Load())
	// The election itself takes one to two election timeouts, longer on a
	// loaded machine; what the allocator adds must stay under a second.
	if limit := elected + time.Second; worst > limit {
		t.Errorf("a Next stalled %v, want at most the election (%v) + 1s", worst, elected)
	}
	if n := l.errs.Load(); n > 0 {
		t.Errorf("%d Next calls failed (last: %v)", n, l.lastErr.Load())
	}
	assertG1(t, ops)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.RestartArbiter(ctx, leader); err != nil {
		t.Fatalf("restart arbiter: %v", err)
	}
}

func TestCutOffAllocSvrStopsBeforeTakeover(t *testing.T) {
	c := startCluster(t, localcluster.Options{})
	cl := newClient(t, c, router.Config{})
	key := keysOwnedBy(t, cl, "alloc1", 1)[0]
	rec := checker.NewRecorder()

	// Hammer the key at both AllocSvrs directly, bypassing routing, and
	// note when each one served it.
	type served struct{ sent, got time.Duration }
	var mu sync.Mutex
	var lastOld, firstNew *served
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, n := range []int{0, 1} {
		addr := c.AllocSvr(n).GRPCAddr()
		seq := rawSequencer(t, addr)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent := rec.Now()
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				v, err := seq(ctx, key)
				cancel()
				got := rec.Now()
				if err != nil {
					time.Sleep(time.Millisecond)
					continue
				}
				rec.Add(checker.SeqOp{Client: i, Key: key, Kind: checker.Next, Start: sent, End: got, Value: v})
				mu.Lock()
				if i == 0 {
					lastOld = &served{sent, got}
				} else if firstNew == nil {
					firstNew = &served{sent, got}
				}
				mu.Unlock()
			}
		}(i)
	}
	testwait.For(t, 5*time.Second, "the owner to serve", func() bool { mu.Lock(); defer mu.Unlock(); return lastOld != nil })
	cutAt := rec.Now()
	c.CutAllocSvr(0)
	testwait.For(t, 10*time.Second, "the other AllocSvr to take over", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return firstNew != nil
	})
	close(stop)
	wg.Wait()
	c.HealAllocSvr(0)

	t.Logf("cut at %v; old owner last answered at %v; new owner first served a request sent at %v", cutAt, lastOld.got, firstNew.sent)
	if lastOld.got >= firstNew.sent {
		t.Errorf("the cut-off owner answered at %v, after the new owner was asked at %v: two owners overlapped", lastOld.got, firstNew.sent)
	}
	if lastOld.got > cutAt+testLease+100*time.Millisecond {
		t.Errorf("the cut-off owner kept serving until %v, more than a lease after the cut at %v", lastOld.got, cutAt)
	}
	assertG1(t, rec.Ops())
}

// rawSequencer returns a function calling Next at one AllocSvr directly.
func rawSequencer(t *testing.T, addr string) func(context.Context, uint64) (uint64, error) {
	t.Helper()
	cl := seqClient(t, addr)
	return func(ctx context.Context, key uint64) (uint64, error) {
		resp, err := cl.Next(ctx, nextReq(key))
		if err != nil {
			return 0, err
		}
		return resp.Seq, nil
	}
}
