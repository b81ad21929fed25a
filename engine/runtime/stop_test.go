package runtime_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// flakySnapshot counts rows and fails the snapshot of its first savepoint.
type flakySnapshot struct {
	runtime.BaseOperator
	rows   *atomic.Int64
	failed *atomic.Bool
}

func (o *flakySnapshot) Process(_ int, b *row.Batch) error {
	o.rows.Add(int64(b.Len))
	b.Release()
	return nil
}

func (o *flakySnapshot) Snapshot(int64) (runtime.Snapshot, error) {
	if o.Ctx.InSavepoint() && o.failed.CompareAndSwap(false, true) {
		return nil, errors.New("injected snapshot failure")
	}
	return nil, nil
}

func requestSavepoint(t *testing.T, sps chan<- runtime.SavepointRequest, stop bool) runtime.SavepointResult {
	t.Helper()
	reply := make(chan runtime.SavepointResult, 1)
	select {
	case sps <- runtime.SavepointRequest{Stop: stop, Reply: reply}:
	case <-time.After(time.Minute):
		t.Fatal("the job did not take the savepoint request")
	}
	select {
	case r := <-reply:
		return r
	case <-time.After(time.Minute):
		t.Fatal("no answer to the savepoint request")
	}
	return runtime.SavepointResult{}
}

// TestFailedStopWithSavepointResumes: when the savepoint of a
// stop-with-savepoint fails, the reply carries the error, the sources
// resume (rows keep flowing, as in Flink the job keeps running) and a
// second stop still works.
func TestFailedStopWithSavepointResumes(t *testing.T) {
	var rows atomic.Int64
	var failed atomic.Bool
	g := &runtime.Graph{JobName: "stop", MaxParallelism: 16, ExactlyOnce: true, Nodes: []*runtime.Node{
		{ID: "src", Type: "fake", Parallelism: 2, Schema: posSchema,
			NewSource: func() runtime.Source { return &fakeSource{} }},
		{ID: "count", Type: "flaky", Parallelism: 1, Inputs: []runtime.Edge{{From: "src", Partition: runtime.Rebalance}},
			NewOperator: func() runtime.Operator { return &flakySnapshot{rows: &rows, failed: &failed} }},
	}}
	st, err := checkpoint.Open("file://"+t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	sps := make(chan runtime.SavepointRequest)
	opts := runtime.Options{Storage: st, Interval: 20 * time.Millisecond, Timeout: time.Minute, Retained: 2,
		Savepoints: sps, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type outcome struct {
		res *runtime.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := runtime.Run(ctx, g, opts)
		done <- outcome{res, err}
	}()
	eventually(t, "rows", func() bool { return rows.Load() > 0 })

	r := requestSavepoint(t, sps, true)
	if r.Err == nil || !strings.Contains(r.Err.Error(), "injected snapshot failure") {
		t.Fatalf("failed stop-with-savepoint answered %+v, want the snapshot's error", r)
	}
	after := rows.Load()
	eventuallyWithin(t, 10*time.Second, "rows after the failed stop", func() bool { return rows.Load() > after+1000 })

	r = requestSavepoint(t, sps, true)
	if r.Err != nil || r.Path == "" {
		t.Fatalf("second stop-with-savepoint: %+v", r)
	}
	select {
	case o := <-done:
		if o.err != nil || !o.res.Stopped || o.res.FailedCheckpoints != 1 {
			t.Fatalf("run ended with %v, stopped %v, failed checkpoints %d; want nil, true, 1", o.err, o.res.Stopped, o.res.FailedCheckpoints)
		}
	case <-time.After(time.Minute):
		t.Fatal("the job did not stop after its savepoint")
	}
}

// eventuallyWithin is eventually with a shorter deadline, for a condition
// that fails by never holding (a hang is the defect, not a slow machine).
func eventuallyWithin(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
