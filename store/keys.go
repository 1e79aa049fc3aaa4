package store

import (
	"encoding/binary"

	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// Badger key layout. Every key starts with a one-byte table tag; numbers
// are big-endian so keys sort in numeric order.
const (
	tagInbox    = 'I' // user, seq                 -> Event
	tagHistory  = 'H' // user, conv type, conv id, seq -> (empty)
	tagUser     = 'U' // user                      -> UserState
	tagConv     = 'C' // user, conv type, conv id  -> ConvState
	tagDedup    = 'D' // sender, client_msg_id     -> DedupRecord
	tagMessage  = 'M' // message id                -> MessageRecord
	tagCopy     = 'X' // user, kind, message id    -> seq of the copy (deliveries from other shards)
	tagGroup    = 'G' // group                     -> GroupRecord (membership)
	tagCounters = 'K' // group                     -> GroupCounters
	tagNews     = 'N' // group                     -> (empty): read-fanout group with un-hinted news
	tagTimeline = 'T' // group, gseq               -> Event
	tagRecall   = 'R' // group, gseq of the recall entry -> group count of the recalled message
	tagOutbox   = 'O' // raft index, n             -> FanoutItem
	tagLog      = 'L' // raft index                -> ChangeLogEntry
	tagMeta     = 'Z' // name                      -> value
)

var (
	keyApplied = []byte{tagMeta, 'a', 'p', 'p', 'l', 'i', 'e', 'd'}
	keyLayout  = []byte{tagMeta, 'l', 'a', 'y', 'o', 'u', 't'}
	// keyPadPrefix + a 4-byte number: memtable padding, deleted as soon as
	// written (padMemtable).
	keyPadPrefix = []byte{tagMeta, 'p', 'a', 'd'}
	// keySweep holds the index of the last change-log entry whose sends'
	// dedup records the sweep has dealt with (sweepDedup).
	keySweep = []byte{tagMeta, 's', 'w', 'e', 'e', 'p'}
	// keyLogStart holds the index of the first change-log entry still
	// held (absent: the log was never trimmed; trimChangeLog).
	keyLogStart = []byte{tagMeta, 'l', 'o', 'g', 's', 't', 'a', 'r', 't'}
	// keyTimelinesExpired exists once retention has removed an entry of a
	// read-fanout group timeline here (expireTimelines), or a hint
	// delivered from another shard has told a member of one (deliver with
	// with_expired); until then a mark-read's answer has no removed
	// messages to look for.
	keyTimelinesExpired = []byte{tagMeta, 't', 'l', 'e', 'x', 'p'}
)

// layoutVersion is the current Badger layout:
//   - 1: group counters inside the group record.
//   - 2: group counters in their own record, plus the news index.
const layoutVersion = 2

func u64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

func inboxPrefix(user uint64) []byte { return u64([]byte{tagInbox}, user) }
func inboxKey(user, seq uint64) []byte {
	return u64(inboxPrefix(user), seq)
}

func convBytes(b []byte, c *seqdv1.Conversation) []byte {
	return u64(append(b, byte(c.GetType())), c.GetId())
}

func historyPrefix(user uint64, c *seqdv1.Conversation) []byte {
	return convBytes(u64([]byte{tagHistory}, user), c)
}
func historyKey(user uint64, c *seqdv1.Conversation, seq uint64) []byte {
	return u64(historyPrefix(user, c), seq)
}

func userKey(user uint64) []byte { return u64([]byte{tagUser}, user) }

func convPrefix(user uint64) []byte { return u64([]byte{tagConv}, user) }
func convKey(user uint64, c *seqdv1.Conversation) []byte {
	return convBytes(convPrefix(user), c)
}

// convFromKey decodes the conversation of a tagConv key.
func convFromKey(k []byte) *seqdv1.Conversation {
	return &seqdv1.Conversation{Type: seqdv1.ConversationType(k[9]), Id: binary.BigEndian.Uint64(k[10:18])}
}

func dedupKey(sender uint64, clientMsgID string) []byte {
	return append(u64([]byte{tagDedup}, sender), clientMsgID...)
}

func messageKey(id string) []byte { return append([]byte{tagMessage}, id...) }

func copyKey(user uint64, kind seqdv1.EventKind, messageID string) []byte {
	return append(append(u64([]byte{tagCopy}, user), byte(kind)), messageID...)
}

func groupKey(g uint64) []byte    { return u64([]byte{tagGroup}, g) }
func countersKey(g uint64) []byte { return u64([]byte{tagCounters}, g) }
func newsKey(g uint64) []byte     { return u64([]byte{tagNews}, g) }

func timelinePrefix(g uint64) []byte { return u64([]byte{tagTimeline}, g) }
func timelineKey(g, gseq uint64) []byte {
	return u64(timelinePrefix(g), gseq)
}

func recallPrefix(g uint64) []byte { return u64([]byte{tagRecall}, g) }
func recallKey(g, gseq uint64) []byte {
	return u64(recallPrefix(g), gseq)
}

func outboxKey(index uint64, n uint32) []byte {
	return binary.BigEndian.AppendUint32(u64([]byte{tagOutbox}, index), n)
}

func logKey(index uint64) []byte { return u64([]byte{tagLog}, index) }

// prefixEnd returns the first key after every key starting with p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func beU64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
