package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// exactQuantile is the ceil(q·n)-th smallest of sorted.
func exactQuantile(sorted []int64, q float64) int64 {
	rank := max(int(math.Ceil(q*float64(len(sorted)))), 1)
	return sorted[rank-1]
}

func TestHistogramQuantilesMatchKnownDistributions(t *testing.T) {
	const n = 500_000
	dists := map[string]func(r *rand.Rand) int64{
		"uniform 1µs-10ms": func(r *rand.Rand) int64 { return 1_000 + r.Int64N(10_000_000) },
		"exponential mean 200µs": func(r *rand.Rand) int64 {
			return int64(r.ExpFloat64() * 200_000)
		},
		"lognormal heavy tail": func(r *rand.Rand) int64 {
			return int64(math.Exp(11 + 1.5*r.NormFloat64())) // median ~60µs
		},
		"bimodal 50µs / 5ms": func(r *rand.Rand) int64 {
			if r.IntN(100) < 97 {
				return 50_000 + r.Int64N(1_000)
			}
			return 5_000_000 + r.Int64N(100_000)
		},
	}
	for name, draw := range dists {
		t.Run(name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			h := NewHistogram()
			vals := make([]int64, n)
			for i := range vals {
				vals[i] = draw(r)
				h.Record(time.Duration(vals[i]))
			}
			slices.Sort(vals)
			for _, q := range []float64{0.001, 0.5, 0.9, 0.99, 0.999, 1} {
				want := float64(exactQuantile(vals, q))
				got := float64(h.Quantile(q))
				if rel := math.Abs(got-want) / want; rel > 0.01 {
					t.Errorf("q=%v: got %.0f ns, exact %.0f ns (%.2f%% off, want within 1%%)", q, got, want, rel*100)
				}
			}
			var sum float64
			for _, v := range vals {
				sum += float64(v)
			}
			if got, want := float64(h.Mean()), sum/n; math.Abs(got-want) > 1 {
				t.Errorf("mean %v, want %v", got, want)
			}
			if h.Count() != n || int64(h.Min()) != vals[0] || int64(h.Max()) != vals[n-1] {
				t.Errorf("count/min/max = %d/%v/%v, want %d/%d/%d", h.Count(), h.Min(), h.Max(), n, vals[0], vals[n-1])
			}
		})
	}
}

func TestHistogramConstantAndSmallValuesAreExact(t *testing.T) {
	h := NewHistogram()
	for range 1000 {
		h.Record(123_456 * time.Nanosecond)
	}
	for _, q := range []float64{0, 0.5, 0.999, 1} {
		if got := h.Quantile(q); got != 123_456 {
			t.Errorf("constant: q=%v got %v, want 123.456µs", q, got)
		}
	}
	small := NewHistogram()
	for v := range 100 {
		small.Record(time.Duration(v))
	}
	if got := small.Quantile(0.5); got != 49 {
		t.Errorf("values 0..99: median %d ns, want 49", got)
	}
}

func TestHistogramMergeEqualsOneHistogram(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	all := NewHistogram()
	parts := make([]*Histogram, 8)
	for i := range parts {
		parts[i] = NewHistogram()
	}
	for i := range 100_000 {
		d := time.Duration(r.Int64N(50_000_000))
		all.Record(d)
		parts[i%len(parts)].Record(d)
	}
	merged := NewHistogram()
	merged.Merge(NewHistogram()) // empty merges are harmless
	for _, p := range parts {
		merged.Merge(p)
	}
	if *merged != *all {
		t.Fatalf("merged histogram differs: count %d/%d, p99 %v/%v", merged.Count(), all.Count(), merged.Quantile(.99), all.Quantile(.99))
	}
}

func TestHistogramEmptyAndOutOfRange(t *testing.T) {
	h := NewHistogram()
	if h.Quantile(0.99) != 0 || h.Mean() != 0 || h.Min() != 0 || h.Max() != 0 {
		t.Fatal("empty histogram should report zeros")
	}
	h.Record(-5)
	h.Record(100 * time.Hour) // beyond the range: clamped, still counted
	if h.Count() != 2 || h.Quantile(0) != 0 || h.Quantile(1) != 100*time.Hour {
		t.Fatalf("got count %d, q0 %v, q1 %v", h.Count(), h.Quantile(0), h.Quantile(1))
	}
}

func TestBucketsCoverEveryValue(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	check := func(v int64) {
		i := bucketOf(v)
		lo, w := bucketRange(i)
		if v < lo || v >= lo+w {
			t.Fatalf("value %d in bucket %d = [%d, %d)", v, i, lo, lo+w)
		}
		if lo >= subCount && float64(w)/float64(lo) > 1.0/subCount {
			t.Fatalf("bucket %d = [%d, %d) is wider than 1/%d of its value", i, lo, lo+w, subCount)
		}
	}
	for e := 0; e < 40; e++ {
		p := int64(1) << e
		check(p - 1)
		check(p)
		check(p + 1)
	}
	for range 100_000 {
		check(r.Int64N(1 << 40))
	}
}
