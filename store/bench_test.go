package store

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// BenchmarkApplySend measures one replica's FSM applying 1:1 sends the way
// `seqbench send` makes them: entries of 16 sends between random users
// among 10,000, 100-byte bodies, each with a client message id. It reports
// ns and allocations per message (b.N counts messages).
//
//	go test ./store -run '^$' -bench BenchmarkApplySend -benchtime 200000x
func BenchmarkApplySend(b *testing.B) {
	const users, perEntry = 10_000, 16
	f, err := OpenFSM(b.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	last := make([]uint64, users+1)
	body := make([]byte, 100)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	next := func(u uint64) uint64 { last[u]++; return last[u] }
	// Build the entries first: encoding is the leader's cost, not the FSM's.
	entries := make([][]byte, 0, b.N/perEntry+1)
	for n := 0; n < b.N; n += perEntry {
		ops := make([]*clusterv1.StoreOp, 0, perEntry)
		for i := 0; i < perEntry && n+i < b.N; i++ {
			s := 1 + rng.Uint64N(users)
			r := 1 + rng.Uint64N(users-1)
			if r >= s {
				r++
			}
			ss, rs := next(s), next(r)
			ops = append(ops, &clusterv1.StoreOp{Op: &clusterv1.StoreOp_Send{Send: &clusterv1.SendOp{
				Request: &seqdv1.SendRequest{Sender: s, Recipients: []uint64{r}, ClientMsgId: fmt.Sprintf("c%d", n+i), Body: body,
					Conversation: &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT, Id: min(s, r)<<32 | max(s, r)}},
				MessageId:  DirectMessageID(s, ss),
				Appends:    []*clusterv1.Append{{User: s, Seq: ss}, {User: r, Seq: rs}},
				DedupTtlMs: 86_400_000,
			}}})
		}
		data, err := EncodeBatch(&clusterv1.StoreBatch{NowMs: 1_000_000, Ops: ops})
		if err != nil {
			b.Fatal(err)
		}
		entries = append(entries, data)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i, data := range entries {
		r := f.Apply(&raft.Log{Type: raft.LogCommand, Index: uint64(i + 1), Data: data}).(*BatchResult)
		if r.Err != nil {
			b.Fatal(r.Err)
		}
		for j, res := range r.Results {
			if res.Status != clusterv1.OpStatus_OP_STATUS_OK {
				b.Fatalf("entry %d op %d: %v %s", i+1, j, res.Status, res.Msg)
			}
		}
	}
}
