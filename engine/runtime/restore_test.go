package runtime_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// emptySource ends at once.
type emptySource struct{}

func (emptySource) Open(*runtime.Context, *runtime.Restored) error { return nil }
func (emptySource) Poll() (bool, error)                            { return true, nil }
func (emptySource) Watermark() (int64, bool)                       { return runtime.MaxWatermark, false }
func (emptySource) Snapshot(int64) (runtime.Snapshot, error)       { return nil, nil }
func (emptySource) CheckpointComplete(int64) error                 { return nil }
func (emptySource) Close() error                                   { return nil }

// rendezvous holds every subtask in Open until all `want` of them are in
// Open at once: it fails when subtasks open one after another.
type rendezvous struct {
	mu      sync.Mutex
	in      int
	want    int
	all     chan struct{}
	restore map[int][]int // subtask → key groups restored
}

func (r *rendezvous) arrive() error {
	r.mu.Lock()
	r.in++
	if r.in == r.want {
		close(r.all)
	}
	r.mu.Unlock()
	select {
	case <-r.all:
		return nil
	case <-time.After(20 * time.Second):
		return errors.New("the other subtasks did not open meanwhile: subtasks open one after another")
	}
}

// keyedOp has 2 KiB of state per key group of its range and checks what it
// restores.
type keyedOp struct {
	runtime.BaseOperator
	rv *rendezvous
}

func kgState(kg int) []byte { return bytes.Repeat([]byte{byte(kg)}, 2048) }

func (o *keyedOp) Open(ctx *runtime.Context, r *runtime.Restored) error {
	o.Ctx = ctx
	if r != nil && r.Keyed != nil {
		err := r.Keyed(func(s runtime.KeyedState) error {
			b, err := io.ReadAll(s.R)
			if err != nil {
				return err
			}
			if !ctx.KeyGroups.Contains(s.KeyGroup) || !bytes.Equal(b, kgState(s.KeyGroup)) {
				return errors.New("restored the wrong state")
			}
			o.rv.mu.Lock()
			o.rv.restore[ctx.Subtask] = append(o.rv.restore[ctx.Subtask], s.KeyGroup)
			o.rv.mu.Unlock()
			return nil
		})
		if err != nil {
			return err
		}
	}
	return o.rv.arrive()
}

func (o *keyedOp) Process(int, *row.Batch) error { return nil }

func (o *keyedOp) Snapshot(int64) (runtime.Snapshot, error) {
	kgs := o.Ctx.KeyGroups
	return runtime.SnapshotFunc(func(w runtime.StateWriter) error {
		for kg := kgs.Start; kg < kgs.End; kg++ {
			w.AddKeyGroup(kg, kgState(kg))
		}
		return nil
	}), nil
}

// TestRestoreOpensSubtasksConcurrently: the subtasks of a job open (and
// restore their own key groups) at the same time, on their own goroutines,
// fresh and when restoring with another parallelism.
func TestRestoreOpensSubtasksConcurrently(t *testing.T) {
	dir := t.TempDir()
	st, err := checkpoint.Open("file://"+filepath.ToSlash(dir), "")
	if err != nil {
		t.Fatal(err)
	}
	schema := row.MustSchema(row.Field{Name: "k", Type: row.Int64})
	run := func(par int, restore string) *rendezvous {
		rv := &rendezvous{want: par, all: make(chan struct{}), restore: map[int][]int{}}
		g := &runtime.Graph{JobName: "concurrent", MaxParallelism: 32, ExactlyOnce: true, Nodes: []*runtime.Node{
			{ID: "src", Parallelism: par, Schema: schema, NewSource: func() runtime.Source { return emptySource{} }},
			{ID: "op", Parallelism: par, Schema: schema, Inputs: []runtime.Edge{{From: "src", Partition: runtime.Rebalance}},
				NewOperator: func() runtime.Operator { return &keyedOp{rv: rv} }},
		}}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := runtime.Run(ctx, g, runtime.Options{Storage: st, Restore: restore, RestoreConcurrency: par,
			Interval: time.Hour, LocalStateDir: t.TempDir(), Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("parallelism %d, restore %q: %v", par, restore, err)
		}
		return rv
	}
	run(3, "")
	rv := run(4, "latest")
	for sub := range 4 {
		if n := len(rv.restore[sub]); n != 8 {
			t.Errorf("subtask %d restored %d key groups, want 8", sub, n)
		}
	}
}
