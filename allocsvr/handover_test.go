package allocsvr

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/seqd/seqd/internal/mclock"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

// A section still cached from an older generation of a slot must not
// report its high-water mark on a planned release: another owner may have
// served the slot in between, above that mark.
func TestReleaseReportsOnlyTheReleasedGeneration(t *testing.T) {
	s := &Server{log: slog.New(slog.NewTextHandler(io.Discard, nil)), marks: map[uint32]*releasedSlot{}}
	s.inc.Store(7)
	ls := newLeases(mclock.Real, 4)
	ls.owned[1].Store(3)
	s.ls.Store(ls)
	load := func(id uint64, gen, hwm uint64) {
		sc := &section{id: id, slot: 1, gen: gen, hwm: hwm, ready: make(chan struct{})}
		close(sc.ready)
		s.sections.Store(id, sc)
	}
	load(1, 1, 100) // cached since generation 1, before the slot moved away and back
	load(5, 3, 40)  // loaded in generation 3
	resp, err := (&server{s: s}).Release(context.Background(), &clusterv1.ReleaseRequest{Incarnation: 7,
		Slots: []*clusterv1.OwnedSlot{{Slot: 1, Generation: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Marks) != 1 || resp.Marks[0].Section != 5 || resp.Marks[0].HighWater != 40 {
		t.Fatalf("marks %v, want only section 5 at 40", resp.Marks)
	}
	n := 0
	s.sections.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d sections still cached after the release", n)
	}
}
