package window

import (
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/internal/cputime"
)

func threadCPU() time.Duration { return cputime.Thread() }

// BenchmarkBatchesAfterSnapshot is the pause scenario without the runtime:
// COW_KEYS int64 keys (16 M by default) in one window (count+sum), then per
// op a snapshot written on another goroutine, as the uploader does, and
// released when written, while 3125 batches of random existing keys go on;
// COW_DELAY=1 starts the writer only after the first 64 batches. It reports
// the thread CPU of a batch over all batches and over the first 64 after
// each snapshot (the first op left out: segments made before any snapshot
// are copied then), and the segments copied per op.
func BenchmarkBatchesAfterSnapshot(b *testing.B) {
	keys := int64(16_000_000)
	if s := os.Getenv("COW_KEYS"); s != "" {
		keys, _ = strconv.ParseInt(s, 10, 64)
	}
	delay := os.Getenv("COW_DELAY") != ""
	op, err := New(Config{Kind: Tumbling, Size: 1 << 40, KeyFields: []string{"k"}, TimeField: "ts",
		Aggs: []Agg{{Name: "n", Fn: Count}, {Name: "s", Fn: Sum, Field: "v"}}}, benchSchema)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 3))
	f := newFeed(0.0001, func(i int64) int64 {
		if i < keys {
			return i
		}
		return r.Int64N(keys)
	})
	for range keys / 1024 {
		bt, _ := f.next()
		op.Process(bt, nil)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var all, after []time.Duration
	copies := 0
	b.ResetTimer()
	for n := range b.N + 1 {
		s := op.Snapshot()
		done, start := make(chan struct{}), make(chan struct{})
		if !delay {
			close(start)
		}
		go func() {
			<-start
			var buf []byte
			for _, kg := range s.KeyGroups() {
				buf = s.WriteKeyGroup(kg, buf[:0])
			}
			s.Release()
			close(done)
		}()
		cp := op.c.Copies
		for i := range 3125 {
			bt, _ := f.next()
			c0 := threadCPU()
			op.Process(bt, nil)
			d := threadCPU() - c0
			if n > 0 {
				all = append(all, d)
				if i < 64 {
					after = append(after, d)
				}
			}
			if i == 63 && delay {
				close(start)
			}
		}
		if n > 0 {
			copies += op.c.Copies - cp
		}
		<-done
	}
	b.StopTimer()
	q := func(d []time.Duration, p float64) float64 {
		d = slices.Clone(d)
		slices.Sort(d)
		return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(all, 0.5), "all-p50-ms")
	b.ReportMetric(q(all, 0.99), "all-p99-ms")
	b.ReportMetric(q(after, 0.5), "after-p50-ms")
	b.ReportMetric(q(after, 0.99), "after-p99-ms")
	b.ReportMetric(float64(copies)/float64(b.N), "copies/op")
}
