// Package keyspace maps users, groups and message ids onto allocator keys,
// which decide the section, the AllocSvr and the store shard of each.
//
// Users are keys 1..2^63-1. Group g's timeline is key 1<<63 | g. Message
// ids name where a message's record is kept: "<sender>.<seq>" for a DIRECT
// message (the sender's inbox seq) and "g<group>.<gseq>" for a GROUP
// message (the group's seq); both halves come from the allocator, so ids
// are unique without coordination.
package keyspace

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
)

// GroupBit marks group keys.
const GroupBit = 1 << 63

// Group returns the allocator key of group g.
func Group(g uint64) uint64 { return GroupBit | g }

// DirectConversationID is a DIRECT conversation id derived from its
// participants (sender and recipients): FNV-1a (64-bit) of their ids,
// sorted, in decimal, joined by commas ("1,2"), with the top bit cleared
// so it fits a signed 64-bit integer (and 1 if that leaves 0). Every
// participant computes the same id, so a reply lands in the same
// conversation. seqctl send uses it without --conv; clients may use any
// ids of their own.
func DirectConversationID(sender uint64, recipients []uint64) uint64 {
	ids := append([]uint64{sender}, recipients...)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatUint(id, 10)
	}
	h := fnv.New64a()
	h.Write([]byte(strings.Join(parts, ",")))
	id := h.Sum64() &^ GroupBit
	if id == 0 {
		id = 1
	}
	return id
}

// DirectMessageID names a DIRECT message.
func DirectMessageID(sender, seq uint64) string { return fmt.Sprintf("%d.%d", sender, seq) }

// GroupMessageID names a GROUP message.
func GroupMessageID(group, gseq uint64) string { return fmt.Sprintf("g%d.%d", group, gseq) }

// ParseMessageID returns the key the message's record lives under (the
// sender, or Group(g)) and the seq.
func ParseMessageID(id string) (key, seq uint64, err error) {
	if len(id) > maxMessageIDLen {
		return 0, 0, fmt.Errorf("message_id is %d bytes; seqd message ids are at most %d (\"<sender>.<seq>\" or \"g<group>.<seq>\")", len(id), maxMessageIDLen)
	}
	group := strings.HasPrefix(id, "g")
	a, b, ok := strings.Cut(strings.TrimPrefix(id, "g"), ".")
	if !ok {
		return 0, 0, fmt.Errorf("message_id %q is not a seqd message id (\"<sender>.<seq>\" or \"g<group>.<seq>\")", id)
	}
	origin, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil || origin == 0 || seq == 0 || origin >= GroupBit {
		return 0, 0, fmt.Errorf("message_id %q is not a seqd message id (\"<sender>.<seq>\" or \"g<group>.<seq>\")", id)
	}
	// Only the canonical spelling names a message ("007.1" does not).
	canonical := DirectMessageID(origin, seq)
	if group {
		canonical = GroupMessageID(origin, seq)
		origin |= GroupBit
	}
	if id != canonical {
		return 0, 0, fmt.Errorf("message_id %q is not in canonical form; did you mean %q?", id, canonical)
	}
	return origin, seq, nil
}

// maxMessageIDLen is the longest message id: "g", two 20-digit numbers
// and the dot.
const maxMessageIDLen = 42

// CheckUser reports what is wrong with user id u given in field, or nil.
func CheckUser(field string, u uint64) error {
	switch {
	case u == 0:
		return fmt.Errorf("%s is 0; user ids start at 1", field)
	case u >= GroupBit:
		return fmt.Errorf("%s %d is in the group key space; user ids are below 2^63", field, u)
	}
	return nil
}

// CheckGroup reports what is wrong with group id g given in field, or nil.
func CheckGroup(field string, g uint64) error {
	switch {
	case g == 0:
		return fmt.Errorf("%s is 0; group ids start at 1", field)
	case g >= GroupBit:
		return fmt.Errorf("%s %d is too large; group ids are below 2^63", field, g)
	}
	return nil
}
