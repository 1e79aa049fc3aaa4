// Package cluster starts a real seqd cluster for the chaos harness: three
// arbiters, two or three AllocSvrs and a gateway, each a separate process
// with its own data directory and log file, either in network namespaces
// of their own (backend netns) or on loopback ports (backend local).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/internal/loopback"
	"github.com/seqd/seqd/jepsen/netns"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// Roles of nodes.
const (
	Arbiter  = "arbiter"
	AllocSvr = "allocsvr"
	Gateway  = "gateway"
	Store    = "store"
)

// Backends.
const (
	BackendNetns = "netns"
	BackendLocal = "local"
)

// DefaultBackend is netns when this process can create namespaces, else local.
func DefaultBackend() string {
	if netns.Available() == nil {
		return BackendNetns
	}
	return BackendLocal
}

// Options configures a cluster.
type Options struct {
	// Dir receives logs/<node>.log and data/<node>/.
	Dir     string
	Backend string
	// Binary is the seqd binary to run.
	Binary string
	// NextBinary, if set, is a build one store format newer (tag
	// seqdnext) that Node.UseNext switches a store replica to: the
	// upgrade nemesis's mixed-build shard.
	NextBinary string
	// Env is added to every node's environment (SEQD_BUG=...).
	Env []string
	// Failpoints says Binary was built with the seqdbugs tag, so nodes
	// serve the clock failpoint.
	Failpoints bool
	AllocSvrs  int // 2 or 3; default 2
	// StoreReplicas is the size of each message-store shard (0: no
	// store), and StoreShards their number (0: one).
	StoreReplicas int
	StoreShards   int
	// ShardSplits are the section boundaries between the shards
	// (--shard-splits on the arbiters), one fewer than StoreShards.
	ShardSplits []uint64
	// Retention is the store replicas' --retention (0: off, keep every
	// inbox event).
	Retention time.Duration
	Lease     time.Duration // default 2s
	Step      uint64        // max_seq step; default 1000 (the production default is 10,000)
	ClusterID string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

// Cluster is a running cluster.
type Cluster struct {
	opts    Options
	be      backend
	nodes   []*Node
	byID    map[string]*Node
	pool    *grpcconn.Pool
	eventMu sync.Mutex
	events  []Event
	origin  time.Time

	// closing is set when Close begins: from then on no node starts, so
	// a heal racing with an aborting run cannot bring one back.
	closing atomic.Bool
	closeMu sync.Mutex // held through Close: a second caller waits for the first
	closed  bool
}

// Event is something that happened to a node outside the harness's
// control, such as a process that exited by itself.
type Event struct {
	At   time.Duration
	Node string
	Msg  string
}

type backend interface {
	name() string
	addNode(ctx context.Context, id string) (host string, err error)
	wrap(id string, argv []string) []string
	canPartition() bool
	block(ctx context.Context, blocked map[string][]string) error
	close() error
}

// Start builds the node list, starts every process, and waits until the
// cluster serves: a leader, every slot assigned, every AllocSvr holding
// slots.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.AllocSvrs == 0 {
		opts.AllocSvrs = 2
	}
	if opts.AllocSvrs < 1 || opts.AllocSvrs > 3 {
		return nil, fmt.Errorf("cluster: %d AllocSvrs; use 1 to 3", opts.AllocSvrs)
	}
	if opts.Lease == 0 {
		opts.Lease = 2 * time.Second
	}
	if opts.Step == 0 {
		opts.Step = 1000
	}
	if opts.ClusterID == "" {
		opts.ClusterID = "seqj"
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.StoreShards == 0 {
		opts.StoreShards = 1
	}
	if opts.StoreShards < 1 || len(opts.ShardSplits) != opts.StoreShards-1 {
		return nil, fmt.Errorf("cluster: %d store shards with %d splits; give one split fewer than shards", opts.StoreShards, len(opts.ShardSplits))
	}
	if opts.Backend == "" {
		opts.Backend = DefaultBackend()
	}
	c := &Cluster{opts: opts, byID: map[string]*Node{}, pool: grpcconn.NewPool(grpc.WithNoProxy()), origin: time.Now()}
	switch opts.Backend {
	case BackendNetns:
		n, err := netns.Setup(ctx)
		if err != nil {
			return nil, err
		}
		c.be = &netnsBackend{n: n}
	case BackendLocal:
		c.be = localBackend{host: loopback.Host()}
	default:
		return nil, fmt.Errorf("cluster: unknown backend %q; use netns or local", opts.Backend)
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	for _, dir := range []string{"logs", "data"} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, dir), 0o755); err != nil {
			return nil, err
		}
	}
	type spec struct{ id, role, shard string }
	var ids []spec
	for i := 1; i <= 3; i++ {
		ids = append(ids, spec{fmt.Sprintf("arb%d", i), Arbiter, ""})
	}
	for i := 1; i <= opts.AllocSvrs; i++ {
		ids = append(ids, spec{fmt.Sprintf("alloc%d", i), AllocSvr, ""})
	}
	for sh := 1; opts.StoreReplicas > 0 && sh <= opts.StoreShards; sh++ {
		for i := 1; i <= opts.StoreReplicas; i++ {
			ids = append(ids, spec{fmt.Sprintf("s%d-r%d", sh, i), Store, fmt.Sprintf("s%d", sh)})
		}
	}
	ids = append(ids, spec{"gw1", Gateway, ""})
	for _, x := range ids {
		host, err := c.be.addNode(ctx, x.id)
		if err != nil {
			return nil, err
		}
		n := &Node{ID: x.id, Role: x.role, Shard: x.shard, Host: host, c: c}
		if err := n.assignPorts(c.be.name()); err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, n)
		c.byID[n.ID] = n
	}
	var peers, arbAddrs []string
	for _, n := range c.Arbiters() {
		peers = append(peers, "--peer", fmt.Sprintf("%s=%s,%s,%s", n.ID, n.Raft, n.GRPC, n.Gossip))
		arbAddrs = append(arbAddrs, n.GRPC)
	}
	storePeers := map[string][]string{}
	for _, n := range c.Stores() {
		storePeers[n.Shard] = append(storePeers[n.Shard], "--store-peer", n.ID+"="+n.Raft)
	}
	var splits []string
	for _, s := range opts.ShardSplits {
		splits = append(splits, strconv.FormatUint(s, 10))
	}
	common := []string{"--cluster-id", opts.ClusterID, "--lease", opts.Lease.String(), "--log-level", "info"}
	for _, n := range c.nodes {
		args := []string{"start", "--role", n.Role, "--id", n.ID, "--grpc-addr", n.GRPC, "--http-addr", n.HTTP}
		switch n.Role {
		case Arbiter:
			args = append(args, "--data", filepath.Join(opts.Dir, "data", n.ID), "--raft-addr", n.Raft,
				"--gossip-addr", n.Gossip, "--step", strconv.FormatUint(opts.Step, 10))
			args = append(args, peers...)
			if len(splits) > 0 {
				args = append(args, "--shard-splits", strings.Join(splits, ","))
			}
		case AllocSvr:
			args = append(args, "--gossip-addr", n.Gossip, "--arbiters", strings.Join(arbAddrs, ","), "--drain-timeout", "5s")
		case Gateway:
			args = append(args, "--arbiters", strings.Join(arbAddrs, ","))
		case Store:
			args = append(args, "--data", filepath.Join(opts.Dir, "data", n.ID), "--raft-addr", n.Raft, "--shard", n.Shard,
				"--arbiters", strings.Join(arbAddrs, ","))
			if opts.Retention > 0 {
				args = append(args, "--retention", opts.Retention.String())
			}
			args = append(args, storePeers[n.Shard]...)
		}
		n.args = append(args, common...)
	}
	opts.Logf("starting %d nodes on the %s backend", len(c.nodes), c.be.name())
	for _, n := range c.nodes {
		if err := n.Start(); err != nil {
			return nil, err
		}
	}
	if err := c.WaitServing(ctx, 90*time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

// Backend names the backend in use.
func (c *Cluster) Backend() string { return c.be.name() }

// CanPartition reports whether the backend can cut links.
func (c *Cluster) CanPartition() bool { return c.be.canPartition() }

// Failpoints reports whether nodes serve the clock failpoint.
func (c *Cluster) Failpoints() bool { return c.opts.Failpoints }

// Nodes returns every node.
func (c *Cluster) Nodes() []*Node { return c.nodes }

func (c *Cluster) role(r string) []*Node {
	var out []*Node
	for _, n := range c.nodes {
		if n.Role == r {
			out = append(out, n)
		}
	}
	return out
}

// Arbiters returns the arbiter nodes.
func (c *Cluster) Arbiters() []*Node { return c.role(Arbiter) }

// AllocSvrs returns the AllocSvr nodes.
func (c *Cluster) AllocSvrs() []*Node { return c.role(AllocSvr) }

// Stores returns the message-store replicas of every shard (none unless
// asked for).
func (c *Cluster) Stores() []*Node { return c.role(Store) }

// Shards returns the message-store shards' ids ("s1", "s2", ...), in the
// order of their sections; none without a store.
func (c *Cluster) Shards() []string {
	var out []string
	for _, n := range c.Stores() {
		if !slices.Contains(out, n.Shard) {
			out = append(out, n.Shard)
		}
	}
	return out
}

// Retention is the store replicas' inbox retention (0: off).
func (c *Cluster) Retention() time.Duration { return c.opts.Retention }

// ShardStores returns the replicas of one message-store shard.
func (c *Cluster) ShardStores(shard string) []*Node {
	return slices.DeleteFunc(c.Stores(), func(n *Node) bool { return n.Shard != shard })
}

// Gateway returns the gateway node.
func (c *Cluster) Gateway() *Node { return c.role(Gateway)[0] }

// ArbiterAddrs returns the arbiters' gRPC addresses.
func (c *Cluster) ArbiterAddrs() []string {
	var out []string
	for _, n := range c.Arbiters() {
		out = append(out, n.GRPC)
	}
	return out
}

// Events returns what happened to nodes outside the harness's control.
func (c *Cluster) Events() []Event {
	c.eventMu.Lock()
	defer c.eventMu.Unlock()
	return append([]Event(nil), c.events...)
}

func (c *Cluster) event(node, format string, args ...any) {
	e := Event{At: time.Since(c.origin), Node: node, Msg: fmt.Sprintf(format, args...)}
	c.eventMu.Lock()
	c.events = append(c.events, e)
	c.eventMu.Unlock()
	c.opts.Logf("%s: %s", node, e.Msg)
}

// Partition makes the given links drop every packet; it replaces any
// earlier partition. blocked maps a node to the nodes it cannot reach (the
// cut is made symmetric). The harness itself always reaches every node.
func (c *Cluster) Partition(ctx context.Context, blocked map[string][]string) error {
	if !c.be.canPartition() {
		return errors.New("the local backend cannot partition the network")
	}
	return c.be.block(ctx, blocked)
}

// Heal removes every partition.
func (c *Cluster) Heal(ctx context.Context) error {
	if !c.be.canPartition() {
		return nil
	}
	return c.be.block(ctx, nil)
}

// Status asks the arbiters for the cluster's status, as a leader that has
// applied its whole log sees it; an error when none answers so (an
// arbiter's own view, marked stale, may lack recent moves and leases).
func (c *Cluster) Status(ctx context.Context) (*seqdv1.StatusResponse, error) {
	return c.status(ctx, false)
}

// status is Status; with anyView it also takes an answer marked stale
// that names a leader (enough to know who leads).
func (c *Cluster) status(ctx context.Context, anyView bool) (*seqdv1.StatusResponse, error) {
	var last error
	for _, n := range c.Arbiters() {
		if !n.Running() {
			continue
		}
		cc, err := c.pool.Get(n.GRPC)
		if err != nil {
			return nil, err
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := seqdv1.NewAdminClient(cc).Status(sctx, &seqdv1.StatusRequest{})
		cancel()
		switch {
		case err == nil && st.LeaderId != "" && (!st.Stale || anyView):
			return st, nil
		case err == nil && st.LeaderId != "":
			err = fmt.Errorf("%s gave only its own view (leader %s still catching up, or out of reach)", n.ID, st.LeaderId)
		case err == nil:
			err = fmt.Errorf("%s knows no leader", n.ID)
		}
		last = err
	}
	if last == nil {
		last = errors.New("no arbiter is running")
	}
	return nil, last
}

// Admin runs call against the running arbiters' Admin service (followers
// forward to the leader) until it answers other than UNAVAILABLE, as an
// operator's seqctl would: an election or a leader still catching up
// passes. Each attempt has up to 10 s; one that runs out (a hung arbiter)
// moves on to the next arbiter, so call must be safe to repeat. It
// returns call's last error once ctx ends.
func (c *Cluster) Admin(ctx context.Context, call func(context.Context, seqdv1.AdminClient) error) error {
	last := errors.New("no arbiter is running")
	for {
		for _, n := range c.Arbiters() {
			if !n.Running() || n.Paused() {
				continue
			}
			cc, err := c.pool.Get(n.GRPC)
			if err != nil {
				return err
			}
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = call(actx, seqdv1.NewAdminClient(cc))
			cancel()
			code := status.Code(err)
			if code != codes.Unavailable && (code != codes.DeadlineExceeded || ctx.Err() != nil) {
				return err
			}
			last = err
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Leader returns the current arbiter leader's node (one still catching up
// after its election counts).
func (c *Cluster) Leader(ctx context.Context) (*Node, error) {
	st, err := c.status(ctx, true)
	if err != nil {
		return nil, err
	}
	if n := c.byID[st.LeaderId]; n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("leader %q is not a node of this cluster", st.LeaderId)
}

// StoreLeader returns the replica that leads message-store shard shard,
// as its metrics say.
func (c *Cluster) StoreLeader(ctx context.Context, shard string) (*Node, error) {
	for _, n := range c.ShardStores(shard) {
		if !n.Running() || n.Paused() {
			continue
		}
		if lead, err := n.Metric(ctx, "seqd_store_raft_is_leader"); err == nil && lead == 1 {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no store replica of shard %s reports leading it", shard)
}

// Metric reads the first series of a gauge or counter from the node's
// /metrics, with or without labels (store metrics carry their shard;
// builds before that did not).
func (n *Node) Metric(ctx context.Context, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTP+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := noProxy.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	v, ok, err := metricValue(resp.Body, name)
	if err != nil {
		return 0, fmt.Errorf("%s's metrics: %w", n.ID, err)
	}
	if !ok {
		return 0, fmt.Errorf("%s does not report %s", n.ID, name)
	}
	return v, nil
}

// metricValue returns the value of the first series of gauge, counter or
// untyped metric name in a Prometheus text exposition.
func metricValue(text io.Reader, name string) (float64, bool, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(text)
	if err != nil {
		return 0, false, err
	}
	for _, m := range mfs[name].GetMetric() {
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true, nil
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true, nil
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true, nil
		}
	}
	return 0, false, nil
}

// noProxy talks to the nodes directly, whatever the environment says.
var noProxy = &http.Client{Transport: &http.Transport{Proxy: nil}}

// WaitServing waits until every running node answers health checks and
// the arbiters report a leader, no unassigned slot, and slots on every
// running AllocSvr.
func (c *Cluster) WaitServing(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for _, n := range c.nodes {
		if !n.Running() {
			continue
		}
		if err := n.WaitHealthy(ctx); err != nil {
			return fmt.Errorf("%s did not become healthy within %v: %w (see %s; it ends:\n%s)", n.ID, d, err, n.LogPath(), n.logTail(10))
		}
	}
	var why string
	for {
		st, err := c.Status(ctx)
		if err == nil {
			why = ""
			if st.UnassignedSlots > 0 {
				why = fmt.Sprintf("%d slots unassigned", st.UnassignedSlots)
			}
			slots := map[string]uint32{}
			for _, a := range st.Allocsvrs {
				slots[a.Id] += a.Slots
			}
			for _, n := range c.AllocSvrs() {
				if n.Running() && slots[n.ID] == 0 {
					why = n.ID + " holds no slots"
				}
			}
			for _, sh := range c.Shards() {
				if why == "" {
					if _, err := c.StoreLeader(ctx, sh); err != nil {
						why = err.Error()
					}
				}
			}
			if why == "" {
				return nil
			}
		} else {
			why = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not serving within %v: %s", d, why)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ErrClosed is returned by Node.Start once the cluster is closed.
var ErrClosed = errors.New("cluster: closed; no node starts again")

// Close kills every node and removes the backend's network; no node starts
// after it began. It is safe to call more than once and from several
// goroutines at once (an aborted run closes the cluster while its run may
// still be healing it): each call returns once everything is gone.
func (c *Cluster) Close() error {
	c.closing.Store(true)
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for _, n := range c.nodes {
		n.kill()
	}
	c.pool.Close()
	if c.be != nil {
		errs = append(errs, c.be.close())
	}
	return errors.Join(errs...)
}

// Node is one seqd process.
type Node struct {
	ID   string
	Role string
	// Shard is a store replica's shard ("s1", ...); empty for other roles.
	Shard string
	Host  string
	GRPC  string
	Raft  string
	// Gossip is the memberlist address (arbiters and AllocSvrs).
	Gossip string
	HTTP   string

	c    *Cluster
	args []string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	log      *os.File
	paused   bool
	stopping bool
	starts   int
	next     bool // runs Options.NextBinary from its next start on
}

func (n *Node) assignPorts(backend string) error {
	if backend == BackendNetns {
		n.GRPC, n.Raft, n.Gossip, n.HTTP = n.Host+":7000", n.Host+":7001", n.Host+":7002", n.Host+":7003"
		return nil
	}
	// The nodes bind these later; FreeAddr never hands out a port twice or
	// one the kernel could give to another node's port-0 listener first.
	var ports []string
	for range 4 {
		a, err := loopback.FreeAddr(n.Host)
		if err != nil {
			return err
		}
		ports = append(ports, a)
	}
	n.GRPC, n.Raft, n.Gossip, n.HTTP = ports[0], ports[1], ports[2], ports[3]
	return nil
}

// logTail returns the last lines of the node's log, for error messages
// that outlive the run directory.
func (n *Node) logTail(lines int) string {
	b, err := os.ReadFile(n.LogPath())
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// LogPath returns the node's log file.
func (n *Node) LogPath() string { return filepath.Join(n.c.opts.Dir, "logs", n.ID+".log") }

// Start starts the process (again, after Kill).
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.c.closing.Load() {
		// Close sets closing before it kills node by node under n.mu, so
		// a start either comes first and is killed, or sees it here.
		return fmt.Errorf("start %s: %w", n.ID, ErrClosed)
	}
	if n.cmd != nil {
		return fmt.Errorf("%s is already running", n.ID)
	}
	f, err := os.OpenFile(n.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	n.starts++
	fmt.Fprintf(f, "==== seqjepsen: start #%d of %s at +%.3fs ====\n", n.starts, n.ID, time.Since(n.c.origin).Seconds())
	bin := n.c.opts.Binary
	if n.next {
		bin = n.c.opts.NextBinary
	}
	argv := n.c.be.wrap(n.ID, append([]string{bin}, n.args...))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(nodeEnv(), n.c.opts.Env...)
	// If the harness dies, so do its nodes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", n.ID, err)
	}
	n.cmd, n.log, n.paused, n.stopping = cmd, f, false, false
	done := make(chan struct{})
	n.done = done
	go func() {
		err := cmd.Wait()
		n.mu.Lock()
		expected := n.stopping
		if n.cmd == cmd {
			n.cmd = nil
			n.log.Close()
		}
		n.mu.Unlock()
		close(done)
		if !expected {
			n.c.event(n.ID, "exited by itself: %v (see %s)", err, n.LogPath())
		}
	}()
	return nil
}

// Running reports whether the process is up (paused counts as up).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// Paused reports whether the process is stopped by SIGSTOP.
func (n *Node) Paused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil && n.paused
}

// PID returns the process id, or 0.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// NextBinary is the newer build store replicas can be upgraded to ("" if
// none).
func (c *Cluster) NextBinary() string { return c.opts.NextBinary }

// UseNext makes the node run the newer build (Options.NextBinary) from its
// next start on.
func (n *Node) UseNext() error {
	if n.c.opts.NextBinary == "" {
		return errors.New("the cluster has no newer build to upgrade to")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next = true
	return nil
}

// OnNext reports whether the node runs, or will run at its next start, the
// newer build.
func (n *Node) OnNext() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.next
}

// Stop sends SIGTERM, as an operator's stop would, and waits for the exit;
// after grace it kills the process.
func (n *Node) Stop(grace time.Duration) error {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	if cmd == nil {
		n.mu.Unlock()
		return nil
	}
	n.stopping = true
	if n.paused {
		cmd.Process.Signal(syscall.SIGCONT)
		n.paused = false
	}
	cmd.Process.Signal(syscall.SIGTERM)
	n.mu.Unlock()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		n.kill()
		return fmt.Errorf("%s did not stop within %v of SIGTERM; killed", n.ID, grace)
	}
}

// Kill sends SIGKILL, as a crash would, and waits for the exit.
func (n *Node) Kill() { n.kill() }

func (n *Node) kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	if cmd != nil {
		n.stopping = true
		cmd.Process.Signal(syscall.SIGKILL)
	}
	n.mu.Unlock()
	if cmd != nil {
		<-done
	}
}

// Pause sends SIGSTOP.
func (n *Node) Pause() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return fmt.Errorf("%s is not running", n.ID)
	}
	n.paused = true
	return n.cmd.Process.Signal(syscall.SIGSTOP)
}

// Resume sends SIGCONT.
func (n *Node) Resume() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return nil
	}
	n.paused = false
	return n.cmd.Process.Signal(syscall.SIGCONT)
}

// SetClockRate makes the node's lease clock run at rate through the
// test-only failpoint (binaries built with the seqdbugs tag).
func (n *Node) SetClockRate(ctx context.Context, rate float64) error {
	if !n.c.opts.Failpoints {
		return errors.New("this seqd binary has no failpoints; the harness builds one with -tags seqdbugs for the clock nemesis")
	}
	return setClockRate(ctx, n.HTTP, rate)
}

// WaitHealthy polls the gRPC health service until it reports SERVING.
func (n *Node) WaitHealthy(ctx context.Context) error {
	cc, err := grpc.NewClient(n.GRPC, DialOptions()...)
	if err != nil {
		return err
	}
	defer cc.Close()
	for {
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := healthpb.NewHealthClient(cc).Check(hctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		if !n.Running() {
			return fmt.Errorf("%s exited", n.ID)
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("status %v", resp.Status)
			}
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// nodeEnv is the harness's environment without proxy settings, so nodes
// never send their traffic anywhere but to each other.
func nodeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasSuffix(strings.ToLower(k), "_proxy") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
