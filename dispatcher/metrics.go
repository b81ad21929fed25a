package dispatcher

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the dispatcher's Prometheus metrics.
type metrics struct {
	masterLaunches prometheus.Counter
	masterRestarts prometheus.Counter
	requests       *prometheus.HistogramVec
}

// jobsCollector counts the jobs by state when scraped.
type jobsCollector struct {
	d    *Dispatcher
	desc *prometheus.Desc
}

func (c jobsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c jobsCollector) Collect(ch chan<- prometheus.Metric) {
	n := map[State]int{}
	for _, j := range c.d.list() {
		s, _, _ := j.state()
		n[s]++
	}
	for _, s := range States {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n[s]), string(s))
	}
}

// quotaCollector reports the quota the launcher set per role when
// scraped.
type quotaCollector struct {
	q                          QuotaReporter
	cpus, mem, limCPUs, limMem *prometheus.Desc
}

func newQuotaCollector(q QuotaReporter) quotaCollector {
	return quotaCollector{q: q,
		cpus:    prometheus.NewDesc("sluice_dispatcher_quota_cpus", "CPUs guaranteed to a job role by the quota the dispatcher set.", []string{"role"}, nil),
		mem:     prometheus.NewDesc("sluice_dispatcher_quota_mem", "Memory (MB) guaranteed to a job role by the quota the dispatcher set.", []string{"role"}, nil),
		limCPUs: prometheus.NewDesc("sluice_dispatcher_quota_limit_cpus", "The quota limit of a job role's CPUs the dispatcher set.", []string{"role"}, nil),
		limMem:  prometheus.NewDesc("sluice_dispatcher_quota_limit_mem", "The quota limit of a job role's memory (MB) the dispatcher set.", []string{"role"}, nil),
	}
}

func (c quotaCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.cpus
	ch <- c.mem
	ch <- c.limCPUs
	ch <- c.limMem
}

func (c quotaCollector) Collect(ch chan<- prometheus.Metric) {
	for role, q := range c.q.Quotas() {
		for _, m := range []struct {
			d *prometheus.Desc
			v map[string]float64
			k string
		}{{c.cpus, q.Guarantee, "cpus"}, {c.mem, q.Guarantee, "mem"}, {c.limCPUs, q.Limit, "cpus"}, {c.limMem, q.Limit, "mem"}} {
			if v, ok := m.v[m.k]; ok {
				ch <- prometheus.MustNewConstMetric(m.d, prometheus.GaugeValue, v, role)
			}
		}
	}
}

func newMetrics(reg *prometheus.Registry, d *Dispatcher) *metrics {
	m := &metrics{
		masterLaunches: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_dispatcher_master_launches_total",
			Help: "Framework masters launched (first starts, restarts and rescales)."}),
		masterRestarts: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_dispatcher_master_restarts_total",
			Help: "Framework masters started again after one died."}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_dispatcher_request_duration_seconds",
			Help: "Duration of API requests, by route, method and status code.", Buckets: prometheus.DefBuckets},
			[]string{"route", "method", "code"}),
	}
	reg.MustRegister(m.masterLaunches, m.masterRestarts, m.requests,
		jobsCollector{d: d, desc: prometheus.NewDesc("sluice_dispatcher_jobs", "Jobs by state.", []string{"state"}, nil)})
	// The launcher as configured, not its fence (which reports nothing).
	l := d.cfg.Launcher
	if f, ok := l.(fencedLauncher); ok {
		l = f.l
	}
	if q, ok := l.(QuotaReporter); ok {
		reg.MustRegister(newQuotaCollector(q))
	}
	return m
}
