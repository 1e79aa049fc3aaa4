package allocsvr_test

import (
	"context"
	"flag"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"pgregory.net/rapid"

	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/internal/localcluster"
	"github.com/seqd/seqd/jepsen/checker"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// Each property check drives a real cluster through restarts, so the
	// default run is short; SEQD_LONG=1 (or -rapid.checks) runs more.
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "rapid.checks" })
	if !explicit {
		checks := "4"
		if os.Getenv("SEQD_LONG") != "" {
			checks = "60"
		}
		flag.Set("rapid.checks", checks)
	}
	os.Exit(m.Run())
}

// TestPropertyG1UnderRestartsMovesAndLeaderChanges drives one cluster
// through random interleavings of Next and Current, AllocSvr crashes and
// graceful restarts, drains (planned section moves) and arbiter leader
// changes, with concurrent load throughout. G1 must hold for every key:
// sequentially (each answer above everything seen before it) and over the
// whole concurrent history (no duplicates, real-time order).
func TestPropertyG1UnderRestartsMovesAndLeaderChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("drives a cluster through restarts; skipped with -short")
	}
	// Small sections, few slots and a tiny step: keys spread over many
	// sections and slots, and max_seq is raised through Raft constantly.
	c := startCluster(t, localcluster.Options{SectionSize: 10, NumSlots: 8, Step: 5, Lease: 500 * time.Millisecond})
	cl := newClient(t, c, router.Config{})
	unary := newClient(t, c, router.Config{DisableBatching: true})
	const keySpace = 200

	rec := checker.NewRecorder()
	stopLoad := make(chan struct{})
	var loadWG sync.WaitGroup
	for w := 0; w < 3; w++ {
		loadWG.Add(1)
		go func(w int) {
			defer loadWG.Done()
			for i := 0; ; i++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				k := uint64(1 + (i*7+w*13)%keySpace)
				start := rec.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				v, err := cl.Next(ctx, k)
				cancel()
				if err == nil {
					rec.Add(checker.SeqOp{Client: 100 + w, Key: k, Kind: checker.Next, Start: start, End: rec.Now(), Value: v})
				}
			}
		}(w)
	}

	last := map[uint64]uint64{} // highest value seen per key by the foreground
	rapid.Check(t, func(rt *rapid.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		steps := rapid.IntRange(3, 8).Draw(rt, "steps")
		for i := 0; i < steps; i++ {
			switch rapid.IntRange(0, 9).Draw(rt, "action") {
			case 0, 1, 2: // a few Nexts on one key, through either client
				k := uint64(rapid.IntRange(1, keySpace).Draw(rt, "key"))
				use := cl
				if rapid.Bool().Draw(rt, "unary") {
					use = unary
				}
				for j := 0; j < 3; j++ {
					start := rec.Now()
					v, err := use.Next(ctx, k)
					if err != nil {
						rt.Fatalf("Next(%d): %v", k, err)
					}
					rec.Add(checker.SeqOp{Key: k, Kind: checker.Next, Start: start, End: rec.Now(), Value: v})
					if v <= last[k] {
						rt.Fatalf("Next(%d) = %d, but %d was returned before", k, v, last[k])
					}
					last[k] = v
				}
			case 3: // Current never goes below what was handed out
				k := uint64(rapid.IntRange(1, keySpace).Draw(rt, "key"))
				start := rec.Now()
				v, err := cl.Current(ctx, k)
				if err != nil {
					rt.Fatalf("Current(%d): %v", k, err)
				}
				rec.Add(checker.SeqOp{Key: k, Kind: checker.Current, Start: start, End: rec.Now(), Value: v})
				if v < last[k] {
					rt.Fatalf("Current(%d) = %d, below %d handed out before", k, v, last[k])
				}
				last[k] = v
			case 4: // AllocSvr crash and restart
				i := rapid.IntRange(0, 1).Draw(rt, "allocsvr")
				c.KillAllocSvr(i)
				if err := c.RestartAllocSvr(ctx, i); err != nil {
					rt.Fatalf("restart allocsvr %d: %v", i, err)
				}
			case 5: // graceful restart: planned hand-over out and back
				i := rapid.IntRange(0, 1).Draw(rt, "allocsvr")
				if err := c.StopAllocSvr(i); err != nil {
					rt.Fatalf("stop allocsvr %d: %v", i, err)
				}
				if err := c.RestartAllocSvr(ctx, i); err != nil {
					rt.Fatalf("restart allocsvr %d: %v", i, err)
				}
			case 6: // drain: move every section of one AllocSvr to the other
				i := rapid.IntRange(0, 1).Draw(rt, "allocsvr")
				n := c.AllocSvr(i)
				if n == nil || c.AllocSvr(1-i) == nil {
					continue
				}
				if _, err := admin(rt, c).Drain(ctx, &seqdv1.DrainRequest{Node: n.AllocSvr().ID(), Wait: true}); err != nil {
					rt.Fatalf("drain: %v", err)
				}
				// Bring it back as an active node (a new incarnation).
				c.KillAllocSvr(i)
				if err := c.RestartAllocSvr(ctx, i); err != nil {
					rt.Fatalf("restart allocsvr %d: %v", i, err)
				}
			case 7, 8: // arbiter leader change by transfer
				if l := c.Leader(); l != nil {
					l.Arbiter().Raft().LeadershipTransfer().Error()
				}
			case 9: // arbiter leader crash and restart
				for i := range c.Arbiters {
					if n := c.Arbiter(i); n != nil && n.Arbiter().IsLeader() {
						c.KillArbiter(i)
						if err := c.RestartArbiter(ctx, i); err != nil {
							rt.Fatalf("restart arbiter %d: %v", i, err)
						}
						break
					}
				}
			}
		}
	})
	close(stopLoad)
	loadWG.Wait()
	ops := rec.Ops()
	t.Logf("%d operations recorded", len(ops))
	assertG1(t, ops)
}

// admin returns an Admin client on some arbiter (followers forward).
func admin(rt *rapid.T, c *localcluster.Cluster) seqdv1.AdminClient {
	cc, err := grpc.NewClient(c.ArbiterAddrs()[0], grpcconn.DialOptions()...)
	if err != nil {
		rt.Fatal(err)
	}
	rt.Cleanup(func() { cc.Close() })
	return seqdv1.NewAdminClient(cc)
}
