package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"
)

// tx is the Badger transaction of one entry. Reads see the entry's own
// earlier writes. The first write error is kept and returned by commit.
type tx struct {
	t      *badger.Txn
	db     *badger.DB
	cache  *stateCache
	dirty  map[string]proto.Message // cacheable records written by this entry
	now    int64                    // the batch's time; stamped on events that carry none
	err    error
	users  map[uint64]struct{}
	groups map[uint64]struct{} // groups whose membership changed
}

func newTx(db *badger.DB, cache *stateCache) *tx {
	return &tx{t: db.NewTransaction(true), db: db, cache: cache, dirty: map[string]proto.Message{},
		users: map[uint64]struct{}{}, groups: map[uint64]struct{}{}}
}

// get reads key into m and reports whether it existed.
func (x *tx) get(key []byte, m proto.Message) bool {
	it, err := x.t.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false
	}
	if err != nil {
		panic(fmt.Sprintf("store: badger read: %v", err))
	}
	err = it.Value(func(v []byte) error { return proto.Unmarshal(v, m) })
	if err != nil {
		panic(fmt.Sprintf("store: corrupt record under key %x: %v", key, err))
	}
	return true
}

func (x *tx) has(key []byte) bool {
	_, err := x.t.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false
	}
	if err != nil {
		panic(fmt.Sprintf("store: badger read: %v", err))
	}
	return true
}

// getU64 reads an 8-byte value.
func (x *tx) getU64(key []byte) (uint64, bool) {
	it, err := x.t.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, false
	}
	if err != nil {
		panic(fmt.Sprintf("store: badger read: %v", err))
	}
	var v uint64
	it.Value(func(b []byte) error {
		if len(b) == 8 {
			v = binary.BigEndian.Uint64(b)
		}
		return nil
	})
	return v, true
}

func (x *tx) put(key []byte, m proto.Message) {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("store: marshal %T: %v", m, err))
	}
	x.putRaw(key, b)
}

func (x *tx) putRaw(key, val []byte) {
	if x.err != nil {
		return
	}
	x.err = x.t.Set(append([]byte(nil), key...), val)
}

func (x *tx) putU64(key []byte, v uint64) { x.putRaw(key, binary.BigEndian.AppendUint64(nil, v)) }

func (x *tx) del(key []byte) {
	if x.err != nil {
		return
	}
	x.err = x.t.Delete(append([]byte(nil), key...))
}

// keys returns the keys with prefix p from start (inclusive) in order, at
// most limit of them (0 = no limit).
func (x *tx) keys(p, start []byte, limit int) [][]byte {
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = p
	it := x.t.NewIterator(opts)
	defer it.Close()
	var out [][]byte
	for it.Seek(start); it.ValidForPrefix(p); it.Next() {
		out = append(out, it.Item().KeyCopy(nil))
		if limit > 0 && len(out) == limit {
			break
		}
	}
	return out
}

func (x *tx) touchUser(u uint64)  { x.users[u] = struct{}{} }
func (x *tx) touchGroup(g uint64) { x.groups[g] = struct{}{} }

func sortedSet(m map[uint64]struct{}) []uint64 {
	out := make([]uint64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (x *tx) touchedUsers() []uint64  { return sortedSet(x.users) }
func (x *tx) touchedGroups() []uint64 { return sortedSet(x.groups) }

func (x *tx) commit() error {
	if x.err != nil {
		return x.err
	}
	return x.t.Commit()
}

func (x *tx) discard() { x.t.Discard() }

func iteratorOpts(prefix []byte) badger.IteratorOptions {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	return opts
}

// seekOpts are iterator options without value prefetch, for a walk that
// seeks from key to key and reads a few values at each (one inbox after
// another), where each seek would otherwise prefetch the next 100 values
// under prefix, and for a walk over small records (conversation states,
// head records, recall marks), whose values are in the tree already:
// Badger starts a goroutine per prefetched value, which costs more than
// the read (BenchmarkApplyMarkReadInGroups).
func seekOpts(prefix []byte) badger.IteratorOptions {
	opts := iteratorOpts(prefix)
	opts.PrefetchValues = false
	return opts
}
