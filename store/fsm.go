// Package store is one datacenter's message store: Raft-replicated shards
// whose state machine keeps per-user inboxes, unread counters, dedup
// records, group timelines and a change log in Badger.
package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// OpResult is the outcome of one op of a batch.
type OpResult struct {
	Status clusterv1.OpStatus
	// Why, for REJECTED (and OUT_OF_ORDER, for logs).
	Msg string
	// Code is the status a REJECTED op's caller gets (OK means
	// FAILED_PRECONDITION). It is not replicated: only the leader answers.
	Code      codes.Code
	Send      *seqdv1.SendResponse
	MarkRead  *seqdv1.MarkReadResponse
	Group     *seqdv1.GroupInfo
	Recalled  uint32
	DeleteSeq uint64
	Delivered uint32
	// Swept is how many dedup records a sweep deleted; SweepMore says it
	// stopped at its limit with more of the log left to look at.
	Swept     uint32
	SweepMore bool
	// Expired is how many inbox events a retention step removed, and
	// ExpireNext the user the next step starts at (0: the pass is over).
	Expired    uint32
	ExpireNext uint64
	// LogTrimmed is how many change-log entries a trim removed; LogMore
	// says it stopped at its limit with more due.
	LogTrimmed uint32
	LogMore    bool
	// err is the status to return when the leader refused the op while
	// planning it (never set by the FSM).
	err error
}

// BatchResult is what FSM.Apply returns for an entry.
type BatchResult struct {
	Results []*OpResult
	// Err is set when the whole entry was refused (malformed, too large).
	Err error
	// Halted is set when this replica did not apply the entry because it
	// has halted (ErrHalted): the entry needs a newer build.
	Halted error
}

// ErrBadCommand means an entry could not be decoded.
var ErrBadCommand = errors.New("store: malformed command")

// FSM applies store entries to Badger. Each entry is one Badger
// transaction that also records the entry's index, so an entry is applied
// entirely or not at all, and entries replayed after a restart (at or
// below the recorded index) are skipped.
type FSM struct {
	// mu guards db against Restore swapping in a freshly loaded database.
	// Apply and Restore run on Raft's one FSM goroutine; readers hold mu.
	mu      sync.RWMutex
	db      *badger.DB
	dir     string
	cache   *stateCache
	reads   *groupReads // large groups' records for reads (memberTimeline)
	log     *slog.Logger
	applied atomic.Uint64
	// notify, if set, is told which users and groups an entry touched,
	// after it committed.
	notify func(users, groups []uint64)
	// observe, if set, times each entry (metrics).
	observe func(ops int, d time.Duration)
	// phase is the fraction of a memtable padded at every open (see
	// padMemtable).
	phase float64
	// format is the store format this replica applies (buildFormat but in
	// tests); formatSeen the highest min_format it has applied.
	format     uint32
	formatSeen uint32
	// halted is set once an entry needed a newer format; onHalt, if set,
	// is told once.
	halted atomic.Pointer[error]
	onHalt func(error)
	// config is the index of the last Raft configuration entry applied
	// (StoreConfiguration), 0 if none since the replica started.
	config atomic.Uint64
	// applyMu is held by Apply and Restore over their writes, and by
	// Close: Raft's shutdown stops waiting for its FSM goroutine after a
	// while, and an apply that goes on after Close must not touch the
	// closed database. closed is guarded by it.
	applyMu sync.Mutex
	closed  bool
}

// errFSMClosed is the result of an entry that reached Apply after Close;
// Raft has shut down by then, and the entry is applied at the next start.
var errFSMClosed = errors.New("store: replica is shutting down")

// closeWait bounds how long Close waits for an apply or a restore in
// progress before it leaves the database open: the process is stopping,
// and Badger's log files hold what was written.
var closeWait = 10 * time.Second

// OpenFSM opens (or creates) the Badger database in dir.
func OpenFSM(dir string, log *slog.Logger) (*FSM, error) {
	return openFSM(dir, log, 0, buildFormat)
}

// openFSM opens the database for a replica of the given store format and
// pads its memtable by phase (0 <= phase < 1) of its size.
func openFSM(dir string, log *slog.Logger, phase float64, format uint32) (*FSM, error) {
	if err := finishSwap(dir); err != nil {
		return nil, err
	}
	db, err := openBadger(dir, log)
	if err != nil {
		return nil, err
	}
	seen, err := checkFormatSeen(db, format, "the data in "+dir)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: refusing to open: %w", err)
	}
	if err := upgradeLayout(db); err != nil {
		db.Close()
		return nil, err
	}
	if err := padMemtable(db, phase); err != nil {
		db.Close()
		return nil, err
	}
	f := &FSM{db: db, dir: dir, log: log, cache: newStateCache(), reads: newGroupReads(), phase: phase, format: format, formatSeen: seen}
	applied, err := readApplied(db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: read applied index: %w", err)
	}
	f.applied.Store(applied)
	return f, nil
}

func openBadger(dir string, log *slog.Logger) (*badger.DB, error) {
	opts := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		WithSyncWrites(false). // the Raft log is the durable record; see Snapshot
		WithNumVersionsToKeep(1).
		WithDetectConflicts(false). // the FSM is the only writer
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(16 << 20).
		WithNumCompactors(2).
		WithValueThreshold(1 << 10).
		WithVerifyValueChecksum(true) // a value log read that fails its checksum reads as empty (checkEvent)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("store: open badger in %s: %w", dir, err)
	}
	return db, nil
}

// padMemtable writes, then deletes, throw-away keys filling about phase
// of a memtable. The FSM reads none of them and snapshots leave them out;
// they reach Badger's tables only until compaction drops them.
//
// Replicas apply the same entries as the same transactions, so with equal
// memtables they fill, and flush, at the same moment. Three replicas on one
// host (tests, the demo, seqbench) then build three tables at once, and on
// two cores that starved every other goroutine for 0.6-1.3 s
// (docs/benchmarks.md, "The half-rate tail"). Padding each replica by its
// own phase keeps their flushes that far apart for as long as they run:
// each memtable then holds the same entries' bytes. The memtable size, and
// with it Badger's transaction limits, stays the same on every replica, so
// the replicas still accept and refuse the same entries.
func padMemtable(db *badger.DB, phase float64) error {
	if phase <= 0 {
		return nil
	}
	const (
		valueBytes = 1000 // under the value threshold: the memtable holds it
		perKey     = valueBytes + 80
		perTxn     = 1000
	)
	keys := int(phase * float64(db.Opts().MemTableSize) / perKey)
	value := make([]byte, valueBytes)
	for _, del := range []bool{false, true} {
		for i := 0; i < keys; i += perTxn {
			txn := db.NewTransaction(true)
			for j := i; j < min(i+perTxn, keys); j++ {
				k := binary.BigEndian.AppendUint32(append([]byte(nil), keyPadPrefix...), uint32(j))
				var err error
				if del {
					err = txn.Delete(k)
				} else {
					err = txn.Set(k, value)
				}
				if err != nil {
					txn.Discard()
					return fmt.Errorf("store: pad memtable: %w", err)
				}
			}
			if err := txn.Commit(); err != nil {
				return fmt.Errorf("store: pad memtable: %w", err)
			}
		}
	}
	return nil
}

// readApplied reads the index of the last entry db holds (0 if none).
func readApplied(db *badger.DB) (uint64, error) {
	v, err := readMeta(db, keyApplied, 8)
	if err != nil || v == nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(v), nil
}

// readMeta reads a bookkeeping value of size bytes under key; nil if absent.
func readMeta(db *badger.DB, key []byte, size int) ([]byte, error) {
	var v []byte
	err := db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err = it.ValueCopy(nil)
		return err
	})
	if err == nil && v != nil && len(v) != size {
		err = fmt.Errorf("store: record %q is %d bytes, want %d", key, len(v), size)
	}
	return v, err
}

// view runs fn in a read transaction of the current database.
func (f *FSM) view(fn func(txn *badger.Txn) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.db.View(fn)
}

// read runs fn with a read-only tx over the applied state, so a read
// path finds records as the FSM's own code does. tx panics on a Badger
// read error (in the FSM that must stop the replica); here it is an error.
func (f *FSM) read(fn func(x *tx)) (err error) {
	return f.view(func(txn *badger.Txn) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("%v", p)
			}
		}()
		// A cache of its own: the FSM's belongs to Apply's goroutine.
		fn(&tx{t: txn, db: f.db, cache: newStateCache()})
		return nil
	})
}

// Close closes Badger.
func (f *FSM) Close() error {
	done := make(chan error, 1)
	go func() {
		f.applyMu.Lock()
		defer f.applyMu.Unlock()
		if f.closed {
			done <- nil
			return
		}
		f.closed = true
		f.mu.Lock()
		defer f.mu.Unlock()
		done <- f.db.Close()
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(closeWait):
		// The goroutine closes the database once the apply or restore
		// returns, if the process still runs.
		f.log.Error("an apply or a snapshot restore is still running after the wait; the store's database closes when it ends", "wait", closeWait)
		return errors.New("store: close: an apply or a snapshot restore is still running")
	}
}

// AppliedIndex returns the index of the last entry applied.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// StoreConfiguration implements raft.ConfigurationStore: Raft calls it
// for every configuration entry, in log order with the others, before it
// answers the change's future. Only the index is kept, for the leader's
// format gate (formatReady): a replica removed and added back leaves the
// configuration as it was, but not its index.
func (f *FSM) StoreConfiguration(index uint64, _ raft.Configuration) { f.config.Store(index) }

// EncodeBatch wraps a batch in the command envelope, with the store format
// its ops need (see opFormats).
func EncodeBatch(b *clusterv1.StoreBatch) ([]byte, error) {
	p, err := proto.Marshal(b)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(&clusterv1.StoreCommand{Type: clusterv1.StoreCommandType_STORE_COMMAND_TYPE_BATCH, Payload: p,
		MinFormat: batchFormat(b.Ops)})
}

// decodeBatch is the decoder of untrusted entry bytes (fuzzed).
func decodeBatch(data []byte) (*clusterv1.StoreBatch, error) {
	cmd, err := decodeCommand(data)
	if err != nil {
		return nil, err
	}
	return decodePayload(cmd)
}

func decodeCommand(data []byte) (*clusterv1.StoreCommand, error) {
	var cmd clusterv1.StoreCommand
	if err := proto.Unmarshal(data, &cmd); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	return &cmd, nil
}

func decodePayload(cmd *clusterv1.StoreCommand) (*clusterv1.StoreBatch, error) {
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
	if h := beforeApply.Load(); h != nil {
		(*h)(f)
	}
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if f.closed {
		return &BatchResult{Halted: errFSMClosed}
	}
	if l.Type != raft.LogCommand || l.Index <= f.applied.Load() {
		return &BatchResult{}
	}
	if err := f.Halted(); err != nil {
		return &BatchResult{Halted: err}
	}
	start := time.Now()
	cmd, err := decodeCommand(l.Data)
	if err == nil && cmd.MinFormat > f.format {
		// Checked before the payload: a newer build may also add command
		// types, which this one must not skip as malformed.
		return &BatchResult{Halted: f.halt(&FormatError{What: fmt.Sprintf("entry %d", l.Index), Need: cmd.MinFormat, Have: f.format})}
	}
	var b *clusterv1.StoreBatch
	if err == nil {
		b, err = decodePayload(cmd)
	}
	if err != nil {
		f.commitIndexOnly(l.Index)
		return &BatchResult{Err: err}
	}
	res := f.applyBatch(l.Index, b, cmd.MinFormat)
	if f.observe != nil {
		f.observe(len(b.Ops), time.Since(start))
	}
	return res
}

// beforeApply, if set (tests: HoldApplies), runs before each entry a
// replica applies, on Raft's FSM goroutine.
var beforeApply atomic.Pointer[func(*FSM)]

func (f *FSM) applyBatch(index uint64, b *clusterv1.StoreBatch, minFormat uint32) *BatchResult {
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
	if minFormat > f.formatSeen {
		x.putRaw(keyFormatSeen, binary.BigEndian.AppendUint32(nil, minFormat))
	}
	if x.err != nil {
		// Badger refused a write for its size (transaction, key or value
		// limits): the limits are the same on every replica, so all of
		// them refuse the entry alike.
		x.discard()
		f.commitIndexOnly(index)
		return &BatchResult{Err: fmt.Errorf("store: entry %d is too large for the storage engine (%v); send smaller requests", index, x.err)}
	}
	if err := x.commit(); err != nil {
		panic(fmt.Sprintf("store: badger commit of entry %d failed: %v", index, err))
	}
	x.publish()
	f.applied.Store(index)
	f.formatSeen = max(f.formatSeen, minFormat)
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
	if err := f.Halted(); err != nil {
		// Raft would compact its log up to the snapshot's index, and with
		// it the entry this replica must apply once upgraded.
		return nil, err
	}
	if err := f.db.Sync(); err != nil {
		return nil, fmt.Errorf("store: sync before snapshot: %w", err)
	}
	return &fsmSnapshot{f: f, applied: f.applied.Load()}, nil
}

type fsmSnapshot struct {
	f       *FSM
	applied uint64
}

// Persist writes a header, then Badger's backup stream. The stream may
// include entries applied after the header's index; they carry their own
// applied index, which makes replaying them a no-op.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	ew := &errWriter{w: sink}
	w := bufio.NewWriter(ew)
	err := func() error {
		if _, err := w.WriteString(snapshotMagic); err != nil {
			return err
		}
		if _, err := protodelim.MarshalTo(w, &clusterv1.StoreSnapshotHeader{FormatVersion: snapshotFormat, AppliedIndex: s.applied}); err != nil {
			return err
		}
		// One producer, so the whole stream reads one transaction: a
		// point-in-time copy. (Several producers each open their own read
		// transaction, at different moments, while entries keep applying.)
		s.f.mu.RLock()
		defer s.f.mu.RUnlock()
		stream := s.f.db.NewStream()
		stream.NumGo = 1
		stream.LogPrefix = "seqd.store.snapshot"
		// Memtable padding is deleted as soon as written, but Backup
		// would carry its deletion markers.
		stream.ChooseKey = func(item *badger.Item) bool { return !bytes.HasPrefix(item.Key(), keyPadPrefix) }
		if _, err := stream.Backup(w, 0); err != nil {
			return err
		}
		return w.Flush()
	}()
	if err != nil {
		if ew.err != nil {
			// Badger's stream reports a failed write as its own
			// cancellation; the write's error says why (a full disk).
			err = ew.err
		}
		sink.Cancel()
		return fmt.Errorf("store: persist snapshot: %w", err)
	}
	return sink.Close()
}

// errWriter keeps the first error of the writer it wraps.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil && e.err == nil {
		e.err = err
	}
	return n, err
}

func (s *fsmSnapshot) Release() {}

// Restore implements raft.FSM. At startup Raft restores its latest
// snapshot; if Badger already holds that state or newer, it is kept.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if f.closed {
		return errFSMClosed
	}
	if err := f.Halted(); err != nil {
		return err
	}
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
	// Load into a fresh directory and swap it in only once it loaded: a
	// failed load must leave the current state intact (and a failed Badger
	// load can leave that database unusable).
	tmp := f.dir + ".restore"
	os.RemoveAll(tmp)
	ndb, err := openBadger(tmp, f.log)
	if err != nil {
		return fmt.Errorf("store: snapshot: %w", err)
	}
	if err := loadBackup(ndb, br); err != nil {
		ndb.Close()
		os.RemoveAll(tmp)
		return fmt.Errorf("store: snapshot: load: %w", err)
	}
	applied, err := readApplied(ndb)
	if err == nil && applied == 0 {
		err = errors.New("it holds no applied index")
	}
	var seen uint32
	if err == nil {
		seen, err = checkFormatSeen(ndb, f.format, fmt.Sprintf("a snapshot taken at index %d", h.AppliedIndex))
		var fe *FormatError
		if errors.As(err, &fe) {
			ndb.Close()
			os.RemoveAll(tmp)
			return f.halt(fe)
		}
	}
	if err == nil {
		err = ndb.Close()
	}
	if err != nil {
		ndb.Close()
		os.RemoveAll(tmp)
		return fmt.Errorf("store: snapshot: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.db.Close(); err != nil {
		f.log.Warn("closing the old state before a snapshot swap", "err", err)
	}
	if err := os.Rename(f.dir, f.dir+".old"); err != nil {
		panic(fmt.Sprintf("store: snapshot swap: %v", err))
	}
	if err := os.Rename(tmp, f.dir); err != nil {
		panic(fmt.Sprintf("store: snapshot swap: %v", err))
	}
	os.RemoveAll(f.dir + ".old")
	if f.db, err = openBadger(f.dir, f.log); err != nil {
		panic(fmt.Sprintf("store: reopen after snapshot swap: %v", err))
	}
	if err := upgradeLayout(f.db); err != nil {
		panic(fmt.Sprintf("store: upgrade restored state: %v", err))
	}
	if err := padMemtable(f.db, f.phase); err != nil {
		panic(fmt.Sprintf("store: after snapshot swap: %v", err))
	}
	f.cache.reset()
	f.reads.reset() // under mu: no reader holds the old database's versions
	f.applied.Store(applied)
	f.formatSeen = seen
	if f.notify != nil {
		f.notify(nil, nil)
	}
	return nil
}

// upgradeLayout brings data written by an older layout up to date. It
// depends only on the data, so every replica upgrades alike.
func upgradeLayout(db *badger.DB) error {
	return db.Update(func(txn *badger.Txn) error {
		var have uint64
		if it, err := txn.Get(keyLayout); err == nil {
			it.Value(func(v []byte) error {
				if len(v) == 8 {
					have = binary.BigEndian.Uint64(v)
				}
				return nil
			})
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if have >= layoutVersion {
			return nil
		}
		// Layout 1 -> 2: move read-fanout groups' counters into their own
		// record and list the ones with un-hinted news.
		p := []byte{tagGroup}
		it := txn.NewIterator(iteratorOpts(p))
		type fix struct {
			g uint64
			c *clusterv1.GroupCounters
		}
		var fixes []fix
		for it.Rewind(); it.ValidForPrefix(p); it.Next() {
			var rec clusterv1.GroupRecord
			if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, &rec) }); err != nil {
				it.Close()
				return err
			}
			g := beU64(it.Item().Key()[1:])
			if _, err := txn.Get(countersKey(g)); err == nil || !rec.Info.GetReadFanout() {
				continue
			}
			fixes = append(fixes, fix{g, &clusterv1.GroupCounters{LastGroupSeq: rec.Info.LastGroupSeq, MessageCount: rec.MessageCount, HintedGseq: rec.HintedGseq}})
		}
		it.Close()
		for _, fx := range fixes {
			b, _ := proto.Marshal(fx.c)
			if err := txn.Set(countersKey(fx.g), b); err != nil {
				return err
			}
			if fx.c.LastGroupSeq > fx.c.HintedGseq {
				if err := txn.Set(newsKey(fx.g), nil); err != nil {
					return err
				}
			}
		}
		return txn.Set(keyLayout, binary.BigEndian.AppendUint64(nil, layoutVersion))
	})
}

// finishSwap completes a snapshot swap a crash interrupted: the loaded
// directory was renamed into place (drop the old one), or not yet (put the
// old one back). A half-loaded ".restore" directory is discarded.
func finishSwap(dir string) error {
	old := dir + ".old"
	if _, err := os.Stat(old); err == nil {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			if err := os.Rename(old, dir); err != nil {
				return fmt.Errorf("store: recover interrupted snapshot swap: %w", err)
			}
		} else if err := os.RemoveAll(old); err != nil {
			return fmt.Errorf("store: recover interrupted snapshot swap: %w", err)
		}
	}
	return os.RemoveAll(dir + ".restore")
}

// loadBackup is db.Load, with Badger's panics on malformed input turned
// into errors.
func loadBackup(db *badger.DB, r io.Reader) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("malformed backup stream: %v", p)
		}
	}()
	return db.Load(r, 256)
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
