package runtime_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// counter is an operator with state: the rows it has seen.
type counter struct {
	runtime.BaseOperator
	n int64
}

func (c *counter) Process(_ int, b *row.Batch) error {
	c.n += int64(b.Len)
	b.Release()
	return nil
}

func (c *counter) Snapshot(int64) (runtime.Snapshot, error) {
	n := c.n // Write runs on the uploader goroutine
	return runtime.SnapshotFunc(func(w runtime.StateWriter) error { w.AddOperatorState([]byte{byte(n)}); return nil }), nil
}

// drop is a stateless operator.
type drop struct{ runtime.BaseOperator }

func (drop) Process(_ int, b *row.Batch) error { b.Release(); return nil }

// TestPausesCountOperatorStateOnly: the pause summary holds one sample per
// checkpoint of the one task with operator state, not the sources' nor the
// stateless task's no-op snapshots (which were two thirds of the samples).
func TestPausesCountOperatorStateOnly(t *testing.T) {
	st, err := checkpoint.Open("file://"+t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	g := &runtime.Graph{JobName: "pauses", MaxParallelism: 16, Nodes: []*runtime.Node{
		{ID: "src", Type: "fake", Parallelism: 2, Schema: posSchema,
			NewSource: func() runtime.Source { return &boundedSource{limit: 16 * 150} }},
		{ID: "count", Type: "count", Parallelism: 1, Schema: posSchema,
			Inputs:      []runtime.Edge{{From: "src", Partition: runtime.Rebalance}},
			NewOperator: func() runtime.Operator { return &counter{} }},
		{ID: "drop", Type: "drop", Parallelism: 1, Schema: posSchema,
			Inputs:      []runtime.Edge{{From: "src", Partition: runtime.Rebalance}},
			NewOperator: func() runtime.Operator { return &drop{} }},
	}}
	opts := runtime.Options{Storage: st, Interval: 10 * time.Millisecond, Timeout: time.Minute, Retained: 2,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	res, err := runtime.Run(context.Background(), g, opts)
	if err != nil {
		t.Fatal(err)
	}
	p := res.Pauses
	if res.Checkpoints == 0 {
		t.Fatal("no checkpoint completed")
	}
	// Every completed checkpoint paused the counter once; a failed one may
	// or may not have reached it.
	if p.N < res.Checkpoints || p.N > res.Checkpoints+res.FailedCheckpoints {
		t.Errorf("%d pauses summarised for %d checkpoints (%d failed): want one per checkpoint of the stateful task",
			p.N, res.Checkpoints, res.FailedCheckpoints)
	}
	if p.Other < 3*res.Checkpoints {
		t.Errorf("%d pauses of sources and stateless tasks left out, want at least 3 per completed checkpoint (%d)", p.Other, res.Checkpoints)
	}
	if p.Max < p.P99 || p.P99 < p.P50 {
		t.Errorf("inconsistent summary %+v", p)
	}
}
