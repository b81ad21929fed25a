package window

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/state"
)

// TestCowCopiesRecordsOnly: the first update of existing keys after a
// snapshot copies the records of the segments it touches, not their slot
// arrays (the copy is what stalls the batches after a checkpoint); a key
// that comes or goes then gets its segment its own slot array.
func TestCowCopiesRecordsOnly(t *testing.T) {
	op, err := New(Config{Kind: Tumbling, Size: 1 << 40, KeyFields: []string{"k"}, TimeField: "ts",
		Aggs: []Agg{{Name: "n", Fn: Count}, {Name: "s", Fn: Sum, Field: "v"}}}, benchSchema)
	if err != nil {
		t.Fatal(err)
	}
	const keys = 20_000
	base := int64(0)
	f := newFeed(0.001, func(i int64) int64 { return base + i%keys })
	for range keys/1024 + 1 {
		bt, _ := f.next()
		op.Process(bt, nil)
	}
	c := op.core.(*windowCore[int64])
	snap := op.Snapshot()
	defer snap.Release()
	frozen := map[*state.Slot[int64]]bool{}
	for _, ts := range snap.data.(*coreSnap[int64]).tabs {
		ts.v.Segments(func(s *state.Segment[int64]) { frozen[unsafe.SliceData(s.Slots)] = true })
	}
	copied := func() (n, shared int) {
		for _, tb := range c.panes[0].tabs {
			if tb == nil {
				continue
			}
			tb.Segments(func(s *state.Segment[int64]) {
				if s.Ver > c.c.Frozen {
					n++
					if frozen[unsafe.SliceData(s.Slots)] {
						shared++
					}
				}
			})
		}
		return n, shared
	}
	bt, _ := f.next() // existing keys only
	op.Process(bt, nil)
	n, shared := copied()
	if n == 0 {
		t.Fatal("no segment was copied after the snapshot")
	}
	if shared != n {
		t.Errorf("%d of the %d segments copied after the snapshot copied their slot array too; an update writes only records", n-shared, n)
	}
	// New keys: the segments they land in stop sharing their slot arrays.
	base = 1 << 40
	bt, _ = f.next()
	op.Process(bt, nil)
	if n2, shared2 := copied(); shared2 >= shared || n2 < n {
		t.Errorf("after inserting new keys: %d copied segments, %d sharing slots (before: %d, %d)", n2, shared2, n, shared)
	}
}

// TestCowReuse runs a script while snapshots come and go, up to three
// live at once, released in any order, some written on another goroutine
// as the runtime does: each snapshot's bytes must be those of a reference
// operator stopped at the same point, and the final state and output those
// of the reference. Reused segments must never be ones a live snapshot
// still holds (run with -race too).
func TestCowReuse(t *testing.T) {
	for _, small := range []bool{false, true} {
		for _, cfg := range configs() {
			t.Run(fmt.Sprintf("%s/smallseg=%v", name(cfg), small), func(t *testing.T) {
				if small {
					defer func(v int) { state.SegMax = v }(state.SegMax)
					state.SegMax = 2
				}
				testCowReuse(t, cfg)
			})
		}
	}
}

func testCowReuse(t *testing.T, cfg Config) {
	steps := script(11, 400)
	op, _ := newOp(t, cfg)
	ref, _ := newOp(t, cfg)
	r := rand.New(rand.NewPCG(7, 7))
	type live struct {
		s    *Snapshot
		want map[int][]byte
		done chan map[int][]byte // written on another goroutine, or nil
	}
	var lives []*live
	check := func(l *live, got map[int][]byte) {
		t.Helper()
		if len(got) != len(l.want) {
			t.Fatalf("snapshot has %d key groups, want %d", len(got), len(l.want))
		}
		for kg, b := range l.want {
			if !bytes.Equal(b, got[kg]) {
				t.Fatalf("key group %d: snapshot bytes differ from the reference's at the same point", kg)
			}
		}
	}
	finish := func(i int) {
		l := lives[i]
		lives = slices.Delete(lives, i, i+1)
		if l.done != nil {
			check(l, <-l.done)
			return
		}
		check(l, snapBytes(l.s, cfg.MaxParallelism))
		l.s.Release()
	}
	var out, refOut [][]any
	for i := 0; i < len(steps); i += 5 {
		chunk := steps[i:min(i+5, len(steps))]
		out = append(out, run(t, op, chunk)...)
		refOut = append(refOut, run(t, ref, chunk)...)
		rs := ref.Snapshot()
		l := &live{s: op.Snapshot(), want: snapBytes(rs, cfg.MaxParallelism)}
		rs.Release()
		if r.IntN(2) == 0 {
			l.done = make(chan map[int][]byte, 1)
			go func(s *Snapshot) {
				b := snapBytes(s, cfg.MaxParallelism)
				s.Release()
				l.done <- b
			}(l.s)
		}
		lives = append(lives, l)
		for len(lives) > 3 || (len(lives) > 0 && r.IntN(3) == 0) {
			finish(r.IntN(len(lives)))
		}
	}
	for len(lives) > 0 {
		finish(0)
	}
	final := step{wm: math.MaxInt64}
	out = append(out, run(t, op, []step{final})...)
	refOut = append(refOut, run(t, ref, []step{final})...)
	sameRows(t, "with snapshots vs without", out, refOut)
}

func sameSnap(t *testing.T, got, want map[int][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("snapshot has %d key groups, want %d", len(got), len(want))
	}
	for kg, b := range want {
		if !bytes.Equal(b, got[kg]) {
			t.Fatalf("key group %d: snapshot bytes differ from the reference's at the same point", kg)
		}
	}
}

// TestCowConcurrentSnapshots: many snapshots, up to three live at once,
// each written on its own goroutine while the operator keeps updating the
// same keys (and adding some): every snapshot reads exactly the state at
// its point, as a reference operator's snapshot taken and written at that
// point does. Run with -race: the operator writes records' other copies
// while snapshots read them.
func TestCowConcurrentSnapshots(t *testing.T) {
	for _, small := range []bool{false, true} {
		t.Run(fmt.Sprintf("smallseg=%v", small), func(t *testing.T) {
			if small {
				defer func(v int) { state.SegMax = v }(state.SegMax)
				state.SegMax = 2
			}
			testCowConcurrent(t)
		})
	}
}

func testCowConcurrent(t *testing.T) {
	cfg := Config{Kind: Sliding, Size: 400, Slide: 100, KeyFields: []string{"k"}, TimeField: "ts",
		Aggs: []Agg{{Name: "n", Fn: Count}, {Name: "s", Fn: Sum, Field: "v"}, {Name: "mi", Fn: Min, Field: "v"}, {Name: "a", Fn: Avg, Field: "f"}}}
	op, err := New(cfg, benchSchema)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := New(cfg, benchSchema)
	r := rand.New(rand.NewPCG(5, 5))
	keys := int64(3000)
	key := func(int64) int64 { return r.Int64N(keys) }
	f := newFeed(0.0005, key)
	type live struct {
		want map[int][]byte
		done chan map[int][]byte
	}
	var lives []*live
	var out, refOut []*row.Batch
	for round := range 120 {
		if round%10 == 0 {
			keys += 200 // new keys come too
		}
		for range 1 + r.IntN(3) {
			bt, wm := f.next()
			op.Process(bt, nil)
			ref.Process(bt, nil)
			if r.IntN(4) == 0 {
				op.AdvanceWatermark(wm-300, collect(&out))
				ref.AdvanceWatermark(wm-300, collect(&refOut))
			}
		}
		rs := ref.Snapshot()
		l := &live{want: snapBytes(rs, 0), done: make(chan map[int][]byte, 1)}
		rs.Release()
		go func(s *Snapshot) {
			b := snapBytes(s, 0)
			s.Release()
			l.done <- b
		}(op.Snapshot())
		lives = append(lives, l)
		for len(lives) > 3 || (len(lives) > 0 && r.IntN(3) == 0) {
			i := r.IntN(len(lives))
			sameSnap(t, <-lives[i].done, lives[i].want)
			lives = slices.Delete(lives, i, i+1)
		}
	}
	for _, l := range lives {
		sameSnap(t, <-l.done, l.want)
	}
	op.AdvanceWatermark(math.MaxInt64, collect(&out))
	ref.AdvanceWatermark(math.MaxInt64, collect(&refOut))
	sameRows(t, "with concurrent snapshots vs without", rowsOf(out), rowsOf(refOut))
}

// TestSnapshotWriteScratch: writing a snapshot's key groups one after the
// other reuses its scratch; a fresh one per key group was most of the
// garbage a snapshot of a large state made (0.7 GB for 16 M keys), and the
// GC cycles it caused ran beside the batches after the snapshot.
func TestSnapshotWriteScratch(t *testing.T) {
	op, err := New(Config{Kind: Tumbling, Size: 1 << 40, KeyFields: []string{"k"}, TimeField: "ts",
		Aggs: []Agg{{Name: "n", Fn: Count}}}, benchSchema)
	if err != nil {
		t.Fatal(err)
	}
	const keys = 100_000
	f := newFeed(0.001, func(i int64) int64 { return i })
	for range keys / 1024 {
		bt, _ := f.next()
		op.Process(bt, nil)
	}
	s := op.Snapshot()
	defer s.Release()
	kgs := s.KeyGroups()
	buf := make([]byte, 0, 1<<20)
	buf = s.WriteKeyGroup(kgs[0], buf[:0])
	i := 1
	allocs := testing.AllocsPerRun(len(kgs)-2, func() {
		buf = s.WriteKeyGroup(kgs[i], buf[:0])
		i++
	})
	if allocs > 2 {
		t.Errorf("%.1f allocations per key group written (~%d keys each)", allocs, keys/len(kgs))
	}
}
