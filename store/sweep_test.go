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

// dedupRecords counts a replica's dedup records.
func dedupRecords(t *testing.T, c *localcluster.Cluster, i int) int {
	t.Helper()
	n := 0
	for k := range store.DumpState(t, c.Store(0, i).Store().FSM()) {
		if k[0] == 'D' {
			n++
		}
	}
	return n
}

// The shard leader deletes the dedup records past their TTL on every
// replica, but not while a replica runs the store format before the
// sweep's: that replica would halt at the entry. Once it is upgraded the
// next sweep goes through, and the replicas end up alike.
func TestLeaderSweepsExpiredDedupRecords(t *testing.T) {
	store.SetDedupSweep(t, 100*time.Millisecond, 0)
	store.SetFormatPollInterval(t, 200*time.Millisecond)
	store.SetReplicaFormat(func(id string) uint32 {
		if id == "s1-r3" {
			return store.StoreFormat - 1
		}
		return store.StoreFormat
	})
	t.Cleanup(func() { store.SetReplicaFormat(nil) })
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
	for i := range 3 {
		if n := dedupRecords(t, c, i); n != 15 {
			t.Fatalf("replica %d holds %d dedup records with an older replica in the shard, want all 15", i, n)
		}
		if err := c.Store(0, i).Health(); err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}

	store.SetReplicaFormat(nil)
	if err := c.StopStore(0, old); err != nil {
		t.Fatal(err)
	}
	if err := c.RestartStore(ctx, 0, old); err != nil {
		t.Fatalf("restarting the upgraded replica: %v", err)
	}
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

	// The replicas agree, record for record (a sweep may land between two
	// reads: ask again until all three have applied the same entries).
	sendSome(t, m, 5, 6, 3)
	var diff string
	agree := func() bool {
		f0 := c.Store(0, 0).Store().FSM()
		want, applied := store.DumpState(t, f0), f0.AppliedIndex()
		for i := 1; i < 3; i++ {
			f := c.Store(0, i).Store().FSM()
			got := store.DumpState(t, f)
			if f.AppliedIndex() != applied || f0.AppliedIndex() != applied {
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
