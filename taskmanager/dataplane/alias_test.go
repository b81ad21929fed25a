package dataplane

import (
	"context"
	"fmt"
	goruntime "runtime"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
)

// A receiving task may keep strings of a batch after releasing it (a
// window's keys, a join's rows): they must not change while the data plane
// reuses its frame buffers and the pool its batches. Batches large enough
// to be written from their own buffers and small ones copied together,
// then checked after hundreds more went through the same buffers.
func TestReceivedStringsOutliveTheirBatch(t *testing.T) {
	ra, rb := newTestReceiver(), newTestReceiver()
	a := tcpFactory(t, ra, nil)
	b := tcpFactory(t, rb, nil)
	key := runtime.ChannelKey{Attempt: "alias", Task: 1}
	inbox := rb.add(key)
	s, err := a.Sender(context.Background(), b.Addr(), key)
	if err != nil {
		t.Fatal(err)
	}
	const batches = 400
	sizes := []int{1024, 3, 200, 1}
	errs := make(chan error, 1)
	go func() {
		for i := range batches {
			if err := s.Send(runtime.Message{Kind: runtime.MsgData, Batch: batch(i*2000, sizes[i%len(sizes)])}); err != nil {
				errs <- err
				return
			}
		}
		errs <- s.Close()
	}()
	type keptRow struct {
		id   int
		name string
	}
	var kept []keptRow
	for i := range batches {
		var m runtime.Message
		select {
		case m = <-inbox:
		case <-time.After(time.Minute):
			t.Fatalf("batch %d never arrived", i)
		}
		first, n := i*2000, sizes[i%len(sizes)]
		if err := checkBatch(m.Batch, first, n); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		for _, r := range []int{0, n / 2, n - 1} {
			kept = append(kept, keptRow{first + r, m.Batch.Cols[1].Strs[r]})
		}
		m.Batch.Release()
		b.Grant(key, 1)
		if i%50 == 0 {
			goruntime.GC()
		}
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	goruntime.GC()
	for _, k := range kept {
		if want := fmt.Sprintf("name-%011d", k.id); k.name != want {
			t.Fatalf("kept string of row %d became %q, want %q", k.id, k.name, want)
		}
	}
}
