package seqfmt

import (
	"math"
	"strings"
	"testing"
)

func TestMakeRoundTrip(t *testing.T) {
	tests := []struct {
		epoch   uint32
		counter uint64
		want    uint64
	}{
		{0, 0, 0},
		{0, 1, 1},
		{0, MaxCounter, 1<<48 - 1},
		{1, 0, 1 << 48},
		{1, 5, 1<<48 | 5},
		{3, 1_000_000, 3<<48 + 1_000_000},
		{MaxEpoch, 0, 0xffff << 48},
		{MaxEpoch, MaxCounter, math.MaxUint64},
	}
	for _, tc := range tests {
		got, err := Make(tc.epoch, tc.counter)
		if err != nil {
			t.Fatalf("Make(%d, %d): %v", tc.epoch, tc.counter, err)
		}
		if got != tc.want {
			t.Errorf("Make(%d, %d) = %#x, want %#x", tc.epoch, tc.counter, got, tc.want)
		}
		if Epoch(got) != tc.epoch || Counter(got) != tc.counter {
			t.Errorf("Make(%d, %d) unpacks to epoch %d counter %d", tc.epoch, tc.counter, Epoch(got), Counter(got))
		}
	}
}

func TestMakeBounds(t *testing.T) {
	tests := []struct {
		epoch   uint32
		counter uint64
		wantMsg string
	}{
		{MaxEpoch + 1, 0, "epoch 65536 exceeds 65535"},
		{math.MaxUint32, 0, "epoch"},
		{0, MaxCounter + 1, "counter 281474976710656 exceeds 281474976710655"},
		{0, math.MaxUint64, "counter"},
	}
	for _, tc := range tests {
		got, err := Make(tc.epoch, tc.counter)
		if err == nil {
			t.Errorf("Make(%d, %d) = %#x, want an error", tc.epoch, tc.counter, got)
			continue
		}
		if !strings.Contains(err.Error(), tc.wantMsg) {
			t.Errorf("Make(%d, %d) error %q does not say %q", tc.epoch, tc.counter, err, tc.wantMsg)
		}
	}
}

// TestEpochOrdersAboveCounter: every seq of a later epoch is above every
// seq of an earlier one, which is what a home-DC move relies on.
func TestEpochOrdersAboveCounter(t *testing.T) {
	for _, e := range []uint32{0, 1, 77, MaxEpoch - 1} {
		last, _ := Make(e, MaxCounter)
		first, _ := Make(e+1, 0)
		if first <= last {
			t.Fatalf("epoch %d's first seq %#x is not above epoch %d's last %#x", e+1, first, e, last)
		}
	}
	if MaxCounter != 1<<CounterBits-1 || MaxEpoch != 1<<(64-CounterBits)-1 || CounterBits != 48 {
		t.Fatalf("format constants changed: bits %d, max counter %d, max epoch %d", CounterBits, uint64(MaxCounter), MaxEpoch)
	}
}
