package arbiter

import (
	"context"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/seqd/seqd/internal/mclock"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

// manualClock is an mclock.Clock that moves only when told to.
type manualClock struct {
	mu  sync.Mutex
	now time.Duration
}

var _ mclock.Clock = (*manualClock)(nil)

func (c *manualClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now += d
	c.mu.Unlock()
}

const (
	ltLease  = 3 * time.Second
	ltMargin = 500 * time.Millisecond
)

func newTestLeaseTable() (*leaseTable, *manualClock) {
	c := &manualClock{now: 100 * time.Second}
	return newLeaseTable(c, ltLease, ltMargin), c
}

var inst1 = instance{"n1", 1}

func TestLeaseExpiryBoundary(t *testing.T) {
	tests := []struct {
		name    string
		after   time.Duration // since the grant
		expired bool
	}{
		{"just granted", 0, false},
		{"lease passed, margin not", ltLease, false},
		{"one ns before lease+margin", ltLease + ltMargin - 1, false},
		{"exactly lease+margin", ltLease + ltMargin, true},
		{"long after", time.Hour, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lt, c := newTestLeaseTable()
			if !lt.grant(inst1) {
				t.Fatal("first grant refused")
			}
			c.advance(tc.after)
			if got := lt.sinceGrant(inst1); got != tc.after {
				t.Errorf("sinceGrant = %v, want %v", got, tc.after)
			}
			if lt.isExpired(inst1) {
				t.Fatal("isExpired declared an expiry; only expireIfDue may")
			}
			if got := lt.expireIfDue(inst1); got != tc.expired {
				t.Fatalf("expireIfDue after %v = %v, want %v", tc.after, got, tc.expired)
			}
			if got := lt.isExpired(inst1); got != tc.expired {
				t.Errorf("isExpired = %v after expireIfDue said %v", got, tc.expired)
			}
			if got := lt.mayGrant(inst1); got == tc.expired {
				t.Errorf("mayGrant = %v for expired=%v", got, tc.expired)
			}
			if got := lt.grant(inst1); got == tc.expired {
				t.Errorf("grant = %v for expired=%v", got, tc.expired)
			}
		})
	}
}

func TestLeaseGrantExtends(t *testing.T) {
	lt, c := newTestLeaseTable()
	lt.grant(inst1)
	for range 10 {
		c.advance(ltLease) // renewals every lease: never lease+margin apart
		if !lt.grant(inst1) {
			t.Fatal("renewal refused")
		}
		if lt.expireIfDue(inst1) {
			t.Fatal("expired right after a renewal")
		}
	}
	c.advance(ltLease + ltMargin - 1)
	if lt.expireIfDue(inst1) {
		t.Fatal("expired before lease+margin after the last renewal")
	}
	c.advance(1)
	if !lt.expireIfDue(inst1) {
		t.Fatal("not expired at lease+margin after the last renewal")
	}
}

// TestLeaseExpiryIsFinal: once declared, no grant, and no passage of time,
// brings the instance back; its slots may already have moved.
func TestLeaseExpiryIsFinal(t *testing.T) {
	lt, c := newTestLeaseTable()
	lt.grant(inst1)
	c.advance(ltLease + ltMargin)
	if !lt.expireIfDue(inst1) {
		t.Fatal("not expired")
	}
	for range 3 {
		if lt.mayGrant(inst1) || lt.grant(inst1) {
			t.Fatal("an expired instance was granted a lease")
		}
		c.advance(time.Second)
		if !lt.isExpired(inst1) || !lt.expireIfDue(inst1) {
			t.Fatal("expiry was undone")
		}
	}
	// A new incarnation of the same node is a new instance.
	inst2 := instance{"n1", 2}
	if !lt.grant(inst2) || lt.expireIfDue(inst2) {
		t.Fatal("the node's next incarnation inherited the old one's expiry")
	}
}

// TestLeaseGrantRaceWithExpiry: a grant that was confirmed before the
// expiry was declared, but recorded after, must fail.
func TestLeaseGrantRaceWithExpiry(t *testing.T) {
	lt, c := newTestLeaseTable()
	lt.grant(inst1)
	if !lt.mayGrant(inst1) {
		t.Fatal("mayGrant refused a live instance")
	}
	// ... leadership is confirmed with a quorum meanwhile ...
	c.advance(ltLease + ltMargin)
	lt.expireIfDue(inst1)
	if lt.grant(inst1) {
		t.Fatal("grant succeeded after the instance was declared expired")
	}
}

// TestLeaseUnknownInstance: an instance the table has never seen counts as
// granted when first seen, since an earlier leader may just have granted it.
func TestLeaseUnknownInstance(t *testing.T) {
	for _, first := range []struct {
		name string
		call func(lt *leaseTable) bool
	}{
		{"expireIfDue", func(lt *leaseTable) bool { return !lt.expireIfDue(inst1) }},
		{"isExpired", func(lt *leaseTable) bool { return !lt.isExpired(inst1) }},
		{"mayGrant", func(lt *leaseTable) bool { return lt.mayGrant(inst1) }},
		{"sinceGrant", func(lt *leaseTable) bool { return lt.sinceGrant(inst1) == 0 }},
	} {
		t.Run(first.name, func(t *testing.T) {
			lt, c := newTestLeaseTable()
			c.advance(time.Hour) // long after the table was made
			if !first.call(lt) {
				t.Fatal("first sight did not count as a grant now")
			}
			c.advance(ltLease + ltMargin - 1)
			if lt.expireIfDue(inst1) {
				t.Fatal("expired before lease+margin after first sight")
			}
			c.advance(1)
			if !lt.expireIfDue(inst1) {
				t.Fatal("not expired lease+margin after first sight")
			}
		})
	}
}

func TestLeaseReset(t *testing.T) {
	lt, c := newTestLeaseTable()
	old, stale := instance{"n1", 1}, instance{"n2", 1}
	lt.grant(old)
	lt.grant(stale)
	c.advance(ltLease)
	lt.grant(old)
	c.advance(ltMargin)
	if !lt.expireIfDue(stale) {
		t.Fatal("setup: n2 should have expired")
	}
	// A new term: nothing is known about past grants, so every instance
	// counts as granted at the reset, even one that looked overdue.
	c.advance(ltLease)
	lt.reset()
	if lt.leaderSince != c.Now() {
		t.Errorf("leaderSince = %v, want %v", lt.leaderSince, c.Now())
	}
	for _, i := range []instance{old, stale, {"n3", 7}} {
		if got := lt.sinceGrant(i); got != 0 {
			t.Errorf("%v: sinceGrant right after reset = %v, want 0", i, got)
		}
	}
	c.advance(ltLease + ltMargin - 1)
	for _, i := range []instance{old, stale} {
		if lt.expireIfDue(i) {
			t.Errorf("%v expired less than lease+margin after the reset", i)
		}
	}
	c.advance(1)
	for _, i := range []instance{old, stale} {
		if !lt.expireIfDue(i) {
			t.Errorf("%v not expired lease+margin after the reset", i)
		}
	}
}

func TestLeaseForget(t *testing.T) {
	lt, c := newTestLeaseTable()
	keep, drop := instance{"n1", 2}, instance{"n1", 1}
	lt.grant(keep)
	lt.grant(drop)
	c.advance(ltLease + ltMargin)
	lt.expireIfDue(drop)
	lt.forget(func(i instance) bool { return i == keep })
	if len(lt.inst) != 1 || lt.inst[keep] == nil {
		t.Fatalf("after forget the table holds %v, want only %v", lt.inst, keep)
	}
	// keep's grant time survives.
	if got := lt.sinceGrant(keep); got != ltLease+ltMargin {
		t.Errorf("sinceGrant(keep) = %v, want %v", got, ltLease+ltMargin)
	}
}

func TestLeaseTableConcurrentUse(t *testing.T) {
	lt, c := newTestLeaseTable()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := instance{"n", uint64(g % 3)}
			for range 200 {
				lt.mayGrant(i)
				lt.grant(i)
				lt.expireIfDue(i)
				lt.sinceGrant(i)
				c.advance(time.Millisecond)
			}
		}()
	}
	wg.Wait()
	// The last grant was at most lease+margin ago for none of them: time
	// moved 1.6 s in total, under lease+margin, so no one may have expired.
	for g := range 3 {
		if lt.isExpired(instance{"n", uint64(g)}) {
			t.Errorf("instance %d expired within one lease", g)
		}
	}
}

// TestShorterLeaseLeaderWaitsOutTheGrantedLease: a leader configured with
// a 10 s lease grants one to n1 and dies; the next leader is configured
// with 1 s (an operator lowering the lease in a rolling restart). n1 may
// serve until 10 s after that grant, so the new leader must not hand its
// slots to n2 before 10 s plus the margin have passed since the grant.
// Before the lease was stored with the cluster, each leader granted and
// waited its own, and n1's slots moved after 1.1 s while n1 still served
// them: two owners, and a client could see a seq go backwards (G1).
func TestShorterLeaseLeaderWaitsOutTheGrantedLease(t *testing.T) {
	const long, short = 10 * time.Second, time.Second
	clock := &manualClock{now: 100 * time.Second}
	withLease := func(l time.Duration) func(*Config) {
		return func(c *Config) { c.Lease, c.NumSlots, c.SectionSize, c.Clock = l, 4, 100, clock }
	}

	a1 := testArbiter(t, "a1", true, withLease(long))
	if err := a1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a1 to lead and create the cluster", func() bool { return a1.readyNow() && a1.fsm.Initialized() })
	registerAllocSvr(t, a1, "n1", 1)
	waitFor(t, "a1 to give every slot to n1", func() bool { return slices.Equal(owners(a1), []string{"n1", "n1", "n1", "n1"}) })
	grant := renew(t, a1, "n1", 1)
	granted := clock.Now()
	if got := time.Duration(grant.LeaseMs) * time.Millisecond; got != long {
		t.Fatalf("a1 granted n1 a %v lease, want %v", got, long)
	}
	// n1 may serve until granted+long; the first leader itself would wait
	// this long (lease+margin) after its last grant before moving its slots.
	runsOut := granted + long + long/10

	var rest []*Arbiter
	for _, id := range []string{"a2", "a3"} {
		a := testArbiter(t, id, false, withLease(short))
		if err := a.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := a1.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(a.cfg.RaftAddr), 0, 10*time.Second).Error(); err != nil {
			t.Fatalf("add %s: %v", id, err)
		}
		rest = append(rest, a)
	}
	// Both must hold a1's whole log, not only the owners: AddVoter(a3)
	// returns once a1 and a3 have its configuration entry, and a2 without
	// it would refuse a3's votes (a3 not in its configuration) while a3
	// is the only one that could win, so no one would ever lead.
	last := a1.raft.LastIndex()
	waitFor(t, "a2 and a3 to catch up", func() bool {
		for _, a := range rest {
			if a.raft.LastIndex() < last || !slices.Equal(owners(a), []string{"n1", "n1", "n1", "n1"}) {
				return false
			}
		}
		return true
	})
	a1.Kill() // n1's lease, granted by a1, keeps running at n1
	var b *Arbiter
	waitFor(t, "a2 or a3 to lead", func() bool {
		for _, a := range rest {
			if a.readyNow() {
				b = a
				return true
			}
		}
		return false
	})
	t.Logf("%s leads, configured with a %v lease", b.cfg.ID, short)
	registerAllocSvr(t, b, "n2", 1)

	// Time passes in steps shorter than any lease; n2 renews at each, so it
	// is alive and could take n1's slots, and the leader plans after each.
	round := func() []string {
		t.Helper()
		renew(t, b, "n2", 1)
		if err := b.assignOnce(context.Background()); err != nil {
			t.Fatalf("assignment round: %v", err)
		}
		return owners(b)
	}
	// A round before the clock moves: the leader counts n1 as granted when
	// it first looks at it, and the exact-boundary checks below need that
	// to be the grant's time.
	if got := round(); slices.Contains(got, "n2") {
		t.Fatalf("right after the election, slots moved to n2: owners %v", got)
	}
	for clock.Now()+short/4 < runsOut {
		clock.advance(short / 4)
		if got := round(); slices.Contains(got, "n2") {
			t.Fatalf("%v after n1's last grant, with n1 still serving under its %v lease, %s moved slots to n2: owners %v",
				clock.Now()-granted, long, b.cfg.ID, got)
		}
	}
	clock.advance(runsOut - 1 - clock.Now())
	if got := round(); slices.Contains(got, "n2") {
		t.Fatalf("1ns before n1's lease plus margin ran out, slots moved to n2: owners %v", got)
	}
	clock.advance(1)
	if got := round(); !slices.Equal(got, []string{"n2", "n2", "n2", "n2"}) {
		t.Fatalf("once n1's lease plus margin ran out, owners are %v, want every slot on n2", got)
	}
	if got := time.Duration(renew(t, b, "n2", 1).LeaseMs) * time.Millisecond; got != long {
		t.Errorf("%s grants %v leases, want the cluster's %v", b.cfg.ID, got, long)
	}
}

// TestLeaderRecordsLeaseOfClusterCreatedWithoutOne: a cluster created by a
// build that stored no lease gets the lease of its first leader after the
// upgrade, before that leader grants anything, and grants carry it.
func TestLeaderRecordsLeaseOfClusterCreatedWithoutOne(t *testing.T) {
	const lease = 1500 * time.Millisecond
	a := testArbiter(t, "a1", true, func(c *Config) { c.Lease, c.NumSlots, c.SectionSize = lease, 4, 100 })
	waitFor(t, "a1 to win its election", a.IsLeader)
	// As the old build did, before the leader loop runs.
	res, err := a.apply(context.Background(), cmdInit, &clusterv1.InitClusterCommand{ClusterId: a.cfg.ClusterID, SectionSize: 100, NumSlots: 4, Dc: a.cfg.DC})
	if err != nil || res.Err != nil {
		t.Fatalf("old-style INIT_CLUSTER: %v %v", err, res.Err)
	}
	// Registered by the command itself: the server's Register waits for a
	// leader that has caught up, which needs the loop Start runs.
	res, err = a.apply(context.Background(), cmdRegister, &clusterv1.RegisterNodeCommand{NodeId: "n1", Incarnation: 1, Addr: deadAddr(t)})
	if err != nil || res.Err != nil {
		t.Fatalf("register n1: %v %v", err, res.Err)
	}
	if got := a.fsm.Meta().LeaseMs; got != 0 {
		t.Fatalf("cluster created without a lease has %d ms stored", got)
	}

	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a1 to be ready", a.readyNow)
	if got := a.fsm.Meta().LeaseMs; got != lease.Milliseconds() {
		t.Fatalf("stored lease %d ms once a1 leads, want its configured %v", got, lease)
	}
	if got := time.Duration(renew(t, a, "n1", 1).LeaseMs) * time.Millisecond; got != lease {
		t.Fatalf("a1 grants %v, want %v", got, lease)
	}
}

// TestLeaseTimesFollowTheStoredLease: the stored lease is in force, and the
// margin and renew interval keep their configured share of it. A margin
// left at a shorter configured lease's would shrink the clock-drift
// tolerance; a renew interval left at a longer one's would pass the stored
// lease, and every lease would lapse between renewals.
func TestLeaseTimesFollowTheStoredLease(t *testing.T) {
	tests := []struct {
		name       string
		configured Config
		storedMs   int64
		want       leaseTimes
		wantStored bool
	}{
		{"none stored: the configured", Config{Lease: time.Second, LeaseMargin: 100 * time.Millisecond, RenewInterval: 250 * time.Millisecond}, 0,
			leaseTimes{time.Second, 100 * time.Millisecond, 250 * time.Millisecond}, false},
		{"stored as configured", Config{Lease: time.Second, LeaseMargin: 100 * time.Millisecond, RenewInterval: 250 * time.Millisecond}, 1000,
			leaseTimes{time.Second, 100 * time.Millisecond, 250 * time.Millisecond}, true},
		{"stored longer", Config{Lease: time.Second, LeaseMargin: 100 * time.Millisecond, RenewInterval: 250 * time.Millisecond}, 10_000,
			leaseTimes{10 * time.Second, time.Second, 2500 * time.Millisecond}, true},
		{"stored shorter", Config{Lease: 10 * time.Second, LeaseMargin: time.Second, RenewInterval: 2500 * time.Millisecond}, 2000,
			leaseTimes{2 * time.Second, 200 * time.Millisecond, 500 * time.Millisecond}, true},
	}
	for _, tc := range tests {
		a := &Arbiter{cfg: tc.configured, fsm: NewFSM()}
		if tc.storedMs != 0 {
			applyData(a.fsm, encodeCmd(t, cmdInit, &clusterv1.InitClusterCommand{ClusterId: "c", SectionSize: 10, NumSlots: 1, LeaseMs: tc.storedMs}))
		}
		got, stored := a.leaseTimes()
		if got != tc.want || stored != tc.wantStored {
			t.Errorf("%s: %+v stored=%v, want %+v stored=%v", tc.name, got, stored, tc.want, tc.wantStored)
		}
	}
}

// An arbiter of an older build applies the recording of the lease as a
// plain retry and keeps none, nor do its snapshots; a replica that restored
// one has 0 where the others have the lease. A leader proposes the stored
// lease again (every term, in initCluster), and the replica gets it back,
// so it cannot lead later with its own configured lease.
func TestLeaderRepairsALostLease(t *testing.T) {
	const lease = 1500 * time.Millisecond
	a1 := testArbiter(t, "a1", true, func(c *Config) { c.Lease, c.NumSlots, c.SectionSize = lease, 4, 100 })
	if err := a1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a1 to be ready", a1.readyNow)
	a2 := testArbiter(t, "a2", false, func(c *Config) { c.Lease, c.NumSlots, c.SectionSize = 3*lease, 4, 100 })
	if err := a2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a1.raft.AddVoter(raft.ServerID("a2"), raft.ServerAddress(a2.cfg.RaftAddr), 0, 10*time.Second).Error(); err != nil {
		t.Fatalf("add a2: %v", err)
	}
	waitFor(t, "a2 to hold the lease", func() bool { return a2.fsm.Lease() == lease })
	// As if a2 had restored an older build's snapshot.
	a2.fsm.mu.Lock()
	a2.fsm.meta.LeaseMs = 0
	a2.fsm.mu.Unlock()
	if err := a1.initCluster(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a2 to get the stored lease back", func() bool { return a2.fsm.Lease() == lease })
	if got := a1.fsm.Lease(); got != lease {
		t.Fatalf("a1's stored lease became %v, want %v", got, lease)
	}
}

// The lease is stored in whole milliseconds: a config that would lose part
// of it is refused, not rounded (the creating arbiter would then warn about
// its own config).
func TestLeaseInWholeMilliseconds(t *testing.T) {
	for _, tc := range []struct {
		lease time.Duration
		ok    bool
	}{{time.Millisecond, true}, {2 * time.Second, true}, {2*time.Second + 500*time.Microsecond, false}, {time.Microsecond, false}, {-time.Second, false}} {
		c := Config{ID: "a1", DataDir: "/d", RaftAddr: "127.0.0.1:7101", GRPCAddr: "127.0.0.1:7100", Lease: tc.lease}
		c.setDefaults()
		err := c.Validate()
		if got := err == nil || !strings.Contains(err.Error(), "lease"); got != tc.ok {
			t.Errorf("lease %v: %v, want accepted %v", tc.lease, err, tc.ok)
		}
	}
}

// TestUnservedSlots: a slot whose owner's lease ran out is unserved even
// while it keeps that owner, as it does when no other AllocSvr is alive to
// take it (every AllocSvr down): unassigned_slots stays 0 then, and only
// unserved_slots tells that nothing serves the keys.
func TestUnservedSlots(t *testing.T) {
	const lease = time.Second
	clock := &manualClock{now: 100 * time.Second}
	a := testArbiter(t, "a1", true, func(c *Config) { c.Lease, c.NumSlots, c.SectionSize, c.Clock = lease, 4, 100, clock })
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a1 to lead and create the cluster", func() bool { return a.readyNow() && a.fsm.Initialized() })
	value := func(g prometheus.Gauge) float64 {
		var m dto.Metric
		if err := g.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetGauge().GetValue()
	}
	gauges := func() (unassigned, unserved float64) { return value(a.m.unassignedSlots), value(a.m.unservedSlots) }
	if err := a.assignOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if u, s := gauges(); u != 4 || s != 4 {
		t.Fatalf("no AllocSvr yet: unassigned %v, unserved %v; want 4 and 4", u, s)
	}
	registerAllocSvr(t, a, "n1", 1)
	waitFor(t, "a1 to give every slot to n1", func() bool { return slices.Equal(owners(a), []string{"n1", "n1", "n1", "n1"}) })
	renew(t, a, "n1", 1)
	if err := a.assignOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if u, s := gauges(); u != 0 || s != 0 {
		t.Fatalf("n1 serving: unassigned %v, unserved %v; want 0 and 0", u, s)
	}
	// n1 stops renewing; there is no one to move its slots to.
	clock.advance(lease + lease/10 + time.Millisecond)
	if err := a.assignOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if u, s := gauges(); u != 0 || s != 4 || !slices.Equal(owners(a), []string{"n1", "n1", "n1", "n1"}) {
		t.Fatalf("n1's lease ran out, no other AllocSvr: unassigned %v, unserved %v, owners %v; want 0, 4 and n1 still", u, s, owners(a))
	}
}
