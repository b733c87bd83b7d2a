package postgres

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/interlockhq/interlock/engine/policy"
)

// Metrics are the PostgreSQL handler's collectors.
type Metrics struct {
	statements *prometheus.CounterVec
}

// NewMetrics registers the collectors on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		statements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "interlock_statements_total",
			Help: "Statements decided, by agent, target, policy verdict and outcome (forwarded or refused).",
		}, []string{"agent", "target", "protocol", "verdict", "outcome"}),
	}
	reg.MustRegister(m.statements)
	return m
}

func (m *Metrics) statement(agent, target string, v policy.Verdict, refused bool) {
	if m == nil {
		return
	}
	outcome := "forwarded"
	if refused {
		outcome = "refused"
	}
	m.statements.WithLabelValues(agent, target, policy.ProtocolPostgres, v.String(), outcome).Inc()
}
