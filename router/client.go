// Package router is the client library front ends embed to get sequence
// numbers from seqd, and the gateway that serves the same API over gRPC for
// front ends not written in Go.
//
// A Client caches the routing table, sends each key straight to the AllocSvr
// that owns it, learns newer tables from responses, and retries NOT_OWNER
// and UNAVAILABLE with jittered backoff within the caller's deadline.
// Concurrent calls to the same AllocSvr are coalesced into one batch on a
// stream, as PD's TSO client does.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/backoff"
	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/internal/rpcerr"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("router: client closed")

// Config configures a Client.
type Config struct {
	// Addrs are bootstrap addresses: any arbiter, AllocSvr or gateway.
	Addrs []string
	// DisableBatching sends one RPC per call instead of coalescing.
	DisableBatching bool
	// BatchWindow is the longest a call waits for others to join its batch
	// once nothing else is queued. Default 20µs; negative means never wait.
	BatchWindow time.Duration
	// MaxBatch caps the keys in one coalesced message (default 4096).
	MaxBatch int
	// MaxInflight caps coalesced messages outstanding per AllocSvr (default 4).
	MaxInflight int
	// Timeout bounds a call whose context has no deadline (default 10 s).
	Timeout time.Duration
	// DialOptions are appended to seqd's defaults.
	DialOptions []grpc.DialOption
	Logger      *slog.Logger
}

// DefaultBatchWindow is the default BatchWindow.
const DefaultBatchWindow = 20 * time.Microsecond

// maxServerBatch matches the AllocSvr's default cap on one batch.
const maxServerBatch = 10_000

// Client is safe for use by many goroutines.
type Client struct {
	cfg   Config
	log   *slog.Logger
	pool  *grpcconn.Pool
	table atomic.Pointer[view]
	retry backoff.Policy

	refreshMu  sync.Mutex
	refreshed  time.Time    // when a refresh last succeeded
	refreshing *refreshCall // the refresh under way, if any

	bmu      sync.Mutex
	batchers map[string]*batcher
	closed   atomic.Bool

	msgOnce sync.Once
	msgs    *Messages
}

// New returns a client and loads the routing table from the bootstrap
// addresses, failing if none answers before ctx ends.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("router: no bootstrap addresses; give at least one arbiter or gateway address")
	}
	if cfg.BatchWindow == 0 {
		cfg.BatchWindow = DefaultBatchWindow
	}
	if cfg.MaxBatch <= 0 || cfg.MaxBatch > maxServerBatch {
		cfg.MaxBatch = 4096
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = 4
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Client{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "router"),
		pool:     grpcconn.NewPool(cfg.DialOptions...),
		retry:    backoff.Policy{Base: 2 * time.Millisecond, Max: 250 * time.Millisecond},
		batchers: make(map[string]*batcher),
	}
	for attempt := 0; ; attempt++ {
		err := c.refresh(ctx, true)
		if err == nil {
			return c, nil
		}
		if e := c.retry.Sleep(ctx, attempt); e != nil {
			c.Close()
			return nil, fmt.Errorf("router: no routing table from %v: %w", cfg.Addrs, err)
		}
	}
}

// Close releases connections. Calls in flight fail.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.bmu.Lock()
	for _, b := range c.batchers {
		b.close()
	}
	c.batchers = nil
	c.bmu.Unlock()
	return c.pool.Close()
}

// Table returns the cached routing table (shared; do not modify).
func (c *Client) Table() *seqdv1.RoutingTable {
	if v := c.table.Load(); v != nil {
		return v.raw
	}
	return nil
}

// learn adopts t if it is newer than the cached table. An older or equal
// version is ignored: tables only move forward.
func (c *Client) learn(t *seqdv1.RoutingTable) bool {
	if t == nil || t.SectionSize == 0 || t.NumSlots == 0 {
		return false
	}
	nv := compile(t)
	if !nv.valid() {
		return false
	}
	for {
		cur := c.table.Load()
		if cur != nil && !acceptTable(cur.version, t.Version) {
			return false
		}
		if c.table.CompareAndSwap(cur, nv) {
			c.dropBatchers()
			return true
		}
	}
}

// refresh asks the bootstrap addresses (then known AllocSvrs) for the
// table. Concurrent callers share one refresh, which runs on its own
// goroutine: each caller waits for it only as long as its own ctx lets it
// (a refresh through blackholed addresses takes a second each). Without
// force, a refresh that succeeded within the last few milliseconds counts;
// with it, only one that started after the call.
func (c *Client) refresh(ctx context.Context, force bool) error {
	asked := time.Now()
	// A retry loop's refresh (not forced) waits at most a second: the
	// loop has replicas to try meanwhile, and the refresh goes on.
	var waitLimit <-chan time.Time
	if !force {
		t := time.NewTimer(time.Second)
		defer t.Stop()
		waitLimit = t.C
	}
	for {
		c.refreshMu.Lock()
		if !force && time.Since(c.refreshed) < 5*time.Millisecond {
			c.refreshMu.Unlock()
			return nil
		}
		call := c.refreshing
		if call == nil {
			call = &refreshCall{done: make(chan struct{}), started: time.Now()}
			c.refreshing = call
			go c.refreshOnce(call)
		}
		c.refreshMu.Unlock()
		select {
		case <-call.done:
		case <-ctx.Done():
			return ctx.Err()
		case <-waitLimit:
			return errRefreshSlow
		}
		if !force || !call.started.Before(asked) {
			return call.err
		}
	}
}

var errRefreshSlow = status.Error(codes.Unavailable, "router: the routing table refresh is taking more than a second; it goes on")

// refreshCall is one refresh and its outcome, once done is closed.
type refreshCall struct {
	done    chan struct{}
	started time.Time
	err     error
}

func (c *Client) refreshOnce(call *refreshCall) {
	err := c.fetchTable()
	c.refreshMu.Lock()
	if err == nil {
		c.refreshed = time.Now()
	}
	c.refreshing = nil
	c.refreshMu.Unlock()
	call.err = err
	close(call.done)
}

// fetchTable asks each address in turn until one answers with a table.
func (c *Client) fetchTable() error {
	addrs := append([]string(nil), c.cfg.Addrs...)
	if v := c.table.Load(); v != nil {
		for _, n := range v.raw.Nodes {
			addrs = append(addrs, n.Addr)
		}
	}
	// The arbiter leader's table first (a follower forwards the ask), so
	// that an arbiter cut off from the others, whose own table may be
	// old, is not the answer; then, if no leader could be reached,
	// anyone's (an AllocSvr or gateway answers its own either way).
	var errs []error
	silent := map[string]bool{} // took the first pass's ask and did not answer
	for i := range 2 * len(addrs) {
		if c.closed.Load() {
			return ErrClosed
		}
		a := addrs[i%len(addrs)]
		fromLeader := i < len(addrs)
		if !fromLeader && silent[a] {
			continue
		}
		cc, err := c.pool.Get(a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := seqdv1.NewRoutingClient(cc).GetRoutingTable(ctx, &seqdv1.GetRoutingTableRequest{FromLeader: fromLeader})
		cancel()
		if err != nil {
			if status.Code(err) == codes.DeadlineExceeded {
				silent[a] = true
			}
			if !fromLeader || silent[a] {
				errs = append(errs, fmt.Errorf("%s: %w", a, err))
			}
			continue // without from_leader, in the second pass
		}
		if !c.learn(resp.Table) && c.table.Load() == nil {
			errs = append(errs, fmt.Errorf("%s: answered with an unusable routing table (version %d, %d slots, section size %d)",
				a, resp.Table.GetVersion(), resp.Table.GetNumSlots(), resp.Table.GetSectionSize()))
			continue
		}
		return nil
	}
	return errors.Join(errs...)
}

// Refresh loads the routing table from the bootstrap addresses now.
func (c *Client) Refresh(ctx context.Context) error { return c.refresh(ctx, true) }

func (c *Client) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.cfg.Timeout)
}

var errKeyZero = status.Error(codes.InvalidArgument, "key 0 is reserved; keys start at 1")

// Next returns a seq for key larger than every seq returned for it before.
func (c *Client) Next(ctx context.Context, key uint64) (uint64, error) {
	if key == 0 {
		return 0, errKeyZero
	}
	seqs, err := c.NextBatch(ctx, []uint64{key})
	if err != nil {
		return 0, err
	}
	return seqs[0], nil
}

// NextBatch returns one seq per key, in order. Keys may span AllocSvrs and
// may repeat.
func (c *Client) NextBatch(ctx context.Context, keys []uint64) ([]uint64, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if len(keys) == 0 {
		return nil, status.Error(codes.InvalidArgument, "keys is empty; send at least one key")
	}
	for i, k := range keys {
		if k == 0 {
			return nil, status.Errorf(codes.InvalidArgument, "keys[%d] is 0; key 0 is reserved, keys start at 1", i)
		}
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	out := make([]uint64, len(keys))
	todo := make([]int, len(keys)) // indexes still to allocate
	for i := range todo {
		todo[i] = i
	}
	var lastErr error
	for attempt := 0; ; attempt++ {
		v := c.table.Load()
		// Fast path: every key at one AllocSvr (always so for a single key).
		if addr := v.owner(keys[todo[0]]); addr != "" && len(todo) == len(keys) && sameOwner(v, keys, addr) {
			seqs, err := c.send(ctx, addr, keys, v.version)
			if err == nil {
				return seqs, nil
			}
			retryNow, fatal := c.judge(err)
			if fatal {
				return nil, err
			}
			lastErr = err
			if !retryNow {
				c.refresh(ctx, false)
				if err := c.retry.Sleep(ctx, attempt); err != nil {
					return nil, giveUp(lastErr, err)
				}
			}
			continue
		}
		groups := map[string][]int{}
		var unrouted []int
		for _, i := range todo {
			if a := v.owner(keys[i]); a != "" {
				groups[a] = append(groups[a], i)
			} else {
				unrouted = append(unrouted, i)
			}
		}
		type result struct {
			idx  []int
			seqs []uint64
			err  error
		}
		results := make(chan result, len(groups))
		for addr, idx := range groups {
			go func(addr string, idx []int) {
				ks := make([]uint64, len(idx))
				for j, i := range idx {
					ks[j] = keys[i]
				}
				seqs, err := c.send(ctx, addr, ks, v.version)
				results <- result{idx, seqs, err}
			}(addr, idx)
		}
		todo = unrouted
		retryNow := false
		var fatal error
		for range groups {
			r := <-results
			if r.err == nil {
				for j, i := range r.idx {
					out[i] = r.seqs[j]
				}
				continue
			}
			todo = append(todo, r.idx...)
			lastErr = r.err
			now, isFatal := c.judge(r.err)
			retryNow = retryNow || now
			if isFatal {
				fatal = r.err
			}
		}
		if fatal != nil {
			return nil, fatal
		}
		if len(todo) == 0 {
			return out, nil
		}
		if len(unrouted) > 0 && lastErr == nil {
			lastErr = status.Errorf(codes.Unavailable, "no AllocSvr serves key %d's slot yet", keys[unrouted[0]])
		}
		if !retryNow {
			c.refresh(ctx, false)
			if err := c.retry.Sleep(ctx, attempt); err != nil {
				return nil, giveUp(lastErr, err)
			}
		}
		if ctx.Err() != nil {
			return nil, giveUp(lastErr, ctx.Err())
		}
	}
}

// sameOwner reports whether every key is served at addr.
func sameOwner(v *view, keys []uint64, addr string) bool {
	for _, k := range keys[1:] {
		if v.owner(k) != addr {
			return false
		}
	}
	return true
}

// judge classifies a failed call: retry at once (a newer table arrived
// with NOT_OWNER), or fatal (not worth retrying); otherwise retry after a
// backoff.
func (c *Client) judge(err error) (retryNow, fatal bool) {
	if t, ok := rpcerr.NotOwnerTable(err); ok {
		return c.learn(t), false
	}
	return false, !rpcerr.Retryable(err) && status.Code(err) != codes.DeadlineExceeded
}

// giveUp reports the last server error along with why retrying stopped.
func giveUp(last, why error) error {
	code := codes.DeadlineExceeded
	if errors.Is(why, context.Canceled) {
		code = codes.Canceled
	}
	if last == nil {
		return status.Error(code, why.Error())
	}
	return status.Errorf(code, "%v (gave up retrying: %v)", status.Convert(last).Message(), why)
}

// send allocates keys at one AllocSvr, coalesced or as one RPC.
func (c *Client) send(ctx context.Context, addr string, keys []uint64, version uint64) ([]uint64, error) {
	if c.cfg.DisableBatching || len(keys) > c.cfg.MaxBatch {
		return c.unary(ctx, addr, keys, version)
	}
	b, err := c.batcher(addr)
	if err != nil {
		return nil, err
	}
	seqs, hdr, err := b.do(ctx, keys, version)
	if hdr != nil {
		c.learn(hdr.RoutingTable)
	}
	return seqs, err
}

func (c *Client) unary(ctx context.Context, addr string, keys []uint64, version uint64) ([]uint64, error) {
	cc, err := c.pool.Get(addr)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	sc := seqdv1.NewSequencerClient(cc)
	if len(keys) == 1 {
		resp, err := sc.Next(ctx, &seqdv1.NextRequest{Key: keys[0], RoutingVersion: version})
		if err != nil {
			return nil, err
		}
		c.learn(resp.Header.GetRoutingTable())
		return []uint64{resp.Seq}, nil
	}
	out := make([]uint64, 0, len(keys))
	for len(keys) > 0 {
		n := min(len(keys), maxServerBatch)
		resp, err := sc.NextBatch(ctx, &seqdv1.NextBatchRequest{Keys: keys[:n], RoutingVersion: version})
		if err != nil {
			return nil, err
		}
		c.learn(resp.Header.GetRoutingTable())
		out = append(out, resp.Seqs...)
		keys = keys[n:]
	}
	return out, nil
}

// dropBatchers closes the batchers of addresses that own no slot in the
// current table (an AllocSvr gone, or moved to a new address): each holds
// a goroutine, and a stream or its attempts to open one, for as long as
// the client lives. A call still using one gets UNAVAILABLE and retries
// with the table. It reads the table under bmu, so a learn that raced
// ahead of it is the one it goes by.
func (c *Client) dropBatchers() {
	c.bmu.Lock()
	defer c.bmu.Unlock()
	for addr, b := range c.batchers {
		if !c.owns(addr) {
			b.close()
			delete(c.batchers, addr)
		}
	}
}

// owns reports whether addr owns a slot in the current table.
func (c *Client) owns(addr string) bool {
	v := c.table.Load()
	return v != nil && slices.Contains(v.owners, addr)
}

func (c *Client) batcher(addr string) (*batcher, error) {
	c.bmu.Lock()
	defer c.bmu.Unlock()
	if c.batchers == nil {
		return nil, ErrClosed
	}
	b := c.batchers[addr]
	if b == nil {
		// A call routed by an older table: no batcher for an address the
		// current one gives no slot (dropBatchers would not close it).
		if !c.owns(addr) {
			return nil, status.Errorf(codes.Unavailable, "AllocSvr %s owns no slot in the current routing table; retry with it", addr)
		}
		cc, err := c.pool.Get(addr)
		if err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		b = newBatcher(cc, c.cfg.MaxBatch, c.cfg.MaxInflight, c.cfg.BatchWindow)
		c.batchers[addr] = b
	}
	return b, nil
}

// Current returns the last seq handed out for key, without allocating.
func (c *Client) Current(ctx context.Context, key uint64) (uint64, error) {
	if c.closed.Load() {
		return 0, ErrClosed
	}
	if key == 0 {
		return 0, errKeyZero
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	var lastErr error
	for attempt := 0; ; attempt++ {
		v := c.table.Load()
		addr := v.owner(key)
		if addr == "" {
			lastErr = status.Errorf(codes.Unavailable, "no AllocSvr serves key %d's slot yet", key)
		} else if cc, err := c.pool.Get(addr); err != nil {
			lastErr = status.Error(codes.Unavailable, err.Error())
		} else {
			resp, err := seqdv1.NewSequencerClient(cc).Current(ctx, &seqdv1.CurrentRequest{Key: key, RoutingVersion: v.version})
			if err == nil {
				c.learn(resp.Header.GetRoutingTable())
				return resp.Seq, nil
			}
			lastErr = err
			if t, ok := rpcerr.NotOwnerTable(err); ok && c.learn(t) {
				continue
			}
			if !rpcerr.Retryable(err) && status.Code(err) != codes.DeadlineExceeded {
				return 0, err
			}
		}
		c.refresh(ctx, false)
		if err := c.retry.Sleep(ctx, attempt); err != nil {
			return 0, giveUp(lastErr, err)
		}
	}
}
