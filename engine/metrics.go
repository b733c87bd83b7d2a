package engine

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the engine's Prometheus collectors. Label values are bounded:
// agents and targets come from the policy, protocol and verdict from small
// fixed sets.
type Metrics struct {
	Connections    *prometheus.CounterVec
	SessionsActive prometheus.Gauge
	Bytes          *prometheus.CounterVec
	LookupFailures prometheus.Counter
	UpstreamErrors *prometheus.CounterVec
}

// Connection verdicts.
const (
	VerdictAccepted      = "accepted"
	VerdictNoRecord      = "no_record"
	VerdictUnknownTarget = "unknown_target"
	VerdictNoHandler     = "no_handler"
)

// Byte directions.
const (
	DirClientToTarget = "client_to_target"
	DirTargetToClient = "target_to_client"
)

// NewMetrics creates the collectors and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "interlock_connections_total",
			Help: "Connections accepted by the engine, by agent, target, protocol and verdict.",
		}, []string{"agent", "target", "protocol", "verdict"}),
		SessionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "interlock_sessions_active",
			Help: "Sessions currently open.",
		}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "interlock_bytes_total",
			Help: "Bytes relayed, by direction.",
		}, []string{"direction"}),
		LookupFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "interlock_redirect_lookup_failures_total",
			Help: "Accepted connections without a kernel redirect record (refused).",
		}),
	}
	m.UpstreamErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "interlock_upstream_errors_total",
		Help: "Failed connects from the engine to a target, by target.",
	}, []string{"target"})
	reg.MustRegister(m.Connections, m.SessionsActive, m.Bytes, m.LookupFailures, m.UpstreamErrors)
	return m
}
