// Package store is one datacenter's message store: Raft-replicated shards
// whose state machine keeps per-user inboxes, unread counters, dedup
// records, group timelines and a change log in Badger.
package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// OpResult is the outcome of one op of a batch.
type OpResult struct {
	Status clusterv1.OpStatus
	// Why, for REJECTED (and OUT_OF_ORDER, for logs).
	Msg       string
	Send      *seqdv1.SendResponse
	MarkRead  *seqdv1.MarkReadResponse
	Group     *seqdv1.GroupInfo
	Recalled  uint32
	DeleteSeq uint64
	Delivered uint32
	// err is the status to return when the leader refused the op while
	// planning it (never set by the FSM).
	err error
}

// BatchResult is what FSM.Apply returns for an entry.
type BatchResult struct {
	Results []*OpResult
	// Err is set when the whole entry was refused (malformed, too large).
	Err error
}

// ErrBadCommand means an entry could not be decoded.
var ErrBadCommand = errors.New("store: malformed command")

// FSM applies store entries to Badger. Each entry is one Badger
// transaction that also records the entry's index, so an entry is applied
// entirely or not at all, and entries replayed after a restart (at or
// below the recorded index) are skipped.
type FSM struct {
	db      *badger.DB
	cache   *stateCache
	log     *slog.Logger
	applied atomic.Uint64
	// notify, if set, is told which users and groups an entry touched,
	// after it committed.
	notify func(users, groups []uint64)
	// observe, if set, times each entry (metrics).
	observe func(ops int, d time.Duration)
}

// OpenFSM opens (or creates) the Badger database in dir.
func OpenFSM(dir string, log *slog.Logger) (*FSM, error) {
	opts := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		WithSyncWrites(false). // the Raft log is the durable record; see Snapshot
		WithNumVersionsToKeep(1).
		WithDetectConflicts(false). // the FSM is the only writer
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(16 << 20).
		WithNumCompactors(2).
		WithValueThreshold(1 << 10)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("store: open badger in %s: %w", dir, err)
	}
	f := &FSM{db: db, log: log, cache: newStateCache()}
	err = db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(keyApplied)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			f.applied.Store(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: read applied index: %w", err)
	}
	return f, nil
}

// Close closes Badger.
func (f *FSM) Close() error { return f.db.Close() }

// AppliedIndex returns the index of the last entry applied.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// EncodeBatch wraps a batch in the command envelope.
func EncodeBatch(b *clusterv1.StoreBatch) ([]byte, error) {
	p, err := proto.Marshal(b)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(&clusterv1.StoreCommand{Type: clusterv1.StoreCommandType_STORE_COMMAND_TYPE_BATCH, Payload: p})
}

// decodeBatch is the decoder of untrusted entry bytes (fuzzed).
func decodeBatch(data []byte) (*clusterv1.StoreBatch, error) {
	var cmd clusterv1.StoreCommand
	if err := proto.Unmarshal(data, &cmd); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	if cmd.Type != clusterv1.StoreCommandType_STORE_COMMAND_TYPE_BATCH {
		return nil, fmt.Errorf("%w: unknown command type %d", ErrBadCommand, cmd.Type)
	}
	var b clusterv1.StoreBatch
	if err := proto.Unmarshal(cmd.Payload, &b); err != nil {
		return nil, fmt.Errorf("%w: batch: %v", ErrBadCommand, err)
	}
	return &b, nil
}

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) interface{} {
	if l.Type != raft.LogCommand || l.Index <= f.applied.Load() {
		return &BatchResult{}
	}
	start := time.Now()
	b, err := decodeBatch(l.Data)
	if err != nil {
		f.commitIndexOnly(l.Index)
		return &BatchResult{Err: err}
	}
	res := f.applyBatch(l.Index, b)
	if f.observe != nil {
		f.observe(len(b.Ops), time.Since(start))
	}
	return res
}

func (f *FSM) applyBatch(index uint64, b *clusterv1.StoreBatch) *BatchResult {
	x := newTx(f.db, f.cache)
	x.now = b.NowMs
	results := make([]*OpResult, len(b.Ops))
	entry := &clusterv1.ChangeLogEntry{Index: index, NowMs: b.NowMs, Ops: b.Ops, Applied: make([]bool, len(b.Ops))}
	for i, op := range b.Ops {
		results[i] = x.applyOp(index, uint32(i), b.NowMs, op)
		entry.Applied[i] = results[i].Status == clusterv1.OpStatus_OP_STATUS_OK
	}
	x.put(logKey(index), entry)
	x.putRaw(keyApplied, binary.BigEndian.AppendUint64(nil, index))
	if err := x.commit(); err != nil {
		// Only a batch over Badger's transaction limit gets here; the
		// limit is the same on every replica, so all of them refuse it.
		x.discard()
		f.commitIndexOnly(index)
		if !errors.Is(err, badger.ErrTxnTooBig) {
			panic(fmt.Sprintf("store: badger commit of entry %d failed: %v", index, err))
		}
		return &BatchResult{Err: fmt.Errorf("store: entry %d is too large for one transaction; send smaller batches", index)}
	}
	x.publish()
	f.applied.Store(index)
	if f.notify != nil {
		f.notify(x.touchedUsers(), x.touchedGroups())
	}
	return &BatchResult{Results: results}
}

// commitIndexOnly records that an entry was consumed without changes.
func (f *FSM) commitIndexOnly(index uint64) {
	err := f.db.Update(func(txn *badger.Txn) error {
		return txn.Set(keyApplied, binary.BigEndian.AppendUint64(nil, index))
	})
	if err != nil {
		panic(fmt.Sprintf("store: badger write of applied index %d failed: %v", index, err))
	}
	f.applied.Store(index)
}

// snapshotMagic opens every store snapshot.
const snapshotMagic = "SEQDSTO\n"

// snapshotFormat is the current store snapshot format.
const snapshotFormat = 1

// Snapshot implements raft.FSM. It syncs Badger first, so the state up to
// the snapshot's index is durable before Raft may compact its log.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.db.Sync(); err != nil {
		return nil, fmt.Errorf("store: sync before snapshot: %w", err)
	}
	return &fsmSnapshot{db: f.db, applied: f.applied.Load()}, nil
}

type fsmSnapshot struct {
	db      *badger.DB
	applied uint64
}

// Persist writes a header, then Badger's backup stream. The stream may
// include entries applied after the header's index; they carry their own
// applied index, which makes replaying them a no-op.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriter(sink)
	err := func() error {
		if _, err := w.WriteString(snapshotMagic); err != nil {
			return err
		}
		if _, err := protodelim.MarshalTo(w, &clusterv1.StoreSnapshotHeader{FormatVersion: snapshotFormat, AppliedIndex: s.applied}); err != nil {
			return err
		}
		if _, err := s.db.Backup(w, 0); err != nil {
			return err
		}
		return w.Flush()
	}()
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("store: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// Restore implements raft.FSM. At startup Raft restores its latest
// snapshot; if Badger already holds that state or newer, it is kept.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	br := bufio.NewReader(rc)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return errors.New("store: snapshot: not a store snapshot (bad magic)")
	}
	var h clusterv1.StoreSnapshotHeader
	if err := protodelim.UnmarshalFrom(br, &h); err != nil {
		return fmt.Errorf("store: snapshot header: %w", err)
	}
	if h.FormatVersion == 0 || h.FormatVersion > snapshotFormat {
		return fmt.Errorf("store: snapshot format %d is not supported (this build reads 1..%d)", h.FormatVersion, snapshotFormat)
	}
	if f.applied.Load() >= h.AppliedIndex {
		f.log.Info("keeping local state, which is at or past the snapshot", "applied", f.applied.Load(), "snapshot", h.AppliedIndex)
		return nil
	}
	f.cache.reset()
	if err := f.db.DropAll(); err != nil {
		return fmt.Errorf("store: snapshot: clear: %w", err)
	}
	if err := f.db.Load(br, 256); err != nil {
		return fmt.Errorf("store: snapshot: load: %w", err)
	}
	var applied uint64
	err := f.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(keyApplied)
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error { applied = binary.BigEndian.Uint64(v); return nil })
	})
	if err != nil {
		return fmt.Errorf("store: snapshot: no applied index in it: %w", err)
	}
	f.applied.Store(applied)
	if f.notify != nil {
		f.notify(nil, nil)
	}
	return nil
}

// badgerLogger sends Badger's logs to slog (warnings and errors only).
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...interface{}) {
	b.l.Error(fmt.Sprintf(f, a...), "lib", "badger")
}
func (b badgerLogger) Warningf(f string, a ...interface{}) {
	b.l.Warn(fmt.Sprintf(f, a...), "lib", "badger")
}
func (b badgerLogger) Infof(string, ...interface{})  {}
func (b badgerLogger) Debugf(string, ...interface{}) {}
