package runtime_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// TestOnCheckpoint: the driver reports every completed checkpoint with
// its size and every failed one with its error, savepoints included, in
// id order.
func TestOnCheckpoint(t *testing.T) {
	var rows atomic.Int64
	var failed atomic.Bool
	g := &runtime.Graph{JobName: "stats", MaxParallelism: 16, ExactlyOnce: true, Nodes: []*runtime.Node{
		{ID: "src", Type: "fake", Parallelism: 2, Schema: posSchema,
			NewSource: func() runtime.Source { return &fakeSource{} }},
		{ID: "count", Type: "flaky", Parallelism: 1, Inputs: []runtime.Edge{{From: "src", Partition: runtime.Rebalance}},
			NewOperator: func() runtime.Operator { return &flakySnapshot{rows: &rows, failed: &failed} }},
	}}
	st, err := checkpoint.Open("file://"+t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []runtime.CheckpointStats
	sps := make(chan runtime.SavepointRequest)
	opts := runtime.Options{Storage: st, Interval: 20 * time.Millisecond, Timeout: time.Minute, Retained: 2,
		Savepoints: sps, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnCheckpoint: func(s runtime.CheckpointStats) { mu.Lock(); got = append(got, s); mu.Unlock() }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := runtime.Run(ctx, g, opts)
		done <- err
	}()
	completed := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, s := range got {
			if s.State == "completed" {
				n++
			}
		}
		return n
	}
	eventually(t, "two checkpoints", func() bool { return completed() >= 2 })
	if r := requestSavepoint(t, sps, true); r.Err == nil {
		t.Fatal("the first stop-with-savepoint should fail (injected)")
	}
	r := requestSavepoint(t, sps, true)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var last int64
	var failedSP, savepoint bool
	for _, s := range got {
		if s.ID <= last {
			t.Errorf("checkpoint %d reported after %d", s.ID, last)
		}
		last = s.ID
		if s.Triggered.IsZero() || s.Duration <= 0 {
			t.Errorf("checkpoint %d: triggered %v, duration %v", s.ID, s.Triggered, s.Duration)
		}
		switch {
		case s.State == "failed":
			if !s.Savepoint || !strings.Contains(s.Error, "injected snapshot failure") || s.Bytes != 0 {
				t.Errorf("failed: %+v; want the savepoint with the injected error", s)
			}
			failedSP = true
		case s.State != "completed":
			t.Errorf("checkpoint %d: state %q", s.ID, s.State)
		case s.Bytes <= 0 || s.Path == "":
			// The sources' positions are operator state: never empty.
			t.Errorf("completed checkpoint %d: %d bytes at %q", s.ID, s.Bytes, s.Path)
		case s.Savepoint:
			if s.Path != r.Path {
				t.Errorf("savepoint path %q, the request answered %q", s.Path, r.Path)
			}
			savepoint = true
		}
	}
	if !failedSP || !savepoint {
		t.Fatalf("reports %+v: want a failed and a completed savepoint", got)
	}
}

// TestOnRestart: each restart is reported with its number and cause.
func TestOnRestart(t *testing.T) {
	j := newSkipJob(t, t.TempDir())
	j.opts.RestartAttempts = 1
	j.opts.RestartDelay = 10 * time.Millisecond
	restarts := make(chan error, 4)
	var n atomic.Int64
	j.opts.OnRestart = func(i int, cause error) { n.Store(int64(i)); restarts <- cause }
	j.fail.Store(true)
	stop := j.start(t)
	select {
	case cause := <-restarts:
		if n.Load() != 1 || cause == nil || !strings.Contains(cause.Error(), "injected failure") {
			t.Fatalf("restart %d, cause %v; want 1 and the injected failure", n.Load(), cause)
		}
	case <-time.After(time.Minute):
		t.Fatal("no restart reported")
	}
	eventually(t, "running again", func() bool { return j.status(t).State == "running" })
	if err := stop(); err == nil {
		t.Fatal("the run ended by itself")
	}
	if len(restarts) != 0 {
		t.Fatalf("%d more restarts reported", len(restarts))
	}
}
