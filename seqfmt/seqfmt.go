// Package seqfmt packs and unpacks seqd's 64-bit sequence format,
// epoch << 48 | counter.
//
// A home-DC move raises the epoch, so every seq the new home hands out is
// larger than anything the old home issued, however far replication lags.
package seqfmt

import "fmt"

const (
	// CounterBits is how many low bits hold the per-epoch counter.
	CounterBits = 48
	// MaxCounter is the largest counter in one epoch (2.8e14).
	MaxCounter = 1<<CounterBits - 1
	// MaxEpoch is the largest epoch that fits above the counter.
	MaxEpoch = 1<<(64-CounterBits) - 1
)

// Make packs an epoch and a counter into a seq.
func Make(epoch uint32, counter uint64) (uint64, error) {
	if epoch > MaxEpoch {
		return 0, fmt.Errorf("seqfmt: epoch %d exceeds %d", epoch, MaxEpoch)
	}
	if counter > MaxCounter {
		return 0, fmt.Errorf("seqfmt: counter %d exceeds %d", counter, uint64(MaxCounter))
	}
	return uint64(epoch)<<CounterBits | counter, nil
}

// Epoch returns the epoch of a seq.
func Epoch(seq uint64) uint32 { return uint32(seq >> CounterBits) }

// Counter returns the counter of a seq.
func Counter(seq uint64) uint64 { return seq & MaxCounter }
