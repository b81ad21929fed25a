package window

import (
	"encoding/binary"
	"math"
	"slices"
	"unsafe"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/state"
)

// Session record layout: header words, then the accumulator.
const (
	sessStart = iota
	sessEnd
	sessNext  // next session of the key, state.NoNext at the end; next free record when free
	sessTimer // on a key's first session: the time of its one valid timer
	sessAcc
)

// sessionCore holds session state: per owned key group a table from key to
// the key's sessions, a linked list of records in the segment's slab.
//
// Timers say which keys to look at when the watermark moves: a key's first
// session holds the time of its one valid timer (the earliest time one of
// its sessions fires or is purged); heap entries with another time are
// stale and skipped. A row that only extends a session pushes no timer: the
// old timer fires early, finds nothing due and re-arms at the new end. So
// the heap holds about one entry per key. It is rebuilt on restore.
type sessionCore[K state.Key] struct {
	*base
	kx     state.Keyer[K]
	stride int
	p      state.Keyed[K]
	ops    []colRef
	tabs   []*state.Table[K]
	timers state.Timers[K]
	fire   []fired[K]
	nsess  int
}

func (c *sessionCore[K]) process(b, late *row.Batch) int {
	c.kx.Prepare(b, &c.p)
	c.ops = bindOps(c.l.ops, b, c.ops)
	ts := b.Cols[c.l.timeCol].Ints[:b.Len]
	nlate := 0
	for i, t := range ts {
		kg := c.kgIndex(c.p.KG[i])
		if c.insert(kg, c.p.Keys[i], c.p.H[i], t, t+c.l.cfg.Gap, i, nil) {
			continue
		}
		nlate++
		if late != nil {
			late.AppendFrom(b, i)
		}
	}
	return nlate
}

// next is the record after r in its key's chain of sessions.
func next[K state.Key](s *state.Segment[K], r int32, stride int) int32 {
	return int32(int64(s.Words[int(r)*stride+sessNext]))
}

// insert adds the window [start, end) of key (not yet cloned) to table ti:
// row i of the current batch if src is nil, else the accumulator src. It
// merges every session the window overlaps or touches (Flink's rule). It
// returns false, changing nothing, if the window is new and past lateness.
func (c *sessionCore[K]) insert(ti int, key K, sh uint32, start, end int64, i int, src []uint64) bool {
	L := c.l.cfg.AllowedLateness
	t := c.tabs[ti]
	if t == nil {
		t = state.NewTable[K](&c.c)
		c.tabs[ti] = t
	}
	st := c.stride
	si := t.SegOf(sh)
	s := t.Seg(si)
	head, ok := s.Find(key, sh)
	if !ok {
		if end-1+L <= c.wm {
			return false
		}
		if s.Ver <= c.c.Frozen {
			s = t.Writable(si, &c.c)
		}
		r := s.Alloc(st, sessNext)
		rec := s.Rec(r, st)
		rec[sessStart], rec[sessEnd], rec[sessNext] = uint64(start), uint64(end), state.NoNext
		c.fold(rec[sessAcc:], i, src)
		rec[sessTimer] = uint64(c.need(rec))
		k := c.kx.Clone(key)
		s.Insert(k, sh, r)
		c.timers.Push(state.Timer[K]{T: int64(rec[sessTimer]), Key: k, KG: int32(ti)})
		t.N++
		c.nsess++
		if t.NeedSplit() {
			t.Split(&c.c, st, sessNext)
		}
		return true
	}
	// The first overlapping session in the chain absorbs the window and
	// every other overlapping one (never the head, which would be first).
	m := int32(-1)
	for r := head; r >= 0; r = next(s, r, st) {
		rec := s.Rec(r, st)
		if int64(rec[sessStart]) <= end && start <= int64(rec[sessEnd]) {
			m = r
			break
		}
	}
	if m < 0 && end-1+L <= c.wm {
		return false
	}
	if s.Ver <= c.c.Frozen {
		s = t.Writable(si, &c.c)
	}
	if m < 0 {
		m = s.Alloc(st, sessNext)
		rec, h := s.Rec(m, st), s.Rec(head, st)
		rec[sessStart], rec[sessEnd] = uint64(start), uint64(end)
		rec[sessNext], h[sessNext] = h[sessNext], uint64(m)
		c.nsess++
	}
	rec := s.Rec(m, st)
	start, end = min(start, int64(rec[sessStart])), max(end, int64(rec[sessEnd]))
	c.fold(rec[sessAcc:], i, src)
	prev := m
	for r := next(s, m, st); r >= 0; {
		o := s.Rec(r, st)
		nx := int32(int64(o[sessNext]))
		if int64(o[sessStart]) <= end && start <= int64(o[sessEnd]) {
			start, end = min(start, int64(o[sessStart])), max(end, int64(o[sessEnd]))
			mergeAcc(rec[sessAcc:], o[sessAcc:], c.l.ops)
			rec[sessAcc] |= dirtyBit // the merged session has not been emitted
			s.Rec(prev, st)[sessNext] = uint64(int64(nx))
			s.Release(r, st, sessNext)
			c.nsess--
		} else {
			prev = r
		}
		r = nx
	}
	rec[sessStart], rec[sessEnd] = uint64(start), uint64(end)
	h := s.Rec(head, st)
	if n := c.need(rec); n < int64(h[sessTimer]) {
		h[sessTimer] = uint64(n)
		c.timers.Push(state.Timer[K]{T: n, Key: c.kx.Clone(key), KG: int32(ti)})
	}
	return true
}

func (c *sessionCore[K]) fold(acc []uint64, i int, src []uint64) {
	if src == nil {
		addRow(acc, c.ops, i)
		acc[0] |= dirtyBit
		return
	}
	mergeAcc(acc, src, c.l.ops)
}

// need is when a session next needs attention: its firing if it has
// changes not emitted, else its purge.
func (c *sessionCore[K]) need(rec []uint64) int64 {
	if rec[sessAcc]&dirtyBit != 0 {
		return int64(rec[sessEnd]) - 1
	}
	return int64(rec[sessEnd]) - 1 + c.l.cfg.AllowedLateness
}

func (c *sessionCore[K]) advance(old int64) {
	wm, L, st := c.wm, c.l.cfg.AllowedLateness, c.stride
	c.fire = c.fire[:0]
	for c.timers.Due(wm) {
		tm := c.timers.Pop()
		t := c.tabs[tm.KG]
		h := c.kx.SegHash(tm.Key)
		si := t.SegOf(h)
		s := t.Seg(si)
		head, ok := s.Find(tm.Key, h)
		if !ok || int64(s.Rec(head, st)[sessTimer]) != tm.T {
			continue // stale
		}
		s = t.Writable(si, &c.c)
		need, first, prev := int64(math.MaxInt64), int32(-1), int32(-1)
		for r := head; r >= 0; {
			rec := s.Rec(r, st)
			nx := int32(int64(rec[sessNext]))
			end := int64(rec[sessEnd])
			if rec[sessAcc]&dirtyBit != 0 && end-1 <= wm {
				rec[sessAcc] &^= dirtyBit
				// release below writes only sessNext; the accumulator stays
				// intact until the next alloc, after emitting.
				c.fire = append(c.fire, fired[K]{key: tm.Key, start: int64(rec[sessStart]), end: end, acc: rec[sessAcc:]})
			}
			if end-1+L <= wm {
				s.Release(r, st, sessNext)
				c.nsess--
			} else {
				if prev < 0 {
					first = r
				} else {
					s.Rec(prev, st)[sessNext] = uint64(int64(r))
				}
				prev = r
				need = min(need, c.need(rec))
			}
			r = nx
		}
		if first < 0 {
			s.Del(tm.Key, h)
			t.N--
			continue
		}
		s.Rec(prev, st)[sessNext] = state.NoNext
		if first != head {
			s.Set(tm.Key, h, first)
		}
		s.Rec(first, st)[sessTimer] = uint64(need)
		c.timers.Push(state.Timer[K]{T: need, Key: tm.Key, KG: tm.KG})
	}
	emitSorted(c.base, c.kx, c.fire)
	clear(c.fire)
	c.fire = c.fire[:0]
}

func (c *sessionCore[K]) snapshot() snapData {
	s := &coreSnap[K]{l: c.l, kx: c.kx, stride: c.stride, session: true, tabs: make([]tabSnap[K], 0, c.nkg)}
	for kg, t := range c.tabs {
		s.add(c.kgStart+kg, 0, t)
	}
	return s
}

// appendSessions writes the sessions of the key whose first record is r,
// by start.
func appendSessions[K state.Key](dst []byte, s *state.Segment[K], r int32, stride int) []byte {
	var recs [][]uint64
	for ; r >= 0; r = next(s, r, stride) {
		recs = append(recs, s.Rec(r, stride))
	}
	slices.SortFunc(recs, func(a, b []uint64) int {
		if int64(a[sessStart]) < int64(b[sessStart]) {
			return -1
		}
		return 1
	})
	dst = binary.AppendUvarint(dst, uint64(len(recs)))
	for _, rec := range recs {
		dst = binary.AppendVarint(dst, int64(rec[sessStart]))
		dst = binary.AppendVarint(dst, int64(rec[sessEnd]))
		dst = state.AppendRecord(dst, rec[sessAcc:])
	}
	return dst
}

func (c *sessionCore[K]) restore(kg int, data []byte) error {
	d := &state.Dec{B: data}
	ti := kg - c.kgStart
	if c.tabs == nil {
		c.tabs = make([]*state.Table[K], c.nkg)
	}
	acc := make([]uint64, c.l.accWords)
	nk := d.Count(2)
	for range nk {
		k := state.ReadKey(d, c.kx, kg)
		ns := d.Count(3)
		sh := c.kx.SegHash(k)
		for range ns {
			start, end := d.Varint(), d.Varint()
			d.Record(acc)
			if d.Err != nil {
				break
			}
			c.insert(ti, k, sh, start, end, 0, acc)
		}
		if d.Err != nil {
			break
		}
	}
	return d.End()
}

func (c *sessionCore[K]) size() (int, int64) {
	ks := keySize(c.kx)
	var bytes int64
	for _, t := range c.tabs {
		if t != nil {
			bytes += t.MemBytes(ks) + 48
		}
	}
	bytes += int64(cap(c.timers)) * int64(unsafe.Sizeof(state.Timer[K]{}))
	return c.nsess, bytes
}
