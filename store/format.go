package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/seqd/seqd/internal/bugs"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

// storeFormat is this release's store format, the one its builds apply
// (buildFormat; a seqdnext build plays the next). Every replica of a
// shard must apply every entry alike, and a replica of an older build
// would silently apply differently an entry that uses something it does
// not know (an unknown field is dropped by protobuf, an unknown op or
// command is refused): its state would drift from the others' with no
// error anywhere. So an entry that needs a newer replica says so in
// StoreCommand.min_format, and a replica whose format is lower stops
// applying at that entry (it halts) rather than diverge.
//
// When an op is added or changes meaning, raise storeFormat and list the
// op in opFormats: entries holding it then carry that min_format, and a
// leader proposes them only once every replica runs the new format. When
// an op kind gains a field that changes what it does, list the field in
// fieldFormats instead, and have the code that proposes the op set the
// field only once formatReady says every replica applies that format (the
// pipeline refuses the op otherwise).
// Format 1 added halting; format 2 added the dedup sweep; format 3 added
// retention in bounded steps; format 4 added retention of read-fanout
// group timelines; format 5 puts the group's expired count on hint events;
// format 6 has retention remove the copy keys of deliveries from other
// shards; format 7 has a group's members hinted when retention removes
// messages from its timeline; format 8 has a read marker at or below the
// user's marker write nothing; format 9 (this release) has every replica
// refuse an add of members past the group size limit.
const storeFormat = 9

// StoreFormat is the store format this build applies (seqctl replicas
// shows each replica's): storeFormat, but in a seqdnext build.
const StoreFormat = buildFormat

// keyFormatSeen holds the highest min_format of the entries applied here
// (absent: 0). Data holding it cannot be opened by a build of a lower
// format (a downgrade), nor restored into one from a snapshot.
var keyFormatSeen = []byte{tagMeta, 'f', 'o', 'r', 'm', 'a', 't'}

// ErrHalted means the replica stopped applying entries: it met one that
// needs a newer build (a *FormatError says which and why). Upgrading the
// binary and restarting the replica resumes from that entry.
var ErrHalted = errors.New("store: replica halted")

// FormatError is data or an entry that needs a newer store format than
// this replica's.
type FormatError struct {
	What       string // "entry 9", "data in DIR", "a snapshot taken at index 9"
	Need, Have uint32
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("%s needs store format %d and this build applies up to %d; run this replica on a seqd build of that format or newer",
		e.What, e.Need, e.Have)
}

// haltedErr is what a halted replica answers every call.
func haltedErr(err error) error {
	return status.Errorf(codes.Unavailable, "%v; retry at another replica", err)
}

// readFormatSeen reads keyFormatSeen.
func readFormatSeen(db *badger.DB) (uint32, error) {
	v, err := readMeta(db, keyFormatSeen, 4)
	if err != nil || v == nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(v), nil
}

// checkFormatSeen refuses data that entries of a newer format have changed.
func checkFormatSeen(db *badger.DB, format uint32, what string) (uint32, error) {
	seen, err := readFormatSeen(db)
	if err != nil {
		return 0, err
	}
	if seen > format {
		return seen, &FormatError{What: what, Need: seen, Have: format}
	}
	return seen, nil
}

// halt stops this replica applying entries, once; later entries get the
// same error and leave the state alone. It tells onHalt, which stops the
// replica's Raft node.
func (f *FSM) halt(cause *FormatError) error {
	err := fmt.Errorf("%w: %w", ErrHalted, cause)
	if f.halted.CompareAndSwap(nil, &err) {
		f.log.Error("store replica halted; it applies nothing more until upgraded and restarted", "err", err,
			"applied", f.applied.Load())
		if f.onHalt != nil {
			f.onHalt(err)
		}
	}
	return *f.halted.Load()
}

// Halted returns why the replica halted, or nil.
func (f *FSM) Halted() error {
	if p := f.halted.Load(); p != nil {
		return *p
	}
	return nil
}

// opFormats maps a StoreOp kind (its oneof field number in StoreOp) to
// the store format that added it or changed what it does. An op not
// listed applies alike on every format (0). An entry's min_format is the
// highest of its ops' (EncodeBatch), and a leader proposes an op of
// format N only once every replica of its shard applies format N or newer
// (formatReady): otherwise the replicas still on older builds would all
// halt at the entry, and with two of three halted the shard stops.
//
// Format 1 added halting and changed no op. Format 2 added sweep_dedup,
// which deletes dedup records past their TTL: a format-1 replica would
// refuse it as an unknown op and keep them. Format 3 added expire_scan,
// retention in steps that each resume where the last stopped and that
// remove message records with their last copy, and trim_change_log, which
// removes the change log's entries past the retention period. Format 4
// added expire_timelines, which removes old entries of read-fanout group
// timelines. Formats 5 to 9 changed op kinds that older formats know
// (see fieldFormats). Every other op is byte for byte what older builds
// propose.
var opFormats = map[protoreflect.FieldNumber]uint32{
	mustOpField("sweep_dedup"):      2,
	mustOpField("expire_scan"):      3,
	mustOpField("trim_change_log"):  3,
	mustOpField("expire_timelines"): 4,
}

// fieldFormats lists, per StoreOp kind, fields of its message that a
// later format added: an op that sets one needs that format, though its
// kind is older (an older replica would drop the field and apply the op
// as it was). Only the op message's own fields are looked at, not those
// of messages inside it. Format 5 added group_hint's with_expired, which
// puts the group's expired_count on the hint events and in the members'
// states, and deliver's, which takes a delivered hint's count into the
// member's state; format 6 expire_scan's drop_copies, which removes the
// copy keys of the events it removes; format 7 expire_timelines'
// hint_expired, which lists the groups whose expired count it raises for
// a hint round, and group_hint's told_expired, the round that tells it;
// format 8 mark_read's monotonic, with which a marker at or below the
// user's writes nothing; format 9 add_members' max_group_size, with which
// an add past the limit is refused.
var fieldFormats = map[protoreflect.FieldNumber][]fieldFormat{
	mustOpField("add_members"): {mustFieldFormat("add_members", "max_group_size", formatGroupSizeLimit)},
	mustOpField("mark_read"):   {mustFieldFormat("mark_read", "monotonic", formatMonotonicMarks)},
	mustOpField("group_hint"): {
		mustFieldFormat("group_hint", "with_expired", formatHintExpired),
		mustFieldFormat("group_hint", "told_expired", formatExpiryHints),
	},
	mustOpField("deliver"):          {mustFieldFormat("deliver", "with_expired", formatHintExpired)},
	mustOpField("expire_scan"):      {mustFieldFormat("expire_scan", "drop_copies", formatDropCopies)},
	mustOpField("expire_timelines"): {mustFieldFormat("expire_timelines", "hint_expired", formatExpiryHints)},
}

// The store formats that added group_hint's and deliver's with_expired,
// expire_scan's drop_copies, expire_timelines' hint_expired with
// group_hint's told_expired, mark_read's monotonic, and add_members'
// max_group_size.
const (
	formatHintExpired    = 5
	formatDropCopies     = 6
	formatExpiryHints    = 7
	formatMonotonicMarks = 8
	formatGroupSizeLimit = 9
)

// fieldFormat is one field of an op's message, and the format that added
// it.
type fieldFormat struct {
	field  protoreflect.FieldNumber
	format uint32
}

func mustFieldFormat(kind, field string, format uint32) fieldFormat {
	k, ok := opField(kind)
	fd := (&clusterv1.StoreOp{}).ProtoReflect().Descriptor().Fields().ByNumber(k)
	if !ok || fd.Message() == nil || fd.Message().Fields().ByName(protoreflect.Name(field)) == nil {
		panic("store: StoreOp has no " + kind + "." + field)
	}
	return fieldFormat{field: fd.Message().Fields().ByName(protoreflect.Name(field)).Number(), format: format}
}

func mustOpField(name string) protoreflect.FieldNumber {
	n, ok := opField(name)
	if !ok {
		panic("store: StoreOp has no " + name)
	}
	return n
}

// opField is the oneof field number of the StoreOp kind named name (e.g.
// "mark_read"), as opFormats lists it.
func opField(name string) (protoreflect.FieldNumber, bool) {
	fd := (&clusterv1.StoreOp{}).ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
	if fd == nil {
		return 0, false
	}
	return fd.Number(), true
}

// opFormat is the lowest store format that applies op as this build does.
func opFormat(op *clusterv1.StoreOp) uint32 {
	if len(opFormats) == 0 && len(fieldFormats) == 0 {
		return 0
	}
	m := op.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("op"))
	if fd == nil {
		return 0
	}
	need := opFormats[fd.Number()]
	if ffs := fieldFormats[fd.Number()]; len(ffs) > 0 {
		inner := m.Get(fd).Message()
		for _, ff := range ffs {
			if inner.Has(inner.Descriptor().Fields().ByNumber(ff.field)) {
				need = max(need, ff.format)
			}
		}
	}
	return need
}

// kinded is a builder that knows the StoreOp field of the op it builds
// without building it: the frequent ones (send, deliver, mark-read), on
// the proposer's path.
type kinded interface {
	opKind() protoreflect.FieldNumber
}

var (
	kindSend     = mustOpField("send")
	kindDeliver  = mustOpField("deliver")
	kindMarkRead = mustOpField("mark_read")

	kindExpireScan      = mustOpField("expire_scan")
	kindExpireTimelines = mustOpField("expire_timelines")
	kindTrimChangeLog   = mustOpField("trim_change_log")
)

// needsFormat is the store format of the op b builds (with n seqs), known
// before its seqs are allocated. Builders are pure, so one that does not
// say its kind builds one with placeholder seqs (1.7 µs and 9 allocations
// for a send).
func needsFormat(b builder, n int) uint32 {
	if len(opFormats) == 0 && len(fieldFormats) == 0 {
		return 0
	}
	if k, ok := b.(kinded); ok && fieldFormats[k.opKind()] == nil {
		return opFormats[k.opKind()]
	}
	return opFormat(b.build(make([]uint64, n)))
}

// batchFormat is the min_format of an entry holding ops.
func batchFormat(ops []*clusterv1.StoreOp) uint32 {
	var need uint32
	for _, op := range ops {
		need = max(need, opFormat(op))
	}
	return need
}

// formatPollInterval is how often a leader asks its shard's replicas which
// store format they apply.
var formatPollInterval = 10 * time.Second

// shardFormats is what a leader has heard of its replicas' formats this
// term. A stored value is never changed.
type shardFormats struct {
	config  uint64   // the index of the last Raft configuration applied when asked (FSM.config)
	servers []string // its replicas, by id, sorted
	min     uint32   // the lowest format known (the leader's included)
	lowest  string   // a replica running min
	// unknown names a replica that has not told its format this term, and
	// why ("" if every one has); unknownSince is when the leader first
	// failed to hear it.
	unknown      string
	unknownSince time.Time
}

// formatGrace is how long a leader keeps asking a replica that has not
// told its format before it calls the replica missing: until then a
// request that needs a newer format gets UNAVAILABLE (retry; the replica
// may still be registering, or restarting), after it FAILED_PRECONDITION.
const formatGrace = 5 * time.Second

// formatPolls is what formatLoop keeps between polls in one term.
type formatPolls struct {
	config    uint64               // the configuration index (FSM.config) they were asked at
	known     map[string]uint32    // the format each replica last told
	firstMiss map[string]time.Time // when each replica not yet heard was first asked
}

// forgetIfChanged drops what the polls kept once a Raft configuration
// entry has been applied since they asked (config is the FSM's index of
// the last one). A replica removed and added back is a new member, even
// under the same id and between two polls: it gets formatGrace afresh to tell its format, and counts with the format it
// tells then, not with one it told before it left (it may have been
// reinstalled on another build meanwhile). The configuration does not say
// which replicas came and went, so every replica is asked afresh; one
// that is down then holds newer formats back until it answers.
func (p *formatPolls) forgetIfChanged(config uint64) {
	if config != p.config {
		clear(p.known)
		clear(p.firstMiss)
		p.config = config
	}
}

// pollFormats asks every replica in the Raft configuration, voters and
// non-voters alike (both apply every entry), for its store format. A
// replica that does not answer counts with the format it last told this
// leader (known), if it told one: a replica cannot lower its format
// without a restart, and one that comes back on an older build halts at
// the first entry it cannot apply rather than diverge.
func (s *Shard) pollFormats(ctx context.Context, p *formatPolls) (*shardFormats, error) {
	config := s.fsm.config.Load() // before the configuration: a change between them makes formatReady ask again
	fut := s.node.Raft.GetConfiguration()
	if err := fut.Error(); err != nil {
		return nil, fmt.Errorf("reading the Raft configuration: %w", err)
	}
	sf := &shardFormats{config: config, servers: configIDs(fut.Configuration()), min: s.fsm.format, lowest: s.cfg.ReplicaID}
	p.forgetIfChanged(sf.config)
	for _, id := range sf.servers {
		if id == s.cfg.ReplicaID {
			continue
		}
		f, err := s.askFormat(ctx, id)
		if err == nil {
			p.known[id] = f
		} else if _, ok := p.known[id]; !ok {
			if _, ok := p.firstMiss[id]; !ok {
				p.firstMiss[id] = time.Now()
			}
			if sf.unknown == "" || p.firstMiss[id].Before(sf.unknownSince) {
				sf.unknown = fmt.Sprintf("replica %s has not told its store format (%v)", id, err)
				sf.unknownSince = p.firstMiss[id]
			}
			continue
		}
		if p.known[id] < sf.min {
			sf.min, sf.lowest = p.known[id], id
		}
	}
	return sf, nil
}

func configIDs(c raft.Configuration) []string {
	ids := make([]string, len(c.Servers))
	for i, srv := range c.Servers {
		ids[i] = string(srv.ID)
	}
	slices.Sort(ids)
	return ids
}

// askFormat asks one replica of the shard for its store format.
func (s *Shard) askFormat(ctx context.Context, id string) (f uint32, err error) {
	err = s.askReplica(ctx, id, 2*time.Second, func(ctx context.Context, c clusterv1.StoreNodeClient) error {
		f, err = replicaFormatAt(ctx, c, s.cfg.ShardID, id)
		return err
	})
	return f, err
}

// askReplica calls ask with a client of replica id of this shard, within
// timeout.
func (s *Shard) askReplica(ctx context.Context, id string, timeout time.Duration, ask func(context.Context, clusterv1.StoreNodeClient) error) error {
	addr := s.peerAddr(ctx, id)
	if addr == "" {
		return errors.New("its gRPC address is not in the shard map")
	}
	cc, err := s.conns.Get(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := ask(ctx, clusterv1.NewStoreNodeClient(cc)); err != nil {
		// The replica may be down or restarting: try afresh next time
		// instead of waiting out gRPC's reconnect backoff (up to 2 min).
		cc.ResetConnectBackoff()
		return err
	}
	return nil
}

// replicaFormatAt asks the replica behind c, which should be replica id of
// shard, for its store format. A build from before store formats has no
// ReplicaInfo and applies format 0.
func replicaFormatAt(ctx context.Context, c clusterv1.StoreNodeClient, shard, id string) (uint32, error) {
	resp, err := replicaInfoAt(ctx, c, shard, id)
	if status.Code(err) == codes.Unimplemented {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return resp.StoreFormat, nil
}

// replicaInfoAt asks the replica behind c, which should be replica id of
// shard, about itself.
func replicaInfoAt(ctx context.Context, c clusterv1.StoreNodeClient, shard, id string) (*clusterv1.ReplicaInfoResponse, error) {
	resp, err := c.ReplicaInfo(ctx, &clusterv1.ReplicaInfoRequest{})
	if err != nil {
		return nil, err
	}
	if resp.ShardId != shard || resp.ReplicaId != id {
		return nil, fmt.Errorf("its address answers as replica %s of shard %s", resp.ReplicaId, resp.ShardId)
	}
	return resp, nil
}

// formatLoop keeps the leader's view of its replicas' formats: it polls
// on taking over, every formatPollInterval (every second while a replica
// has not told its format), and when formatReady finds the configuration
// changed since the last poll.
func (s *Shard) formatLoop(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	p := &formatPolls{known: map[string]uint32{}, firstMiss: map[string]time.Time{}}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.formatKick:
		}
		sf, err := s.pollFormats(ctx, p)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			s.log.Warn("cannot tell the shard's store formats", "err", err)
		case sf.unknown != "":
			s.formats.Store(sf)
			s.m.shardFormat.Set(-1)
		default:
			s.formats.Store(sf)
			s.m.shardFormat.Set(float64(sf.min))
		}
		next := formatPollInterval
		if err != nil || sf.unknown != "" {
			next = min(next, time.Second)
		}
		t.Reset(next)
	}
}

// formatBelow reports whether the leader knows a replica of its shard runs
// a store format below need (not merely that one has not told its format).
func (s *Shard) formatBelow(need uint32) bool {
	sf := s.formats.Load()
	return sf != nil && sf.min < need
}

// formatReady says whether the leader may propose an op that needs store
// format need: every replica in the current Raft configuration applies it.
// It answers UNAVAILABLE (retry) while the leader's first poll, or a poll
// after a configuration change, is under way, and for formatGrace while a
// replica has not answered.
func (s *Shard) formatReady(need uint32) error {
	if need == 0 || bugs.Enabled(bugs.ProposeNewerFormatEarly) {
		return nil
	}
	sf := s.formats.Load()
	if sf == nil {
		return status.Errorf(codes.Unavailable, "this request needs store format %d and the shard leader is still asking its replicas which format they run; retry shortly", need)
	}
	// A view of another configuration is stale either way, whatever it
	// says: ask again. The latest configuration's replicas change as soon
	// as the leader appends a change; the applied configuration's index
	// (Raft has no other) changes too when a replica is removed and added
	// back, which leaves the same replicas.
	fut := s.node.Raft.GetConfiguration()
	if err := fut.Error(); err != nil || !slices.Equal(configIDs(fut.Configuration()), sf.servers) || s.fsm.config.Load() != sf.config {
		select {
		case s.formatKick <- struct{}{}:
		default:
		}
		return status.Errorf(codes.Unavailable, "this request needs store format %d and the shard's replicas changed since the leader asked their formats; retry shortly", need)
	}
	if sf.min < need {
		return status.Errorf(codes.FailedPrecondition, "this request needs store format %d, and replica %s of shard %s runs a build of format %d: upgrade every replica of the shard first",
			need, sf.lowest, s.cfg.ShardID, sf.min)
	}
	if sf.unknown == "" {
		return nil
	}
	if waited := time.Since(sf.unknownSince); waited >= formatGrace {
		return status.Errorf(codes.FailedPrecondition, "this request needs store format %d, and %s for %v: bring it back, or remove it from shard %s, first",
			need, sf.unknown, waited.Round(time.Second), s.cfg.ShardID)
	}
	return status.Errorf(codes.Unavailable, "this request needs store format %d, and %s yet; retry shortly", need, sf.unknown)
}
