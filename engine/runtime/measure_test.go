package runtime_test

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// sizedOp is a stateful pass-through: its "state" is the rows it saw, 10
// bytes each. It notes when the runtime has published what StateSize last
// said into its subtask's counters.
type sizedOp struct {
	runtime.BaseOperator
	rows      int64
	asked     int64 // keys StateSize last returned
	published *atomic.Bool
}

func (o *sizedOp) Process(_ int, b *row.Batch) error {
	o.check()
	o.rows += int64(b.Len)
	o.Ctx.Out.Collect(b)
	return nil
}

// CheckpointComplete comes after the snapshot, after which the runtime
// asks StateSize (the final checkpoint's too: the check does not hang on
// timing).
func (o *sizedOp) CheckpointComplete(int64) error {
	o.check()
	return nil
}

func (o *sizedOp) check() {
	if o.asked > 0 && o.Ctx.Counters.StateKeys.Load() == o.asked && o.Ctx.Counters.StateBytes.Load() == 10*o.asked {
		o.published.Store(true)
	}
}

func (o *sizedOp) StateSize() (int, int64) {
	o.asked = o.rows
	return int(o.rows), 10 * o.rows
}

// TestMeasures: a job in one process counts its source's records and
// their encoded size, its sink's rows, and a StateSizer's state in the
// subtasks' counters; the state is cleared once the tasks ended.
func TestMeasures(t *testing.T) {
	const perSource = 2048
	var published atomic.Bool
	g := &runtime.Graph{JobName: "measures", MaxParallelism: 16, ExactlyOnce: true, Nodes: []*runtime.Node{
		{ID: "src", Type: "fake", Parallelism: 2, Schema: posSchema,
			NewSource: func() runtime.Source { return &boundedSource{limit: perSource} }},
		{ID: "st", Type: "sized", Parallelism: 2, Schema: posSchema, Inputs: []runtime.Edge{{From: "src", Partition: runtime.Rebalance}},
			NewOperator: func() runtime.Operator { return &sizedOp{published: &published} }},
		{ID: "sink", Type: "life", Parallelism: 1, Schema: posSchema, Inputs: []runtime.Edge{{From: "st", Partition: runtime.Rebalance}},
			NewOperator: func() runtime.Operator { return &lifeOp{log: &lifeLog{}} }},
	}}
	st, err := checkpoint.Open("file://"+t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang, not a timing
	defer cancel()
	res, err := runtime.Run(ctx, g, runtime.Options{Storage: st, Interval: 20 * time.Millisecond, Timeout: time.Minute,
		Retained: 2, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	sum := func(node string, f func(c *runtime.SubtaskCounters) int64) (v int64) {
		res.Metrics[node].Subtasks(func(_ int, c *runtime.SubtaskCounters) { v += f(c) })
		return v
	}
	srcRecs := sum("src", func(c *runtime.SubtaskCounters) int64 { return c.SourceRecords.Load() })
	srcBytes := sum("src", func(c *runtime.SubtaskCounters) int64 { return c.SourceBytes.Load() })
	// pos takes 1 or 2 bytes as a varint (< 8192), sub 1: 2 to 3 per row.
	if srcRecs != 2*perSource || srcBytes < 2*srcRecs || srcBytes > 3*srcRecs {
		t.Errorf("source: %d records, %d bytes; want %d records of 2 to 3 bytes", srcRecs, srcBytes, 2*perSource)
	}
	if n := sum("sink", func(c *runtime.SubtaskCounters) int64 { return c.SinkRecords.Load() }); n != 2*perSource {
		t.Errorf("sink: %d records, want %d", n, 2*perSource)
	}
	if b := sum("sink", func(c *runtime.SubtaskCounters) int64 { return c.SinkBytes.Load() }); b < 2*srcRecs || b > 3*srcRecs {
		t.Errorf("sink: %d bytes", b)
	}
	if n := sum("st", func(c *runtime.SubtaskCounters) int64 { return c.SinkRecords.Load() + c.SourceRecords.Load() }); n != 0 {
		t.Errorf("st is neither a source nor a sink, but counted %d records", n)
	}
	if !published.Load() {
		t.Error("the StateSizer's figures never reached the subtask's counters")
	}
	if k := sum("st", func(c *runtime.SubtaskCounters) int64 { return c.StateKeys.Load() + c.StateBytes.Load() }); k != 0 {
		t.Errorf("state %d after the tasks ended, want 0", k)
	}
}
