package router

import (
	"testing"

	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// A replica that answered a read without its leader (maybe_stale) is not
// remembered as the shard's leader: the next call, and the next Subscribe,
// would go back to it first.
func TestMaybeStale(t *testing.T) {
	for _, tc := range []struct {
		resp any
		want bool
	}{
		{&seqdv1.SyncResponse{MaybeStale: true}, true},
		{&seqdv1.UnreadResponse{MaybeStale: true}, true},
		{&seqdv1.SyncResponse{}, false},
		{(*seqdv1.SyncResponse)(nil), false},
		{&seqdv1.SendResponse{}, false}, // no such field: written at the leader
		{nil, false},
	} {
		if got := maybeStale(tc.resp); got != tc.want {
			t.Errorf("maybeStale(%T %v) = %v, want %v", tc.resp, tc.resp, got, tc.want)
		}
	}
}

// forget drops only the leader it names: one learned since stays.
func TestForgetOnlyTheStaleLeader(t *testing.T) {
	m := &Messages{leaders: map[string]string{}}
	m.remember("s1", "a:1")
	m.forget("s1", "b:2")
	if got := m.leaders["s1"]; got != "a:1" {
		t.Fatalf("forgetting another replica dropped the leader: %q", got)
	}
	m.forget("s1", "a:1")
	if got, ok := m.leaders["s1"]; ok {
		t.Fatalf("the stale leader is still remembered: %q", got)
	}
	sh := &seqdv1.ShardInfo{Id: "s1", Replicas: []*seqdv1.ReplicaInfo{{Addr: "a:1"}, {Addr: "b:2"}, {Addr: "c:3"}}}
	if got := m.pick(sh, 4, true); got != "b:2" {
		t.Fatalf("pick with no leader known, attempt 4: %q, want the replica at 4 mod 3", got)
	}
}
