package arbiter

import (
	"testing"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// Lease refusals and slot moves have a series per reason and kind from the
// start, at 0.
func TestLabelledCountersExistAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	newMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"seqd_arbiter_lease_refusals_total": 3, "seqd_arbiter_slot_moves_total": 3, "seqd_arbiter_cluster_setting_mismatch": 4}
	for _, mf := range mfs {
		if n, ok := want[mf.GetName()]; ok {
			if len(mf.GetMetric()) != n {
				t.Errorf("%s: %d series at start, want %d", mf.GetName(), len(mf.GetMetric()), n)
			}
			delete(want, mf.GetName())
		}
	}
	if len(want) > 0 {
		t.Errorf("no series at start for %v", want)
	}
}

// Raft reports a leader lost (no leader) as well as one elected; only the
// second is an election (raft_leader_changes_seen_total counted both, so
// each election twice).
func TestElectionsCountOnlyLeadersElected(t *testing.T) {
	for _, c := range []struct {
		o    raft.Observation
		want bool
	}{
		{raft.Observation{Data: raft.LeaderObservation{LeaderID: "a2", LeaderAddr: "127.0.0.1:7101"}}, true},
		{raft.Observation{Data: raft.LeaderObservation{}}, false},
		{raft.Observation{Data: raft.RequestVoteRequest{}}, false},
	} {
		if got := electedLeader(&c.o); got != c.want {
			t.Errorf("electedLeader(%+v) = %v, want %v", c.o.Data, got, c.want)
		}
	}
}
