package store

import (
	"strconv"

	"github.com/seqd/seqd/keyspace"
)

// GroupKeyBit marks group keys (see package keyspace).
const GroupKeyBit = keyspace.GroupBit

// DirectMessageID and GroupMessageID name messages (see package keyspace).
var (
	DirectMessageID = keyspace.DirectMessageID
	GroupMessageID  = keyspace.GroupMessageID
)

// ParseMessageID is keyspace.ParseMessageID with an INVALID_ARGUMENT error.
func ParseMessageID(id string) (key, seq uint64, err error) {
	key, seq, err = keyspace.ParseMessageID(id)
	if err != nil {
		return 0, 0, invalid("%v", err)
	}
	return key, seq, nil
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
