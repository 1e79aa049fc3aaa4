package store

import (
	"github.com/prometheus/client_golang/prometheus"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

type metrics struct {
	ops          *prometheus.CounterVec
	batchOps     prometheus.Histogram
	applySeconds prometheus.Histogram
	stageSeconds *prometheus.HistogramVec
	readIndex    *prometheus.HistogramVec
	// The stages' histograms, looked up once: they are observed on every
	// write.
	stageQueued, stagePlan, stageAllocate, stageCommit prometheus.Observer
	outOfOrder                                         prometheus.Counter
	duplicates                                         prometheus.Counter
	delivered                                          prometheus.Counter
	hints                                              prometheus.Counter
	expired                                            prometheus.Counter
	expiredEvents                                      prometheus.Counter
	expiredTimeline                                    prometheus.Counter
	logTrimmed                                         prometheus.Counter
	dedupSwept                                         prometheus.Counter
	rateLimited                                        prometheus.Counter
	abandoned                                          prometheus.Counter
	overloaded                                         prometheus.Counter
	isLeader                                           prometheus.Gauge
	halted                                             prometheus.Gauge
	shardFormat                                        prometheus.Gauge
	outboxItems                                        prometheus.Gauge
	outboxRounds                                       prometheus.Counter
	hintsWaiting                                       prometheus.Gauge
	subscribers                                        prometheus.Gauge
}

// opNames are the ops the leader counts in ops_total (opErr's names).
var opNames = []string{"send", "mark_read", "recall", "delete", "deliver", "create_group", "add_members", "remove_members"}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "store", Name: "ops_total",
			Help: "Store operations answered by the leader, by op and outcome."}, []string{"op", "status"}),
		batchOps: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "seqd", Subsystem: "store", Name: "ops_per_entry",
			Help: "Operations carried by one Raft entry (group commit).", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "seqd", Subsystem: "store", Name: "fsm_apply_seconds",
			Help: "Time to apply one entry to Badger.", Buckets: prometheus.ExponentialBuckets(1e-5, 3, 10)}),
		stageSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "seqd", Subsystem: "store", Name: "pipeline_stage_seconds",
			Help: "Time in each stage of the leader's write pipeline: queued (per request, each time it waits for the proposer), " +
				"plan and allocate (per batch: planning it, its allocator call), commit (per entry: from proposal to the leader's FSM result).",
			Buckets: prometheus.ExponentialBuckets(5e-5, 2, 14)}, []string{"stage"}),
		readIndex: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "seqd", Subsystem: "store", Name: "read_index_seconds",
			Help: "On the shard leader, rounds that confirm it leads and has applied every committed entry before reads answer " +
				"(shared by the reads that arrive while the previous round runs), by outcome: ok, or failed (deposed, or not caught up within 2 s).",
			Buckets: prometheus.ExponentialBuckets(5e-5, 2, 17)}, []string{"outcome"}),
		outOfOrder: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "store", Name: "out_of_order_retries_total",
			Help: "Ops planned again because a seq was not above the inbox's newest (after leader changes)."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "store", Name: "duplicate_sends_total",
			Help: "Sends answered from their first result (client retries)."}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "store", Name: "fanout_delivered_total",
			Help: "Outbox items delivered to other shards."}),
		hints: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "store", Name: "group_hint_rounds_total",
			Help: "Read-fanout hint rounds proposed."}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "store", Name: "retention_rounds_total",
			Help: "Retention passes the leader started."}),
		expiredEvents: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "store", Name: "expired_events_total",
			Help: "Inbox events removed by retention (counted on the leader that proposed the steps)."}),
		expiredTimeline: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "store", Name: "expired_timeline_entries_total",
			Help: "Read-fanout group timeline entries removed by retention (counted on the leader that proposed the steps)."}),
		logTrimmed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "store", Name: "change_log_trimmed_total",
			Help: "Change-log entries removed by retention (counted on the leader that proposed the trims)."}),
		dedupSwept: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "store", Name: "dedup_swept_total",
			Help: "Dedup records past their TTL deleted by the leader's sweeps."}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "store", Name: "rate_limited_total",
			Help: "Requests refused by the per-client rate limit."}),
		abandoned: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "store", Name: "abandoned_requests_total",
			Help: "Writes dropped before they were proposed because their caller had given up (deadline or cancel)."}),
		overloaded: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "store", Name: "overload_refusals_total",
			Help: "Writes refused with RESOURCE_EXHAUSTED because the leader's queue was full."}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "store", Name: "raft_is_leader",
			Help: "1 if this replica leads its shard."}),
		halted: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "store", Name: "halted",
			Help: "1 if this replica stopped applying entries: one needs a newer seqd build (upgrade and restart it)."}),
		shardFormat: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "store", Name: "shard_format",
			Help: "On the shard leader, the lowest store format among the shard's replicas; -1 elsewhere, or while unknown."}),
		outboxItems: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "store", Name: "outbox_items",
			Help: "On the shard leader, the items queued for other shards (message copies, recalls, group hints) that its last outbox round left (rounds run every 50 ms, longer while a shard does not answer), counted up to 100,000; NaN if the leader cannot read its outbox; -1 on followers, and on a new leader until its first round."}),
		outboxRounds: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "store", Name: "outbox_rounds_total",
			Help: "Outbox rounds this replica finished as leader (one every 50 ms, longer while a shard does not answer)."}),
		hintsWaiting: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "store", Name: "group_hints_waiting",
			Help: "On the shard leader, the members that rounds its last hint window started and the hint budget cut off left to later windows (groups the window did not reach are not counted); -1 on followers, and on a new leader until its first window."}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "store", Name: "subscribers",
			Help: "Open Subscribe streams on this replica."}),
	}
	m.stageQueued, m.stagePlan = m.stageSeconds.WithLabelValues("queued"), m.stageSeconds.WithLabelValues("plan")
	m.stageAllocate, m.stageCommit = m.stageSeconds.WithLabelValues("allocate"), m.stageSeconds.WithLabelValues("commit")
	m.readIndex.WithLabelValues("ok")
	m.readIndex.WithLabelValues("failed")
	m.shardFormat.Set(-1)
	m.outboxItems.Set(-1)
	m.hintsWaiting.Set(-1)
	reg.MustRegister(m.ops, m.batchOps, m.applySeconds, m.stageSeconds, m.readIndex, m.outOfOrder, m.duplicates, m.delivered, m.hints, m.expired,
		m.expiredEvents, m.expiredTimeline, m.logTrimmed, m.dedupSwept, m.rateLimited, m.abandoned, m.overloaded, m.isLeader, m.halted, m.shardFormat,
		m.outboxItems, m.outboxRounds, m.hintsWaiting, m.subscribers)
	// Every op's outcomes exist from the start, at 0, so a dashboard sees
	// a series before the first op.
	for _, op := range opNames {
		for _, st := range []clusterv1.OpStatus{clusterv1.OpStatus_OP_STATUS_OK, clusterv1.OpStatus_OP_STATUS_DUPLICATE,
			clusterv1.OpStatus_OP_STATUS_OUT_OF_ORDER, clusterv1.OpStatus_OP_STATUS_REJECTED} {
			m.ops.WithLabelValues(op, st.String())
		}
	}
	return m
}

// registerFSM adds the gauges read from the replica's FSM, once it is open.
func registerFSM(reg prometheus.Registerer, f *FSM) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "store", Name: "format",
			Help: "The store format this replica's build applies."}, func() float64 { return float64(f.format) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "store", Name: "applied_index",
			Help: "Index of the last Raft entry applied on this replica."}, func() float64 { return float64(f.AppliedIndex()) }))
}
