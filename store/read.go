package store

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// Reads see one consistent Badger snapshot, which is always the state
// after some whole entry: never half of a batch.

// ErrNotFound is returned for a group or record that does not exist.
var ErrNotFound = errors.New("store: not found")

// ErrNotMember is returned when a user reads a group it is not in.
var ErrNotMember = errors.New("store: not a member")

// ErrWriteFanout is returned for a timeline read of a write-fanout group,
// which has no timeline: its messages are in each member's inbox.
var ErrWriteFanout = errors.New("store: write-fanout group")

// lookupError carries a message for the user and a sentinel for errors.Is.
type lookupError struct {
	kind error
	msg  string
}

func (e *lookupError) Error() string { return e.msg }
func (e *lookupError) Unwrap() error { return e.kind }

func notFound(format string, args ...any) error {
	return &lookupError{ErrNotFound, fmt.Sprintf(format, args...)}
}

func getProto(txn *badger.Txn, key []byte, m proto.Message) (bool, error) {
	it, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, it.Value(func(v []byte) error { return proto.Unmarshal(v, m) })
}

// checkEvent checks that an event read at an inbox or timeline key holds
// that key's seq. Badger answers a value it could not read (a damaged
// value log) as empty rather than as an error, and an empty event decodes
// fine: it would go out as an event of seq 0.
func checkEvent(key []byte, e *seqdv1.Event) error {
	if seq := beU64(key[len(key)-8:]); e.Seq != seq {
		return fmt.Errorf("store: the event at key %x reads as seq %d, not %d: this replica's data is damaged (see its log for Badger's read errors)", key, e.Seq, seq)
	}
	return nil
}

// SyncResult is one page of a user's inbox.
type SyncResult struct {
	Events         []*seqdv1.Event
	NextCheckpoint uint64
	HasMore        bool
	Truncated      bool
	EarliestSeq    uint64
}

// Sync returns up to limit events of user with seq > after, in order.
func (f *FSM) Sync(user, after uint64, limit int) (*SyncResult, error) {
	res := &SyncResult{NextCheckpoint: after}
	if after == ^uint64(0) || limit <= 0 {
		return res, nil // nothing is above the largest seq
	}
	err := f.view(func(txn *badger.Txn) error {
		var us clusterv1.UserState
		if _, err := getProto(txn, userKey(user), &us); err != nil {
			return err
		}
		if us.TruncatedBelow > after+1 {
			res.Truncated = true
			res.EarliestSeq = us.TruncatedBelow
		}
		// From the first event retention left: below it are only its
		// deletes, which a scan would step over one by one.
		if err := scanEvents(txn, inboxPrefix(user), inboxKey(user, max(after+1, us.TruncatedBelow)), limit, res); err != nil {
			return err
		}
		if res.Truncated {
			// Past the removed range, so that the next call from the
			// checkpoint is not told again.
			res.NextCheckpoint = max(res.NextCheckpoint, us.TruncatedBelow-1)
		}
		return nil
	})
	return res, err
}

// MaxPageBytes bounds the events of one page (Sync, SyncGroup, History,
// a Subscribe batch) as well as its limit: a page stops before the event
// that would take it past this many bytes, with has_more set, and always
// holds at least one event. Without it, 100 events of the largest size
// (a 64 KiB body and 4 KiB of metadata) made a 7 MB response, over the
// 4 MiB a gRPC client accepts by default, and a device retrying from its
// checkpoint would fail the same way for good.
const MaxPageBytes = 1 << 20

// pageFull reports whether a page of n events and size bytes must stop
// before an event of next bytes.
func pageFull(n, limit, size, next int) bool {
	return n == limit || n > 0 && size+next > MaxPageBytes
}

// scanEvents reads up to limit events under prefix from start, in order,
// into res, setting its checkpoint and whether more remain.
func scanEvents(txn *badger.Txn, prefix, start []byte, limit int, res *SyncResult) error {
	it := txn.NewIterator(iteratorOpts(prefix))
	defer it.Close()
	size := 0
	for it.Seek(start); it.ValidForPrefix(prefix); it.Next() {
		next := int(it.Item().ValueSize())
		if pageFull(len(res.Events), limit, size, next) {
			res.HasMore = true
			return nil
		}
		size += next
		e := &seqdv1.Event{}
		if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, e) }); err != nil {
			return err
		}
		if err := checkEvent(it.Item().Key(), e); err != nil {
			return err
		}
		res.Events = append(res.Events, e)
		res.NextCheckpoint = e.Seq
	}
	return nil
}

// ReadMarkerCovers is tx.coveredMarker on the applied state: the answer
// to a read marker the user's marker already covers, or nil.
func (f *FSM) ReadMarkerCovers(user uint64, conv *seqdv1.Conversation, upTo uint64) (resp *seqdv1.MarkReadResponse, err error) {
	err = f.read(func(x *tx) { resp = x.coveredMarker(user, conv, upTo) })
	return resp, err
}

// HasConversation reports whether user has conversation c: a state
// record (unread counts, a read marker, a read-fanout join) or at least one
// message copy in its history.
func (f *FSM) HasConversation(user uint64, c *seqdv1.Conversation) (bool, error) {
	var has bool
	err := f.view(func(txn *badger.Txn) error {
		if _, err := txn.Get(convKey(user, c)); err == nil {
			has = true
			return nil
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		p := historyPrefix(user, c)
		opts := iteratorOpts(p)
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		it.Seek(p)
		has = it.ValidForPrefix(p)
		return nil
	})
	return has, err
}

// LastSeq returns the newest seq in user's inbox.
func (f *FSM) LastSeq(user uint64) (uint64, error) {
	var us clusterv1.UserState
	err := f.view(func(txn *badger.Txn) error {
		_, err := getProto(txn, userKey(user), &us)
		return err
	})
	return us.LastSeq, err
}

// History returns up to limit message copies of one conversation of user,
// newest first, below before (0 = from the newest).
func (f *FSM) History(user uint64, c *seqdv1.Conversation, before uint64, limit int) (out []*seqdv1.Event, next uint64, err error) {
	err = f.view(func(txn *badger.Txn) error {
		// The index holds keys only; each names its copy in the inbox.
		out, next, err = pageBackwards(txn, historyPrefix(user, c), before, 1, limit, false, func(_ *badger.Item, seq uint64) (*seqdv1.Event, error) {
			e := &seqdv1.Event{}
			if ok, err := getProto(txn, inboxKey(user, seq), e); err != nil || !ok {
				return nil, err
			}
			return e, nil
		})
		return err
	})
	return out, next, err
}

// pageBackwards reads events newest first from the keys under prefix
// (each ending in its seq): below before (0: from the newest), at or
// above floor, up to limit, and stopping before a page would pass
// MaxPageBytes (it always holds one). load returns the event of a key
// (nil: none, skip it). next is the seq to page on from, 0 once floor or
// the start of the keys is reached.
func pageBackwards(txn *badger.Txn, prefix []byte, before, floor uint64, limit int, prefetch bool,
	load func(item *badger.Item, seq uint64) (*seqdv1.Event, error)) (out []*seqdv1.Event, next uint64, err error) {
	if limit <= 0 || before != 0 && before <= floor {
		return nil, 0, nil
	}
	opts := iteratorOpts(prefix)
	opts.Reverse = true
	opts.PrefetchValues = prefetch
	it := txn.NewIterator(opts)
	defer it.Close()
	start := append(u64(slices.Clone(prefix), ^uint64(0)), 0xff)
	if before != 0 {
		start = u64(slices.Clone(prefix), before-1)
	}
	size := 0
	for it.Seek(start); it.ValidForPrefix(prefix); it.Next() {
		seq := beU64(it.Item().Key()[len(prefix):])
		if seq < floor {
			break
		}
		if len(out) == limit {
			return out, out[len(out)-1].Seq, nil
		}
		e, err := load(it.Item(), seq)
		if err != nil {
			return nil, 0, err
		}
		if e == nil {
			continue
		}
		if err := checkEvent(it.Item().Key(), e); err != nil {
			return nil, 0, err
		}
		n := proto.Size(e)
		if pageFull(len(out), limit, size, n) {
			return out, out[len(out)-1].Seq, nil
		}
		size += n
		out = append(out, e)
	}
	return out, 0, nil
}

// Unread returns the per-conversation unread counts and the total.
//
// The conversations listed are those after `after` (nil: from the first),
// at most limit of them (0: no count) and no more than fit in
// MaxPageBytes; has_more and next_after say where the next page starts.
// The total counts every conversation, listed or not.
func (f *FSM) Unread(user uint64, after *seqdv1.Conversation, limit int) (*seqdv1.UnreadResponse, error) {
	resp := &seqdv1.UnreadResponse{}
	var from []byte
	if after != nil {
		from = convKey(user, after)
	}
	if limit <= 0 {
		limit = math.MaxInt
	}
	size := 0
	err := f.view(func(txn *badger.Txn) error {
		var us clusterv1.UserState
		if _, err := getProto(txn, userKey(user), &us); err != nil {
			return err
		}
		resp.Total = us.TotalUnread
		p := convPrefix(user)
		it := txn.NewIterator(seekOpts(p))
		defer it.Close()
		for it.Rewind(); it.ValidForPrefix(p); it.Next() {
			var cs clusterv1.ConvState
			if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, &cs) }); err != nil {
				return err
			}
			conv := convFromKey(it.Item().Key())
			n := convUnread(&cs)
			if cs.ReadFanout && n > 0 {
				left, err := unreadRetained(txn, conv, &cs, n)
				if err != nil {
					return err
				}
				resp.Total -= n - left
				n = left
			}
			// Every conversation is read for the total; a listed one also
			// comes after `after` and fits in the page.
			if n == 0 || resp.HasMore || from != nil && bytes.Compare(it.Item().Key(), from) <= 0 {
				continue
			}
			cu := &seqdv1.ConversationUnread{Conversation: conv, Count: n, ReadUpTo: cs.ReadUpTo}
			next := proto.Size(cu) + 3 // with its field tag and length
			if pageFull(len(resp.Conversations), limit, size, next) {
				resp.HasMore = true
				resp.NextAfter = resp.Conversations[len(resp.Conversations)-1].Conversation
				continue
			}
			size += next
			resp.Conversations = append(resp.Conversations, cu)
		}
		return nil
	})
	return resp, err
}

// unreadRetained is a read-fanout group's unread count n for a member
// (state cs) less the messages retention removed from the group's
// timeline: those can no longer be read, so they are read already. The
// member's state, which hints and read markers change, is left as it is;
// its next read marker counts them read (TimelineCount). A group on
// another shard is not looked up: the member's state has the expired
// count of the latest hint that carried one (store format 5).
func unreadRetained(txn *badger.Txn, conv *seqdv1.Conversation, cs *clusterv1.ConvState, n uint64) (uint64, error) {
	if conv.GetType() != seqdv1.ConversationType_CONVERSATION_TYPE_GROUP {
		return n, nil
	}
	c, err := countersIn(txn, conv.GetId())
	if err != nil {
		return n, err
	}
	return unreadAfterExpiry(cs, c.ExpiredCount, n), nil
}

// unreadAfterExpiry is convUnread(cs), n, with the group timeline's first
// messages read up to what retention removed: the larger of
// groupExpired (the group's counters, on the group's shard) and the
// member's state's (the latest hint that carried a count).
func unreadAfterExpiry(cs *clusterv1.ConvState, groupExpired, n uint64) uint64 {
	expired := max(groupExpired, cs.ExpiredCount)
	if expired <= cs.ReadCount {
		return n
	}
	eff := proto.Clone(cs).(*clusterv1.ConvState)
	eff.ReadCount = expired
	return convUnread(eff)
}

// groupIn reads a group's membership with its counters filled in, and
// the counters (legacyCounters for a group written before counters had
// their record, as tx.group does).
func groupIn(txn *badger.Txn, g uint64) (*clusterv1.GroupRecord, *clusterv1.GroupCounters, bool, error) {
	var rec clusterv1.GroupRecord
	ok, err := getProto(txn, groupKey(g), &rec)
	if err != nil || !ok {
		return nil, nil, false, err
	}
	c, own, err := groupCounters(txn, g, &rec)
	if err != nil {
		return nil, nil, false, err
	}
	if own {
		rec.Info.LastGroupSeq, rec.MessageCount, rec.HintedGseq = c.LastGroupSeq, c.MessageCount, c.HintedGseq
	}
	return &rec, c, true, nil
}

// groupCounters reads group g's counters record, or, for a group written
// before counters had their own record (own false), takes them from rec.
func groupCounters(txn *badger.Txn, g uint64, rec *clusterv1.GroupRecord) (c *clusterv1.GroupCounters, own bool, err error) {
	c = &clusterv1.GroupCounters{}
	if own, err = getProto(txn, countersKey(g), c); err != nil || own {
		return c, own, err
	}
	return legacyCounters(rec), false, nil
}

// countersIn reads a group's counters record (zero if it has none: a
// write-fanout group, or one without a timeline entry yet).
func countersIn(txn *badger.Txn, g uint64) (*clusterv1.GroupCounters, error) {
	var c clusterv1.GroupCounters
	_, err := getProto(txn, countersKey(g), &c)
	return &c, err
}

// Group returns a group's record, counters included.
func (f *FSM) Group(g uint64) (*clusterv1.GroupRecord, error) {
	var rec *clusterv1.GroupRecord
	var ok bool
	err := f.view(func(txn *badger.Txn) error {
		var err error
		rec, _, ok, err = groupIn(txn, g)
		return err
	})
	if err == nil && !ok {
		err = notFound("group %d does not exist", g)
	}
	return rec, err
}

func isMember(info *seqdv1.GroupInfo, user uint64) (*seqdv1.GroupMember, bool) {
	for _, m := range info.GetMembers() {
		if m.User == user {
			return m, true
		}
	}
	return nil, false
}

// SyncGroup returns timeline entries of a read-fanout group visible to a
// member: after after, and after the member joined.
func (f *FSM) SyncGroup(user, g, after uint64, limit int) (*SyncResult, error) {
	res := &SyncResult{NextCheckpoint: after}
	err := f.view(func(txn *badger.Txn) error {
		m, c, err := f.memberTimeline(txn, user, g)
		if err != nil {
			return err
		}
		from := max(after, m.JoinedAfterGseq)
		if from == ^uint64(0) || limit <= 0 {
			return nil // nothing is above the largest seq
		}
		if c.TimelineStart > from+1 {
			// Retention removed entries this member had not read. The
			// checkpoint moves past them, so that the next call from it is
			// not told again.
			res.Truncated, res.EarliestSeq = true, c.TimelineStart
			from = c.TimelineStart - 1
		}
		if err := scanEvents(txn, timelinePrefix(g), timelineKey(g, from+1), limit, res); err != nil {
			return err
		}
		if res.NextCheckpoint < from {
			res.NextCheckpoint = from
		}
		return nil
	})
	return res, err
}

// GroupHistory pages backwards through a read-fanout group's timeline
// as a member sees it: entries before before (0: from the newest), newest
// first, down to the member's join and the first entry retention kept.
// next is the group seq to page on from, 0 at that floor.
func (f *FSM) GroupHistory(user, g, before uint64, limit int) (out []*seqdv1.Event, next uint64, err error) {
	err = f.view(func(txn *badger.Txn) error {
		m, c, err := f.memberTimeline(txn, user, g)
		if err != nil {
			return err
		}
		// The oldest group seq the member may read.
		floor := max(m.JoinedAfterGseq+1, c.TimelineStart)
		out, next, err = pageBackwards(txn, timelinePrefix(g), before, floor, limit, true, func(item *badger.Item, _ uint64) (*seqdv1.Event, error) {
			e := &seqdv1.Event{}
			return e, item.Value(func(v []byte) error { return proto.Unmarshal(v, e) })
		})
		return err
	})
	return out, next, err
}

// groupRead returns group g's record, shared with other readers (read
// only; a large group's comes decoded from f.reads), and its counters.
func (f *FSM) groupRead(txn *badger.Txn, g uint64) (*readGroup, *clusterv1.GroupCounters, error) {
	item, err := txn.Get(groupKey(g))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil, notFound("group %d does not exist", g)
	}
	if err != nil {
		return nil, nil, err
	}
	e := f.reads.get(g, item.Version())
	if e == nil {
		rec := &clusterv1.GroupRecord{}
		if err := item.Value(func(v []byte) error { return proto.Unmarshal(v, rec) }); err != nil {
			return nil, nil, err
		}
		e = f.reads.put(g, item.Version(), rec)
	}
	c, _, err := groupCounters(txn, g, e.rec)
	if err != nil {
		return nil, nil, err
	}
	return e, c, nil
}

// memberTimeline returns user's membership of read-fanout group g and
// the group's counters, for a read of its timeline, or the refusal of
// that read.
func (f *FSM) memberTimeline(txn *badger.Txn, user, g uint64) (*seqdv1.GroupMember, *clusterv1.GroupCounters, error) {
	e, c, err := f.groupRead(txn, g)
	if err != nil {
		return nil, nil, err
	}
	m, ok := e.member(user)
	if !ok {
		return nil, nil, &lookupError{ErrNotMember, fmt.Sprintf("user %d is not a member of group %d", user, g)}
	}
	if !e.rec.Info.ReadFanout {
		return nil, nil, &lookupError{ErrWriteFanout, fmt.Sprintf("group %d uses write fanout: it has no timeline, its messages are in each member's inbox (read them with Sync or History)", g)}
	}
	return m, c, nil
}

// TimelineCount returns how many messages the group's timeline holds up
// to gseq, its newest gseq, whether it uses read fanout and whether user
// is a member. Messages retention removed count as held: a gseq inside the
// removed range counts all of them (a read marker there reads them all, as
// none can be fetched any more).
func (f *FSM) TimelineCount(g, upTo, user uint64) (*clusterv1.TimelineCountResponse, error) {
	resp := &clusterv1.TimelineCountResponse{}
	err := f.view(func(txn *badger.Txn) error {
		e, c, err := f.groupRead(txn, g)
		if err != nil {
			return err
		}
		_, resp.Member = e.member(user)
		resp.ReadFanout, resp.LastGseq = e.rec.Info.ReadFanout, c.LastGroupSeq
		if upTo >= c.LastGroupSeq {
			resp.Count = c.MessageCount
			return nil
		}
		resp.Count = c.ExpiredCount
		// The entry at or below upTo carries the running count.
		p := timelinePrefix(g)
		opts := iteratorOpts(p)
		opts.Reverse = true
		it := txn.NewIterator(opts)
		defer it.Close()
		it.Seek(timelineKey(g, upTo))
		if it.ValidForPrefix(p) {
			var e seqdv1.Event
			if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, &e) }); err != nil {
				return err
			}
			resp.Count = max(resp.Count, e.GroupCount)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// LogTrimmedError is a read of the change log from before the first entry
// it still holds: retention removed the entries in between.
type LogTrimmedError struct{ After, First uint64 }

func (e *LogTrimmedError) Error() string {
	return fmt.Sprintf("the change log no longer holds the entries after %d: retention removed them, and it starts at %d", e.After, e.First)
}

// ChangeLog returns up to limit change-log entries after index, and the
// first entry the log holds (0: it was never trimmed). Reading from before
// that entry fails with a *LogTrimmedError.
func (f *FSM) ChangeLog(after uint64, limit int) (out []*clusterv1.ChangeLogEntry, first uint64, err error) {
	rerr := f.read(func(x *tx) {
		if first, _ = x.getU64(keyLogStart); after+1 < first {
			err = &LogTrimmedError{After: after, First: first}
			return
		}
		p := []byte{tagLog}
		it := x.t.NewIterator(iteratorOpts(p))
		defer it.Close()
		for it.Seek(logKey(after + 1)); it.ValidForPrefix(p) && len(out) < limit; it.Next() {
			e := &clusterv1.ChangeLogEntry{}
			if err = it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, e) }); err != nil {
				return
			}
			out = append(out, e)
		}
	})
	if err == nil {
		err = rerr
	}
	return out, first, err
}

// FirstDue returns the first user from `from` on with an inbox event sent
// before `before` at the head of the inbox (ok false: none), where a
// retention step has work (tx.firstDue).
func (f *FSM) FirstDue(before int64, from uint64) (user uint64, ok bool, err error) {
	err = f.read(func(x *tx) { user, ok = x.firstDue(before, from) })
	return user, ok, err
}

// FirstTimelineDue returns the first read-fanout group from `from` on
// with a timeline entry a retention step would remove (ok false: none;
// tx.firstTimelineDue).
func (f *FSM) FirstTimelineDue(before int64, from uint64) (group uint64, ok bool, err error) {
	err = f.read(func(x *tx) { group, ok = x.firstTimelineDue(before, from) })
	return group, ok, err
}

// TimelinesExpired reports whether retention has removed an entry of a
// read-fanout group timeline on this shard (keyTimelinesExpired).
func (f *FSM) TimelinesExpired() (bool, error) {
	expired := false
	err := f.read(func(x *tx) { expired = x.has(keyTimelinesExpired) })
	return expired, err
}

// HoldsCopyKeys reports whether the shard holds a copy key: a delivery
// from another shard, or a join, has been applied here.
func (f *FSM) HoldsCopyKeys() (bool, error) {
	held := false
	err := f.read(func(x *tx) { held = len(x.keys([]byte{tagCopy}, []byte{tagCopy}, 1)) > 0 })
	return held, err
}

// TrimDue reports whether the change log holds an entry a trim before
// before would remove (trimWalk).
func (f *FSM) TrimDue(before int64) (bool, error) {
	due := false
	err := f.read(func(x *tx) {
		doomed, _ := x.trimWalk(before, 1)
		due = len(doomed) > 0
	})
	return due, err
}

// SweepDue reports whether a dedup sweep at cutoff would find work: a
// send past its TTL in the change log after the last entry swept, or more
// entries without sends than one sweep walks (sweepDedup). A few entries
// without sends do not count: a sweep's own entry is one, and counting it
// would have each sweep call for the next.
func (f *FSM) SweepDue(cutoff int64) (bool, error) {
	due := false
	err := f.read(func(x *tx) {
		doomed, _, _, more := x.sweepWalk(cutoff, sweepLimit)
		due = len(doomed) > 0 || more
	})
	return due, err
}

// Dedup returns the first result of (sender, clientMsgID) if it is still
// remembered at now.
func (f *FSM) Dedup(sender uint64, clientMsgID string, now int64) (*seqdv1.SendResponse, error) {
	var d clusterv1.DedupRecord
	var ok bool
	err := f.view(func(txn *badger.Txn) error {
		var err error
		ok, err = getProto(txn, dedupKey(sender, clientMsgID), &d)
		return err
	})
	if err != nil || !ok || d.ExpiresMs <= now {
		return nil, err
	}
	resp := proto.Clone(d.Response).(*seqdv1.SendResponse)
	resp.Duplicate = true
	return resp, nil
}

// Reused names the field in which req differs from the send that first
// used its client_msg_id, whose answer was first ("" if it is a retry), as
// the FSM compares them (tx.reused).
func (f *FSM) Reused(req *seqdv1.SendRequest, first *seqdv1.SendResponse) (field string, err error) {
	err = f.read(func(x *tx) { field = x.reused(req, first) })
	return field, err
}

// Message returns a message record, or nil.
func (f *FSM) Message(id string) (*clusterv1.MessageRecord, error) {
	var rec clusterv1.MessageRecord
	var ok bool
	err := f.view(func(txn *badger.Txn) error {
		var err error
		ok, err = getProto(txn, messageKey(id), &rec)
		return err
	})
	if err != nil || !ok {
		return nil, err
	}
	return &rec, nil
}

// Copy returns user's copy of message id on this shard, as the FSM finds
// it (tx.copyOf): its seq (0 if the user has none) and its event (nil if
// retention removed it).
func (f *FSM) Copy(user uint64, id string) (seq uint64, e *seqdv1.Event, err error) {
	err = f.read(func(x *tx) { seq, e = x.copyOf(user, id) })
	return seq, e, err
}

// OutboxItem is one queued delivery with its key.
type OutboxItem struct {
	Key  []byte
	Item *clusterv1.FanoutItem
}

// Outbox returns up to limit queued deliveries, oldest first.
func (f *FSM) Outbox(limit int) ([]OutboxItem, error) { return f.OutboxAfter(nil, limit) }

// OutboxAfter is Outbox from the first item after key after (nil: from
// the start).
func (f *FSM) OutboxAfter(after []byte, limit int) ([]OutboxItem, error) {
	var out []OutboxItem
	err := f.view(func(txn *badger.Txn) error {
		p := []byte{tagOutbox}
		it := txn.NewIterator(iteratorOpts(p))
		defer it.Close()
		it.Rewind()
		if after != nil {
			it.Seek(after)
			if it.ValidForPrefix(p) && bytes.Equal(it.Item().Key(), after) {
				it.Next()
			}
		}
		for ; it.ValidForPrefix(p) && len(out) < limit; it.Next() {
			item := &clusterv1.FanoutItem{}
			if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, item) }); err != nil {
				return err
			}
			out = append(out, OutboxItem{Key: it.Item().KeyCopy(nil), Item: item})
		}
		return nil
	})
	return out, err
}

// OutboxCount counts the outbox's items, up to limit (keys only).
func (f *FSM) OutboxCount(limit int) (int, error) {
	n := 0
	err := f.view(func(txn *badger.Txn) error {
		p := []byte{tagOutbox}
		it := txn.NewIterator(seekOpts(p))
		defer it.Close()
		for it.Rewind(); it.ValidForPrefix(p) && n < limit; it.Next() {
			n++
		}
		return nil
	})
	return n, err
}

// GroupNews is a read-fanout group whose members are due a hint round:
// its record (for its members) and its counters.
type GroupNews struct {
	*clusterv1.GroupRecord
	Counters *clusterv1.GroupCounters
}

// expiryOnly reports whether the group's only news is that retention
// removed messages: every timeline entry has been hinted.
func (g GroupNews) expiryOnly() bool { return g.Counters.LastGroupSeq == g.Counters.HintedGseq }

// ReadFanoutGroups returns every read-fanout group with news for its
// members (hasNews): timeline entries not yet hinted to them, or messages
// retention removed that no hint has told.
func (f *FSM) ReadFanoutGroups() ([]GroupNews, error) {
	var out []GroupNews
	err := f.view(func(txn *badger.Txn) error {
		p := []byte{tagNews}
		opts := iteratorOpts(p)
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.ValidForPrefix(p); it.Next() {
			rec, c, ok, err := groupIn(txn, beU64(it.Item().Key()[1:]))
			if err != nil {
				return err
			}
			if ok && rec.Info.GetReadFanout() && hasNews(c) {
				out = append(out, GroupNews{GroupRecord: rec, Counters: c})
			}
		}
		return nil
	})
	return out, err
}
