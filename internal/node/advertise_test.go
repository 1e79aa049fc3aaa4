package node

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/arbiter"
	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/internal/raftnode"
	"github.com/seqd/seqd/internal/testwait"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// advHost is the host the nodes below advertise: another loopback
// address than the 127.0.0.1 they listen on, so an address taken from a
// listener shows.
const advHost = "127.0.0.2"

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return port
}

func hostOf(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	return host
}

// startNode builds a node of cfg, with Raft timings short enough for tests
// where cfg leaves them out, starts it, and closes it when the test ends.
func startNode(ctx context.Context, t *testing.T, cfg Config) *Node {
	t.Helper()
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout, cfg.ElectionTimeout = 200*time.Millisecond, 200*time.Millisecond
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// Without --advertise-host, a listener whose address other nodes are told
// must not bind every interface; the gateway's gRPC and the metrics may.
func TestValidateRefusesEveryInterface(t *testing.T) {
	arb := func(c *Config) { c.Roles, c.DataDir, c.RaftAddr = []string{RoleArbiter}, "/d", "127.0.0.1:7101" }
	alloc := func(c *Config) { c.Roles, c.Arbiters = []string{RoleAllocSvr}, []string{"127.0.0.1:7100"} }
	store := func(c *Config) {
		c.Roles, c.DataDir, c.Shard, c.RaftAddr, c.Arbiters = []string{RoleStore}, "/d", "s1", "127.0.0.1:7501", []string{"127.0.0.1:7100"}
	}
	gateway := func(c *Config) { c.Roles, c.Arbiters = []string{RoleGateway}, []string{"127.0.0.1:7100"} }
	for _, wild := range []string{":7100", "0.0.0.0:7100", "[::]:7100", "[::ffff:0.0.0.0]:7100", "[0:0:0:0:0:0:0:0]:0"} {
		for _, tc := range []struct {
			name string
			role func(*Config)
			set  func(*Config)
			flag string // the flag the error names; "" = accepted
		}{
			{"arbiter gRPC", arb, func(c *Config) { c.GRPCAddr = wild }, "--grpc-addr"},
			{"arbiter Raft", arb, func(c *Config) { c.RaftAddr = wild }, "--raft-addr"},
			{"arbiter gossip", arb, func(c *Config) { c.GossipAddr = wild }, "--gossip-addr"},
			{"allocsvr gRPC", alloc, func(c *Config) { c.GRPCAddr = wild }, "--grpc-addr"},
			{"allocsvr gossip", alloc, func(c *Config) { c.GossipAddr = wild }, "--gossip-addr"},
			{"store gRPC", store, func(c *Config) { c.GRPCAddr = wild }, "--grpc-addr"},
			{"store Raft", store, func(c *Config) { c.RaftAddr = wild }, "--raft-addr"},
			// Nobody is told these.
			{"gateway gRPC", gateway, func(c *Config) { c.GRPCAddr = wild }, ""},
			{"metrics", arb, func(c *Config) { c.HTTPAddr = wild }, ""},
			{"store gossip (unused)", store, func(c *Config) { c.GossipAddr = wild }, ""},
		} {
			cfg := Config{ID: "n1", GRPCAddr: "127.0.0.1:7100"}
			tc.role(&cfg)
			tc.set(&cfg)
			err := cfg.Validate()
			if tc.flag == "" {
				if err != nil {
					t.Errorf("%s on %q: %v, want it accepted", tc.name, wild, err)
				}
				continue
			}
			if err == nil {
				t.Errorf("%s on %q: accepted without --advertise-host", tc.name, wild)
				continue
			}
			for _, want := range []string{tc.flag + ` "` + wild + `"`, "listens on every interface", "--advertise-host"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s on %q: error %q does not say %q", tc.name, wild, err, want)
				}
			}
			// With --advertise-host the same listener is fine.
			cfg.AdvertiseHost = "10.0.0.1"
			if err := cfg.Validate(); err != nil {
				t.Errorf("%s on %q with --advertise-host: %v", tc.name, wild, err)
			}
		}
	}

	// A listener handed in is checked by the address it has.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := Config{ID: "a1", GRPCListener: ln, GRPCAddr: ":0", Roles: []string{RoleAllocSvr}, Arbiters: []string{"127.0.0.1:7100"}}
	if err := cfg.Validate(); err != nil {
		t.Errorf("a gRPC listener on 127.0.0.1: %v", err)
	}
	cfg.GRPCListener = fakeListener{&net.TCPAddr{IP: net.IPv6unspecified, Port: 7100}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `--grpc-addr "[::]:7100" listens on every interface`) {
		t.Errorf("a gRPC listener on [::]: %v, want it refused", err)
	}
}

type fakeListener struct{ addr net.Addr }

func (fakeListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (fakeListener) Close() error              { return nil }
func (l fakeListener) Addr() net.Addr          { return l.addr }

func TestValidateAdvertiseHostAndPeers(t *testing.T) {
	base := func() Config {
		return Config{ID: "arb1", Roles: []string{RoleArbiter}, DataDir: "/d", GRPCAddr: "127.0.0.1:7100", RaftAddr: "127.0.0.1:7101"}
	}
	for host, want := range map[string]string{
		"0.0.0.0":                  "means every interface",
		"::":                       "means every interface",
		"10.0.0.1:7100":            "has a port",
		"[::1]:7100":               "has a port",
		"arb 1":                    "neither an IP address nor a host name",
		"arb1\n":                   "neither an IP address nor a host name",
		strings.Repeat("h", 1<<20): "is 1048576 bytes",
	} {
		cfg := base()
		cfg.AdvertiseHost = host
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), "--advertise-host") || !strings.Contains(err.Error(), want) {
			t.Errorf("--advertise-host %.20q: %v, want an error saying %q", host, err, want)
		}
	}
	for _, host := range []string{"10.0.0.1", "::1", "arb1", "arb1.dc1.example"} {
		cfg := base()
		cfg.AdvertiseHost = host
		if err := cfg.Validate(); err != nil {
			t.Errorf("--advertise-host %q: %v", host, err)
		}
	}

	// The initial voters and replicas are addresses every node dials; the
	// roles check them (arbiter.Config, store.Config), and the node's
	// check includes theirs.
	cfg := base()
	cfg.GRPCAddr, cfg.RaftAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Peers = []arbiter.Peer{{ID: "arb1", RaftAddr: "0.0.0.0:7101", GRPCAddr: "127.0.0.1:7100"}}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), `--peer arb1: raft_addr "0.0.0.0:7101"`) {
		t.Errorf("a peer on every interface: %v, want it refused", err)
	}
}

// memberlist tells the pool the IP it binds, so with --advertise-host a
// gossip address on every interface binds the advertised host instead.
func TestGossipBind(t *testing.T) {
	for _, tc := range []struct {
		name      string
		roles     []string
		gossip    string
		advertise string
		want      string
	}{
		{"no advertise host", []string{RoleArbiter}, "127.0.0.1:0", "", "127.0.0.1:0"},
		{"specific host stays", []string{RoleArbiter}, "127.0.0.1:7102", advHost, "127.0.0.1:7102"},
		{"empty host", []string{RoleArbiter}, ":7102", advHost, advHost + ":7102"},
		{"0.0.0.0", []string{RoleAllocSvr}, "0.0.0.0:0", advHost, advHost + ":0"},
		{"::", []string{RoleArbiter, RoleAllocSvr}, "[::]:7102", advHost, advHost + ":7102"},
		{"no gossip", []string{RoleArbiter}, "", advHost, ""},
		{"store (no gossip)", []string{RoleStore}, ":7102", advHost, ":7102"},
	} {
		got, err := gossipBind(Config{Roles: tc.roles, GossipAddr: tc.gossip, AdvertiseHost: tc.advertise})
		if err != nil || got != tc.want {
			t.Errorf("%s: gossipBind = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	// 192.0.2.1 (TEST-NET-1) is no address of this machine: gossip could
	// not bind it, and says so before anything starts.
	_, err := gossipBind(Config{Roles: []string{RoleArbiter}, GossipAddr: ":7102", AdvertiseHost: "192.0.2.1"})
	if err == nil || !strings.Contains(err.Error(), "--gossip-addr \":7102\" with --advertise-host \"192.0.2.1\"") || !strings.Contains(err.Error(), "binds 192.0.2.1:7102") {
		t.Errorf("gossip on a host that is not local: %v, want an error naming both flags", err)
	}
}

// startAdvertisingArbiter starts the one voter of a cluster, listening on
// 127.0.0.1 and advertising advHost, with gossip on gossipAddr and any
// further roles.
func startAdvertisingArbiter(ctx context.Context, t *testing.T, gossipAddr string, roles ...string) (n *Node, grpcLn, raftLn net.Listener) {
	t.Helper()
	grpcLn, raftLn = listenLoopback(t), listenLoopback(t)
	n = startNode(ctx, t, Config{
		ID: "arb1", ClusterID: "adv", Roles: append([]string{RoleArbiter}, roles...), DataDir: t.TempDir(),
		GRPCListener: grpcLn, RaftListener: raftLn, GossipAddr: gossipAddr, GossipProfile: "local", AdvertiseHost: advHost,
		Peers:       []arbiter.Peer{{ID: "arb1", RaftAddr: advAddr(t, raftLn), GRPCAddr: advAddr(t, grpcLn)}},
		SectionSize: 1000, NumSlots: 4, Lease: time.Second, DrainTimeout: time.Second,
	})
	return n, grpcLn, raftLn
}

// advAddr is the address a node advertising advHost tells for ln.
func advAddr(t *testing.T, ln net.Listener) string {
	return net.JoinHostPort(advHost, portOf(t, ln.Addr().String()))
}

// Nodes listening on 127.0.0.1 with --advertise-host 127.0.0.2 are known
// to the others at 127.0.0.2: the arbiter's record of itself (Raft, gRPC,
// gossip), an AllocSvr's registration, a store replica's registration.
func TestAdvertiseHostReachesTheArbiters(t *testing.T) {
	adv := func(ln net.Listener) string { return advAddr(t, ln) }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, grpcLn, raftLn := startAdvertisingArbiter(ctx, t, ":0")
	fsm := a.Arbiter().FSM()
	testwait.For(t, 20*time.Second, "the arbiter's record of itself", func() bool {
		r := fsm.Arbiters()["arb1"]
		return r != nil && r.GossipAddr != "" && r.RaftAddr != ""
	})
	rec := fsm.Arbiters()["arb1"]
	if rec.RaftAddr != adv(raftLn) || rec.GrpcAddr != adv(grpcLn) || hostOf(rec.GossipAddr) != advHost {
		t.Errorf("the arbiter's record: raft %s, grpc %s, gossip %s; want raft %s, grpc %s, gossip on %s",
			rec.RaftAddr, rec.GrpcAddr, rec.GossipAddr, adv(raftLn), adv(grpcLn), advHost)
	}

	aGRPC := listenLoopback(t)
	startNode(ctx, t, Config{
		ID: "alloc1", ClusterID: "adv", Roles: []string{RoleAllocSvr}, GRPCListener: aGRPC, GossipAddr: "0.0.0.0:0", GossipProfile: "local",
		AdvertiseHost: advHost, Arbiters: []string{grpcLn.Addr().String()}, DrainTimeout: time.Second,
	})
	testwait.For(t, 20*time.Second, "the AllocSvr's registration", func() bool { return fsm.Node("alloc1") != nil })
	if nr := fsm.Node("alloc1"); nr.Addr != adv(aGRPC) || hostOf(nr.GossipAddr) != advHost {
		t.Errorf("the AllocSvr registered at %s with gossip %s; want %s and gossip on %s", nr.Addr, nr.GossipAddr, adv(aGRPC), advHost)
	}

	sGRPC, sRaft := listenLoopback(t), listenLoopback(t)
	startNode(ctx, t, Config{
		ID: "s1-r1", ClusterID: "adv", Roles: []string{RoleStore}, Shard: "s1", DataDir: t.TempDir(),
		GRPCListener: sGRPC, RaftListener: sRaft, AdvertiseHost: advHost,
		Arbiters:   []string{grpcLn.Addr().String()},
		StorePeers: []raftnode.Peer{{ID: "s1-r1", Addr: adv(sRaft)}},
	})
	var replicas []*seqdv1.ReplicaInfo
	for _, sh := range fsm.RoutingTable().Shards {
		if sh.Id == "s1" {
			replicas = sh.Replicas
		}
	}
	if len(replicas) != 1 || replicas[0].Id != "s1-r1" || replicas[0].Addr != adv(sGRPC) {
		t.Errorf("shard s1's replicas in the routing table: %v; want s1-r1 at %s", replicas, adv(sGRPC))
	}

	// The arbiter refuses a join at addresses nobody else can dial.
	cc, err := grpc.NewClient(grpcLn.Addr().String(), grpcconn.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for _, req := range []*seqdv1.JoinArbiterRequest{
		{Id: "arb9", RaftAddr: "0.0.0.0:7301", GrpcAddr: "127.0.0.9:7300"},
		{Id: "arb9", RaftAddr: "127.0.0.9:7301", GrpcAddr: "[::]:7300"},
		{Id: "arb9", RaftAddr: "127.0.0.9:7301", GrpcAddr: "127.0.0.9:7300", GossipAddr: "0.0.0.0:7302"},
	} {
		jctx, jcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := seqdv1.NewAdminClient(cc).JoinArbiter(jctx, req)
		jcancel()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "other nodes cannot dial it") {
			t.Errorf("JoinArbiter(raft %s, grpc %s, gossip %s): %v; want INVALID_ARGUMENT saying other nodes cannot dial it",
				req.RaftAddr, req.GrpcAddr, req.GossipAddr, err)
		}
	}
}

// A --gossip-addr with a host of its own still binds there, and with
// --advertise-host the arbiter and AllocSvr tell the others the advertised
// host with the gossip port (behind NAT the bound address is not the one
// peers reach).
func TestGossipOnItsOwnHostAdvertisesTheHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, _, _ := startAdvertisingArbiter(ctx, t, "127.0.0.1:0", RoleAllocSvr)
	fsm := a.Arbiter().FSM()
	testwait.For(t, 20*time.Second, "the arbiter's record of itself and the AllocSvr's registration", func() bool {
		r := fsm.Arbiters()["arb1"]
		return r != nil && r.GossipAddr != "" && fsm.Node("arb1") != nil
	})
	for what, addr := range map[string]string{"arbiter": fsm.Arbiters()["arb1"].GossipAddr, "AllocSvr": fsm.Node("arb1").GossipAddr} {
		if hostOf(addr) != advHost || portOf(t, addr) == "0" {
			t.Errorf("the %s's gossip address is %s, want %s with the bound port", what, addr, advHost)
			continue
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", portOf(t, addr)), time.Second)
		if err != nil {
			t.Errorf("the %s's gossip, advertised at %s, does not listen on 127.0.0.1 (--gossip-addr): %v", what, addr, err)
			continue
		}
		c.Close()
	}
}

// joinRecorder is an arbiter's Admin service that records JoinArbiter.
type joinRecorder struct {
	seqdv1.UnimplementedAdminServer
	mu   sync.Mutex
	reqs []*seqdv1.JoinArbiterRequest
}

func (j *joinRecorder) JoinArbiter(_ context.Context, req *seqdv1.JoinArbiterRequest) (*seqdv1.JoinArbiterResponse, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.reqs = append(j.reqs, req)
	return &seqdv1.JoinArbiterResponse{}, nil
}

// An arbiter started with --join tells the group its advertised
// addresses, each with its listener's port, its gossip bound (from the
// wildcard it was given) on the advertised host.
func TestJoinSendsAdvertisedAddresses(t *testing.T) {
	rec := &joinRecorder{}
	srv := grpc.NewServer()
	seqdv1.RegisterAdminServer(srv, rec)
	ln := listenLoopback(t)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	grpcLn, raftLn := listenLoopback(t), listenLoopback(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	startNode(ctx, t, Config{
		ID: "arb4", Roles: []string{RoleArbiter}, DataDir: t.TempDir(), Join: ln.Addr().String(),
		GRPCListener: grpcLn, RaftListener: raftLn, GossipAddr: ":0", GossipProfile: "local", AdvertiseHost: advHost,
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) != 1 {
		t.Fatalf("%d JoinArbiter calls, want 1", len(rec.reqs))
	}
	req := rec.reqs[0]
	for _, a := range []struct {
		what, got string
		ln        net.Listener
	}{{"gRPC", req.GrpcAddr, grpcLn}, {"Raft", req.RaftAddr, raftLn}} {
		if want := net.JoinHostPort(advHost, portOf(t, a.ln.Addr().String())); a.got != want {
			t.Errorf("joined with %s address %s, want %s (listening on %s)", a.what, a.got, want, a.ln.Addr())
		}
	}
	if hostOf(req.GossipAddr) != advHost || portOf(t, req.GossipAddr) == "0" {
		t.Errorf("joined with gossip address %s, want %s and the bound port", req.GossipAddr, advHost)
	}
}
