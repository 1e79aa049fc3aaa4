package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// encodeFormat wraps ops in an entry that needs store format minFormat.
func encodeFormat(t testTB, now int64, minFormat uint32, ops ...*clusterv1.StoreOp) []byte {
	t.Helper()
	var cmd clusterv1.StoreCommand
	if err := proto.Unmarshal(encodeOps(t, now, ops...), &cmd); err != nil {
		t.Fatalf("decode envelope: %v", err)
	}
	cmd.MinFormat = minFormat
	data, err := proto.Marshal(&cmd)
	if err != nil {
		t.Fatalf("encode envelope: %v", err)
	}
	return data
}

// newFormatHarness is a harness whose FSM applies store format format.
func newFormatHarness(t *testing.T, format uint32) *fsmHarness {
	t.Helper()
	h := newHarness(t)
	h.f.Close()
	h.f = openFormatFSM(t, h.dir, format)
	return h
}

func openFormatFSM(t testTB, dir string, format uint32) *FSM {
	t.Helper()
	f, err := openFSM(dir, slog.New(slog.DiscardHandler), 0, format)
	if err != nil {
		t.Fatalf("openFSM(format %d): %v", format, err)
	}
	return f
}

// An entry that needs a newer format is not applied, and neither is
// anything after it: the replica halts, says why once, and refuses
// snapshots (Raft would compact the entry away) and restores.
func TestEntryNeedingNewerFormatHalts(t *testing.T) {
	h := newHarness(t)
	h.must(opSend(7, "c1", "before", apps(1, 1, 2, 1)...))
	before := dumpAll(t, h.f)
	var told []error
	h.f.onHalt = func(err error) { told = append(told, err) }

	br := h.applyData(encodeFormat(t, h.now, buildFormat+1, opSend(7, "c2", "newer", apps(1, 2, 2, 2)...)))
	if !errors.Is(br.Halted, ErrHalted) || br.Err != nil || br.Results != nil {
		t.Fatalf("entry needing format %d: got %+v, want Halted", buildFormat+1, br)
	}
	var fe *FormatError
	if !errors.As(br.Halted, &fe) || fe.What != "entry 2" || fe.Need != buildFormat+1 || fe.Have != buildFormat {
		t.Fatalf("halt error %v does not carry the entry and formats", br.Halted)
	}
	for _, want := range []string{"replica halted", fmt.Sprintf("entry 2 needs store format %d", buildFormat+1),
		fmt.Sprintf("applies up to %d", buildFormat), "newer"} {
		if !strings.Contains(br.Halted.Error(), want) {
			t.Fatalf("halt error %q does not say %q", br.Halted, want)
		}
	}
	// An ordinary entry after it is not applied either: applying it would
	// skip the one before.
	br = h.applyData(encodeOps(t, h.now, opSend(7, "c3", "after", apps(1, 3, 2, 3)...)))
	if !errors.Is(br.Halted, ErrHalted) || br.Results != nil {
		t.Fatalf("entry after the halt: got %+v, want Halted", br)
	}
	if h.f.AppliedIndex() != 1 {
		t.Fatalf("applied index %d after halting at entry 2, want 1", h.f.AppliedIndex())
	}
	if d := diffKeys(before, dumpAll(t, h.f)); d != "" {
		t.Fatalf("a halted replica changed its state:\n%s", d)
	}
	if len(told) != 1 || !errors.Is(h.f.Halted(), ErrHalted) {
		t.Fatalf("onHalt told %d times, Halted() = %v; want once and ErrHalted", len(told), h.f.Halted())
	}
	if _, err := h.f.Snapshot(); !errors.Is(err, ErrHalted) {
		t.Fatalf("Snapshot of a halted replica: %v, want ErrHalted", err)
	}
	other := newHarness(t)
	other.must(opSend(9, "x", "y", apps(5, 1)...))
	if err := restore(t, h.f, persist(t, other.f)); !errors.Is(err, ErrHalted) {
		t.Fatalf("Restore into a halted replica: %v, want ErrHalted", err)
	}

	// The upgraded build applies from the entry it halted at.
	h.f.Close()
	h.f = openFormatFSM(t, h.dir, buildFormat+1)
	for i := uint64(2); i <= 3; i++ {
		if br := h.f.Apply(&raft.Log{Type: raft.LogCommand, Index: i, Data: h.entries[i]}).(*BatchResult); br.Halted != nil || br.Err != nil {
			t.Fatalf("entry %d after the upgrade: %+v", i, br)
		}
	}
	wantSeqs(t, h.f, 2, 1, 2, 3)
}

// Entries that need at most this replica's format apply as always, and
// the highest format applied is recorded: a build of a lower format
// refuses to open that data (a downgrade) and to restore it from a
// snapshot.
func TestFormatSeenRefusesDowngrade(t *testing.T) {
	h := newFormatHarness(t, 2)
	h.must(opSend(7, "c1", "old", apps(1, 1, 2, 1)...))
	plain := persist(t, h.f)
	br := h.applyData(encodeFormat(t, h.now, 2, opSend(7, "c2", "new", apps(1, 2, 2, 2)...)))
	if br.Halted != nil || br.Err != nil || br.Results[0].Status != clusterv1.OpStatus_OP_STATUS_OK {
		t.Fatalf("format-2 entry on a format-2 replica: %+v", br)
	}
	wantSeqs(t, h.f, 2, 1, 2)
	if seen, err := readFormatSeen(h.f.db); err != nil || seen != 2 {
		t.Fatalf("format seen = %d, %v; want 2", seen, err)
	}
	newer := persist(t, h.f)

	// A format-1 build restores a snapshot taken before the format-2
	// entry, but not one taken after it.
	old := newFormatHarness(t, 1)
	if err := restore(t, old.f, plain); err != nil {
		t.Fatalf("restoring format-0 data into a format-1 replica: %v", err)
	}
	wantSeqs(t, old.f, 2, 1)
	old2 := newFormatHarness(t, 1)
	old2.must(opSend(9, "x", "y", apps(5, 1)...))
	before := dumpAll(t, old2.f)
	err := restore(t, old2.f, newer)
	if !errors.Is(err, ErrHalted) || !strings.Contains(err.Error(), "a snapshot taken at index 2 needs store format 2") {
		t.Fatalf("restoring format-2 data into a format-1 replica: %v, want ErrHalted naming the snapshot", err)
	}
	if d := diffKeys(before, dumpAll(t, old2.f)); d != "" {
		t.Fatalf("a refused restore changed the state:\n%s", d)
	}

	// Reopening the data with a format-1 build is refused; format 2 opens.
	h.f.Close()
	_, err = openFSM(h.dir, slog.New(slog.DiscardHandler), 0, 1)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Need != 2 || fe.Have != 1 || errors.Is(err, ErrHalted) ||
		!strings.Contains(err.Error(), "refusing to open: the data in "+h.dir+" needs store format 2") {
		t.Fatalf("opening format-2 data with a format-1 build: %v, want a refusal", err)
	}
	h.f = openFormatFSM(t, h.dir, 2)
	wantSeqs(t, h.f, 2, 1, 2)
}

// Entries carrying no min_format (every entry this build and older builds
// propose) apply on every format, and record nothing.
func TestEntriesWithoutMinFormatRecordNothing(t *testing.T) {
	h := newHarness(t)
	h.must(opSend(7, "c1", "hello", apps(1, 1, 2, 1)...))
	if _, ok := dumpAll(t, h.f)[string(keyFormatSeen)]; ok {
		t.Fatalf("an entry without min_format recorded a format")
	}
}

// An entry's min_format is the highest of its ops' formats; with no op
// listed in opFormats (this build), entries carry none.
func TestEncodeBatchSetsMinFormatFromOps(t *testing.T) {
	minFormat := func() uint32 {
		t.Helper()
		data, err := EncodeBatch(&clusterv1.StoreBatch{Ops: []*clusterv1.StoreOp{
			opSend(7, "c1", "hello", apps(1, 1, 2, 1)...),
			{Op: &clusterv1.StoreOp_MarkRead{MarkRead: &clusterv1.MarkReadOp{}}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		cmd, err := decodeCommand(data)
		if err != nil {
			t.Fatal(err)
		}
		return cmd.MinFormat
	}
	// MarkRead has no format of its own but in a seqdnext build.
	if got, want := minFormat(), opFormats[kindMarkRead]; got != want {
		t.Fatalf("min_format = %d with no op of a newer format, want %d", got, want)
	}
	SetOpFormat(t, "mark_read", 3)
	if got := minFormat(); got != 3 {
		t.Fatalf("min_format = %d with a format-3 MarkRead in the entry, want 3", got)
	}
	if got := opFormat(opSend(7, "c2", "hello", apps(1, 2, 2, 2)...)); got != 0 {
		t.Fatalf("a send's format = %d, want 0 (only mark_read is listed)", got)
	}
	if got := opFormat(&clusterv1.StoreOp{}); got != 0 {
		t.Fatalf("an empty op's format = %d, want 0", got)
	}
}

// storeNodeAnswering is a StoreNode client whose ReplicaInfo answers resp
// or err.
type storeNodeAnswering struct {
	clusterv1.StoreNodeClient
	resp *clusterv1.ReplicaInfoResponse
	err  error
}

func (c storeNodeAnswering) ReplicaInfo(context.Context, *clusterv1.ReplicaInfoRequest, ...grpc.CallOption) (*clusterv1.ReplicaInfoResponse, error) {
	return c.resp, c.err
}

// What a leader makes of each replica's answer: a build from before store
// formats has no ReplicaInfo and counts as format 0; an address that
// answers as another replica, or an error, leaves the format unknown.
func TestReplicaFormatAt(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		c       storeNodeAnswering
		want    uint32
		wantErr string
	}{
		{"this build", storeNodeAnswering{resp: &clusterv1.ReplicaInfoResponse{ShardId: "s1", ReplicaId: "s1-r2", StoreFormat: 1}}, 1, ""},
		{"a build before store formats", storeNodeAnswering{err: status.Error(codes.Unimplemented, "unknown method ReplicaInfo")}, 0, ""},
		{"another replica at the address", storeNodeAnswering{resp: &clusterv1.ReplicaInfoResponse{ShardId: "s1", ReplicaId: "s1-r9", StoreFormat: 2}}, 0,
			"answers as replica s1-r9 of shard s1"},
		{"another shard's replica", storeNodeAnswering{resp: &clusterv1.ReplicaInfoResponse{ShardId: "s2", ReplicaId: "s1-r2", StoreFormat: 2}}, 0,
			"answers as replica s1-r2 of shard s2"},
		{"unreachable", storeNodeAnswering{err: status.Error(codes.Unavailable, "connection refused")}, 0, "connection refused"},
	} {
		got, err := replicaFormatAt(ctx, tc.c, "s1", "s1-r2")
		if tc.wantErr == "" && (err != nil || got != tc.want) {
			t.Errorf("%s: format %d, error %v; want %d", tc.name, got, err, tc.want)
		}
		if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: format %d, error %v; want an error saying %q", tc.name, got, err, tc.wantErr)
		}
	}
}

// A builder that says its kind needs the format its op would: the same
// answer as building one.
func TestKindedBuildersNeedTheFormatTheirOpNeeds(t *testing.T) {
	req := &seqdv1.SendRequest{Sender: 1, Recipients: []uint64{2}, Conversation: dconv(7), Body: []byte("x")}
	mr := &seqdv1.MarkReadRequest{User: 2, Conversation: dconv(7), UpToSeq: 1}
	for _, b := range []builder{
		&sendBuilder{req: req, local: []uint64{1, 2}},
		&deliverBuilder{items: []*clusterv1.FanoutItem{{User: 2, Event: &seqdv1.Event{MessageId: "1.1"}}}},
		&markReadBuilder{req: mr},
	} {
		k, ok := b.(kinded)
		if !ok {
			t.Fatalf("%T does not say its kind", b)
		}
		op := b.build(make([]uint64, 2))
		m := op.ProtoReflect()
		if fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("op")); fd == nil || fd.Number() != k.opKind() {
			t.Fatalf("%T says kind %d, builds %v", b, k.opKind(), fd)
		}
	}
	SetOpFormat(t, "mark_read", 9)
	if got := needsFormat(&markReadBuilder{req: mr}, 1); got != 9 {
		t.Fatalf("mark-read needs format %d with mark_read at 9, want 9", got)
	}
	if got := needsFormat(&sendBuilder{req: req, local: []uint64{1, 2}}, 2); got != 0 {
		t.Fatalf("a send needs format %d, want 0", got)
	}
}

// An op of a kind older formats know needs the format that added a field
// it sets: a hint with with_expired needs formatHintExpired, one without
// it none; so does its builder, and so does the entry holding it.
func TestFieldFormats(t *testing.T) {
	hint := func(withExpired bool) *hintBuilder {
		return &hintBuilder{group: 50, gseq: 3, count: 3, local: []uint64{2, 3}, final: true, withExpired: withExpired}
	}
	for _, tc := range []struct {
		withExpired bool
		want        uint32
	}{{false, 0}, {true, formatHintExpired}} {
		op := hint(tc.withExpired).build([]uint64{7, 8})
		if got := opFormat(op); got != tc.want {
			t.Errorf("with_expired %v: op format %d, want %d", tc.withExpired, got, tc.want)
		}
		if got := needsFormat(hint(tc.withExpired), 2); got != tc.want {
			t.Errorf("with_expired %v: builder needs format %d, want %d", tc.withExpired, got, tc.want)
		}
		if got := batchFormat([]*clusterv1.StoreOp{opSend(7, "c1", "hello", apps(1, 1, 2, 1)...), op}); got != tc.want {
			t.Errorf("with_expired %v: entry's min_format %d, want %d", tc.withExpired, got, tc.want)
		}
	}
	for name, f := range map[string]uint32{"formatHintExpired": formatHintExpired, "formatDropCopies": formatDropCopies,
		"formatExpiryHints": formatExpiryHints, "formatMonotonicMarks": formatMonotonicMarks, "formatGroupSizeLimit": formatGroupSizeLimit} {
		if f > storeFormat {
			t.Fatalf("%s %d is above this build's format %d", name, f, storeFormat)
		}
	}
	// Retention steps: their kind's format without the field, the
	// field's with it.
	for _, tc := range []struct {
		field   string
		op      *clusterv1.StoreOp
		set     func(*clusterv1.StoreOp)
		without uint32
		withSet uint32
	}{
		{"expire_scan.drop_copies", opExpireScan(3000, 0, 10, 10), func(op *clusterv1.StoreOp) { op.GetExpireScan().DropCopies = true },
			opFormats[kindExpireScan], formatDropCopies},
		{"expire_timelines.hint_expired", opExpireTimelines(3000, 0, 10, 10), func(op *clusterv1.StoreOp) { op.GetExpireTimelines().HintExpired = true },
			opFormats[kindExpireTimelines], formatExpiryHints},
	} {
		if got := opFormat(tc.op); got != tc.without {
			t.Errorf("a step without %s needs format %d, want %d", tc.field, got, tc.without)
		}
		tc.set(tc.op)
		if got := opFormat(tc.op); got != tc.withSet {
			t.Errorf("a step with %s needs format %d, want %d", tc.field, got, tc.withSet)
		}
	}
	telling := hint(true)
	telling.told = 2
	if got := needsFormat(telling, 2); got != formatExpiryHints {
		t.Errorf("a hint round telling the expired count needs format %d, want %d", got, formatExpiryHints)
	}
	deliver := &deliverBuilder{items: []*clusterv1.FanoutItem{{Kind: clusterv1.FanoutItem_KIND_GROUP_HINT, User: 2,
		Event: &seqdv1.Event{MessageId: "h9.1", GroupExpiredCount: 1}}}}
	if got := needsFormat(deliver, 1); got != 0 {
		t.Errorf("a delivery without with_expired needs format %d, want 0", got)
	}
	deliver.withExpired = true
	if got := needsFormat(deliver, 1); got != formatHintExpired {
		t.Errorf("a delivery with with_expired needs format %d, want %d", got, formatHintExpired)
	}
	// A builder that says its kind still answers for a field of that kind.
	mr := &seqdv1.MarkReadRequest{User: 2, Conversation: dconv(7), UpToSeq: 1}
	if got, want := needsFormat(&markReadBuilder{req: mr}, 1), opFormats[kindMarkRead]; got != want {
		t.Fatalf("a mark-read needs format %d, want %d", got, want)
	}
	kind := mustOpField("mark_read")
	old := fieldFormats[kind]
	// A format above any this build (or a seqdnext one, whose mark-read
	// is an op of its own format) gives the kind.
	probe := uint32(storeFormat + 2)
	fieldFormats[kind] = []fieldFormat{mustFieldFormat("mark_read", "request", probe)}
	t.Cleanup(func() { fieldFormats[kind] = old })
	if got := needsFormat(&markReadBuilder{req: mr}, 1); got != probe {
		t.Fatalf("a mark-read needs format %d with mark_read.request listed at %d, want %d", got, probe, probe)
	}
	// monotonic, set once every replica applies format 8, needs it.
	fieldFormats[kind] = old
	if got := needsFormat(&markReadBuilder{req: mr, monotonic: true}, 1); got != max(formatMonotonicMarks, opFormats[kindMarkRead]) {
		t.Fatalf("a monotonic mark-read needs format %d, want %d", got, formatMonotonicMarks)
	}
}

// A leader's round for a listed group: it tells the expired count of a
// group with expiry_hints once every replica applies format 7, and holds
// back an expiry-only round (one at the last round's group seq) while a
// replica does not, or once the window's budget of them is spent; a
// round with new messages always goes.
func TestHintRound(t *testing.T) {
	news := func(last, hinted uint64, expiryHints bool) GroupNews {
		return groupNews(50, last, hinted, 3, expiryHints)
	}
	for _, tc := range []struct {
		name         string
		g            GroupNews
		tellReady    bool
		expiryRounds int
		told         uint64
		wait         bool
	}{
		{"new messages, no expiry hints", news(5, 4, false), true, 8, 0, false},
		{"new messages, expiry hints", news(5, 4, true), true, 8, 3, false},
		{"new messages, a replica before format 7", news(5, 4, true), false, 8, 0, false},
		{"new messages, no budget left", news(5, 4, true), true, 0, 3, false},
		{"expiry only", news(5, 5, true), true, 8, 3, false},
		{"expiry only, a replica before format 7", news(5, 5, true), false, 8, 0, true},
		{"expiry only, no budget left", news(5, 5, true), true, 0, 0, true},
	} {
		if told, wait := hintRound(tc.g, tc.tellReady, tc.expiryRounds); told != tc.told || wait != tc.wait {
			t.Errorf("%s: told %d, wait %v; want %d, %v", tc.name, told, wait, tc.told, tc.wait)
		}
	}
}

// A hint window serves the groups with new messages first, from the one
// after the last such served, then those with only a count to tell from
// the one after the last such served, each round the groups.
func TestOrderForHints(t *testing.T) {
	var groups []GroupNews
	for id := uint64(1); id <= 6; id++ {
		hinted := uint64(5) // only a count to tell
		if id%2 == 0 {
			hinted = 4 // a new message
		}
		groups = append(groups, groupNews(id, 5, hinted, 1, true))
	}
	for _, tc := range []struct {
		after, expiryAfter uint64
		expiryFirst        bool
		want               string
	}{
		{0, 0, false, "[2 4 6 1 3 5]"}, {0, 3, false, "[2 4 6 5 1 3]"}, {0, 5, false, "[2 4 6 1 3 5]"}, {0, 9, false, "[2 4 6 1 3 5]"},
		{2, 0, false, "[4 6 2 1 3 5]"}, {4, 3, false, "[6 2 4 5 1 3]"}, {6, 0, false, "[2 4 6 1 3 5]"},
		// Every other window, the groups with only a count go first.
		{0, 0, true, "[1 3 5 2 4 6]"}, {4, 3, true, "[5 1 3 6 2 4]"},
	} {
		gs := slices.Clone(groups)
		orderForHints(gs, tc.after, tc.expiryAfter, tc.expiryFirst)
		var ids []uint64
		for _, g := range gs {
			ids = append(ids, g.Info.GroupId)
		}
		if got := fmt.Sprint(ids); got != tc.want {
			t.Errorf("after groups %d and %d, expiry first %v: %s, want %s", tc.after, tc.expiryAfter, tc.expiryFirst, got, tc.want)
		}
	}
}

// groupNews is read-fanout group id as ReadFanoutGroups lists it: its
// timeline up to last, hinted up to hinted, expired messages removed.
func groupNews(id, last, hinted, expired uint64, expiryHints bool) GroupNews {
	return GroupNews{
		GroupRecord: &clusterv1.GroupRecord{Info: &seqdv1.GroupInfo{GroupId: id, ReadFanout: true}},
		Counters:    &clusterv1.GroupCounters{LastGroupSeq: last, HintedGseq: hinted, ExpiredCount: expired, ExpiryHints: expiryHints},
	}
}
