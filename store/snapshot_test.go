package store

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protodelim"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

var updateStoreGolden = flag.Bool("update-store-golden", false, "rewrite store/testdata/snapshot-v1.bin from the current format")

const goldenSnapshot = "testdata/snapshot-v1.bin"

// memSink is a raft.SnapshotSink in memory; failAt >= 0 makes writes
// fail once that many bytes were written.
type memSink struct {
	bytes.Buffer
	failAt           int
	closed, canceled bool
}

func (s *memSink) ID() string { return "test" }

func (s *memSink) Cancel() error { s.canceled = true; return nil }

func (s *memSink) Close() error { s.closed = true; return nil }

func (s *memSink) Write(p []byte) (int, error) {
	if s.failAt >= 0 && s.Len()+len(p) > s.failAt {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}

var _ raft.SnapshotSink = (*memSink)(nil)

// panicTB reports failures by panicking, for helpers run off the test
// goroutine under a recover.
type panicTB struct{}

func (panicTB) Helper() {}

func (panicTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

func persist(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	sink := &memSink{failAt: -1}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	if !sink.closed || sink.canceled {
		t.Fatalf("Persist left the sink closed=%v canceled=%v", sink.closed, sink.canceled)
	}
	return sink.Bytes()
}

type closeTracker struct {
	io.Reader
	closed bool
}

func (c *closeTracker) Close() error { c.closed = true; return nil }

func restore(t testing.TB, f *FSM, data []byte) error {
	t.Helper()
	rc := &closeTracker{Reader: bytes.NewReader(data)}
	err := f.Restore(rc)
	if !rc.closed {
		t.Fatalf("Restore did not close the snapshot reader")
	}
	return err
}

// richState applies one of everything, with the harness clock fixed, so
// the golden snapshot can be rebuilt and the checks below hold for it.
func richState(h *fsmHarness) {
	h.now = 1_000_000
	h.must(opCreateGroup(50, 1, true, 10, 2, 3))
	h.must(opCreateGroup(60, 1, false, 10, 2))
	h.must(remoteTo(opSend(7, "c1", "hello", apps(1, 1, 2, 1, 3, 1)...), 200))
	h.must(opSend(7, "c2", "hi", apps(2, 2, 1, 2)...))
	h.must(opMarkRead(2, dconv(7), 1, 3))
	h.must(opGroupSend(50, 1, true, 1, "g1", "to all", apps(1, 3)...))
	h.must(opHint(50, 1, 1, true, nil, apps(2, 4, 3, 2)...))
	h.must(opGroupSend(60, 1, false, 2, "w1", "wf", apps(1, 4, 2, 5)...))
	h.now += 1000
	h.must(opRecall(1, "1.1", 120_000, 0, apps(1, 5, 2, 6, 3, 3)...))
	h.must(opDelete(1, "2.2", 6))
	h.must(opAddMembers(50, false, 10, 4))
}

type evSummary struct {
	seq     uint64
	kind    seqdv1.EventKind
	id      string
	flags   string // o = outgoing, r = recalled, d = deleted
	hasBody bool
}

func summarize(evs []*seqdv1.Event) string {
	var s []string
	for _, e := range evs {
		flags := ""
		if e.Outgoing {
			flags += "o"
		}
		if e.Recalled {
			flags += "r"
		}
		if e.Deleted {
			flags += "d"
		}
		if len(e.Body) > 0 {
			flags += "b"
		}
		kind := strings.TrimPrefix(e.Kind.String(), "EVENT_KIND_")
		s = append(s, fmt.Sprintf("%d:%s:%s:%s", e.Seq, kind, e.MessageId, flags))
	}
	return strings.Join(s, " ")
}

// checkRichState asserts the state richState builds, worked out by hand
// from the op semantics.
func checkRichState(t *testing.T, f *FSM) {
	t.Helper()
	want := map[uint64]string{
		1: "1:MESSAGE:1.1:or 2:MESSAGE:2.2:d 3:MESSAGE:g50.1:ob 4:MESSAGE:g60.1:b 5:RECALL:1.1:o 6:DELETE:2.2:o",
		2: "1:MESSAGE:1.1:r 2:MESSAGE:2.2:ob 3:READ::o 4:GROUP_HINT:h50.1: 5:MESSAGE:g60.1:ob 6:RECALL:1.1:",
		3: "1:MESSAGE:1.1:r 2:GROUP_HINT:h50.1: 3:RECALL:1.1:",
	}
	for u, w := range want {
		if got := summarize(syncAllEvents(t, f, u)); got != w {
			t.Fatalf("user %d inbox:\n got %s\nwant %s", u, got, w)
		}
	}
	wantUnread(t, f, 1, 1, map[string]uint64{"g60": 1})
	wantUnread(t, f, 2, 1, map[string]uint64{"g50": 1})
	wantUnread(t, f, 3, 1, map[string]uint64{"g50": 1})
	if hist, _, _ := f.History(2, dconv(7), 0, 10); fmt.Sprint(seqsOf(hist)) != "[2 1]" {
		t.Fatalf("history of user 2: %v", seqsOf(hist))
	}
	if hist, _, _ := f.History(1, dconv(7), 0, 10); fmt.Sprint(seqsOf(hist)) != "[1]" {
		t.Fatalf("history of user 1 (2.2 deleted): %v", seqsOf(hist))
	}
	g, err := f.Group(50)
	if err != nil || memberList(g.Info) != "1@0 2@0 3@0 4@1" || !g.Info.ReadFanout || g.Info.LastGroupSeq != 1 || g.MessageCount != 1 || g.HintedGseq != 1 {
		t.Fatalf("group 50: %v %v", g, err)
	}
	if g, err := f.Group(60); err != nil || memberList(g.Info) != "1@0 2@0" || g.Info.ReadFanout {
		t.Fatalf("group 60: %v %v", g, err)
	}
	if tl, err := f.SyncGroup(4, 50, 0, 10); err != nil || len(tl.Events) != 0 || tl.NextCheckpoint != 1 {
		t.Fatalf("joiner's timeline %v %v", tl, err)
	}
	if tl, err := f.SyncGroup(2, 50, 0, 10); err != nil || summarize(tl.Events) != "1:MESSAGE:g50.1:b" {
		t.Fatalf("member's timeline %v %v", tl, err)
	}
	for _, d := range []struct {
		sender uint64
		cmid   string
		id     string
	}{{1, "c1", "1.1"}, {2, "c2", "2.2"}, {1, "g1", "g50.1"}, {2, "w1", "g60.1"}} {
		if r, err := f.Dedup(d.sender, d.cmid, 1_001_000); err != nil || r == nil || r.MessageId != d.id {
			t.Fatalf("dedup (%d, %s) = %v %v, want %s", d.sender, d.cmid, r, err, d.id)
		}
	}
	if m, _ := f.Message("1.1"); m == nil || !m.Recalled || fmt.Sprint(m.Remote) != "[200]" {
		t.Fatalf("message 1.1 record %v", m)
	}
	items, _ := f.Outbox(10)
	var ob []string
	for _, it := range items {
		ob = append(ob, fmt.Sprintf("%v:%d:%s", it.Item.Kind, it.Item.User, it.Item.Event.MessageId))
	}
	if fmt.Sprint(ob) != "[KIND_MESSAGE:200:1.1 KIND_RECALL:200:1.1]" {
		t.Fatalf("outbox %v", ob)
	}
	log, _, _ := f.ChangeLog(0, 100)
	if len(log) != 11 || log[10].Index != 11 || f.AppliedIndex() != 11 {
		t.Fatalf("change log of %d entries, applied %d", len(log), f.AppliedIndex())
	}
}

// continueRichState applies what comes after richState: the restored
// replica must keep answering as the original would.
func continueRichState(t *testing.T, h *fsmHarness) {
	t.Helper()
	h.t = t
	if r := h.one(remoteTo(opSend(7, "c1", "hello", apps(1, 7, 2, 7, 3, 7)...), 200)); r.Status != stDuplicate || r.Send.MessageId != "1.1" {
		t.Fatalf("retry after restore: %s %v", statusOf(r), r.Send)
	}
	if r := h.one(opSend(7, "c3", "x", apps(3, 3)...)); r.Status != stOutOfOrder {
		t.Fatalf("stale seq after restore: %s", statusOf(r))
	}
	h.must(opSend(7, "c3", "x", apps(3, 4, 1, 7)...))
	wantUnread(t, h.f, 1, 2, map[string]uint64{"d7": 1, "g60": 1})
}

func TestSnapshotRoundTrip(t *testing.T) {
	src := newHarness(t)
	richState(src)
	checkRichState(t, src.f)
	data := persist(t, src.f)

	dst := newHarness(t)
	if err := restore(t, dst.f, data); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if dst.f.AppliedIndex() != src.f.AppliedIndex() {
		t.Fatalf("applied index %d, want %d", dst.f.AppliedIndex(), src.f.AppliedIndex())
	}
	if d := diffKeys(dumpAll(t, src.f), dumpAll(t, dst.f)); d != "" {
		t.Fatalf("restored state differs:\n%s", d)
	}
	checkRichState(t, dst.f)

	// Both replicas apply the same next entries and stay identical.
	dst.idx, dst.now = src.idx, src.now
	continueRichState(t, src)
	continueRichState(t, dst)
	if d := diffKeys(dumpAll(t, src.f), dumpAll(t, dst.f)); d != "" {
		t.Fatalf("replicas diverged after the restore:\n%s", d)
	}
	// The restored state survives a restart.
	dst.reopen(t)
	if dst.f.AppliedIndex() != src.idx {
		t.Fatalf("applied index after reopen %d", dst.f.AppliedIndex())
	}
}

// Persist streams Badger after Snapshot returned, so the stream may hold
// later entries; the restored applied index is theirs, and Raft's replay
// of those entries is then skipped.
func TestSnapshotIncludesLaterEntries(t *testing.T) {
	src := newHarness(t)
	src.must(opSend(7, "a", "x", apps(1, 1, 2, 1)...))
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	src.must(opSend(7, "b", "y", apps(1, 2, 2, 2)...))
	sink := &memSink{failAt: -1}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	dst := newHarness(t)
	if err := restore(t, dst.f, sink.Bytes()); err != nil {
		t.Fatal(err)
	}
	if dst.f.AppliedIndex() != 2 {
		t.Fatalf("applied index %d, want 2", dst.f.AppliedIndex())
	}
	before := dumpAll(t, dst.f)
	dst.f.Apply(&raft.Log{Type: raft.LogCommand, Index: 2, Data: src.entries[2]})
	if d := diffKeys(before, dumpAll(t, dst.f)); d != "" {
		t.Fatalf("replaying entry 2 over the snapshot changed state:\n%s", d)
	}
	wantSeqs(t, dst.f, 2, 1, 2)
}

func TestSnapshotRestoreKeepsNewerLocalState(t *testing.T) {
	src := newHarness(t)
	src.must(opSend(7, "a", "x", apps(1, 1, 2, 1)...))
	src.must(opSend(7, "b", "y", apps(1, 2, 2, 2)...))
	data := persist(t, src.f)

	for _, extra := range []int{0, 2} {
		t.Run(fmt.Sprintf("local ahead by %d", extra), func(t *testing.T) {
			dst := newHarness(t)
			for i := 1; i <= 2; i++ {
				dst.applyData(src.entries[uint64(i)])
			}
			for i := 0; i < extra; i++ {
				dst.must(opSend(7, fmt.Sprint("l", i), "local", apps(1, uint64(3+i), 2, uint64(3+i))...))
			}
			before := dumpAll(t, dst.f)
			if err := restore(t, dst.f, data); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if d := diffKeys(before, dumpAll(t, dst.f)); d != "" {
				t.Fatalf("Restore replaced newer local state:\n%s", d)
			}
			if dst.f.AppliedIndex() != uint64(2+extra) {
				t.Fatalf("applied index %d", dst.f.AppliedIndex())
			}
		})
	}
	t.Run("local behind is replaced entirely", func(t *testing.T) {
		// The replica applied something else for the same users (its
		// state, cached or not, must not survive the restore).
		dst := newHarness(t)
		dst.must(opSend(8, "z", "only here", apps(1, 9, 2, 9, 5, 1)...))
		if err := restore(t, dst.f, data); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		if d := diffKeys(dumpAll(t, src.f), dumpAll(t, dst.f)); d != "" {
			t.Fatalf("restored state differs from the snapshot:\n%s", d)
		}
		wantSeqs(t, dst.f, 5)
		// Both go on with the same entry and stay identical.
		next := opSend(7, "c", "z", apps(1, 3, 2, 3)...)
		src.t, dst.t, dst.idx, dst.now = t, t, src.idx, src.now
		src.must(next)
		dst.must(next)
		if d := diffKeys(dumpAll(t, src.f), dumpAll(t, dst.f)); d != "" {
			t.Fatalf("replicas diverged after the restore:\n%s", d)
		}
		wantUnread(t, dst.f, 2, 3, map[string]uint64{"d7": 3})
	})
}

func header(t testing.TB, h *clusterv1.StoreSnapshotHeader) []byte {
	var b bytes.Buffer
	b.WriteString(snapshotMagic)
	if _, err := protodelim.MarshalTo(&b, h); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestSnapshotRestoreRejectsBadInput(t *testing.T) {
	src := newHarness(t)
	src.must(opSend(7, "a", "x", apps(1, 1, 2, 1)...))
	good := persist(t, src.f)
	body := good[len(header(t, &clusterv1.StoreSnapshotHeader{FormatVersion: snapshotFormat, AppliedIndex: 1})):]

	cases := []struct {
		name string
		data []byte
		msg  string
	}{
		{"empty", nil, "magic"},
		{"short magic", []byte("SEQD"), "magic"},
		{"other magic", append([]byte("SEQDARB\n"), good[8:]...), "magic"},
		{"no header", []byte(snapshotMagic), "header"},
		{"garbage header", append([]byte(snapshotMagic), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), "header"},
		{"truncated header", append([]byte(snapshotMagic), 0x20, 0x08), "header"},
		{"future format", append(header(t, &clusterv1.StoreSnapshotHeader{FormatVersion: snapshotFormat + 1, AppliedIndex: 100}), body...), "format 2"},
		{"format 0", append(header(t, &clusterv1.StoreSnapshotHeader{AppliedIndex: 100}), body...), "format 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst := newHarness(t)
			dst.must(opSend(8, "z", "mine", apps(5, 1, 6, 1)...))
			before := dumpAll(t, dst.f)
			err := restore(t, dst.f, c.data)
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("Restore = %v, want an error about %q", err, c.msg)
			}
			if d := diffKeys(before, dumpAll(t, dst.f)); d != "" {
				t.Fatalf("a refused snapshot changed state:\n%s", d)
			}
			if dst.f.AppliedIndex() != 1 {
				t.Fatalf("applied index %d", dst.f.AppliedIndex())
			}
		})
	}
}

// A snapshot whose header is valid but whose Badger stream is not: Restore
// drops everything first and only then loads, so a failed load leaves the
// FSM without its state, and sometimes with Badger unusable.
func TestSnapshotRestoreFailureLeavesConsistentState(t *testing.T) {
	src := newHarness(t)
	src.must(opSend(7, "a", "x", apps(1, 1, 2, 1)...))
	src.must(opSend(7, "b", strings.Repeat("y", 4000), apps(1, 2, 2, 2)...))
	good := persist(t, src.f)
	for name, data := range map[string][]byte{
		"truncated": good[:len(good)/2],
		"garbage":   append(header(t, &clusterv1.StoreSnapshotHeader{FormatVersion: snapshotFormat, AppliedIndex: 100}), []byte("garbage, not a badger backup")...),
	} {
		t.Run(name, func(t *testing.T) {
			dst := newHarness(t)
			dst.must(opSend(8, "z", "mine", apps(5, 1, 6, 1)...))
			before := dumpAll(t, dst.f)
			// Restore and the reads after it run aside: they may panic or block.
			done := make(chan string, 1)
			go func() {
				defer func() {
					if p := recover(); p != nil {
						done <- fmt.Sprintf("panicked: %v", p)
					}
				}()
				rc := &closeTracker{Reader: bytes.NewReader(data)}
				if err := dst.f.Restore(rc); err == nil {
					done <- "Restore of a corrupt stream succeeded"
					return
				}
				// Either the old state is intact, or the FSM admits it holds nothing.
				after := dumpAll(panicTB{}, dst.f)
				if diffKeys(before, after) != "" && dst.f.AppliedIndex() != 0 {
					done <- fmt.Sprintf("after a failed restore Badger holds %d keys (was %d) but AppliedIndex() = %d", len(after), len(before), dst.f.AppliedIndex())
					return
				}
				done <- ""
			}()
			select {
			case msg := <-done:
				if msg != "" {
					dst.leak = true
					t.Fatal(msg)
				}
			case <-time.After(15 * time.Second):
				dst.leak = true
				t.Fatalf("after a failed Restore, reading Badger blocked for 15s")
			}
		})
	}
}

func TestSnapshotPersistFailureCancelsSink(t *testing.T) {
	h := newHarness(t)
	// Enough that a write fails inside Badger's stream, which reports it
	// as its own cancellation.
	for i := uint64(1); i <= 1000; i++ {
		h.must(opSend(7, fmt.Sprint("a", i), strings.Repeat("x", 100), apps(1, i, 2, i)...))
	}
	for _, failAt := range []int{0, 4, 20, 100_000} {
		snap, err := h.f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		sink := &memSink{failAt: failAt}
		// The write's own error, not the stream's cancellation it causes.
		if err := snap.Persist(sink); err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Fatalf("Persist into a failing sink (at %d bytes): %v, want the write's error", failAt, err)
		}
		if !sink.canceled || sink.closed {
			t.Fatalf("failing sink at %d: canceled=%v closed=%v; want Cancel, not Close", failAt, sink.canceled, sink.closed)
		}
		snap.Release()
	}
}

// The golden snapshot was written by format 1 of this code (regenerate
// only on purpose, with -update-store-golden); every later build must
// still restore it.
func TestSnapshotGoldenV1Restores(t *testing.T) {
	if *updateStoreGolden {
		src := newHarness(t)
		richState(src)
		checkRichState(t, src.f)
		if err := os.MkdirAll(filepath.Dir(goldenSnapshot), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenSnapshot, persist(t, src.f), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", goldenSnapshot)
	}
	data, err := os.ReadFile(goldenSnapshot)
	if err != nil {
		t.Fatalf("%v (generate it with: go test ./store/ -run TestSnapshotGoldenV1Restores -update-store-golden)", err)
	}
	if !bytes.HasPrefix(data, []byte(snapshotMagic)) {
		t.Fatalf("%s is not a store snapshot", goldenSnapshot)
	}
	h := newHarness(t)
	if err := restore(t, h.f, data); err != nil {
		t.Fatalf("Restore of the golden format-1 snapshot: %v", err)
	}
	checkRichState(t, h.f)
	h.idx, h.now = h.f.AppliedIndex(), 1_001_000
	continueRichState(t, h)
}

// Raft persists a snapshot while entries keep applying. The stream must be
// one consistent view: restored, it must equal the state after exactly the
// entries it says it holds, or the replica diverges for good.
func TestSnapshotPersistDuringApply(t *testing.T) {
	for round := 0; round < 12; round++ {
		persistDuringApply(t)
	}
}

func persistDuringApply(t *testing.T) {
	src := newHarness(t)
	const entries = 200
	data := make([][]byte, entries+1)
	for i := 1; i <= entries; i++ {
		s := uint64(i)
		data[i] = encodeOps(t, src.now, opSend(7, fmt.Sprint("c", i), "x", apps(1, s, 2, s)...), opMarkRead(3, dconv(7), 1, s))
	}
	for i := 1; i <= 20; i++ {
		src.f.Apply(&raft.Log{Type: raft.LogCommand, Index: uint64(i), Data: data[i]})
	}
	applied := make(chan struct{})
	go func() {
		defer close(applied)
		for i := 21; i <= entries; i++ {
			src.f.Apply(&raft.Log{Type: raft.LogCommand, Index: uint64(i), Data: data[i]})
		}
	}()
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{failAt: -1}
	perr := snap.Persist(sink)
	snap.Release()
	<-applied
	if perr != nil {
		t.Fatalf("Persist: %v", perr)
	}

	dst := newHarness(t)
	if err := restore(t, dst.f, sink.Bytes()); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	n := dst.f.AppliedIndex()
	if n < 20 || n > entries {
		t.Fatalf("restored applied index %d", n)
	}
	ref := newHarness(t)
	for i := uint64(1); i <= n; i++ {
		ref.f.Apply(&raft.Log{Type: raft.LogCommand, Index: i, Data: data[i]})
	}
	if d := diffKeys(dumpAll(t, ref.f), dumpAll(t, dst.f)); d != "" {
		t.Errorf("snapshot at applied index %d is not the state after entries 1..%d:\n%s", n, n, d)
	}
	// Raft then replays the rest; the replica must end where the source is.
	for i := uint64(1); i <= entries; i++ {
		dst.f.Apply(&raft.Log{Type: raft.LogCommand, Index: i, Data: data[i]})
	}
	if d := diffKeys(dumpAll(t, src.f), dumpAll(t, dst.f)); d != "" {
		t.Fatalf("after catching up, the restored replica differs from the source:\n%s", d)
	}
}

// Data written before group counters had their own record (layout 1: the
// layout of testdata/snapshot-v1.bin, still snapshot format 1) keeps the
// counters in the GroupRecord and has no news index. Opening it upgrades
// it, so a read-fanout group with news its members were not yet hinted
// about is still found by the hint loop.
func TestSnapshotOlderLayoutUnhintedGroupIsListed(t *testing.T) {
	h := newHarness(t)
	old := &clusterv1.GroupRecord{Info: &seqdv1.GroupInfo{GroupId: 50, Owner: 1, ReadFanout: true, LastGroupSeq: 3,
		Members: []*seqdv1.GroupMember{{User: 1}, {User: 2}}}, MessageCount: 2, HintedGseq: 1}
	val := mustMarshal(t, old)
	// What a layout-1 directory holds: the old record, no layout marker.
	if err := h.f.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(groupKey(50), val); err != nil {
			return err
		}
		return txn.Delete(keyLayout)
	}); err != nil {
		t.Fatal(err)
	}
	h.reopen(t)
	if g, err := h.f.Group(50); err != nil || g.Info.LastGroupSeq != 3 || g.HintedGseq != 1 || g.MessageCount != 2 {
		t.Fatalf("older group record read back as %v, %v", g, err)
	}
	gs, err := h.f.ReadFanoutGroups()
	if err != nil || len(gs) != 1 || gs[0].Info.GroupId != 50 {
		t.Fatalf("ReadFanoutGroups() = %v, %v; want group 50, which has un-hinted news", gs, err)
	}
}
