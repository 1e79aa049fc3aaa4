package arbiter

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	isLeader        prometheus.Gauge
	leaderChanges   prometheus.Counter
	applies         *prometheus.CounterVec
	applySeconds    prometheus.Histogram
	sectionOps      *prometheus.CounterVec
	sectionBatch    prometheus.Histogram
	leaseGrants     prometheus.Counter
	leaseRefusals   *prometheus.CounterVec
	slotMoves       *prometheus.CounterVec
	routingVersion  prometheus.Gauge
	unassignedSlots prometheus.Gauge
	unservedSlots   prometheus.Gauge
	lastIndex       prometheus.Gauge
	settingMismatch *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "arbiter", Name: "raft_is_leader",
			Help: "1 if this arbiter is the Raft leader."}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "arbiter", Name: "raft_leader_changes_seen_total",
			Help: "Leadership changes this arbiter observed."}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "arbiter", Name: "raft_applies_total",
			Help: "Raft entries applied to the FSM, by command."}, []string{"command"}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "seqd", Subsystem: "arbiter", Name: "fsm_apply_seconds",
			Help: "Time the FSM spent applying one entry.", Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10)}),
		sectionOps: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "arbiter", Name: "section_ops_total",
			Help: "Section acquire and raise operations committed, by kind and outcome."}, []string{"kind", "status"}),
		sectionBatch: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "seqd", Subsystem: "arbiter", Name: "section_ops_per_entry",
			Help: "Section operations carried by one Raft entry (group commit).", Buckets: prometheus.ExponentialBuckets(1, 2, 12)}),
		leaseGrants: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "arbiter", Name: "lease_grants_total",
			Help: "AllocSvr lease renewals granted."}),
		leaseRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "arbiter", Name: "lease_refusals_total",
			Help: "AllocSvr lease renewals refused, by reason."}, []string{"reason"}),
		slotMoves: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "arbiter", Name: "slot_moves_total",
			Help: "Slots given a new owner, by kind: initial (unowned), expired (owner's lease ran out), planned (hand-over)."}, []string{"kind"}),
		routingVersion: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "arbiter", Name: "routing_version",
			Help: "Routing-table version in this arbiter's FSM."}),
		unassignedSlots: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "arbiter", Name: "unassigned_slots",
			Help: "Slots with no owner, as the leader last saw."}),
		unservedSlots: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "arbiter", Name: "unserved_slots",
			Help: "Slots no AllocSvr serves, as the leader last saw: no owner, or an owner whose lease ran out (dead or cut off, and no live AllocSvr took the slot yet)."}),
		lastIndex: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "arbiter", Name: "raft_applied_index",
			Help: "Index of the last Raft entry applied on this arbiter."}),
		settingMismatch: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "arbiter", Name: "cluster_setting_mismatch",
			Help: "1 if this arbiter's config gives the [cluster] setting key a value other than the one the cluster was created with (which stays in force), else 0."}, []string{"key"}),
	}
	reg.MustRegister(m.isLeader, m.leaderChanges, m.applies, m.applySeconds, m.sectionOps, m.sectionBatch,
		m.leaseGrants, m.leaseRefusals, m.slotMoves, m.routingVersion, m.unassignedSlots, m.unservedSlots, m.lastIndex, m.settingMismatch)
	// Every known label value exists from the start, at 0, so a dashboard
	// (rate, increase, an alert on > 0) sees a series before the first event.
	for _, r := range []string{"expired", "gossip_dead", "unknown"} {
		m.leaseRefusals.WithLabelValues(r)
	}
	for _, k := range []string{"initial", "expired", "planned"} {
		m.slotMoves.WithLabelValues(k)
	}
	for _, k := range storedKeys {
		m.settingMismatch.WithLabelValues(k)
	}
	return m
}
