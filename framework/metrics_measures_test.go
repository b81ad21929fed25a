package framework

import (
	"testing"

	"github.com/sluice-stream/sluice/engine/runtime"
	pb "github.com/sluice-stream/sluice/internal/controlpb"
)

// TestRecordMeasures: the master sums the TaskManagers' record counts over
// every report (a lost TaskManager's last one too, as rows) and takes the
// state size and the partitions from the registered TaskManagers only.
func TestRecordMeasures(t *testing.T) {
	m := &Master{metrics: map[string]*runtime.NodeMetrics{"src": {}, "win": {}}, reports: map[string]*pb.MetricsReport{},
		tms: map[string]*tmConn{"tm-2": {id: "tm-2"}}}
	part := func(p int32, off, hw int64) *pb.MetricsPartition {
		return &pb.MetricsPartition{Topic: "in", Partition: p, Offset: off, HighWatermark: hw}
	}
	// tm-1 ran subtask 0 and was lost; tm-2 runs it now.
	m.recordMetrics("tm-1", &pb.MetricsReport{Subtasks: []*pb.SubtaskMetrics{
		{Node: "src", Subtask: 0, SourceRecords: 100, SourceBytes: 1000, Partitions: []*pb.MetricsPartition{part(0, 50, 90)}},
		{Node: "win", Subtask: 0, StateKeys: 7, StateBytes: 70, SinkRecords: 3, SinkBytes: 30},
	}})
	m.recordMetrics("tm-2", &pb.MetricsReport{Subtasks: []*pb.SubtaskMetrics{
		{Node: "src", Subtask: 0, SourceRecords: 20, SourceBytes: 200, Partitions: []*pb.MetricsPartition{part(0, 70, 95)}},
		{Node: "win", Subtask: 0, StateKeys: 5, StateBytes: 50, SinkRecords: 1, SinkBytes: 10},
		{Node: "win", Subtask: -1, StateKeys: 99}, // a node's total line: not a subtask's
	}})
	src, win := m.metrics["src"].Subtask(0), m.metrics["win"].Subtask(0)
	if src.SourceRecords.Load() != 120 || src.SourceBytes.Load() != 1200 || win.SinkRecords.Load() != 4 || win.SinkBytes.Load() != 40 {
		t.Errorf("counters: source %d/%d, sink %d/%d; want 120/1200, 4/40", src.SourceRecords.Load(), src.SourceBytes.Load(), win.SinkRecords.Load(), win.SinkBytes.Load())
	}
	if win.StateKeys.Load() != 5 || win.StateBytes.Load() != 50 {
		t.Errorf("state %d keys, %d bytes; want the registered TaskManager's 5, 50", win.StateKeys.Load(), win.StateBytes.Load())
	}
	ps := src.SourcePartitions()
	if len(ps) != 1 || ps[0].Offset != 70 || ps[0].HighWatermark != 95 || ps[0].Lag() != 25 || ps[0].Topic != "in" {
		t.Errorf("partitions %+v; want tm-2's in/0 at 70 of 95", ps)
	}
}
