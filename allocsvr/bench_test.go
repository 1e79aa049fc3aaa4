package allocsvr

import (
	"context"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seqd/seqd/internal/mclock"
	"github.com/seqd/seqd/seqfmt"
)

// loadedServer returns a Server that owns every slot with a lease that
// will not run out, and whose sections are already loaded with plenty of
// room, so the hot path runs without an arbiter: what is measured is the
// in-memory allocation path alone.
func loadedServer(tb testing.TB, sections uint64) (*Server, *layout, *leases) {
	tb.Helper()
	s, err := New(Config{ID: "bench", Addr: "127.0.0.1:1", Arbiters: []string{"127.0.0.1:2"}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.ops.Close() })
	const numSlots = 256
	lay := &layout{sectionSize: 100_000, numSlots: numSlots}
	ls := newLeases(mclock.New(), numSlots)
	ls.extend(0, 24*time.Hour)
	for i := range ls.owned {
		ls.owned[i].Store(1)
	}
	s.lay.Store(lay)
	s.ls.Store(ls)
	s.step.Store(1 << 40)
	for id := uint64(0); id < sections; id++ {
		sc := &section{id: id, slot: uint32(id % numSlots), gen: 1, ready: make(chan struct{}),
			max: seqfmt.MaxCounter, keys: newCounters(uint32(lay.sectionSize))}
		close(sc.ready)
		s.sections.Store(id, sc)
	}
	return s, lay, ls
}

// BenchmarkNextInMemory measures Next's in-memory path (lease check,
// section lookup and lock, counter update) from as many goroutines as
// GOMAXPROCS, over a hot set of 10,000 keys (CPU cost) and over 1M keys
// (where cache misses on the counters dominate).
func BenchmarkNextInMemory(b *testing.B) {
	for _, keys := range []uint64{10_000, 1_000_000} {
		b.Run(strconv.FormatUint(keys, 10)+"keys", func(b *testing.B) {
			s, lay, ls := loadedServer(b, keys/100_000+1)
			ctx := context.Background()
			var seed atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(seed.Add(1), 7))
				for pb.Next() {
					if _, err := s.nextOne(ctx, lay, ls, 1+r.Uint64N(keys)); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// TestMemoryTenMillionKeys allocates once for each of 10 million keys and
// reports the heap the counters take, for dense keys (user ids 1..10M, 100
// sections) and for sparse ones (10M random ids among 1e12, one or two per
// section). Run with SEQD_LONG=1; it needs about 2 GB and a minute.
func TestMemoryTenMillionKeys(t *testing.T) {
	if os.Getenv("SEQD_LONG") == "" {
		t.Skip("allocates 10 million keys; set SEQD_LONG=1 to run")
	}
	const n = 10_000_000
	for _, tc := range []struct {
		name  string
		space uint64
	}{{"dense", n}, {"sparse", 1_000_000_000_000}} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(Config{ID: "mem", Addr: "127.0.0.1:1", Arbiters: []string{"127.0.0.1:2"}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.ops.Close()
			const numSlots = 256
			lay := &layout{sectionSize: 100_000, numSlots: numSlots}
			ls := newLeases(mclock.New(), numSlots)
			ls.extend(0, 24*time.Hour)
			for i := range ls.owned {
				ls.owned[i].Store(1)
			}
			s.lay.Store(lay)
			s.ls.Store(ls)
			s.step.Store(1 << 40)
			before := heap()
			r := rand.New(rand.NewPCG(1, 2))
			ctx := context.Background()
			for i := uint64(1); i <= n; i++ {
				k := i
				if tc.space > n {
					k = 1 + r.Uint64N(tc.space)
				}
				id, slot, _ := lay.locate(k)
				if _, ok := s.sections.Load(id); !ok {
					sc := &section{id: id, slot: slot, gen: 1, ready: make(chan struct{}), max: seqfmt.MaxCounter, keys: newCounters(uint32(lay.sectionSize))}
					close(sc.ready)
					s.sections.Store(id, sc)
				}
				if _, err := s.nextOne(ctx, lay, ls, k); err != nil {
					t.Fatal(err)
				}
			}
			after := heap()
			sections, counterBytes := s.memoryStats()
			total := after - before
			t.Logf("%s: %d keys in %d sections: heap +%d MiB = %.1f bytes/key (counters alone %.1f bytes/key, %d bytes/section overall overhead)",
				tc.name, n, sections, total>>20, float64(total)/n, float64(counterBytes)/n, (total-uint64(counterBytes))/uint64(sections))
			if counterBytes > 16*n+64*sections {
				t.Errorf("counters hold %d bytes for %d keys in %d sections: over 16 bytes/key plus 64 bytes/section", counterBytes, n, sections)
			}
			runtime.KeepAlive(s)
		})
	}
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
