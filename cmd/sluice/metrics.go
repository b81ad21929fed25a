package main

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/framework"
)

// historyLen is how many checkpoints GET /v1/checkpoints remembers.
const historyLen = 50

// jobObserver is what the job's master process knows about its job for
// /metrics and the REST API: the nodes' counters (the engine's atomics,
// read at scrape time), the checkpoints and restarts the driver reports,
// and the TaskManagers of a cluster master.
type jobObserver struct {
	g      *runtime.Graph
	nodes  map[string]*runtime.NodeMetrics
	master *framework.Master // nil: the job runs in this process

	mu         sync.Mutex
	history    []runtime.CheckpointStats // oldest first, at most historyLen
	completed  int64                     // checkpoints (not savepoints)
	savepoints int64
	failed     int64 // checkpoints and savepoints
	restarts   int64
	last       *runtime.CheckpointStats // the last completed checkpoint (not savepoint)

	duration, size prometheus.Histogram
	reg            *prometheus.Registry
	shape          jobShape // metrics_measures.go
}

// newJobObserver observes g's run whose counters are nodes (the master's
// for a cluster; otherwise the map given to the run as Options.Metrics).
func newJobObserver(g *runtime.Graph, nodes map[string]*runtime.NodeMetrics, m *framework.Master) *jobObserver {
	o := &jobObserver{g: g, nodes: nodes, master: m, reg: prometheus.NewRegistry(), shape: shapeOf(g)}
	job := prometheus.Labels{"job_name": g.JobName}
	o.duration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sluice_checkpoint_duration_seconds",
		Help:        "Completed checkpoints and savepoints: from the trigger to the metadata's commit.",
		ConstLabels: job, Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)})
	o.size = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sluice_checkpoint_size_bytes",
		Help:        "Completed checkpoints and savepoints: bytes of state files each wrote (an incremental one's deltas).",
		ConstLabels: job, Buckets: prometheus.ExponentialBuckets(1024, 4, 12)})
	o.reg.MustRegister(o.duration, o.size, &jobCollector{o: o, d: newJobDescs(job), m: newMeasureDescs(job)},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return o
}

// checkpoint is Options.OnCheckpoint: it runs on the driver goroutine.
func (o *jobObserver) checkpoint(s runtime.CheckpointStats) {
	if s.State == "completed" {
		o.duration.Observe(s.Duration.Seconds())
		o.size.Observe(float64(s.Bytes))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case s.State != "completed":
		o.failed++
	case s.Savepoint:
		o.savepoints++
	default:
		o.completed++
		last := s
		o.last = &last
	}
	if len(o.history) == historyLen {
		o.history = append(o.history[:0], o.history[1:]...)
	}
	o.history = append(o.history, s)
}

// restart is Options.OnRestart.
func (o *jobObserver) restart(n int, _ error) {
	o.mu.Lock()
	o.restarts = int64(n)
	o.mu.Unlock()
}

// backPressured is, per node, how long its subtasks waited for credits
// (for a cluster, the master's sums of the TaskManagers' reports).
func (o *jobObserver) backPressured() map[string]time.Duration {
	out := map[string]time.Duration{}
	for id, m := range o.nodes {
		out[id] = time.Duration(m.BackPressuredTotal())
	}
	return out
}

// handler serves /metrics.
func (o *jobObserver) handler() http.Handler {
	return promhttp.HandlerFor(o.reg, promhttp.HandlerOpts{Registry: o.reg})
}

// jobDescs are the master's metrics other than the histograms. Labels are
// bounded: job_name (a Prometheus target's own "job" label would clash),
// vertex, taskmanager; never a key or a value of the data.
type jobDescs struct {
	rowsIn, rowsOut, parallelism, backPressure *prometheus.Desc
	watermarkLag, bytesIn, bytesOut            *prometheus.Desc
	completed, failed, savepoints, restarts    *prometheus.Desc
	lastDuration, lastSize, lastAge, lastID    *prometheus.Desc
	lastAlignment                              *prometheus.Desc
	tmRegistered, tmLost, tmRTT, tmSlots       *prometheus.Desc
	subRowsIn, subRowsOut, subBytesIn          *prometheus.Desc
	subBytesOut, subBackPressure               *prometheus.Desc
}

func (d jobDescs) all() []*prometheus.Desc {
	return []*prometheus.Desc{d.rowsIn, d.rowsOut, d.parallelism, d.backPressure, d.watermarkLag, d.bytesIn, d.bytesOut, d.completed, d.failed, d.savepoints, d.restarts,
		d.lastDuration, d.lastSize, d.lastAge, d.lastID, d.lastAlignment, d.tmRegistered, d.tmLost, d.tmRTT, d.tmSlots,
		d.subRowsIn, d.subRowsOut, d.subBytesIn, d.subBytesOut, d.subBackPressure}
}

func newJobDescs(job prometheus.Labels) jobDescs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, job)
	}
	return jobDescs{
		rowsIn:      d("sluice_vertex_rows_in_total", "Rows a vertex took in, over its subtasks (over every TaskManager for a cluster).", "vertex"),
		rowsOut:     d("sluice_vertex_rows_out_total", "Rows a vertex emitted, over its subtasks (over every TaskManager for a cluster).", "vertex"),
		parallelism: d("sluice_vertex_parallelism", "A vertex's subtasks.", "vertex"),
		bytesIn: d("sluice_vertex_bytes_in_total",
			"Bytes a vertex received from other processes (the data plane's encoding; 0 in one process).", "vertex"),
		bytesOut: d("sluice_vertex_bytes_out_total",
			"Bytes a vertex sent to other processes (the data plane's encoding; 0 in one process).", "vertex"),
		watermarkLag: d("sluice_vertex_watermark_lag_seconds",
			"Wall-clock time minus the vertex's event-time watermark (the lowest of its subtasks): how far event time lags; absent before the first watermark.", "vertex"),
		backPressure: d("sluice_vertex_back_pressured_seconds_total", "Time a vertex's subtasks (summed) waited for credits to send downstream: its consumers were behind.", "vertex"),
		subRowsIn:    d("sluice_subtask_rows_in_total", "Rows a subtask took in (over every attempt and TaskManager that ran it).", "vertex", "subtask"),
		subRowsOut:   d("sluice_subtask_rows_out_total", "Rows a subtask emitted (over every attempt and TaskManager that ran it).", "vertex", "subtask"),
		subBytesIn:   d("sluice_subtask_bytes_in_total", "Bytes a subtask received from other processes (the data plane's encoding).", "vertex", "subtask"),
		subBytesOut:  d("sluice_subtask_bytes_out_total", "Bytes a subtask sent to other processes (the data plane's encoding).", "vertex", "subtask"),
		subBackPressure: d("sluice_subtask_back_pressured_seconds_total",
			"Time a subtask waited for credits to send downstream: its consumers were behind.", "vertex", "subtask"),
		completed:    d("sluice_checkpoints_completed_total", "Checkpoints completed (savepoints not included)."),
		savepoints:   d("sluice_savepoints_completed_total", "Savepoints completed."),
		failed:       d("sluice_checkpoints_failed_total", "Checkpoints and savepoints that failed (declined, expired, or not committed)."),
		restarts:     d("sluice_job_restarts_total", "Restarts of the job from its latest checkpoint."),
		lastDuration: d("sluice_checkpoint_last_duration_seconds", "The last completed checkpoint's duration, trigger to commit."),
		lastSize:     d("sluice_checkpoint_last_size_bytes", "Bytes the last completed checkpoint wrote."),
		lastAlignment: d("sluice_checkpoint_last_alignment_seconds",
			"The last completed checkpoint's alignment: the longest any task held its inputs from the first barrier to the last."),
		lastAge:      d("sluice_checkpoint_last_completed_age_seconds", "Seconds since the last checkpoint completed."),
		lastID:       d("sluice_checkpoint_last_id", "The last completed checkpoint's id."),
		tmRegistered: d("sluice_taskmanagers_registered", "TaskManagers registered with the job master."),
		tmLost:       d("sluice_taskmanagers_lost_total", "TaskManagers the job master lost (connection closed, heartbeat timeout, process ended)."),
		tmRTT:        d("sluice_taskmanager_heartbeat_rtt_seconds", "The last heartbeat round trip between the master and a TaskManager.", "taskmanager"),
		tmSlots:      d("sluice_taskmanager_slots", "A registered TaskManager's slots.", "taskmanager"),
	}
}

// jobCollector reads the observer's counters and the engine's atomics at
// scrape time: nothing is counted twice and the hot path pays nothing.
type jobCollector struct {
	o *jobObserver
	d jobDescs
	m measureDescs
}

func (c *jobCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append(c.d.all(), c.m.all()...) {
		ch <- d
	}
}

func (c *jobCollector) Collect(ch chan<- prometheus.Metric) {
	o, d := c.o, c.d
	bp := o.backPressured()
	for _, n := range o.g.Nodes {
		ch <- prometheus.MustNewConstMetric(d.parallelism, prometheus.GaugeValue, float64(n.Parallelism), n.ID)
		if m := o.nodes[n.ID]; m != nil {
			ch <- prometheus.MustNewConstMetric(d.rowsIn, prometheus.CounterValue, float64(m.RowsIn.Load()), n.ID)
			ch <- prometheus.MustNewConstMetric(d.rowsOut, prometheus.CounterValue, float64(m.RowsOut.Load()), n.ID)
			ch <- prometheus.MustNewConstMetric(d.bytesIn, prometheus.CounterValue, float64(m.BytesIn.Load()), n.ID)
			ch <- prometheus.MustNewConstMetric(d.bytesOut, prometheus.CounterValue, float64(m.BytesOutTotal()), n.ID)
			if wm, ok := m.Watermark(); ok {
				lag := time.Since(time.UnixMilli(wm)).Seconds()
				ch <- prometheus.MustNewConstMetric(d.watermarkLag, prometheus.GaugeValue, lag, n.ID)
			}
		}
		ch <- prometheus.MustNewConstMetric(d.backPressure, prometheus.CounterValue, bp[n.ID].Seconds(), n.ID)
		if m := o.nodes[n.ID]; m != nil {
			m.Subtasks(func(i int, c *runtime.SubtaskCounters) {
				sub := strconv.Itoa(i)
				ch <- prometheus.MustNewConstMetric(d.subRowsIn, prometheus.CounterValue, float64(c.RowsIn.Load()), n.ID, sub)
				ch <- prometheus.MustNewConstMetric(d.subRowsOut, prometheus.CounterValue, float64(c.RowsOut.Load()), n.ID, sub)
				ch <- prometheus.MustNewConstMetric(d.subBytesIn, prometheus.CounterValue, float64(c.BytesIn.Load()), n.ID, sub)
				ch <- prometheus.MustNewConstMetric(d.subBytesOut, prometheus.CounterValue, float64(c.BytesOut.Load()), n.ID, sub)
				ch <- prometheus.MustNewConstMetric(d.subBackPressure, prometheus.CounterValue, time.Duration(c.BackPressured.Load()).Seconds(), n.ID, sub)
			})
		}
	}
	c.collectMeasures(ch)
	o.mu.Lock()
	completed, savepoints, failed, restarts, last := o.completed, o.savepoints, o.failed, o.restarts, o.last
	o.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(d.completed, prometheus.CounterValue, float64(completed))
	ch <- prometheus.MustNewConstMetric(d.savepoints, prometheus.CounterValue, float64(savepoints))
	ch <- prometheus.MustNewConstMetric(d.failed, prometheus.CounterValue, float64(failed))
	ch <- prometheus.MustNewConstMetric(d.restarts, prometheus.CounterValue, float64(restarts))
	if last != nil {
		end := last.Triggered.Add(last.Duration)
		ch <- prometheus.MustNewConstMetric(d.lastDuration, prometheus.GaugeValue, last.Duration.Seconds())
		ch <- prometheus.MustNewConstMetric(d.lastSize, prometheus.GaugeValue, float64(last.Bytes))
		ch <- prometheus.MustNewConstMetric(d.lastAlignment, prometheus.GaugeValue, last.Alignment.Seconds())
		ch <- prometheus.MustNewConstMetric(d.lastAge, prometheus.GaugeValue, time.Since(end).Seconds())
		ch <- prometheus.MustNewConstMetric(d.lastID, prometheus.GaugeValue, float64(last.ID))
	}
	if o.master == nil {
		return
	}
	tms := o.master.TaskManagers()
	ch <- prometheus.MustNewConstMetric(d.tmRegistered, prometheus.GaugeValue, float64(len(tms)))
	ch <- prometheus.MustNewConstMetric(d.tmLost, prometheus.CounterValue, float64(o.master.Lost()))
	seen := map[string]bool{}
	for _, t := range tms {
		name := tmLabel(t)
		if seen[name] { // two registrations of one resource: keep both apart
			name = t.ID
		}
		seen[name] = true
		if t.HeartbeatRTT > 0 {
			ch <- prometheus.MustNewConstMetric(d.tmRTT, prometheus.GaugeValue, t.HeartbeatRTT.Seconds(), name)
		}
		ch <- prometheus.MustNewConstMetric(d.tmSlots, prometheus.GaugeValue, float64(t.Slots), name)
	}
}

// tmLabel names a TaskManager in metrics: its resource id, which the
// TaskManager's own /metrics uses too and which outlives a re-registration.
func tmLabel(t framework.TaskManagerStatus) string {
	if t.ResourceID != "" {
		return t.ResourceID
	}
	return t.ID
}
