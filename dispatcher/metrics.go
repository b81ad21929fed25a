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
	return m
}
