package runtime_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// gate holds a snapshot's Write (or a restore) after its first key group
// until the test has seen it halfway, so that "in progress" is observed
// without timing anything.
type gate struct {
	once    sync.Once
	reached chan struct{} // closed when a subtask is halfway
	open    chan struct{} // closed by the test
}

func newGate() *gate { return &gate{reached: make(chan struct{}), open: make(chan struct{})} }

func (g *gate) halfway() {
	g.once.Do(func() { close(g.reached) })
	<-g.open
}

const progressKG = 32 << 10 // bytes of state per key group

func progressState(kg int) []byte { return bytes.Repeat([]byte{byte(kg)}, progressKG) }

// bigState has 32 KiB of keyed state per key group. Its snapshot knows its
// size (a SizedSnapshot) when sized, and waits at snapGate after its first
// key group; its Open waits at openGate after the first key group restored.
type bigState struct {
	runtime.BaseOperator
	sized              bool
	snapGate, openGate *gate
	restored           *sync.Map // subtask → bytes restored
}

func (o *bigState) Open(ctx *runtime.Context, r *runtime.Restored) error {
	o.Ctx = ctx
	if r == nil || r.Keyed == nil {
		return nil
	}
	first := true
	var n int64
	err := r.Keyed(func(s runtime.KeyedState) error {
		b, err := io.ReadAll(s.R)
		n += int64(len(b))
		if first && o.openGate != nil {
			first = false
			o.openGate.halfway()
		}
		return err
	})
	o.restored.Store(ctx.Subtask, n)
	return err
}

func (o *bigState) Process(_ int, b *row.Batch) error { b.Release(); return nil }

type sizedSnapshot struct {
	runtime.SnapshotFunc
	size int64
}

func (s sizedSnapshot) SnapshotSize() int64 { return s.size }

func (o *bigState) Snapshot(int64) (runtime.Snapshot, error) {
	kgs, g, sp := o.Ctx.KeyGroups, o.snapGate, o.Ctx.InSavepoint()
	f := runtime.SnapshotFunc(func(w runtime.StateWriter) error {
		for kg := kgs.Start; kg < kgs.End; kg++ {
			if _, err := w.(runtime.KeyGroupWriter).KeyGroup(kg).Write(progressState(kg)); err != nil {
				return err
			}
			if kg == kgs.Start && g != nil && sp {
				g.halfway()
			}
		}
		return nil
	})
	if o.sized {
		return sizedSnapshot{f, int64(kgs.End-kgs.Start) * progressKG}, nil
	}
	return f, nil
}

func progressOp(p *runtime.Progress, kind string) (runtime.ProgressOperation, bool) {
	for _, o := range p.Operations() {
		if o.Kind == kind {
			return o, true
		}
	}
	return runtime.ProgressOperation{}, false
}

// TestSavepointAndRestoreProgress: a savepoint reports its bytes and files
// as they are written, rising, and ends done with bytes == total; a restore
// of it reports the bytes read of the sections' sizes and ends the same.
func TestSavepointAndRestoreProgress(t *testing.T) {
	st, err := checkpoint.Open("file://"+t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	restored := &sync.Map{}
	graph := func(op *bigState) *runtime.Graph {
		return &runtime.Graph{JobName: "progress", MaxParallelism: 8, ExactlyOnce: true, Nodes: []*runtime.Node{
			{ID: "src", Type: "fake", Parallelism: 1, Schema: posSchema, NewSource: func() runtime.Source { return &fakeSource{} }},
			{ID: "w", Type: "big", Parallelism: 2, Inputs: []runtime.Edge{{From: "src", Partition: runtime.Rebalance}},
				NewOperator: func() runtime.Operator { c := *op; return &c }},
		}}
	}
	log := slog.New(slog.DiscardHandler)

	// The savepoint.
	snap := newGate()
	p := runtime.NewProgress()
	sps := make(chan runtime.SavepointRequest)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ended := make(chan error, 1)
	go func() {
		_, err := runtime.Run(ctx, graph(&bigState{sized: true, snapGate: snap, restored: restored}),
			runtime.Options{Storage: st, Interval: time.Hour, Savepoints: sps, Progress: p, LocalStateDir: t.TempDir(), Log: log})
		ended <- err
	}()
	result := make(chan runtime.SavepointResult, 1)
	go func() {
		reply := make(chan runtime.SavepointResult, 1)
		sps <- runtime.SavepointRequest{Stop: true, Reply: reply}
		result <- <-reply
	}()
	select {
	case <-snap.reached:
	case <-time.After(time.Minute):
		t.Fatal("the savepoint's snapshot did not start")
	}
	var seen []int64
	eventually(t, "the savepoint's progress halfway", func() bool {
		o, ok := progressOp(p, runtime.ProgressSavepoint)
		if ok {
			seen = append(seen, o.BytesDone)
		}
		w := 0
		for _, s := range o.Subtasks {
			if s.Vertex == "w" && s.BytesDone > 0 {
				w++
			}
		}
		// Both of w's subtasks wait halfway: their counts stay.
		return ok && w == 2 && o.State == runtime.ProgressRunning && o.BytesDone < o.BytesTotal && o.FilesDone < o.FilesTotal
	})
	mid, _ := progressOp(p, runtime.ProgressSavepoint)
	if mid.ID == "" || mid.BytesTotal < 8*progressKG {
		t.Errorf("the savepoint halfway: %+v; want every subtask of w with the sized snapshots' totals", mid)
	}
	close(snap.open)
	r := <-result
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if err := <-ended; err != nil {
		t.Fatal(err)
	}
	done, _ := progressOp(p, runtime.ProgressSavepoint)
	seen = append(seen, done.BytesDone)
	for i := 1; i < len(seen); i++ {
		if seen[i] < seen[i-1] {
			t.Errorf("the savepoint's bytes went down: %v", seen)
		}
	}
	if done.State != runtime.ProgressDone || done.BytesDone != done.BytesTotal || done.FilesDone != done.FilesTotal || done.EtaMs != 0 {
		t.Errorf("the savepoint ended with %+v; want done, bytes == total, files == total, eta 0", done)
	}
	if done.BytesDone < 8*progressKG || done.FilesDone != 3 {
		t.Errorf("the savepoint wrote %d bytes in %d files; want at least %d bytes (w's key groups) in 3 files (src, w#0, w#1)", done.BytesDone, done.FilesDone, 8*progressKG)
	}

	// The restore, at another parallelism.
	open := newGate()
	p2 := runtime.NewProgress()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	ran := make(chan error, 1)
	g2 := graph(&bigState{openGate: open, restored: restored})
	g2.Nodes[1].Parallelism = 3
	go func() {
		_, err := runtime.Run(ctx2, g2, runtime.Options{Storage: st, Restore: r.Path, Interval: time.Hour, Progress: p2,
			LocalStateDir: t.TempDir(), Log: log})
		ran <- err
	}()
	select {
	case <-open.reached:
	case err := <-ran:
		t.Fatalf("the restored run ended: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the restore did not start")
	}
	var half runtime.ProgressOperation
	eventually(t, "the restore's progress halfway", func() bool {
		o, ok := progressOp(p2, runtime.ProgressRestore)
		half = o
		return ok && o.State == runtime.ProgressRunning && o.BytesDone > 0 && o.BytesDone < o.BytesTotal
	})
	close(open.open)
	eventually(t, "the restore done", func() bool {
		o, ok := progressOp(p2, runtime.ProgressRestore)
		return ok && o.State == runtime.ProgressDone
	})
	rs, _ := progressOp(p2, runtime.ProgressRestore)
	var read int64
	restored.Range(func(_, v any) bool { read += v.(int64); return true })
	if rs.BytesDone != rs.BytesTotal || rs.FilesDone != rs.FilesTotal || rs.BytesDone < read || read != 8*progressKG {
		t.Errorf("the restore ended with %+v (operators read %d bytes); want bytes == total ≥ %d, files == total", rs, read, 8*progressKG)
	}
	if half.BytesTotal != rs.BytesTotal || half.FilesTotal != rs.FilesTotal {
		t.Errorf("the restore's totals halfway (%d bytes, %d files) are not its totals at the end (%d, %d): the metadata tells them up front",
			half.BytesTotal, half.FilesTotal, rs.BytesTotal, rs.FilesTotal)
	}
	cancel2()
	<-ran
}

func TestETA(t *testing.T) {
	for _, c := range []struct {
		elapsed     time.Duration
		done, total int64
		want        int64
	}{
		{time.Second, 0, 100, -1},
		{time.Second, 10, 0, -1},
		{time.Second, 25, 100, 3000},
		{2 * time.Second, 100, 100, 0},
		{time.Second, 150, 100, 0},
	} {
		if got := runtime.ETA(c.elapsed, c.done, c.total); got != c.want {
			t.Errorf("ETA(%v, %d, %d) = %d, want %d", c.elapsed, c.done, c.total, got, c.want)
		}
	}
}

// TestProgressMerge: a TaskManager's reports carry only what changed, and
// the master's view takes them; an operation the driver ended keeps what
// it ended with.
func TestProgressMerge(t *testing.T) {
	tm, master := runtime.NewProgress(), runtime.NewProgress()
	master.Begin(runtime.SavepointOp(4), runtime.ProgressSavepoint)
	master.Estimate(runtime.SavepointOp(4), runtime.ProgressSavepoint, "w", 0, 1000, 1)
	tm.Merge([]runtime.ProgressEntry{{Op: "sp-4", Kind: runtime.ProgressSavepoint, Node: "w", Subtask: 0, BytesDone: 10, FilesTotal: 1}})
	es := tm.Report()
	if len(es) != 1 || es[0].BytesDone != 10 {
		t.Fatalf("first report %+v", es)
	}
	if es := tm.Report(); len(es) != 0 {
		t.Fatalf("a report without changes carries %+v", es)
	}
	master.Merge(es)
	o, _ := progressOp(master, runtime.ProgressSavepoint)
	if o.BytesDone != 10 || o.BytesTotal != 1000 || o.FilesTotal != 1 || o.State != runtime.ProgressRunning {
		t.Fatalf("merged %+v; want 10 of the estimated 1000 bytes", o)
	}
	master.End(runtime.SavepointOp(4), nil)
	master.Merge([]runtime.ProgressEntry{{Op: "sp-4", Kind: runtime.ProgressSavepoint, Node: "w", Subtask: 0, BytesDone: 5}})
	o, _ = progressOp(master, runtime.ProgressSavepoint)
	if o.State != runtime.ProgressDone || o.BytesDone != 10 || o.BytesTotal != 10 {
		t.Fatalf("after End %+v", o)
	}
	// Finished operations are kept only a while.
	for i := range 20 {
		master.Begin(runtime.SavepointOp(int64(10+i)), runtime.ProgressSavepoint)
		master.End(runtime.SavepointOp(int64(10+i)), nil)
	}
	ops := master.Operations()
	if len(ops) != 10 || ops[0].ID != "sp-29" {
		t.Fatalf("kept %d operations, newest %q; want 10, sp-29", len(ops), ops[0].ID)
	}
}

// TestRestoreProgressAfterRestart: a job that fails restarts from its
// latest checkpoint, and that restore is listed, done with bytes == total.
func TestRestoreProgressAfterRestart(t *testing.T) {
	st, err := checkpoint.Open("file://"+t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	var fail atomic.Bool
	restored := &sync.Map{}
	g := &runtime.Graph{JobName: "restart-progress", MaxParallelism: 8, ExactlyOnce: true, Nodes: []*runtime.Node{
		{ID: "src", Type: "fake", Parallelism: 1, Schema: posSchema, NewSource: func() runtime.Source { return &fakeSource{fail: &fail} }},
		{ID: "w", Type: "big", Parallelism: 2, Inputs: []runtime.Edge{{From: "src", Partition: runtime.Rebalance}},
			NewOperator: func() runtime.Operator { return &bigState{restored: restored} }},
	}}
	p := runtime.NewProgress()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var checkpoints atomic.Int64
	ended := make(chan error, 1)
	go func() {
		_, err := runtime.Run(ctx, g, runtime.Options{Storage: st, Interval: 20 * time.Millisecond, Timeout: time.Minute, Retained: 2,
			RestartAttempts: 3, Progress: p, LocalStateDir: t.TempDir(), Log: slog.New(slog.DiscardHandler),
			OnCheckpoint: func(s runtime.CheckpointStats) {
				if s.State == "completed" {
					checkpoints.Add(1)
				}
			}})
		ended <- err
	}()
	eventually(t, "a checkpoint", func() bool { return checkpoints.Load() > 0 })
	if _, ok := progressOp(p, runtime.ProgressRestore); ok {
		t.Fatal("a restore listed before any restart")
	}
	fail.Store(true)
	eventually(t, "the restart's restore done", func() bool {
		o, ok := progressOp(p, runtime.ProgressRestore)
		return ok && o.State == runtime.ProgressDone
	})
	o, _ := progressOp(p, runtime.ProgressRestore)
	if o.BytesDone < 8*progressKG || o.BytesDone != o.BytesTotal || o.FilesDone != o.FilesTotal || o.FilesDone < 3 {
		t.Errorf("the restart's restore: %+v; want bytes == total ≥ %d, files == total ≥ 3", o, 8*progressKG)
	}
	cancel()
	<-ended
}
