package runtime

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/state"
)

// MessageKind says what a Message carries.
type MessageKind uint8

const (
	MsgData MessageKind = iota
	MsgWatermark
	MsgIdle
	MsgBarrier
	// MsgEndData: the sender emits no more rows or watermarks, only
	// barriers (Flink's EndOfData); the receiver calls EndInput once every
	// channel sent it, so what EndInput emits precedes the final barrier.
	MsgEndData
	// MsgEnd: nothing at all follows (after the final checkpoint's barrier).
	MsgEnd
)

// Message is what travels on a channel between tasks, in order: a batch or
// an in-band control element. Between processes the data plane carries it
// (see Network).
type Message struct {
	Kind      MessageKind
	Batch     *row.Batch // MsgData
	Watermark int64      // MsgWatermark
	Barrier   Trigger    // MsgBarrier
	// Bytes is the encoded size of a message that crossed processes, set
	// by the data plane that delivers it (the consumer's BytesIn).
	Bytes int
	ch    int32 // input channel at the receiver
}

// creditsPerChannel bounds the batches in flight from one sender to one
// receiver: a full window blocks the sender (back-pressure), and a channel
// held back during barrier alignment stops its sender instead of growing a
// buffer.
const creditsPerChannel = 8

// inbox is a task's receiving end: one Go channel shared by all its input
// channels, each limited by its own credits.
type inbox struct {
	ch      chan Message
	credits []chan struct{}
	input   []int         // input channel → index of the node's logical input
	schemas []*row.Schema // input channel → schema of its batches
	// remote marks the channels whose sender is in another process: their
	// credits go back through grant.
	remote []bool
	grant  func(ch int32)
}

func newInbox(channelsPerInput []int) *inbox {
	n := 0
	for _, c := range channelsPerInput {
		n += c
	}
	// Room for every channel's credits, should all be remote (see
	// setRemote); a slot is a Message, some 60 bytes.
	in := &inbox{ch: make(chan Message, n*max(creditsPerChannel, ChannelCredits)), credits: make([]chan struct{}, n), input: make([]int, 0, n)}
	for i := range in.credits {
		in.credits[i] = make(chan struct{}, creditsPerChannel)
	}
	for inp, c := range channelsPerInput {
		for range c {
			in.input = append(in.input, inp)
		}
	}
	return in
}

// setRemote marks channel ch as fed from another process: it gets the
// larger window of ChannelCredits. Before any message arrives.
func (in *inbox) setRemote(ch int) {
	in.remote[ch] = true
	in.credits[ch] = make(chan struct{}, ChannelCredits)
}

// release returns the credit of a message the receiver has processed.
func (in *inbox) release(ch int32) {
	<-in.credits[ch]
	if in.remote != nil && in.remote[ch] {
		in.grant(ch)
	}
}

// channelWriter is one input channel seen from its producer: a sender in
// this process, a remoteSender to another.
type channelWriter interface {
	// send delivers m in order, blocking while the channel has no credit;
	// it returns false (and drops m) when the job is being cancelled or the
	// channel is broken.
	send(m Message) bool
}

// remoteSender is an input channel of a task in another process, written
// by task t.
type remoteSender struct {
	cs  ChannelSender
	t   *task
	key ChannelKey
}

func (r *remoteSender) send(m Message) bool {
	if err := r.cs.Send(m); err != nil {
		// Runs on t's goroutine: the task fails with the channel.
		r.t.fail(fmt.Errorf("sending to channel %d of task %d: %w", r.key.Channel, r.key.Task, err))
		return false
	}
	return true
}

// sender is an in-process input channel seen from the producing subtask.
type sender struct {
	in     *inbox
	ch     int32
	ctx    context.Context
	waited *atomic.Int64 // the producer subtask's BackPressured
}

func (s *sender) send(m Message) bool {
	m.ch = s.ch
	select {
	case s.in.credits[s.ch] <- struct{}{}:
	default:
		// No credit: the consumer is behind. Only this slow path is timed.
		began := time.Now()
		select {
		case s.in.credits[s.ch] <- struct{}{}:
		case <-s.ctx.Done():
			if m.Batch != nil {
				m.Batch.Release()
			}
			return false
		}
		if s.waited != nil {
			s.waited.Add(int64(time.Since(began)))
		}
	}
	s.in.ch <- m // never blocks: capacity covers every credit
	return true
}

// edgeOutput sends a subtask's output over one edge to the consumer's
// subtasks according to the edge's partitioning.
type edgeOutput struct {
	part    Partition
	keyCols []int
	maxPar  int
	targets []channelWriter
	rr      int
	sels    [][]int32 // per target: rows of the batch being split
	metrics *NodeMetrics
}

func (e *edgeOutput) Collect(b *row.Batch) {
	if b.Len == 0 {
		b.Release()
		return
	}
	n := len(e.targets)
	switch {
	case n == 1:
		e.targets[0].send(Message{Kind: MsgData, Batch: b})
	case e.part == Rebalance || e.part == Forward:
		e.targets[e.rr%n].send(Message{Kind: MsgData, Batch: b})
		e.rr++
	case e.part == Broadcast:
		for i, t := range e.targets {
			if i == n-1 {
				t.send(Message{Kind: MsgData, Batch: b})
			} else {
				t.send(Message{Kind: MsgData, Batch: b.Clone()})
			}
		}
	default: // Hash: split rows by the subtask owning their key group
		e.hashSplit(b)
	}
}

// hashSplit sends each row of b to the subtask that owns its key group,
// building one batch per target column by column.
func (e *edgeOutput) hashSplit(b *row.Batch) {
	n := len(e.targets)
	if cap(e.sels) < n {
		e.sels = make([][]int32, n)
	}
	sels := e.sels[:n]
	for t := range sels {
		sels[t] = sels[t][:0]
	}
	if len(e.keyCols) == 1 && b.Cols[e.keyCols[0]].Type.IsInt() {
		for i, k := range b.Cols[e.keyCols[0]].Ints {
			kg := state.KeyGroup(state.HashInt(k), e.maxPar)
			t := state.SubtaskForKeyGroup(kg, e.maxPar, n)
			sels[t] = append(sels[t], int32(i))
		}
	} else {
		for i := 0; i < b.Len; i++ {
			kg := state.KeyGroup(state.HashRow(b, e.keyCols, i), e.maxPar)
			t := state.SubtaskForKeyGroup(kg, e.maxPar, n)
			sels[t] = append(sels[t], int32(i))
		}
	}
	for t, sel := range sels {
		if len(sel) == 0 {
			continue
		}
		nb := row.NewBatch(b.Schema)
		nb.AppendSelected(b, sel)
		e.targets[t].send(Message{Kind: MsgData, Batch: nb})
	}
	b.Release()
}

func (e *edgeOutput) Watermark(wm int64) { e.control(Message{Kind: MsgWatermark, Watermark: wm}) }

func (e *edgeOutput) control(m Message) {
	for _, t := range e.targets {
		t.send(m)
	}
}

// fanOut sends to several outputs; all but the last get a copy.
type fanOut []Output

func (f fanOut) Collect(b *row.Batch) {
	for i, o := range f {
		if i == len(f)-1 {
			o.Collect(b)
		} else {
			o.Collect(b.Clone())
		}
	}
}

func (f fanOut) Watermark(wm int64) {
	for _, o := range f {
		o.Watermark(wm)
	}
}

// discardOutput is the output of a node nobody consumes.
type discardOutput struct{}

func (discardOutput) Collect(b *row.Batch) { b.Release() }
func (discardOutput) Watermark(int64)      {}

// countingOutput counts rows a node's subtask emits.
type countingOutput struct {
	out  Output
	m    *NodeMetrics
	sc   *SubtaskCounters
	size *recordSizer // a source's records
}

func (c countingOutput) Collect(b *row.Batch) {
	c.m.RowsOut.Add(int64(b.Len))
	c.sc.RowsOut.Add(int64(b.Len))
	c.size.add(b)
	c.out.Collect(b)
}

func (c countingOutput) Watermark(wm int64) { c.out.Watermark(wm) }
