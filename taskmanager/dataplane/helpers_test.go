package dataplane

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

var testSchema = row.MustSchema(
	row.Field{Name: "id", Type: row.Int64},
	row.Field{Name: "name", Type: row.String},
	row.Field{Name: "v", Type: row.Float64},
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testReceiver is a process's tasks as the network sees them: per channel
// an inbox with room for exactly the channel's credits, so a message beyond
// them fails Deliver as the engine's does.
type testReceiver struct {
	mu     sync.Mutex
	chans  map[runtime.ChannelKey]chan runtime.Message
	schema *row.Schema // of every channel; testSchema when nil
}

func newTestReceiver() *testReceiver {
	return &testReceiver{chans: map[runtime.ChannelKey]chan runtime.Message{}}
}

// add declares channel key and returns its inbox.
func (r *testReceiver) add(key runtime.ChannelKey) chan runtime.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan runtime.Message, runtime.ChannelCredits)
	r.chans[key] = ch
	return ch
}

func (r *testReceiver) remove(key runtime.ChannelKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.chans, key)
}

func (r *testReceiver) Schema(key runtime.ChannelKey) *row.Schema {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.chans[key] == nil {
		return nil
	}
	if r.schema != nil {
		return r.schema
	}
	return testSchema
}

func (r *testReceiver) Deliver(key runtime.ChannelKey, m runtime.Message) error {
	r.mu.Lock()
	ch := r.chans[key]
	r.mu.Unlock()
	if ch == nil {
		return fmt.Errorf("no channel %v", key)
	}
	select {
	case ch <- m:
		return nil
	default:
		return fmt.Errorf("channel %v: message beyond its credits", key)
	}
}

// network is what the tests and benchmarks need of either transport.
type network interface {
	runtime.Network
	Addr() string
	Close() error
}

type netFactory func(t testing.TB, recv runtime.Receiver, onLost func(string, error)) network

func tcpFactory(t testing.TB, recv runtime.Receiver, onLost func(string, error)) network {
	n, err := Listen(Config{Listen: "127.0.0.1:0", Receiver: recv, OnPeerLost: onLost, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// batch returns a batch of rows first..first+n-1 of the test schema.
func batch(first, n int) *row.Batch {
	b := row.NewBatch(testSchema)
	for i := first; i < first+n; i++ {
		b.Cols[0].Ints = append(b.Cols[0].Ints, int64(i))
		b.Cols[1].Strs = append(b.Cols[1].Strs, fmt.Sprintf("name-%011d", i))
		b.Cols[2].Floats = append(b.Cols[2].Floats, float64(i)/2)
	}
	b.Len = n
	return b
}

// checkBatch checks that b holds rows first..first+n-1.
func checkBatch(b *row.Batch, first, n int) error {
	if b.Len != n {
		return fmt.Errorf("batch of %d rows, want %d", b.Len, n)
	}
	for i := range n {
		id := first + i
		if b.Cols[0].Ints[i] != int64(id) || b.Cols[1].Strs[i] != fmt.Sprintf("name-%011d", id) || b.Cols[2].Floats[i] != float64(id)/2 {
			return fmt.Errorf("row %d is (%v, %v, %v), want id %d", i, b.Value(i, 0), b.Value(i, 1), b.Value(i, 2), id)
		}
	}
	return nil
}

// script is the message sequence a test channel sends: batches of rows,
// a watermark after each, a barrier every 5 batches, then end-data, a final
// barrier and end.
func script(batches, rows int) []runtime.Message {
	var ms []runtime.Message
	for i := range batches {
		ms = append(ms, runtime.Message{Kind: runtime.MsgData, Batch: batch(i*rows, rows)})
		ms = append(ms, runtime.Message{Kind: runtime.MsgWatermark, Watermark: int64(i*rows - 1000)})
		if i%5 == 4 {
			ms = append(ms, runtime.Message{Kind: runtime.MsgBarrier, Barrier: runtime.Trigger{ID: int64(i), Savepoint: i%10 == 9}})
		}
		if i == batches/2 {
			ms = append(ms, runtime.Message{Kind: runtime.MsgIdle})
		}
	}
	return append(ms,
		runtime.Message{Kind: runtime.MsgEndData},
		runtime.Message{Kind: runtime.MsgBarrier, Barrier: runtime.Trigger{ID: 1 << 40, Final: true, Stop: true}},
		runtime.Message{Kind: runtime.MsgEnd})
}

// expect consumes inbox like the receiving task: checks each message
// against the script, releases it and grants its credit back.
func expect(n runtime.Network, key runtime.ChannelKey, inbox chan runtime.Message, batches, rows int) error {
	want := script(batches, rows)
	for i, w := range want {
		var m runtime.Message
		select {
		case m = <-inbox:
		case <-time.After(time.Minute):
			return fmt.Errorf("channel %v: message %d never arrived", key, i)
		}
		if m.Kind != w.Kind {
			return fmt.Errorf("channel %v: message %d is kind %d, want %d", key, i, m.Kind, w.Kind)
		}
		switch m.Kind {
		case runtime.MsgData:
			if err := checkBatch(m.Batch, int(w.Batch.Cols[0].Ints[0]), w.Batch.Len); err != nil {
				return fmt.Errorf("channel %v: message %d: %w", key, i, err)
			}
			m.Batch.Release()
		case runtime.MsgWatermark:
			if m.Watermark != w.Watermark {
				return fmt.Errorf("channel %v: watermark %d, want %d", key, m.Watermark, w.Watermark)
			}
		case runtime.MsgBarrier:
			if m.Barrier != w.Barrier {
				return fmt.Errorf("channel %v: barrier %+v, want %+v", key, m.Barrier, w.Barrier)
			}
		}
		if w.Batch != nil {
			w.Batch.Release()
		}
		n.Grant(key, 1)
	}
	return nil
}

// sendAll sends the script of a channel and closes it.
func sendAll(ctx context.Context, n runtime.Network, addr string, key runtime.ChannelKey, batches, rows int) error {
	s, err := n.Sender(ctx, addr, key)
	if err != nil {
		return err
	}
	for _, m := range script(batches, rows) {
		if err := s.Send(m); err != nil {
			return err
		}
	}
	return s.Close()
}

// lostRecorder records OnPeerLost calls.
type lostRecorder chan string

func (l lostRecorder) onLost(addr string, err error) {
	if err == nil {
		panic("OnPeerLost without an error")
	}
	l <- addr
}
