package agents

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the agents room's Prometheus series. No label names a tenant
// or an agent.
type Metrics struct {
	reports     *prometheus.CounterVec
	batchSize   prometheus.Histogram
	identity    *prometheus.CounterVec
	enrollments *prometheus.CounterVec
}

// NewMetrics registers the agents room's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeward_agent_reports_total",
			Help: "Agent reports received, by result: applied, or duplicate (acknowledged again, not applied).",
		}, []string{"result"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edgeward_agent_ingest_batch_heartbeats",
			Help:    "Heartbeat calls written together in one transaction.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		identity: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeward_agent_identity_checks_total",
			Help: "Agent certificate checks, by how they were answered: cache, database, refused.",
		}, []string{"result"}),
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeward_agent_enrollments_total",
			Help: "Enrollment attempts, by result: enrolled, reenrolled, refused.",
		}, []string{"result"}),
	}
	reg.MustRegister(m.reports, m.batchSize, m.identity, m.enrollments)
	return m
}

// The helpers accept a nil *Metrics, so tests need not register any.

func (m *Metrics) report(result string, n int) {
	if m != nil && n > 0 {
		m.reports.WithLabelValues(result).Add(float64(n))
	}
}

func (m *Metrics) batch(n int) {
	if m != nil {
		m.batchSize.Observe(float64(n))
	}
}

func (m *Metrics) identityCheck(result string) {
	if m != nil {
		m.identity.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) enrollment(result string) {
	if m != nil {
		m.enrollments.WithLabelValues(result).Inc()
	}
}
