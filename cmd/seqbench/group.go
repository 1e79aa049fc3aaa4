package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/maphash"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seqd/seqd/internal/bench"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// maxMembersPerCall is the store's default cap on members per
// CreateGroup or AddMembers call.
const maxMembersPerCall = 10_000

// maxStreams caps the Subscribe streams a group run opens: each is a
// goroutine and a gRPC stream.
const maxStreams = 100_000

// writeFanoutThreshold is the store's default: larger groups use read
// fanout.
const writeFanoutThreshold = 500

type groupFlags struct {
	size       uint64
	readFanout bool
	senders    uint64
	subs       int64
	drain      time.Duration
}

func (g *groupFlags) register(fs *flag.FlagSet) {
	fs.Uint64Var(&g.size, "group-size", 0, "send to groups of this many members instead of 1:1 (--users/N groups; N > 500 uses read fanout)")
	fs.BoolVar(&g.readFanout, "read-fanout", false, "with --group-size: create read-fanout groups even at 500 members or fewer")
	fs.Uint64Var(&g.senders, "senders-per-group", 4, "with --group-size: members that send (the first ones of each group); they are never subscribed")
	fs.Int64Var(&g.subs, "subscribers", -1, "with --group-size: members per group that subscribe and are timed; -1 means every member that does not send, at most 500")
	fs.DurationVar(&g.drain, "drain", 15*time.Second, "with --group-size: how long to wait after the run for the last deliveries")
}

// check checks the group flags that are wrong with or without
// --group-size.
func (g *groupFlags) check() error {
	switch {
	case g.subs < -1:
		return fmt.Errorf("--subscribers %d: must be -1 (every member that does not send, at most 500) or 0 or more", g.subs)
	case g.drain < 0:
		return fmt.Errorf("--drain %v: must be 0 or positive", g.drain)
	}
	return nil
}

func (g *groupFlags) validate(pop population, bodyBytes int) error {
	switch {
	case g.size < 2:
		return fmt.Errorf("--group-size %d: a group needs at least 2 members", g.size)
	case pop.n < g.size:
		return fmt.Errorf("--users %d is fewer than --group-size %d; the groups are made of --users", pop.n, g.size)
	case g.senders < 1 || g.senders >= g.size:
		return fmt.Errorf("--senders-per-group %d: must be 1 .. group size-1", g.senders)
	case g.subs > int64(g.size-g.senders):
		return fmt.Errorf("--subscribers %d: only %d members per group are not senders", g.subs, g.size-g.senders)
	case bodyBytes < stampBytes:
		return fmt.Errorf("--body-bytes %d: group runs time deliveries with the send time in the body's first %d bytes", bodyBytes, stampBytes)
	}
	if g.subs < 0 {
		g.subs = int64(min(g.size-g.senders, 500))
	}
	if streams := uint64(g.subs) * (pop.n / g.size); streams > maxStreams {
		return fmt.Errorf("--subscribers %d in each of %d groups: %d streams; at most %d (lower --subscribers or --users)", g.subs, pop.n/g.size, streams, maxStreams)
	}
	return nil
}

// groupReport is the setup and delivery timing of a group run.
type groupReport struct {
	Groups            int    `json:"groups"`
	Members           uint64 `json:"members_per_group"`
	Fanout            string `json:"fanout"`
	SendersPerGroup   uint64 `json:"senders_per_group"`
	SubscribersPerGrp int64  `json:"subscribers_per_group"`
	Subscribers       int64  `json:"subscribers_total"`
	// Delivery times a message from just before Send to the moment the
	// last subscribed member of its group had it.
	Delivery deliveryReport `json:"delivery"`
	// What says in words what Delivery measured.
	What string `json:"what"`
	// SetupS is the time to create the groups and open every stream.
	SetupS float64 `json:"setup_s"`
}

type deliveryReport struct {
	// Messages acknowledged whose send started in the measured window.
	Messages uint64 `json:"messages"`
	// Complete reached every subscribed member before the drain ended.
	Complete   uint64 `json:"complete"`
	Incomplete uint64 `json:"incomplete"`
	// Duplicates counts deliveries of a message to more members than are
	// subscribed in its group (a member seeing it twice); should be 0.
	Duplicates uint64  `json:"duplicates"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	P999us     float64 `json:"p999_us"`
	MaxUs      float64 `json:"max_us"`
	// MemberDeliveriesPerSec is Complete × subscribers per group over the
	// measured duration.
	MemberDeliveriesPerSec float64 `json:"member_deliveries_per_sec"`
	// Resubscribes counts streams that broke and were reopened from their
	// checkpoint; StreamErrors the failed calls behind them.
	Resubscribes uint64 `json:"resubscribes"`
	StreamErrors uint64 `json:"stream_errors"`
	// FetchErrors counts failed SyncGroup calls (read fanout).
	FetchErrors uint64 `json:"fetch_errors,omitempty"`
	// LastError is one of the stream or fetch errors, if any.
	LastError string `json:"last_error,omitempty"`
}

// groupSet is the groups of one run: group g has members
// user(g*size) .. user(g*size+size-1); the first senders send, the next
// subs subscribe.
type groupSet struct {
	pop        population
	ids        []uint64
	size       uint64
	senders    uint64
	subs       uint64
	readFanout bool
	index      map[uint64]int // group id -> g
}

func (s *groupSet) member(g int, j uint64) uint64 { return s.pop.user(uint64(g)*s.size + j) }

func (s *groupSet) members(g int, from, to uint64) []uint64 {
	out := make([]uint64, 0, to-from)
	for j := from; j < to; j++ {
		out = append(out, s.member(g, j))
	}
	return out
}

// createGroups creates the groups (ids from the clock, so runs against one
// cluster never collide) and checks the fanout mode the store chose.
func createGroups(ctx context.Context, api msgAPI, pop population, f groupFlags, progress *bench.Progress) (*groupSet, error) {
	n := int(pop.n / f.size)
	s := &groupSet{pop: pop, size: f.size, senders: f.senders, subs: uint64(f.subs), index: map[uint64]int{}}
	base := uint64(time.Now().UnixNano())
	progress.Printf("seqbench: creating %d group(s) of %d members\n", n, f.size)
	for g := range n {
		id := base + uint64(g)
		first := min(f.size, maxMembersPerCall)
		resp, err := api.CreateGroup(ctx, &seqdv1.CreateGroupRequest{
			GroupId: id, Owner: s.member(g, 0), Members: s.members(g, 0, first), ReadFanout: f.readFanout,
		})
		if err != nil {
			return nil, fmt.Errorf("create group %d: %w", id, err)
		}
		rf := resp.GetGroup().GetReadFanout()
		for from := first; from < f.size; from += maxMembersPerCall {
			to := min(from+maxMembersPerCall, f.size)
			r, err := api.AddMembers(ctx, &seqdv1.AddMembersRequest{GroupId: id, Members: s.members(g, from, to)})
			if err != nil {
				return nil, fmt.Errorf("add members to group %d: %w", id, err)
			}
			rf = r.GetGroup().GetReadFanout()
		}
		if g == 0 {
			s.readFanout = rf
		} else if rf != s.readFanout {
			return nil, fmt.Errorf("group %d: read_fanout %v, but the first group has %v", id, rf, s.readFanout)
		}
		s.ids = append(s.ids, id)
		s.index[id] = g
	}
	return s, nil
}

// groupSendOps sends to a random group from one of its sender members.
func groupSendOps(api msgAPI, s *groupSet, concurrency, bodyBytes int, runID string, t *tracker) []bench.Op {
	ops := make([]bench.Op, concurrency)
	for i := range ops {
		r, ids := newRand(i), newMsgIDs(runID, i)
		ops[i] = func(ctx context.Context) (int, error) {
			g := r.IntN(len(s.ids))
			sent := time.Now()
			_, err := api.Send(ctx, &seqdv1.SendRequest{
				Sender:       s.member(g, r.Uint64N(s.senders)),
				Conversation: &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_GROUP, Id: s.ids[g]},
				ClientMsgId:  ids.next(),
				Body:         makeBody(r, bodyBytes, sent),
			})
			if err == nil {
				t.acked(sent.UnixNano())
			}
			return 1, err
		}
	}
	return ops
}

// tracker counts, for every message, the subscribed members that have it,
// and times the last one.
type tracker struct {
	expect int // subscribed members per group
	seed   maphash.Seed
	shards [32]trackShard

	mu    sync.Mutex
	acks  []int64    // send times of acknowledged messages
	dones [][2]int64 // (send time, last delivery time) of complete messages

	resubscribes, streamErrs, fetchErrs atomic.Uint64
	lastErr                             atomic.Value // string
}

type trackShard struct {
	mu      sync.Mutex
	pending map[string]*pendingMsg
	done    map[string]struct{}
	dups    uint64
}

type pendingMsg struct {
	left int
	sent int64
}

func newTracker(expect int) *tracker {
	t := &tracker{expect: expect, seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].pending = map[string]*pendingMsg{}
		t.shards[i].done = map[string]struct{}{}
	}
	return t
}

func (t *tracker) acked(sent int64) {
	t.mu.Lock()
	t.acks = append(t.acks, sent)
	t.mu.Unlock()
}

// deliver records that one subscribed member has message id, sent at sent.
func (t *tracker) deliver(id string, sent, now int64) {
	sh := &t.shards[maphash.String(t.seed, id)%uint64(len(t.shards))]
	sh.mu.Lock()
	if _, ok := sh.done[id]; ok {
		sh.dups++
		sh.mu.Unlock()
		return
	}
	p := sh.pending[id]
	if p == nil {
		p = &pendingMsg{left: t.expect, sent: sent}
		sh.pending[id] = p
	}
	p.left--
	complete := p.left == 0
	if complete {
		delete(sh.pending, id)
		sh.done[id] = struct{}{}
	}
	sh.mu.Unlock()
	if complete {
		t.mu.Lock()
		t.dones = append(t.dones, [2]int64{sent, now})
		t.mu.Unlock()
	}
}

func (t *tracker) fail(counter *atomic.Uint64, err error) {
	counter.Add(1)
	t.lastErr.Store(err.Error())
}

// window counts the acknowledged and the complete messages sent in [from, to).
func (t *tracker) window(from, to int64) (acked, complete uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in := func(x int64) bool { return x >= from && x < to }
	for _, a := range t.acks {
		if in(a) {
			acked++
		}
	}
	for _, d := range t.dones {
		if in(d[0]) {
			complete++
		}
	}
	return acked, complete
}

// report summarises the messages sent in [from, to).
func (t *tracker) report(from, to int64, elapsed time.Duration) deliveryReport {
	acked, complete := t.window(from, to)
	h := bench.NewHistogram()
	t.mu.Lock()
	for _, d := range t.dones {
		if d[0] >= from && d[0] < to {
			h.Record(time.Duration(d[1] - d[0]))
		}
	}
	t.mu.Unlock()
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	r := deliveryReport{
		Messages: acked, Complete: complete,
		P50us: us(h.Quantile(0.5)), P99us: us(h.Quantile(0.99)), P999us: us(h.Quantile(0.999)), MaxUs: us(h.Max()),
		Resubscribes: t.resubscribes.Load(), StreamErrors: t.streamErrs.Load(), FetchErrors: t.fetchErrs.Load(),
	}
	if complete < acked {
		r.Incomplete = acked - complete
	}
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		r.Duplicates += sh.dups
		sh.mu.Unlock()
	}
	if s := elapsed.Seconds(); s > 0 {
		r.MemberDeliveriesPerSec = float64(complete) * float64(t.expect) / s
	}
	if e, ok := t.lastErr.Load().(string); ok {
		r.LastError = e
	}
	return r
}

// subscriber is one subscribed member: it keeps a Subscribe stream open
// (reopening it from its checkpoint if it breaks) and reports every
// message of a tracked group; with read fanout it fetches the timeline
// with SyncGroup whenever a hint arrives.
type subscriber struct {
	api   msgAPI
	user  uint64
	group uint64
	read  bool
	t     *tracker
	ready func()
}

const subscribeHeartbeat = time.Second

func (s *subscriber) run(ctx context.Context) {
	var cp, gcp uint64
	readyOnce := sync.OnceFunc(s.ready)
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			s.t.resubscribes.Add(1)
			sleep(ctx, 100*time.Millisecond)
		}
		st, err := s.api.Subscribe(ctx, &seqdv1.SubscribeRequest{User: s.user, AfterSeq: cp, HeartbeatMs: uint32(subscribeHeartbeat.Milliseconds())})
		if err != nil {
			if ctx.Err() == nil {
				s.t.fail(&s.t.streamErrs, err)
			}
			continue
		}
		for {
			resp, err := st.Recv()
			if err != nil {
				if ctx.Err() == nil {
					s.t.fail(&s.t.streamErrs, err)
				}
				break
			}
			readyOnce()
			now := time.Now().UnixNano()
			hinted := false
			for _, e := range resp.Events {
				if !eventIsGroup(e) || e.Conversation.Id != s.group {
					continue
				}
				switch e.Kind {
				case seqdv1.EventKind_EVENT_KIND_MESSAGE:
					if sent, ok := sentAt(e.Body); ok {
						s.t.deliver(e.MessageId, sent, now)
					}
				case seqdv1.EventKind_EVENT_KIND_GROUP_HINT:
					hinted = hinted || e.GroupSeq > gcp
				}
			}
			if hinted {
				gcp = s.fetch(ctx, gcp)
			}
			cp = max(cp, resp.Checkpoint)
		}
	}
}

// fetch reads the group timeline after gcp and reports every message.
func (s *subscriber) fetch(ctx context.Context, gcp uint64) uint64 {
	for ctx.Err() == nil {
		resp, err := s.api.SyncGroup(ctx, &seqdv1.SyncGroupRequest{User: s.user, GroupId: s.group, AfterGseq: gcp, Limit: 1000})
		if err != nil {
			if ctx.Err() == nil {
				s.t.fail(&s.t.fetchErrs, err)
			}
			return gcp
		}
		now := time.Now().UnixNano()
		for _, e := range resp.Events {
			if e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE {
				if sent, ok := sentAt(e.Body); ok {
					s.t.deliver(e.MessageId, sent, now)
				}
			}
		}
		gcp = max(gcp, resp.NextCheckpoint)
		if !resp.HasMore {
			break
		}
	}
	return gcp
}

func runGroupSend(ctx context.Context, mc *msgConn, pop population, f sendFlags, progress *bench.Progress, rep *sendReport) error {
	setup := time.Now()
	gs, err := createGroups(ctx, mc.api, pop, f.group, progress)
	if err != nil {
		return err
	}
	gr := &groupReport{
		Groups: len(gs.ids), Members: gs.size, Fanout: "write", SendersPerGroup: gs.senders,
		SubscribersPerGrp: int64(gs.subs), Subscribers: int64(gs.subs) * int64(len(gs.ids)),
	}
	if gs.readFanout {
		gr.Fanout = "read"
		gr.What = fmt.Sprintf("from just before Send to the moment the last of the %d subscribed members of the group had fetched the message with SyncGroup, after the GROUP_HINT event on its Subscribe stream (hints come at most once per hint window, 500 ms by default)", gs.subs)
	} else {
		gr.What = fmt.Sprintf("from just before Send to the moment the last of the %d subscribed members of the group received the message event on its Subscribe stream", gs.subs)
	}
	if rest := gs.size - gs.senders - gs.subs; rest > 0 {
		written := "every message is still appended to their inboxes"
		if gs.readFanout {
			written = "their inboxes still get the hints"
		}
		gr.What += fmt.Sprintf("; %d other members are not subscribed (%s)", rest, written)
	}
	rep.Group = gr

	t := newTracker(int(gs.subs))
	subCtx, stopSubs := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stopSubs()
		wg.Wait()
	}()
	if gs.subs > 0 {
		progress.Printf("seqbench: opening %d Subscribe streams\n", gr.Subscribers)
		var ready sync.WaitGroup
		for g := range gs.ids {
			for j := gs.senders; j < gs.senders+gs.subs; j++ {
				ready.Add(1)
				sub := &subscriber{api: mc.api, user: gs.member(g, j), group: gs.ids[g], read: gs.readFanout, t: t, ready: ready.Done}
				wg.Add(1)
				go func() {
					defer wg.Done()
					sub.run(subCtx)
				}()
			}
		}
		if err := waitGroup(ctx, &ready, 60*time.Second); err != nil {
			return fmt.Errorf("subscribers not ready: %w (stream errors %d, last: %v)", err, t.streamErrs.Load(), t.lastErr.Load())
		}
	}
	gr.SetupS = time.Since(setup).Seconds()

	mode := "group-write-fanout"
	copies := int(gs.size)
	if gs.readFanout {
		mode, copies = "group-read-fanout", 2 // the timeline entry and the sender's copy
	}
	cfg := bench.Config{Label: "send " + mode, Duration: f.duration, Warmup: f.warmup, Rate: f.rate, Progress: progress, Unit: "msg"}
	var watch *stageWatch
	cfg.BeforeMeasure = func() { watch = watchStages(f.stages, progress) }
	st, err := bench.Run(ctx, cfg, groupSendOps(mc.api, gs, f.concurrency, f.bodyBytes, newRunID(), t))
	if err != nil {
		return err
	}
	rep.sendResult = newSendResult(mode, mc.via, st, f.concurrency, pop.n, f.bodyBytes, copies, f.rate)
	rep.Stages = watch.done()
	from, to := st.Start.UnixNano(), st.Start.Add(st.Elapsed).UnixNano()
	if gs.subs > 0 && !st.Interrupted {
		// Wait for the last deliveries of the messages sent in the window.
		progress.Printf("seqbench: waiting up to %v for the last deliveries\n", f.group.drain)
		deadline := time.Now().Add(f.group.drain)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if acked, done := t.window(from, to); done >= acked {
				break
			}
			sleep(ctx, 20*time.Millisecond)
		}
	}
	gr.Delivery = t.report(from, to, st.Elapsed)
	return nil
}

// waitGroup waits for wg, ctx or the timeout.
func waitGroup(ctx context.Context, wg *sync.WaitGroup, timeout time.Duration) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(timeout):
		return errors.New("timed out")
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func printGroup(w io.Writer, g *groupReport) {
	d := g.Delivery
	fmt.Fprintf(w, "groups       %d × %d members, %s fanout, %d senders and %d subscribed members per group (%d streams)\n",
		g.Groups, g.Members, g.Fanout, g.SendersPerGroup, g.SubscribersPerGrp, g.Subscribers)
	if g.SubscribersPerGrp == 0 {
		fmt.Fprintln(w, "delivery     not timed (no subscribers)")
		return
	}
	fmt.Fprintf(w, "to last member µs  p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", d.P50us, d.P99us, d.P999us, d.MaxUs)
	fmt.Fprintf(w, "             %d of %d messages sent in the window reached every subscribed member (%d incomplete, %d duplicate deliveries); %s member deliveries/s\n",
		d.Complete, d.Messages, d.Incomplete, d.Duplicates, bench.FormatCount(d.MemberDeliveriesPerSec))
	if d.Resubscribes+d.StreamErrors+d.FetchErrors > 0 {
		fmt.Fprintf(w, "             %d resubscribes, %d stream errors, %d fetch errors; last: %s\n", d.Resubscribes, d.StreamErrors, d.FetchErrors, d.LastError)
	}
	fmt.Fprintf(w, "measured     %s\n", g.What)
	fmt.Fprintf(w, "setup        %.1fs (groups and streams)\n", g.SetupS)
}
