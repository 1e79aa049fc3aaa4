package allocsvr_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
		// Shrinking re-runs against the same cluster; keep it short.
		flag.Set("rapid.shrinktime", "5s")
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
	logFile, err := os.Create(filepath.Join(t.TempDir(), "cluster.log"))
	if err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, localcluster.Options{SectionSize: 10, NumSlots: 8, Step: 5, Lease: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	var actionsMu sync.Mutex
	var actions []string
	note := func(format string, args ...any) {
		actionsMu.Lock()
		actions = append(actions, fmt.Sprintf("%v ", time.Now().Format("15:04:05.000"))+fmt.Sprintf(format, args...))
		actionsMu.Unlock()
	}
	defer func() {
		if t.Failed() {
			actionsMu.Lock()
			t.Logf("actions:\n%s", strings.Join(actions, "\n"))
			actionsMu.Unlock()
			b, _ := os.ReadFile(logFile.Name())
			lines := strings.Split(string(b), "\n")
			var keep []string
			for _, l := range lines {
				if strings.Contains(l, "allocsvr") || strings.Contains(l, "lease") || strings.Contains(l, "register") || strings.Contains(l, "leader") {
					keep = append(keep, l)
				}
			}
			if len(keep) > 300 {
				keep = keep[len(keep)-300:]
			}
			t.Logf("cluster log (filtered tail):\n%s", strings.Join(keep, "\n"))
		}
	}()
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
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		steps := rapid.IntRange(3, 8).Draw(rt, "steps")
		for i := 0; i < steps; i++ {
			action := rapid.IntRange(0, 9).Draw(rt, "action")
			note("action %d", action)
			switch action {
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
						dumpState(t, c)
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
				note("kill+restart alloc%d", i+1)
				c.KillAllocSvr(i)
				if err := c.RestartAllocSvr(ctx, i); err != nil {
					rt.Fatalf("restart allocsvr %d: %v", i, err)
				}
			case 5: // graceful restart: planned hand-over out and back
				i := rapid.IntRange(0, 1).Draw(rt, "allocsvr")
				note("graceful restart alloc%d", i+1)
				if err := c.StopAllocSvr(i); err != nil {
					rt.Fatalf("stop allocsvr %d: %v", i, err)
				}
				if err := c.RestartAllocSvr(ctx, i); err != nil {
					rt.Fatalf("restart allocsvr %d: %v", i, err)
				}
			case 6: // drain: move every section of one AllocSvr to the other
				i := rapid.IntRange(0, 1).Draw(rt, "allocsvr")
				note("drain alloc%d then restart", i+1)
				n := c.AllocSvr(i)
				if n == nil || c.AllocSvr(1-i) == nil {
					continue
				}
				if err := retry(ctx, func() error {
					_, err := admin(rt, c).Drain(ctx, &seqdv1.DrainRequest{Node: n.AllocSvr().ID(), Wait: true})
					return err
				}); err != nil {
					dumpState(t, c)
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

// dumpState logs the arbiters' view of slots and nodes, and what each
// AllocSvr serves, to explain a failure.
func dumpState(t *testing.T, c *localcluster.Cluster) {
	l := c.Leader()
	if l == nil {
		t.Log("no arbiter leader")
		return
	}
	for _, s := range l.Arbiter().FSM().Slots() {
		t.Logf("slot %d: %v", s.Slot, s)
	}
	for id, n := range l.Arbiter().FSM().Nodes() {
		t.Logf("node %s: %v", id, n)
	}
	for i := range c.AllocSvrs {
		if a := c.AllocSvr(i); a != nil {
			t.Logf("alloc%d serves %d slots", i+1, a.AllocSvr().ServedSlots())
		}
	}
}

// retry calls f until it succeeds or fails with something other than
// UNAVAILABLE (an arbiter election in progress), as an operator would.
func retry(ctx context.Context, f func() error) error {
	for {
		err := f()
		if status.Code(err) != codes.Unavailable {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}
