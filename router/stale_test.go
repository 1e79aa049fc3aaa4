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
