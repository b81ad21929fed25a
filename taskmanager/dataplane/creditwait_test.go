package dataplane

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
)

// A sender counts the time its Send waited for a credit (back-pressure),
// and nothing while it had credits.
func TestCreditWaitCounted(t *testing.T) {
	ra, rb := newTestReceiver(), newTestReceiver()
	a, b := tcpFactory(t, ra, nil), tcpFactory(t, rb, nil)
	key := runtime.ChannelKey{Attempt: "x", Task: 1, Channel: 0}
	in := rb.add(key)
	cs, err := a.Sender(context.Background(), b.Addr(), key)
	if err != nil {
		t.Fatal(err)
	}
	var waited atomic.Int64
	c, ok := cs.(runtime.CreditWaitCounter)
	if !ok {
		t.Fatalf("%T is no runtime.CreditWaitCounter", cs)
	}
	c.CountCreditWait(&waited)
	for i := range runtime.ChannelCredits {
		if err := cs.Send(runtime.Message{Kind: runtime.MsgData, Batch: batch(i, 10)}); err != nil {
			t.Fatal(err)
		}
	}
	if w := waited.Load(); w != 0 {
		t.Fatalf("%v counted while every send had a credit", time.Duration(w))
	}
	blocked := make(chan error, 1)
	go func() { blocked <- cs.Send(runtime.Message{Kind: runtime.MsgWatermark, Watermark: 1}) }()
	time.Sleep(20 * time.Millisecond) // let it block
	m := <-in
	m.Batch.Release()
	b.Grant(key, 1)
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	if waited.Load() <= 0 {
		t.Fatal("the send that waited for a credit counted nothing")
	}
}
