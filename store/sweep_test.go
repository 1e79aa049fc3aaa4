package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seqd/seqd/internal/localcluster"
	"github.com/seqd/seqd/internal/testwait"
	"github.com/seqd/seqd/store"
)

// tagged counts a replica's Badger keys of one table (keys.go): 'D' dedup
// records, 'I' inbox events, 'M' message records.
func tagged(t *testing.T, c *localcluster.Cluster, i int, tag byte) int {
	t.Helper()
	return taggedIn(t, c, 0, i, tag)
}

// taggedIn counts the keys of table tag on replica i of shard sh.
func taggedIn(t *testing.T, c *localcluster.Cluster, sh, i int, tag byte) int {
	t.Helper()
	n := 0
	for k := range store.DumpState(t, c.Store(sh, i).Store().FSM()) {
		if k[0] == tag {
			n++
		}
	}
	return n
}

func dedupRecords(t *testing.T, c *localcluster.Cluster, i int) int { return tagged(t, c, i, 'D') }

// oldReplicaOn opens replica s1-r3 (index old) on store format format from
// now on, as if it ran an older build, until upgradeOldToThisBuild or the test's end;
// leaders ask their replicas' formats every 200 ms.
func oldReplicaOn(t *testing.T, format uint32) {
	store.SetFormatPollInterval(t, 200*time.Millisecond)
	store.SetReplicaFormat(func(id string) uint32 {
		if id == "s1-r3" {
			return format
		}
		return store.StoreFormat
	})
	t.Cleanup(func() { store.SetReplicaFormat(nil) })
}

// upgradeOldToThisBuild restarts replica s1-r3 on this build's store format.
func upgradeOldToThisBuild(ctx context.Context, t *testing.T, c *localcluster.Cluster) {
	t.Helper()
	store.SetReplicaFormat(nil)
	if err := c.StopStore(0, old); err != nil {
		t.Fatal(err)
	}
	if err := c.RestartStore(ctx, 0, old); err != nil {
		t.Fatalf("restarting the upgraded replica: %v", err)
	}
}

// wantHealthyHolding checks that every replica is healthy and holds n
// keys of table tag (what: what they are, for the message).
func wantHealthyHolding(t *testing.T, c *localcluster.Cluster, tag byte, n int, what string) {
	t.Helper()
	for i := range 3 {
		if got := tagged(t, c, i, tag); got != n {
			t.Fatalf("replica %d holds %d %s, want %d", i, got, what, n)
		}
		if err := c.Store(0, i).Health(); err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
}

// waitReplicasAgree waits until the shard's three replicas have applied
// the same entries and hold the same state, record for record (a leader's
// sweep or retention step may land between two reads: it asks again).
func waitReplicasAgree(t *testing.T, c *localcluster.Cluster) {
	t.Helper()
	waitShardReplicasAgree(t, c, 0)
}

// waitShardReplicasAgree is waitReplicasAgree for shard sh.
func waitShardReplicasAgree(t *testing.T, c *localcluster.Cluster, sh int) {
	t.Helper()
	var diff string
	agree := func() bool {
		f0 := c.Store(sh, 0).Store().FSM()
		want, applied := store.DumpState(t, f0), f0.AppliedIndex()
		for i := 1; i < 3; i++ {
			f := c.Store(sh, i).Store().FSM()
			got := store.DumpState(t, f)
			if f.AppliedIndex() != applied || f0.AppliedIndex() != applied {
				diff = "not every replica has applied the same entries"
				return false
			}
			if len(got) != len(want) {
				diff = fmt.Sprintf("replica %d holds %d keys, replica 0 %d", i, len(got), len(want))
				return false
			}
			for k, v := range want {
				if got[k] != v {
					diff = fmt.Sprintf("replica %d differs from replica 0 at key %q", i, k)
					return false
				}
			}
		}
		return true
	}
	for deadline := time.Now().Add(20 * time.Second); !agree(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the replicas did not come to hold the same state in 20s: %s", diff)
		}
	}
}

// The shard leader deletes the dedup records past their TTL on every
// replica, but not while a replica runs the store format before the
// sweep's: that replica would halt at the entry. Once it is upgraded the
// next sweep goes through, and the replicas end up alike.
func TestLeaderSweepsExpiredDedupRecords(t *testing.T) {
	store.SkipSlowUnderRace(t)
	store.SetDedupSweep(t, 100*time.Millisecond, 0)
	oldReplicaOn(t, 1) // the format before the sweep's
	const ttl = time.Second
	c, m := startCluster(t, localcluster.Options{DedupTTL: ttl})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	sendSome(t, m, 1, 2, 10)
	sendSome(t, m, 3, 4, 5)
	// Past the TTL and several sweep intervals: with s1-r3 on the format
	// before, nothing is swept and nobody halts.
	time.Sleep(ttl + 10*store.DedupSweepInterval())
	lead := c.StoreLeader(0)
	if lead < 0 {
		t.Fatal("no store leader")
	}
	if due, err := c.Store(0, lead).Store().FSM().SweepDue(time.Now().UnixMilli()); err != nil || !due {
		t.Fatalf("the leader sees no sweep due (%v, %v): the check below would pass without the format gate", due, err)
	}
	wantHealthyHolding(t, c, 'D', 15, "dedup records with an older replica in the shard")
	upgradeOldToThisBuild(ctx, t, c)
	testwait.For(t, 20*time.Second, "every replica to drop the expired dedup records", func() bool {
		for i := range 3 {
			if dedupRecords(t, c, i) != 0 {
				return false
			}
		}
		return true
	})
	// Nothing left to sweep: the leader proposes nothing more (a sweep's
	// own entry must not call for the next one).
	lead = c.StoreLeader(0)
	if lead < 0 {
		t.Fatal("no store leader")
	}
	idle := c.Store(0, lead).Store().FSM().AppliedIndex()
	time.Sleep(10 * store.DedupSweepInterval())
	if now := c.Store(0, lead).Store().FSM().AppliedIndex(); now != idle {
		t.Fatalf("the leader applied entries %d..%d with nothing to sweep", idle+1, now)
	}

	// The replicas agree, record for record.
	sendSome(t, m, 5, 6, 3)
	waitReplicasAgree(t, c)
}
