package main

import (
	"encoding/json"
	"sort"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
)

// The measurements an operator sizes a job with (issue #13): record sizes
// at the sources and sinks, keyed state per stateful vertex, the Kafka
// consumer lag per partition, and the spec's window and checkpoint
// settings, so that `sluice size --metrics URL` needs nothing but
// /metrics. In one process the tasks count into the observer's counters;
// for a cluster the master sums the TaskManagers' MetricsReports into them
// (framework/metrics_measures.go).

// measureDescs are those metrics.
type measureDescs struct {
	srcRecords, srcBytes, sinkRecords, sinkBytes  *prometheus.Desc
	stateKeys, stateBytes, subStateKeys, subState *prometheus.Desc
	lag, offset, highWatermark                    *prometheus.Desc
	windowSize, windowSlide, interval, incr       *prometheus.Desc
}

func (d measureDescs) all() []*prometheus.Desc {
	return []*prometheus.Desc{d.srcRecords, d.srcBytes, d.sinkRecords, d.sinkBytes, d.stateKeys, d.stateBytes, d.subStateKeys, d.subState,
		d.lag, d.offset, d.highWatermark, d.windowSize, d.windowSlide, d.interval, d.incr}
}

func newMeasureDescs(job prometheus.Labels) measureDescs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, job)
	}
	part := []string{"vertex", "subtask", "cluster", "topic", "partition"}
	return measureDescs{
		srcRecords: d("sluice_vertex_source_records_total", "Records a source vertex read (Kafka: messages, unparsable ones included).", "vertex"),
		srcBytes: d("sluice_vertex_source_bytes_total",
			"Bytes of the records a source vertex read: Kafka messages' key, value and headers; other sources' rows in the row codec's encoding (estimated from a sample of batches). Divided by sluice_vertex_source_records_total: the record size.", "vertex"),
		sinkRecords: d("sluice_vertex_sink_records_total", "Rows a sink vertex (one no vertex reads) took in (Kafka: messages produced).", "vertex"),
		sinkBytes: d("sluice_vertex_sink_bytes_total",
			"Bytes of the rows a sink vertex took in: Kafka messages' key and value; other sinks' rows in the row codec's encoding (estimated from a sample of batches).", "vertex"),
		stateKeys: d("sluice_vertex_state_keys",
			"Keyed state entries of a stateful vertex over its subtasks: a window's accumulators (one per key and pane, or per session).", "vertex"),
		stateBytes:   d("sluice_vertex_state_bytes", "Keyed state of a stateful vertex over its subtasks, in bytes (heap, or badger's files on disk).", "vertex"),
		subStateKeys: d("sluice_subtask_state_keys", "Keyed state entries of a stateful vertex's subtask (skew: compare the subtasks).", "vertex", "subtask"),
		subState:     d("sluice_subtask_state_bytes", "Keyed state of a stateful vertex's subtask, in bytes.", "vertex", "subtask"),
		lag: d("sluice_kafka_source_lag_records",
			"Kafka consumer lag of a source subtask in one partition: the partition's high watermark at the last fetch minus the offset the subtask reads next.", part...),
		offset:        d("sluice_kafka_source_offset", "The offset a Kafka source subtask reads next in a partition.", part...),
		highWatermark: d("sluice_kafka_source_high_watermark", "A partition's high watermark (log end offset of committed records) at a Kafka source subtask's last fetch.", part...),
		windowSize:    d("sluice_vertex_window_size_seconds", "A window vertex's size (its gap for session windows), from the job spec.", "vertex"),
		windowSlide:   d("sluice_vertex_window_slide_seconds", "A window vertex's slide (its size for tumbling and session windows), from the job spec.", "vertex"),
		interval:      d("sluice_checkpoint_interval_seconds", "The job spec's checkpoint interval (0: no periodic checkpoints)."),
		incr:          d("sluice_checkpoint_incremental", "1 when the job takes incremental checkpoints, else 0 (job spec)."),
	}
}

// jobShape is what the observer knows of the job's vertices and spec.
type jobShape struct {
	sources, sinks, stateful map[string]bool
	windows                  map[string][2]float64 // size, slide in seconds
	spec                     *spec.Job
}

// shapeOf finds g's sources, sinks (vertices no vertex reads) and stateful
// vertices (an operator that is a runtime.StateSizer).
func shapeOf(g *runtime.Graph) jobShape {
	s := jobShape{sources: map[string]bool{}, sinks: map[string]bool{}, stateful: map[string]bool{}, windows: map[string][2]float64{}}
	read := map[string]bool{}
	for _, n := range g.Nodes {
		for _, in := range n.Inputs {
			read[in.From] = true
		}
	}
	for _, n := range g.Nodes {
		switch {
		case n.NewSource != nil:
			s.sources[n.ID] = true
		case !read[n.ID]:
			s.sinks[n.ID] = true
		}
		if n.NewOperator != nil {
			if _, ok := n.NewOperator().(runtime.StateSizer); ok {
				s.stateful[n.ID] = true
			}
		}
	}
	return s
}

// setSpec takes the settings /metrics shows from the job's spec: windows'
// size and slide, the checkpoint interval and mode.
func (o *jobObserver) setSpec(j *spec.Job) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.shape.spec = j
	for _, n := range j.Nodes {
		if n.Type != "window" {
			continue
		}
		var p struct {
			Type             string
			Size, Slide, Gap spec.Duration
		}
		if json.Unmarshal(n.Params, &p) != nil {
			continue
		}
		size, slide := p.Size.D().Seconds(), p.Slide.D().Seconds()
		switch p.Type {
		case "session":
			size, slide = p.Gap.D().Seconds(), p.Gap.D().Seconds()
		case "sliding":
		default:
			slide = size
		}
		o.shape.windows[n.ID] = [2]float64{size, slide}
	}
}

func (c *jobCollector) collectMeasures(ch chan<- prometheus.Metric) {
	o, d := c.o, c.m
	o.mu.Lock()
	sh := o.shape
	o.mu.Unlock()
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	for _, n := range o.g.Nodes {
		m := o.nodes[n.ID]
		if m == nil {
			continue
		}
		var srcRec, srcBytes, sinkRec, sinkBytes, keys, bytes int64
		m.Subtasks(func(i int, c *runtime.SubtaskCounters) {
			srcRec += c.SourceRecords.Load()
			srcBytes += c.SourceBytes.Load()
			sinkRec += c.SinkRecords.Load()
			sinkBytes += c.SinkBytes.Load()
			k, b := c.StateKeys.Load(), c.StateBytes.Load()
			keys += k
			bytes += b
			if sh.stateful[n.ID] {
				sub := strconv.Itoa(i)
				gauge(d.subStateKeys, float64(k), n.ID, sub)
				gauge(d.subState, float64(b), n.ID, sub)
			}
			for _, p := range c.SourcePartitions() {
				l := []string{n.ID, strconv.Itoa(i), strconv.Itoa(p.Cluster), p.Topic, strconv.Itoa(int(p.Partition))}
				gauge(d.lag, float64(p.Lag()), l...)
				gauge(d.offset, float64(p.Offset), l...)
				gauge(d.highWatermark, float64(p.HighWatermark), l...)
			}
		})
		if sh.sources[n.ID] {
			counter(d.srcRecords, srcRec, n.ID)
			counter(d.srcBytes, srcBytes, n.ID)
		}
		if sh.sinks[n.ID] {
			counter(d.sinkRecords, sinkRec, n.ID)
			counter(d.sinkBytes, sinkBytes, n.ID)
		}
		if sh.stateful[n.ID] {
			gauge(d.stateKeys, float64(keys), n.ID)
			gauge(d.stateBytes, float64(bytes), n.ID)
		}
		if w, ok := sh.windows[n.ID]; ok {
			gauge(d.windowSize, w[0], n.ID)
			gauge(d.windowSlide, w[1], n.ID)
		}
	}
	if j := sh.spec; j != nil {
		gauge(d.interval, j.Checkpoint.Interval.D().Seconds())
		incr := 0.0
		if j.Checkpoint.Incremental {
			incr = 1
		}
		gauge(d.incr, incr)
	}
}

// kafkaLag is GET /v1/kafka-lag's answer.
type kafkaLag struct {
	Partitions []kafkaLagPartition `json:"partitions"`
}

type kafkaLagPartition struct {
	Vertex  string `json:"vertex"`
	Subtask int    `json:"subtask"`
	runtime.SourcePartition
	Lag int64 `json:"lag"`
}

// kafkaLag lists every source subtask's partitions, in order.
func (o *jobObserver) kafkaLag() kafkaLag {
	out := kafkaLag{Partitions: []kafkaLagPartition{}}
	order := map[string]int{}
	for i, n := range o.g.Nodes {
		order[n.ID] = i
		m := o.nodes[n.ID]
		if m == nil || n.NewSource == nil {
			continue
		}
		m.Subtasks(func(i int, c *runtime.SubtaskCounters) {
			for _, p := range c.SourcePartitions() {
				out.Partitions = append(out.Partitions, kafkaLagPartition{Vertex: n.ID, Subtask: i, SourcePartition: p, Lag: p.Lag()})
			}
		})
	}
	sort.Slice(out.Partitions, func(a, b int) bool {
		x, y := out.Partitions[a], out.Partitions[b]
		if x.Vertex != y.Vertex {
			return order[x.Vertex] < order[y.Vertex] // the graph's order
		}
		if x.Cluster != y.Cluster {
			return x.Cluster < y.Cluster
		}
		if x.Topic != y.Topic {
			return x.Topic < y.Topic
		}
		if x.Partition != y.Partition {
			return x.Partition < y.Partition
		}
		return x.Subtask < y.Subtask
	})
	return out
}
