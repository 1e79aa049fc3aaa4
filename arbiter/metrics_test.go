package arbiter

import (
	"testing"

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
