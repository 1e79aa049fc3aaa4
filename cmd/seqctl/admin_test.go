package main

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/internal/localcluster"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// section returns the lines of a text table from the one starting with
// header to the next blank line.
func section(t *testing.T, out, header string) [][]string {
	t.Helper()
	for _, block := range strings.Split(out, "\n\n") {
		if strings.HasPrefix(block, header) {
			return fields(block)[1:]
		}
	}
	t.Fatalf("no table headed %q in:\n%s", header, out)
	return nil
}

// expandRanges parses "0-3,8" back into slot numbers.
func expandRanges(t *testing.T, s string) []uint32 {
	t.Helper()
	if s == "-" {
		return nil
	}
	var out []uint32
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 32)
		if err != nil {
			t.Fatalf("range %q: %v", part, err)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 32); err != nil || b <= a {
				t.Fatalf("range %q: bad upper bound", part)
			}
		}
		for i := a; i <= b; i++ {
			out = append(out, uint32(i))
		}
	}
	return out
}

func TestRoutesAccountsForEverySlot(t *testing.T) {
	addr := sharedCluster(t)
	var table seqdv1.RoutingTable
	if err := protojson.Unmarshal([]byte(ok(t, "--addr", addr, "--json", "routes")), &table); err != nil {
		t.Fatalf("routes --json: %v", err)
	}
	if table.NumSlots == 0 || len(table.Slots) != int(table.NumSlots) || len(table.Nodes) != 2 {
		t.Fatalf("routes --json: %d slots listed of %d, %d nodes", len(table.Slots), table.NumSlots, len(table.Nodes))
	}

	out := ok(t, "--addr", addr, "routes")
	if !strings.Contains(out, "slots         "+strconv.Itoa(int(table.NumSlots))+"\n") {
		t.Errorf("routes does not show %d slots:\n%s", table.NumSlots, out)
	}
	seen := make([]int, table.NumSlots)
	owners := map[string]int{}
	for _, r := range section(t, out, "NODE") {
		if len(r) != 5 {
			t.Fatalf("row %q: want NODE ADDR STATE SLOTS RANGES", r)
		}
		slots := expandRanges(t, r[4])
		if n, _ := strconv.Atoi(r[3]); n != len(slots) {
			t.Errorf("row %q: SLOTS says %d, RANGES hold %d", r, n, len(slots))
		}
		for _, s := range slots {
			if s >= table.NumSlots {
				t.Fatalf("row %q: slot %d out of range", r, s)
			}
			seen[s]++
		}
		owners[r[0]] = len(slots)
	}
	for s, n := range seen {
		if n != 1 {
			t.Errorf("slot %d listed %d times", s, n)
		}
	}
	if _, ok := owners["(unassigned)"]; !ok || len(owners) != 3 {
		t.Errorf("routes rows %v: want both AllocSvrs and (unassigned)", owners)
	}
	for i, s := range table.Slots {
		if owners[s.Owner] == 0 {
			t.Errorf("slot %d is owned by %q, which the text table gives no slots", i, s.Owner)
		}
	}
}

func TestStatus(t *testing.T) {
	addr := sharedCluster(t)
	var st seqdv1.StatusResponse
	if err := protojson.Unmarshal([]byte(ok(t, "--addr", addr, "--json", "status")), &st); err != nil {
		t.Fatalf("status --json: %v", err)
	}
	leaders := 0
	for _, a := range st.Arbiters {
		if a.Role == "leader" {
			leaders++
			if a.Id != st.LeaderId {
				t.Errorf("arbiter %s has role leader but leader_id is %q", a.Id, st.LeaderId)
			}
		}
	}
	if len(st.Arbiters) != 3 || leaders != 1 {
		t.Errorf("status: %d arbiters with %d leaders, want 3 and 1", len(st.Arbiters), leaders)
	}
	if len(st.Allocsvrs) != 2 {
		t.Fatalf("status: %d AllocSvrs, want 2", len(st.Allocsvrs))
	}

	out := ok(t, "--addr", addr, "status")
	if !strings.Contains(out, "leader           "+st.LeaderId+" at ") {
		t.Errorf("status does not name leader %s:\n%s", st.LeaderId, out)
	}
	arbs := section(t, out, "ARBITER")
	roles := map[string]int{}
	for _, r := range arbs {
		roles[r[1]]++
	}
	if len(arbs) != 3 || roles["leader"] != 1 || roles["voter"] != 2 {
		t.Errorf("arbiter table has %d rows, roles %v:\n%s", len(arbs), roles, out)
	}
	var total uint32
	for _, r := range section(t, out, "ALLOCSVR") {
		if len(r) < 5 || !strings.HasPrefix(r[0], "alloc") || r[2] != "active" {
			t.Errorf("AllocSvr row %q: want an active allocN", r)
			continue
		}
		n, _ := strconv.Atoi(r[3])
		total += uint32(n)
	}
	if total != st.NumSlots || !strings.Contains(out, "(0 unassigned, 0 moving)") {
		t.Errorf("AllocSvrs own %d slots of %d:\n%s", total, st.NumSlots, out)
	}
}

func TestDrainWaitMovesEverySlot(t *testing.T) {
	c := ownCluster(t)
	addr := c.GatewayAddr()
	before := seqTable(t, ok(t, "--addr", addr, "next", "1", "2", "3"))

	out := ok(t, "--addr", addr, "drain", "alloc1", "--wait", "--wait-timeout", "20s")
	if !strings.HasSuffix(out, "alloc1: drained; 0 slots remaining\n") {
		t.Errorf("drain --wait output:\n%s", out)
	}
	var table seqdv1.RoutingTable
	if err := protojson.Unmarshal([]byte(ok(t, "--addr", addr, "--json", "routes")), &table); err != nil {
		t.Fatal(err)
	}
	for i, s := range table.Slots {
		if s.Owner != "alloc2" {
			t.Errorf("after draining alloc1, slot %d is owned by %q", i, s.Owner)
		}
	}
	var st seqdv1.StatusResponse
	if err := protojson.Unmarshal([]byte(ok(t, "--addr", addr, "--json", "status")), &st); err != nil {
		t.Fatal(err)
	}
	for _, a := range st.Allocsvrs {
		switch {
		case a.Id == "alloc1" && (a.Slots != 0 || a.State != seqdv1.NodeState_NODE_STATE_DRAINING):
			t.Errorf("alloc1 after drain: %d slots, %v", a.Slots, a.State)
		case a.Id == "alloc2" && a.Slots != st.NumSlots:
			t.Errorf("alloc2 after drain owns %d of %d slots", a.Slots, st.NumSlots)
		}
	}

	// The hand-over keeps every key's seqs going up.
	after := seqTable(t, ok(t, "--addr", addr, "next", "1", "2", "3"))
	for i := range before {
		if after[i][1] <= before[i][1] {
			t.Errorf("key %d: seq %d after the drain, %d before", before[i][0], after[i][1], before[i][1])
		}
	}

	// Draining the last AllocSvr could not finish: nobody can take its
	// slots. It is refused, and alloc2 stays active.
	r := seqctl(t, "--addr", addr, "drain", "alloc2", "--wait", "--wait-timeout", "5s")
	if r.code != 3 || !strings.Contains(r.stderr, "no other AllocSvr is active and alive to take alloc2's 256 slots") {
		t.Errorf("drain of the last AllocSvr: exit %d, stderr %q; want 3 and a refusal", r.code, r.stderr)
	}
	if err := protojson.Unmarshal([]byte(ok(t, "--addr", addr, "--json", "status")), &st); err != nil {
		t.Fatal(err)
	}
	for _, a := range st.Allocsvrs {
		if a.Id == "alloc2" && a.State != seqdv1.NodeState_NODE_STATE_ACTIVE {
			t.Errorf("alloc2 after the refused drain: %v", a.State)
		}
	}

	// Undrain both: the arbiters spread the slots over them again.
	for _, n := range []string{"alloc1", "alloc2"} {
		if out := ok(t, "--addr", addr, "undrain", n); !strings.Contains(out, n+": active") {
			t.Errorf("undrain %s printed %q", n, out)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st seqdv1.StatusResponse
		if err := protojson.Unmarshal([]byte(ok(t, "--addr", addr, "--json", "status")), &st); err != nil {
			t.Fatal(err)
		}
		balanced := len(st.Allocsvrs) == 2
		for _, a := range st.Allocsvrs {
			balanced = balanced && a.State == seqdv1.NodeState_NODE_STATE_ACTIVE && a.Slots == st.NumSlots/2
		}
		if balanced {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after undrain the slots were not spread over both AllocSvrs: %v", st.Allocsvrs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := seqctl(t, "--addr", addr, "undrain", "ghost"); r.code != 3 || !strings.Contains(r.stderr, "ghost") {
		t.Errorf("undrain ghost: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestAdminRefusalsExit3WithServerMessage(t *testing.T) {
	addr := sharedCluster(t)
	var st seqdv1.StatusResponse
	if err := protojson.Unmarshal([]byte(ok(t, "--addr", addr, "--json", "status")), &st); err != nil {
		t.Fatalf("status --json: %v", err)
	}
	arb := st.Arbiters[0]
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"drain", "nosuch"}, `no AllocSvr named "nosuch" is registered`},
		{[]string{"arbiter", "remove", "arb9"}, `"arb9" is not an arbiter of this group`},
		// A join must not move a member, or take a member's address.
		{[]string{"arbiter", "join", arb.Id, "--raft-addr", "127.0.0.1:1", "--grpc-addr", "127.0.0.1:2"},
			arb.Id + " is already an arbiter, with Raft address " + arb.RaftAddr},
		{[]string{"arbiter", "join", arb.Id, "--raft-addr", arb.RaftAddr, "--grpc-addr", "127.0.0.1:2"},
			arb.Id + " is already an arbiter"},
		{[]string{"arbiter", "join", "arb9", "--raft-addr", arb.RaftAddr, "--grpc-addr", "127.0.0.1:2"},
			"Raft address " + arb.RaftAddr + " belongs to arbiter " + arb.Id},
	} {
		r := seqctl(t, append([]string{"--addr", addr}, tc.args...)...)
		if r.code != 3 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 3 (refused) and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	// A join with addresses nobody can dial would add a voter that never
	// votes; the server refuses it (seqctl checks first, so call it raw).
	cc, err := grpc.NewClient(addr, grpcconn.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, req := range []*seqdv1.JoinArbiterRequest{
		{Id: "arbY", RaftAddr: "not an address", GrpcAddr: "127.0.0.1:2"},
		{Id: "arbY", RaftAddr: "127.0.0.1:3", GrpcAddr: "bar:99999999"},
		{Id: "arbY", RaftAddr: "127.0.0.1:3", GrpcAddr: "127.0.0.1:2", GossipAddr: "foo:0"},
	} {
		_, err := seqdv1.NewAdminClient(cc).JoinArbiter(ctx, req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "_addr") {
			t.Errorf("join %v: %v, want INVALID_ARGUMENT naming the address", req, err)
		}
	}
	// The refused joins changed nothing; the same join again is a no-op.
	ok(t, "--addr", addr, "arbiter", "join", arb.Id, "--raft-addr", arb.RaftAddr, "--grpc-addr", arb.GrpcAddr)
	var after seqdv1.StatusResponse
	if err := protojson.Unmarshal([]byte(ok(t, "--addr", addr, "--json", "status")), &after); err != nil {
		t.Fatalf("status --json: %v", err)
	}
	if len(after.Arbiters) != len(st.Arbiters) {
		t.Errorf("%d arbiters after the refused joins, were %d", len(after.Arbiters), len(st.Arbiters))
	}
	for _, a := range after.Arbiters {
		if a.Id == arb.Id && (a.RaftAddr != arb.RaftAddr || a.GrpcAddr != arb.GrpcAddr) {
			t.Errorf("arbiter %s is now at %s and %s, was at %s and %s", a.Id, a.RaftAddr, a.GrpcAddr, arb.RaftAddr, arb.GrpcAddr)
		}
	}
}

// Removing a group's only voter is refused with a reason, not Raft's
// internal message.
func TestArbiterRemoveLastVoter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := localcluster.Start(ctx, localcluster.Options{Fast: true, Lease: time.Second, Arbiters: 1})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	var st seqdv1.StatusResponse
	if err := protojson.Unmarshal([]byte(ok(t, "--addr", c.ArbiterAddrs()[0], "--json", "status")), &st); err != nil {
		t.Fatalf("status --json: %v", err)
	}
	r := seqctl(t, "--addr", c.ArbiterAddrs()[0], "arbiter", "remove", st.LeaderId)
	if want := st.LeaderId + " is the group's last voter"; r.code != 3 || !strings.Contains(r.stderr, want) {
		t.Fatalf("remove last voter: exit %d, stderr %q; want 3 and %q", r.code, r.stderr, want)
	}
}

// A rolling restart: with alloc1 stopped, alloc2 is the last AllocSvr, and
// a waiting Drain of it (what an AllocSvr does on SIGTERM) waits for a
// taker instead of being refused; once alloc1 is back, alloc2's slots move
// to it.
func TestWaitingDrainWaitsForATaker(t *testing.T) {
	c := ownCluster(t)
	if err := c.StopAllocSvr(0); err != nil {
		t.Fatalf("stopping alloc1: %v", err)
	}
	cc, err := grpc.NewClient(c.GatewayAddr(), grpcconn.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		resp *seqdv1.DrainResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := seqdv1.NewAdminClient(cc).Drain(ctx, &seqdv1.DrainRequest{Node: "alloc2", Wait: true})
		done <- result{resp, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("the drain of the last AllocSvr answered before any taker came: %v %v", r.resp, r.err)
	case <-time.After(time.Second):
	}
	if err := c.RestartAllocSvr(ctx, 0); err != nil {
		t.Fatalf("restarting alloc1: %v", err)
	}
	r := <-done
	if r.err != nil || r.resp.RemainingSlots != 0 {
		t.Fatalf("drain of alloc2 once alloc1 was back: %v %v, want every slot moved", r.resp, r.err)
	}
}

// A dead AllocSvr keeps its registration and its slots while no live one
// can take them: status says they are not served.
func TestStatusShowsSlotsNotServed(t *testing.T) {
	st := &seqdv1.StatusResponse{ClusterId: "c", NumSlots: 256, Allocsvrs: []*seqdv1.AllocSvrStatus{
		{Id: "alloc1", State: seqdv1.NodeState_NODE_STATE_ACTIVE, Slots: 256, Lease: "expired"},
		{Id: "alloc2", State: seqdv1.NodeState_NODE_STATE_ACTIVE, Slots: 0, Lease: "valid"},
	}}
	var out bytes.Buffer
	if err := printStatus(&env{stdout: &out}, st); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if !strings.Contains(s, "256 (0 unassigned, 0 moving, 256 held by AllocSvrs whose lease ran out: not served)") {
		t.Errorf("slots line:\n%s", s)
	}
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "alloc1") && !strings.Contains(l, "active (not serving)") || strings.HasPrefix(l, "alloc2") && strings.Contains(l, "not serving") {
			t.Errorf("row %q", l)
		}
	}
}

// staleAdmin answers Status from a script of answers, the last one for
// good.
type staleAdmin struct {
	seqdv1.UnimplementedAdminServer
	answers chan *seqdv1.StatusResponse
	mu      sync.Mutex
	last    *seqdv1.StatusResponse
}

func (a *staleAdmin) Status(context.Context, *seqdv1.StatusRequest) (*seqdv1.StatusResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case st := <-a.answers:
		a.last = st
	default:
	}
	return a.last, nil
}

// drain --wait polls Status across arbiter elections; an answer that is
// one arbiter's own view (a leader still applying its log) can lack the
// node or show it with no slots yet. It is not taken for the end of the
// drain: only a caught-up leader's answer counts.
func TestDrainWaitIgnoresStaleStatus(t *testing.T) {
	node := func(slots uint32) []*seqdv1.AllocSvrStatus {
		return []*seqdv1.AllocSvrStatus{{Id: "alloc1", Slots: slots, Lease: "valid"}}
	}
	fake := &staleAdmin{answers: make(chan *seqdv1.StatusResponse, 4)}
	for _, st := range []*seqdv1.StatusResponse{
		{Stale: true},                     // a restarted leader: no node at all
		{Stale: true, Allocsvrs: node(0)}, // or one from before it had slots
		{Allocsvrs: node(3)},              // caught up: still draining
		{Allocsvrs: node(0)},              // drained
	} {
		fake.answers <- st
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	seqdv1.RegisterAdminServer(srv, fake)
	go srv.Serve(ln)
	defer srv.Stop()
	addr := ln.Addr().String()
	e := &env{addr: addr, timeout: 5 * time.Second, stdout: &bytes.Buffer{}}
	c, err := dial(e)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	left, err := waitDrained(context.Background(), e, c, "alloc1", 8, 10*time.Second)
	if err != nil || left != 0 {
		t.Fatalf("waitDrained = %d, %v; want 0 slots left, no error", left, err)
	}
	if n := len(fake.answers); n != 0 {
		t.Fatalf("waitDrained stopped with %d answers unread: it took a stale one for the end", n)
	}
	if out := e.stdout.(*bytes.Buffer).String(); !strings.Contains(out, "3 slots remaining") {
		t.Errorf("progress printed %q, want the caught-up leader's 3 slots remaining", out)
	}
}

// status marks one arbiter's own view, with a leader known, as such.
func TestStatusMarksAStaleView(t *testing.T) {
	var out bytes.Buffer
	if err := printStatus(&env{stdout: &out}, &seqdv1.StatusResponse{ClusterId: "c", LeaderId: "arb1", LeaderAddr: "127.0.0.1:1", Stale: true}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "arb1 at 127.0.0.1:1 (no answer from it caught up: this is one arbiter's own view") {
		t.Errorf("leader line of a stale answer:\n%s", out.String())
	}
}
