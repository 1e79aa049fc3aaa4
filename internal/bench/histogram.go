// Package bench runs closed-loop load against a system and measures it:
// a log-linear latency histogram, the worker runner with optional pacing,
// the live progress line and the result every seqbench report is built
// from.
package bench

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the precision: each power of two is split into 2^subBits
// linear buckets, so a bucket is at most 1/128 of its value wide and a
// reported percentile is within 0.4% of the true one (midpoint of bucket).
const (
	subBits  = 7
	subCount = 1 << subBits
	// maxShift caps the range at 2^(maxShift+subBits+1) ns, about 36 minutes;
	// longer values are clamped into the last bucket.
	maxShift   = 33
	numBuckets = (maxShift + 2) * subCount
)

// Histogram records durations in nanoseconds. It is not safe for
// concurrent use: give each worker its own and Merge them at the end, so
// recording costs a few instructions and no shared cache line.
type Histogram struct {
	counts [numBuckets]uint64
	n      uint64
	sum    float64
	min    int64
	max    int64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram { return &Histogram{min: math.MaxInt64} }

func bucketOf(v int64) int {
	if v < subCount {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - 1 - subBits
	if shift > maxShift {
		return numBuckets - 1
	}
	return (shift+1)*subCount + int(uint64(v)>>uint(shift)) - subCount
}

// bucketRange returns the smallest value in bucket i and the bucket's width.
func bucketRange(i int) (lo, width int64) {
	if i < subCount {
		return int64(i), 1
	}
	shift := i/subCount - 1
	sub := int64(i % subCount)
	return (subCount + sub) << uint(shift), 1 << uint(shift)
}

// Record adds one observation.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// Merge adds every observation of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 { return h.n }

// Min returns the smallest observation (0 when empty).
func (h *Histogram) Min() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.min)
}

// Max returns the largest observation (0 when empty).
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the exact mean (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile returns the value at quantile q in [0, 1]: the midpoint of the
// bucket holding the ceil(q·n)-th smallest observation, kept within the
// observed min and max; q = 1 gives the exact max. It returns 0 when
// empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank >= h.n {
		return time.Duration(h.max) // exact, even beyond the bucket range
	}
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, w := bucketRange(i)
			v := lo + w/2
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
