package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seqd/seqd/internal/rpcerr"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

// builder turns one request into a store op on the leader. plan runs
// first, under the order lock, and returns the allocator keys it needs seqs
// for; build then receives those seqs, in the same order.
type builder interface {
	plan(s *Shard) (keys []uint64, err error)
	build(seqs []uint64) *clusterv1.StoreOp
}

// answered is a plan error carrying a complete answer (a deduplicated
// retry): the op is not proposed at all.
type answered struct{ res *OpResult }

func (a *answered) Error() string { return "answered without proposing" }

// maxOrderRetries bounds how often an op is re-planned after OUT_OF_ORDER
// (only possible right after a leader change).
const maxOrderRetries = 3

// submit runs one op through group commit and returns its result.
func (s *Shard) submit(ctx context.Context, b builder) (*OpResult, error) {
	res, err := s.pipe.Do(ctx, b)
	if err != nil {
		return nil, s.raftErr(err)
	}
	return res, nil
}

// commit is the group-commit function: it plans every op of the batch,
// allocates all their seqs in one call, and proposes one Raft entry.
//
// The order lock covers allocation and proposal together: seqs come from
// the allocator in increasing order, and entries enter the log in the
// order they are proposed, so each inbox only ever grows at its end. That
// is what makes Sync gap-free (G3). The FSM still checks it and answers
// OUT_OF_ORDER, which sends the op round again with fresh seqs.
func (s *Shard) commit(batch []builder) ([]*OpResult, error) {
	results := make([]*OpResult, len(batch))
	todo := make([]int, len(batch))
	for i := range todo {
		todo[i] = i
	}
	for attempt := 0; len(todo) > 0; attempt++ {
		if attempt > maxOrderRetries {
			for _, i := range todo {
				results[i] = &OpResult{Status: clusterv1.OpStatus_OP_STATUS_OUT_OF_ORDER, Msg: "could not order the write after several tries"}
			}
			break
		}
		proposed, res, err := s.proposeOnce(batch, todo, results)
		if err != nil {
			return nil, err
		}
		var again []int
		for j, i := range proposed {
			if res[j].Status == clusterv1.OpStatus_OP_STATUS_OUT_OF_ORDER {
				s.m.outOfOrder.Inc()
				again = append(again, i)
				continue
			}
			results[i] = res[j]
		}
		todo = again
	}
	return results, nil
}

// proposeOnce plans and proposes the ops in todo. It fills results for
// ops refused while planning and returns which ops went into the entry
// with their results.
func (s *Shard) proposeOnce(batch []builder, todo []int, results []*OpResult) ([]int, []*OpResult, error) {
	s.orderMu.Lock()
	var (
		keys     []uint64
		spans    [][2]int
		proposed []int
	)
	for _, i := range todo {
		ks, err := batch[i].plan(s)
		if err != nil {
			var a *answered
			if errors.As(err, &a) {
				results[i] = a.res
			} else {
				results[i] = &OpResult{Status: clusterv1.OpStatus_OP_STATUS_REJECTED, Msg: err.Error(), err: err}
			}
			continue
		}
		spans = append(spans, [2]int{len(keys), len(keys) + len(ks)})
		keys = append(keys, ks...)
		proposed = append(proposed, i)
	}
	if len(proposed) == 0 {
		s.orderMu.Unlock()
		return nil, nil, nil
	}
	var seqs []uint64
	if len(keys) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		seqs, err = s.alloc.NextBatch(ctx, keys)
		cancel()
		if err != nil {
			s.orderMu.Unlock()
			return nil, nil, status.Errorf(codes.Unavailable, "allocating seqs: %v", status.Convert(err).Message())
		}
	}
	ops := make([]*clusterv1.StoreOp, len(proposed))
	for j, i := range proposed {
		ops[j] = batch[i].build(seqs[spans[j][0]:spans[j][1]])
	}
	data, err := EncodeBatch(&clusterv1.StoreBatch{NowMs: s.now().UnixMilli(), Ops: ops})
	if err != nil {
		s.orderMu.Unlock()
		return nil, nil, fmt.Errorf("store: encode batch: %w", err)
	}
	s.m.batchOps.Observe(float64(len(ops)))
	f := s.node.Raft.Apply(data, 10*time.Second)
	s.orderMu.Unlock()
	if err := f.Error(); err != nil {
		return nil, nil, err
	}
	br, ok := f.Response().(*BatchResult)
	if !ok {
		return nil, nil, errors.New("store: FSM returned no result")
	}
	if br.Err != nil {
		return nil, nil, status.Error(codes.InvalidArgument, br.Err.Error())
	}
	return proposed, br.Results, nil
}

// raftErr maps pipeline errors to gRPC statuses.
func (s *Shard) raftErr(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return rpcerr.FromRaft(err, s.leaderAddr())
}
