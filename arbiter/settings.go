package arbiter

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

// storedKeys are the [cluster] settings INIT_CLUSTER stores: fixed when the
// cluster is created, whatever an arbiter's config says afterwards. The
// lease of a cluster created before it was stored is fixed when a leader
// first records it. Step is not among them: each arbiter reads its own,
// and the leader's is in force, which is safe (see Register).
var storedKeys = []string{"section_size", "slots", "shard_splits", "lease"}

// clusterSettings is the stored [cluster] settings as a config gives them;
// a zero value is a key the config leaves out.
type clusterSettings struct {
	sectionSize uint64
	slots       uint32
	splits      []uint64
	lease       time.Duration
}

func givenSettings(cfg Config) clusterSettings {
	return clusterSettings{sectionSize: cfg.SectionSize, slots: cfg.NumSlots, splits: cfg.ShardSplits, lease: cfg.Lease}
}

// settingDiff is one configured [cluster] setting that differs from the
// cluster's stored one.
type settingDiff struct {
	key                string
	stored, configured string
}

// settingDiffs compares the settings a config gives with the stored ones,
// in storedKeys order. A key the config leaves out is not compared: an
// arbiter that joined an existing cluster need not repeat them. Nor is a
// lease the cluster has not stored yet.
func settingDiffs(c clusterSettings, m *clusterv1.ClusterMeta) []settingDiff {
	var d []settingDiff
	if c.sectionSize != 0 && m.SectionSize != c.sectionSize {
		d = append(d, settingDiff{"section_size", fmt.Sprint(m.SectionSize), fmt.Sprint(c.sectionSize)})
	}
	if c.slots != 0 && m.NumSlots != c.slots {
		d = append(d, settingDiff{"slots", fmt.Sprint(m.NumSlots), fmt.Sprint(c.slots)})
	}
	if stored := storedSplits(m); len(c.splits) > 0 && !slices.Equal(stored, c.splits) {
		d = append(d, settingDiff{"shard_splits", splitsString(stored), splitsString(c.splits)})
	}
	if c.lease != 0 && m.LeaseMs != 0 && c.lease.Milliseconds() != m.LeaseMs {
		d = append(d, settingDiff{"lease", (time.Duration(m.LeaseMs) * time.Millisecond).String(), c.lease.String()})
	}
	return d
}

// storedSplits turns the stored shards back into the splits that made
// them: every shard's end but the last's, which has none.
func storedSplits(m *clusterv1.ClusterMeta) []uint64 {
	var s []uint64
	for _, sh := range m.Shards {
		if sh.EndSection != 0 {
			s = append(s, sh.EndSection)
		}
	}
	return s
}

// splitsString writes splits as the config file does: [1000, 2000].
func splitsString(s []uint64) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = fmt.Sprint(v)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// checkSettings warns once this arbiter knows the cluster's stored
// settings (INIT_CLUSTER applied, or a snapshot restored) about each
// configured one that differs. Every arbiter does it, leader or not: an
// operator who edited [cluster] after creation would otherwise believe the
// edit in force. Called after every FSM change; it acts once per key, and
// is done once the lease is stored too (a cluster created before the lease
// was stored has it only once a leader records it).
func (a *Arbiter) checkSettings() {
	if a.settingsChecked.Load() {
		return
	}
	m := a.fsm.Meta()
	if m == nil {
		return
	}
	a.settingsMu.Lock()
	defer a.settingsMu.Unlock()
	if a.settingsChecked.Load() {
		return
	}
	if m.LeaseMs != 0 {
		a.settingsChecked.Store(true)
	}
	if a.settingsWarned == nil {
		a.settingsWarned = make(map[string]bool)
	}
	var diffs []settingDiff
	for _, d := range settingDiffs(a.given, m) {
		if !a.settingsWarned[d.key] {
			a.settingsWarned[d.key] = true
			diffs = append(diffs, d)
		}
	}
	if len(diffs) == 0 {
		return
	}
	keys := make([]string, len(diffs))
	attrs := []any{"cluster", m.ClusterId, "keys", ""}
	for i, d := range diffs {
		keys[i] = d.key
		a.m.settingMismatch.WithLabelValues(d.key).Set(1)
		attrs = append(attrs, slog.Group(d.key, "stored", d.stored, "configured", d.configured))
	}
	attrs[3] = strings.Join(keys, ",")
	a.log.Warn("[cluster] settings in this arbiter's config differ from the ones the cluster was created with; "+
		"those stay in force and the configured ones are ignored: put the stored values back in the config", attrs...)
}
