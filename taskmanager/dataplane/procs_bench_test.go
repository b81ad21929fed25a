package dataplane

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// BenchmarkTwoProcs measures issue #9's data-plane target as a cluster
// meets it: two processes over loopback, the sender (this test process)
// encoding batches with the row codec, the receiver (this test binary run
// again, see TestMain) decoding them and handing them to a consumer per
// channel that releases each batch and grants its credit back. MB/s counts
// the encoded batch bytes as sent (packed integers); the CPU figures are
// each process's own time (getrusage), the receiver's counted from its
// first message.
//
//	go test -run '^$' -bench TwoProcs -benchtime 2s ./taskmanager/dataplane/
//
// -cpuprofile profiles the sending process; SLUICE_DATAPLANE_BENCH_RECVPROF=FILE
// has each receiving process write its CPU profile there (the last run's
// stays).
//
// Schemas: "raw" is the mixed batch sent encoded as it is and delivered
// without decoding — the data plane alone, across processes, without the
// row codec (as BenchmarkTCP's raw cases in one process); "mixed" is BenchmarkTCP's batch (1024 rows of int64, string of
// 16, float64: 29.7 KB packed, 28.7 KB in varints); "seq" is what harness
// job (b) sends across: the sequence source's (id, key, ts) rows split in
// two by the hash edge, 512-row batches of 2.6 KB packed (3.6 KB in
// varints).
func BenchmarkTwoProcs(b *testing.B) {
	for _, schema := range []string{"mixed", "seq", "raw"} {
		for _, channels := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/channels=%d", schema, channels), func(b *testing.B) { benchTwoProcs(b, schema, channels) })
		}
	}
}

const receiverEnv = "SLUICE_DATAPLANE_BENCH_RECEIVER" // schema,channels

var seqSchema = row.MustSchema(
	row.Field{Name: "id", Type: row.Int64},
	row.Field{Name: "key", Type: row.Int64},
	row.Field{Name: "ts", Type: row.Timestamp},
)

func benchSchema(name string) (*row.Schema, *row.Batch) {
	if name == "seq" {
		b := row.NewBatch(seqSchema)
		r := rand.New(rand.NewPCG(3, 4))
		id := int64(15_000_000)
		for range 512 {
			id += 1 + r.Int64N(3) // about half the ids go to the other subtask
			b.Cols[0].Ints = append(b.Cols[0].Ints, id)
			b.Cols[1].Ints = append(b.Cols[1].Ints, id%1000)
			b.Cols[2].Ints = append(b.Cols[2].Ints, 1_764_000_000_000+id/100)
		}
		b.Len = 512
		return seqSchema, b
	}
	return testSchema, benchBatch()
}

// TestMain runs the receiving process of BenchmarkTwoProcs when the
// benchmark starts this binary as one; otherwise the tests.
func TestMain(m *testing.M) {
	if v := os.Getenv(receiverEnv); v != "" {
		if err := receiverMain(v); err != nil {
			fmt.Fprintln(os.Stderr, "receiver:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// receiverMain serves the channels of one benchmark run: it prints its
// data address, then, once every channel ended, the CPU time it spent
// since its first message.
func receiverMain(arg string) error {
	name, chans, _ := strings.Cut(arg, ",")
	channels, err := strconv.Atoi(chans)
	if err != nil {
		return err
	}
	schema, _ := benchSchema(name)
	if path := os.Getenv("SLUICE_DATAPLANE_BENCH_RECVPROF"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	recv := newTestReceiver()
	recv.schema = schema
	var (
		first sync.Once
		cpu0  time.Duration
		wg    sync.WaitGroup
	)
	n, err := Listen(Config{Listen: "127.0.0.1:0", Receiver: recv, Logger: quiet, rawData: name == "raw"})
	if err != nil {
		return err
	}
	defer n.Close()
	for i := range channels {
		key := runtime.ChannelKey{Attempt: "bench", Task: int32(i)}
		inbox := recv.add(key)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range inbox {
				first.Do(func() { cpu0 = cpuTime() })
				if m.Batch != nil {
					m.Batch.Release()
				}
				n.Grant(key, 1)
				if m.Kind == runtime.MsgEnd {
					return
				}
			}
		}()
	}
	fmt.Printf("addr %s\n", n.Addr())
	wg.Wait()
	fmt.Printf("cpu %d\n", int64(cpuTime()-cpu0))
	return nil
}

func benchTwoProcs(b *testing.B, schemaName string, channels int) {
	_, tmpl := benchSchema(schemaName)
	enc := row.AppendBatchPacked(nil, tmpl)
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()

	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d", receiverEnv, schemaName, channels))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	waited := false
	defer func() {
		if !waited { // the benchmark failed midway
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	lines := bufio.NewScanner(out)
	field := func(want string) string {
		if !lines.Scan() {
			b.Fatalf("receiver process: no %q line (%v)", want, lines.Err())
		}
		k, v, _ := strings.Cut(lines.Text(), " ")
		if k != want {
			b.Fatalf("receiver process said %q, want %s", lines.Text(), want)
		}
		return v
	}
	addr := field("addr")

	src, err := Listen(Config{Listen: "127.0.0.1:0", Receiver: newTestReceiver(), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	senders := make([]runtime.ChannelSender, channels)
	for i := range senders {
		if senders[i], err = src.Sender(context.Background(), addr, runtime.ChannelKey{Attempt: "bench", Task: int32(i)}); err != nil {
			b.Fatal(err)
		}
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
				if schemaName == "raw" {
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
	recvNS, err := strconv.ParseInt(field("cpu"), 10, 64)
	b.StopTimer()
	sendCPU := cpuTime() - cpu0 // all written: the receiver has every end
	if err != nil {
		b.Fatal(err)
	}
	waited = true
	if err := cmd.Wait(); err != nil {
		b.Fatalf("receiver process: %v", err)
	}
	send, recv := sendCPU.Seconds(), time.Duration(recvNS).Seconds()
	b.ReportMetric((send+recv)*1e9/float64(b.N), "cpu-ns/op")
	b.ReportMetric(send*1e9/float64(b.N), "send-cpu-ns/op")
	b.ReportMetric(recv*1e9/float64(b.N), "recv-cpu-ns/op")
	b.ReportMetric(float64(len(enc))*float64(b.N)/1e6/(send+recv), "MB/cpu-s")
	b.ReportMetric(float64(tmpl.Len)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mrows/s")
}
