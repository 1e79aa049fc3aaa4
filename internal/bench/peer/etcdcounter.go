package peer

import (
	"context"
	"fmt"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxCASAttempts bounds the retries of one increment under contention.
const maxCASAttempts = 1000

// Increment adds one to the decimal counter at key the way etcd users
// build a counter: Get, then Txn(If ModRevision(key) == rev, or
// CreateRevision(key) == 0 when absent, Then Put(n+1) Else Get), retrying
// with the value the failed Txn read. It returns the new value and how many
// attempts lost a race.
//
// The first Get is serializable (member-local): the compare in the Txn is
// what makes the increment safe, so a stale read costs a retry at worst.
func Increment(ctx context.Context, kv clientv3.KV, key string) (uint64, int, error) {
	resp, err := kv.Get(ctx, key, clientv3.WithSerializable())
	if err != nil {
		return 0, 0, fmt.Errorf("etcd get: %w", err)
	}
	cur := resp.Kvs
	for lost := 0; lost < maxCASAttempts; lost++ {
		var n uint64
		cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if len(cur) > 0 {
			if n, err = strconv.ParseUint(string(cur[0].Value), 10, 64); err != nil {
				return 0, lost, fmt.Errorf("etcd: key %q holds %q, not a counter", key, cur[0].Value)
			}
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", cur[0].ModRevision)
		}
		tr, err := kv.Txn(ctx).If(cmp).
			Then(clientv3.OpPut(key, strconv.FormatUint(n+1, 10))).
			Else(clientv3.OpGet(key)).
			Commit()
		if err != nil {
			return 0, lost, fmt.Errorf("etcd txn: %w", err)
		}
		if tr.Succeeded {
			return n + 1, lost, nil
		}
		cur = tr.Responses[0].GetResponseRange().Kvs
	}
	return 0, maxCASAttempts, fmt.Errorf("etcd: key %q: %d compare-and-swap attempts lost a race", key, maxCASAttempts)
}
