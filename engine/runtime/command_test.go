package runtime_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// skipTo is where a fakeSkipper jumps: far beyond what it reaches by polling.
const skipTo = int64(1) << 40

var posSchema = row.MustSchema(row.Field{Name: "pos", Type: row.Int64}, row.Field{Name: "sub", Type: row.Int64})

// fakeSource emits consecutive positions forever; its state is its position.
// It cannot skip its backlog.
type fakeSource struct {
	ctx      *runtime.Context
	pos      int64
	restored func(subtask int, pos int64)
	fail     *atomic.Bool // fail the next Poll once
}

func (s *fakeSource) Open(ctx *runtime.Context, r *runtime.Restored) error {
	s.ctx = ctx
	if r != nil {
		for _, e := range r.OperatorState {
			if int(binary.BigEndian.Uint64(e)) == ctx.Subtask {
				s.pos = int64(binary.BigEndian.Uint64(e[8:]))
			}
		}
		if s.restored != nil {
			s.restored(ctx.Subtask, s.pos)
		}
	}
	return nil
}

func (s *fakeSource) Poll() (bool, error) {
	if s.fail != nil && s.fail.CompareAndSwap(true, false) {
		return false, errors.New("injected failure")
	}
	b := row.NewBatch(posSchema)
	for i := 0; i < 16; i++ {
		_ = b.AppendRow(s.pos, int64(s.ctx.Subtask))
		s.pos++
	}
	s.ctx.Out.Collect(b)
	time.Sleep(time.Millisecond) // a trickle is enough
	return false, nil
}

func (s *fakeSource) Watermark() (int64, bool) { return runtime.MinWatermark, false }

func (s *fakeSource) Snapshot(int64) (runtime.Snapshot, error) {
	e := binary.BigEndian.AppendUint64(nil, uint64(s.ctx.Subtask))
	e = binary.BigEndian.AppendUint64(e, uint64(s.pos))
	return runtime.SnapshotFunc(func(w runtime.StateWriter) error { w.AddOperatorState(e); return nil }), nil
}

func (s *fakeSource) CheckpointComplete(int64) error { return nil }
func (s *fakeSource) Close() error                   { return nil }

// fakeSkipper is a fakeSource that can skip its backlog.
type fakeSkipper struct{ fakeSource }

func (s *fakeSkipper) SkipBacklog() error {
	s.pos = max(s.pos, skipTo)
	return nil
}

// maxPos records the largest position seen per source subtask.
type maxPos struct {
	runtime.BaseOperator
	mu  sync.Mutex
	max map[int64]int64
}

func (m *maxPos) Process(_ int, b *row.Batch) error {
	m.mu.Lock()
	for i := 0; i < b.Len; i++ {
		sub := b.Cols[1].Ints[i]
		m.max[sub] = max(m.max[sub], b.Cols[0].Ints[i])
	}
	m.mu.Unlock()
	b.Release()
	return nil
}

type skipJob struct {
	g        *runtime.Graph
	opts     runtime.Options
	cmds     chan runtime.Command
	sink     *maxPos
	restored sync.Map // subtask → position restored
	fail     atomic.Bool
}

func newSkipJob(t *testing.T, dir string) *skipJob {
	t.Helper()
	j := &skipJob{cmds: make(chan runtime.Command), sink: &maxPos{max: map[int64]int64{}}}
	onRestore := func(sub int, pos int64) { j.restored.Store(sub, pos) }
	j.g = &runtime.Graph{JobName: "skip", MaxParallelism: 16, ExactlyOnce: true, Nodes: []*runtime.Node{
		{ID: "skippy", Type: "fake-skipper", Parallelism: 2, Schema: posSchema,
			NewSource: func() runtime.Source { return &fakeSkipper{fakeSource{restored: onRestore}} }},
		{ID: "plain", Type: "fake", Parallelism: 1, Schema: posSchema,
			NewSource: func() runtime.Source { return &fakeSource{fail: &j.fail} }},
		{ID: "collect", Type: "max", Parallelism: 1, Inputs: []runtime.Edge{
			{From: "skippy", Partition: runtime.Rebalance}, {From: "plain", Partition: runtime.Rebalance}},
			NewOperator: func() runtime.Operator { return j.sink }},
	}}
	st, err := checkpoint.Open("file://"+dir, "")
	if err != nil {
		t.Fatal(err)
	}
	j.opts = runtime.Options{Storage: st, Interval: 20 * time.Millisecond, Timeout: time.Minute, Retained: 2,
		Commands: j.cmds, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	return j
}

// start runs the job until the test cancels it.
func (j *skipJob) start(t *testing.T) (cancel func() error) {
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := runtime.Run(ctx, j.g, j.opts)
		done <- err
	}()
	t.Cleanup(stop)
	return func() error { stop(); return <-done }
}

func (j *skipJob) status(t *testing.T) runtime.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := runtime.RequestStatus(ctx, j.cmds)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return s
}

// eventually polls cond; the deadline only catches hangs.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func skip(t *testing.T, cmds chan runtime.Command, node string) runtime.SkipBacklogResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return runtime.RequestSkipBacklog(ctx, cmds, node)
}

// TestSkipBacklog asks a running job's sources to skip their backlog: the
// sources that can, skip between two polls on their own goroutines, the
// reply says which could not, bad requests get clear errors, and the next
// checkpoint records the new positions (a restore starts there).
func TestSkipBacklog(t *testing.T) {
	dir := t.TempDir()
	j := newSkipJob(t, dir)
	stop := j.start(t)
	eventually(t, "a first checkpoint", func() bool { return j.status(t).Checkpoints >= 1 })

	st := j.status(t)
	if st.Job != "skip" || st.State != "running" || st.Attempt == "" || len(st.Nodes) != 3 {
		t.Fatalf("status: %+v", st)
	}
	if n := st.Nodes[0]; n.ID != "skippy" || !n.Source || !n.CanSkipBacklog || n.RowsOut == 0 {
		t.Fatalf("status of skippy: %+v", n)
	}
	if n := st.Nodes[1]; n.ID != "plain" || !n.Source || n.CanSkipBacklog {
		t.Fatalf("status of plain: %+v", n)
	}

	for _, c := range []struct{ node, msg string }{
		{"nope", `no node "nope"`},
		{"collect", `"collect" (max) is not a source`},
		{"plain", "no source can skip its backlog: plain (fake)"},
	} {
		r := skip(t, j.cmds, c.node)
		if !errors.Is(r.Err, runtime.ErrBadCommand) || !strings.Contains(r.Err.Error(), c.msg) || len(r.Skipped) > 0 {
			t.Errorf("skip %s: %+v, want ErrBadCommand %q", c.node, r, c.msg)
		}
	}

	r := skip(t, j.cmds, "")
	if r.Err != nil || !slices.Equal(r.Skipped, []string{"skippy#0", "skippy#1"}) || !slices.Equal(r.Unsupported, []string{"plain"}) {
		t.Fatalf("skip: %+v", r)
	}
	// The sources jumped: their next rows come from the new positions.
	eventually(t, "rows from after the skip", func() bool {
		j.sink.mu.Lock()
		defer j.sink.mu.Unlock()
		return j.sink.max[0] >= skipTo && j.sink.max[1] >= skipTo && j.sink.max[0] < skipTo*2
	})
	// Skipping one node works too (both subtasks are already at the newest).
	if r := skip(t, j.cmds, "skippy"); r.Err != nil || len(r.Skipped) != 2 || len(r.Unsupported) != 0 {
		t.Fatalf("skip skippy: %+v", r)
	}

	// A checkpoint in flight when we asked may predate the skip; the one
	// after it cannot.
	c0 := j.status(t).Checkpoints
	eventually(t, "two more checkpoints", func() bool { return j.status(t).Checkpoints >= c0+2 })
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v", err)
	}

	j2 := newSkipJob(t, dir)
	j2.opts.Restore = "latest"
	stop = j2.start(t)
	eventually(t, "the restore", func() bool { return j2.status(t).State == "running" })
	for sub := 0; sub < 2; sub++ {
		v, ok := j2.restored.Load(sub)
		if !ok || v.(int64) < skipTo {
			t.Errorf("skippy#%d restored at %v (ok=%v), want ≥ %d: the checkpoint missed the skip", sub, v, ok, skipTo)
		}
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v", err)
	}
}

// TestSkipBacklogWhileRestarting: between two attempts the job answers
// status as restarting and refuses to skip, rather than hanging.
func TestSkipBacklogWhileRestarting(t *testing.T) {
	j := newSkipJob(t, t.TempDir())
	j.opts.RestartAttempts = 1
	j.opts.RestartDelay = 10 * time.Minute // the test cancels long before
	j.fail.Store(true)
	stop := j.start(t)
	eventually(t, "the restart", func() bool { return j.status(t).State == "restarting" })
	if st := j.status(t); st.Restarts != 1 || st.Attempt != "" {
		t.Fatalf("status while restarting: %+v", st)
	}
	if r := skip(t, j.cmds, ""); !errors.Is(r.Err, runtime.ErrNotRunning) || !strings.Contains(r.Err.Error(), "restarting") {
		t.Fatalf("skip while restarting: %+v", r)
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v", err)
	}
}
