package runtime

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/row"
)

// Task-level tests of barrier alignment, watermarks and end of input: one
// operator task with fake input channels, a chain of recording operators
// and a recording output, driven message by message. No job, coordinator
// or storage: snapshots are empty, so an upload only acknowledges.

var harnessSchema = row.MustSchema(row.Field{Name: "v", Type: row.Int64})

// trace is what happened in the task, in order: operator calls and what
// left the task. It is written on the task goroutine.
type trace struct {
	mu      sync.Mutex
	entries []string
	changed chan struct{}
}

func (tr *trace) add(format string, args ...any) {
	tr.mu.Lock()
	tr.entries = append(tr.entries, fmt.Sprintf(format, args...))
	tr.mu.Unlock()
	select {
	case tr.changed <- struct{}{}:
	default:
	}
}

func (tr *trace) get() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.entries)
}

// traceOp forwards rows and watermarks and records every call.
type traceOp struct {
	BaseOperator
	name string
	tr   *trace
	// endRow, if set, is emitted by EndInput (a flush).
	endRow int64
}

func (o *traceOp) Process(_ int, b *row.Batch) error {
	for _, v := range b.Cols[0].Ints {
		o.tr.add("%s row %d", o.name, v)
	}
	o.Ctx.Out.Collect(b)
	return nil
}

func (o *traceOp) Watermark(wm int64) error {
	o.tr.add("%s wm %s", o.name, wmString(wm))
	o.Ctx.Out.Watermark(wm)
	return nil
}

func (o *traceOp) Snapshot(id int64) (Snapshot, error) {
	o.tr.add("%s snap %d", o.name, id)
	return nil, nil
}

func (o *traceOp) EndInput() error {
	o.tr.add("%s end", o.name)
	if o.endRow != 0 {
		b := row.NewBatch(harnessSchema)
		_ = b.AppendRow(o.endRow)
		o.Ctx.Out.Collect(b)
	}
	return nil
}

func wmString(wm int64) string {
	if wm == MaxWatermark {
		return "max"
	}
	return fmt.Sprint(wm)
}

// traceWriter is the task's downstream channel: it records what is sent.
type traceWriter struct{ tr *trace }

func (w traceWriter) send(m Message) bool {
	switch m.Kind {
	case MsgData:
		for _, v := range m.Batch.Cols[0].Ints {
			w.tr.add("out row %d", v)
		}
		m.Batch.Release()
	case MsgWatermark:
		w.tr.add("out wm %s", wmString(m.Watermark))
	case MsgIdle:
		w.tr.add("out idle")
	case MsgBarrier:
		w.tr.add("out barrier %d", m.Barrier.ID)
	case MsgEndData:
		w.tr.add("out end-data")
	case MsgEnd:
		w.tr.add("out end")
	}
	return true
}

type harness struct {
	t    *testing.T
	e    *Host
	task *task
	in   []*sender
	tr   *trace
	done chan struct{} // closed when the task exits, with err set
	err  error
}

// newHarness starts a task with `channels` input channels and a chain of
// `chain` traceOps named op0, op1, …; the last one's output is traced.
func newHarness(t *testing.T, channels, chain int, exactlyOnce bool) *harness {
	t.Helper()
	tr := &trace{changed: make(chan struct{}, 1)}
	e := &Host{g: &Graph{JobName: "harness"}, exactlyOnce: exactlyOnce, events: make(chan TaskEvent, 1024), pauses: &pauseLog{}}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	tk := &task{ctrl: make(chan ctrlMsg, 64), job: e, in: newInbox([]int{channels})}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ops := make([]*traceOp, chain)
	for i := range ops {
		ops[i] = &traceOp{name: fmt.Sprintf("op%d", i), tr: tr}
		n := &Node{ID: ops[i].name, Parallelism: 1}
		ctx := &Context{NodeID: n.ID, Parallelism: 1, Log: log, Metrics: &NodeMetrics{}}
		ctx.Counters = ctx.Metrics.Subtask(0)
		tk.members = append(tk.members, &member{node: n, ctx: ctx, op: ops[i]})
	}
	out := &edgeOutput{part: Forward, targets: []channelWriter{traceWriter{tr}}}
	tk.edges = []*edgeOutput{out}
	for i, m := range tk.members {
		if i < chain-1 {
			m.ctx.Out = &chainLink{t: tk, op: ops[i+1], m: tk.members[i+1].ctx.Metrics, sc: tk.members[i+1].ctx.Counters}
		} else {
			m.ctx.Out = out
		}
		if err := m.op.Open(m.ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	h := &harness{t: t, e: e, task: tk, tr: tr, done: make(chan struct{})}
	for ch := range channels {
		h.in = append(h.in, &sender{in: tk.in, ch: int32(ch), ctx: e.ctx})
	}
	go func() { h.err = tk.run(e.ctx); close(h.done) }()
	t.Cleanup(func() {
		e.cancel()
		<-h.done
		if h.err != nil {
			t.Errorf("task: %v", h.err)
		}
		e.uploads.Wait()
	})
	return h
}

func (h *harness) row(ch int, v int64) {
	b := row.NewBatch(harnessSchema)
	_ = b.AppendRow(v)
	h.in[ch].send(Message{Kind: MsgData, Batch: b})
}

func (h *harness) wm(ch int, wm int64) { h.in[ch].send(Message{Kind: MsgWatermark, Watermark: wm}) }
func (h *harness) idle(ch int)         { h.in[ch].send(Message{Kind: MsgIdle}) }
func (h *harness) endData(ch int)      { h.in[ch].send(Message{Kind: MsgEndData}) }
func (h *harness) end(ch int)          { h.in[ch].send(Message{Kind: MsgEnd}) }
func (h *harness) barrier(ch int, id int64) {
	h.in[ch].send(Message{Kind: MsgBarrier, Barrier: Trigger{ID: id}})
}
func (h *harness) finalBarrier(ch int, id int64) {
	h.in[ch].send(Message{Kind: MsgBarrier, Barrier: Trigger{ID: id, Final: true}})
}
func (h *harness) abort(id int64) { h.task.ctrl <- ctrlMsg{kind: ctrlAbort, id: id} }

// expect waits until the trace is want (what the task did so far); the
// deadline only catches a task that never gets there.
func (h *harness) expect(want ...string) {
	h.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		got := h.tr.get()
		if slices.Equal(got, want) {
			return
		}
		if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) {
			h.t.Fatalf("trace:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		select {
		case <-h.tr.changed:
		case <-time.After(5 * time.Millisecond):
		case <-deadline:
			h.t.Fatalf("trace stopped at:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	}
}

// acks returns the checkpoint ids acknowledged so far, in order.
func (h *harness) acks() []int64 {
	var ids []int64
	for {
		select {
		case ev := <-h.e.events:
			if ev.Kind == EventAck {
				ids = append(ids, ev.ID)
			}
		default:
			return ids
		}
	}
}

// TestAlignmentHoldsBackChannels: exactly once, a channel that delivered
// barrier n is held back until every channel has; rows behind it come after
// the snapshot and the forwarded barrier.
func TestAlignmentHoldsBackChannels(t *testing.T) {
	h := newHarness(t, 2, 1, true)
	h.row(0, 1)
	h.barrier(0, 1)
	h.row(0, 2) // held back
	h.row(1, 3)
	h.expect("op0 row 1", "out row 1", "op0 row 3", "out row 3")
	h.barrier(1, 1)
	h.expect("op0 row 1", "out row 1", "op0 row 3", "out row 3",
		"op0 snap 1", "out barrier 1", "op0 row 2", "out row 2")
	h.e.uploads.Wait()
	if acks := h.acks(); !slices.Equal(acks, []int64{1}) {
		t.Fatalf("acks %v, want [1]", acks)
	}
}

// TestAtLeastOnceDoesNotHoldBack: at least once, rows behind a barrier are
// processed at once; the snapshot waits for every channel's barrier.
func TestAtLeastOnceDoesNotHoldBack(t *testing.T) {
	h := newHarness(t, 2, 1, false)
	h.barrier(0, 1)
	h.row(0, 2)
	h.row(1, 3)
	h.expect("op0 row 2", "out row 2", "op0 row 3", "out row 3")
	h.row(0, 4)
	h.barrier(1, 1)
	h.row(1, 5)
	h.expect("op0 row 2", "out row 2", "op0 row 3", "out row 3", "op0 row 4", "out row 4",
		"op0 snap 1", "out barrier 1", "op0 row 5", "out row 5")
	h.e.uploads.Wait()
	if acks := h.acks(); !slices.Equal(acks, []int64{1}) {
		t.Fatalf("acks %v, want [1]", acks)
	}
}

// TestAbandonedAlignment: a barrier of a newer checkpoint before the older
// alignment finished abandons the older checkpoint (its upstream gave up
// on it): the held-back rows go on, and the newer one aligns normally; a
// late barrier of the older one is ignored.
func TestAbandonedAlignment(t *testing.T) {
	h := newHarness(t, 2, 1, true)
	h.barrier(0, 1)
	h.row(0, 1) // held back
	h.barrier(1, 2)
	h.row(1, 2) // held back by checkpoint 2
	h.expect("op0 row 1", "out row 1")
	h.barrier(0, 2)
	h.expect("op0 row 1", "out row 1", "op0 snap 2", "out barrier 2", "op0 row 2", "out row 2")
	h.barrier(1, 1) // late: ignored, not forwarded
	h.row(1, 3)
	h.expect("op0 row 1", "out row 1", "op0 snap 2", "out barrier 2", "op0 row 2", "out row 2", "op0 row 3", "out row 3")
	h.e.uploads.Wait()
	if acks := h.acks(); !slices.Equal(acks, []int64{2}) {
		t.Fatalf("acks %v, want [2]", acks)
	}
}

// TestAbortedAlignment: when the coordinator aborts the checkpoint being
// aligned (declined elsewhere, expired), the held-back channels go on at
// once instead of waiting for a barrier that may be stuck; the barrier that
// comes later is ignored, and the next checkpoint aligns normally.
func TestAbortedAlignment(t *testing.T) {
	h := newHarness(t, 2, 1, true)
	h.barrier(0, 1)
	h.row(0, 1) // held back
	h.row(1, 2)
	h.expect("op0 row 2", "out row 2")
	h.abort(1)
	h.expect("op0 row 2", "out row 2", "op0 row 1", "out row 1")
	h.barrier(1, 1) // late: ignored, not forwarded
	h.row(1, 3)
	h.barrier(0, 2)
	h.row(0, 4) // held back by checkpoint 2
	h.barrier(1, 2)
	h.expect("op0 row 2", "out row 2", "op0 row 1", "out row 1", "op0 row 3", "out row 3",
		"op0 snap 2", "out barrier 2", "op0 row 4", "out row 4")
	// An abort that arrives before any of its barriers: they are ignored.
	h.abort(3)
	h.row(1, 5)
	// The task reads queued control messages before a barrier, so it knows
	// of the abort when barrier 3 comes.
	h.expect("op0 row 2", "out row 2", "op0 row 1", "out row 1", "op0 row 3", "out row 3",
		"op0 snap 2", "out barrier 2", "op0 row 4", "out row 4", "op0 row 5", "out row 5")
	h.barrier(0, 3)
	h.row(0, 6) // not held back: checkpoint 3 was aborted
	h.expect("op0 row 2", "out row 2", "op0 row 1", "out row 1", "op0 row 3", "out row 3",
		"op0 snap 2", "out barrier 2", "op0 row 4", "out row 4", "op0 row 5", "out row 5", "op0 row 6", "out row 6")
	h.e.uploads.Wait()
	if acks := h.acks(); !slices.Equal(acks, []int64{2}) {
		t.Fatalf("acks %v, want [2]", acks)
	}
}

// TestEndOfInputDuringAlignment: a channel that ends (no barrier can follow)
// counts as aligned; one whose data ended still sends barriers, so it does
// not.
func TestEndOfInputDuringAlignment(t *testing.T) {
	h := newHarness(t, 3, 1, true)
	h.barrier(0, 1)
	h.row(0, 1)  // held back
	h.endData(1) // barriers still come on channel 1
	h.row(2, 2)  // channel 2 goes on
	h.expect("op0 row 2", "out row 2")
	h.barrier(1, 1)
	h.end(2) // channel 2 ended without barrier 1: aligned
	h.expect("op0 row 2", "out row 2", "op0 snap 1", "out barrier 1", "op0 row 1", "out row 1")
}

// TestWatermarkHeldBackWithItsChannel: a watermark (or idle marker) behind
// a barrier is held back with its channel: the operator's watermark does
// not advance past rows that wait behind the barrier, so none of them turns
// late; it advances once the snapshot is taken.
func TestWatermarkHeldBackWithItsChannel(t *testing.T) {
	h := newHarness(t, 2, 1, true)
	h.wm(0, 10)
	h.wm(1, 10)
	h.expect("op0 wm 10", "out wm 10")
	h.barrier(0, 1)
	h.row(0, 90) // held back
	h.wm(0, 100) // held back: must not fire windows before row 90
	h.wm(1, 200) // min(10, 200): no advance
	h.row(1, 7)
	h.expect("op0 wm 10", "out wm 10", "op0 row 7", "out row 7")
	h.barrier(1, 1)
	h.expect("op0 wm 10", "out wm 10", "op0 row 7", "out row 7",
		"op0 snap 1", "out barrier 1", "op0 row 90", "out row 90", "op0 wm 100", "out wm 100")

	// An idle marker behind a barrier is held back too: the idle channel's
	// old watermark still counts until the snapshot.
	h.barrier(0, 2)
	h.idle(0)
	h.wm(1, 300)
	h.row(1, 8)
	h.expect("op0 wm 10", "out wm 10", "op0 row 7", "out row 7",
		"op0 snap 1", "out barrier 1", "op0 row 90", "out row 90", "op0 wm 100", "out wm 100",
		"op0 row 8", "out row 8")
	h.barrier(1, 2)
	h.expect("op0 wm 10", "out wm 10", "op0 row 7", "out row 7",
		"op0 snap 1", "out barrier 1", "op0 row 90", "out row 90", "op0 wm 100", "out wm 100",
		"op0 row 8", "out row 8", "op0 snap 2", "out barrier 2", "op0 wm 300", "out wm 300")
}

// TestEndInputInChain: EndInput runs once every channel's data ended, after
// the final watermark, on each chained operator in order (each after the
// rows its upstream flushed), before the final barrier; the end-of-data
// marker goes downstream before that barrier, and a later End calls nothing.
func TestEndInputInChain(t *testing.T) {
	h := newHarness(t, 2, 3, true)
	h.task.members[0].op.(*traceOp).endRow = 100
	h.task.members[1].op.(*traceOp).endRow = 101
	h.row(0, 1)
	h.wm(0, MaxWatermark)
	h.endData(0)
	h.row(1, 2)
	h.wm(1, MaxWatermark)
	h.expect("op0 row 1", "op1 row 1", "op2 row 1", "out row 1",
		"op0 row 2", "op1 row 2", "op2 row 2", "out row 2",
		"op0 wm max", "op1 wm max", "op2 wm max", "out wm max")
	h.endData(1)
	h.finalBarrier(0, 5)
	h.finalBarrier(1, 5)
	h.end(0)
	h.end(1)
	h.expect("op0 row 1", "op1 row 1", "op2 row 1", "out row 1",
		"op0 row 2", "op1 row 2", "op2 row 2", "out row 2",
		"op0 wm max", "op1 wm max", "op2 wm max", "out wm max",
		"op0 end", "op1 row 100", "op2 row 100", "out row 100",
		"op1 end", "op2 row 101", "out row 101",
		"op2 end", "out end-data",
		"op0 snap 5", "op1 snap 5", "op2 snap 5", "out barrier 5", "out end")
}

// TestFinalCheckpointRetried: when the final checkpoint is aborted while
// aligning, the End behind its barrier goes through, the late barrier is
// ignored, and the retried final checkpoint (whose barriers now follow End)
// is taken once; the task exits when told it completed.
func TestFinalCheckpointRetried(t *testing.T) {
	h := newHarness(t, 2, 1, true)
	for ch := range 2 {
		h.wm(ch, MaxWatermark)
		h.endData(ch)
	}
	h.finalBarrier(0, 5)
	h.end(0) // held back
	h.expect("op0 wm max", "out wm max", "op0 end", "out end-data")
	h.abort(5)
	h.finalBarrier(1, 5) // late: ignored
	h.end(1)
	h.finalBarrier(0, 6)
	h.finalBarrier(1, 6)
	h.expect("op0 wm max", "out wm max", "op0 end", "out end-data", "op0 snap 6", "out barrier 6", "out end")
	h.task.ctrl <- ctrlMsg{kind: ctrlNotify, id: 6}
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the task did not exit after the final checkpoint completed")
	}
	h.e.uploads.Wait()
	if acks := h.acks(); !slices.Equal(acks, []int64{6}) {
		t.Fatalf("acks %v, want [6]", acks)
	}
}
