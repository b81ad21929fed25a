package runtime

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sluice-stream/sluice/engine/row"
)

// member is one node's subtask inside a task's chain.
type member struct {
	node *Node
	ctx  *Context
	op   Operator // nil for a source head
	// srcSize measures a source's records, sinkSize a sink's (nil for
	// the other members).
	srcSize, sinkSize *recordSizer
}

// chainLink delivers a producer's output straight into a chained operator.
type chainLink struct {
	t     *task
	op    Operator
	input int
	m     *NodeMetrics
	sc    *SubtaskCounters
	size  *recordSizer // the operator is a sink
}

func (c *chainLink) Collect(b *row.Batch) {
	if c.t.err != nil {
		b.Release()
		return
	}
	c.m.RowsIn.Add(int64(b.Len))
	c.sc.RowsIn.Add(int64(b.Len))
	c.size.add(b)
	if err := c.op.Process(c.input, b); err != nil {
		c.t.fail(err)
	}
}

func (c *chainLink) Watermark(wm int64) {
	if c.t.err != nil {
		return
	}
	if err := c.op.Watermark(wm); err != nil {
		c.t.fail(err)
	}
}

type ctrlKind uint8

const (
	ctrlTrigger ctrlKind = iota
	ctrlNotify
	ctrlSkipBacklog // sources only (command.go)
	ctrlAbort       // the coordinator gave up on checkpoint id
)

type ctrlMsg struct {
	kind    ctrlKind
	trigger Trigger
	id      int64
	skip    func(subtask string, err error)
}

// task runs a chain of subtasks on one goroutine.
type task struct {
	idx     int
	subtask int
	members []*member // head first, in topological order
	source  Source    // head is a source
	in      *inbox    // head is an operator
	ctrl    chan ctrlMsg
	edges   []*edgeOutput // every network output of the chain
	job     *Host
	err     error
	// ctx ends the task alone (a region restart) or with its host;
	// done is closed when its goroutine ended; halted marks a task its
	// host stopped on purpose (its exit is no failure).
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	halted atomic.Bool

	// alignment
	aligning   bool
	alignStart time.Time // first barrier of the checkpoint being aligned
	align      Trigger   // barrier being aligned, or the last one aligned
	blocked    []bool
	buffered   [][]Message
	seen       []bool
	ended      []bool
	dataEnded  []bool // MsgEndData (or MsgEnd) received, per channel
	inputEnded bool   // EndInput called
	wms        []int64
	idle       []bool
	currentWM  int64
	replay     []Message
	finalID    int64 // id of the final (or stopping) checkpoint once passed
	stopped    bool  // a source that injected the barrier of stop-with-savepoint stopID
	stopID     int64
	aborted    int64 // newest checkpoint the coordinator gave up on
	sourceDone bool
	sourceWM   int64
	sourceIdle bool

	// states are the chain's StateSizers, asked at stateAt and after
	// each snapshot.
	states  []stateSample
	stateAt time.Time
}

func (t *task) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

func (t *task) name() string {
	return fmt.Sprintf("%s#%d", t.members[0].node.ID, t.subtask)
}

// run is the task goroutine.
func (t *task) run(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("task %s panicked: %v", t.name(), r)
		}
		for _, m := range t.members {
			var cerr error
			if m.op != nil {
				cerr = m.op.Close()
			}
			if cerr != nil && err == nil {
				err = fmt.Errorf("closing %s#%d: %w", m.node.ID, t.subtask, cerr)
			}
		}
		if t.source != nil {
			if cerr := t.source.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("closing %s: %w", t.name(), cerr)
			}
		}
		for _, m := range t.members {
			if m.ctx.Counters != nil {
				m.ctx.Counters.clearGauges()
			}
		}
	}()
	if t.source != nil {
		err = t.runSource(ctx)
	} else {
		err = t.runOperator(ctx)
	}
	if err != nil {
		return fmt.Errorf("task %s: %w", t.name(), err)
	}
	return nil
}

func (t *task) runSource(ctx context.Context) error {
	t.sourceWM = MinWatermark
	for {
		if t.err != nil {
			return t.err
		}
		if t.finalID != 0 || t.stopped || t.sourceDone {
			// Nothing left to emit: serve checkpoints until the job ends.
			select {
			case c := <-t.ctrl:
				if done := t.handleCtrl(c); done {
					return t.err
				}
			case <-ctx.Done():
				return nil
			}
			continue
		}
		select {
		case c := <-t.ctrl:
			if done := t.handleCtrl(c); done {
				return t.err
			}
			continue
		case <-ctx.Done():
			return nil
		default:
		}
		done, err := t.source.Poll()
		if err != nil {
			return err
		}
		t.sampleState(false)
		if t.err != nil {
			return t.err
		}
		if done {
			t.sourceDone = true
			t.emitWatermark(MaxWatermark)
			t.endInput(1)
			if t.err != nil {
				return t.err
			}
			t.broadcast(Message{Kind: MsgEndData})
			t.job.event(TaskEvent{Kind: EventSourceFinished, Task: t.idx})
			continue
		}
		wm, idle := t.source.Watermark()
		if idle && !t.sourceIdle {
			t.sourceIdle = true
			t.broadcast(Message{Kind: MsgIdle})
		}
		if !idle {
			if t.sourceIdle {
				// Active again: downstream counts this channel once it
				// hears a watermark from it.
				t.sourceIdle = false
				t.members[0].ctx.Out.Watermark(max(wm, t.sourceWM))
			}
			if wm > t.sourceWM {
				t.emitWatermark(wm)
			}
		}
	}
}

// endInput calls EndInput on the chained operators from members[from] on,
// in chain order: each one's input has ended once the member before it
// returned from EndInput (having emitted its last rows).
func (t *task) endInput(from int) {
	t.inputEnded = true
	for _, m := range t.members[from:] {
		if t.err != nil {
			return
		}
		if err := m.op.EndInput(); err != nil {
			t.fail(fmt.Errorf("%s#%d: end of input: %w", m.node.ID, t.subtask, err))
		}
	}
}

func (t *task) emitWatermark(wm int64) {
	if wm <= t.sourceWM {
		return
	}
	t.sourceWM = wm
	t.recordWatermark(wm)
	t.members[0].ctx.Out.Watermark(wm)
}

// recordWatermark notes the chain's watermark in its nodes' metrics (the
// chained operators see the same event time).
func (t *task) recordWatermark(wm int64) {
	for _, m := range t.members {
		if m.ctx.Metrics != nil {
			m.ctx.Metrics.SetWatermark(t.subtask, wm)
		}
	}
}

func (t *task) broadcast(m Message) {
	for _, e := range t.edges {
		e.control(m)
	}
}

// handleCtrl runs a control message; it returns true when the task is done.
func (t *task) handleCtrl(c ctrlMsg) bool {
	switch c.kind {
	case ctrlTrigger: // sources only
		t.checkpoint(c.trigger)
		if c.trigger.Final {
			t.finalID = c.trigger.ID
			t.broadcast(Message{Kind: MsgEnd})
		} else if c.trigger.Stop {
			// Emit nothing after the savepoint's barrier until it either
			// completes (the job ends) or fails (abort resumes).
			t.stopped, t.stopID = true, c.trigger.ID
		}
	case ctrlAbort:
		t.abort(c.id)
	case ctrlSkipBacklog:
		t.skipBacklog(c.skip)
	case ctrlNotify:
		t.notify(c.id)
		if t.finalID != 0 && c.id >= t.finalID {
			return true
		}
	}
	return false
}

// abort forgets checkpoint id, which the coordinator gave up on (declined,
// expired or not committed): a source stopped for it by stop-with-savepoint
// resumes, since the job goes on, and an alignment of it lets its channels
// go instead of holding them until a barrier that may never come (Flink
// aborts pending alignments the same way).
func (t *task) abort(id int64) {
	t.aborted = max(t.aborted, id)
	if t.stopped && t.stopID <= id {
		t.stopped, t.stopID = false, 0
	}
	if t.aligning && t.align.ID <= id {
		t.alignStart = time.Time{}
		t.unblock()
	}
}

func (t *task) notify(id int64) {
	for _, m := range t.members {
		m.ctx.lastCompleted = id
	}
	if t.source != nil {
		if err := t.source.CheckpointComplete(id); err != nil {
			t.fail(fmt.Errorf("completing checkpoint %d: %w", id, err))
		}
	}
	for _, m := range t.members {
		if m.op != nil {
			if err := m.op.CheckpointComplete(id); err != nil {
				t.fail(fmt.Errorf("%s: completing checkpoint %d: %w", m.node.ID, id, err))
			}
		}
	}
}

// checkpoint takes the synchronous snapshot of every member, forwards the
// barrier and hands the asynchronous part to an uploader goroutine.
func (t *task) checkpoint(tr Trigger) {
	begin := t.alignStart
	if t.source != nil || begin.IsZero() {
		begin = time.Now()
	}
	alignment := time.Since(begin)
	t.alignStart = time.Time{}
	snaps := make([]Snapshot, len(t.members))
	for i, m := range t.members {
		var s Snapshot
		var err error
		m.ctx.savepoint = tr.Savepoint
		if i == 0 && t.source != nil {
			s, err = t.source.Snapshot(tr.ID)
		} else {
			s, err = m.op.Snapshot(tr.ID)
		}
		m.ctx.savepoint = false
		if err != nil {
			t.job.event(TaskEvent{Kind: EventDecline, Task: t.idx, ID: tr.ID, Err: fmt.Errorf("%s#%d: snapshot: %w", m.node.ID, t.subtask, err)})
			snaps = nil
			break
		}
		snaps[i] = s
	}
	// The pause ends here: forwarding the barrier may wait for credits,
	// which is back-pressure, not checkpointing.
	t.job.pauses.record(time.Since(begin), operatorState(t.members, snaps))
	t.sampleState(true)
	t.broadcast(Message{Kind: MsgBarrier, Barrier: tr})
	if snaps != nil {
		t.job.upload(t, tr, snaps, alignment)
	}
}

func (t *task) runOperator(ctx context.Context) error {
	n := len(t.in.credits)
	t.blocked = make([]bool, n)
	t.buffered = make([][]Message, n)
	t.ended = make([]bool, n)
	t.dataEnded = make([]bool, n)
	t.seen = make([]bool, n)
	t.wms = make([]int64, n)
	t.idle = make([]bool, n)
	for i := range t.wms {
		t.wms[i] = MinWatermark
	}
	t.currentWM = MinWatermark
	for {
		if t.err != nil {
			return t.err
		}
		if len(t.replay) > 0 {
			m := t.replay[0]
			t.replay = t.replay[1:]
			if m.Kind == MsgBarrier && t.drainCtrl() {
				return t.err
			}
			t.handle(m)
			continue
		}
		select {
		case m := <-t.in.ch:
			if m.Kind == MsgBarrier && t.drainCtrl() {
				return t.err
			}
			t.handle(m)
			t.sampleState(false)
		case c := <-t.ctrl:
			if done := t.handleCtrl(c); done {
				return t.err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

func (t *task) head() *member { return t.members[0] }

// drainCtrl handles the control messages already queued, before a barrier:
// the driver queues checkpoint N's completion to every task before it
// triggers N+1, so operators learn that N completed before they snapshot
// N+1 (incremental snapshots build on the last completed one). It returns
// true when the task is done.
func (t *task) drainCtrl() bool {
	for {
		select {
		case c := <-t.ctrl:
			if t.handleCtrl(c) {
				return true
			}
		default:
			return false
		}
	}
}

// handle processes one message from an input channel. Replayed messages
// (buffered during alignment) already hold their credit until processed.
func (t *task) handle(m Message) {
	if t.blocked[m.ch] {
		t.buffered[m.ch] = append(t.buffered[m.ch], m)
		return
	}
	t.in.release(m.ch)
	h := t.head()
	switch m.Kind {
	case MsgData:
		h.ctx.Metrics.RowsIn.Add(int64(m.Batch.Len))
		h.ctx.Counters.RowsIn.Add(int64(m.Batch.Len))
		h.sinkSize.add(m.Batch)
		if err := h.op.Process(t.in.input[m.ch], m.Batch); err != nil {
			t.fail(fmt.Errorf("%s#%d: %w", h.node.ID, t.subtask, err))
		}
	case MsgWatermark:
		t.idle[m.ch] = false
		if m.Watermark > t.wms[m.ch] {
			t.wms[m.ch] = m.Watermark
		}
		t.advanceWatermark()
	case MsgIdle:
		t.idle[m.ch] = true
		t.advanceWatermark()
	case MsgBarrier:
		t.onBarrier(m)
	case MsgEndData:
		t.dataEnded[m.ch] = true
		t.maybeEndInput()
	case MsgEnd:
		t.ended[m.ch] = true
		t.dataEnded[m.ch] = true // an End implies the end of data
		t.maybeEndInput()
		if t.aligning {
			t.maybeAligned()
		}
	}
}

// maybeEndInput ends the chain's input once every channel's data ended,
// and tells the tasks downstream, ahead of the final barrier.
func (t *task) maybeEndInput() {
	if t.inputEnded {
		return
	}
	for _, e := range t.dataEnded {
		if !e {
			return
		}
	}
	t.endInput(0)
	if t.err == nil {
		t.broadcast(Message{Kind: MsgEndData})
	}
}

func (t *task) advanceWatermark() {
	min := MaxWatermark
	active := false
	for i, wm := range t.wms {
		if t.idle[i] || t.ended[i] && wm == MaxWatermark {
			continue
		}
		active = true
		if wm < min {
			min = wm
		}
	}
	if !active {
		// Every input idle: hold the watermark (Flink does the same).
		allMax := true
		for _, wm := range t.wms {
			if wm != MaxWatermark {
				allMax = false
			}
		}
		if !allMax {
			return
		}
		min = MaxWatermark
	}
	if min > t.currentWM {
		t.currentWM = min
		t.recordWatermark(min)
		h := t.head()
		if err := h.op.Watermark(min); err != nil {
			t.fail(fmt.Errorf("%s#%d: watermark: %w", h.node.ID, t.subtask, err))
		}
	}
}

func (t *task) onBarrier(m Message) {
	id := m.Barrier.ID
	if t.aligning && id > t.align.ID {
		// The checkpoint being aligned was abandoned: let its channels go.
		t.unblock()
	}
	if !t.aligning {
		if id <= t.finalID || id <= t.align.ID || id <= t.aborted {
			return // a barrier of a checkpoint already passed or aborted
		}
		t.aligning = true
		t.alignStart = time.Now()
		t.align = m.Barrier
		clear(t.seen)
	}
	if id < t.align.ID {
		return
	}
	t.seen[m.ch] = true
	if t.job.exactlyOnce {
		t.blocked[m.ch] = true
	}
	t.maybeAligned()
}

// maybeAligned completes the checkpoint once every channel has delivered
// its barrier (or ended before sending one).
func (t *task) maybeAligned() {
	for ch := range t.seen {
		if !t.seen[ch] && !t.ended[ch] {
			return
		}
	}
	tr := t.align
	t.aligning = false
	t.checkpoint(tr)
	if tr.Final {
		t.finalID = tr.ID
	}
	t.unblock()
	if tr.Final {
		// Everything upstream ended; the End messages follow the barrier.
		t.broadcast(Message{Kind: MsgEnd})
	}
}

func (t *task) unblock() {
	t.aligning = false
	for ch, msgs := range t.buffered {
		t.blocked[ch] = false
		t.replay = append(t.replay, msgs...)
		t.buffered[ch] = msgs[:0]
	}
}
