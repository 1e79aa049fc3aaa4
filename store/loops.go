package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/seqd/seqd/internal/bugs"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

// monitorLeadership runs the leader-only loops while this replica leads,
// from this one goroutine. A true from LeaderCh while they run may hide a
// lost-then-regained leadership, so the loops restart.
func (s *Shard) monitorLeadership() {
	defer s.wg.Done()
	var stopLoops func()
	stop := func() {
		if stopLoops != nil {
			stopLoops()
			stopLoops = nil
		}
		s.m.isLeader.Set(0)
	}
	for {
		select {
		case isLeader := <-s.node.Raft.LeaderCh():
			stop()
			if isLeader {
				s.m.isLeader.Set(1)
				stopLoops = s.startLeaderLoops()
			}
		case <-s.stop:
			stop()
			return
		}
	}
}

func (s *Shard) startLeaderLoops() func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(4)
	go func() {
		defer wg.Done()
		s.leaderLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		s.retentionLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		s.formatLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		s.sweepLoop(ctx)
	}()
	go func() {
		wg.Wait()
		close(done)
	}()
	return func() {
		// Reads stop counting on this leader at once; and again once
		// its loop is gone, which may have set it while stopping.
		s.caughtUp.Store(false)
		cancel()
		<-done
		s.caughtUp.Store(false)
		s.formats.Store(nil)
		s.m.shardFormat.Set(-1)
		s.m.outboxItems.Set(-1)
		s.m.hintsWaiting.Set(-1)
	}
}

// leaderLoop delivers the outbox and hints read-fanout groups, each on its
// own period.
func (s *Shard) leaderLoop(ctx context.Context) {
	for {
		// The barrier proves the catch-up only for the term it was
		// committed in: a leader deposed and elected again meanwhile
		// must take another (readIndexRound checks the term).
		term := s.node.Raft.CurrentTerm()
		if s.node.Raft.Barrier(10*time.Second).Error() == nil && s.node.Raft.CurrentTerm() == term {
			s.caughtUpTerm.Store(term)
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Rounds an earlier term of this replica left unfinished may have
	// been finished, or passed, by other leaders since. (Reset before
	// caughtUp is published: what reads caughtUp then sees them reset.)
	s.hinting = nil
	s.outboxFrom, s.outboxHeld = nil, nil
	s.caughtUp.Store(true)
	outbox := time.NewTicker(50 * time.Millisecond)
	defer outbox.Stop()
	hints := time.NewTicker(s.cfg.HintWindow)
	defer hints.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-outbox.C:
			s.deliverOutbox(ctx)
		case <-hints.C:
			s.hintGroups(ctx)
		}
	}
}

// deliverOutbox sends queued items to the shards of their users, then
// drops them from the outbox once delivered. Items go out in outbox order,
// one call per target shard at a time, so a recall never overtakes the
// message it recalls.
//
// A round reads at most outboxRound items, from where the last one
// stopped: rounds make a pass over the outbox, and start again at its
// start once one reaches its end. A target shard whose delivery fails, or
// whose items pass maxDeliverBytes, gets nothing more in that pass (its
// later items must not overtake the ones left), but the pass goes on for
// the others: items for a shard that is down, however many, hold up only
// that shard's, and its users' (outboxHold). (Before, every round read the
// first items, and once those were a down shard's, nothing went to any
// shard.) After a round that did not read the whole outbox, the gauge
// counts what is left, up to maxOutboxCount.
const (
	maxDeliverBytes = 4 << 20
	maxOutboxCount  = 100_000
)

// outboxRound is how many items one round reads (a variable for tests).
var outboxRound = 2000

// outboxHold is what a pass over the outbox delivers no more to: target
// shards whose delivery failed or whose items passed a call's size, and
// the users of every item it left behind. Their later items must not
// overtake those (a recall its message), and a user's items are held by
// user too, since a newer routing table may send a held shard's user to
// another shard in a later round of the pass.
type outboxHold struct {
	shards map[string]bool
	users  map[uint64]bool
}

func (s *Shard) deliverOutbox(ctx context.Context) {
	defer s.m.outboxRounds.Inc()
	from := s.outboxFrom
	items, err := s.fsm.OutboxAfter(from, outboxRound)
	if err != nil {
		// Nothing is delivered while the outbox cannot be read: the gauge
		// says it does not know, rather than keep its last value.
		s.m.outboxItems.Set(math.NaN())
		if ctx.Err() == nil && time.Since(s.outboxErrLogged) > 10*time.Second {
			s.outboxErrLogged = time.Now()
			s.log.Error("cannot read the outbox; deliveries to other shards wait", "err", err)
		}
		return
	}
	held := s.outboxHeld
	if held == nil {
		held = &outboxHold{shards: map[string]bool{}, users: map[uint64]bool{}}
	}
	if len(items) < outboxRound {
		// This round reaches the end: the next starts a new pass.
		s.outboxFrom, s.outboxHeld = nil, nil
	} else {
		s.outboxFrom, s.outboxHeld = items[len(items)-1].Key, held
	}
	whole := from == nil && len(items) < outboxRound
	if len(items) == 0 && whole {
		s.m.outboxItems.Set(0)
		return
	}
	byShard := map[string][]OutboxItem{}
	bytes := map[string]int{}
	var order []string
	for _, it := range items {
		u := it.Item.User
		sh := shardOf(s.table(), u)
		if held.users[u] || sh == nil || held.shards[sh.Id] {
			held.users[u] = true
			continue
		}
		// One call stays well under the gRPC message limit; the rest of
		// this shard's items wait for the next pass, in order.
		n := proto.Size(it.Item)
		if len(byShard[sh.Id]) > 0 && bytes[sh.Id]+n > maxDeliverBytes {
			held.shards[sh.Id] = true
			held.users[u] = true
			continue
		}
		if byShard[sh.Id] == nil {
			order = append(order, sh.Id)
		}
		byShard[sh.Id] = append(byShard[sh.Id], it)
		bytes[sh.Id] += n
	}
	var acked [][]byte
	for _, id := range order {
		batch := byShard[id]
		fan := make([]*clusterv1.FanoutItem, len(batch))
		for i, it := range batch {
			fan[i] = it.Item
		}
		var err error
		if id == s.cfg.ShardID {
			// The shard map moved these users here.
			var res *OpResult
			var b *deliverBuilder
			if b, err = s.newDeliverBuilder(fan); err == nil {
				if res, err = s.submit(ctx, b); err == nil {
					err = s.opErr("deliver", res) // refused or out of order: keep the items
				}
			}
		} else {
			err = s.deliverRemote(ctx, batch[0].Item.User, fan)
		}
		if err != nil {
			held.shards[id] = true
			for _, it := range batch {
				held.users[it.Item.User] = true
			}
			s.log.Debug("outbox delivery failed; will retry", "to", id, "items", len(fan), "err", err)
			if id != s.cfg.ShardID {
				s.refreshForOutbox(ctx)
			}
			continue
		}
		s.m.delivered.Add(float64(len(fan)))
		for _, it := range batch {
			acked = append(acked, it.Key)
		}
	}
	left := len(items)
	if len(acked) > 0 {
		if _, err := s.submitOK(ctx, &clusterv1.StoreOp{Op: &clusterv1.StoreOp_OutboxAck{OutboxAck: &clusterv1.OutboxAckOp{Keys: acked}}}); err == nil {
			left -= len(acked)
		}
	}
	v := float64(left)
	if !whole {
		// More may wait than the round read: count them.
		n, err := s.fsm.OutboxCount(maxOutboxCount)
		v = float64(n)
		if err != nil {
			v = math.NaN()
		}
	}
	s.m.outboxItems.Set(v)
}

// refreshForOutbox reloads the routing table after a delivery failed, at
// most every 5 s: the target shard's replicas may have moved (seqctl
// replicas add/remove), and a shard that allocates nothing learns no new
// table from the AllocSvrs' answers. The refresh runs on a goroutine of
// its own: the outbox and the hints share the loop, which must not wait
// for it.
func (s *Shard) refreshForOutbox(ctx context.Context) {
	c := s.alloc.Load()
	if c == nil || time.Since(s.outboxRefreshed) < 5*time.Second {
		return
	}
	s.outboxRefreshed = time.Now()
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := c.Refresh(rctx); err != nil && ctx.Err() == nil {
			s.log.Debug("routing table refresh after a failed delivery", "err", err)
		}
	}()
}

func (s *Shard) deliverRemote(ctx context.Context, user uint64, items []*clusterv1.FanoutItem) error {
	cc, sh, err := s.shardConn(user)
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = clusterv1.NewStoreNodeClient(cc).Deliver(dctx, &clusterv1.DeliverRequest{FromShard: s.cfg.ShardID, Items: items})
	s.shardFailed(sh, err)
	return err
}

// hintChunk bounds the members hinted by one op (one Badger transaction,
// which every replica applies while the shard's other entries wait).
var hintChunk = 1000

// failHint, when set (tests), fails chunk i of a round for group g before
// it is proposed, as a leader change or a timeout would.
var failHint func(g uint64, i int) bool

var errHintFault = errors.New("store: hint chunk failed (test fault)")

// refuseHint, when set (tests), answers chunk i of a round for group g
// with an out-of-order refusal instead of proposing it, as the FSM would
// refuse a chunk whose seqs a race overtook.
var refuseHint func(g uint64, i int) bool

// expiryRoundsPerWindow bounds the rounds one hint window runs for
// groups whose only news is that retention removed messages: the first
// pass after retention is turned on can list every group with history,
// and the outbox waits while the rounds run. The others stay listed for
// the next windows.
var expiryRoundsPerWindow = 8

// orderForHints puts the listed groups (in group order) in the order a
// hint window serves them: those with new messages first, starting after
// group `after` (the last one a window served), then those with only a
// count to tell, starting after group `expiryAfter` (the last such one
// served); each wrapping round, so that every group gets its turn though
// the window's budgets leave the rest to the next windows. With
// expiryFirst (every other window) those with only a count go first: a
// huge group whose rounds always fill the window would otherwise keep
// them waiting for good.
func orderForHints(groups []GroupNews, after, expiryAfter uint64, expiryFirst bool) {
	order := func(g GroupNews) int {
		var rank int
		switch {
		case !g.expiryOnly() && g.Info.GroupId > after:
			rank = 0
		case !g.expiryOnly():
			rank = 1
		case g.Info.GroupId > expiryAfter:
			rank = 2
		default:
			rank = 3
		}
		if expiryFirst {
			rank = (rank + 2) % 4
		}
		return rank
	}
	slices.SortStableFunc(groups, func(a, b GroupNews) int { return cmp.Compare(order(a), order(b)) })
}

// hintRound decides a listed group's round: told, the expired count the
// round tells (0: none), and whether the round waits. The members of a
// group whose messages retention removes (its steps set expiry_hints once
// every replica applies format 7) are told the count in every round, one
// at the last round's group seq included (an expiry-only round). A
// replica since replaced by an older build holds an expiry-only round
// back, as without the count it would be a retry; so does the window's
// budget of them (expiryRounds left).
func hintRound(g GroupNews, tellReady bool, expiryRounds int) (told uint64, wait bool) {
	switch {
	case !g.Counters.ExpiryHints:
		return 0, false
	case !tellReady || g.expiryOnly() && expiryRounds <= 0:
		return 0, g.expiryOnly()
	}
	return g.Counters.ExpiredCount, false
}

// hintGroups gives the members of every read-fanout group with news (new
// timeline entries, or messages retention removed) one hint each: at most
// one per member per hint window.
func (s *Shard) hintGroups(ctx context.Context) {
	groups, err := s.fsm.ReadFanoutGroups()
	if err != nil {
		return
	}
	// Hints tell the group's expired count once there is one (until then
	// the entry would need format 5 for nothing, and mark the data so) and
	// every replica can write it (a replica of an older format would leave
	// it out of its copies).
	expired, err := s.fsm.TimelinesExpired()
	withExpired := err == nil && expired && s.formatReady(formatHintExpired) == nil
	tellReady := s.formatReady(formatExpiryHints) == nil
	s.expiryFirst = !s.expiryFirst
	orderForHints(groups, s.hintAfter, s.expiryAfter, s.expiryFirst)
	expiryRounds := expiryRoundsPerWindow
	// The window's budget (Config.HintBudget) bounds the members it
	// hints over all groups (it may pass it by less than one chunk): a
	// read-fanout group of 90,000 members in constant use would otherwise
	// have every window propose 90,000 appends, more than the shard's
	// whole write capacity, and every other write would queue behind
	// them. A round the budget cuts off goes on in the next windows at
	// the same group seq; the next window starts after the last group
	// this one served, so the groups take turns and small ones are not
	// held up behind a huge one for more than a window.
	budget := s.cfg.HintBudget
	chunk := max(min(hintChunk, budget), 1)
	waiting := 0
	defer func() {
		if ctx.Err() == nil {
			s.m.hintsWaiting.Set(float64(waiting))
		}
	}()
groups:
	for _, g := range groups {
		if ctx.Err() != nil {
			return // the loop stopped: leadership moved, or the replica closes
		}
		if budget <= 0 {
			// The rest wait for the next window, which starts after the
			// last group this one served.
			break
		}
		gid, gseq, count := g.Info.GroupId, g.Counters.LastGroupSeq, g.Counters.MessageCount
		told, wait := hintRound(g, tellReady, expiryRounds)
		if wait {
			continue
		}
		if g.expiryOnly() {
			expiryRounds--
			s.expiryAfter = gid
		} else {
			s.hintAfter = gid
		}
		// A round an earlier window left unfinished goes on without the
		// members its applied chunks hinted: a round the budget cut off
		// at its own group seq and count, whatever came since (the next
		// round tells that); one where a chunk failed only if it is the
		// same round (a newer one hints everyone).
		done := s.hinting[gid]
		switch {
		case done != nil && done.cut && done.passed(g.Counters):
			done = nil // another leader finished it, or a later round
		case done != nil && done.cut && (done.told == 0 || tellReady):
			gseq, count, told = done.gseq, done.count, done.told
		case done != nil && (done.gseq != gseq || done.told != told):
			done = nil
		}
		var local, remote []uint64
		for _, m := range g.Info.Members {
			switch {
			case done != nil && done.users[m.User]:
			case s.isLocal(m.User):
				local = append(local, m.User)
			default:
				remote = append(remote, m.User)
			}
		}
		delete(s.hinting, gid)
		newRound := func() *unfinishedHints {
			return &unfinishedHints{gseq: gseq, count: count, told: told, users: map[uint64]bool{}}
		}
		for i := 0; i == 0 || len(local) > 0 || len(remote) > 0; i++ {
			if i > 0 && budget <= 0 {
				// The window's budget is spent: the rest of the round
				// waits for the next window.
				if done == nil {
					done = newRound()
				}
				done.cut = true
				s.noteHinted(gid, done)
				waiting += len(local) + len(remote)
				continue groups
			}
			// Each op hints at most chunk members, local ones first.
			n := min(len(local), chunk)
			r := min(len(remote), chunk-n)
			b := &hintBuilder{group: gid, gseq: gseq, count: count, local: local[:n], remote: remote[:r],
				final: n == len(local) && r == len(remote), withExpired: withExpired, told: told}
			local, remote = local[n:], remote[r:]
			budget -= n + r
			var res *OpResult
			err := errHintFault
			switch {
			case failHint != nil && failHint(gid, i):
			case refuseHint != nil && refuseHint(gid, i):
				res, err = &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OUT_OF_ORDER, Msg: "refused (test fault)"}, nil
			default:
				res, err = s.submit(ctx, b)
			}
			if err == nil && res.Status != clusterv1.OpStatus_OP_STATUS_OK {
				// Refused (out of order, say): its members were not told,
				// so the round must not go on to its final chunk, which
				// would mark it told. Retried as a failed chunk is.
				err = fmt.Errorf("chunk %d refused: %s", i, res.Msg)
			}
			if err != nil {
				s.log.Debug("group hint failed; will retry", "group", gid, "err", err)
				if done != nil {
					s.noteHinted(gid, done)
					if done.cut {
						waiting += n + r + len(local) + len(remote)
					}
				}
				break
			}
			if b.final {
				break
			}
			if done == nil {
				done = newRound()
			}
			for _, u := range b.local {
				done.users[u] = true
			}
			for _, u := range b.remote {
				done.users[u] = true
			}
		}
		s.m.hints.Inc()
	}
}

// unfinishedHints is a read-fanout group's hint round (its group seq and told
// expired count) and the members its applied chunks hinted.
type unfinishedHints struct {
	gseq, count, told uint64
	users             map[uint64]bool
	// cut: the window's budget stopped the round, not a failed chunk.
	cut bool
}

// passed reports whether the group's counters show the round applied in
// full already, or a later one: a final chunk at a higher group seq, or
// at the same one telling at least its expired count (the FSM would take
// its chunks as retries).
func (r *unfinishedHints) passed(c *clusterv1.GroupCounters) bool {
	return r.gseq < c.HintedGseq || r.gseq == c.HintedGseq && r.told <= c.HintedExpired
}

// noteHinted keeps an unfinished round's hinted members for its retry.
func (s *Shard) noteHinted(gid uint64, r *unfinishedHints) {
	if s.hinting == nil {
		s.hinting = map[uint64]*unfinishedHints{}
	}
	s.hinting[gid] = r
}

// submitOK proposes a leader's own op and fails unless it applied.
func (s *Shard) submitOK(ctx context.Context, op *clusterv1.StoreOp) (*OpResult, error) {
	res, err := s.submit(ctx, &plainBuilder{op: op})
	if err == nil && res.Status != clusterv1.OpStatus_OP_STATUS_OK {
		err = errors.New(res.Msg)
	}
	return res, err
}

// dedupSweepInterval is how often a leader sweeps the dedup records past
// their TTL; sweepLimit is how many sends one sweep op looks at, and
// sweepPause the wait between two of them, which leaves the pipeline to
// client requests. sweepGrace keeps a record that long past its expiry:
// the entries' times are their leaders' clocks, and a record deleted by one
// leader must not be missed by a later one whose clock is behind.
var (
	dedupSweepInterval = 10 * time.Minute
	sweepGrace         = time.Minute
)

const (
	sweepLimit = 1000
	sweepPause = 20 * time.Millisecond
)

// sweepLoop sweeps the dedup records every dedupSweepInterval, on a
// goroutine of its own: a sweep after a busy day takes a while, which the
// outbox and the group hints must not wait for.
func (s *Shard) sweepLoop(ctx context.Context) {
	t := time.NewTicker(dedupSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sweepDedup(ctx)
		}
	}
}

// sweepDedup deletes the dedup records past their TTL with sweep ops, one
// after another while there is work: the leader proposes one only when
// its own state shows a send past its TTL after where the last sweep
// stopped (SweepDue), so a shard with nothing to sweep proposes nothing. Until every replica
// applies the store format that added the op, the pipeline refuses it and
// the records wait for a later sweep.
func (s *Shard) sweepDedup(ctx context.Context) {
	for {
		cutoff := s.now().Add(-sweepGrace).UnixMilli()
		if due, err := s.fsm.SweepDue(cutoff); err != nil || !due {
			return
		}
		op := &clusterv1.SweepDedupOp{Limit: sweepLimit, GraceMs: sweepGrace.Milliseconds()}
		res, err := s.submitOK(ctx, &clusterv1.StoreOp{Op: &clusterv1.StoreOp_SweepDedup{SweepDedup: op}})
		if err != nil {
			s.log.Debug("dedup sweep stopped; the next one goes on", "err", err)
			return
		}
		s.m.dedupSwept.Add(float64(res.Swept))
		if !sleepCtx(ctx, sweepPause) {
			return
		}
	}
}

// Retention works in passes over the users, each pass in steps
// (ExpireScanOp) that look at most expireUsers users and remove at most
// expireLimit events, expirePause apart so that client requests go
// between them. A pass starts every retentionEvery(retention).
var (
	expireUsers uint32 = 1000
	expireLimit uint32 = 500
	expirePause        = 20 * time.Millisecond
)

// trimLimit is the change-log entries one TrimChangeLogOp removes at
// most (each holds the ops of one Raft entry).
const trimLimit = 500

// legacyExpireLimit is the events one ExpireOp removes, the op a leader
// proposes while a replica of its shard is of a format before 3.
const legacyExpireLimit = 5000

// retentionEvery is the time between two retention passes: a tenth of the
// shortest retention period, at most a minute.
var retentionEvery = func(retention time.Duration) time.Duration { return min(retention/10, time.Minute) }

// logRetention is how long the change log keeps an entry: the
// change-log retention, or the inbox retention if that is shorter (an
// entry outlives the events it wrote by no more than that).
func (c *Config) logRetention() time.Duration {
	if c.Retention > 0 {
		return min(c.Retention, c.ChangeLogRetention)
	}
	return c.ChangeLogRetention
}

// retentionLoop runs retention passes, on a goroutine of its own: a pass
// over many users takes a while, which the outbox and the group hints
// must not wait for. With inbox retention off, a pass only trims the
// change log.
func (s *Shard) retentionLoop(ctx context.Context) {
	t := time.NewTicker(retentionEvery(s.cfg.logRetention()))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s.caughtUp.Load() {
				s.applyRetention(ctx)
			}
		}
	}
}

// applyRetention runs one retention pass. With inbox retention on, it
// removes the inbox events sent before the retention period, however many
// there are, step by step from the first user to the last (expireInboxes),
// then the read-fanout group timelines' entries (expireTimelines). Then it
// trims the change log (trimChangeLog).
func (s *Shard) applyRetention(ctx context.Context) {
	now := s.now()
	if s.cfg.Retention > 0 {
		period := s.cfg.Retention
		if bugs.Enabled(bugs.ExpireTooEarly) {
			period /= 2
		}
		before := now.Add(-period).UnixMilli()
		if !s.expireInboxes(ctx, before) || !s.expireTimelines(ctx, before) {
			return
		}
	}
	s.trimChangeLog(ctx, now.Add(-s.cfg.logRetention()).UnixMilli())
}

// expireInboxes runs the steps of a retention pass over the inboxes. Until
// every replica applies store format 3 it proposes one ExpireOp instead,
// which older builds apply too. It reports false if the pass should stop.
func (s *Shard) expireInboxes(ctx context.Context, before int64) bool {
	notReady := s.formatReady(opFormats[kindExpireScan])
	if notReady != nil && !s.formatBelow(opFormats[kindExpireScan]) {
		// A replica's format is not known yet (a poll under way, or one
		// not answering): the next pass asks again.
		s.log.Debug("retention pass skipped: the shard's store formats are not all known", "err", notReady)
		return false
	}
	s.m.expired.Inc()
	if notReady != nil {
		s.log.Debug("retention in one op: a replica runs a store format before 3", "err", notReady)
		op := &clusterv1.ExpireOp{BeforeMs: before, Limit: legacyExpireLimit}
		if res, err := s.submitOK(ctx, &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Expire{Expire: op}}); err == nil {
			s.m.expiredEvents.Add(float64(res.Expired))
		}
		return false
	}
	// The copy keys of removed deliveries go too once every replica can
	// remove them (format 6); a pass before that leaves them for good. A
	// shard that never had a delivery from another shard has none, and
	// needs no format 6 for them.
	held, err := s.fsm.HoldsCopyKeys()
	dropCopies := err == nil && held
	if dropCopies {
		if err := s.formatReady(formatDropCopies); err != nil {
			s.log.Debug("retention leaves the copy keys of deliveries this pass: a replica's store format is before 6 or not known", "err", err)
			dropCopies = false
		}
	}
	for from := uint64(0); ; {
		// Start at the next user with work, by this leader's own state: a
		// pass with nothing due proposes nothing.
		first, due, err := s.fsm.FirstDue(before, from)
		if err != nil || !due {
			return true
		}
		op := &clusterv1.ExpireScanOp{BeforeMs: before, FromUser: first, MaxUsers: expireUsers, Limit: expireLimit, DropCopies: dropCopies}
		res, err := s.submitOK(ctx, &clusterv1.StoreOp{Op: &clusterv1.StoreOp_ExpireScan{ExpireScan: op}})
		if err != nil {
			s.log.Debug("retention pass stopped; the next one starts over", "err", err)
			return false
		}
		s.m.expiredEvents.Add(float64(res.Expired))
		if res.ExpireNext == 0 {
			return true
		}
		from = res.ExpireNext
		if !sleepCtx(ctx, expirePause) {
			return false
		}
	}
}

// trimChangeLog removes the change-log entries applied before before, as
// far as the dedup sweep has gone (it reads the sends after its cursor),
// once every replica applies store format 3.
func (s *Shard) trimChangeLog(ctx context.Context, before int64) {
	if err := s.formatReady(opFormats[kindTrimChangeLog]); err != nil {
		s.log.Debug("change log left this pass: a replica's store format is before 3 or not known", "err", err)
		return
	}
	for {
		if due, err := s.fsm.TrimDue(before); err != nil || !due {
			return
		}
		op := &clusterv1.TrimChangeLogOp{BeforeMs: before, Limit: trimLimit}
		res, err := s.submitOK(ctx, &clusterv1.StoreOp{Op: &clusterv1.StoreOp_TrimChangeLog{TrimChangeLog: op}})
		if err != nil {
			s.log.Debug("change-log trim stopped; the next pass goes on", "err", err)
			return
		}
		s.m.logTrimmed.Add(float64(res.LogTrimmed))
		if !res.LogMore || !sleepCtx(ctx, expirePause) {
			return
		}
	}
}

// expireTimelines runs the steps of a retention pass over read-fanout
// group timelines, as applyRetention does over the inboxes, once every
// replica applies store format 4 (a pass before that leaves the
// timelines; a later one removes what is due then). It reports false if
// the pass should stop.
func (s *Shard) expireTimelines(ctx context.Context, before int64) bool {
	if err := s.formatReady(opFormats[kindExpireTimelines]); err != nil {
		s.log.Debug("group timelines left this pass: a replica's store format is before 4 or not known", "err", err)
		return true
	}
	// Members hear of the removed messages by a hint round once every
	// replica applies format 7; until then only the next message's round
	// tells them (format 5).
	hintExpired := s.formatReady(formatExpiryHints) == nil
	for from := uint64(0); ; {
		first, due, err := s.fsm.FirstTimelineDue(before, from)
		if err != nil || !due {
			return true
		}
		op := &clusterv1.ExpireTimelinesOp{BeforeMs: before, FromGroup: first, MaxGroups: expireUsers, Limit: expireLimit, HintExpired: hintExpired}
		res, err := s.submitOK(ctx, &clusterv1.StoreOp{Op: &clusterv1.StoreOp_ExpireTimelines{ExpireTimelines: op}})
		if err != nil {
			s.log.Debug("timeline retention stopped; the next pass starts over", "err", err)
			return false
		}
		s.m.expiredTimeline.Add(float64(res.Expired))
		if res.ExpireNext == 0 {
			return true
		}
		from = res.ExpireNext
		if !sleepCtx(ctx, expirePause) {
			return false
		}
	}
}

// sleepCtx waits d, and reports false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
