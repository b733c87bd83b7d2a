package approvals

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the approval stage's collectors.
type Metrics struct {
	Pending         prometheus.Gauge
	Decisions       *prometheus.CounterVec
	Wait            prometheus.Histogram
	WebhookFailures prometheus.Counter
}

// NewMetrics creates the collectors and registers them on reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "interlock_approvals_pending",
			Help: "Statements held on this host waiting for an approval.",
		}),
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "interlock_approval_decisions_total",
			Help: "Approval requests ended on this host, by outcome (approved, denied, expired, cancelled).",
		}, []string{"outcome"}),
		Wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "interlock_approval_wait_seconds",
			Help:    "Time a statement was held for its approval, until any outcome.",
			Buckets: []float64{0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600},
		}),
		WebhookFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "interlock_approval_webhook_failures_total",
			Help: "Approval notifications that could not be delivered after all retries (or were dropped).",
		}),
	}
	for _, o := range []Outcome{Approved, Denied, Expired, Cancelled} {
		m.Decisions.WithLabelValues(string(o))
	}
	if reg != nil {
		reg.MustRegister(m.Pending, m.Decisions, m.Wait, m.WebhookFailures)
	}
	return m
}
