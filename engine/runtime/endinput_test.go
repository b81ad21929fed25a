package runtime_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// boundedSource is a fakeSource that ends after limit rows.
type boundedSource struct {
	fakeSource
	limit int64
}

func (s *boundedSource) Poll() (bool, error) {
	if s.pos >= s.limit {
		return true, nil
	}
	return s.fakeSource.Poll()
}

// lifeLog records what the runtime calls on every operator subtask, in
// the order it happens across tasks.
type lifeLog struct {
	mu     sync.Mutex
	events []lifeEvent
}

type lifeEvent struct {
	who  string // node#subtask
	what string // row, wm-max, end, snap
}

func (l *lifeLog) add(who, what string) {
	l.mu.Lock()
	l.events = append(l.events, lifeEvent{who, what})
	l.mu.Unlock()
}

// lifeOp forwards what it gets and logs it; with flush, EndInput emits one
// more row (a sink or buffer flushing on end of input).
type lifeOp struct {
	runtime.BaseOperator
	log   *lifeLog
	flush bool
	who   string
}

func (o *lifeOp) Open(ctx *runtime.Context, r *runtime.Restored) error {
	o.who = fmt.Sprintf("%s#%d", ctx.NodeID, ctx.Subtask)
	return o.BaseOperator.Open(ctx, r)
}

func (o *lifeOp) Process(_ int, b *row.Batch) error {
	for range b.Len {
		o.log.add(o.who, "row")
	}
	o.Ctx.Out.Collect(b)
	return nil
}

func (o *lifeOp) Watermark(wm int64) error {
	if wm == runtime.MaxWatermark {
		o.log.add(o.who, "wm-max")
	}
	return o.BaseOperator.Watermark(wm)
}

func (o *lifeOp) Snapshot(int64) (runtime.Snapshot, error) {
	o.log.add(o.who, "snap")
	return nil, nil
}

func (o *lifeOp) EndInput() error {
	o.log.add(o.who, "end")
	if o.flush {
		b := row.NewBatch(posSchema)
		_ = b.AppendRow(int64(-1), int64(o.Ctx.Subtask))
		o.Ctx.Out.Collect(b)
	}
	return nil
}

// TestEndInput: in a bounded job every operator subtask, chained or behind
// an exchange, gets exactly one EndInput, after its last row and the final
// watermark and before the final checkpoint's snapshot; a chained operator's
// comes after its upstream's, and what an EndInput emits reaches downstream
// before downstream's own EndInput.
func TestEndInput(t *testing.T) {
	const perSource = 1024 // a multiple of the 16 rows a poll emits
	log := &lifeLog{}
	op := func(flush bool) func() runtime.Operator {
		return func() runtime.Operator { return &lifeOp{log: log, flush: flush} }
	}
	g := &runtime.Graph{JobName: "end", MaxParallelism: 16, ExactlyOnce: true, Nodes: []*runtime.Node{
		{ID: "src", Type: "fake", Parallelism: 2, Schema: posSchema,
			NewSource: func() runtime.Source { return &boundedSource{limit: perSource} }},
		{ID: "a", Type: "life", Parallelism: 2, Schema: posSchema, Inputs: []runtime.Edge{{From: "src"}}, NewOperator: op(false)},
		{ID: "b", Type: "life", Parallelism: 2, Schema: posSchema, Inputs: []runtime.Edge{{From: "a"}}, NewOperator: op(true)},
		{ID: "c", Type: "life", Parallelism: 1, Schema: posSchema, Inputs: []runtime.Edge{{From: "b", Partition: runtime.Rebalance}}, NewOperator: op(false)},
		{ID: "d", Type: "life", Parallelism: 1, Schema: posSchema, Inputs: []runtime.Edge{{From: "c"}}, NewOperator: op(true)},
	}}
	st, err := checkpoint.Open("file://"+t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang, not a timing
	defer cancel()
	if _, err := runtime.Run(ctx, g, runtime.Options{Storage: st, Interval: 20 * time.Millisecond, Timeout: time.Minute,
		Retained: 2, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
		t.Fatal(err)
	}

	type life struct {
		rows, ends, endAt, lastRow, wmMax, lastSnap int
	}
	lives := map[string]*life{}
	for i, e := range log.events {
		l := lives[e.who]
		if l == nil {
			l = &life{endAt: -1, lastRow: -1, wmMax: -1, lastSnap: -1}
			lives[e.who] = l
		}
		switch e.what {
		case "row":
			l.rows++
			l.lastRow = i
		case "wm-max":
			l.wmMax = i
		case "end":
			l.ends++
			l.endAt = i
		case "snap":
			l.lastSnap = i
		}
	}
	wantRows := map[string]int{"a#0": perSource, "a#1": perSource, "b#0": perSource, "b#1": perSource,
		"c#0": 2*perSource + 2, "d#0": 2*perSource + 2}
	for who, n := range wantRows {
		l := lives[who]
		switch {
		case l == nil:
			t.Errorf("%s: never called", who)
		case l.ends != 1:
			t.Errorf("%s: %d EndInputs, want 1", who, l.ends)
		case l.rows != n:
			t.Errorf("%s: %d rows, want %d", who, l.rows, n)
		case l.lastRow > l.endAt || l.wmMax < 0 || l.wmMax > l.endAt:
			t.Errorf("%s: EndInput at %d before its last row (%d) or the final watermark (%d)", who, l.endAt, l.lastRow, l.wmMax)
		case l.lastSnap < l.endAt:
			t.Errorf("%s: EndInput at %d after the final checkpoint's snapshot (%d)", who, l.endAt, l.lastSnap)
		}
	}
	if t.Failed() {
		return
	}
	for _, order := range [][2]string{{"a#0", "b#0"}, {"a#1", "b#1"}, {"b#0", "c#0"}, {"b#1", "c#0"}, {"c#0", "d#0"}} {
		if lives[order[0]].endAt > lives[order[1]].endAt {
			t.Errorf("%s ended its input after %s", order[0], order[1])
		}
	}
}
