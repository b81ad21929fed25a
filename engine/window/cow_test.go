package window

import (
	"testing"
	"unsafe"
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
	frozen := map[*slot[int64]]bool{}
	for _, ts := range snap.data.(*coreSnap[int64]).tabs {
		segsOf(ts.chunks, ts.bits, func(s *segment[int64]) { frozen[unsafe.SliceData(s.slots)] = true })
	}
	copied := func() (n, shared int) {
		for _, tb := range c.panes[0].tabs {
			if tb == nil {
				continue
			}
			segsOf(tb.chunks, tb.bits, func(s *segment[int64]) {
				if s.ver > c.c.frozen {
					n++
					if frozen[unsafe.SliceData(s.slots)] {
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
