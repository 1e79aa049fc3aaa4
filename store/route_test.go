package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seqd/seqd/internal/localcluster"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

// A router whose first call lands on a follower learns the leader from the
// forwarded answer and sends everything after that to the leader directly
// (it used to remember the follower and pay a forward on every call).
func TestRouterGoesToTheLeaderAfterAForward(t *testing.T) {
	c, _ := startCluster(t, localcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := router.New(ctx, router.Config{Addrs: c.ArbiterAddrs()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// A router that bootstrapped from an arbiter follower may hold the
	// table from before the last replica registered.
	if err := c.CatchUp(ctx, cl); err != nil {
		t.Fatal(err)
	}
	// Its first pick is the table's second replica (calls without a known
	// leader start at different replicas, a client's first call at the
	// second): make that a follower.
	first := cl.Table().GetShards()[0].GetReplicas()[1].GetAddr()
	moveLeaderOff(t, c, "a leader that is not the first replica", func(i int) bool { return c.Store(0, i).GRPCAddr() == first })
	m := cl.Messages()
	addrOf := map[string]string{}
	for _, r := range cl.Table().GetShards()[0].GetReplicas() {
		addrOf[r.Id] = r.Addr
	}
	if len(addrOf) != 3 {
		t.Fatalf("table replicas %v", addrOf)
	}
	// Send calls handled, by replica address.
	sendCalls := func() map[string]float64 {
		mfs, err := c.Gatherer().Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != "seqd_rpc_server_handling_seconds" {
				continue
			}
			for _, mt := range mf.GetMetric() {
				l := map[string]string{}
				for _, lp := range mt.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				if addr, ok := addrOf[l["node"]]; ok && l["service"] == "seqd.v1.Messages" && l["method"] == "Send" {
					out[addr] += float64(mt.GetHistogram().GetSampleCount())
				}
			}
		}
		return out
	}
	leader := c.Store(0, c.StoreLeader(0)).GRPCAddr()
	before := sendCalls()
	const n = 20
	for i := range n {
		if _, err := m.Send(ctx, &seqdv1.SendRequest{Sender: 1, Recipients: []uint64{2}, Conversation: direct(12),
			ClientMsgId: fmt.Sprintf("r%d", i), Body: []byte("hi")}); err != nil {
			t.Fatal(err)
		}
	}
	after := sendCalls()
	if i := c.StoreLeader(0); i < 0 || c.Store(0, i).GRPCAddr() != leader {
		t.Skip("the leader changed during the sends (an election on a loaded machine); the counts below would not mean anything")
	}
	for _, addr := range addrOf {
		got := after[addr] - before[addr]
		switch {
		case addr == leader && got != n:
			t.Errorf("the leader served %v of %d sends", got, n)
		case addr == first && got != 1:
			t.Errorf("the first replica (a follower) served %v sends, want only the first", got)
		case addr != leader && addr != first && got != 0:
			t.Errorf("replica %s (a follower) served %v sends", addr, got)
		}
	}
}
