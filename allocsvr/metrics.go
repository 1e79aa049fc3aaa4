package allocsvr

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	allocations prometheus.Counter
	raises      *prometheus.CounterVec
	raiseWait   prometheus.Histogram
	loads       prometheus.Counter
	notOwner    prometheus.Counter
	renewals    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Server) *metrics {
	m := &metrics{
		allocations: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "allocsvr", Name: "allocations_total",
			Help: "Sequence numbers handed out."}),
		raises: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "allocsvr", Name: "raises_total",
			Help: "max_seq raises, by mode (background: headroom fell below half a step; sync: a caller had to wait) and outcome."}, []string{"mode", "outcome"}),
		raiseWait: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "seqd", Subsystem: "allocsvr", Name: "raise_wait_seconds",
			Help: "Time callers waited on a max_seq raise (the hot path almost never should).", Buckets: prometheus.ExponentialBuckets(1e-4, 3, 10)}),
		loads: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "allocsvr", Name: "section_loads_total",
			Help: "Sections loaded (acquired from the arbiter)."}),
		notOwner: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "allocsvr", Name: "not_owner_total",
			Help: "Requests refused because this node does not serve the key's slot now."}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "seqd", Subsystem: "allocsvr", Name: "lease_renewals_total",
			Help: "Lease renewal attempts, by outcome (granted, refused, error)."}, []string{"outcome"}),
	}
	leaseValid := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "allocsvr", Name: "lease_valid",
		Help: "1 while this node's lease is valid."}, func() float64 {
		if s.leases() != nil && s.leases().valid() {
			return 1
		}
		return 0
	})
	leaseRemaining := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "allocsvr", Name: "lease_remaining_seconds",
		Help: "Time until this node's lease runs out (negative once expired)."}, func() float64 {
		if s.leases() == nil {
			return 0
		}
		return s.leases().remaining().Seconds()
	})
	owned := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "allocsvr", Name: "served_slots",
		Help: "Slots this node serves now."}, func() float64 { return float64(s.ServedSlots()) })
	loaded := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "allocsvr", Name: "loaded_sections",
		Help: "Sections held in memory."}, func() float64 { n, _ := s.memoryStats(); return float64(n) })
	counterBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "seqd", Subsystem: "allocsvr", Name: "counter_bytes",
		Help: "Bytes held by per-key counters."}, func() float64 { _, b := s.memoryStats(); return float64(b) })
	reg.MustRegister(m.allocations, m.raises, m.raiseWait, m.loads, m.notOwner, m.renewals, leaseValid, leaseRemaining, owned, loaded, counterBytes)
	return m
}
