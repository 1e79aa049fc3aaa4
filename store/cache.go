package store

import (
	"sync"

	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// stateCache holds decoded user, conversation and group records as they
// stand after the last committed entry, so the hot apply path rarely reads
// Badger. A nil entry records that the key does not exist. Only Apply (one
// goroutine) and Restore touch it.
type stateCache struct {
	m   map[string]proto.Message
	max int
}

// maxCached bounds the cache; when full it starts over, which costs only
// some Badger reads.
const maxCached = 200_000

func newStateCache() *stateCache {
	return &stateCache{m: make(map[string]proto.Message), max: maxCached}
}

func (c *stateCache) get(k string) (proto.Message, bool) {
	v, ok := c.m[k]
	return v, ok
}

func (c *stateCache) put(k string, v proto.Message) {
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[k] = v
}

func (c *stateCache) reset() { clear(c.m) }

// getCached reads a cacheable record (user, conversation, group, group
// counters) into the zero message m: from this entry's own writes, then the
// cache, then Badger.
func (x *tx) getCached(key []byte, m proto.Message) bool {
	k := string(key)
	v, ok := x.dirty[k]
	if !ok {
		v, ok = x.cache.get(k)
	}
	if ok {
		if v == nil {
			return false
		}
		proto.Merge(m, v)
		return true
	}
	found := x.get(key, m)
	if found {
		x.cache.put(k, proto.Clone(m))
	} else {
		x.cache.put(k, nil)
	}
	return found
}

// putCached writes a cacheable record; the cache sees it once the entry
// commits.
func (x *tx) putCached(key []byte, m proto.Message) {
	x.put(key, m)
	x.dirty[string(key)] = proto.Clone(m)
}

// publish moves the entry's writes into the cache after a commit.
func (x *tx) publish() {
	for k, v := range x.dirty {
		x.cache.put(k, v)
	}
}

// groupReads keeps the decoded records of large groups for the read path:
// every member of a read-fanout group calls SyncGroup after each hint, and
// each call used to decode the whole member list (1.7 ms for 10,000
// members, 12 ms for 90,000; BenchmarkSyncGroup). An entry is used only
// while the record's Badger version is the one it was decoded from, so a
// reader gets exactly what its own transaction would have decoded.
// Restore, whose fresh database numbers versions anew, clears it.
type groupReads struct {
	mu      sync.Mutex
	m       map[uint64]*readGroup
	members int // members in m's records, at most max
	max     int // maxReadMembers (tests make it small)
}

// readGroup is a decoded group record, shared by readers: read only.
type readGroup struct {
	version uint64
	rec     *clusterv1.GroupRecord
	byUser  map[uint64]*seqdv1.GroupMember
}

// minReadMembers: smaller records are decoded for each read.
const minReadMembers = 256

// maxReadMembers bounds the members the cache holds (about 100 bytes
// each); a record that does not fit evicts others at random.
const maxReadMembers = 1_000_000

func newGroupReads() *groupReads { return &groupReads{m: map[uint64]*readGroup{}, max: maxReadMembers} }

// get returns group g's record decoded at version, or nil.
func (c *groupReads) get(g, version uint64) *readGroup {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[g]; e != nil && e.version == version {
		return e
	}
	return nil
}

// put keeps rec, group g's record decoded at version, if it is large.
func (c *groupReads) put(g, version uint64, rec *clusterv1.GroupRecord) *readGroup {
	e := &readGroup{version: version, rec: rec}
	n := len(rec.GetInfo().GetMembers())
	if n < minReadMembers || n > c.max {
		return e
	}
	e.byUser = make(map[uint64]*seqdv1.GroupMember, n)
	for _, m := range rec.Info.Members {
		e.byUser[m.User] = m
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[g]; old != nil {
		if old.version > version {
			return e // a reader with an older view came late
		}
		c.members -= len(old.rec.Info.Members)
		delete(c.m, g) // not evicted, and counted, twice below
	}
	for k, old := range c.m { // room by evicting records at random
		if c.members+n <= c.max {
			break
		}
		delete(c.m, k)
		c.members -= len(old.rec.Info.Members)
	}
	c.m[g] = e
	c.members += n
	return e
}

// member returns user's membership, if a member.
func (e *readGroup) member(user uint64) (*seqdv1.GroupMember, bool) {
	if e.byUser != nil {
		m, ok := e.byUser[user]
		return m, ok
	}
	return isMember(e.rec.Info, user)
}

// reset empties the cache (Restore, with no reader in flight).
func (c *groupReads) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
	c.members = 0
}
