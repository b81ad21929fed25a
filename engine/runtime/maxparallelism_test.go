package runtime_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// countingOpen counts the Opens of a fakeSource.
type countingOpen struct {
	fakeSource
	opened *atomic.Int64
}

func (s *countingOpen) Open(ctx *runtime.Context, r *runtime.Restored) error {
	s.opened.Add(1)
	return s.fakeSource.Open(ctx, r)
}

// TestRestoreRefusesOtherMaxParallelism: key groups are hash mod
// maxParallelism, so state cannot be restored with another one (and a
// Kafka sink would fence other transactional ids). Like Flink, the runtime
// refuses such a restore before anything opens, naming both values and the
// checkpoint, without restarting.
func TestRestoreRefusesOtherMaxParallelism(t *testing.T) {
	dir := t.TempDir()
	var opened atomic.Int64
	graph := func(maxPar int) *runtime.Graph {
		return &runtime.Graph{JobName: "maxpar", MaxParallelism: maxPar, ExactlyOnce: true, Nodes: []*runtime.Node{
			{ID: "src", Type: "fake", Parallelism: 2, Schema: posSchema,
				NewSource: func() runtime.Source { return &countingOpen{opened: &opened} }},
			{ID: "sink", Type: "max", Parallelism: 2, Inputs: []runtime.Edge{{From: "src", Partition: runtime.Hash, KeyCols: []int{0}}},
				NewOperator: func() runtime.Operator { return &maxPos{max: map[int64]int64{}} }},
		}}
	}
	options := func(restore string) runtime.Options {
		st, err := checkpoint.Open("file://"+dir, "")
		if err != nil {
			t.Fatal(err)
		}
		return runtime.Options{Storage: st, Restore: restore, Interval: 20 * time.Millisecond, Timeout: time.Minute, Retained: 2,
			RestartAttempts: 3, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	}

	// A run with maxParallelism 16 that leaves checkpoints and a savepoint.
	opts := options("")
	sps := make(chan runtime.SavepointRequest)
	opts.Savepoints = sps
	done := make(chan error, 1)
	go func() {
		res, err := runtime.Run(context.Background(), graph(16), opts)
		if err == nil && res.Checkpoints == 0 {
			err = fmt.Errorf("no checkpoint before the stop")
		}
		done <- err
	}()
	eventually(t, "rows", func() bool { return opened.Load() == 2 })
	eventually(t, "a checkpoint", func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "chk-*", "_metadata"))
		return len(m) > 0
	})
	sp := requestSavepoint(t, sps, true)
	if sp.Err != nil {
		t.Fatal(sp.Err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	for _, restore := range []string{sp.Path, "latest"} {
		opened.Store(0)
		// The deadline only ends a run that wrongly goes on.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := runtime.Run(ctx, graph(8), options(restore))
		cancel()
		if err == nil {
			t.Fatalf("restore %s with maxParallelism 8: no error", restore)
		}
		msg := err.Error()
		for _, want := range []string{"maxParallelism 16", "maxParallelism 8", "file://" + dir} {
			if !strings.Contains(msg, want) {
				t.Errorf("restore %s: error %q does not name %q", restore, msg, want)
			}
		}
		if restore != "latest" && !strings.Contains(msg, sp.Path) {
			t.Errorf("error %q does not name the savepoint %s", msg, sp.Path)
		}
		if n := opened.Load(); n != 0 || res.Restarts != 0 {
			t.Errorf("restore %s: %d sources opened, %d restarts; want none", restore, n, res.Restarts)
		}
	}
}
