package recording

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the recorder's collectors.
type Metrics struct {
	Records *prometheus.CounterVec
	Bytes   prometheus.Counter
	Sync    prometheus.Histogram
	Errors  prometheus.Counter
	Head    prometheus.Gauge
}

// NewMetrics creates the collectors and registers them on reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "interlock_recording_records_total",
			Help: "Records appended to the recording chain, by event type.",
		}, []string{"type"}),
		Bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "interlock_recording_bytes_total",
			Help: "Bytes of records appended to the recording chain.",
		}),
		Sync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "interlock_recording_fsync_seconds",
			Help:    "Time to write and sync one batch of records (one group commit); with recording.sync: interval, one sync of what was written since the previous one.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14), // 50µs … 0.4s
		}),
		Errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "interlock_recording_errors_total",
			Help: "Records that could not be written; a statement whose record fails is refused.",
		}),
		Head: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "interlock_recording_chain_head",
			Help: "Sequence number of the last record of this host's chain written (and durable, unless recording.sync is interval).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Records, m.Bytes, m.Sync, m.Errors, m.Head)
	}
	return m
}
