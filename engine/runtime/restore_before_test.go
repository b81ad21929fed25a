package runtime_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// refusingSink's Open asks for a checkpoint older than any it is given at
// or above refuseFrom (as the Kafka sink does when a transaction it
// recorded was aborted), unless the loss is accepted. It records every
// Open and cancels the run once one succeeds.
type refusingSink struct {
	runtime.BaseOperator
	refuseFrom int64
	mu         sync.Mutex
	opens      []runtime.Restored
	cancel     func()
}

func (s *refusingSink) Open(ctx *runtime.Context, r *runtime.Restored) error {
	s.Ctx = ctx
	if r == nil {
		return nil
	}
	s.mu.Lock()
	s.opens = append(s.opens, runtime.Restored{CheckpointID: r.CheckpointID, AcceptLoss: r.AcceptLoss})
	s.mu.Unlock()
	if r.CheckpointID >= s.refuseFrom && !r.AcceptLoss {
		return &runtime.RestoreBeforeError{Before: r.CheckpointID, Reason: "test: transaction t-0-0 aborted"}
	}
	if s.cancel != nil {
		s.cancel()
	}
	return nil
}

func (s *refusingSink) Process(_ int, b *row.Batch) error { b.Release(); return nil }

// Snapshot writes an entry so that restores hand the sink a Restored.
func (s *refusingSink) Snapshot(int64) (runtime.Snapshot, error) {
	return runtime.SnapshotFunc(func(w runtime.StateWriter) error { w.AddOperatorState([]byte("x")); return nil }), nil
}

func refusingJob(t *testing.T, dir string, sink *refusingSink, retained int) (*runtime.Graph, runtime.Options) {
	t.Helper()
	g := &runtime.Graph{JobName: "refuse", MaxParallelism: 16, ExactlyOnce: true, Nodes: []*runtime.Node{
		{ID: "src", Type: "fake", Parallelism: 1, Schema: posSchema, NewSource: func() runtime.Source { return &fakeSource{} }},
		{ID: "out", Type: "refusing", Parallelism: 1, Inputs: []runtime.Edge{{From: "src", Partition: runtime.Forward}},
			NewOperator: func() runtime.Operator { return sink }},
	}}
	st, err := checkpoint.Open("file://"+dir, "")
	if err != nil {
		t.Fatal(err)
	}
	return g, runtime.Options{Storage: st, Interval: 20 * time.Millisecond, Timeout: time.Minute, Retained: retained,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// takeCheckpoints runs the job until it completed n checkpoints.
func takeCheckpoints(t *testing.T, g *runtime.Graph, opts runtime.Options, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if md, _, _ := opts.Storage.Latest(ctx); md != nil && md.CheckpointID >= int64(n) {
				cancel()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	_, _ = runtime.Run(ctx, g, opts)
	<-done
}

// TestRunRestoreBefore: a RestoreBeforeError from Open makes Run restore
// the newest older checkpoint (no restart attempt used); with none
// retained the job fails naming the checkpoint, unless lost output is
// accepted (Restored.AcceptLoss).
func TestRunRestoreBefore(t *testing.T) {
	dir := t.TempDir()
	sink := &refusingSink{refuseFrom: 1 << 62}
	g, opts := refusingJob(t, dir, sink, 3)
	takeCheckpoints(t, g, opts, 4)
	latest, _, err := opts.Storage.Latest(context.Background())
	if err != nil || latest == nil {
		t.Fatalf("latest: %v", err)
	}

	// The newest checkpoint is refused: the one before is restored.
	ctx, cancel := context.WithCancel(context.Background())
	sink.opens, sink.refuseFrom, sink.cancel = nil, latest.CheckpointID, cancel
	opts.Restore = "latest"
	res, err := runtime.Run(ctx, g, opts)
	cancel()
	if !errors.Is(err, context.Canceled) || res.Restarts != 0 || len(sink.opens) != 2 ||
		sink.opens[0].CheckpointID != latest.CheckpointID || sink.opens[1].CheckpointID != latest.CheckpointID-1 {
		t.Fatalf("run: %v, restarts %d, opens %+v; want checkpoint %d refused, then %d", err, res.Restarts, sink.opens, latest.CheckpointID, latest.CheckpointID-1)
	}

	// Every retained checkpoint is refused: the job fails, naming it.
	sink.opens, sink.refuseFrom, sink.cancel = nil, 0, nil
	_, err = runtime.Run(context.Background(), g, opts)
	if err == nil || !strings.Contains(err.Error(), "t-0-0") || !strings.Contains(err.Error(), "--accept-lost-transactions") {
		t.Fatalf("run: %v, want a failure naming the transaction and the option", err)
	}

	// Accepting the loss: the oldest retained checkpoint is opened with AcceptLoss.
	ctx, cancel = context.WithCancel(context.Background())
	sink.opens, sink.cancel = nil, cancel
	opts.AcceptLostTransactions = true
	_, err = runtime.Run(ctx, g, opts)
	cancel()
	last := sink.opens[len(sink.opens)-1]
	if !errors.Is(err, context.Canceled) || !last.AcceptLoss || last.CheckpointID != sink.opens[len(sink.opens)-2].CheckpointID {
		t.Fatalf("run: %v, opens %+v; want the oldest retained checkpoint opened again with AcceptLoss", err, sink.opens)
	}
}

// regionSink fails subtask 0 once, after checkpoints completed, and from
// then on refuses to restore any checkpoint from the last one it saw
// completed (as a Kafka sink whose transaction of that checkpoint the
// broker aborted). It records every restore and cancels the run once
// both subtasks restored an older checkpoint.
type regionSink struct {
	runtime.BaseOperator
	st *regionSinkState
}

type regionSinkState struct {
	mu         sync.Mutex
	opens      []regionOpen
	refuseFrom int64 // 0: not yet failed
	older      map[int]bool
	cancel     func()
}

type regionOpen struct {
	subtask    int
	checkpoint int64
	region     bool
	refused    bool
}

func (s *regionSink) Open(ctx *runtime.Context, r *runtime.Restored) error {
	s.Ctx = ctx
	if r == nil {
		return nil
	}
	st := s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	refused := st.refuseFrom > 0 && r.CheckpointID >= st.refuseFrom
	st.opens = append(st.opens, regionOpen{ctx.Subtask, r.CheckpointID, r.Region, refused})
	if refused {
		return &runtime.RestoreBeforeError{Before: r.CheckpointID, Reason: "test: the transaction of subtask 0 was aborted"}
	}
	if st.refuseFrom > 0 {
		st.older[ctx.Subtask] = true
		if len(st.older) == 2 {
			st.cancel()
		}
	}
	return nil
}

func (s *regionSink) Process(_ int, b *row.Batch) error {
	b.Release()
	st := s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if s.Ctx.Subtask == 0 && st.refuseFrom == 0 && s.Ctx.LastCompleted() >= 3 {
		st.refuseFrom = s.Ctx.LastCompleted()
		return errors.New("test: subtask 0 fails")
	}
	return nil
}

func (s *regionSink) Snapshot(int64) (runtime.Snapshot, error) {
	return runtime.SnapshotFunc(func(w runtime.StateWriter) error { w.AddOperatorState([]byte("x")); return nil }), nil
}

// TestRegionRestoreBefore: a region restart whose sink finds its
// pre-committed output lost (RestoreBeforeError: the broker aborted the
// transaction) cannot restore its region alone from an older checkpoint —
// the other regions went on past it — so the whole job restarts, from the
// newest checkpoint older than the lost one, and the sources replay.
func TestRegionRestoreBefore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st := &regionSinkState{older: map[int]bool{}, cancel: cancel}
	g := &runtime.Graph{JobName: "region-refuse", MaxParallelism: 16, ExactlyOnce: true, Nodes: []*runtime.Node{
		{ID: "src", Type: "fake", Parallelism: 2, Schema: posSchema, NewSource: func() runtime.Source { return &fakeSource{} }},
		{ID: "out", Type: "refusing", Parallelism: 2, Inputs: []runtime.Edge{{From: "src", Partition: runtime.Forward}},
			NewOperator: func() runtime.Operator { return &regionSink{st: st} }},
	}}
	storage, err := checkpoint.Open("file://"+t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	opts := runtime.Options{Storage: storage, Interval: 20 * time.Millisecond, Timeout: time.Minute, Retained: 5,
		Restart: runtime.FixedDelay{Attempts: 3, Delay: time.Millisecond},
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil))}
	res, err := runtime.Run(ctx, g, opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v (want it cancelled once both subtasks restored an older checkpoint)", err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	var regionRefused, wholeRefused bool
	for _, o := range st.opens {
		switch {
		case o.refused && o.region:
			regionRefused = true
		case o.refused:
			wholeRefused = true
		case o.region:
			t.Errorf("a region restore succeeded (%+v): it should have been refused", o)
		case o.checkpoint >= st.refuseFrom:
			t.Errorf("a restore of checkpoint %d, not older than the lost %d", o.checkpoint, st.refuseFrom)
		}
	}
	if !regionRefused || !wholeRefused || len(st.older) != 2 {
		t.Fatalf("opens %+v (refused from %d): want the region restore refused, then the whole job's, then both subtasks restored an older checkpoint", st.opens, st.refuseFrom)
	}
	if res.Restarts < 1 {
		t.Errorf("restarts = %d, want the whole job restarted", res.Restarts)
	}
}
