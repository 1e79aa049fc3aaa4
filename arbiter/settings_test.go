package arbiter

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/seqd/seqd/internal/testwait"
	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// waitFor waits up to 20 s for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, 20*time.Second, what, cond)
}

const settingsWarning = "settings in this arbiter's config differ from the ones the cluster was created with"

// Two arbiters' configs agree; the third's gives other [cluster] settings.
// Whoever leads creates the cluster with its own; then every arbiter whose
// config differs, leader or not, warns once, naming each key with both
// values, and sets its mismatch gauge. Before, only a leader elected on an
// already created cluster compared (and only section_size and slots), and
// the lease was not stored at all: each leader granted its own.
func TestEveryArbiterWarnsAboutChangedClusterSettings(t *testing.T) {
	type settings struct {
		name        string
		sectionSize uint64
		slots       uint32
		splits      []uint64
		lease       time.Duration
	}
	common := settings{"common", 1000, 16, []uint64{10}, 2 * time.Second}
	odd := settings{"odd", 2000, 32, []uint64{10, 20}, 3 * time.Second}
	want := map[string]map[string]string{ // what a warning names, by the config it is about
		"common": {"section_size": "stored=2000 section_size.configured=1000", "slots": "stored=32 slots.configured=16", "shard_splits": `stored="[10, 20]" shard_splits.configured=[10]`,
			"lease": "stored=3s lease.configured=2s"},
		"odd": {"section_size": "stored=1000 section_size.configured=2000", "slots": "stored=16 slots.configured=32", "shard_splits": `stored=[10] shard_splits.configured="[10, 20]"`,
			"lease": "stored=2s lease.configured=3s"},
	}

	var peers []Peer
	var lns []net.Listener
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		peers = append(peers, Peer{ID: fmt.Sprintf("a%d", i+1), RaftAddr: ln.Addr().String(), GRPCAddr: "127.0.0.1:1"})
	}
	type member struct {
		a    *Arbiter
		s    settings
		logs *testwait.Buffer
		reg  *prometheus.Registry
	}
	var ms []member
	for i, p := range peers {
		s := common
		if i == 2 {
			s = odd
		}
		logs, reg := &testwait.Buffer{}, prometheus.NewRegistry()
		a, err := New(Config{
			ID: p.ID, DataDir: t.TempDir(), RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Bootstrap: peers,
			SectionSize: s.sectionSize, NumSlots: s.slots, ShardSplits: s.splits, Lease: s.lease,
			HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
			Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
			Registry: reg,
		}, lns[i])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		if err := a.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, member{a, s, logs, reg})
	}

	// Every arbiter has the cluster's settings, and every arbiter record
	// (more FSM changes after the INIT_CLUSTER: the warning must not repeat).
	waitFor(t, "every arbiter to apply INIT_CLUSTER and the arbiter records", func() bool {
		for _, m := range ms {
			if !m.a.fsm.Initialized() || len(m.a.fsm.Arbiters()) < 3 {
				return false
			}
		}
		return true
	})
	meta := ms[0].a.fsm.Meta()
	var stored settings
	for _, s := range []settings{common, odd} {
		if meta.SectionSize == s.sectionSize && meta.NumSlots == s.slots && slices.Equal(storedSplits(meta), s.splits) && meta.LeaseMs == s.lease.Milliseconds() {
			stored = s
		}
	}
	if stored.name == "" {
		t.Fatalf("stored settings %v are neither config's", meta)
	}
	for _, m := range ms {
		if m.a.raft.State() == raft.Leader {
			t.Logf("leader %s; the cluster has the %s settings", m.a.cfg.ID, stored.name)
		}
	}

	followersWarned := 0
	for _, m := range ms {
		logs := m.logs.String()
		gauges := mismatchGauges(t, m.reg)
		if m.s.name == stored.name {
			if strings.Contains(logs, settingsWarning) {
				t.Errorf("%s (config as stored) warned:\n%s", m.a.cfg.ID, logs)
			}
			for k, v := range gauges {
				if v != 0 {
					t.Errorf("%s (config as stored): mismatch gauge %s = %v", m.a.cfg.ID, k, v)
				}
			}
			continue
		}
		if n := strings.Count(logs, settingsWarning); n != 1 {
			t.Errorf("%s (config differs): %d warnings, want 1:\n%s", m.a.cfg.ID, n, logs)
			continue
		}
		if m.a.raft.State() != raft.Leader {
			followersWarned++
		}
		if !strings.Contains(logs, "keys=section_size,slots,shard_splits,lease ") {
			t.Errorf("%s: the warning does not list the keys:\n%s", m.a.cfg.ID, logs)
		}
		for k, both := range want[m.s.name] {
			if !strings.Contains(logs, k+"."+both) {
				t.Errorf("%s: the warning does not give %s as %s.%s:\n%s", m.a.cfg.ID, k, k, both, logs)
			}
			if gauges[k] != 1 {
				t.Errorf("%s: mismatch gauge %s = %v, want 1", m.a.cfg.ID, k, gauges[k])
			}
		}
	}
	if followersWarned == 0 {
		t.Error("no arbiter that is not the leader warned")
	}
}

func mismatchGauges(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "seqd_arbiter_cluster_setting_mismatch" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "key" {
					out[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	if len(out) != len(storedKeys) {
		t.Fatalf("mismatch gauges %v, want one per key in %v", out, storedKeys)
	}
	return out
}

func TestSettingDiffs(t *testing.T) {
	shards := func(splits ...uint64) []*seqdv1.ShardInfo {
		s, err := shardsFromSplits(splits)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	meta := &clusterv1.ClusterMeta{ClusterId: "c", SectionSize: 1000, NumSlots: 16, Shards: shards(10, 20), LeaseMs: 2000}
	one := &clusterv1.ClusterMeta{ClusterId: "c", SectionSize: 1000, NumSlots: 16, Shards: shards(), LeaseMs: 2000}
	noLease := &clusterv1.ClusterMeta{ClusterId: "c", SectionSize: 1000, NumSlots: 16, Shards: shards()}
	tests := []struct {
		name  string
		given clusterSettings
		meta  *clusterv1.ClusterMeta
		want  []settingDiff
	}{
		{"same", clusterSettings{1000, 16, []uint64{10, 20}, 2 * time.Second}, meta, nil},
		{"left out: not compared", clusterSettings{}, meta, nil},
		{"one shard, none configured", clusterSettings{1000, 16, nil, 0}, one, nil},
		{"section size", clusterSettings{500, 16, nil, 0}, meta, []settingDiff{{"section_size", "1000", "500"}}},
		{"slots", clusterSettings{0, 32, nil, 0}, meta, []settingDiff{{"slots", "16", "32"}}},
		{"splits", clusterSettings{0, 0, []uint64{10}, 0}, meta, []settingDiff{{"shard_splits", "[10, 20]", "[10]"}}},
		{"splits on a one-shard cluster", clusterSettings{0, 0, []uint64{5}, 0}, one, []settingDiff{{"shard_splits", "[]", "[5]"}}},
		{"lease", clusterSettings{0, 0, nil, 1500 * time.Millisecond}, meta, []settingDiff{{"lease", "2s", "1.5s"}}},
		{"lease and slots", clusterSettings{0, 8, nil, 5 * time.Second}, meta, []settingDiff{{"slots", "16", "8"}, {"lease", "2s", "5s"}}},
		{"lease not stored yet: not compared", clusterSettings{0, 0, nil, time.Second}, noLease, nil},
	}
	for _, tc := range tests {
		if got := settingDiffs(tc.given, tc.meta); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestLeaseMismatchWarnedOnceRecorded: on a cluster created before the
// lease was stored, the other settings are compared at once and the lease
// when a leader records it: one more warning, for the lease alone, and
// none after.
func TestLeaseMismatchWarnedOnceRecorded(t *testing.T) {
	logs, reg := &testwait.Buffer{}, prometheus.NewRegistry()
	a := &Arbiter{
		fsm:   NewFSM(),
		given: clusterSettings{sectionSize: 500, lease: 2 * time.Second},
		m:     newMetrics(reg),
		log:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	a.fsm.onChange = a.checkSettings
	apply := func(typ clusterv1.CommandType, payload proto.Message) {
		t.Helper()
		if res := applyData(a.fsm, encodeCmd(t, typ, payload)); res.Err != nil {
			t.Fatal(res.Err)
		}
	}

	apply(cmdInit, &clusterv1.InitClusterCommand{ClusterId: "c", SectionSize: 1000, NumSlots: 4})
	if n := strings.Count(logs.String(), settingsWarning); n != 1 || !strings.Contains(logs.String(), "keys=section_size ") {
		t.Fatalf("after the old-style init: %d warnings, want 1 naming section_size alone:\n%s", n, logs)
	}
	if g := mismatchGauges(t, reg); g["section_size"] != 1 || g["lease"] != 0 {
		t.Fatalf("gauges %v, want section_size 1 and lease 0 (none stored yet)", g)
	}

	apply(cmdInit, &clusterv1.InitClusterCommand{ClusterId: "c", SectionSize: 1000, NumSlots: 4, LeaseMs: 3000})
	apply(cmdRegister, &clusterv1.RegisterNodeCommand{NodeId: "n1", Incarnation: 1, Addr: "n1:1"})
	out := logs.String()
	if n := strings.Count(out, settingsWarning); n != 2 {
		t.Fatalf("%d warnings once the lease is recorded, want 2:\n%s", n, out)
	}
	second := out[strings.LastIndex(out, settingsWarning):]
	if !strings.Contains(second, "keys=lease ") || !strings.Contains(second, "lease.stored=3s lease.configured=2s") {
		t.Fatalf("the second warning does not name the lease alone with both values:\n%s", second)
	}
	if g := mismatchGauges(t, reg); g["section_size"] != 1 || g["lease"] != 1 {
		t.Fatalf("gauges %v, want section_size and lease 1", g)
	}
}
