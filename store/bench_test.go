package store

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

// BenchmarkApplySend measures one replica's FSM applying 1:1 sends the way
// `seqbench send` makes them: entries of 16 sends between random users
// among 10,000, 100-byte bodies, each with a client message id. It reports
// ns and allocations per message (b.N counts messages).
//
//	go test ./store -run '^$' -bench BenchmarkApplySend -benchtime 200000x
func BenchmarkApplySend(b *testing.B) {
	f := openTestFSM(b, b.TempDir())
	defer f.Close()
	applyTimed(b, f, 1, sendEntries(b, b.N, 1_000_000))
}

// sendEntries builds the entries of n 1:1 sends as `seqbench send` makes
// them (see BenchmarkApplySend), at time now. Building them is the
// leader's cost, not the FSM's.
func sendEntries(b *testing.B, n int, now int64) [][]byte {
	entries, _, _ := sendPlan(b, n, now)
	return entries
}

// received is a recipient's copy of a sent message.
type received struct{ user, conv, seq uint64 }

// sendPlan is sendEntries, with each message's recipient copy and every
// user's newest seq after them.
func sendPlan(b *testing.B, n int, now int64) (entries [][]byte, copies []received, last []uint64) {
	const users, perEntry = 10_000, 16
	rng := rand.New(rand.NewPCG(1, 2))
	last = make([]uint64, users+1)
	body := strings.Repeat("abcdefghij", 10)
	next := func(u uint64) uint64 { last[u]++; return last[u] }
	entries = make([][]byte, 0, n/perEntry+1)
	for k := 0; k < n; k += perEntry {
		ops := make([]*clusterv1.StoreOp, 0, perEntry)
		for i := 0; i < perEntry && k+i < n; i++ {
			s := 1 + rng.Uint64N(users)
			r := 1 + rng.Uint64N(users-1)
			if r >= s {
				r++
			}
			conv := min(s, r)<<32 | max(s, r) // one conversation per pair
			ss, rs := next(s), next(r)
			ops = append(ops, opSend(conv, fmt.Sprintf("c%d", k+i), body, apps(s, ss, r, rs)...))
			copies = append(copies, received{user: r, conv: conv, seq: rs})
		}
		entries = append(entries, encodeOps(b, now, ops...))
	}
	return entries, copies, last
}

// BenchmarkApplyMarkRead measures one replica's FSM applying mark-reads,
// 16 per entry: after b.N 1:1 sends (not timed), each recipient marks its
// conversation read up to the copy it got. It reports ns and allocations
// per mark-read.
//
//	go test ./store -run '^$' -bench BenchmarkApplyMarkRead -benchtime 100000x
func BenchmarkApplyMarkRead(b *testing.B) {
	f := openTestFSM(b, b.TempDir())
	defer f.Close()
	sends, copies, last := sendPlan(b, b.N, 1_000_000)
	applyAll(b, f, sends)
	var entries [][]byte
	for k := 0; k < len(copies); k += 16 {
		var ops []*clusterv1.StoreOp
		for _, c := range copies[k:min(k+16, len(copies))] {
			last[c.user]++
			ops = append(ops, opMarkRead(c.user, dconv(c.conv), c.seq, last[c.user]))
		}
		entries = append(entries, encodeOps(b, 2_000_000, ops...))
	}
	applyTimed(b, f, uint64(len(sends))+1, entries)
}

// BenchmarkApplyMarkReadInGroups is one replica's FSM applying mark-reads
// of a direct conversation by a member of 10, 100 and 1,000 read-fanout
// groups, each with one unread message, with no timeline entry removed
// on the shard and with one removed (from another group): once one is, a
// mark-read's answer looks at each of the member's read-fanout groups
// with unread messages (unreadAnswer). ns per mark-read.
//
//	go test ./store -run '^$' -bench BenchmarkApplyMarkReadInGroups -benchtime 2000x
func BenchmarkApplyMarkReadInGroups(b *testing.B) {
	for _, groups := range []uint64{10, 100, 1000} {
		for _, expired := range []bool{false, true} {
			b.Run(fmt.Sprintf("groups=%d/expired=%v", groups, expired), func(b *testing.B) {
				h := newHarness(b)
				h.now = 1000
				if expired {
					h.must(opCreateGroup(5, 1, true, 100, 3))
					h.must(opGroupSend(5, 1, true, 1, "x", "old", apps(1, 1)...))
					h.must(opHint(5, 1, 1, true, nil, apps(3, 1)...))
				}
				h.now = 100_000
				var seq uint64
				for g := uint64(1); g <= groups; g++ {
					h.must(opCreateGroup(1000+g, 1, true, 100, 2))
					h.must(opGroupSend(1000+g, 1, true, 1, fmt.Sprintf("m%d", g), "body", apps(1, g+1)...))
					seq++
					h.must(opHint(1000+g, 1, 1, true, nil, apps(2, seq)...))
				}
				if expired {
					wantStep(b, h, opExpireTimelines(50_000, 0, 100_000, 100), 1, 0)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					seq++
					h.must(opMarkRead(2, dconv(7), 0, seq))
				}
			})
		}
	}
}

// BenchmarkApplyExpireScan measures one replica's FSM running a retention
// pass, in steps of the leader's size (expireUsers, expireLimit), over
// b.N 1:1 messages between 10,000 users that are all past the retention
// period: ns per removed inbox event (two per message), the records of
// the messages included.
//
//	go test ./store -run '^$' -bench BenchmarkApplyExpireScan -benchtime 100000x
func BenchmarkApplyExpireScan(b *testing.B) {
	f := openTestFSM(b, b.TempDir())
	defer f.Close()
	entries := sendEntries(b, b.N, 1_000_000)
	applyAll(b, f, entries)
	removed := timedPass(b, f, uint64(len(entries))+1, func(from uint64) *clusterv1.StoreOp {
		op := opExpireScan(2_000_000, from, expireUsers, expireLimit)
		op.GetExpireScan().DropCopies = true // as a leader of format 6 proposes it
		return op
	})
	if removed != 2*b.N {
		b.Fatalf("the pass removed %d events, want %d", removed, 2*b.N)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(removed), "ns/event")
}

// BenchmarkApplyGroupSend is one replica's FSM applying sends to a group
// of 500 with write fanout (one inbox copy per member), one send per
// entry, from random members, 100-byte bodies. It reports ns and
// allocations per member copy (b.N counts copies).
//
//	go test ./store -run '^$' -bench BenchmarkApplyGroupSend -benchtime 200000x
func BenchmarkApplyGroupSend(b *testing.B) {
	const members = 500
	f := openTestFSM(b, b.TempDir())
	defer f.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	body := strings.Repeat("abcdefghij", 10)
	var seq uint64 // every member's inbox moves in step
	entries := make([][]byte, 0, b.N/members+1)
	for n := 0; n < b.N; n += members {
		seq++
		sender := 1 + rng.Uint64N(members)
		appends := make([]*clusterv1.Append, 0, members)
		appends = append(appends, &clusterv1.Append{User: sender, Seq: seq})
		for u := uint64(1); u <= members; u++ {
			if u != sender {
				appends = append(appends, &clusterv1.Append{User: u, Seq: seq})
			}
		}
		entries = append(entries, encodeOps(b, 1_000_000, opGroupSend(77, seq, false, sender, fmt.Sprintf("g%d", n), body, appends...)))
	}
	applyTimed(b, f, 1, entries)
}

// applyTimed applies entries as Raft entries first, first+1, ... and
// times only that; every op must succeed.
func applyTimed(b *testing.B, f *FSM, first uint64, entries [][]byte) {
	b.ReportAllocs()
	b.ResetTimer()
	for i, data := range entries {
		index := first + uint64(i)
		r := f.Apply(&raft.Log{Type: raft.LogCommand, Index: index, Data: data}).(*BatchResult)
		if r.Err != nil {
			b.Fatal(r.Err)
		}
		for j, res := range r.Results {
			if res.Status != clusterv1.OpStatus_OP_STATUS_OK {
				b.Fatalf("entry %d op %d: %v %s", index, j, res.Status, res.Msg)
			}
		}
	}
}

// BenchmarkApplyExpireTimelines is one replica's FSM running a retention
// pass over read-fanout group timelines, in the leader's steps (1,000
// groups, 500 entries): b.N messages sent to 100 groups from senders on
// another shard (so the timeline step removes the records too), every
// group hinted, all past the period. It reports ns per removed entry.
//
//	go test ./store -run '^$' -bench BenchmarkApplyExpireTimelines -benchtime 100000x
func BenchmarkApplyExpireTimelines(b *testing.B) {
	const groups = 100
	f := openTestFSM(b, b.TempDir())
	defer f.Close()
	body := strings.Repeat("abcdefghij", 10)
	var entries [][]byte
	for g := uint64(1); g <= groups; g++ {
		entries = append(entries, encodeOps(b, 1_000_000, opCreateGroup(g, 1, true, 100, 2, 3)))
	}
	gseq := make([]uint64, groups+1)
	for n := 0; n < b.N; n += 16 {
		var ops []*clusterv1.StoreOp
		for i := n; i < min(n+16, b.N); i++ {
			g := 1 + uint64(i%groups)
			gseq[g]++
			op := opGroupSend(g, gseq[g], true, 900, fmt.Sprintf("t%d", i), body)
			op.GetSend().RemoteSender = true
			ops = append(ops, op)
		}
		entries = append(entries, encodeOps(b, 1_000_000, ops...))
	}
	for g := uint64(1); g <= groups; g++ {
		entries = append(entries, encodeOps(b, 1_000_000, opHint(g, gseq[g], gseq[g], true, []uint64{2, 3})))
	}
	applyAll(b, f, entries)
	removed := timedPass(b, f, uint64(len(entries))+1, func(from uint64) *clusterv1.StoreOp {
		return opExpireTimelines(2_000_000, from, expireUsers, expireLimit)
	})
	if removed != b.N {
		b.Fatalf("the pass removed %d entries, want %d", removed, b.N)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(removed), "ns/entry")
}

// applyAll applies entries as Raft entries 1, 2, ... (a benchmark's
// setup, not timed).
func applyAll(b *testing.B, f *FSM, entries [][]byte) {
	for i, data := range entries {
		if r := f.Apply(&raft.Log{Type: raft.LogCommand, Index: uint64(i + 1), Data: data}).(*BatchResult); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
}

// timedPass times a retention pass: the steps op(from), applied as Raft
// entries from index on, from 0 until a step ends the pass. It returns
// how much the steps removed.
func timedPass(b *testing.B, f *FSM, index uint64, op func(from uint64) *clusterv1.StoreOp) (removed int) {
	b.ReportAllocs()
	b.ResetTimer()
	for from := uint64(0); ; index++ {
		r := f.Apply(&raft.Log{Type: raft.LogCommand, Index: index, Data: encodeOps(b, 3_000_000, op(from))}).(*BatchResult)
		if r.Err != nil || r.Results[0].Status != clusterv1.OpStatus_OP_STATUS_OK {
			b.Fatalf("step from %d: %v %+v", from, r.Err, r.Results)
		}
		removed += int(r.Results[0].Expired)
		if from = r.Results[0].ExpireNext; from == 0 {
			break
		}
	}
	b.StopTimer()
	return removed
}

// BenchmarkSyncGroup measures a member's SyncGroup fetch of the newest
// message of a read-fanout group of 10,000 members (b.N fetches, each by
// another member), the read every subscribed member makes after a hint.
//
//	go test ./store -run '^$' -bench BenchmarkSyncGroup -benchtime 2000x
func BenchmarkSyncGroup(b *testing.B) {
	for _, members := range []int{500, 10_000, 90_000} {
		b.Run(fmt.Sprint(members), func(b *testing.B) {
			f := openTestFSM(b, b.TempDir())
			defer f.Close()
			ids := make([]uint64, members)
			for i := range ids {
				ids[i] = uint64(i + 1)
			}
			var entries [][]byte
			entries = append(entries, encodeOps(b, 1_000_000, opCreateGroup(7, 1, true, 100)))
			for i := 0; i < members; i += 5000 {
				entries = append(entries, encodeOps(b, 1_000_000, opAddMembers(7, false, 100, ids[i:min(i+5000, members)]...)))
			}
			op := opGroupSend(7, 1, true, 1, "m", strings.Repeat("abcdefghij", 10))
			op.GetSend().RemoteSender = true
			entries = append(entries, encodeOps(b, 1_000_000, op))
			applyAll(b, f, entries)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				res, err := f.SyncGroup(uint64(2+i%(members-1)), 7, 0, 100)
				if err != nil || len(res.Events) != 1 {
					b.Fatalf("SyncGroup: %v, %d events", err, len(res.Events))
				}
			}
		})
	}
}
