package store

import (
	"google.golang.org/protobuf/proto"
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
