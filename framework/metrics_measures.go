package framework

import (
	"github.com/sluice-stream/sluice/engine/runtime"
)

// recordMeasures takes the TaskManagers' record sizes, keyed state and
// source partitions into the master's per-subtask counters (recordMetrics
// calls it, holding m.mu). Record counts and bytes are counters: summed
// over every report, a lost TaskManager's last one included, as rows are.
// State sizes and partitions are what runs now: only the registered
// TaskManagers' reports count (a TaskManager clears a subtask's once its
// task ended there).
func (m *Master) recordMeasures() {
	type key struct {
		node    string
		subtask int
	}
	type sums struct {
		srcRec, srcBytes, sinkRec, sinkBytes, keys, bytes int64
		parts                                             []runtime.SourcePartition
	}
	subs := map[key]*sums{}
	for tm, r := range m.reports {
		_, live := m.tms[tm]
		for _, s := range r.Subtasks {
			if s.Subtask < 0 {
				continue
			}
			k := key{s.Node, int(s.Subtask)}
			t := subs[k]
			if t == nil {
				t = &sums{}
				subs[k] = t
			}
			t.srcRec += s.SourceRecords
			t.srcBytes += s.SourceBytes
			t.sinkRec += s.SinkRecords
			t.sinkBytes += s.SinkBytes
			if !live {
				continue
			}
			t.keys += s.StateKeys
			t.bytes += s.StateBytes
			for _, p := range s.Partitions {
				t.parts = append(t.parts, runtime.SourcePartition{Cluster: int(p.Cluster), Topic: p.Topic, Partition: p.Partition,
					Offset: p.Offset, HighWatermark: p.HighWatermark})
			}
		}
	}
	for k, t := range subs {
		nm := m.metrics[k.node]
		if nm == nil {
			continue
		}
		c := nm.Subtask(k.subtask)
		c.SourceRecords.Store(t.srcRec)
		c.SourceBytes.Store(t.srcBytes)
		c.SinkRecords.Store(t.sinkRec)
		c.SinkBytes.Store(t.sinkBytes)
		c.StateKeys.Store(t.keys)
		c.StateBytes.Store(t.bytes)
		c.SetSourcePartitions(t.parts)
	}
}
