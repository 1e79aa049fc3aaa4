package allocsvr

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"pgregory.net/rapid"

	"github.com/seqd/seqd/seqfmt"
)

// checkCountersModel fails unless c agrees with the model on every offset.
func checkCountersModel(t interface {
	Helper()
	Fatalf(string, ...any)
}, c *counters, model map[uint32]uint64) {
	t.Helper()
	for off := range c.size {
		if got, want := c.get(off), model[off]; got != want {
			t.Fatalf("get(%d) = %d, want %d (dense=%v, %d table slots, %d used)", off, got, want, c.dense != nil, len(c.table), c.used)
		}
	}
	if c.dense != nil {
		if len(c.table) != 0 || len(c.dense) != int(c.size) {
			t.Fatalf("dense counters keep a table of %d and an array of %d for %d keys", len(c.table), len(c.dense), c.size)
		}
		return
	}
	stored := 0
	for _, s := range c.table {
		if s != 0 {
			stored++
		}
	}
	if stored != c.used {
		t.Fatalf("used = %d but the table holds %d entries", c.used, stored)
	}
	if len(c.table) > 0 && float64(c.used) > maxLoad*float64(len(c.table)) {
		t.Fatalf("table %d/%d is fuller than the %v load limit", c.used, len(c.table), maxLoad)
	}
}

// TestCountersMatchMapModel: any sequence of sets (single keys, runs of
// keys, deltas past the packed width) reads back like a plain map.
func TestCountersMatchMapModel(t *testing.T) {
	for _, tc := range []struct {
		size   uint32
		checks int
	}{{1, 100}, {2, 100}, {3, 100}, {8, 100}, {13, 100}, {100, 100}, {1000, 100}, {100_000, 8}} {
		size := tc.size
		t.Run(fmt.Sprint("size", size), func(t *testing.T) {
			checkAtLeast(t, tc.checks, func(rt *rapid.T) {
				c := newCounters(size)
				model := map[uint32]uint64{}
				mask := c.deltaMask()
				delta := rapid.OneOf(
					rapid.Uint64Range(0, 20),
					rapid.Uint64Range(mask-3, mask),   // widest packed deltas
					rapid.Uint64Range(mask+1, mask+3), // one past: must go dense
					rapid.Uint64Range(0, seqfmt.MaxCounter),
				)
				// A small hot set makes overwrites common.
				off := rapid.OneOf(rapid.Uint32Range(0, min(size-1, 7)), rapid.Uint32Range(0, size-1))
				n := rapid.IntRange(1, 200).Draw(rt, "ops")
				for range n {
					switch rapid.IntRange(0, 9).Draw(rt, "kind") {
					case 0: // a run of consecutive keys, to reach dense by growth
						first := off.Draw(rt, "first")
						count := rapid.Uint32Range(1, size-first).Draw(rt, "count")
						d := rapid.Uint64Range(0, 1000).Draw(rt, "runDelta")
						for o := first; o < first+count; o++ {
							c.set(o, d+uint64(o))
							model[o] = d + uint64(o)
						}
					default:
						o, d := off.Draw(rt, "off"), delta.Draw(rt, "delta")
						c.set(o, d)
						model[o] = d
						if got := c.get(o); got != d {
							rt.Fatalf("get(%d) = %d right after set(%d, %d)", o, got, o, d)
						}
					}
				}
				checkCountersModel(rt, c, model)
			})
		})
	}
}

// checkAtLeast runs rapid.Check until at least n cases have passed. The
// package's TestMain lowers rapid.checks for the slow cluster property;
// these cases take microseconds.
func checkAtLeast(t *testing.T, n int, prop func(*rapid.T)) {
	t.Helper()
	per := 100
	if f := flag.Lookup("rapid.checks"); f != nil {
		if v, err := strconv.Atoi(f.Value.String()); err == nil && v > 0 {
			per = v
		}
	}
	for done := 0; done < n && !t.Failed(); done += per {
		rapid.Check(t, prop)
	}
}

// TestCountersGoDenseOnWideDelta: a delta that does not fit beside the
// offset tag switches to the dense array and keeps every earlier key.
func TestCountersGoDenseOnWideDelta(t *testing.T) {
	const size = 100_000
	c := newCounters(size)
	model := map[uint32]uint64{}
	for off := uint32(0); off < 50; off++ {
		c.set(off*7, uint64(off)+1)
		model[off*7] = uint64(off) + 1
	}
	c.set(3, c.deltaMask())
	model[3] = c.deltaMask()
	if c.dense != nil {
		t.Fatal("the widest packed delta switched to dense")
	}
	checkCountersModel(t, c, model)
	c.set(99_999, c.deltaMask()+1)
	model[99_999] = c.deltaMask() + 1
	if c.dense == nil {
		t.Fatal("a delta past the packed width did not switch to dense")
	}
	checkCountersModel(t, c, model)
	c.set(5, seqfmt.MaxCounter)
	model[5] = seqfmt.MaxCounter
	checkCountersModel(t, c, model)
}

// TestCountersUnsetKeysReadZero: a key never set starts at the floor, also
// after its neighbours were set and the table grew.
func TestCountersUnsetKeysReadZero(t *testing.T) {
	c := newCounters(1000)
	if c.get(0) != 0 || c.get(999) != 0 || c.bytes() != 0 {
		t.Fatalf("a new section reads %d/%d and holds %d bytes", c.get(0), c.get(999), c.bytes())
	}
	for off := uint32(0); off < 1000; off += 2 {
		c.set(off, 1)
	}
	for off := uint32(1); off < 1000; off += 2 {
		if got := c.get(off); got != 0 {
			t.Fatalf("get(%d) = %d for a key never set", off, got)
		}
	}
}

// fillOrders are the orders the memory test fills a section in.
func fillOrders(size uint32) map[string][]uint32 {
	seq := make([]uint32, size)
	for i := range seq {
		seq[i] = uint32(i)
	}
	shuffled := append([]uint32(nil), seq...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	strided := make([]uint32, 0, size)
	for start := range uint32(7) {
		for o := start; o < size; o += 7 {
			strided = append(strided, o)
		}
	}
	return map[string][]uint32{"sequential": seq, "random": shuffled, "strided": strided}
}

// TestCountersMemoryPerKeyAboveMinTable: at every fill level of a
// 100,000-key section, from one used key to all of them, the structure
// holds at most 16 bytes per used key plus the 64-byte minimum table (the
// per-section overhead the design allows).
func TestCountersMemoryPerKeyAboveMinTable(t *testing.T) {
	const size = 100_000
	for name, order := range fillOrders(size) {
		t.Run(name, func(t *testing.T) {
			c := newCounters(size)
			model := map[uint32]uint64{}
			wentDense := 0
			for i, off := range order {
				c.set(off, uint64(i%1000)+1)
				model[off] = uint64(i%1000) + 1
				used := i + 1
				if used%10_000 == 0 || c.dense != nil && wentDense == 0 {
					checkCountersModel(t, c, model) // also across the switch to dense
				}
				if c.bytes() > max(16*used, 8*minTable) {
					t.Fatalf("%d used keys hold %d bytes (%.1f per key)", used, c.bytes(), float64(c.bytes())/float64(used))
				}
				if wentDense == 0 && c.dense != nil {
					wentDense = used
				}
			}
			if c.bytes() != 8*size {
				t.Errorf("a full section holds %d bytes, want the %d-byte dense array", c.bytes(), 8*size)
			}
			// Dense is 8 bytes per key of the section: switching before
			// half the keys are used would break the bound.
			if wentDense < size/2 {
				t.Errorf("went dense at %d used keys", wentDense)
			}
			// Setting the same keys again must not grow anything.
			before := c.bytes()
			for _, off := range order[:1000] {
				c.set(off, 5)
			}
			if c.bytes() != before {
				t.Errorf("overwriting keys changed the size %d -> %d", before, c.bytes())
			}
		})
	}
}

func TestCountersSparseOverwriteKeepsSize(t *testing.T) {
	c := newCounters(100_000)
	for off := range uint32(100) {
		c.set(off*1000, 1)
	}
	before, used := c.bytes(), c.used
	for range 10 {
		for off := range uint32(100) {
			c.set(off*1000, uint64(off)+7)
		}
	}
	if c.bytes() != before || c.used != used || c.dense != nil {
		t.Fatalf("overwrites changed the table: %d -> %d bytes, %d -> %d used, dense=%v", before, c.bytes(), used, c.used, c.dense != nil)
	}
}

func BenchmarkCountersGetSet(b *testing.B) {
	const size = 100_000
	for _, used := range []int{100, 10_000, 60_000, size} {
		b.Run(fmt.Sprint("keys", used), func(b *testing.B) {
			c := newCounters(size)
			rng := rand.New(rand.NewPCG(3, 4))
			offs := rng.Perm(size)[:used]
			for _, o := range offs {
				c.set(uint32(o), 1)
			}
			b.ResetTimer()
			for i := range b.N {
				off := uint32(offs[i%used])
				c.set(off, c.get(off)+1)
			}
			b.ReportMetric(float64(c.bytes())/float64(used), "bytes/key")
		})
	}
}
