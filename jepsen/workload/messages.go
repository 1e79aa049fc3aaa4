package workload

import (
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/seqd/seqd/arbiter"
	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/jepsen/checker"
	"github.com/seqd/seqd/jepsen/cluster"
	"github.com/seqd/seqd/jepsen/nemesis"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

// MessagesOptions shape the messages workload.
type MessagesOptions struct {
	// Users take part in DIRECT conversations; the first GroupSize of them
	// also form a write-fanout group, and all of them a read-fanout group.
	Users     int `json:"users"`
	GroupSize int `json:"group_size"`
	// Workers per kind.
	SendWorkers  int `json:"send_workers"`
	GroupWorkers int `json:"group_workers"`
	Subscribers  int `json:"subscribers"`
	Readers      int `json:"readers"`
	// OpTimeout bounds one attempt; Attempts bounds the retries of one
	// logical send (same client_msg_id) before it is given up.
	OpTimeout time.Duration `json:"op_timeout_ns"`
	Attempts  int           `json:"attempts"`
	// FirstUser keeps message users' allocator keys away from the alloc
	// workload's keys.
	FirstUser uint64 `json:"first_user"`
}

// DefaultMessagesOptions is a mix where every user sends and receives
// often, retries happen under faults, and the final reads stay small.
var DefaultMessagesOptions = MessagesOptions{
	Users: 12, GroupSize: 5, SendWorkers: 6, GroupWorkers: 2, Subscribers: 4, Readers: 1,
	OpTimeout: 3 * time.Second, Attempts: 10, FirstUser: 50_000_000_000,
}

// Messages drives the message store: 1:1 and group sends with unique
// bodies (retried with the same client_msg_id when an attempt's outcome is
// unknown), Subscribe streams that reconnect from their checkpoints, and
// read markers; after the final heal it reads every inbox, unread count
// and the group timeline, at the leader and at each replica. It checks G2
// (every acknowledged send present exactly once in each intended inbox,
// no retry written twice) and G3 (inboxes strictly increasing, no stream
// skipped or repeated an event, unread counts agree with the inbox).
type Messages struct {
	opt   MessagesOptions
	env   *Env
	users []uint64
	// shardOf is each user's store shard, and groupShard the one holding
	// the groups (the shard of the highest sections).
	shardOf    map[uint64]string
	groupShard string
	wg         uint64 // write-fanout group
	rg         uint64 // read-fanout group

	client *router.Client
	msgs   *router.Messages
	// readers is the readers' own router, as a device reads through
	// another gateway than the one its contacts send through: it learns
	// of a new store leader on its own, so a read can reach a leader
	// deposed after writes went elsewhere (reads-see-acked).
	readers     *router.Client
	readersMsgs *router.Messages

	mu   sync.Mutex
	sent []checker.Sent
	subs []checker.Subscription
	// streamedAt is the sent_at_ms of each message body a stream
	// delivered (under retention, what dates a send no read holds).
	streamedAt map[string]int64
	samples    []Sample
	reads      uint64
	syncs      []checker.Read    // the readers' reads of whole inboxes (without their bodies)
	stale      []checker.Anomaly // what reads-see-acked found in them

	// Final reads: at the leader, and at each replica.
	inboxes   map[uint64][]*seqdv1.Event
	timelines map[uint64][]*seqdv1.Event
	// groupHistory is the group timeline as GroupHistory pages it,
	// newest first.
	groupHistory []*seqdv1.Event
	unread       map[uint64]checker.UnreadView
	replicas     map[string]*replicaView
	finalErrs    []string
	finalRan     bool // Final ran (not on an interrupted run)
	// retained is, under retention, what was left of the run right after
	// it (the final reads above come after everything it sent expired);
	// nil without retention.
	retained *retainedView
	// undelivered is why the final reads gave up waiting for deliveries
	// between store shards ("" if they did not).
	undelivered string

	ok, failed atomic.Uint64

	// Subscribers outlive Run: Final lets them catch up with the final
	// inboxes, then stops them (see drain).
	subCancel context.CancelFunc
	subWG     sync.WaitGroup
	subCP     map[uint64]*atomic.Uint64 // newest seq each subscribed user's stream delivered
	subTarget map[uint64]uint64         // set by drain before it stops the streams
	stalled   []checker.Anomaly
	refused   []checker.Anomaly // read markers refused for a message the reader had received

	// Mixed builds (the upgrade nemesis): read markers refused because a
	// replica still runs the older store format, read markers accepted,
	// and what the check after the upgrade found.
	formatRefused, marksOK uint64
	upgradeChecked         bool
	upgradeErrs            []checker.Anomaly
}

// retainedView is what the leaders held right after the run, under
// retention: the checks of what was sent and streamed use it, with the
// bounds below which retention may have removed an event.
type retainedView struct {
	inboxes, timelines map[uint64][]*seqdv1.Event
	// undelivered is why those reads gave up waiting for deliveries
	// between store shards ("" if they did not).
	undelivered string
	// expiry: what retention may have removed before those reads.
	expiry checker.Expiry
	// dueMs: the final reads, made once everything the run sent was due,
	// must hold no event sent before it.
	dueMs int64
	// interrupted: the run was interrupted before those final reads.
	interrupted bool
}

// replicaView is what one store replica answered on its own: the
// inboxes of its shard's users, and the group timeline if its shard holds
// the groups.
type replicaView struct {
	users    []uint64
	inboxes  map[uint64][]*seqdv1.Event
	timeline []*seqdv1.Event
	groups   bool // the timeline was read
	unread   map[uint64]checker.UnreadView
	err      string
}

// NewMessages returns the messages workload; zero fields take the defaults.
func NewMessages(opt MessagesOptions) *Messages {
	d := DefaultMessagesOptions
	opt.Users = cmp.Or(opt.Users, d.Users)
	if opt.GroupSize == 0 {
		opt.GroupSize = min(d.GroupSize, opt.Users)
	}
	if opt.SendWorkers+opt.GroupWorkers+opt.Subscribers+opt.Readers == 0 {
		opt.SendWorkers, opt.GroupWorkers, opt.Subscribers, opt.Readers = d.SendWorkers, d.GroupWorkers, d.Subscribers, d.Readers
	}
	opt.OpTimeout = cmp.Or(opt.OpTimeout, d.OpTimeout)
	opt.Attempts = cmp.Or(opt.Attempts, d.Attempts)
	opt.FirstUser = cmp.Or(opt.FirstUser, d.FirstUser)
	return &Messages{opt: opt}
}

// Name implements Workload.
func (m *Messages) Name() string { return "messages" }

// sectionSize is the cluster's section size: the harness gives the
// arbiters none, so they take the default.
const sectionSize = arbiter.DefaultSectionSize

// userKey places the i-th of the workload's users on a cluster of shards
// store shards cut by MessagesShardSplits: in turn on each shard, so that
// most direct conversations and both groups span shards.
func userKey(first uint64, shards, i int) uint64 {
	return first + uint64(i%shards)*sectionSize + uint64(i/shards)
}

// MessagesShardSplits returns the section boundaries (--shard-splits)
// between shards store shards for the messages workload's users: shard k
// (from 0) owns the section of the first user's key plus k, the first
// shard everything below as well, and the last everything above, the
// groups included.
func MessagesShardSplits(shards int) []uint64 {
	var out []uint64
	for k := 1; k < shards; k++ {
		out = append(out, DefaultMessagesOptions.FirstUser/sectionSize+uint64(k))
	}
	return out
}

func direct(id uint64) *seqdv1.Conversation {
	return &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT, Id: id}
}

func groupConv(id uint64) *seqdv1.Conversation {
	return &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_GROUP, Id: id}
}

// convID derives one conversation id from its participants, so both sides
// of a pair share it.
func convID(users []uint64) uint64 {
	s := append([]uint64(nil), users...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	h := fnv.New64a()
	for _, u := range s {
		fmt.Fprintf(h, "%d,", u)
	}
	return h.Sum64()>>1 | 1
}

// Start implements Workload: it connects and creates the two groups.
func (m *Messages) Start(ctx context.Context, env *Env) error {
	if len(env.Cluster.Stores()) == 0 {
		return errors.New("messages workload: the cluster has no message store")
	}
	m.env = env
	shards := env.Cluster.Shards()
	if len(shards) > 1 && m.opt.FirstUser != DefaultMessagesOptions.FirstUser {
		return fmt.Errorf("messages workload: with %d store shards the first user must be %d, where MessagesShardSplits cuts the sections", len(shards), DefaultMessagesOptions.FirstUser)
	}
	m.shardOf, m.groupShard = map[uint64]string{}, shards[len(shards)-1]
	for i := 0; i < m.opt.Users; i++ {
		u := userKey(m.opt.FirstUser, len(shards), i)
		m.users = append(m.users, u)
		m.shardOf[u] = shards[i%len(shards)]
	}
	seed := env.Seed
	m.wg, m.rg = 1_000_000+seed%1000*2, 1_000_001+seed%1000*2
	connect := func() (*router.Client, error) {
		c, err := router.New(ctx, router.Config{Addrs: env.Cluster.ArbiterAddrs(), Timeout: m.opt.OpTimeout, Logger: slog.New(slog.DiscardHandler),
			DialOptions: []grpc.DialOption{grpc.WithNoProxy()}})
		if err != nil {
			return nil, fmt.Errorf("messages workload: %w", err)
		}
		return c, nil
	}
	c, err := connect()
	if err != nil {
		return err
	}
	m.client, m.msgs = c, c.Messages()
	if c, err = connect(); err != nil {
		return err
	}
	m.readers, m.readersMsgs = c, c.Messages()
	create := func(req *seqdv1.CreateGroupRequest) error {
		var err error
		for attempt := 0; attempt < 20; attempt++ {
			cctx, cancel := context.WithTimeout(ctx, m.opt.OpTimeout)
			_, err = m.msgs.CreateGroup(cctx, req)
			cancel()
			if err == nil {
				return nil
			}
			time.Sleep(200 * time.Millisecond)
		}
		return fmt.Errorf("messages workload: create group %d: %w", req.GroupId, err)
	}
	if err := create(&seqdv1.CreateGroupRequest{GroupId: m.wg, Owner: m.users[0], Members: m.users[1:m.opt.GroupSize]}); err != nil {
		return err
	}
	return create(&seqdv1.CreateGroupRequest{GroupId: m.rg, Owner: m.users[0], Members: m.users[1:], ReadFanout: true})
}

// Run implements Workload.
func (m *Messages) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	next := 0
	start := func(n int, f func(ctx context.Context, id int, rng *rand.Rand)) {
		for i := 0; i < n; i++ {
			id := next
			next++
			wg.Add(1)
			go func() {
				defer wg.Done()
				f(ctx, id, rand.New(rand.NewPCG(m.env.Seed, uint64(id)+1)))
			}()
		}
	}
	start(m.opt.SendWorkers, m.directSender)
	start(m.opt.GroupWorkers, m.groupSender)
	start(m.opt.Readers, m.reader)
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.mu.Lock()
	m.subCancel, m.subCP, m.subTarget = cancel, map[uint64]*atomic.Uint64{}, map[uint64]uint64{}
	for i := 0; i < m.opt.Subscribers && i < len(m.users); i++ {
		u, id := m.users[i], next
		next++
		m.subCP[u] = new(atomic.Uint64)
		m.subWG.Add(1)
		go func() {
			defer m.subWG.Done()
			m.subscriber(sctx, id, u)
		}()
	}
	m.mu.Unlock()
	wg.Wait()
	return nil
}

// drain lets every subscriber catch up with its user's final inbox (the
// newest seq read by Final), then stops the streams: each stopped stream
// must have delivered everything up to that seq, so a stream that quietly
// stopped delivering while it kept sending heartbeats shows.
func (m *Messages) drain(ctx context.Context) {
	m.mu.Lock()
	cancel := m.subCancel
	m.subCancel = nil
	targets := map[uint64]uint64{}
	for u := range m.subCP {
		if evs := m.inboxes[u]; len(evs) > 0 {
			targets[u] = evs[len(evs)-1].Seq
		}
		m.subTarget[u] = targets[u]
	}
	m.mu.Unlock()
	if cancel == nil {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		behind := 0
		for u, t := range targets {
			if m.subCP[u].Load() < t {
				behind++
			}
		}
		if behind == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	m.subWG.Wait()
	for _, u := range slices.Sorted(maps.Keys(targets)) {
		if got := m.subCP[u].Load(); got < targets[u] {
			m.stalled = append(m.stalled, checker.Anomaly{Kind: "subscribe", Key: u, Msg: fmt.Sprintf(
				"user %d's subscriber delivered up to seq %d but the healed inbox holds %d; it did not catch up within 30 s", u, got, targets[u])})
		}
	}
}

// send runs one logical send: attempts with the same client_msg_id until
// one is acknowledged, or the attempts or ctx run out.
func (m *Messages) send(ctx context.Context, s checker.Sent, req *seqdv1.SendRequest) {
	s.First = m.env.Now()
	for attempt := 0; attempt < m.opt.Attempts && ctx.Err() == nil; attempt++ {
		begin := m.env.Now()
		actx, cancel := context.WithTimeout(ctx, m.opt.OpTimeout)
		resp, err := m.msgs.Send(actx, req)
		cancel()
		end := m.env.Now()
		s.Last = end
		m.mu.Lock()
		m.samples = append(m.samples, Sample{Start: begin, End: end, OK: err == nil})
		m.mu.Unlock()
		if err == nil {
			m.ok.Add(1)
			s.Acked, s.ID, s.At = true, resp.MessageId, end
			break
		}
		m.failed.Add(1)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(50*(attempt+1)) * time.Millisecond):
		}
	}
	m.mu.Lock()
	m.sent = append(m.sent, s)
	m.mu.Unlock()
}

func (m *Messages) directSender(ctx context.Context, id int, rng *rand.Rand) {
	for n := 0; ctx.Err() == nil; n++ {
		perm := rng.Perm(len(m.users))
		k := 1 + rng.IntN(2)
		sender := m.users[perm[0]]
		var rcpts []uint64
		for _, i := range perm[1 : 1+k] {
			rcpts = append(rcpts, m.users[i])
		}
		body := fmt.Sprintf("d/%d/%d/%d", m.env.Seed, id, n)
		req := &seqdv1.SendRequest{Sender: sender, Recipients: rcpts, Conversation: direct(convID(append([]uint64{sender}, rcpts...))),
			ClientMsgId: body, Body: []byte(body)}
		m.send(ctx, checker.Sent{Body: body, Sender: sender, Inboxes: append([]uint64{sender}, rcpts...)}, req)
	}
}

func (m *Messages) groupSender(ctx context.Context, id int, rng *rand.Rand) {
	for n := 0; ctx.Err() == nil; n++ {
		body := fmt.Sprintf("g/%d/%d/%d", m.env.Seed, id, n)
		if rng.IntN(2) == 0 {
			members := m.users[:m.opt.GroupSize]
			sender := members[rng.IntN(len(members))]
			m.send(ctx, checker.Sent{Body: body, Sender: sender, Inboxes: members},
				&seqdv1.SendRequest{Sender: sender, Conversation: groupConv(m.wg), ClientMsgId: body, Body: []byte(body)})
			continue
		}
		sender := m.users[rng.IntN(len(m.users))]
		m.send(ctx, checker.Sent{Body: body, Sender: sender, Inboxes: []uint64{sender}, ReadGroup: m.rg},
			&seqdv1.SendRequest{Sender: sender, Conversation: groupConv(m.rg), ClientMsgId: body, Body: []byte(body)})
	}
}

// subscriber keeps one user's Subscribe stream open, reconnecting from its
// checkpoint whenever it breaks, and records what each connection delivered.
func (m *Messages) subscriber(ctx context.Context, id int, user uint64) {
	cp := uint64(0)
	for ctx.Err() == nil {
		sub := checker.Subscription{User: user, After: cp, Client: id}
		streamedAt := map[string]int64{}
		sctx, cancel := context.WithCancel(ctx)
		st, err := m.msgs.Subscribe(sctx, &seqdv1.SubscribeRequest{User: user, AfterSeq: cp, HeartbeatMs: 500})
		if err == nil {
			for {
				// A stream silent for a few heartbeats is treated as broken.
				recv := make(chan *seqdv1.SubscribeResponse, 1)
				errc := make(chan error, 1)
				go func() {
					r, err := st.Recv()
					if err != nil {
						errc <- err
						return
					}
					recv <- r
				}()
				var r *seqdv1.SubscribeResponse
				select {
				case r = <-recv:
				case <-errc:
				case <-time.After(3 * time.Second):
				}
				if r == nil {
					break
				}
				for _, e := range r.Events {
					sub.Seqs = append(sub.Seqs, e.Seq)
					sub.Keys = append(sub.Keys, checker.EventKey(e))
					sub.SentAt = append(sub.SentAt, e.SentAtMs)
					if e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE && e.SentAtMs > 0 {
						streamedAt[string(e.Body)] = e.SentAtMs
					}
					cp = e.Seq
				}
				m.subCP[user].Store(cp)
			}
		}
		cancel()
		m.mu.Lock()
		if ctx.Err() != nil {
			sub.Stopped, sub.Target = true, m.subTarget[user]
		}
		m.subs = append(m.subs, sub)
		if m.streamedAt == nil {
			m.streamedAt = map[string]int64{}
		}
		maps.Copy(m.streamedAt, streamedAt)
		m.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// reader marks read, for a random user, either its newest incoming direct
// conversation up to that message or (one time in three) the read-fanout
// group up to the newest hint it got, exercising Sync and read markers
// under faults.
func (m *Messages) reader(ctx context.Context, id int, rng *rand.Rand) {
	for ctx.Err() == nil {
		u := m.users[rng.IntN(len(m.users))]
		group := rng.IntN(3) == 0
		rctx, cancel := context.WithTimeout(ctx, m.opt.OpTimeout)
		start := m.env.Now()
		evs, stale, err := m.syncAll(rctx, m.readersMsgs, u)
		if err == nil {
			r := checker.Read{User: u, Start: start, End: m.env.Now(), Bodies: map[string]bool{}, MaybeStale: stale}
			for _, e := range evs {
				if e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE {
					r.Bodies[string(e.Body)] = true
				}
			}
			m.mu.Lock()
			// Checked now, against the sends acknowledged so far (any
			// acknowledged before the read began is among them), so the
			// bodies need not be kept.
			m.stale = append(m.stale, checker.StaleReads(m.sent, []checker.Read{r}, m.local, m.mayHaveExpired)...)
			r.Bodies = nil
			m.syncs = append(m.syncs, r)
			m.mu.Unlock()
			for i := len(evs) - 1; i >= 0; i-- {
				e := evs[i]
				var upTo uint64
				switch {
				case group && e.Kind == seqdv1.EventKind_EVENT_KIND_GROUP_HINT && e.Conversation.GetId() == m.rg:
					upTo = e.GroupSeq
				case !group && incomingDirect(e):
					upTo = e.Seq
				default:
					continue
				}
				_, err = m.readersMsgs.MarkRead(rctx, &seqdv1.MarkReadRequest{User: u, Conversation: e.Conversation, UpToSeq: upTo})
				switch status.Code(err) {
				case codes.OK:
					m.mu.Lock()
					m.marksOK++
					m.mu.Unlock()
				case codes.FailedPrecondition:
					if m.upgrading() && strings.Contains(err.Error(), "needs store format") {
						// The shard runs mixed builds: the leader holds
						// back ops of its newer format (Final checks that
						// it stops once every replica is upgraded).
						m.mu.Lock()
						m.formatRefused++
						m.mu.Unlock()
						break
					}
					fallthrough
				case codes.NotFound, codes.PermissionDenied, codes.InvalidArgument:
					// A definite refusal of a marker for what the user
					// received: only "retry" answers are fair.
					m.mu.Lock()
					m.refused = append(m.refused, checker.Anomaly{Kind: "mark-read", Key: u, Msg: fmt.Sprintf(
						"user %d marking %s read up to %d, which it had received, was refused: %v", u, checker.ConvName(e.Conversation), upTo, err)})
					m.mu.Unlock()
				}
				break
			}
		}
		cancel()
		m.mu.Lock()
		m.reads++
		m.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(100+rng.IntN(400)) * time.Millisecond):
		}
	}
}

// syncAll reads a user's whole inbox through msgs (at the leader),
// and says whether a page came from a replica without its leader
// (maybe_stale).
func (m *Messages) syncAll(ctx context.Context, msgs *router.Messages, u uint64) (_ []*seqdv1.Event, stale bool, _ error) {
	var out []*seqdv1.Event
	cp := uint64(0)
	for {
		r, err := msgs.Sync(ctx, &seqdv1.SyncRequest{User: u, AfterSeq: cp, Limit: 1000})
		if err != nil {
			return nil, false, err
		}
		out = append(out, r.Events...)
		stale = stale || r.MaybeStale
		cp = r.NextCheckpoint
		if !r.HasMore {
			return out, stale, nil
		}
	}
}

// Final implements Workload: every inbox, unread count and the group
// timeline, at the leader through the router, then at each replica alone.
// The leader may still append (hint rounds for the last group messages),
// so the reads repeat until the replicas hold what the leader holds.
func (m *Messages) Final(ctx context.Context) error {
	m.mu.Lock()
	m.finalRan = true
	m.mu.Unlock()
	if m.upgrading() {
		m.markReadAfterUpgrade(ctx)
	}
	if ret := m.env.Cluster.Retention(); ret > 0 {
		m.finalUnderRetention(ctx, ret)
		return nil
	}
	m.settle(ctx, true)
	if len(m.finalErrs) == 0 {
		// Stop the streams once they hold what the inboxes hold, then
		// read again: the inboxes only grow, so the second read covers
		// everything the streams delivered.
		m.drain(ctx)
		m.settle(ctx, true)
	}
	return nil
}

// retentionSlack covers the millisecond rounding of sent_at_ms and the
// retention pass's cutoff, and the gap between the run's clock and the
// wall clock's reading: an event is taken as possibly removed from this
// long before its due time.
const retentionSlack = 100 * time.Millisecond

// finalUnderRetention makes the final reads of a run whose store removes
// events older than ret. First, at the leaders, what is left of the run:
// every acknowledged send and streamed event must be there unless it may
// have expired by then. Then, once everything the run sent is due and
// retention has had a pass and hint rounds to remove it, the usual final
// reads at the leaders and each replica: nothing sent before the due time
// may be left, and unread counts must agree with what is.
func (m *Messages) finalUnderRetention(ctx context.Context, ret time.Duration) {
	stopped := m.env.Now()
	// Like the final reads without retention, but at the leaders only
	// (the replicas read at other moments would hold other removals).
	m.settle(ctx, false)
	if len(m.finalErrs) == 0 {
		m.drain(ctx)
		m.settle(ctx, false)
	}
	if len(m.finalErrs) > 0 {
		return
	}
	m.retained = &retainedView{inboxes: m.inboxes, timelines: m.timelines, undelivered: m.undelivered,
		expiry: checker.Expiry{Before: m.env.Now() - ret + retentionSlack, BeforeMs: time.Now().Add(-ret + retentionSlack).UnixMilli()}}
	m.mu.Lock()
	m.retained.expiry.SentAt = sentAtOf(m.inboxes, m.timelines, m.streamedAt)
	m.mu.Unlock()
	// Everything the run sent is then due, and retention has had a pass
	// and the hint rounds after it.
	wait := stopped + dueAfter(ret) - m.env.Now()
	m.env.Logf("messages: waiting %v until everything the run sent is due for retention (%v)", wait.Round(time.Second), ret)
	if !nemesis.Sleep(ctx, wait) {
		m.retained.interrupted = true
		return
	}
	m.retained.dueMs = time.Now().Add(-dueAfter(ret)).UnixMilli()
	m.settle(ctx, true)
}

// dueAfter is how long after a send retention of period ret has removed
// it, and told group members so: the period, a pass (every tenth of the
// period, at most a minute apart), and 5 s for its steps, the hint rounds
// (every 500 ms) and deliveries to other shards (every 50 ms).
func dueAfter(ret time.Duration) time.Duration {
	return ret + min(ret/10, time.Minute) + 5*time.Second
}

// sentAtOf maps each message body the reads or the streams (streamed)
// saw to the sent_at_ms of a copy of it.
func sentAtOf(inboxes, timelines map[uint64][]*seqdv1.Event, streamed map[string]int64) map[string]int64 {
	out := maps.Clone(streamed)
	if out == nil {
		out = map[string]int64{}
	}
	for _, evs := range []map[uint64][]*seqdv1.Event{inboxes, timelines} {
		for _, es := range evs {
			for _, e := range es {
				if e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE && e.SentAtMs > 0 {
					out[string(e.Body)] = e.SentAtMs
				}
			}
		}
	}
	return out
}

// markReadAfterUpgrade checks, once the final heal has upgraded every
// store replica, that an op of the newer store format goes through on
// every shard: each shard's leader stops holding MarkRead back. On each
// shard it marks the newest direct message one of the shard's users
// received as read, retrying only answers that mean "retry".
func (m *Messages) markReadAfterUpgrade(ctx context.Context) {
	fail := func(format string, args ...any) {
		m.upgradeErrs = append(m.upgradeErrs, checker.Anomaly{Kind: "format-gate", Msg: fmt.Sprintf(format, args...)})
	}
	m.upgradeChecked = true
	for _, sh := range m.env.Cluster.Shards() {
		req := m.newestIncomingDirect(ctx, sh)
		if req == nil {
			fail("after the upgrade no user of store shard %s could be read with a direct message to mark read", sh)
			continue
		}
		if err := m.markReadRetrying(ctx, req); err != nil {
			fail("with every store replica on the newer build, MarkRead of user %d (shard %s) up to %d (retried for up to 30 s): %v", req.User, sh, req.UpToSeq, err)
		}
	}
}

// usersOf returns the users that live on store shard sh, in order.
func (m *Messages) usersOf(sh string) []uint64 {
	return slices.DeleteFunc(slices.Clone(m.users), func(u uint64) bool { return m.shardOf[u] != sh })
}

// newestIncomingDirect returns a marker, for the first of shard's users
// that has one, of the newest direct message they received (nil: none
// could be read or had one).
func (m *Messages) newestIncomingDirect(ctx context.Context, shard string) *seqdv1.MarkReadRequest {
	for _, u := range m.usersOf(shard) {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		evs, _, err := m.syncAll(sctx, m.msgs, u)
		cancel()
		if err != nil {
			continue
		}
		for _, e := range slices.Backward(evs) {
			if incomingDirect(e) {
				return &seqdv1.MarkReadRequest{User: u, Conversation: e.Conversation, UpToSeq: e.Seq}
			}
		}
	}
	return nil
}

// markReadRetrying sends req until it succeeds, retrying Unavailable and
// DeadlineExceeded for up to 30 s.
func (m *Messages) markReadRetrying(ctx context.Context, req *seqdv1.MarkReadRequest) error {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		mctx, cancelCall := context.WithTimeout(dctx, 5*time.Second)
		_, err := m.msgs.MarkRead(mctx, req)
		cancelCall()
		if err == nil {
			return nil
		}
		if c := status.Code(err); (c != codes.Unavailable && c != codes.DeadlineExceeded) || !nemesis.Sleep(dctx, time.Second) {
			return err
		}
	}
}

// incomingDirect reports whether e is a message the user received in a
// direct conversation: what the reader marks read.
func incomingDirect(e *seqdv1.Event) bool {
	return e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE && !e.Outgoing &&
		e.Conversation.GetType() == seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT
}

// settle reads at the leader and, with replicas, at each replica until
// the replicas hold what the leader holds and, with several store shards,
// no delivery between them was pending or made while they read (or it
// gives up; a delivery still pending then is noted in undelivered).
func (m *Messages) settle(ctx context.Context, replicas bool) {
	multi := len(m.env.Cluster.Shards()) > 1
	for attempt := 0; ; attempt++ {
		m.finalErrs, m.undelivered = nil, ""
		var before outboxState
		if multi {
			before = m.outboxes(ctx)
		}
		m.readLeader(ctx)
		m.replicas = map[string]*replicaView{}
		settled := len(m.finalErrs) == 0
		for _, n := range m.env.Cluster.Stores() {
			if !replicas {
				break
			}
			v := m.readReplica(ctx, n)
			m.replicas[n.ID] = v
			settled = settled && v.err == "" && v.agrees(m.inboxes, m.timelines[m.rg])
		}
		pending := ""
		if multi {
			after := m.outboxes(ctx)
			pending = cmp.Or(before.pending, after.pending, before.quietUntil(after))
		}
		if settled && pending == "" {
			return
		}
		if attempt == 19 || !nemesis.Sleep(ctx, 500*time.Millisecond) {
			m.undelivered = pending
			return
		}
	}
}

// outboxState is what a shard's replicas report of its outbox.
type outboxState struct {
	// delivered sums seqd_store_fanout_delivered_total over the running
	// replicas of every shard.
	delivered float64
	// leader and rounds are each shard's leader and the outbox rounds it
	// has finished (seqd_store_outbox_rounds_total).
	leader map[string]string
	rounds map[string]float64
	// pending says what is not drained ("" if nothing): a shard whose
	// running replicas do not show exactly one leader with an empty
	// outbox (seqd_store_outbox_items 0, the others -1).
	pending string
}

// outboxes reads every shard's outbox metrics.
func (m *Messages) outboxes(ctx context.Context) outboxState {
	st := outboxState{leader: map[string]string{}, rounds: map[string]float64{}}
	fail := func(format string, args ...any) outboxState {
		st.pending = cmp.Or(st.pending, fmt.Sprintf(format, args...))
		return st
	}
	for _, sh := range m.env.Cluster.Shards() {
		leaders := 0
		for _, n := range m.env.Cluster.ShardStores(sh) {
			if !n.Running() || n.Paused() {
				continue
			}
			d, err := n.Metric(ctx, "seqd_store_fanout_delivered_total")
			if err != nil {
				return fail("shard %s: %v", sh, err)
			}
			st.delivered += d
			items, err := n.Metric(ctx, "seqd_store_outbox_items")
			if err != nil {
				return fail("shard %s: %v", sh, err)
			}
			if items == -1 {
				continue // a follower
			}
			leaders++
			if items != 0 {
				fail("shard %s's outbox still holds %v items for other shards (seqd_store_outbox_items on %s)", sh, items, n.ID)
			}
			if st.rounds[sh], err = n.Metric(ctx, "seqd_store_outbox_rounds_total"); err != nil {
				return fail("shard %s: %v", sh, err)
			}
			st.leader[sh] = n.ID
		}
		if leaders != 1 {
			fail("shard %s's outbox: %d of its running replicas report one as its leader, want 1", sh, leaders)
		}
	}
	return st
}

// quietUntil says what happened between two readings that leaves a
// delivery possibly unread ("" if nothing): a delivery was made, a shard
// changed leaders, or a shard's leader finished no outbox round in
// between (a round stuck on a shard that does not answer keeps the gauge
// at its last value).
func (st outboxState) quietUntil(later outboxState) string {
	if later.delivered != st.delivered {
		return "deliveries between shards were still being made"
	}
	for sh, l := range st.leader {
		switch {
		case later.leader[sh] != l:
			return fmt.Sprintf("shard %s changed leaders during the final reads", sh)
		case later.rounds[sh] <= st.rounds[sh]:
			return fmt.Sprintf("shard %s's leader %s finished no outbox round during the final reads", sh, l)
		}
	}
	return ""
}

// readLeader reads every inbox, unread count and the group timeline
// through the router (at the shard leader).
func (m *Messages) readLeader(ctx context.Context) {
	m.inboxes, m.timelines, m.unread = map[uint64][]*seqdv1.Event{}, map[uint64][]*seqdv1.Event{}, map[uint64]checker.UnreadView{}
	retry := func(what string, f func(ctx context.Context) error) {
		var err error
		for attempt := 0; attempt < 30; attempt++ {
			fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = f(fctx)
			cancel()
			if err == nil {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
		m.finalErrs = append(m.finalErrs, fmt.Sprintf("%s: %v", what, err))
	}
	for _, u := range m.users {
		retry(fmt.Sprintf("sync user %d", u), func(ctx context.Context) error {
			evs, _, err := m.syncAll(ctx, m.msgs, u)
			m.inboxes[u] = evs
			return err
		})
		retry(fmt.Sprintf("unread of user %d", u), func(ctx context.Context) error {
			r, err := m.msgs.UnreadAll(ctx, u)
			if err == nil {
				m.unread[u] = unreadView(r)
			}
			return err
		})
	}
	retry("group timeline", func(ctx context.Context) error {
		var out []*seqdv1.Event
		cp := uint64(0)
		for {
			r, err := m.msgs.SyncGroup(ctx, &seqdv1.SyncGroupRequest{User: m.users[0], GroupId: m.rg, AfterGseq: cp, Limit: 1000})
			if err != nil {
				return err
			}
			out = append(out, r.Events...)
			cp = r.NextCheckpoint
			if !r.HasMore {
				m.timelines[m.rg] = out
				return nil
			}
		}
	})
	retry("group history", func(ctx context.Context) error {
		var out []*seqdv1.Event
		before := uint64(0)
		for {
			r, err := m.msgs.GroupHistory(ctx, &seqdv1.GroupHistoryRequest{User: m.users[0], GroupId: m.rg, BeforeGseq: before, Limit: 1000})
			if err != nil {
				return err
			}
			out = append(out, r.Events...)
			if r.NextBeforeGseq == 0 {
				m.groupHistory = out
				return nil
			}
			before = r.NextBeforeGseq
		}
	})
}

// historyAgrees compares the group timeline read backwards (GroupHistory)
// with the one read forwards (SyncGroup).
func historyAgrees(back, forward []*seqdv1.Event) []checker.Anomaly {
	if len(back) != len(forward) {
		return []checker.Anomaly{{Kind: "group-history", Msg: fmt.Sprintf("GroupHistory holds %d entries, SyncGroup %d", len(back), len(forward))}}
	}
	for i, e := range back {
		if f := forward[len(forward)-1-i]; !proto.Equal(e, f) {
			return []checker.Anomaly{{Kind: "group-history", Msg: fmt.Sprintf("GroupHistory's entry %d is %s where SyncGroup has %s", i, eventBrief(e), eventBrief(f))}}
		}
	}
	return nil
}

func unreadView(r *seqdv1.UnreadResponse) checker.UnreadView {
	v := checker.UnreadView{Total: r.Total, Conv: map[string]uint64{}}
	for _, c := range r.Conversations {
		v.Conv[checker.ConvName(c.Conversation)] = c.Count
	}
	return v
}

// readReplica reads the inboxes and unread counts of its shard's users,
// and the group timeline if its shard holds it, from one replica alone.
func (m *Messages) readReplica(ctx context.Context, n *cluster.Node) *replicaView {
	v := &replicaView{inboxes: map[uint64][]*seqdv1.Event{}, unread: map[uint64]checker.UnreadView{}, groups: n.Shard == m.groupShard}
	v.users = m.usersOf(n.Shard)
	cc, err := grpc.NewClient(n.GRPC, append(grpcconn.DialOptions(), grpc.WithNoProxy())...)
	if err != nil {
		v.err = err.Error()
		return v
	}
	defer cc.Close()
	c := seqdv1.NewMessagesClient(cc)
	// The same mark a follower puts on a call it forwards: answer here.
	local := metadata.AppendToOutgoingContext(ctx, "seqd-forwarded-by", "seqjepsen")
	for _, u := range v.users {
		rctx, cancel := context.WithTimeout(local, 5*time.Second)
		var evs []*seqdv1.Event
		cp := uint64(0)
		for {
			r, err := c.Sync(rctx, &seqdv1.SyncRequest{User: u, AfterSeq: cp, Limit: 1000})
			if err != nil {
				cancel()
				v.err = fmt.Sprintf("sync user %d: %v", u, err)
				return v
			}
			evs = append(evs, r.Events...)
			cp = r.NextCheckpoint
			if !r.HasMore {
				break
			}
		}
		ur, err := c.Unread(rctx, &seqdv1.UnreadRequest{User: u})
		cancel()
		if err != nil {
			v.err = fmt.Sprintf("unread of user %d: %v", u, err)
			return v
		}
		v.inboxes[u], v.unread[u] = evs, unreadView(ur)
	}
	if !v.groups {
		return v
	}
	rctx, cancel := context.WithTimeout(local, 5*time.Second)
	defer cancel()
	cp := uint64(0)
	for {
		r, err := c.SyncGroup(rctx, &seqdv1.SyncGroupRequest{User: m.users[0], GroupId: m.rg, AfterGseq: cp, Limit: 1000})
		if err != nil {
			v.err = fmt.Sprintf("group timeline: %v", err)
			return v
		}
		v.timeline = append(v.timeline, r.Events...)
		cp = r.NextCheckpoint
		if !r.HasMore {
			return v
		}
	}
}

// agrees reports whether the replica holds the same inboxes and group
// timeline as the leader (those it read).
func (v *replicaView) agrees(leader map[uint64][]*seqdv1.Event, timeline []*seqdv1.Event) bool {
	return v.diff(leader, timeline) == ""
}

// diff describes the first place the replica differs from the leader
// (its users in ascending order, then the timeline if it read it), or
// returns "".
func (v *replicaView) diff(leader map[uint64][]*seqdv1.Event, timeline []*seqdv1.Event) string {
	first := func(got, want []*seqdv1.Event) string {
		for i := 0; i < max(len(got), len(want)); i++ {
			switch {
			case i >= len(got):
				return fmt.Sprintf("lacks the leader's %s", eventBrief(want[i]))
			case i >= len(want):
				return fmt.Sprintf("has %s, which the leader lacks", eventBrief(got[i]))
			case !proto.Equal(got[i], want[i]):
				return fmt.Sprintf("has %s where the leader has %s", eventBrief(got[i]), eventBrief(want[i]))
			}
		}
		return ""
	}
	for _, u := range slices.Sorted(slices.Values(v.users)) {
		if d := first(v.inboxes[u], leader[u]); d != "" {
			return fmt.Sprintf("user %d's inbox %s", u, d)
		}
	}
	if !v.groups {
		return ""
	}
	if d := first(v.timeline, timeline); d != "" {
		return "the group timeline " + d
	}
	return ""
}

// eventBrief names an event in a few words.
func eventBrief(e *seqdv1.Event) string {
	return fmt.Sprintf("seq %d (%s %s, group count %d, body %q)", e.Seq,
		strings.ToLower(strings.TrimPrefix(e.Kind.String(), "EVENT_KIND_")), e.MessageId, e.GroupCount, e.Body)
}

// Progress implements Workload.
func (m *Messages) Progress() (ok, failed uint64) { return m.ok.Load(), m.failed.Load() }

// Counts implements Workload.
func (m *Messages) Counts() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := map[string]uint64{"send_attempts": uint64(len(m.samples)), "subscribe_connections": uint64(len(m.subs)), "sync_and_mark_read_rounds": m.reads,
		"mark_reads_accepted": m.marksOK, "inbox_reads_answered": uint64(len(m.syncs))}
	for _, r := range m.syncs {
		if r.MaybeStale {
			c["inbox_reads_maybe_stale"]++
		}
	}
	if m.upgrading() {
		c["mark_reads_held_for_newer_format"] = m.formatRefused
	}
	for _, s := range m.sent {
		if s.Acked {
			c["sends_acknowledged"]++
			if m.crossesShards(s) {
				c["sends_acknowledged_across_shards"]++
			}
		} else {
			c["sends_given_up"]++
		}
	}
	for _, s := range m.subs {
		c["events_streamed"] += uint64(len(s.Seqs))
	}
	inboxes := m.inboxes
	if r := m.retained; r != nil {
		// What retention removed shows in the reads right after the run;
		// the final reads came once everything was due.
		inboxes = r.inboxes
		for _, evs := range inboxes {
			c["retained_inbox_events"] += uint64(len(evs))
		}
		// Gone from every inbox by then (under no-lost-sends, only what
		// retention could have removed), and the sends those reads had
		// to hold.
		c["sends_gone_before_reads_after_run"] = uint64(checker.Removed(m.sent, r.inboxes, r.timelines))
		for _, s := range m.sent {
			if s.Acked && !r.expiry.MayBeGone(s) {
				c["sends_checked_in_reads_after_run"]++
			}
		}
	}
	for _, evs := range m.inboxes {
		c["final_inbox_events"] += uint64(len(evs))
	}
	for _, evs := range inboxes {
		for _, e := range evs {
			if e.Kind == seqdv1.EventKind_EVENT_KIND_READ {
				c["read_markers_"+strings.ToLower(strings.TrimPrefix(e.Conversation.GetType().String(), "CONVERSATION_TYPE_"))]++
			}
		}
	}
	return c
}

// crossesShards reports whether a send has an inbox on a shard other
// than the one that wrote it (with several store shards): the sender's
// for a direct message, the groups' for a group message (the group
// senders' bodies start with "g/"). Its copy there came through that
// shard's outbox.
func (m *Messages) crossesShards(s checker.Sent) bool {
	home := m.homeShard(s)
	for _, u := range s.Inboxes {
		if m.shardOf[u] != home {
			return true
		}
	}
	return false
}

// homeShard is the store shard that wrote a send: the sender's for a
// direct message, the groups' for a group message (the group senders'
// bodies start with "g/").
func (m *Messages) homeShard(s checker.Sent) string {
	if strings.HasPrefix(s.Body, "g/") {
		return m.groupShard
	}
	return m.shardOf[s.Sender]
}

// local says whether the shard that wrote a send holds user's inbox: the
// copy there was written with the send, not later through the outbox.
func (m *Messages) local(s checker.Sent, user uint64) bool { return m.shardOf[user] == m.homeShard(s) }

// mayHaveExpired says whether retention may have removed a send by end:
// its copies carry a send time no earlier than its first attempt began
// (a second of slack for the clocks of the harness and the replicas).
func (m *Messages) mayHaveExpired(s checker.Sent, end time.Duration) bool {
	if m.env == nil || m.env.Cluster == nil {
		return false
	}
	ret := m.env.Cluster.Retention()
	return ret > 0 && s.First+ret <= end+time.Second
}

// recoverySummary says what the recovery check holds.
const recoverySummary = "After the final heal, every final read succeeds, and no delivery between store shards is left waiting."

// Check implements Workload.
func (m *Messages) Check(ctx context.Context, opt CheckOptions) []checker.Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []checker.Result
	add := func(name, guarantee, summary string, as []checker.Anomaly) {
		out = append(out, checker.Result{Checker: name, Workload: "messages", Guarantee: guarantee, Verdict: checker.FromAnomalies(as),
			Summary: summary, Findings: checker.Findings(as)})
	}
	// final adds a check that compares the history with the final reads.
	// An interrupted run made none, and empty inboxes would show every
	// acknowledged send as lost: such a check answers UNKNOWN. The checks
	// that need only the history, or the replicas' logs, run either way.
	final := func(name, guarantee, summary string, as func() []checker.Anomaly) {
		if !m.finalRan {
			out = append(out, checker.Result{Checker: name, Workload: "messages", Guarantee: guarantee, Verdict: checker.Unknown,
				Summary: summary + " (no final reads were made: the run was interrupted)"})
			return
		}
		add(name, guarantee, summary, as())
	}
	// Under retention a failure of the final reads after everything was
	// due leaves the reads right after the run to check (late): the
	// checks of those final reads answer UNKNOWN.
	late := ""
	// Deliveries between shards the final reads (and, under retention,
	// the reads right after the run) gave up waiting for.
	waits := []string{m.undelivered}
	if m.retained != nil {
		waits = append(waits, m.retained.undelivered)
	}
	var pending []checker.Anomaly
	for _, u := range waits {
		if u != "" {
			pending = append(pending, checker.Anomaly{Kind: "unavailable", Msg: "after the final heal and the final reads' retries: " + u})
		}
	}
	switch {
	case m.finalRan && len(m.finalErrs) > 0:
		as := slices.Clone(pending)
		for _, e := range m.finalErrs {
			as = append(as, checker.Anomaly{Kind: "unavailable", Msg: "final read failed after the heal: " + e})
		}
		add("recovery", "G6", recoverySummary, as)
		if m.retained == nil {
			return out
		}
		late = " (not checked: the final reads once everything was due failed; see recovery)"
	case m.finalRan && m.retained != nil && m.retained.interrupted:
		late = " (not checked: the run was interrupted before the final reads once everything was due)"
		if len(pending) > 0 {
			add("recovery", "G6", recoverySummary, pending)
		} else {
			out = append(out, checker.Result{Checker: "recovery", Workload: "messages", Guarantee: "G6", Verdict: checker.Unknown, Summary: recoverySummary + late})
		}
	default:
		final("recovery", "G6", recoverySummary, func() []checker.Anomaly { return pending })
	}
	// afterDue adds a check of the final reads, which under retention
	// come once everything the run sent was due.
	afterDue := func(name, guarantee, summary string, as func() []checker.Anomaly) {
		if late != "" {
			out = append(out, checker.Result{Checker: name, Workload: "messages", Guarantee: guarantee, Verdict: checker.Unknown, Summary: summary + late})
			return
		}
		final(name, guarantee, summary, as)
	}
	sentAt := make(map[string]time.Duration, len(m.sent))
	for _, s := range m.sent {
		sentAt[s.Body] = s.Last
	}
	// Under retention, what was sent and streamed is checked against
	// what was left right after the run, with the bounds below which
	// retention may have removed an event.
	inboxes, timelines, r := m.inboxes, m.timelines, m.retained
	var expiry *checker.Expiry
	if r != nil {
		inboxes, timelines, expiry = r.inboxes, r.timelines, &r.expiry
	}
	lost := "Every acknowledged send is in each intended inbox (or the group timeline) exactly once."
	gaps := "Every Subscribe connection delivered exactly the final inbox's events from its checkpoint on."
	if m.retained != nil {
		lost = "Every acknowledged send is in each intended inbox (or the group timeline) exactly once, read right after the run, unless it was sent long enough before for retention to remove it."
		gaps = "Every Subscribe connection delivered exactly the inbox's events, read right after the run, from its checkpoint on, but for events retention may have removed since."
	}
	final("no-lost-sends", "G2", lost, func() []checker.Anomaly {
		return checker.LostOrDoubled(m.sent, inboxes, timelines, expiry)
	})
	final("no-doubled-retries", "G2", "No body appears twice in an inbox or the timeline, acknowledged or not: retries were deduplicated.", func() []checker.Anomaly {
		return append(checker.DoubledPayloads(inboxes, "user", sentAt), checker.DoubledPayloads(timelines, "group", sentAt)...)
	})
	final("inbox-order", "G3", "Every inbox is strictly increasing in seq.", func() []checker.Anomaly { return checker.Increasing(inboxes) })
	if r == nil {
		// Under retention the timeline can lose entries between the two
		// reads.
		final("group-history-agrees", "G3", "Paged backwards from the newest, GroupHistory holds exactly the group timeline SyncGroup reads, in reverse.",
			func() []checker.Anomaly { return historyAgrees(m.groupHistory, m.timelines[m.rg]) })
	}
	final("subscribe-gap-free", "G3", gaps, func() []checker.Anomaly {
		return append(checker.SubscriberGaps(m.subs, inboxes, expiry), m.stalled...)
	})
	if r != nil {
		afterDue("retention-complete", "G3", "Once everything the run sent was due, no inbox or timeline holds an event sent before the due time.", func() []checker.Anomaly {
			return append(checker.Unexpired(m.inboxes, "user", r.dueMs), checker.Unexpired(m.timelines, "group", r.dueMs)...)
		})
	}
	var unread, diverged []checker.Anomaly
	if m.finalRan && late == "" {
		unread = checker.UnreadAgrees(m.unread, m.inboxes, nil, "leader")
		for _, id := range slices.Sorted(maps.Keys(m.replicas)) {
			v := m.replicas[id]
			if v.err != "" {
				diverged = append(diverged, checker.Anomaly{Kind: "replica", Msg: fmt.Sprintf("replica %s could not be read: %s", id, v.err)})
				continue
			}
			unread = append(unread, checker.UnreadAgrees(v.unread, v.inboxes, nil, "replica "+id)...)
			if d := v.diff(m.inboxes, m.timelines[m.rg]); d != "" {
				diverged = append(diverged, checker.Anomaly{Kind: "replica", Msg: fmt.Sprintf("replica %s differs from the leader after the quiet period: %s", id, d)})
			}
		}
	}
	afterDue("unread-agrees", "G3", "At the leader and at each replica, unread counts per conversation and in total equal what the inbox implies.",
		func() []checker.Anomaly { return unread })
	add("reads-see-acked", "G3", "A read of an inbox through the router that began after a send was acknowledged holds it, where the send's own shard wrote the copy, unless a replica without its leader answered (maybe_stale).",
		m.stale)
	add("mark-read-accepted", "G3", "A read marker up to a message the user received is never refused for good (only retried).", m.refused)
	afterDue("replicas-agree", "G2", "After the quiet period every replica holds the leader's inboxes.", func() []checker.Anomaly { return diverged })
	add("no-halted-replica", "G6", "No store replica halted at an entry it could not apply: a leader proposes ops of a newer store format only once every replica applies it.",
		m.halts())
	if m.upgrading() {
		final("newer-format-usable", "G6", "Once every store replica runs the newer build, an op of the newer store format (MarkRead) goes through.", func() []checker.Anomaly {
			if !m.upgradeChecked && len(m.upgradeErrs) == 0 {
				m.upgradeErrs = append(m.upgradeErrs, checker.Anomaly{Kind: "format-gate", Msg: "the check after the final upgrade did not run (the run ended before its final reads)"})
			}
			return m.upgradeErrs
		})
	}
	return out
}

// upgrading reports whether the run moves the store to a newer build
// (the upgrade nemesis).
func (m *Messages) upgrading() bool { return m.env != nil && m.env.Cluster.NextBinary() != "" }

// haltMark is what a store replica logs when it halts (store.FSM.halt).
const haltMark = "store replica halted"

// halts finds store replicas that halted, in their logs: a halted replica
// upgraded and restarted resumes, so by the end its state shows nothing.
func (m *Messages) halts() []checker.Anomaly {
	var out []checker.Anomaly
	if m.env == nil {
		return nil
	}
	for _, n := range m.env.Cluster.Stores() {
		b, err := os.ReadFile(n.LogPath())
		if err != nil {
			out = append(out, checker.Anomaly{Kind: "halt", Msg: fmt.Sprintf("cannot read %s's log: %v", n.ID, err)})
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, haltMark) {
				out = append(out, checker.Anomaly{Kind: "halt", Msg: fmt.Sprintf("%s halted: %s", n.ID, line), At: m.logTime(line)})
			}
		}
	}
	return out
}

// logTime is when a node logged line (its time= field), on the run's
// clock; 0 if the line has none.
func (m *Messages) logTime(line string) time.Duration {
	_, rest, ok := strings.Cut(line, "time=")
	if !ok {
		return 0
	}
	stamp, _, _ := strings.Cut(rest, " ")
	t, err := time.Parse(time.RFC3339Nano, stamp)
	if err != nil {
		return 0
	}
	return max(t.Sub(m.env.Origin), 0)
}

// Samples implements Workload.
func (m *Messages) Samples() []Sample {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Sample(nil), m.samples...)
}

// Unavailability implements Workload: for each fault, the longest time
// without an acknowledged send that overlaps it.
func (m *Messages) Unavailability(faults []nemesis.Fault) []Gap {
	m.mu.Lock()
	var ends []time.Duration
	for _, s := range m.samples {
		if s.OK {
			ends = append(ends, s.End)
		}
	}
	m.mu.Unlock()
	sort.Slice(ends, func(i, j int) bool { return ends[i] < ends[j] })
	var out []Gap
	for i, f := range faults {
		var best Gap
		for j := 1; j < len(ends); j++ {
			from, to := ends[j-1], ends[j]
			if to < f.Start || from > f.End {
				continue
			}
			if to-from > best.To-best.From {
				best = Gap{Fault: f.Type(), FaultIdx: i, From: from, To: to}
			}
		}
		if best.To > 0 {
			out = append(out, best)
		}
	}
	return out
}

// Artifacts implements Workload: the sends, streams and final inboxes.
func (m *Messages) Artifacts(ctx context.Context, dir string, faults []nemesis.Fault, results []checker.Result) ([]Artifact, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	path := filepath.Join(dir, "messages-history.json.gz")
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	err = json.NewEncoder(zw).Encode(map[string]any{"options": m.opt, "sent": m.sent, "subscriptions": m.subs, "final_inboxes": m.inboxes,
		"final_unread": m.unread, "timelines": m.timelines, "inbox_reads": m.syncs})
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return []Artifact{{Name: "messages history", Path: filepath.Base(path), Note: "sends, Subscribe deliveries and the final inboxes (gzipped JSON)"}}, nil
}

// Close implements Workload.
func (m *Messages) Close() error {
	m.mu.Lock()
	cancel := m.subCancel
	m.subCancel = nil
	m.mu.Unlock()
	if cancel != nil {
		cancel()
		m.subWG.Wait()
	}
	var err error
	for _, c := range []*router.Client{m.client, m.readers} {
		if c != nil {
			err = errors.Join(err, c.Close())
		}
	}
	return err
}
