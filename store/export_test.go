package store

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

// SetCaughtUp sets whether this leader counts as having applied everything
// before its term (tests of refusals from a leader just elected).
func (s *Shard) SetCaughtUp(v bool) { s.caughtUp.Store(v) }

// SetReplicaFormat gives the replicas New opens from now on the store
// format format(replica id), as if they ran older or newer builds; nil
// restores this build's.
func SetReplicaFormat(format func(replicaID string) uint32) { replicaFormat = format }

// EncodeBatchNeeding encodes b as an entry that needs store format min.
func EncodeBatchNeeding(t *testing.T, b *clusterv1.StoreBatch, min uint32) []byte {
	return encodeFormat(t, b.NowMs, min, b.Ops...)
}

// DumpState returns the replica's Badger state without per-entry
// bookkeeping (see dumpState).
func DumpState(t *testing.T, f *FSM) map[string]string { return dumpState(t, f) }

// SetOpFormat makes ops of the StoreOp field named field (e.g.
// "mark_read") need store format format until the test ends, as if a
// newer build had changed them.
func SetOpFormat(t *testing.T, field string, format uint32) {
	n, ok := opField(field)
	if !ok {
		t.Fatalf("StoreOp has no field %q", field)
	}
	old := opFormats
	opFormats = maps.Clone(old)
	opFormats[n] = format
	t.Cleanup(func() { opFormats = old })
}

// SetFormatPollInterval sets how often leaders ask their replicas' formats
// until the test ends.
func SetFormatPollInterval(t *testing.T, d time.Duration) {
	old := formatPollInterval
	formatPollInterval = d
	t.Cleanup(func() { formatPollInterval = old })
}

// SetDedupSweep sets how often leaders sweep dedup records, and how long
// past its expiry a record stays, until the test ends.
func SetDedupSweep(t *testing.T, interval, grace time.Duration) {
	oldInterval, oldGrace := dedupSweepInterval, sweepGrace
	dedupSweepInterval, sweepGrace = interval, grace
	t.Cleanup(func() { dedupSweepInterval, sweepGrace = oldInterval, oldGrace })
}

// DedupSweepInterval is how often leaders sweep dedup records.
func DedupSweepInterval() time.Duration { return dedupSweepInterval }

// SetRetentionSteps sets how many users and events one retention step
// looks at and removes at most, until the test ends.
func SetRetentionSteps(t *testing.T, users, events uint32) {
	oldUsers, oldEvents := expireUsers, expireLimit
	expireUsers, expireLimit = users, events
	t.Cleanup(func() { expireUsers, expireLimit = oldUsers, oldEvents })
}

// SetRetentionEvery sets the time between two retention passes until the
// test ends (a test that runs the passes itself sets it long).
func SetRetentionEvery(t *testing.T, d time.Duration) {
	old := retentionEvery
	retentionEvery = func(time.Duration) time.Duration { return d }
	t.Cleanup(func() { retentionEvery = old })
}

// RetentionPass runs one retention pass now, as the leader's loop does.
func (s *Shard) RetentionPass(ctx context.Context) { s.applyRetention(ctx) }

// FormatsReady reports whether this leader knows that every replica of
// its shard applies store format need.
func (s *Shard) FormatsReady(need uint32) bool { return s.formatReady(need) == nil }

// HoldApplies stops f applying entries, from the next one on, as a
// replica whose FSM lags its log, until release (or the test's end).
func HoldApplies(t *testing.T, f *FSM) (release func()) {
	held := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(held) }) }
	hook := func(g *FSM) {
		if g == f {
			<-held
		}
	}
	beforeApply.Store(&hook)
	t.Cleanup(func() { release(); beforeApply.Store(nil) })
	return release
}

// SkipSlowUnderRace skips a long test that exercises no concurrency of its
// own beyond the cluster's (the leader's timed loops: format polls,
// retention passes, sweeps, hint rounds; format gates; Badger's flushes) in
// .ci/run's race-detector step (-race -short), which must fit CI's time
// budget: under the detector such tests run 3 to 11 times slower. The plain
// go test ./store and the seqdnext step run them.
func SkipSlowUnderRace(t testing.TB) {
	t.Helper()
	if raceEnabled && testing.Short() {
		t.Skip("skipping under -race -short (a long test with no concurrency of its own); go test ./store runs it")
	}
}

// SetHintFaults sets how many members one hint op tells at most, and which
// chunks of a group's hint round fail before they are proposed, until the
// test ends.
func SetHintFaults(t *testing.T, chunk int, fail func(group uint64, i int) bool) {
	oldChunk, oldFail := hintChunk, failHint
	hintChunk, failHint = chunk, fail
	t.Cleanup(func() { hintChunk, failHint = oldChunk, oldFail })
}

// SetHintRefusals answers the chunks refuse picks as the FSM refuses one
// (out of order) instead of proposing them, until the test ends.
func SetHintRefusals(t *testing.T, refuse func(group uint64, i int) bool) {
	old := refuseHint
	refuseHint = refuse
	t.Cleanup(func() { refuseHint = old })
}

// SetOutboxRound sets how many outbox items one delivery round reads,
// until the test ends.
func SetOutboxRound(t *testing.T, n int) {
	old := outboxRound
	outboxRound = n
	t.Cleanup(func() { outboxRound = old })
}

// HintGroups runs one hint window on this (leader) replica, as its loop
// does.
func (s *Shard) HintGroups(ctx context.Context) { s.hintGroups(ctx) }
