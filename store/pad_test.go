package store

import (
	"fmt"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/seqd/seqd/internal/raftnode"
)

// Two replicas applying the same entries, one padded by three quarters of a
// memtable: the padded one flushes a table long before the other, and the
// two hold the same keys and values.
func TestPaddedReplicaFlushesFirst(t *testing.T) {
	SkipSlowUnderRace(t)
	plain, padded := openPaddedFSM(t, 0), openPaddedFSM(t, 0.75)
	if n := len(padded.db.Tables()); n != 0 {
		t.Fatalf("padding flushed %d tables at open", n)
	}
	body := strings.Repeat("x", 900)
	deadline := time.Now().Add(30 * time.Second)
	for i := uint64(1); len(padded.db.Tables()) == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("the padded replica flushed nothing in %d entries", i)
		}
		entry := encodeOps(t, 1_000_000, opSend(7, fmt.Sprintf("c%d", i), body, apps(1, 2*i-1, 2, 2*i-1)...),
			opSend(7, fmt.Sprintf("d%d", i), body, apps(1, 2*i, 2, 2*i)...))
		for _, f := range []*FSM{plain, padded} {
			if r := f.Apply(&raft.Log{Type: raft.LogCommand, Index: i, Data: entry}).(*BatchResult); r.Err != nil {
				t.Fatalf("entry %d: %v", i, r.Err)
			}
		}
		if i%64 == 0 {
			time.Sleep(time.Millisecond) // let a flush that began show up
		}
	}
	if n := len(plain.db.Tables()); n != 0 {
		t.Fatalf("the unpadded replica flushed %d tables as early as the padded one", n)
	}
	if a, b := dumpAll(t, plain), dumpAll(t, padded); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("padding left something behind:\n%s", diffKeys(a, b))
	}
}

// openPaddedFSM opens an FSM in a fresh directory, padded by phase, and
// closes it when the test ends.
func openPaddedFSM(t *testing.T, phase float64) *FSM {
	t.Helper()
	f, err := openFSM(t.TempDir(), slog.New(slog.DiscardHandler), phase, buildFormat)
	if err != nil {
		t.Fatalf("open with phase %v: %v", phase, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// A padded replica's snapshot carries none of the padding, not even its
// deletion markers.
func TestPaddingStaysOutOfSnapshots(t *testing.T) {
	const phase = 2.0 / 3
	plain, padded := openPaddedFSM(t, 0), openPaddedFSM(t, phase)
	entry := encodeOps(t, 1_000_000, opSend(7, "c1", "hello", apps(1, 1, 2, 1)...))
	for _, f := range []*FSM{plain, padded} {
		if r := f.Apply(&raft.Log{Type: raft.LogCommand, Index: 1, Data: entry}).(*BatchResult); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	a, b := persist(t, plain), persist(t, padded)
	// Each padding key left in would add at least its own key bytes.
	padKeys := int(phase * float64(padded.db.Opts().MemTableSize) / (1000 + 80))
	if len(b) >= len(a)+padKeys {
		t.Fatalf("padded snapshot is %d bytes, unpadded %d: it holds some of the %d padding keys", len(b), len(a), padKeys)
	}
	into := openPaddedFSM(t, 1.0/3)
	if err := restore(t, into, b); err != nil {
		t.Fatal(err)
	}
	if x, y := dumpAll(t, plain), dumpAll(t, into); fmt.Sprint(x) != fmt.Sprint(y) {
		t.Fatalf("restored state differs:\n%s", diffKeys(x, y))
	}
}

func TestFlushPhase(t *testing.T) {
	peers := []raftnode.Peer{{ID: "s1-c"}, {ID: "s1-a"}, {ID: "s1-b"}}
	for id, want := range map[string]float64{"s1-a": 0, "s1-b": 1.0 / 3, "s1-c": 2.0 / 3} {
		if got := flushPhase(id, peers); got != want {
			t.Errorf("flushPhase(%s) = %v, want %v", id, got, want)
		}
	}
	// Not among the initial replicas (or none given): one of n places
	// (n = replicas + 1, at least 3), picked by its id, so several ids
	// spread over more than one place.
	for _, ps := range [][]raftnode.Peer{peers, nil} {
		n := float64(max(len(ps)+1, 3))
		places := map[float64]bool{}
		for _, id := range []string{"s1-d", "s1-e", "s1-f", "s1-g", "s1-h", "s1-i"} {
			got := flushPhase(id, ps)
			if got < 0 || got >= 1 || got*n != math.Round(got*n) {
				t.Errorf("flushPhase(%s, %d peers) = %v, want k/%v", id, len(ps), got, n)
			}
			places[got] = true
		}
		if len(places) < 2 {
			t.Errorf("with %d peers, six unknown ids all got phase %v", len(ps), places)
		}
	}
	if got := flushPhase("only", []raftnode.Peer{{ID: "only"}}); got != 0 {
		t.Errorf("a single replica pads %v, want 0", got)
	}
}
