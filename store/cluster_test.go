package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/datadir"
	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/internal/localcluster"
	"github.com/seqd/seqd/internal/node"
	"github.com/seqd/seqd/internal/rpcerr"
	"github.com/seqd/seqd/internal/testwait"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
	"github.com/seqd/seqd/store"
)

func startCluster(t *testing.T, opts localcluster.Options) (*localcluster.Cluster, *router.Messages) {
	t.Helper()
	opts.Fast = true
	if opts.Lease == 0 {
		opts.Lease = time.Second
	}
	if opts.Shards == 0 {
		opts.Shards = 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := localcluster.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	cl, err := router.New(ctx, router.Config{Addrs: c.ArbiterAddrs()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return c, cl.Messages()
}

func direct(conv uint64) *seqdv1.Conversation {
	return &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT, Id: conv}
}

// syncAll reads user's whole inbox from checkpoint 0.
func syncAll(t *testing.T, m *router.Messages, user uint64) []*seqdv1.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := syncInbox(ctx, m, user)
	if err != nil {
		t.Fatalf("Sync(%d): %v", user, err)
	}
	return out
}

// syncInbox reads user's whole inbox from checkpoint 0, or fails.
func syncInbox(ctx context.Context, m *router.Messages, user uint64) ([]*seqdv1.Event, error) {
	var out []*seqdv1.Event
	cp := uint64(0)
	for {
		r, err := m.Sync(ctx, &seqdv1.SyncRequest{User: user, AfterSeq: cp, Limit: 1000})
		if err != nil {
			return nil, err
		}
		out = append(out, r.Events...)
		cp = r.NextCheckpoint
		if !r.HasMore {
			return out, nil
		}
	}
}

// checkInbox asserts an inbox is strictly increasing and returns how many
// times each message id appears in it.
func checkInbox(t *testing.T, user uint64, evs []*seqdv1.Event) map[string]int {
	t.Helper()
	count := map[string]int{}
	last := uint64(0)
	for _, e := range evs {
		if e.Seq <= last {
			t.Errorf("user %d: inbox not strictly increasing: %d after %d", user, e.Seq, last)
		}
		last = e.Seq
		if e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE {
			count[e.MessageId]++
		}
	}
	return count
}

type acked struct {
	sender, recipient uint64
	id                string
	at                time.Time // when it was acknowledged
}

// among returns a picker of 1:1 pairs of distinct users among 1..users.
func among(users uint64) func() (from, to uint64) {
	return func() (uint64, uint64) {
		from := 1 + rand.Uint64N(users)
		to := 1 + rand.Uint64N(users)
		if to == from {
			to = from%users + 1
		}
		return from, to
	}
}

// userRange lists the users 1..n.
func userRange(n uint64) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(i) + 1
	}
	return out
}

// sendLoad sends 1:1 messages between the pairs pick draws from several
// workers until stop, retrying each message with the same client_msg_id
// until acknowledged.
func sendLoad(m *router.Messages, pick func() (from, to uint64), workers int, stop <-chan struct{}) (*[]acked, *sync.WaitGroup, *atomic.Int64) {
	var out []acked
	var wg sync.WaitGroup
	var retries atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				from, to := pick()
				req := &seqdv1.SendRequest{Sender: from, Recipients: []uint64{to}, Conversation: direct(min(from, to)*1000 + max(from, to)),
					ClientMsgId: fmt.Sprintf("w%d-%d", w, i), Body: []byte(fmt.Sprintf("m %d %d", w, i))}
				for {
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					resp, err := m.Send(ctx, req)
					cancel()
					if err == nil {
						sentMu.Lock()
						out = append(out, acked{from, to, resp.MessageId, time.Now()})
						sentMu.Unlock()
						break
					}
					retries.Add(1)
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		}(w)
	}
	return &out, &wg, &retries
}

// checkExactlyOnce verifies every acknowledged message is in the sender's
// and the recipient's inbox exactly once, and nothing else is duplicated.
func checkExactlyOnce(t *testing.T, m *router.Messages, users []uint64, sent []acked) {
	t.Helper()
	inbox := map[uint64]map[string]int{}
	for _, u := range users {
		inbox[u] = checkInbox(t, u, syncAll(t, m, u))
		for id, n := range inbox[u] {
			if n != 1 {
				t.Errorf("user %d holds message %s %d times", u, id, n)
			}
		}
	}
	for _, a := range sent {
		if inbox[a.sender][a.id] != 1 || inbox[a.recipient][a.id] != 1 {
			t.Errorf("acknowledged message %s (%d -> %d): sender has %d copies, recipient %d", a.id, a.sender, a.recipient,
				inbox[a.sender][a.id], inbox[a.recipient][a.id])
		}
	}
}

func TestKillShardLeaderDuringSends(t *testing.T) {
	leaderGoesDuringSends(t, 6, func(c *localcluster.Cluster, leader int) { c.KillStore(0, leader) })
}

// A graceful stop of the shard leader (a rolling restart) under load
// hands leadership over before its gRPC server drains: an open Subscribe
// stream on the leader would otherwise hold the drain for its 3 s limit,
// with the leader still leading and taking no new calls, and every write
// would wait with it. Every acknowledged send is there exactly once.
func TestStopShardLeaderWithSubscriberKeepsWritesFlowing(t *testing.T) {
	var stopped time.Time
	sent := leaderGoesDuringSends(t, 4, func(c *localcluster.Cluster, leader int) {
		cc, err := grpc.NewClient(c.Store(0, leader).GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		st, err := seqdv1.NewMessagesClient(cc).Subscribe(ctx, &seqdv1.SubscribeRequest{User: 2})
		if err != nil {
			t.Fatal(err)
		}
		if err := grpcconn.Accepted(st); err != nil {
			t.Fatalf("subscribing at the leader: %v", err)
		}
		stopped = time.Now()
		if err := c.StopStore(0, leader); err != nil {
			t.Fatalf("stopping the store leader: %v", err)
		}
	})
	// The longest stretch without an acknowledged send from the stop on
	// (acknowledgements are appended in the order they came).
	last, worst := stopped, time.Duration(0)
	for _, a := range sent {
		if a.at.After(stopped) {
			worst = max(worst, a.at.Sub(last))
			last = a.at
		}
	}
	t.Logf("longest gap between acknowledged sends after the stop: %v", worst)
	if worst > 2*time.Second {
		t.Fatalf("sends stopped for %v while the leader stopped gracefully, want well under the gRPC drain limit (3 s)", worst)
	}
}

// leaderGoesDuringSends runs a send load from workers, takes the shard
// leader away with goes once sends flow, checks, with the replica back,
// that every acknowledged send is there exactly once, and returns them.
func leaderGoesDuringSends(t *testing.T, workers int, goes func(c *localcluster.Cluster, leader int)) []acked {
	t.Helper()
	c, m := startCluster(t, localcluster.Options{})
	const users = 20
	stop := make(chan struct{})
	sent, wg, retries := sendLoad(m, among(users), workers, stop)
	testwait.For(t, 10*time.Second, "sends to flow", func() bool { return countSent(sent, wg) > 100 })
	leader := c.StoreLeader(0)
	if leader < 0 {
		t.Fatal("no store leader")
	}
	goes(c, leader)
	before := countSent(sent, wg)
	testwait.For(t, 20*time.Second, "sends to resume on the new leader", func() bool { return countSent(sent, wg) > before+100 })
	close(stop)
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.RestartStore(ctx, 0, leader); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d sends acknowledged, %d retried attempts", len(*sent), retries.Load())
	checkExactlyOnce(t, m, userRange(users), *sent)
	return *sent
}

var sentMu sync.Mutex

func countSent(s *[]acked, _ *sync.WaitGroup) int {
	sentMu.Lock()
	defer sentMu.Unlock()
	return len(*s)
}

func TestRetryAfterTimeoutIsNotDuplicated(t *testing.T) {
	_, m := startCluster(t, localcluster.Options{})
	req := &seqdv1.SendRequest{Sender: 3, Recipients: []uint64{4}, Conversation: direct(34), ClientMsgId: "retry-1", Body: []byte("once")}
	// A deadline so short the client gives up, while the send may still commit.
	tiny, cancel := context.WithTimeout(context.Background(), 200*time.Microsecond)
	_, err := m.Send(tiny, req)
	cancel()
	if err == nil {
		t.Log("the tiny-deadline send happened to finish in time")
	} else if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("tiny-deadline send: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := m.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := m.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.MessageId != first.MessageId || again.SenderSeq != first.SenderSeq {
		t.Fatalf("retry got %v, want the first result %v marked duplicate", again, first)
	}
	for _, u := range []uint64{3, 4} {
		if n := checkInbox(t, u, syncAll(t, m, u))[first.MessageId]; n != 1 {
			t.Errorf("user %d holds %d copies of %s", u, n, first.MessageId)
		}
	}
}

func TestSubscriberReconnectsThroughLeaderChange(t *testing.T) {
	c, m := startCluster(t, localcluster.Options{})
	const user = 9
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sentN atomic.Int64
	wg.Add(1)
	go func() { // a steady stream of messages to user
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 10 + uint64(i%5), Recipients: []uint64{user}, Conversation: direct(99),
				ClientMsgId: fmt.Sprintf("s%d", i), Body: []byte("x")})
			cancel()
			if err == nil {
				sentN.Add(1)
			} else {
				i-- // retry the same client_msg_id
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()

	// The device: subscribe, remember the checkpoint, reconnect on any
	// error from the last checkpoint.
	var got []*seqdv1.Event
	cp := uint64(0)
	reconnects := 0
	deadline := time.Now().Add(30 * time.Second)
	killed := false
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithCancel(context.Background())
		st, err := m.Subscribe(ctx, &seqdv1.SubscribeRequest{User: user, AfterSeq: cp, HeartbeatMs: 200})
		if err != nil {
			cancel()
			time.Sleep(50 * time.Millisecond)
			continue
		}
		for {
			msg, err := st.Recv()
			if err != nil {
				break
			}
			for _, e := range msg.Events {
				if e.Seq <= cp {
					t.Fatalf("stream repeated or went back: seq %d after checkpoint %d", e.Seq, cp)
				}
				cp = e.Seq
				got = append(got, e)
			}
			if !killed && len(got) > 50 {
				// Kill the leader and the replica this stream is on, if different.
				killed = true
				c.KillStore(0, c.StoreLeader(0))
				break
			}
			if killed && len(got) > 250 {
				break
			}
		}
		cancel()
		reconnects++
		if killed && len(got) > 250 {
			break
		}
	}
	close(stop)
	wg.Wait()
	// Catch up, then compare against the final inbox.
	final := syncAll(t, m, user)
	for {
		r, err := m.Sync(context.Background(), &seqdv1.SyncRequest{User: user, AfterSeq: cp, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.Events...)
		cp = r.NextCheckpoint
		if !r.HasMore {
			break
		}
	}
	if len(got) != len(final) {
		t.Fatalf("device saw %d events, inbox holds %d (reconnects %d)", len(got), len(final), reconnects)
	}
	for i := range final {
		if got[i].Seq != final[i].Seq || got[i].MessageId != final[i].MessageId {
			t.Fatalf("event %d: device saw seq %d %s, inbox has seq %d %s", i, got[i].Seq, got[i].MessageId, final[i].Seq, final[i].MessageId)
		}
	}
	t.Logf("device saw all %d events across %d connections; %d sends acknowledged", len(got), reconnects, sentN.Load())
}

func TestCrossShardDeliveryAndRecall(t *testing.T) {
	// Shard s1 owns sections below 1000, s2 the rest: with 100,000 keys
	// per section, user 5 is on s1 and user 200,000,001 on s2.
	_, m := startCluster(t, localcluster.Options{Shards: 2})
	const a, b = uint64(5), uint64(200_000_001)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := m.Send(ctx, &seqdv1.SendRequest{Sender: a, Recipients: []uint64{b}, Conversation: direct(77), ClientMsgId: "x1", Body: []byte("across")})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Deliveries) != 1 || resp.Deliveries[0].Seq != 0 {
		t.Fatalf("deliveries %v: want one queued (seq 0) delivery to the other shard", resp.Deliveries)
	}
	var copyEv *seqdv1.Event
	testwait.For(t, 10*time.Second, "the copy on the other shard", func() bool {
		for _, e := range syncAll(t, m, b) {
			if e.MessageId == resp.MessageId && e.Kind == seqdv1.EventKind_EVENT_KIND_MESSAGE {
				copyEv = e
				return true
			}
		}
		return false
	})
	if string(copyEv.Body) != "across" || copyEv.Outgoing {
		t.Fatalf("remote copy %v", copyEv)
	}
	u, err := m.Unread(ctx, &seqdv1.UnreadRequest{User: b})
	if err != nil || u.Total != 1 {
		t.Fatalf("unread on the other shard: %v %v", u, err)
	}
	if _, err := m.Recall(ctx, &seqdv1.RecallRequest{Sender: a, MessageId: resp.MessageId}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "the recall to reach the other shard", func() bool {
		evs := syncAll(t, m, b)
		return len(evs) == 2 && evs[0].Recalled && evs[1].Kind == seqdv1.EventKind_EVENT_KIND_RECALL
	})
	u, err = m.Unread(ctx, &seqdv1.UnreadRequest{User: b})
	if err != nil || u.Total != 0 {
		t.Fatalf("unread after recall: %v %v", u, err)
	}
}

// A send to a user on another shard is acknowledged once the sender's
// shard has committed it with its delivery intent; the sender's shard
// then retries the delivery until the recipient's shard has applied it,
// which skips a retry it has applied before. Kill the leader of one shard
// and then of the other while sends cross between them both ways: every
// acknowledged message ends up exactly once in the sender's inbox and
// once in the recipient's, and each shard's replicas agree.
func TestKillShardLeadersDuringCrossShardSends(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: a load test of two shards (.ci/run's -race and seqdnext steps run -short); go test ./store runs it")
	}
	c, m := startCluster(t, localcluster.Options{Shards: 2})
	// Shard s1 owns sections below 1000 and s2 the rest: users 1..8 are on
	// s1 and 200,000,001..200,000,008 on s2.
	var near, far []uint64
	for i := uint64(1); i <= 8; i++ {
		near, far = append(near, i), append(far, 200_000_000+i)
	}
	pick := func() (uint64, uint64) {
		a, b := near[rand.IntN(len(near))], far[rand.IntN(len(far))]
		if rand.IntN(2) == 0 {
			return a, b
		}
		return b, a
	}
	stop := make(chan struct{})
	sent, wg, retries := sendLoad(m, pick, 6, stop)
	testwait.For(t, 10*time.Second, "sends to flow", func() bool { return countSent(sent, wg) > 100 })
	var killed [2]int
	for sh := range killed {
		killed[sh] = c.StoreLeader(sh)
		if killed[sh] < 0 {
			t.Fatalf("shard %d has no leader", sh)
		}
		c.KillStore(sh, killed[sh])
		before := countSent(sent, wg)
		testwait.For(t, 20*time.Second, fmt.Sprintf("sends to resume after killing shard %d's leader", sh), func() bool {
			return countSent(sent, wg) > before+100
		})
	}
	close(stop)
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for sh, i := range killed {
		if err := c.RestartStore(ctx, sh, i); err != nil {
			t.Fatal(err)
		}
	}
	all := append(near, far...)
	// Deliveries to the other shard are asynchronous: wait until every
	// acknowledged message has reached its recipient, then check.
	testwait.For(t, 30*time.Second, "every acknowledged message to reach its recipient", func() bool {
		return undelivered(ctx, m, *sent) == 0
	})
	t.Logf("%d sends acknowledged, %d retried attempts", len(*sent), retries.Load())
	checkExactlyOnce(t, m, all, *sent)
	for sh := range killed {
		waitShardReplicasAgree(t, c, sh)
		// Each leader's outbox gauge comes down to 0 once its deliveries
		// are acknowledged; followers report -1.
		testwait.For(t, 10*time.Second, fmt.Sprintf("shard %d's outbox gauges to show an empty outbox", sh), func() bool {
			leader := c.StoreLeader(sh)
			for i := 0; i < 3 && leader >= 0; i++ {
				want := -1.0
				if i == leader {
					want = 0
				}
				if storeGauge(t, c, "seqd_store_outbox_items", fmt.Sprintf("s%d-r%d", sh+1, i+1)) != want {
					return false
				}
			}
			return leader >= 0
		})
	}
}

// While the recipient's shard has no quorum, a send to it is still
// acknowledged (its delivery waits in the sender's shard's outbox), and the
// sender's leader counts the waiting items in seqd_store_outbox_items,
// beyond what one outbox round reads too; once the shard is back the
// deliveries land and the gauge returns to 0.
func TestOutboxGaugeShowsDeliveriesWaitingForAShard(t *testing.T) {
	c, m := startCluster(t, localcluster.Options{Shards: 2})
	const a, b = uint64(5), uint64(200_000_001) // on s1 and s2
	outbox := func() float64 {
		l := c.StoreLeader(0)
		if l < 0 {
			return -1
		}
		return storeGauge(t, c, "seqd_store_outbox_items", fmt.Sprintf("s1-r%d", l+1))
	}
	testwait.For(t, 10*time.Second, "s1's leader to report an empty outbox", func() bool { return outbox() == 0 })
	c.KillStore(1, 0)
	c.KillStore(1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := m.Send(ctx, &seqdv1.SendRequest{Sender: a, Recipients: []uint64{b}, Conversation: direct(77), ClientMsgId: "g1", Body: []byte("waits")})
	if err != nil {
		t.Fatalf("a send to a shard without quorum: %v (want it acknowledged, its delivery queued)", err)
	}
	testwait.For(t, 10*time.Second, "s1's leader to count the waiting delivery", func() bool { return outbox() == 1 })
	// More than one round reads (2,000): 21 sends of 100 recipients each
	// on s2 queue 2,100 more, and the gauge counts them all.
	var far []uint64
	for i := uint64(1); i <= 100; i++ {
		far = append(far, 200_000_100+i)
	}
	for i := 0; i < 21; i++ {
		if _, err := m.Send(ctx, &seqdv1.SendRequest{Sender: a, Recipients: far, Conversation: direct(78), ClientMsgId: fmt.Sprintf("many%d", i), Body: []byte("waits")}); err != nil {
			t.Fatalf("send %d to 100 users on a shard without quorum: %v", i, err)
		}
	}
	testwait.For(t, 20*time.Second, "s1's leader to count 2,101 waiting deliveries", func() bool { return outbox() == 2101 })
	for i := 0; i < 2; i++ {
		if err := c.RestartStore(ctx, 1, i); err != nil {
			t.Fatal(err)
		}
	}
	testwait.For(t, 20*time.Second, "the delivery to land and the outbox to empty", func() bool {
		return undelivered(ctx, m, []acked{{a, b, resp.MessageId, time.Now()}}) == 0 && outbox() == 0
	})
}

// TestDownShardHoldsUpOnlyItsOwnDeliveries: deliveries queued for a shard
// without quorum, more than one outbox round reads, hold up that shard's
// alone; a send to a third shard is delivered meanwhile, and once the
// shard is back its deliveries land, each once. Before, every round read
// the first items of the outbox, all for the down shard, and nothing went
// to any shard until it came back.
func TestDownShardHoldsUpOnlyItsOwnDeliveries(t *testing.T) {
	store.SetOutboxRound(t, 10)
	c, m := startCluster(t, localcluster.Options{Shards: 3})
	// With 3 shards, s1 owns sections below 1000, s2 up to 2000, s3 the
	// rest (100,000 keys per section).
	const a, toS3 = uint64(5), uint64(200_000_001)
	c.KillStore(1, 0)
	c.KillStore(1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var sent []acked
	var toS2 []uint64
	for i := uint64(1); i <= 10; i++ {
		toS2 = append(toS2, 100_000_000+i)
	}
	for i := range 3 { // 30 deliveries for s2: three rounds' worth
		r, err := m.Send(ctx, &seqdv1.SendRequest{Sender: a, Recipients: toS2, Conversation: direct(uint64(80 + i)), ClientMsgId: fmt.Sprint("s2-", i), Body: []byte("waits")})
		if err != nil {
			t.Fatalf("send %d to a shard without quorum: %v", i, err)
		}
		for _, u := range toS2 {
			sent = append(sent, acked{a, u, r.MessageId, time.Now()})
		}
	}
	r, err := m.Send(ctx, &seqdv1.SendRequest{Sender: a, Recipients: []uint64{toS3}, Conversation: direct(90), ClientMsgId: "s3", Body: []byte("goes")})
	if err != nil {
		t.Fatal(err)
	}
	toThird := []acked{{a, toS3, r.MessageId, time.Now()}}
	// A round that tries s2's surviving replica waits out the delivery's
	// 5 s timeout (it cannot commit without quorum) before it moves on.
	testwait.For(t, 30*time.Second, "the delivery to s3 to land while s2 is down", func() bool { return undelivered(ctx, m, toThird) == 0 })
	for i := 0; i < 2; i++ {
		if err := c.RestartStore(ctx, 1, i); err != nil {
			t.Fatal(err)
		}
	}
	testwait.For(t, 30*time.Second, "s2's deliveries to land", func() bool { return undelivered(ctx, m, sent) == 0 })
	checkExactlyOnce(t, m, append([]uint64{a, toS3}, toS2...), append(sent, toThird...))
}

// undelivered counts the acknowledged messages not yet in their
// recipient's inbox (all of a recipient's, should a Sync fail).
func undelivered(ctx context.Context, m *router.Messages, sent []acked) int {
	want := map[uint64][]string{}
	for _, a := range sent {
		want[a.recipient] = append(want[a.recipient], a.id)
	}
	missing := 0
	for u, ids := range want {
		evs, err := syncInbox(ctx, m, u)
		if err != nil {
			missing += len(ids)
			continue
		}
		have := map[string]bool{}
		for _, e := range evs {
			have[e.MessageId] = true
		}
		for _, id := range ids {
			if !have[id] {
				missing++
			}
		}
	}
	return missing
}

// moveLeaderOff waits until shard 0's leader is not one avoid picks,
// asking such a leader to hand over (again, should a transfer miss).
func moveLeaderOff(t *testing.T, c *localcluster.Cluster, what string, avoid func(i int) bool) {
	t.Helper()
	testwait.For(t, 20*time.Second, what, func() bool {
		i := c.StoreLeader(0)
		if i < 0 {
			return false
		}
		if !avoid(i) {
			return true
		}
		c.Store(0, i).Store().Raft().LeadershipTransfer().Error()
		return false
	})
}

// Reads at a leader just elected wait until it has applied every entry
// committed before: a send the old leader acknowledged is in a Sync and
// in Unread at the new one, although the new one's FSM lagged its log
// when it took over.
func TestReadsAtNewLeaderSeeSendsAckedBefore(t *testing.T) {
	c, m := startCluster(t, localcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const from, to = 7001, 7002
	send := func(id string) *seqdv1.SendResponse {
		t.Helper()
		resp, err := sendDirect(ctx, m, from, to, id)
		if err != nil {
			t.Fatalf("send %s: %v", id, err)
		}
		return resp
	}
	send("before")
	lead := storeLeader(t, c)
	next := (lead + 1) % 3
	old, heir := c.Store(0, lead).Store().Raft(), c.Store(0, next).Store()
	release := store.HoldApplies(t, heir.FSM())
	held := send("held")
	testwait.For(t, 10*time.Second, "the heir's log to hold the send", func() bool {
		return heir.Raft().LastIndex() >= old.LastIndex()
	})
	id := raft.ServerID(fmt.Sprintf("s1-r%d", next+1))
	if err := old.LeadershipTransferToServer(id, raftAddr(t, old, id)).Error(); err != nil {
		t.Fatalf("transfer to %s: %v", id, err)
	}
	testwait.For(t, 10*time.Second, "the heir to lead", heir.IsLeader)
	var heldSeq uint64
	for _, d := range held.Deliveries {
		if d.User == to {
			heldSeq = d.Seq
		}
	}
	if last, err := heir.FSM().LastSeq(to); err != nil || heldSeq == 0 || last >= heldSeq {
		t.Fatalf("the heir's FSM already holds the send (newest seq %d, %v); the test proves nothing", last, err)
	}
	client := messagesAt(t, c, next)
	time.AfterFunc(300*time.Millisecond, release)
	resp, err := client.Sync(ctx, &seqdv1.SyncRequest{User: to, Limit: 100})
	if err != nil {
		t.Fatalf("Sync at the new leader: %v", err)
	}
	if resp.MaybeStale {
		t.Error("the leader's answer is marked maybe_stale")
	}
	var ids []string
	for _, e := range resp.Events {
		ids = append(ids, e.MessageId)
	}
	if !slices.Contains(ids, held.MessageId) {
		t.Fatalf("Sync at the new leader returned %v without %s, acknowledged before the leader changed", ids, held.MessageId)
	}
	unread, err := client.Unread(ctx, &seqdv1.UnreadRequest{User: to})
	if err != nil || unread.Total != 2 {
		t.Fatalf("Unread at the new leader: %v, %v; want a total of 2", unread, err)
	}
}

// A replica that cannot reach a leader answers reads from what it has
// applied, and says so (maybe_stale); the leader's answers do not.
func TestReadWithoutLeaderIsMarkedMaybeStale(t *testing.T) {
	c, m := startCluster(t, localcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const from, to = 7101, 7102
	sent, err := sendDirect(ctx, m, from, to, "x")
	if err != nil {
		t.Fatal(err)
	}
	lead := storeLeader(t, c)
	leader := c.Store(0, lead).Store()
	fresh, err := m.Sync(ctx, &seqdv1.SyncRequest{User: to})
	if err != nil || fresh.MaybeStale || len(fresh.Events) != 1 {
		t.Fatalf("Sync through the router: %v, %v; want the one event, not maybe_stale", fresh, err)
	}
	last := (lead + 1) % 3
	testwait.For(t, 10*time.Second, "the last replica to apply the send", func() bool {
		return c.Store(0, last).Store().FSM().AppliedIndex() >= leader.FSM().AppliedIndex()
	})
	client := messagesAt(t, c, last)
	// A stream at that replica says nothing of staleness while it follows
	// a leader, and says maybe_stale on its heartbeats once it has none.
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	st, err := client.Subscribe(sctx, &seqdv1.SubscribeRequest{User: to, HeartbeatMs: 100})
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := st.Recv(); err != nil || msg.MaybeStale || len(msg.Events) != 1 {
		t.Fatalf("Subscribe's backlog at a follower of a live leader: %v, %v; want the send, not maybe_stale", msg, err)
	}
	for i := range 3 {
		if i != last {
			c.KillStore(0, i)
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		msg, err := st.Recv()
		if err != nil {
			t.Fatalf("stream at the replica left alone: %v", err)
		}
		if msg.MaybeStale {
			if !msg.Heartbeat || msg.Checkpoint != fresh.NextCheckpoint {
				t.Fatalf("stale stream message %v; want a heartbeat at checkpoint %d", msg, fresh.NextCheckpoint)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat says maybe_stale 20 s after the replica lost its leader")
		}
	}
	var resp *seqdv1.SyncResponse
	testwait.For(t, 20*time.Second, "a Sync answered by the replica alone", func() bool {
		resp, err = client.Sync(ctx, &seqdv1.SyncRequest{User: to})
		return err == nil
	})
	if !resp.MaybeStale || len(resp.Events) != 1 || resp.Events[0].MessageId != sent.MessageId {
		t.Fatalf("Sync at a replica without a leader: %v; want the send, marked maybe_stale", resp)
	}
	unread, err := client.Unread(ctx, &seqdv1.UnreadRequest{User: to})
	if err != nil || !unread.MaybeStale || unread.Total != 1 {
		t.Fatalf("Unread at a replica without a leader: %v, %v; want a total of 1, marked maybe_stale", unread, err)
	}
	// A send through the router gives up naming the shard, not only the
	// dead replica it tried last.
	sctx2, scancel2 := context.WithTimeout(ctx, 3*time.Second)
	defer scancel2()
	if _, err := sendDirect(sctx2, m, from, to, "y"); err == nil || !strings.Contains(err.Error(), "store shard s1: no replica answered in time") {
		t.Fatalf("send with the shard's majority down: %v, want it to name the shard", err)
	}
	// It cannot tell a group it has not heard of yet from one that does
	// not exist, so it does not refuse for good.
	_, err = client.GetGroup(ctx, &seqdv1.GetGroupRequest{GroupId: 999})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no leader to confirm") {
		t.Fatalf("GetGroup of an unknown group at a replica without a leader: %v, want UNAVAILABLE", err)
	}
	_, err = client.SyncGroup(ctx, &seqdv1.SyncGroupRequest{User: to, GroupId: 999})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no leader to confirm") {
		t.Fatalf("SyncGroup of an unknown group at a replica without a leader: %v, want UNAVAILABLE", err)
	}
	_, err = client.GroupHistory(ctx, &seqdv1.GroupHistoryRequest{User: to, GroupId: 999})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no leader to confirm") {
		t.Fatalf("GroupHistory of an unknown group at a replica without a leader: %v, want UNAVAILABLE", err)
	}
}

// A leader whose FSM lags its own commits does not call a checkpoint from
// the future: a device got the seq from a follower that applied it first,
// and a Sync or Subscribe from there at the leader waits for its FSM.
func TestCheckpointFromFollowerAtLaggingLeader(t *testing.T) {
	c, m := startCluster(t, localcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const from, to = 7201, 7202
	if _, err := sendDirect(ctx, m, from, to, "a"); err != nil {
		t.Fatal(err)
	}
	lead := storeLeader(t, c)
	leader, follower := c.Store(0, lead).Store(), c.Store(0, (lead+1)%3).Store()
	testwait.For(t, 10*time.Second, "the follower to catch up", func() bool {
		return follower.FSM().AppliedIndex() >= leader.FSM().AppliedIndex()
	})
	release := store.HoldApplies(t, leader.FSM())
	go sendDirect(ctx, m, from, to, "b") // answered once the leader's FSM applies it
	var seq uint64
	testwait.For(t, 10*time.Second, "the follower to apply the second send", func() bool {
		s, err := follower.FSM().LastSeq(to)
		seq = s
		return err == nil && s > 0 && len(syncFSM(t, follower, to)) == 2
	})
	if ls, _ := leader.FSM().LastSeq(to); ls >= seq {
		t.Fatalf("the leader's FSM already holds seq %d; the test proves nothing", seq)
	}
	time.AfterFunc(300*time.Millisecond, release)
	resp, err := messagesAt(t, c, lead).Sync(ctx, &seqdv1.SyncRequest{User: to, AfterSeq: seq, Limit: 10})
	if err != nil {
		t.Fatalf("Sync from seq %d, which a follower handed out, at the leader: %v", seq, err)
	}
	if len(resp.Events) != 0 || resp.NextCheckpoint != seq || resp.MaybeStale {
		t.Fatalf("Sync from the newest seq at the leader: %v; want no events, the same checkpoint, current", resp)
	}
}

// syncFSM reads user's inbox from r's FSM alone.
func syncFSM(t *testing.T, r *store.Shard, user uint64) []*seqdv1.Event {
	t.Helper()
	res, err := r.FSM().Sync(user, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	return res.Events
}

// storeLeader waits for shard 0's leader and returns its index.
func storeLeader(t *testing.T, c *localcluster.Cluster) int {
	t.Helper()
	lead := -1
	testwait.For(t, 10*time.Second, "a store shard leader", func() bool { lead = c.StoreLeader(0); return lead >= 0 })
	return lead
}

// messagesAt is a Messages client of store replica i of shard 0 alone,
// without the router.
func messagesAt(t *testing.T, c *localcluster.Cluster, i int) seqdv1.MessagesClient {
	t.Helper()
	cc, err := grpc.NewClient(c.Store(0, i).GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return seqdv1.NewMessagesClient(cc)
}

// sendDirect sends id (as body and client message id) from one user to
// another in their direct conversation.
func sendDirect(ctx context.Context, m *router.Messages, from, to uint64, id string) (*seqdv1.SendResponse, error) {
	return m.Send(ctx, &seqdv1.SendRequest{Sender: from, Recipients: []uint64{to}, Conversation: direct(min(from, to)*1_000_000 + max(from, to)),
		ClientMsgId: id, Body: []byte(id)})
}

// raftAddr is the Raft address of server id in r's configuration.
func raftAddr(t *testing.T, r *raft.Raft, id raft.ServerID) raft.ServerAddress {
	t.Helper()
	fut := r.GetConfiguration()
	if err := fut.Error(); err != nil {
		t.Fatal(err)
	}
	for _, srv := range fut.Configuration().Servers {
		if srv.ID == id {
			return srv.Address
		}
	}
	t.Fatalf("%s is not in the Raft configuration", id)
	return ""
}

// TestReplicaStaysInItsShard: a store replica restarted with another
// --shard is refused, by its data dir (which records its shard) and by
// the arbiters (which know it as the first shard's). Before, it started,
// led the other shard with the first one's data, and split both.
func TestReplicaStaysInItsShard(t *testing.T) {
	c, _ := startCluster(t, localcluster.Options{Shards: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.StopStore(0, 0); err != nil {
		t.Fatal(err)
	}
	var id string
	err := c.RestartStoreWith(ctx, 0, 0, func(cfg *node.Config) { id, cfg.Shard = cfg.ID, "s2" })
	if !errors.Is(err, datadir.ErrForeign) || !strings.Contains(err.Error(), `store shard "s1"`) || !strings.Contains(err.Error(), `store shard "s2"`) {
		t.Fatalf("restart in shard s2: %v, want the data dir's refusal naming both shards", err)
	}
	cc, err := grpc.NewClient(c.ArbiterAddrs()[0], grpcconn.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = clusterv1.NewArbiterClient(cc).RegisterStoreReplica(ctx, &clusterv1.RegisterStoreReplicaRequest{
		ClusterId: "seqd-local", Shard: "s2", ReplicaId: id, Addr: "127.0.0.1:1"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "belongs to shard s1") {
		t.Fatalf("registering %s in shard s2: %v, want FAILED_PRECONDITION", id, err)
	}
	if err := c.RestartStoreWith(ctx, 0, 0, func(cfg *node.Config) { cfg.Shard = "s1" }); err != nil {
		t.Fatalf("restart in its own shard: %v", err)
	}

	// Another process under a running replica's id does not take its
	// address in the shard map; once that replica is gone, a new address
	// is taken (a restart elsewhere), and the replica takes its own back.
	register := func(addr string) error {
		_, err := clusterv1.NewArbiterClient(cc).RegisterStoreReplica(ctx, &clusterv1.RegisterStoreReplicaRequest{
			ClusterId: "seqd-local", Shard: "s1", ReplicaId: "s1-r2", Addr: addr})
		return err
	}
	real := c.Store(0, 1).GRPCAddr()
	if err := register("127.0.0.1:1"); status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "is running at "+real) {
		t.Fatalf("registering running s1-r2 at another address: %v, want ALREADY_EXISTS naming %s", err, real)
	}
	if err := register(real); err != nil {
		t.Fatalf("s1-r2 registering at its own address: %v", err)
	}
	if err := c.StopStore(0, 1); err != nil {
		t.Fatal(err)
	}
	if err := register("127.0.0.1:1"); err != nil {
		t.Fatalf("registering stopped s1-r2 at another address: %v", err)
	}
	if err := c.RestartStore(ctx, 0, 1); err != nil {
		t.Fatalf("s1-r2 restarting at its address: %v", err)
	}
}

// TestSubscriberThatStopsReadingIsCut: a Subscribe stream whose client
// stopped reading (its flow-control window full) is ended with
// RESOURCE_EXHAUSTED, by the gateway and by a replica served directly.
// Before, both held its messages and waited for good: a gateway used
// 15-30 MB per such stream.
func TestSubscriberThatStopsReadingIsCut(t *testing.T) {
	c, m := startCluster(t, localcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const user = 42
	small := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64 << 10), grpc.WithInitialConnWindowSize(64 << 10)}
	var streams []seqdv1.Messages_SubscribeClient
	for i, addr := range []string{c.GatewayAddr(), c.Store(0, storeLeader(t, c)).GRPCAddr()} {
		cc, err := grpc.NewClient(addr, small...)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		// A replica just started may refuse for a moment (UNAVAILABLE):
		// open again until it accepts. Before, a refused stream passed
		// for an open one (Header answers nil for it), and the test
		// waited for a subscriber that never came.
		var st seqdv1.Messages_SubscribeClient
		testwait.For(t, 10*time.Second, fmt.Sprintf("stream %d (0: gateway, 1: replica) to be accepted", i), func() bool {
			if st, err = seqdv1.NewMessagesClient(cc).Subscribe(ctx, &seqdv1.SubscribeRequest{User: user, HeartbeatMs: 100}); err == nil {
				err = grpcconn.Accepted(st)
			}
			if err != nil && !rpcerr.Retryable(err) {
				t.Fatalf("stream %d (0: gateway, 1: replica): %v", i, err)
			}
			return err == nil
		})
		streams = append(streams, st)
	}
	subscribers := func() float64 {
		mfs, err := c.Gatherer().Gather()
		if err != nil {
			t.Fatal(err)
		}
		open := 0.0
		for _, mf := range mfs {
			if mf.GetName() == "seqd_store_subscribers" {
				for _, mt := range mf.GetMetric() {
					open += mt.GetGauge().GetValue()
				}
			}
		}
		return open
	}
	testwait.For(t, 10*time.Second, "both streams to be counted", func() bool { return subscribers() == 2 })
	// Only now: a loaded machine may hold up even a heartbeat for a second.
	defer grpcconn.SetSlowReceiver(grpcconn.SetSlowReceiver(time.Second))
	body := make([]byte, 60<<10)
	for i := range 30 {
		if _, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 7, Recipients: []uint64{user}, Conversation: direct(7_000_042),
			ClientMsgId: fmt.Sprint("big", i), Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	// Both streams end at the replica (the gateway's relay ends its own
	// once it gives up): wait for that rather than for a time.
	testwait.For(t, 30*time.Second, "the replicas to end both streams", func() bool { return subscribers() == 0 })
	for i, st := range streams {
		var err error
		for err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "not reading") {
			t.Errorf("stream %d (0: gateway, 1: replica): ended with %v, want RESOURCE_EXHAUSTED", i, err)
		}
	}
}

// TestReadMarkerNeverMovesBack: a read marker at or below the user's
// marker in the conversation appends nothing (seq 0) and answers the
// counts. Before, it appended a READ event up to the lower seq, which moved
// back every device that replays events, while the state kept the higher.
func TestReadMarkerNeverMovesBack(t *testing.T) {
	_, m := startCluster(t, localcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last uint64
	for i := range 3 {
		r, err := sendDirect(ctx, m, 1, 2, fmt.Sprint("m", i))
		if err != nil {
			t.Fatal(err)
		}
		last = r.Deliveries[0].Seq
	}
	conv := direct(1_000_002)
	mark := func(upTo uint64) *seqdv1.MarkReadResponse {
		t.Helper()
		r, err := m.MarkRead(ctx, &seqdv1.MarkReadRequest{User: 2, Conversation: conv, UpToSeq: upTo})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := mark(last); r.Seq == 0 || r.Unread != 0 || r.TotalUnread != 0 {
		t.Fatalf("marker up to the newest: %v", r)
	}
	before := len(syncAll(t, m, 2))
	for _, upTo := range []uint64{last, 1} { // the same, and lower
		if r := mark(upTo); r.Seq != 0 || r.Unread != 0 || r.TotalUnread != 0 {
			t.Errorf("marker up to %d under one up to %d: %v, want seq 0 and the counts", upTo, last, r)
		}
	}
	evs := syncAll(t, m, 2)
	if len(evs) != before {
		t.Fatalf("markers at or below the marker appended %v", evs[before:])
	}
	un, err := m.Unread(ctx, &seqdv1.UnreadRequest{User: 2})
	if err != nil || un.Total != 0 {
		t.Fatalf("Unread: %v %v", un, err)
	}
}
