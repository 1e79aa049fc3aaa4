package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/seqd/seqd/internal/loopback"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// closedAddr returns a loopback address nothing listens on (outside the
// ports the kernel hands to port-0 listeners meanwhile).
func closedAddr(t *testing.T) string {
	t.Helper()
	addr, err := loopback.FreeAddr("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// --addr where nothing listens stops the run at once with the addresses in
// the message, instead of 10 s of bootstrapping and "no routing table".
func TestAddrWhereNothingListensFailsAtOnce(t *testing.T) {
	addrs := closedAddr(t) + "," + closedAddr(t)
	for _, args := range [][]string{
		{"alloc", "--addr", addrs, "--duration", "1s", "--warmup", "0s"},
		{"send", "--addr", addrs, "--duration", "1s", "--warmup", "0s"},
	} {
		var o, e bytes.Buffer
		start := time.Now()
		err := commands[args[0]](context.Background(), args[1:], &o, &e)
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "--addr "+addrs+": connection refused") {
			t.Errorf("%s to %s: %v, want it to name the addresses and say they refused", args[0], addrs, err)
		}
		if took > 5*time.Second {
			t.Errorf("%s took %v to fail", args[0], took)
		}
		if exitCode(args[0], err, io.Discard) != 1 {
			t.Errorf("%s: exit code %d, want 1", args[0], exitCode(args[0], err, io.Discard))
		}
	}
}

type fixedRouting struct {
	seqdv1.UnimplementedRoutingServer
	addr string
}

func (r fixedRouting) GetRoutingTable(context.Context, *seqdv1.GetRoutingTableRequest) (*seqdv1.GetRoutingTableResponse, error) {
	return &seqdv1.GetRoutingTableResponse{Table: &seqdv1.RoutingTable{
		Version: 1, SectionSize: 1, NumSlots: 1,
		Slots: []*seqdv1.SlotAssignment{{Owner: "n1"}},
		Nodes: []*seqdv1.NodeInfo{{Id: "n1", Addr: r.addr}},
	}}, nil
}

// A target that accepts connections but answers only later (a node
// still starting) is waited for, and a refused address before it does not
// stop the bootstrap.
func TestAddrStillStartingIsWaitedFor(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	seqdv1.RegisterRoutingServer(gs, fixedRouting{addr: lis.Addr().String()})
	serving := time.AfterFunc(1500*time.Millisecond, func() { gs.Serve(lis) })
	t.Cleanup(func() {
		serving.Stop()
		gs.Stop()
		lis.Close()
	})

	ctx := context.Background()
	target, err := openSeqd(ctx, closedAddr(t)+","+lis.Addr().String(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cl, err := target.client(ctx, false)
	if err != nil {
		t.Fatalf("bootstrap from a node that answers after 1.5 s: %v", err)
	}
	defer cl.Close()
	if took := time.Since(start); took < time.Second {
		t.Errorf("bootstrapped after %v, before the node served anything", took)
	}
	if n := cl.Table().GetNumSlots(); n != 1 {
		t.Errorf("table with %d slots, want the node's 1", n)
	}
}

// A port that opens within probeWait (a node started just before
// seqbench) passes the probe; the bootstrap then waits for it.
func TestProbeWaitsForAPortAboutToOpen(t *testing.T) {
	addr := closedAddr(t)
	opened := listenAfter(addr, probeWait/2, nil)
	err := probeAddrs(context.Background(), []string{addr})
	if lis := <-opened; lis != nil {
		lis.Close()
	} else {
		t.Skip("the port was taken meanwhile")
	}
	if err != nil {
		t.Fatalf("a port opened %v after the probe began: %v, want it waited for", probeWait/2, err)
	}
}

// --gateway gets the wait --addr gets: a gateway whose port opens within
// probeWait is dialled, not given up at the first refusal.
func TestGatewayProbeWaitsForAPortAboutToOpen(t *testing.T) {
	addr := closedAddr(t)
	gs := grpc.NewServer()
	seqdv1.RegisterMessagesServer(gs, seqdv1.UnimplementedMessagesServer{})
	t.Cleanup(gs.Stop)
	opened := listenAfter(addr, probeWait/2, func(lis net.Listener) { gs.Serve(lis) })

	ctx := context.Background()
	target, err := openSeqd(ctx, addr, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	mc, err := dialMessages(ctx, target, true)
	if <-opened == nil {
		t.Skip("the port was taken meanwhile")
	}
	if err != nil {
		t.Fatalf("--gateway at a port opened %v after the probe began: %v, want it waited for", probeWait/2, err)
	}
	mc.Close()
}

// listenAfter listens on addr after d, as a node started just before
// seqbench would, hands the listener to serve if set, and sends it on the
// returned channel (nil: the port was taken meanwhile).
func listenAfter(addr string, d time.Duration, serve func(net.Listener)) <-chan net.Listener {
	opened := make(chan net.Listener, 1)
	time.AfterFunc(d, func() {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			opened <- nil
			return
		}
		opened <- lis
		if serve != nil {
			serve(lis)
		}
	})
	return opened
}
