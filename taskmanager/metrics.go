package taskmanager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluice-stream/sluice/engine/runtime"
	pb "github.com/sluice-stream/sluice/internal/controlpb"
)

// The TaskManager's /metrics (Config.Metrics): its own share of the job.
// Names differ from the master's job-wide sluice_vertex_* so that a sum
// over every scraped process does not count rows twice.
var (
	tmRowsIn = prometheus.NewDesc("sluice_taskmanager_vertex_rows_in_total",
		"Rows a vertex's subtasks on this TaskManager took in, over every attempt it ran.",
		[]string{"job_name", "vertex", "taskmanager"}, nil)
	tmRowsOut = prometheus.NewDesc("sluice_taskmanager_vertex_rows_out_total",
		"Rows a vertex's subtasks on this TaskManager emitted, over every attempt it ran.",
		[]string{"job_name", "vertex", "taskmanager"}, nil)
	tmBackPressure = prometheus.NewDesc("sluice_taskmanager_vertex_back_pressured_seconds_total",
		"Time a vertex's subtasks on this TaskManager (summed) waited for credits to send downstream, over every attempt it ran.",
		[]string{"job_name", "vertex", "taskmanager"}, nil)
	tmAttempts = prometheus.NewDesc("sluice_taskmanager_attempts_running",
		"Attempts of the job with tasks running on this TaskManager (0 or 1; 0 for an idle spare).",
		[]string{"taskmanager"}, nil)
	tmSlots = prometheus.NewDesc("sluice_taskmanager_slots", "This TaskManager's slots.",
		[]string{"taskmanager"}, nil)
	tmEpoch = prometheus.NewDesc("sluice_taskmanager_master_epoch",
		"The newest fencing epoch of a master this TaskManager registered with (0: none yet).",
		[]string{"taskmanager"}, nil)
)

// tmCollector reads the TaskManager's counters at scrape time.
type tmCollector struct{ tm *TaskManager }

func (c tmCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{tmRowsIn, tmRowsOut, tmBackPressure, tmAttempts, tmSlots, tmEpoch} {
		ch <- d
	}
}

func (c tmCollector) Collect(ch chan<- prometheus.Metric) {
	tm := c.tm
	id := tm.cfg.ResourceID
	tm.mu.Lock()
	g, metrics, attempts, epoch := tm.graph, tm.metrics, len(tm.hosts), tm.epoch
	tm.mu.Unlock()
	if g != nil {
		for _, n := range g.Nodes {
			if m := metrics[n.ID]; m != nil {
				ch <- prometheus.MustNewConstMetric(tmRowsIn, prometheus.CounterValue, float64(m.RowsIn.Load()), g.JobName, n.ID, id)
				ch <- prometheus.MustNewConstMetric(tmRowsOut, prometheus.CounterValue, float64(m.RowsOut.Load()), g.JobName, n.ID, id)
				ch <- prometheus.MustNewConstMetric(tmBackPressure, prometheus.CounterValue, time.Duration(m.BackPressuredTotal()).Seconds(), g.JobName, n.ID, id)
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(tmAttempts, prometheus.GaugeValue, float64(attempts), id)
	ch <- prometheus.MustNewConstMetric(tmSlots, prometheus.GaugeValue, float64(tm.cfg.Slots), id)
	ch <- prometheus.MustNewConstMetric(tmEpoch, prometheus.GaugeValue, float64(epoch), id)
}

// serveMetrics serves /metrics on cfg.Metrics until stop is called.
func (tm *TaskManager) serveMetrics(ctx context.Context) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(tmCollector{tm}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", tm.cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("taskmanager: --metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	tm.log.Info("metrics listening", "addr", "http://"+ln.Addr().String()+"/metrics")
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			tm.log.Error("metrics server stopped", "err", err)
		}
	}()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-served
	}, nil
}

// withMeasures adds what subtask counters c measured beyond rows and bytes
// on the wire to its report entry s: record sizes, keyed state, the
// source's partitions (the master's /metrics and GET /v1/kafka-lag).
func withMeasures(s *pb.SubtaskMetrics, c *runtime.SubtaskCounters) *pb.SubtaskMetrics {
	s.SourceRecords, s.SourceBytes = c.SourceRecords.Load(), c.SourceBytes.Load()
	s.SinkRecords, s.SinkBytes = c.SinkRecords.Load(), c.SinkBytes.Load()
	s.StateKeys, s.StateBytes = c.StateKeys.Load(), c.StateBytes.Load()
	for _, p := range c.SourcePartitions() {
		s.Partitions = append(s.Partitions, &pb.MetricsPartition{Cluster: int32(p.Cluster), Topic: p.Topic, Partition: p.Partition,
			Offset: p.Offset, HighWatermark: p.HighWatermark})
	}
	return s
}
