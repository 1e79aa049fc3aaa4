package store

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Every op's outcomes are series from the start, at 0: a dashboard's rate
// or alert sees them before the first op.
func TestOpCountersExistAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	newMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "seqd_store_ops_total" {
			continue
		}
		if n := len(mf.GetMetric()); n != len(opNames)*4 {
			t.Fatalf("%d ops_total series at start, want %d (each op, each outcome)", n, len(opNames)*4)
		}
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); v != 0 {
				t.Fatalf("%v at start: %v", m.GetLabel(), v)
			}
		}
		return
	}
	t.Fatal("no seqd_store_ops_total at start")
}
