package state

import (
	"fmt"
	"testing"
)

// upsert is what a user's hot loop does: the record of key, inserted if new.
func upsert[K Key](t *Table[K], c *COW, key K, h uint32, stride int) []uint64 {
	si := t.SegOf(h)
	s := t.Seg(si)
	if s.Ver <= c.Frozen {
		s = t.Writable(si, c)
	}
	r, ok := s.Find(key, h)
	if !ok {
		r = s.NewRec(stride)
		s.Insert(key, h, r)
		t.N++
		if t.NeedSplit() {
			t.Split(c, stride, -1)
			s = t.Seg(t.SegOf(h))
			r, _ = s.Find(key, h)
		}
	}
	return s.Rec(r, stride)
}

func viewSum(v View[int64], stride int) (keys int, sum uint64) {
	v.Segments(func(s *Segment[int64]) {
		for _, sl := range s.Slots {
			if sl.Rec != 0 {
				keys++
				sum += s.Rec(sl.Rec-1, stride)[0]
			}
		}
	})
	return keys, sum
}

// TestTableCOW: a view taken at a snapshot keeps its keys and records
// while the table takes writes, splits and new keys; releasing the
// snapshot lets writes go in place again.
func TestTableCOW(t *testing.T) {
	defer func(v int) { SegMax = v }(SegMax)
	SegMax = 4
	const stride = 2
	kx := NewIntKeyer(0, 128)
	reg, c := NewRegistry(), NewCOW()
	tab := NewTable[int64](&c)
	for k := range int64(1000) {
		upsert(tab, &c, k, kx.SegHash(k), stride)[0] += uint64(k)
	}
	v := tab.View()
	ver := c.Freeze(reg)
	wantKeys, wantSum := viewSum(v, stride)
	if wantKeys != 1000 || wantSum != 999*1000/2 {
		t.Fatalf("view: %d keys, sum %d", wantKeys, wantSum)
	}
	for k := range int64(3000) { // updates and new keys: splits
		upsert(tab, &c, k, kx.SegHash(k), stride)[0]++
	}
	if k, s := viewSum(v, stride); k != wantKeys || s != wantSum {
		t.Fatalf("the view changed under writes: %d keys, sum %d; want %d, %d", k, s, wantKeys, wantSum)
	}
	if c.Copies == 0 {
		t.Fatal("no segment was copied after the snapshot")
	}
	if k, s := viewSum(tab.View(), stride); k != 3000 || s != wantSum+3000 {
		t.Fatalf("table: %d keys, sum %d", k, s)
	}
	reg.Release(ver)
	c.Load(reg)
	copies := c.Copies
	for k := range int64(3000) {
		upsert(tab, &c, k, kx.SegHash(k), stride)[0]++
	}
	if c.Copies != copies {
		t.Fatalf("%d segments copied with no live snapshot", c.Copies-copies)
	}
}

// TestTableChains: chained records (a session list per key) survive splits
// and reuse freed records.
func TestTableChains(t *testing.T) {
	defer func(v int) { SegMax = v }(SegMax)
	SegMax = 2
	const stride, next = 3, 1
	kx := NewEncKeyer([]int{0}, nil, 128)
	c := NewCOW()
	tab := NewTable[string](&c)
	for i := range 200 {
		key := fmt.Sprintf("key-%d", i)
		h := kx.SegHash(key)
		s := tab.Writable(tab.SegOf(h), &c)
		head := s.Alloc(stride, next)
		second := s.Alloc(stride, next)
		s.Rec(head, stride)[0], s.Rec(head, stride)[next] = uint64(i), uint64(second)
		s.Rec(second, stride)[0], s.Rec(second, stride)[next] = uint64(i)+1000, NoNext
		s.Insert(key, h, head)
		tab.N++
		if tab.NeedSplit() {
			tab.Split(&c, stride, next)
		}
	}
	for i := range 200 {
		key := fmt.Sprintf("key-%d", i)
		h := kx.SegHash(key)
		s := tab.Seg(tab.SegOf(h))
		r, ok := s.Find(key, h)
		if !ok {
			t.Fatalf("%s lost", key)
		}
		var got []uint64
		for ; r >= 0; r = int32(int64(s.Rec(r, stride)[next])) {
			got = append(got, s.Rec(r, stride)[0])
		}
		if len(got) != 2 || got[0] != uint64(i) || got[1] != uint64(i)+1000 {
			t.Fatalf("%s: chain %v", key, got)
		}
		// Free the second record: the next Alloc reuses it.
		second := int32(int64(s.Rec(func() int32 { r, _ := s.Find(key, h); return r }(), stride)[next]))
		s.Release(second, stride, next)
		if got := s.Alloc(stride, next); got != second {
			t.Fatalf("Alloc gave record %d, want the freed %d", got, second)
		}
	}
}
