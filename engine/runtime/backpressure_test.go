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

// slowOp takes its time over each batch.
type slowOp struct{ runtime.BaseOperator }

func (o *slowOp) Process(_ int, b *row.Batch) error {
	time.Sleep(5 * time.Millisecond)
	b.Release()
	return nil
}

// TestBackPressuredCounted: a source feeding a slower operator waits for
// credits, and that wait is counted on the source's node; the operator,
// which sends nothing, counts none.
func TestBackPressuredCounted(t *testing.T) {
	g := &runtime.Graph{JobName: "bp", MaxParallelism: 16, ExactlyOnce: true, Nodes: []*runtime.Node{
		{ID: "src", Type: "fake", Parallelism: 1, Schema: posSchema,
			NewSource: func() runtime.Source { return &fakeSource{} }},
		{ID: "slow", Type: "slow", Parallelism: 1, Inputs: []runtime.Edge{{From: "src", Partition: runtime.Rebalance}},
			NewOperator: func() runtime.Operator { return &slowOp{} }},
	}}
	st, err := checkpoint.Open("file://"+t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	metrics := map[string]*runtime.NodeMetrics{"src": {}, "slow": {}}
	opts := runtime.Options{Storage: st, Metrics: metrics, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := runtime.Run(ctx, g, opts)
		done <- err
	}()
	eventually(t, "the source back-pressured", func() bool { return metrics["src"].BackPressuredTotal() > 0 })
	cancel()
	<-done
	if w := metrics["slow"].BackPressuredTotal(); w != 0 {
		t.Fatalf("the operator, which sends nothing, was back-pressured %v", time.Duration(w))
	}
}
