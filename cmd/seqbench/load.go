package main

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/seqd/seqd/internal/bench"
	"github.com/seqd/seqd/internal/bench/peer"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

// shape is the load every system gets: workers picking uniformly random
// keys in [1, keys].
type shape struct {
	concurrency int
	keys        uint64
	depth       int // keys per batch or pipeline
}

// keyPicker returns worker i's source of random keys. Each worker has its
// own generator, so picking a key takes no lock.
func (s shape) keyPicker(i int) func() uint64 {
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
	return func() uint64 { return r.Uint64N(s.keys) + 1 }
}

// makeOps builds one op per worker.
func (s shape) makeOps(mk func(i int, key func() uint64) bench.Op) []bench.Op {
	ops := make([]bench.Op, s.concurrency)
	for i := range ops {
		ops[i] = mk(i, s.keyPicker(i))
	}
	return ops
}

// seqdNextOps calls Next once per op.
func seqdNextOps(cl *router.Client, s shape) []bench.Op {
	return s.makeOps(func(_ int, key func() uint64) bench.Op {
		return func(ctx context.Context) (int, error) {
			_, err := cl.Next(ctx, key())
			return 1, err
		}
	})
}

// seqdBatchOps calls NextBatch with s.depth random keys per op.
func seqdBatchOps(cl *router.Client, s shape) []bench.Op {
	return s.makeOps(func(_ int, key func() uint64) bench.Op {
		return func(ctx context.Context) (int, error) {
			keys := make([]uint64, s.depth) // the client may hold it after a cancel
			for j := range keys {
				keys[j] = key()
			}
			seqs, err := cl.NextBatch(ctx, keys)
			return len(seqs), err
		}
	})
}

// noopOps makes one unary Next per op on the no-op server rt picks for
// the key.
func noopOps(scs []seqdv1.SequencerClient, rt *noopRouting, s shape) []bench.Op {
	return s.makeOps(func(_ int, key func() uint64) bench.Op {
		return func(ctx context.Context) (int, error) {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second) // as router.Client does
			defer cancel()
			k := key()
			_, err := scs[rt.server(k)].Next(ctx, &seqdv1.NextRequest{Key: k})
			return 1, err
		}
	})
}

// redisKey is "seq:<key>", the usual Redis counter naming.
func redisKey(key uint64) string {
	return "seq:" + strconv.FormatUint(key, 10)
}

// redisOps runs one INCR per op on a shared go-redis client, or a
// pipeline of s.depth INCRs when pipelined. The client's pool has a
// connection per worker.
func redisOps(rdb *redis.Client, s shape, pipelined bool) []bench.Op {
	return s.makeOps(func(_ int, key func() uint64) bench.Op {
		if !pipelined {
			return func(ctx context.Context) (int, error) {
				return 1, rdb.Incr(ctx, redisKey(key())).Err()
			}
		}
		return func(ctx context.Context) (int, error) {
			pipe := rdb.Pipeline()
			for range s.depth {
				pipe.Incr(ctx, redisKey(key()))
			}
			cmds, err := pipe.Exec(ctx)
			return len(cmds), err
		}
	})
}

// etcdOps runs one compare-and-swap increment per op, counting lost races.
func etcdOps(cli *clientv3.Client, s shape, conflicts *atomic.Uint64) []bench.Op {
	return s.makeOps(func(_ int, key func() uint64) bench.Op {
		return func(ctx context.Context) (int, error) {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, lost, err := peer.Increment(ctx, cli, redisKey(key()))
			if lost > 0 {
				conflicts.Add(uint64(lost))
			}
			return 1, err
		}
	})
}
