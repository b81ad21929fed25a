package dataplane

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// The data-plane rate between two processes over loopback (here two
// Networks in one process, each with its own connections): batches of 1024
// rows of (int64, string of 16, float64), encoded, sent, decoded and
// delivered, credits given back by a consumer per channel. MB/s counts the
// encoded batch bytes.
//
//	go test -run X -bench . -benchtime 5s -count 5 ./taskmanager/dataplane/
//
// The raw cases send the encoded batch as is and deliver data frames
// without decoding them: the transport alone, without the row codec.
func BenchmarkTCP(b *testing.B) {
	benchTransport(b, func(b *testing.B, recv runtime.Receiver, raw bool) network {
		n, err := Listen(Config{Listen: "127.0.0.1:0", Receiver: recv, Logger: quiet, rawData: raw})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { n.Close() })
		return n
	})
}

type benchFactory func(b *testing.B, recv runtime.Receiver, raw bool) network

type rawSender interface{ sendRaw(p []byte) error }

func benchTransport(b *testing.B, newNet benchFactory) {
	for _, raw := range []bool{false, true} {
		for _, channels := range []int{1, 8} {
			name := "codec"
			if raw {
				name = "raw"
			}
			b.Run(name+"/channels="+strconv.Itoa(channels), func(b *testing.B) { benchChannels(b, newNet, raw, channels) })
		}
	}
}

func benchBatch() *row.Batch {
	r := rand.New(rand.NewPCG(1, 2))
	b := row.NewBatch(testSchema)
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var s [16]byte
	for range 1024 {
		for i := range s {
			s[i] = letters[r.IntN(len(letters))]
		}
		b.Cols[0].Ints = append(b.Cols[0].Ints, r.Int64N(1_000_000))
		b.Cols[1].Strs = append(b.Cols[1].Strs, string(s[:]))
		b.Cols[2].Floats = append(b.Cols[2].Floats, r.Float64()*1000)
	}
	b.Len = 1024
	return b
}

func benchChannels(b *testing.B, newNet benchFactory, raw bool, channels int) {
	ra, rb := newTestReceiver(), newTestReceiver()
	src, dst := newNet(b, ra, raw), newNet(b, rb, raw)
	tmpl := benchBatch()
	enc := row.AppendBatchPacked(nil, tmpl)
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()

	var consumers sync.WaitGroup
	keys := make([]runtime.ChannelKey, channels)
	for i := range keys {
		keys[i] = runtime.ChannelKey{Attempt: "bench", Task: int32(i), Channel: 0}
		inbox := rb.add(keys[i])
		consumers.Add(1)
		go func() {
			defer consumers.Done()
			for m := range inbox {
				if m.Batch != nil {
					m.Batch.Release()
				}
				dst.Grant(keys[i], 1)
				if m.Kind == runtime.MsgEnd {
					return
				}
			}
		}()
	}
	senders := make([]runtime.ChannelSender, channels)
	for i, k := range keys {
		s, err := src.Sender(context.Background(), dst.Addr(), k)
		if err != nil {
			b.Fatal(err)
		}
		senders[i] = s
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	var wg sync.WaitGroup
	for i, s := range senders {
		n := b.N / channels
		if i < b.N%channels {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				if raw {
					if err := s.(rawSender).sendRaw(enc); err != nil {
						b.Error(err)
						return
					}
					continue
				}
				// A fresh batch per send, as a task's: Send takes it.
				if err := s.Send(runtime.Message{Kind: runtime.MsgData, Batch: tmpl.Clone()}); err != nil {
					b.Error(err)
					return
				}
			}
			if err := s.Send(runtime.Message{Kind: runtime.MsgEnd}); err != nil {
				b.Error(err)
			}
			s.Close()
		}()
	}
	wg.Wait()
	consumers.Wait()
	b.StopTimer()
	// The machine is shared: wall-clock rates move with the neighbours'
	// load, the CPU spent per batch (both processes' sides, the consumers
	// and this loop included) much less.
	cpu := (cpuTime() - cpu0).Seconds()
	b.ReportMetric(cpu*1e9/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(len(enc))*float64(b.N)/1e6/cpu, "MB/cpu-s")
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRowCodec is the row codec's share of the codec cases: encoding
// and decoding the same batch on one goroutine, no transport.
func BenchmarkRowCodec(b *testing.B) {
	tmpl := benchBatch()
	enc := row.AppendBatchPacked(nil, tmpl)
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	var buf []byte
	cpu0 := cpuTime()
	for b.Loop() {
		buf = row.AppendBatchPacked(buf[:0], tmpl)
		out := row.NewBatch(testSchema)
		if _, err := row.DecodeBatch(buf, out); err != nil {
			b.Fatal(err)
		}
		out.Release()
	}
	cpu := (cpuTime() - cpu0).Seconds()
	b.ReportMetric(cpu*1e9/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(len(enc))*float64(b.N)/1e6/cpu, "MB/cpu-s")
}
