package window

import (
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/state"
)

var benchSchema = row.MustSchema(
	row.Field{Name: "k", Type: row.Int64},
	row.Field{Name: "ts", Type: row.Timestamp},
	row.Field{Name: "v", Type: row.Int64},
	row.Field{Name: "f", Type: row.Float64},
)

// benchFeed makes 1024-row batches of keys drawn by key(i) with event time
// advancing msPerRow per row, and advances the watermark after each batch.
type benchFeed struct {
	b        *row.Batch
	rows     int64
	msPerRow float64
	key      func(i int64) int64
}

func newFeed(msPerRow float64, key func(int64) int64) *benchFeed {
	b := row.NewBatch(benchSchema)
	for i := range row.DefaultBatchSize {
		b.Cols[0].Ints = append(b.Cols[0].Ints, 0)
		b.Cols[1].Ints = append(b.Cols[1].Ints, 0)
		b.Cols[2].Ints = append(b.Cols[2].Ints, int64(i%97))
		b.Cols[3].Floats = append(b.Cols[3].Floats, float64(i%89)/8)
	}
	b.SetLen(row.DefaultBatchSize)
	return &benchFeed{b: b, msPerRow: msPerRow, key: key}
}

func (f *benchFeed) next() (*row.Batch, int64) {
	for i := range f.b.Len {
		f.b.Cols[0].Ints[i] = f.key(f.rows)
		f.b.Cols[1].Ints[i] = int64(float64(f.rows) * f.msPerRow)
		f.rows++
	}
	return f.b, f.b.Cols[1].Ints[f.b.Len-1] - 1
}

func discard(b *row.Batch) { b.Release() }

// BenchmarkTumblingCountSum: int64 key, 1000 keys, 1-minute windows with
// 100 rows per key per window; the watermark follows each batch, so firing
// and purging are included. One op is one 1024-row batch.
func BenchmarkTumblingCountSum(b *testing.B) { benchTumbling(b, BackendHeap) }

// BenchmarkTumblingCountSumBadger is the same with the state in badger.
func BenchmarkTumblingCountSumBadger(b *testing.B) { benchTumbling(b, BackendBadger) }

func benchTumbling(b *testing.B, backend string) {
	cfg := Config{Kind: Tumbling, Size: 60_000, KeyFields: []string{"k"}, TimeField: "ts",
		Aggs: []Agg{{Name: "n", Fn: Count}, {Name: "s", Fn: Sum, Field: "v"}}, Backend: backend}
	if backend == BackendBadger {
		saved := state.BadgerMem
		defer func() { state.BadgerMem = saved }()
		state.BadgerMem = state.DefaultBadgerMem
		cfg.Dir = b.TempDir()
	}
	op, err := New(cfg, benchSchema)
	if err != nil {
		b.Fatal(err)
	}
	defer op.Close()
	r := rand.New(rand.NewPCG(1, 1))
	f := newFeed(60_000.0/100_000, func(int64) int64 { return r.Int64N(1000) })
	for range 200 { // keys exist
		bt, wm := f.next()
		op.Process(bt, nil)
		op.AdvanceWatermark(wm, discard)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		bt, wm := f.next()
		op.Process(bt, nil)
		op.AdvanceWatermark(wm, discard)
	}
	b.ReportMetric(float64(b.N)*row.DefaultBatchSize/time.Since(start).Seconds(), "rows/s")
}

// BenchmarkTumblingStringKey is the same with the key as a string (the
// encoded-key path).
func BenchmarkTumblingStringKey(b *testing.B) {
	s := row.MustSchema(row.Field{Name: "k", Type: row.String}, row.Field{Name: "ts", Type: row.Timestamp}, row.Field{Name: "v", Type: row.Int64})
	op, err := New(Config{Kind: Tumbling, Size: 60_000, KeyFields: []string{"k"}, TimeField: "ts",
		Aggs: []Agg{{Name: "n", Fn: Count}, {Name: "s", Fn: Sum, Field: "v"}}}, s)
	if err != nil {
		b.Fatal(err)
	}
	names := make([]string, 1000)
	for i := range names {
		names[i] = "customer-" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
	}
	bt := row.NewBatch(s)
	r := rand.New(rand.NewPCG(1, 1))
	var n int64
	next := func() int64 {
		bt.Reset()
		for range row.DefaultBatchSize {
			bt.Cols[0].Strs = append(bt.Cols[0].Strs, names[r.IntN(1000)])
			bt.Cols[1].Ints = append(bt.Cols[1].Ints, n*6/10)
			bt.Cols[2].Ints = append(bt.Cols[2].Ints, n%97)
			n++
		}
		bt.Len = row.DefaultBatchSize
		return n*6/10 - 1
	}
	for range 200 {
		wm := next()
		op.Process(bt, nil)
		op.AdvanceWatermark(wm, discard)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		wm := next()
		op.Process(bt, nil)
		op.AdvanceWatermark(wm, discard)
	}
	b.ReportMetric(float64(b.N)*row.DefaultBatchSize/time.Since(start).Seconds(), "rows/s")
}

var sliding = map[string]*struct {
	op   *Operator
	feed *benchFeed
}{}

// BenchmarkSliding5m1m4Aggs: 5-minute windows sliding by 1 minute (each row
// updates 5 accumulators), 1M distinct keys, 2M rows per minute of event
// time, count/sum/avg/max. The operator is warmed up once (6 minutes of
// event time) and kept across runs, so state is in its steady size.
func BenchmarkSliding5m1m4Aggs(b *testing.B) { benchSliding(b, BackendHeap) }

// BenchmarkSliding5m1m4AggsBadger is the same with the state in badger
// (production memory settings); heap-MiB is the Go heap in use at the end,
// state-MiB the database's size on disk.
func BenchmarkSliding5m1m4AggsBadger(b *testing.B) { benchSliding(b, BackendBadger) }

func benchSliding(b *testing.B, backend string) {
	const keys = 1_000_000
	sl := sliding[backend]
	if sl == nil {
		cfg := Config{Kind: Sliding, Size: 5 * 60_000, Slide: 60_000, KeyFields: []string{"k"}, TimeField: "ts",
			Aggs:    []Agg{{Name: "n", Fn: Count}, {Name: "s", Fn: Sum, Field: "v"}, {Name: "a", Fn: Avg, Field: "f"}, {Name: "m", Fn: Max, Field: "v"}},
			Backend: backend}
		if backend == BackendBadger {
			saved := state.BadgerMem
			defer func() { state.BadgerMem = saved }()
			state.BadgerMem = state.DefaultBadgerMem
			dir, err := os.MkdirTemp("", "sluice-bench-badger")
			if err != nil {
				b.Fatal(err)
			}
			cfg.Dir = dir
		}
		op, err := New(cfg, benchSchema)
		if err != nil {
			b.Fatal(err)
		}
		r := rand.New(rand.NewPCG(2, 2))
		sl = &struct {
			op   *Operator
			feed *benchFeed
		}{op, newFeed(60_000.0/2_000_000, func(int64) int64 { return r.Int64N(keys) })}
		sliding[backend] = sl
		for range 6 * 2_000_000 / row.DefaultBatchSize {
			bt, wm := sl.feed.next()
			op.Process(bt, nil)
			op.AdvanceWatermark(wm, discard)
		}
	}
	op, f := sl.op, sl.feed
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		bt, wm := f.next()
		op.Process(bt, nil)
		op.AdvanceWatermark(wm, discard)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)*row.DefaultBatchSize/el.Seconds(), "rows/s")
	entries, bytes := op.StateSize()
	b.ReportMetric(float64(bytes)/keys, "state-B/key")
	b.ReportMetric(float64(bytes)/float64(entries), "state-B/acc")
	b.ReportMetric(float64(entries), "accs")
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/keys, "heap-B/key")
	if backend == BackendBadger {
		b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
		b.ReportMetric(float64(bytes)/(1<<20), "state-MiB")
	}
}

var big struct {
	op   *Operator
	feed *benchFeed
}

// BenchmarkSnapshotPause builds ~1 GB of tumbling state (16M int64 keys in
// one open window, 4 aggregates), then repeatedly: Snapshot (timed), 20
// batches of random keys (each write to a frozen segment copies it; their
// worst batch time is reported too), Release.
func BenchmarkSnapshotPause(b *testing.B) {
	const keys = 16_000_000
	if big.op == nil {
		op, err := New(Config{Kind: Tumbling, Size: 1 << 40, KeyFields: []string{"k"}, TimeField: "ts",
			Aggs: []Agg{{Name: "n", Fn: Count}, {Name: "s", Fn: Sum, Field: "v"}, {Name: "mi", Fn: Min, Field: "v"}, {Name: "ma", Fn: Max, Field: "f"}}}, benchSchema)
		if err != nil {
			b.Fatal(err)
		}
		r := rand.New(rand.NewPCG(3, 3))
		big.op = op
		big.feed = newFeed(0.001, func(i int64) int64 {
			if i < keys {
				return i
			}
			return r.Int64N(keys)
		})
		for range keys / row.DefaultBatchSize {
			bt, _ := big.feed.next()
			op.Process(bt, nil)
		}
	}
	op, f := big.op, big.feed
	entries, bytes := op.StateSize()
	var pauses, batches []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		s := op.Snapshot()
		pauses = append(pauses, time.Since(t0))
		for range 20 {
			bt, _ := f.next()
			t1 := time.Now()
			op.Process(bt, nil)
			batches = append(batches, time.Since(t1))
		}
		s.Release()
	}
	b.StopTimer()
	slices.Sort(pauses)
	slices.Sort(batches)
	q := func(d []time.Duration, p float64) float64 {
		return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(pauses, 0.5), "pause-p50-ms")
	b.ReportMetric(q(pauses, 0.99), "pause-p99-ms")
	b.ReportMetric(q(pauses, 1), "pause-max-ms")
	b.ReportMetric(q(batches, 0.99), "cow-batch-p99-ms")
	b.ReportMetric(q(batches, 1), "cow-batch-max-ms")
	b.ReportMetric(float64(bytes)/(1<<20), "state-MiB")
	b.ReportMetric(float64(entries), "accs")
}

// TestProcessAllocs: once keys and windows exist, Process allocates
// nothing, for int and encoded keys and every kind.
func TestProcessAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts need a full run: skipped only with -short")
	}
	for _, ks := range [][]string{{"ki"}, {"ki", "ks"}} {
		for _, cfg := range []Config{{Kind: Tumbling, Size: 1000}, {Kind: Sliding, Size: 1000, Slide: 250}, {Kind: Session, Gap: 1000}} {
			cfg.KeyFields, cfg.TimeField, cfg.Aggs = ks, "ts", testAggs
			op, _ := New(cfg, testSchema)
			g := &gen{r: rand.New(rand.NewPCG(1, 1)), now: 500}
			b := batchOf(t, g.rows(1024, 100))
			op.Process(b, nil)
			if n := testing.AllocsPerRun(20, func() { op.Process(b, nil) }); n != 0 {
				t.Errorf("%s %v: %v allocations per 1024-row Process", cfg.Kind, ks, n)
			}
		}
	}
}
