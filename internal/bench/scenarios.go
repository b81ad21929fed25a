package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/sluice-stream/sluice/engine/row"
	rt "github.com/sluice-stream/sluice/engine/runtime"
)

var sink int64 // keeps the baselines' results alive

func line(scenario, what string, m measurement, loop *measurement) {
	ratio := "—"
	if loop != nil {
		ratio = fmt.Sprintf("%.2f×", m.wall.Seconds()/loop.wall.Seconds())
	}
	add(scenario, what, fmt.Sprintf("%d", m.rows), m.wall.Round(time.Millisecond).String(), mrps(m.perSec()), mrps(m.perCPUSec()), ratio)
}

// (a) sequence → filter → project → discard.
const specA = `{"name": "bench-a", "parallelism": 1,
 "nodes": [
  {"id": "src", "type": "sequence", "params": {"rows": 1, "keys": 1000}},
  {"id": "f", "type": "filter", "inputs": ["src"], "params": {"expr": "key % 2 == 0 && id > 10"}},
  {"id": "p", "type": "project", "inputs": ["f"], "params": {"fields": [
     {"name": "v", "expr": "id * 2 + key"}, {"name": "sec", "expr": "ts - ts % 1000"}]}},
  {"id": "out", "type": "discard", "inputs": ["p"]}]}`

func scenarioA() {
	n := int64(50_000_000 * *scale)
	loop := best(*reps, func() measurement {
		return timeIt(n, func() {
			var s int64
			for id := int64(0); id < n; id++ {
				key, ts := id%1000, id
				if key%2 == 0 && id > 10 {
					s += id*2 + key
					s ^= ts - ts%1000
				}
			}
			sink += s
		})
	})
	line("(a) filter+project", "hand-written loop", loop, nil)
	for _, p := range []int{1, 2} {
		m := best(*reps, func() measurement {
			return timeIt(n, func() { mustRun(specA, fmt.Sprintf("nodes.src.params.rows=%d", n), fmt.Sprintf("parallelism=%d", p)) })
		})
		line("(a) filter+project", fmt.Sprintf("engine, parallelism %d", p), m, &loop)
	}
}

// (b) keyBy + tumbling 1 s event-time window, count and sum; 1000 keys and
// 100 rows per ms of event time: 100 rows per key per window.
const specB = `{"name": "bench-b", "parallelism": 1,
 "nodes": [
  {"id": "src", "type": "sequence", "params": {"rows": 1, "keys": 1000, "intervalMs": 0.01}},
  {"id": "win", "type": "window", "inputs": ["src"], "params": {"keys": ["key"], "type": "tumbling", "size": "1s",
     "aggregates": [{"name": "count", "fn": "count"}, {"name": "sum", "fn": "sum", "field": "id"}]}},
  {"id": "out", "type": "discard", "inputs": ["win"]}]}`

func scenarioB() {
	n := int64(30_000_000 * *scale)
	type acc struct{ count, sum int64 }
	loop := best(*reps, func() measurement {
		return timeIt(n, func() {
			accs := make(map[int64]acc, 1000)
			cur := int64(-1)
			var s int64
			flush := func() {
				for k, a := range accs {
					s += k ^ a.count ^ a.sum ^ cur
				}
				clear(accs)
			}
			for id := int64(0); id < n; id++ {
				key, ts := id%1000, id/100 // intervalMs 0.01
				if w := ts - ts%1000; w != cur {
					flush()
					cur = w
				}
				a := accs[key]
				a.count++
				a.sum += id
				accs[key] = a
			}
			flush()
			sink += s
		})
	})
	line("(b) tumbling 1 s count+sum", "hand-written loop (Go map per window)", loop, nil)
	for _, p := range []int{1, 2} {
		m := best(*reps, func() measurement {
			return timeIt(n, func() { mustRun(specB, fmt.Sprintf("nodes.src.params.rows=%d", n), fmt.Sprintf("parallelism=%d", p)) })
		})
		line("(b) tumbling 1 s count+sum", fmt.Sprintf("engine, parallelism %d", p), m, &loop)
	}
}

// (c) the sizing article's job: keyBy user, sliding 5 min window every
// 1 min, 4 aggregates, 1 M distinct keys. 10 M rows over 10 min of event time.
const specC = `{"name": "bench-c", "parallelism": 1,
 "nodes": [
  {"id": "src", "type": "sequence", "params": {"rows": 1, "keys": 1000000, "intervalMs": 0.06}},
  {"id": "win", "type": "window", "inputs": ["src"], "params": {"keys": ["key"], "type": "sliding", "size": "5m", "slide": "1m",
     "aggregates": [{"name": "count", "fn": "count"}, {"name": "sum", "fn": "sum", "field": "id"},
                    {"name": "min", "fn": "min", "field": "id"}, {"name": "max", "fn": "max", "field": "id"}]}},
  {"id": "out", "type": "discard", "inputs": ["win"]}]}`

func scenarioC() {
	n := int64(10_000_000 * *scale)
	// The plain program keeps, per key, a ring of the last 6 one-minute
	// panes under one map lookup, and combines 5 panes per key when a
	// window ends: what a careful hand-written job would do.
	type pane struct{ idx, count, sum, min, max int64 }
	type panes [6]pane
	loop := best(*reps, func() measurement {
		return timeIt(n, func() {
			m := make(map[int64]*panes)
			var s int64
			fire := func(last int64) { // windows ending after pane `last`
				for k, kp := range m {
					var c, sum, lo, hi int64
					live := false
					for i := range kp {
						p := &kp[i]
						if p.count == 0 || p.idx <= last-5 || p.idx > last {
							continue
						}
						live = true
						if c == 0 {
							lo, hi = p.min, p.max
						}
						c += p.count
						sum += p.sum
						lo, hi = min(lo, p.min), max(hi, p.max)
					}
					if !live {
						delete(m, k)
						continue
					}
					s += c ^ sum ^ lo ^ hi ^ k
				}
			}
			cur := int64(0)
			for id := int64(0); id < n; id++ {
				key, ts := id%1_000_000, id*6/100
				pi := ts / 60_000
				for ; cur < pi; cur++ {
					fire(cur)
				}
				kp := m[key]
				if kp == nil {
					kp = new(panes)
					m[key] = kp
				}
				p := &kp[pi%6]
				if p.idx != pi || p.count == 0 {
					*p = pane{idx: pi, min: id, max: id}
				}
				p.count++
				p.sum += id
				p.min, p.max = min(p.min, id), max(p.max, id)
			}
			for end := cur + 5; cur < end; cur++ {
				fire(cur)
			}
			sink += s
		})
	})
	line("(c) sliding 5 min/1 min, 4 aggs, 1 M keys", "hand-written loop (map of per-key pane rings)", loop, nil)
	var peak uint64
	m := best(*reps, func() measurement {
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		stop := sampleHeap(&peak)
		mm := timeIt(n, func() { mustRun(specC, fmt.Sprintf("nodes.src.params.rows=%d", n)) })
		stop()
		peak -= min(peak, before.HeapAlloc)
		return mm
	})
	line("(c) sliding 5 min/1 min, 4 aggs, 1 M keys", "engine, parallelism 1", m, &loop)
	fmt.Fprintf(os.Stderr, "bench (c): peak heap above idle %.0f MB = %.0f bytes per key (1 M keys, 5 windows each)\n", float64(peak)/1e6, float64(peak)/1e6)
	add("(c) state", "peak heap per key (engine)", "", "", fmt.Sprintf("%.0f B/key", float64(peak)/1e6), "", "")
	// The same job with the window state in badger (stateBackend: badger):
	// the Go heap holds memtables and caches, not the state.
	var bpeak uint64
	mb := best(*reps, func() measurement {
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		stop := sampleHeap(&bpeak)
		mm := timeIt(n, func() { mustRun(specC, fmt.Sprintf("nodes.src.params.rows=%d", n), "stateBackend=badger") })
		stop()
		bpeak -= min(bpeak, before.HeapAlloc)
		return mm
	})
	line("(c) sliding 5 min/1 min, 4 aggs, 1 M keys", "engine, parallelism 1, badger state backend", mb, &loop)
	fmt.Fprintf(os.Stderr, "bench (c): badger: peak heap above idle %.0f MB\n", float64(bpeak)/1e6)
	add("(c) state", "peak heap per key (engine, badger)", "", "", fmt.Sprintf("%.0f B/key", float64(bpeak)/1e6), "", "")
}

// sampleHeap records the peak live heap until stopped.
func sampleHeap(peak *uint64) func() {
	done := make(chan struct{})
	fin := make(chan struct{})
	go func() {
		defer close(fin)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-done:
				return
			case <-t.C:
				runtime.ReadMemStats(&ms)
				*peak = max(*peak, ms.HeapAlloc)
			}
		}
	}()
	return func() { close(done); <-fin }
}

// pause: checkpoint pause (alignment + synchronous snapshot) with about 1 GB
// of heap window state: 16 M keys in one 1 h window, checkpoints every 2 s.
const specPause = `{"name": "bench-pause", "parallelism": 1,
 "checkpoint": {"interval": "2s"},
 "nodes": [
  {"id": "src", "type": "sequence", "params": {"rows": 1, "keys": 16000000, "intervalMs": 0.0001}},
  {"id": "win", "type": "window", "inputs": ["src"], "params": {"keys": ["key"], "type": "tumbling", "size": "1h",
     "aggregates": [{"name": "count", "fn": "count"}, {"name": "sum", "fn": "sum", "field": "id"}]}},
  {"id": "out", "type": "discard", "inputs": ["win"]}]}`

func scenarioPause() {
	n := int64(96_000_000 * *scale)
	keys := int64(16_000_000 * *scale)
	var peak uint64
	lat := &batchLat{keys: keys}
	graphHook = func(g *rt.Graph) {
		for _, nd := range g.Nodes {
			if nd.ID == "win" {
				mk := nd.NewOperator
				nd.NewOperator = func() rt.Operator { return &timedOp{Operator: mk(), lat: lat} }
			}
		}
	}
	defer func() { graphHook = nil }()
	stop := sampleHeap(&peak)
	var p rt.Pauses
	m := timeIt(n, func() {
		r := mustRun(specPause, fmt.Sprintf("nodes.src.params.rows=%d", n), fmt.Sprintf("nodes.src.params.keys=%d", keys))
		p = r.Pauses
	})
	stop()
	line("checkpoint pause, ~1 GB heap state", "engine, parallelism 1", m, nil)
	add("checkpoint pause", fmt.Sprintf("%d pauses of the window subtask (%d of sources left out): p50 %v, p99 %v, max %v",
		p.N, p.Other, p.P50, p.P99, p.Max), "", "", fmt.Sprintf("peak heap %.1f GB", float64(peak)/1e9), "", "")
	for _, k := range []struct {
		what string
		d    []time.Duration
	}{
		{"every batch", lat.all}, {fmt.Sprintf("first %d batches after each of %d snapshots", afterBatches, lat.snaps), lat.after},
		{"every batch, thread CPU", lat.allCPU}, {"first batches after a snapshot, thread CPU", lat.afterCPU},
		{fmt.Sprintf("first batches after each of the %d snapshots taken once every key existed, thread CPU", lat.fullSnaps), lat.fullCPU},
		{fmt.Sprintf("first batches after each of the %d snapshots taken while keys were added, thread CPU", lat.snaps-lat.fullSnaps), lat.fillCPU},
	} {
		s := summary(k.d)
		add("batch latency (1024 rows)", fmt.Sprintf("%s (%d): p50 %v, p99 %v, max %v", k.what, s.n, s.p50, s.p99, s.max), "", "", "", "", "")
	}
	// By position after the snapshot: how long the copy-on-write lasts.
	for k := 0; k < len(lat.byPos); k += 8 {
		s := summary(lat.byPos[k])
		fmt.Fprintf(os.Stderr, "bench pause: batch %d after a snapshot: thread CPU p50 %v p99 %v max %v\n", k, s.p50, s.p99, s.max)
	}
}

// afterBatches is how many batches after a snapshot count as "after a
// snapshot": the copy-on-write of the heap backend is paid by the writes
// that first touch a frozen segment.
const afterBatches = 64

// batchLat records how long the window operator took for each batch, and
// separately for the first batches after each snapshot. It is used on the
// task goroutine only.
type batchLat struct {
	all, after       []time.Duration // wall time
	allCPU, afterCPU []time.Duration // CPU time of the task's thread
	byPos            [afterBatches][]time.Duration
	since            int // batches since the last snapshot; -1 before the first
	snaps            int
	locked           bool
	// The source adds keys until keys rows went by, then updates them:
	// the batches after a snapshot split by whether every key existed when
	// it was taken (a write of a new key to a segment a snapshot holds
	// copies the segment; an update copies the record only).
	keys, rows       int64
	full             bool // the last snapshot was taken once every key existed
	fullSnaps        int
	fullCPU, fillCPU []time.Duration
}

// timedOp times its operator's Process calls.
type timedOp struct {
	rt.Operator
	lat *batchLat
}

func (o *timedOp) Open(ctx *rt.Context, r *rt.Restored) error {
	o.lat.since = -1
	return o.Operator.Open(ctx, r)
}

func (o *timedOp) Process(input int, b *row.Batch) error {
	l := o.lat
	if !l.locked {
		// The task goroutine keeps its thread, so that thread CPU time is
		// the batch's. It ends with the task.
		runtime.LockOSThread()
		l.locked = true
	}
	rows := int64(b.Len) // the operator releases b
	c0, t0 := threadCPU(), time.Now()
	err := o.Operator.Process(input, b)
	d, c := time.Since(t0), threadCPU()-c0
	l.all = append(l.all, d)
	l.allCPU = append(l.allCPU, c)
	if l.since >= 0 && l.since < afterBatches {
		l.after = append(l.after, d)
		l.afterCPU = append(l.afterCPU, c)
		l.byPos[l.since] = append(l.byPos[l.since], c)
		if l.full {
			l.fullCPU = append(l.fullCPU, c)
		} else {
			l.fillCPU = append(l.fillCPU, c)
		}
		l.since++
	}
	l.rows += rows
	return err
}

func (o *timedOp) Snapshot(id int64) (rt.Snapshot, error) {
	o.lat.since = 0
	o.lat.snaps++
	o.lat.full = o.lat.rows >= o.lat.keys
	if o.lat.full {
		o.lat.fullSnaps++
	}
	return o.Operator.Snapshot(id)
}

type durSummary struct {
	n             int
	p50, p99, max time.Duration
}

func summary(ds []time.Duration) durSummary {
	if len(ds) == 0 {
		return durSummary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(f float64) time.Duration {
		return s[min(len(s)-1, int(f*float64(len(s))))].Round(10 * time.Microsecond)
	}
	return durSummary{n: len(s), p50: q(0.5), p99: q(0.99), max: s[len(s)-1].Round(10 * time.Microsecond)}
}
