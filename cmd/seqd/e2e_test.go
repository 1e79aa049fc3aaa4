package main_test

import (
	"bytes"
	"context"
	"fmt"
	"github.com/seqd/seqd/internal/testwait"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/internal/loopback"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// seqdBinary builds cmd/seqd once per test run.
func seqdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "seqd-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "seqd")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// e2eHost is this test binary's own loopback address: a process restarted
// on its old port cannot find it taken by another package's test.
var e2eHost = loopback.Host()

func freePort(t *testing.T) string {
	t.Helper()
	a, err := loopback.FreeAddr(e2eHost)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// proc is one seqd process with its log.
type proc struct {
	name string
	args []string
	cmd  *exec.Cmd
	log  *os.File
	done chan error
}

func startProc(t *testing.T, dir, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, args: args}
	p.start(t, dir)
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) start(t *testing.T, dir string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p.log = f
	p.cmd = exec.Command(seqdBinary(t), p.args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait() }()
}

func (p *proc) kill() {
	if p.cmd != nil && p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	if p.log != nil {
		p.log.Close()
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM", p.name, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not exit within 30s of SIGTERM", p.name)
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	p.log.Close()
}

func waitHealthy(t *testing.T, addr string, d time.Duration) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpcconn.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy after %v: %v", addr, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEndToEndSeparateProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries; skipped with -short")
	}
	dir := t.TempDir()
	type arb struct{ id, grpc, raft, gossip string }
	arbs := make([]arb, 3)
	var peerFlags, arbAddrs []string
	for i := range arbs {
		arbs[i] = arb{fmt.Sprintf("arb%d", i+1), freePort(t), freePort(t), freePort(t)}
		peerFlags = append(peerFlags, "--peer", fmt.Sprintf("%s=%s,%s,%s", arbs[i].id, arbs[i].raft, arbs[i].grpc, arbs[i].gossip))
		arbAddrs = append(arbAddrs, arbs[i].grpc)
	}
	common := []string{"--cluster-id", "e2e", "--lease", "1s", "--log-level", "info"}
	var arbProcs []*proc
	for _, a := range arbs {
		args := append([]string{"start", "--role", "arbiter", "--id", a.id, "--data", filepath.Join(dir, a.id),
			"--grpc-addr", a.grpc, "--raft-addr", a.raft, "--gossip-addr", a.gossip, "--http-addr", freePort(t)}, common...)
		arbProcs = append(arbProcs, startProc(t, dir, a.id, append(args, peerFlags...)...))
	}
	allocArgs := func(id, grpcAddr string) []string {
		return append([]string{"start", "--role", "allocsvr", "--id", id, "--grpc-addr", grpcAddr,
			"--gossip-addr", freePort(t), "--arbiters", strings.Join(arbAddrs, ","), "--drain-timeout", "5s"}, common...)
	}
	alloc1Addr, alloc2Addr := freePort(t), freePort(t)
	alloc1 := startProc(t, dir, "alloc1", allocArgs("alloc1", alloc1Addr)...)
	alloc2 := startProc(t, dir, "alloc2", allocArgs("alloc2", alloc2Addr)...)
	// A 3-replica message-store shard.
	var storeFlags []string
	type rep struct{ id, grpc, raft string }
	reps := make([]rep, 3)
	for i := range reps {
		reps[i] = rep{fmt.Sprintf("s1-r%d", i+1), freePort(t), freePort(t)}
		storeFlags = append(storeFlags, "--store-peer", reps[i].id+"="+reps[i].raft)
	}
	storeArgs := func(r rep) []string {
		return append(append([]string{"start", "--role", "store", "--id", r.id, "--shard", "s1", "--data", filepath.Join(dir, r.id),
			"--grpc-addr", r.grpc, "--raft-addr", r.raft, "--arbiters", strings.Join(arbAddrs, ",")}, common...), storeFlags...)
	}
	stores := make([]*proc, 3)
	for i, r := range reps {
		stores[i] = startProc(t, dir, r.id, storeArgs(r)...)
	}
	gwAddr := freePort(t)
	gw := startProc(t, dir, "gateway", append([]string{"start", "--role", "gateway", "--id", "gw1", "--grpc-addr", gwAddr,
		"--arbiters", strings.Join(arbAddrs, ",")}, common...)...)
	for _, a := range []string{arbs[0].grpc, arbs[1].grpc, arbs[2].grpc, alloc1Addr, alloc2Addr, reps[0].grpc, reps[1].grpc, reps[2].grpc, gwAddr} {
		waitHealthy(t, a, 30*time.Second)
	}
	defer func() {
		if t.Failed() {
			for _, n := range []string{"arb1", "arb2", "arb3", "alloc1", "alloc2", "s1-r1", "s1-r2", "s1-r3", "s1-r4", "gateway"} {
				b, _ := os.ReadFile(filepath.Join(dir, n+".log"))
				t.Logf("---- %s.log (tail) ----\n%s", n, tail(string(b), 3000))
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Through the gateway, as a non-Go front end would.
	gcc, err := grpc.NewClient(gwAddr, grpcconn.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer gcc.Close()
	seq := seqdv1.NewSequencerClient(gcc)
	last := map[uint64]uint64{}
	nextAll := func(stage string) {
		t.Helper()
		for k := uint64(1); k <= 2_000_000; k += 20_011 {
			resp, err := seq.Next(ctx, &seqdv1.NextRequest{Key: k})
			if err != nil {
				t.Fatalf("%s: Next(%d) via gateway: %v", stage, k, err)
			}
			if resp.Seq <= last[k] {
				t.Fatalf("%s: key %d went from %d to %d", stage, k, last[k], resp.Seq)
			}
			last[k] = resp.Seq
		}
	}
	nextAll("start")
	// A Go client bootstrapped from the gateway talks to AllocSvrs directly.
	cl, err := router.New(ctx, router.Config{Addrs: []string{gwAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if v, err := cl.Next(ctx, 1); err != nil || v <= last[1] {
		t.Fatalf("router client Next(1) = %d, %v; want > %d", v, err, last[1])
	} else {
		last[1] = v
	}

	// SIGKILL one AllocSvr: its sections move after its lease.
	alloc1.kill()
	nextAll("after kill -9 alloc1")
	// Restart it: new incarnation, numbers keep going up.
	alloc1 = startProc(t, dir, "alloc1", allocArgs("alloc1", alloc1Addr)...)
	waitHealthy(t, alloc1Addr, 30*time.Second)
	nextAll("after restart of alloc1")
	// Graceful stop of the other: planned hand-over.
	alloc2.stop(t)
	nextAll("after SIGTERM alloc2")

	// Messages through the gateway, across a kill -9 of the store leader.
	msgs := seqdv1.NewMessagesClient(gcc)
	sent := map[string]bool{}
	send := func(i int) {
		t.Helper()
		req := &seqdv1.SendRequest{Sender: 1, Recipients: []uint64{2}, ClientMsgId: fmt.Sprintf("e2e-%d", i), Body: []byte("hello"),
			Conversation: &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT, Id: 12}}
		for attempt := 0; ; attempt++ {
			resp, err := msgs.Send(ctx, req)
			if err == nil {
				sent[resp.MessageId] = true
				return
			}
			if attempt > 50 {
				t.Fatalf("Send %d: %v", i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for i := 0; i < 20; i++ {
		send(i)
	}
	leader := -1
	for i, r := range reps {
		b, _ := os.ReadFile(filepath.Join(dir, r.id+".log"))
		if strings.Contains(string(b), "entering leader state") {
			leader = i // the latest one to have led; good enough to kill a leader-ish replica
		}
	}
	if leader >= 0 {
		stores[leader].kill()
	}
	for i := 20; i < 40; i++ {
		send(i)
	}
	send(5) // a retry of an acknowledged send: deduplicated
	checkInboxes := func() {
		t.Helper()
		for _, u := range []uint64{1, 2} {
			checkInbox(t, ctx, msgs, u, sent)
		}
	}
	checkInboxes()
	if leader >= 0 {
		stores[leader] = startProc(t, dir, reps[leader].id, storeArgs(reps[leader])...)
		waitHealthy(t, reps[leader].grpc, 30*time.Second)
	}

	// Replace a store replica as the runbook says: a new one starts with
	// an empty --data and no --store-peer, AddStoreReplica makes it a
	// voter, RemoveStoreReplica takes out an original follower, which then
	// stops. With another original killed, the new replica is half the
	// majority, and every message is still there.
	r4 := rep{"s1-r4", freePort(t), freePort(t)}
	r4Proc := startProc(t, dir, r4.id, append([]string{"start", "--role", "store", "--id", r4.id, "--shard", "s1", "--data", filepath.Join(dir, r4.id),
		"--grpc-addr", r4.grpc, "--raft-addr", r4.raft, "--arbiters", strings.Join(arbAddrs, ",")}, common...)...)
	waitHealthy(t, r4.grpc, 30*time.Second)
	admin := seqdv1.NewAdminClient(gcc)
	if resp, err := admin.AddStoreReplica(ctx, &seqdv1.AddStoreReplicaRequest{Id: r4.id}); err != nil || len(resp.Voters) != 4 {
		t.Fatalf("AddStoreReplica %s: %v %v", r4.id, resp, err)
	}
	infoOf := func(addr string) *clusterv1.ReplicaInfoResponse {
		cc, err := grpc.NewClient(addr, grpcconn.DialOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		info, err := clusterv1.NewStoreNodeClient(cc).ReplicaInfo(ctx, &clusterv1.ReplicaInfoRequest{})
		if err != nil {
			return &clusterv1.ReplicaInfoResponse{}
		}
		return info
	}
	var followers []int
	lead := -1
	for i, r := range reps {
		if infoOf(r.grpc).Leader {
			lead = i
		} else {
			followers = append(followers, i)
		}
	}
	if lead < 0 || len(followers) != 2 {
		t.Fatalf("store leader %d, followers %v", lead, followers)
	}
	if resp, err := admin.RemoveStoreReplica(ctx, &seqdv1.RemoveStoreReplicaRequest{Id: reps[followers[0]].id}); err != nil || len(resp.Voters) != 3 {
		t.Fatalf("RemoveStoreReplica %s: %v %v", reps[followers[0]].id, resp, err)
	}
	stores[followers[0]].stop(t)
	stores[followers[0]] = nil
	for i := 40; i < 50; i++ {
		send(i)
	}
	deadline := time.Now().Add(30 * time.Second)
	for infoOf(r4.grpc).AppliedIndex < infoOf(reps[lead].grpc).AppliedIndex {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not catch up with the leader", r4.id)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stores[followers[1]].kill()
	stores[followers[1]] = nil
	for i := 50; i < 60; i++ {
		send(i)
	}
	checkInboxes()
	r4Proc.stop(t)
	st, err := seqdv1.NewAdminClient(gcc).Status(ctx, &seqdv1.StatusRequest{})
	if err != nil {
		t.Fatalf("status via gateway: %v", err)
	}
	if st.UnassignedSlots != 0 || len(st.Arbiters) != 3 || st.LeaderId == "" {
		t.Errorf("status: unassigned %d, arbiters %d, leader %q", st.UnassignedSlots, len(st.Arbiters), st.LeaderId)
	}
	gw.stop(t)
	for _, p := range stores {
		if p != nil {
			p.stop(t)
		}
	}
	alloc1.stop(t)
	for _, p := range arbProcs {
		p.stop(t)
	}
}

// checkInbox fails t unless user u's inbox holds every acknowledged
// message (sent) exactly once, in increasing seq order.
func checkInbox(t *testing.T, ctx context.Context, msgs seqdv1.MessagesClient, u uint64, sent map[string]bool) {
	t.Helper()
	seen := map[string]int{}
	last := uint64(0)
	r, err := msgs.Sync(ctx, &seqdv1.SyncRequest{User: u, Limit: 1000})
	if err != nil {
		t.Fatalf("Sync(%d): %v", u, err)
	}
	for _, e := range r.Events {
		if e.Seq <= last {
			t.Fatalf("user %d inbox not increasing: %d after %d", u, e.Seq, last)
		}
		last = e.Seq
		seen[e.MessageId]++
	}
	if len(seen) != len(sent) {
		t.Errorf("user %d has %d messages, %d were acknowledged", u, len(seen), len(sent))
	}
	for id := range sent {
		if seen[id] != 1 {
			t.Errorf("user %d holds %d copies of %s", u, seen[id], id)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// runSeqd runs the binary to completion and returns its exit code and output.
func runSeqd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(seqdBinary(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("seqd %v did not exit; output:\n%s", args, out.String())
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

func TestStartRejectsBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the real binary; skipped with -short")
	}
	dir := t.TempDir()
	badToml := filepath.Join(dir, "bad.toml")
	os.WriteFile(badToml, []byte("id = \"arb1\"\nroles = [\"arbiter\"\ngrpc_addr = 7\n"), 0o644)
	typoToml := filepath.Join(dir, "typo.toml")
	os.WriteFile(typoToml, []byte("id = \"arb1\"\nroles = [\"arbiter\"]\ngrpc_adr = \"127.0.0.1:1\"\n"), 0o644)
	emptyAdvToml := filepath.Join(dir, "empty-advertise.toml")
	os.WriteFile(emptyAdvToml, []byte("id = \"gw\"\nroles = [\"gateway\"]\nadvertise_host = \"\"\n"), 0o644)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	// A data dir that belongs to another cluster.
	foreign := filepath.Join(dir, "foreign")
	os.MkdirAll(foreign, 0o755)
	ident := []byte(`{"cluster_id": "other", "node_id": "arb1"}` + "\n")
	os.WriteFile(filepath.Join(foreign, "seqd-identity.json"), ident, 0o644)

	arbiter := func(extra ...string) []string {
		return append([]string{"start", "--role", "arbiter", "--id", "arb1", "--cluster-id", "mine",
			"--data", filepath.Join(dir, "d-"+fmt.Sprint(len(extra))), "--grpc-addr", freePort(t), "--raft-addr", freePort(t)}, extra...)
	}
	store := func(extra ...string) []string {
		return append([]string{"start", "--role", "store", "--id", "s1r1", "--shard", "s1", "--arbiters", "127.0.0.1:1",
			"--data", filepath.Join(dir, "s-"+fmt.Sprint(len(extra))), "--grpc-addr", freePort(t), "--raft-addr", freePort(t)}, extra...)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"malformed config", []string{"start", "--config", badToml}, "line 3"},
		{"unknown config key", []string{"start", "--config", typoToml}, "unknown keys: grpc_adr"},
		{"missing config file", []string{"start", "--config", filepath.Join(dir, "nope.toml")}, "no such file"},
		{"no role", []string{"start", "--id", "x", "--grpc-addr", "127.0.0.1:0"}, "no role given"},
		{"unknown role", []string{"start", "--id", "x", "--role", "boss", "--grpc-addr", "127.0.0.1:0"}, `unknown role "boss"`},
		{"bad id", []string{"start", "--id", "a b", "--role", "gateway", "--grpc-addr", "127.0.0.1:0", "--arbiters", "127.0.0.1:1"}, "not valid"},
		{"bad peer", arbiter("--peer", "arb1=onlyone"), "want id=raft_addr,grpc_addr"},
		{"grpc port in use", []string{"start", "--role", "gateway", "--id", "gw", "--grpc-addr", busy.Addr().String(), "--arbiters", "127.0.0.1:1"}, "already in use"},
		{"raft port in use", []string{"start", "--role", "arbiter", "--id", "arb1", "--data", filepath.Join(dir, "r"), "--grpc-addr", freePort(t), "--raft-addr", busy.Addr().String()}, "already in use"},
		{"foreign data dir", []string{"start", "--role", "arbiter", "--id", "arb1", "--cluster-id", "mine", "--data", foreign, "--grpc-addr", freePort(t), "--raft-addr", freePort(t)}, `belongs to another cluster`},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"start positional argument", []string{"start", "extra", "--id", "x"}, `unexpected argument "extra" (seqd start takes flags only)`},
		{"demo positional argument", []string{"demo", "extra", "--once"}, `unexpected argument "extra" (seqd demo takes flags only)`},
		{"demo too many arbiters", []string{"demo", "--arbiters", "9", "--once"}, "--arbiters 9: use an odd number from 1 to 7"},
		{"demo no AllocSvr", []string{"demo", "--allocsvrs", "0", "--once"}, "--allocsvrs 0: use 1 to 16"},
		{"undefined flag", []string{"start", "--bogus"}, "flag provided but not defined: -bogus"},
		{"flag given twice", []string{"start", "--id", "a", "--id", "b"}, "--id is given twice; give it once"},
		// Refused before the data dir is claimed (checked below).
		{"duplicate peer", arbiter("--peer", "arb1=127.0.0.1:5,127.0.0.1:6", "--peer", "arb1=127.0.0.1:5,127.0.0.1:6"), `peer id "arb1" appears twice`},
		{"peers without this node", arbiter("--peer", "arb2=127.0.0.1:5,127.0.0.1:6"), "do not include this node"},
		{"malformed gossip address", arbiter("--gossip-addr", "bogus", "--peer", "arb1=127.0.0.1:5,127.0.0.1:6"), `gossip address "bogus" is not host:port`},
		{"slots over 32 bits", arbiter("--slots", "4294967297"), "--slots 4294967297: at most 4294967295"},
		{"duplicate store replica", store("--store-peer", "s1r1=127.0.0.1:5", "--store-peer", "s1r1=127.0.0.1:5"), `replica "s1r1" appears twice`},
		{"store replicas without this one", store("--store-peer", "s1r2=127.0.0.1:5"), `do not include this one ("s1r1")`},
		{"negative retention", store("--retention", "-1h"), "retention -1h0m0s is negative"},
		{"negative change-log retention", store("--change-log-retention", "-1s"), "change-log retention -1s is negative"},
		{"change-log retention not a duration", store("--change-log-retention", "week"), `invalid value "week" for flag -change-log-retention`},
		{"change-log retention under a second", store("--change-log-retention", "10ms"), "change-log retention 10ms: want at least 1s"},
		{"rate limit NaN", store("--rate-limit", "NaN"), "rate limit NaN"},
		{"negative group size", store("--max-group-size", "-1"), "max group size -1 is negative"},
		{"negative dedup TTL", store("--dedup-ttl", "-1s"), "dedup TTL -1s: want at least 1s"},
		{"dedup TTL under a second", store("--dedup-ttl", "500ms"), "dedup TTL 500ms: want at least 1s"},
		{"dedup TTL not a duration", store("--dedup-ttl", "a day"), `invalid value "a day" for flag -dedup-ttl`},
		// The gRPC port is busy so that a build without the check fails
		// before it binds every interface.
		{"Raft on every interface", []string{"start", "--role", "arbiter", "--id", "arb1", "--data", filepath.Join(dir, "d-wild"),
			"--grpc-addr", busy.Addr().String(), "--raft-addr", "0.0.0.0:0"}, `--raft-addr "0.0.0.0:0" listens on every interface`},
		{"store peer on every interface", store("--store-peer", "s1r1=127.0.0.1:5", "--store-peer", "s1r2=[::]:5"), `--store-peer s1r2: raft_addr "[::]:5"`},
		{"empty --advertise-host", arbiter("--advertise-host", ""), "--advertise-host is empty"},
		{"--advertise-host with a port", arbiter("--advertise-host", "10.0.0.1:7100"), `--advertise-host "10.0.0.1:7100" has a port`},
		{"--advertise-host on every interface", arbiter("--advertise-host", "::"), `--advertise-host "::" means every interface`},
		{"--advertise-host malformed", arbiter("--advertise-host", "arb 1"), "neither an IP address nor a host name"},
		{"--advertise-host huge", arbiter("--advertise-host", strings.Repeat("h", 100000)), "is 100000 bytes"},
		{"empty advertise_host in the config", []string{"start", "--config", emptyAdvToml}, "advertise_host is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := runSeqd(t, tt.args...)
			if code == 0 {
				t.Fatalf("exit code 0, want failure; output:\n%s", out)
			}
			if strings.HasPrefix(tt.name, "demo") || strings.Contains(tt.name, "argument") || tt.name == "undefined flag" || tt.name == "flag given twice" ||
				strings.Contains(tt.name, "--advertise-host") {
				if code != 2 {
					t.Errorf("exit code %d, want 2 (bad usage)", code)
				}
			}
			if !strings.Contains(out, tt.want) {
				t.Fatalf("output does not mention %q:\n%s", tt.want, out)
			}
		})
	}
	// The refused start changed nothing in the foreign data dir.
	if b, _ := os.ReadFile(filepath.Join(foreign, "seqd-identity.json")); !bytes.Equal(b, ident) {
		t.Errorf("identity file changed: %s", b)
	}
	if entries, _ := os.ReadDir(foreign); len(entries) > 2 {
		t.Errorf("refused start left files behind: %v", entries)
	}
	// No refused start claimed a data dir: a retry with fixed flags, or
	// another cluster id, can use it.
	claimed, _ := filepath.Glob(filepath.Join(dir, "[ds]-*", "seqd-identity.json"))
	if len(claimed) > 0 {
		t.Errorf("refused starts left identities behind: %v", claimed)
	}
}

// The quick start's first command: the demo starts, shows its sample, and
// stops without printing errors (at shutdown its nodes' Raft transports
// report each other gone, which is not worth showing).
func TestDemoOnceIsClean(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, seqdBinary(t), "demo", "--once", "--addr", freePort(t), "--http-addr", "").CombinedOutput()
	if err != nil {
		t.Fatalf("seqd demo --once: %v\n%s", err, out)
	}
	s := string(out)
	_, after, done := strings.Cut(s, "\ndone (--once)")
	if !strings.Contains(s, "Sync(user 2) = 1 event(s)") || !done || strings.Contains(after, "level=ERROR") || strings.Contains(s, "try ") {
		t.Fatalf("seqd demo --once printed:\n%s", s)
	}
}

// TestDemoKeepsItsData: the README's "--data DIR keeps the data" — a demo
// started again on its directory comes back with what it held (its Raft
// voters on the addresses their stored membership names), and its metrics
// listener serves /metrics and /healthz as a node's does, nothing else.
func TestDemoKeepsItsData(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	out, err := exec.CommandContext(ctx, seqdBinary(t), "demo", "--once", "--data", dir, "--addr", freePort(t), "--http-addr", "").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Sync(user 2) = 1 event(s)") {
		t.Fatalf("first seqd demo --data: %v\n%s", err, out)
	}

	httpAddr := freePort(t)
	var buf testwait.Buffer
	cmd := exec.CommandContext(ctx, seqdBinary(t), "demo", "--data", dir, "--addr", freePort(t), "--http-addr", httpAddr)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for !strings.Contains(buf.String(), "\nready\n") {
		select {
		case err := <-exited:
			t.Fatalf("second seqd demo --data exited (%v) before it was ready:\n%s", err, buf.String())
		case <-ctx.Done():
			t.Fatalf("second seqd demo --data did not get ready:\n%s", buf.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if s := buf.String(); !strings.Contains(s, "Sync(user 2) = 2 event(s)") {
		t.Fatalf("second seqd demo --data does not hold the first one's message:\n%s", s)
	}
	for path, want := range map[string]int{"/healthz": http.StatusOK, "/metrics": http.StatusOK, "/": http.StatusNotFound, "/nope": http.StatusNotFound} {
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
		if path == "/healthz" && strings.TrimSpace(string(body)) != "ok" || path == "/metrics" && !strings.Contains(string(body), "seqd_store_") {
			t.Errorf("GET %s: %.200q", path, body)
		}
	}
	cmd.Process.Signal(os.Interrupt)
	if err := <-exited; err != nil {
		t.Fatalf("second seqd demo after Ctrl-C: %v\n%s", err, buf.String())
	}
}
