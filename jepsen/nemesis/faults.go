package nemesis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/jepsen/cluster"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// choose returns the nodes a process fault of kind hits for target. The
// node, or a minority's first arbiter and AllocSvr, is dealt from the deck
// of kind:target among the nodes running then.
func choose(ctx context.Context, env *Env, d *Dealer, kind, target string) ([]*cluster.Node, error) {
	c := env.Cluster
	key := kind + ":" + target
	switch target {
	case "one":
		if up := running(c.Nodes()); len(up) > 0 {
			return []*cluster.Node{d.node(key, up)}, nil
		}
	case "allocsvr":
		if up := running(c.AllocSvrs()); len(up) > 0 {
			return []*cluster.Node{d.node(key, up)}, nil
		}
	case "leader":
		l, err := c.Leader(ctx)
		if err != nil {
			return nil, fmt.Errorf("finding the arbiter leader: %w", err)
		}
		return []*cluster.Node{l}, nil
	case "store":
		if up := running(c.Stores()); len(up) > 0 {
			return []*cluster.Node{d.node(key, up)}, nil
		}
	case "store-leader":
		l, err := storeLeader(ctx, c, d, key)
		if err != nil {
			return nil, err
		}
		return []*cluster.Node{l}, nil
	case "minority":
		// One arbiter (the group keeps its majority) and, of the AllocSvrs
		// and the gateway, up to all but one AllocSvr. The arbiter and one
		// AllocSvr are dealt, so each takes its turn; how many more
		// AllocSvrs go, and which, stays random: what is tested is the
		// shape of the minority, and a deck of subsets would take rounds
		// longer than most runs.
		arbs, allocs := running(c.Arbiters()), running(c.AllocSvrs())
		if len(arbs) < 3 || len(allocs) < 2 {
			break
		}
		first := d.node(key+"/allocsvr", allocs)
		out := []*cluster.Node{d.node(key, arbs), first}
		rest := slices.DeleteFunc(allocs, func(n *cluster.Node) bool { return n == first })
		d.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
		out = append(out, rest[:d.IntN(len(rest))]...)
		if gw := c.Gateway(); gw.Running() && d.IntN(2) == 0 {
			out = append(out, gw)
		}
		return out, nil
	}
	return nil, fmt.Errorf("no running node fits target %q", target)
}

// storeLeader returns the leader of a store shard dealt from the deck of
// key's shards, so that with several shards each takes its turn.
func storeLeader(ctx context.Context, c *cluster.Cluster, d *Dealer, key string) (*cluster.Node, error) {
	shards := c.Shards()
	if len(shards) == 0 {
		return nil, errors.New("the cluster has no message store")
	}
	sh := d.deal(key+"/shard", shards)
	l, err := c.StoreLeader(ctx, sh)
	if err != nil {
		return nil, fmt.Errorf("finding the store leader: %w", err)
	}
	return l, nil
}

// killer crashes processes with SIGKILL and restarts them when healed.
type killer struct{ targets []string }

func (k *killer) Kind() string     { return "kill" }
func (k *killer) Background() bool { return false }

func (k *killer) Inject(ctx context.Context, env *Env, d *Dealer) (*Active, error) {
	target := d.deal(k.Kind(), k.targets)
	nodes, err := choose(ctx, env, d, k.Kind(), target)
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		n.Kill()
	}
	return &Active{
		Target: target, Nodes: ids(nodes),
		Desc: fmt.Sprintf("kill -9 %s (%s)", strings.Join(ids(nodes), ","), target),
		Heal: func(context.Context) error { return startStopped(nodes) },
	}, nil
}

func (k *killer) HealAll(ctx context.Context, env *Env) error {
	return startStopped(env.Cluster.Nodes())
}

// startStopped starts those of nodes that are not running.
func startStopped(nodes []*cluster.Node) error {
	var errs []error
	for _, n := range nodes {
		if !n.Running() {
			errs = append(errs, n.Start())
		}
	}
	return errors.Join(errs...)
}

// pauser freezes processes with SIGSTOP and resumes them with SIGCONT.
type pauser struct{ targets []string }

func (p *pauser) Kind() string     { return "pause" }
func (p *pauser) Background() bool { return false }

func (p *pauser) Inject(ctx context.Context, env *Env, d *Dealer) (*Active, error) {
	target := d.deal(p.Kind(), p.targets)
	nodes, err := choose(ctx, env, d, p.Kind(), target)
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		if err := n.Pause(); err != nil {
			return nil, err
		}
	}
	return &Active{
		Target: target, Nodes: ids(nodes),
		Desc: fmt.Sprintf("pause %s (%s)", strings.Join(ids(nodes), ","), target),
		Heal: func(context.Context) error {
			var errs []error
			for _, n := range nodes {
				errs = append(errs, n.Resume())
			}
			return errors.Join(errs...)
		},
	}, nil
}

func (p *pauser) HealAll(ctx context.Context, env *Env) error {
	var errs []error
	for _, n := range env.Cluster.Nodes() {
		errs = append(errs, n.Resume())
	}
	return errors.Join(errs...)
}

// partitioner cuts links with iptables inside the nodes' namespaces. The
// harness (and so every client) keeps reaching every node, as clients in
// other racks would.
type partitioner struct{ shapes []string }

func (p *partitioner) Kind() string     { return "partition" }
func (p *partitioner) Background() bool { return false }

func (p *partitioner) Inject(ctx context.Context, env *Env, d *Dealer) (*Active, error) {
	shape := d.deal(p.Kind(), p.shapes)
	key := p.Kind() + ":" + shape
	c := env.Cluster
	all := ids(c.Nodes())
	var (
		blocked map[string][]string
		desc    string
		nodes   []string
	)
	// A shape that singles a node out (isolate-one, bridge) deals it, so
	// each node takes its turn. Halves and majorities-ring take in every
	// node and stay random: what varies is the split, and there are too
	// many splits for a deck of them to go round in a run.
	switch shape {
	case "halves":
		shuffled := d.shuffled(all)
		a, b := shuffled[:len(shuffled)/2], shuffled[len(shuffled)/2:]
		blocked = cut(a, b)
		desc, nodes = fmt.Sprintf("partition %s | %s", strings.Join(a, ","), strings.Join(b, ",")), all
	case "isolate-one":
		one := d.deal(key, all)
		blocked = cut([]string{one}, without(all, one))
		desc, nodes = "partition: isolate "+one, []string{one}
	case "isolate-leader":
		l, err := c.Leader(ctx)
		if err != nil {
			return nil, fmt.Errorf("finding the arbiter leader: %w", err)
		}
		blocked = cut([]string{l.ID}, without(all, l.ID))
		desc, nodes = "partition: isolate leader "+l.ID, []string{l.ID}
	case "isolate-store-leader":
		l, err := storeLeader(ctx, c, d, key)
		if err != nil {
			return nil, err
		}
		blocked = cut([]string{l.ID}, without(all, l.ID))
		desc, nodes = "partition: isolate store leader "+l.ID, []string{l.ID}
	case "store-leader-followers":
		// Only the store replicas are cut from each other: the old leader
		// still reaches the allocator and keeps planning and proposing
		// until it notices it lost its quorum.
		l, err := storeLeader(ctx, c, d, key)
		if err != nil {
			return nil, err
		}
		blocked = cut([]string{l.ID}, without(ids(c.ShardStores(l.Shard)), l.ID))
		desc, nodes = "partition: store leader "+l.ID+" cut off from its followers", []string{l.ID}
	case "store-shards":
		// The shards' replicas cannot reach each other: deliveries to
		// users on another shard wait in the outboxes. Everything else,
		// the allocator and every client included, reaches every replica.
		shards := c.Shards()
		if len(shards) < 2 {
			return nil, errors.New("partition store-shards needs a cluster with more than one store shard (--store-shards)")
		}
		sh := d.deal(key, shards)
		these := ids(c.ShardStores(sh))
		blocked = cut(these, without(ids(c.Stores()), these...))
		desc, nodes = fmt.Sprintf("partition: store shard %s cut off from the other shards", sh), these
	case "majorities-ring":
		shuffled := d.shuffled(all)
		blocked = ring(shuffled)
		desc, nodes = "partition: majorities ring "+strings.Join(shuffled, "-"), all
	case "bridge":
		b := d.deal(key, all)
		rest := d.shuffled(without(all, b))
		x, y := rest[:len(rest)/2], rest[len(rest)/2:]
		blocked = cut(x, y)
		desc, nodes = fmt.Sprintf("partition: %s | %s bridged by %s", strings.Join(x, ","), strings.Join(y, ","), b), all
	case "allocsvr-arbiters":
		up := running(c.AllocSvrs())
		if len(up) == 0 {
			return nil, errors.New("no running AllocSvr to cut off")
		}
		a := d.node(key, up).ID
		blocked = cut([]string{a}, ids(c.Arbiters()))
		desc, nodes = fmt.Sprintf("partition: %s cut off from the arbiters, still reachable by clients", a), []string{a}
	default:
		return nil, fmt.Errorf("unknown partition shape %q", shape)
	}
	if err := c.Partition(ctx, blocked); err != nil {
		return nil, err
	}
	return &Active{Target: shape, Desc: desc, Nodes: nodes, Heal: c.Heal}, nil
}

func (p *partitioner) HealAll(ctx context.Context, env *Env) error { return env.Cluster.Heal(ctx) }

// cut blocks every node of a from every node of b.
func cut(a, b []string) map[string][]string {
	m := map[string][]string{}
	for _, x := range a {
		m[x] = append(m[x], b...)
	}
	return m
}

// without returns xs less every one of drop.
func without(xs []string, drop ...string) []string {
	var out []string
	for _, x := range xs {
		if !slices.Contains(drop, x) {
			out = append(out, x)
		}
	}
	return out
}

// ring arranges nodes in a circle where each sees the nearest d on either
// side, with d the smallest that makes what it sees a majority; no two
// nodes see the same majority (Jepsen's majorities-ring).
func ring(nodes []string) map[string][]string {
	n := len(nodes)
	d := (n/2 + 1) / 2
	m := map[string][]string{}
	for i := range nodes {
		for j := range nodes {
			dist := (j - i + n) % n
			dist = min(dist, n-dist)
			if dist > d {
				m[nodes[i]] = append(m[nodes[i]], nodes[j])
			}
		}
	}
	return m
}

// clocker skews one node's lease clock through the test-only failpoint.
// "clock" stays within what the lease margin covers (margin = lease/10,
// and only one node is skewed at a time, by at most 5%); "clock-beyond"
// goes past it (a leader at 2x declares leases over in half the time; an
// AllocSvr at 0.5x serves twice as long) to show what the margin protects.
type clocker struct {
	kind    string
	targets []string
}

func (k *clocker) Kind() string     { return k.kind }
func (k *clocker) Background() bool { return true }

func (k *clocker) Inject(ctx context.Context, env *Env, d *Dealer) (*Active, error) {
	target := d.deal(k.kind, k.targets)
	nodes, err := choose(ctx, env, d, k.kind, target)
	if err != nil {
		return nil, err
	}
	n := nodes[0]
	var rate float64
	if k.kind == "clock" {
		rate = 1 + 0.01 + 0.04*d.Float64()
		if d.IntN(2) == 0 {
			rate = 2 - rate
		}
	} else {
		rate = 2
		if target == "allocsvr" {
			rate = 0.5
		}
	}
	if err := n.SetClockRate(ctx, rate); err != nil {
		return nil, err
	}
	return &Active{
		Target: target, Nodes: []string{n.ID},
		Desc: fmt.Sprintf("%s: %s lease clock at %.3fx (%s)", k.kind, n.ID, rate, target),
		Heal: func(ctx context.Context) error { return resetClock(ctx, n) },
	}, nil
}

func (k *clocker) HealAll(ctx context.Context, env *Env) error {
	var errs []error
	for _, n := range env.Cluster.Nodes() {
		if n.Running() {
			errs = append(errs, resetClock(ctx, n))
		}
	}
	return errors.Join(errs...)
}

// resetClock sets n's lease clock back to the real rate. A node that is
// down needs nothing (a restart runs at the real rate); one just restarted
// may not listen yet, so it keeps trying for a few seconds while n runs.
func resetClock(ctx context.Context, n *cluster.Node) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		err := n.SetClockRate(ctx, 1)
		if err == nil || !n.Running() {
			return nil
		}
		if !Sleep(ctx, 200*time.Millisecond) {
			return err
		}
	}
}

// upgrader moves the message-store shards to the newer build
// (cluster.Options.NextBinary), one replica per fault: it stops a
// replica still on the older build as an operator would (SIGTERM), and
// starts it on the newer build when the fault heals. Each fault deals a
// shard, so with several shards each takes its turn, and shards run
// mixed builds in between, each at its own stage of the upgrade. Target
// store takes a shard's followers first and its leader last, as
// docs/operations.md says. Target store-follower takes only followers
// and always leaves one replica of each shard on the older build (the
// final heal upgrades it), so every shard runs mixed builds for the
// whole run and every leader change may put either build in the lead.
// When no replica of the dealt shard fits, a fault is a graceful restart
// of one of its followers on the build it runs.
type upgrader struct{ targets []string }

func (u *upgrader) Kind() string     { return "upgrade" }
func (u *upgrader) Background() bool { return false }

// stopGrace is how long a replica gets to stop after SIGTERM: a leader
// hands over leadership and waits for its entries in flight (up to 5 s).
const stopGrace = 20 * time.Second

func (u *upgrader) Inject(ctx context.Context, env *Env, d *Dealer) (*Active, error) {
	target := d.deal(u.Kind(), u.targets)
	key := u.Kind() + ":" + target
	// Which replica leads decides the order; during an election, or with
	// no replica of the shard up, there is none to go by, and the fault is
	// not injected.
	leader, err := storeLeader(ctx, env.Cluster, d, key)
	if err != nil {
		return nil, err
	}
	shard := env.Cluster.ShardStores(leader.Shard)
	eligible, upgrade, err := upgradeChoice(target, replicaStates(shard, leader))
	if err != nil {
		return nil, fmt.Errorf("store shard %s: %w", leader.Shard, err)
	}
	var from []*cluster.Node
	for _, i := range eligible {
		from = append(from, shard[i])
	}
	n := d.node(key, from)
	what := "upgrade %s (store): stop, start on the newer build"
	if !upgrade {
		what = "restart %s (store follower, on the build it runs)"
	}
	if err := n.Stop(stopGrace); err != nil {
		// It hung in its stop and was killed: bring it back on the build
		// it ran, and report the hang as the fault's error.
		return nil, errors.Join(err, n.Start())
	}
	if upgrade {
		if err := n.UseNext(); err != nil {
			return nil, err
		}
	}
	return &Active{
		Target: target, Nodes: []string{n.ID}, Desc: fmt.Sprintf(what, n.ID),
		Heal: func(context.Context) error { return startStopped([]*cluster.Node{n}) },
	}, nil
}

// replica is what the upgrader goes by for one store replica.
type replica struct {
	up     bool // running, not paused
	next   bool // on the newer build
	leader bool
}

// replicaStates returns the states of one shard's replicas (leader: nil
// when none is known).
func replicaStates(shard []*cluster.Node, leader *cluster.Node) []replica {
	rs := make([]replica, len(shard))
	for i, n := range shard {
		rs[i] = replica{up: n.Running() && !n.Paused(), next: n.OnNext(), leader: n == leader}
	}
	return rs
}

// upgradeChoice returns the indexes of the replicas of one shard that an
// upgrade fault of target may stop (the fault deals one of them), and
// whether it upgrades that replica or only restarts it on the build it
// runs. Followers still on the older build come first; target store then
// takes the leader, target store-follower never takes the last replica
// on the older build. With none of those, a running follower is
// restarted as it is.
func upgradeChoice(target string, rs []replica) (eligible []int, upgrade bool, err error) {
	var followers, oldFollowers []int
	old, leader := 0, -1
	for i, r := range rs {
		if !r.next {
			old++
		}
		switch {
		case r.leader && r.up:
			leader = i
		case r.up:
			followers = append(followers, i)
			if !r.next {
				oldFollowers = append(oldFollowers, i)
			}
		}
	}
	switch {
	case len(oldFollowers) > 0 && (target == "store" || old > 1):
		return oldFollowers, true, nil
	case target == "store" && leader >= 0 && !rs[leader].next:
		return []int{leader}, true, nil
	case len(followers) > 0:
		return followers, false, nil
	}
	return nil, false, errors.New("no store follower is running")
}

// healNext returns the replica the final heal upgrades next: a follower
// on the older build, else the leader if it still runs it; -1 when every
// replica runs the newer build.
func healNext(rs []replica) int {
	last := -1
	for i, r := range rs {
		switch {
		case r.next:
		case !r.leader:
			return i
		default:
			last = i
		}
	}
	return last
}

// HealAll finishes the upgrade: stopped store replicas start, then, shard
// by shard, every replica still on the older build is stopped and
// started on the newer one, followers first and the leader last (the
// leader is looked up again before each), each serving again before the
// next stops. A replica that hangs in its stop is killed and still
// started on the newer build; the heal goes on and reports it. Then it
// waits until each shard's leader reports that every replica of its
// shard runs the newer store format (seqd_store_shard_format), so
// requests of that format go through from then on.
func (u *upgrader) HealAll(ctx context.Context, env *Env) error {
	if err := startStopped(env.Cluster.Stores()); err != nil {
		return err
	}
	var errs []error
	for _, sh := range env.Cluster.Shards() {
		nodes := env.Cluster.ShardStores(sh)
		for {
			i := healNext(replicaStates(nodes, shardLeader(ctx, env.Cluster, sh)))
			if i < 0 {
				break
			}
			n := nodes[i]
			if err := n.Stop(stopGrace); err != nil {
				errs = append(errs, fmt.Errorf("stopping %s to upgrade it: %w", n.ID, err))
			}
			if err := n.UseNext(); err != nil {
				return errors.Join(append(errs, err)...)
			}
			if err := n.Start(); err != nil {
				return errors.Join(append(errs, fmt.Errorf("starting %s on the newer build: %w", n.ID, err))...)
			}
			if err := n.WaitHealthy(ctx); err != nil {
				return errors.Join(append(errs, fmt.Errorf("%s on the newer build: %w", n.ID, err))...)
			}
		}
	}
	for _, sh := range env.Cluster.Shards() {
		for {
			err := newerFormatLeads(ctx, env.Cluster, sh)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return errors.Join(append(errs, fmt.Errorf("after upgrading every store replica, shard %s: %w", sh, err))...)
			}
			Sleep(ctx, 500*time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// shardLeader returns the leader of store shard sh, waiting up to 10 s
// for one (nil if none shows).
func shardLeader(ctx context.Context, c *cluster.Cluster, sh string) *cluster.Node {
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if l, err := c.StoreLeader(wctx, sh); err == nil {
			return l
		}
		if !Sleep(wctx, 200*time.Millisecond) {
			return nil
		}
	}
}

// newerFormatLeads checks that a store shard's leader runs the newer
// build and has heard every replica of the shard apply its format.
func newerFormatLeads(ctx context.Context, c *cluster.Cluster, shard string) error {
	l, err := c.StoreLeader(ctx, shard)
	if err != nil {
		return err
	}
	own, err := l.Metric(ctx, "seqd_store_format")
	if err != nil {
		return err
	}
	all, err := l.Metric(ctx, "seqd_store_shard_format")
	if err != nil {
		return err
	}
	if !l.OnNext() || all < own {
		return fmt.Errorf("the leader of store shard %s, %s, runs format %v and reports %v for the shard", shard, l.ID, own, all)
	}
	return nil
}

// drainer moves every slot of an AllocSvr to the others with a planned
// hand-over, as an operator's seqctl drain --wait does, and makes it
// active again when healed: the alloc workload's G1 then covers planned
// moves as well as the lease-expiry ones crashes cause. The calls go to
// the arbiters and are retried while they answer UNAVAILABLE (an
// election, a leader still catching up). A NOT_FOUND for an AllocSvr the
// caught-up leader still lists is a wrong answer (an arbiter answering
// from a log it has not applied, say): the run reports it as an anomaly
// (WrongAnswer, from adminErr).
type drainer struct{ targets []string }

func (k *drainer) Kind() string     { return "drain" }
func (k *drainer) Background() bool { return false }

func (k *drainer) Inject(ctx context.Context, env *Env, d *Dealer) (*Active, error) {
	target := d.deal(k.Kind(), k.targets)
	// A drain whose heal failed must not outlive its record: undo any
	// first.
	if err := k.HealAll(ctx, env); err != nil {
		return nil, fmt.Errorf("undraining the AllocSvrs first: %w", err)
	}
	// Only an AllocSvr the arbiter leader lists as registered, active and
	// with a lease: one just restarted may not have registered yet (its
	// old incarnation's record still says active).
	st, err := env.Cluster.Status(ctx)
	if err != nil {
		return nil, err
	}
	active := map[string]bool{}
	for _, a := range st.Allocsvrs {
		active[a.Id] = a.State == seqdv1.NodeState_NODE_STATE_ACTIVE && a.Lease == "valid"
	}
	up := slices.DeleteFunc(running(env.Cluster.AllocSvrs()), func(n *cluster.Node) bool { return !active[n.ID] })
	if len(up) < 2 {
		return nil, fmt.Errorf("%d AllocSvrs running and active: a drain needs another to take the slots", len(up))
	}
	n := d.node(k.Kind()+":"+target, up)
	var left uint32
	err = env.Cluster.Admin(ctx, func(ctx context.Context, c seqdv1.AdminClient) error {
		resp, err := c.Drain(ctx, &seqdv1.DrainRequest{Node: n.ID, Wait: true})
		left = resp.GetRemainingSlots()
		return err
	})
	if err != nil {
		// Left as it is, a drain cut short goes on in the background:
		// undo it, so that no fault outlives its record.
		uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return nil, errors.Join(adminErr(uctx, env.Cluster, "drain", n.ID, err), undrain(uctx, env.Cluster, n.ID))
	}
	return &Active{
		Target: target, Nodes: []string{n.ID},
		Desc: fmt.Sprintf("drain %s (%s; %d slots left on it)", n.ID, target, left),
		Heal: func(ctx context.Context) error { return undrain(ctx, env.Cluster, n.ID) },
	}, nil
}

func (k *drainer) HealAll(ctx context.Context, env *Env) error {
	var errs []error
	for _, n := range env.Cluster.AllocSvrs() {
		errs = append(errs, undrain(ctx, env.Cluster, n.ID))
	}
	return errors.Join(errs...)
}

// undrain makes AllocSvr id active again.
func undrain(ctx context.Context, c *cluster.Cluster, id string) error {
	err := c.Admin(ctx, func(ctx context.Context, a seqdv1.AdminClient) error {
		_, err := a.Undrain(ctx, &seqdv1.UndrainRequest{Node: id})
		return err
	})
	return adminErr(ctx, c, "undrain", id, err)
}

// WrongAnswer is a definitive answer the cluster should not have given to
// a nemesis's own call; the run counts it as an anomaly.
type WrongAnswer struct{ Msg string }

func (w *WrongAnswer) Error() string { return "wrong answer: " + w.Msg }

// adminErr wraps the error of admin call what on AllocSvr id: NOT_FOUND
// is a WrongAnswer when a caught-up arbiter leader still lists id (it was
// registered all along: only the AllocSvr's own graceful stop
// deregisters it), anything else is returned as it is.
func adminErr(ctx context.Context, c *cluster.Cluster, what, id string, err error) error {
	if err == nil {
		return nil
	}
	if status.Code(err) == codes.NotFound && c != nil {
		if st, serr := c.Status(ctx); serr == nil && slices.ContainsFunc(st.Allocsvrs, func(a *seqdv1.AllocSvrStatus) bool { return a.Id == id }) {
			return &WrongAnswer{Msg: fmt.Sprintf("%s %s: %v (the arbiter leader lists it as registered)", what, id, err)}
		}
	}
	return fmt.Errorf("%s %s: %w", what, id, err)
}
