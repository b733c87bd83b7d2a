package redirect

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
)

// VerdictNames are the kernel's verdict counters, in the order of enum
// verdict in redirect.c.
var VerdictNames = [...]string{
	"redirected",
	"egress_denied",
	"egress_allowed",
	"engine_port_denied",
	"loop_guard",
	"engine_bind_denied",
}

// Verdicts sums the per-CPU verdict counters.
func (r *Redirector) Verdicts() (map[string]uint64, error) {
	return readVerdicts(r.objs.Verdicts)
}

func readVerdicts(m *ebpf.Map) (map[string]uint64, error) {
	out := make(map[string]uint64, len(VerdictNames))
	for i, name := range VerdictNames {
		var perCPU []uint64
		if err := m.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("read verdict counter %s: %w", name, err)
		}
		var sum uint64
		for _, n := range perCPU {
			sum += n
		}
		out[name] = sum
	}
	return out, nil
}

// Collector exports the kernel's counters and map sizes to Prometheus,
// read at scrape time.
type Collector struct {
	r        *Redirector
	verdicts *prometheus.Desc
	agents   *prometheus.Desc
}

// NewCollector returns a collector for r's maps.
func NewCollector(r *Redirector) *Collector {
	return &Collector{
		r: r,
		verdicts: prometheus.NewDesc("interlock_kernel_verdicts_total",
			"Decisions taken by the BPF programs, by verdict.", []string{"verdict"}, nil),
		agents: prometheus.NewDesc("interlock_agent_cgroups",
			"Labelled agent cgroups known to the kernel.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.verdicts
	ch <- c.agents
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if v, err := c.r.Verdicts(); err == nil {
		for name, n := range v {
			ch <- prometheus.MustNewConstMetric(c.verdicts, prometheus.CounterValue, float64(n), name)
		}
	}
	var (
		k   uint64
		val [8]byte
		n   int
	)
	it := c.r.objs.AgentCgroups.Iterate()
	for it.Next(&k, &val) {
		n++
	}
	ch <- prometheus.MustNewConstMetric(c.agents, prometheus.GaugeValue, float64(n))
}
