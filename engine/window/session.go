package window

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"unsafe"

	"github.com/sluice-stream/sluice/engine/row"
)

// Session record layout: header words, then the accumulator.
const (
	sessStart = iota
	sessEnd
	sessNext  // next session of the key, noNext at the end; next free record when free
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
type sessionCore[K keyT] struct {
	*base
	kx     keyer[K]
	stride int
	p      keyed[K]
	ops    []colRef
	tabs   []*table[K]
	timers timerHeap[K]
	fire   []fired[K]
	nsess  int
}

type timer[K keyT] struct {
	t   int64
	key K
	kg  int32 // table index
}

// timerHeap is a binary min-heap on t (container/heap would box entries).
type timerHeap[K keyT] []timer[K]

func (h *timerHeap[K]) push(x timer[K]) {
	*h = append(*h, x)
	s := *h
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if s[p].t <= s[i].t {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

func (h *timerHeap[K]) pop() timer[K] {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s[n] = timer[K]{}
	s = s[:n]
	i := 0
	for {
		l, m := 2*i+1, i
		if l < n && s[l].t < s[m].t {
			m = l
		}
		if r := l + 1; r < n && s[r].t < s[m].t {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

func (c *sessionCore[K]) process(b, late *row.Batch) int {
	c.kx.prepare(b, &c.p)
	c.ops = bindOps(c.l.ops, b, c.ops)
	ts := b.Cols[c.l.timeCol].Ints[:b.Len]
	nlate := 0
	for i, t := range ts {
		kg := c.kgIndex(c.p.kg[i])
		if c.insert(kg, c.p.keys[i], c.p.h[i], t, t+c.l.cfg.Gap, i, nil) {
			continue
		}
		nlate++
		if late != nil {
			late.AppendFrom(b, i)
		}
	}
	return nlate
}

func (s *segment[K]) next(r int32, stride int) int32 {
	return int32(int64(s.words[int(r)*stride+sessNext]))
}

// insert adds the window [start, end) of key (not yet cloned) to table ti:
// row i of the current batch if src is nil, else the accumulator src. It
// merges every session the window overlaps or touches (Flink's rule). It
// returns false, changing nothing, if the window is new and past lateness.
func (c *sessionCore[K]) insert(ti int, key K, sh uint32, start, end int64, i int, src []uint64) bool {
	L := c.l.cfg.AllowedLateness
	t := c.tabs[ti]
	if t == nil {
		t = newTable[K](&c.c)
		c.tabs[ti] = t
	}
	st := c.stride
	si := t.segOf(sh)
	s := t.seg(si)
	head, ok := s.find(key, sh)
	if !ok {
		if end-1+L <= c.wm {
			return false
		}
		if s.ver <= c.c.frozen {
			s = t.writable(si, &c.c)
		}
		r := s.alloc(st)
		rec := s.rec(r, st)
		rec[sessStart], rec[sessEnd], rec[sessNext] = uint64(start), uint64(end), noNext
		c.fold(rec[sessAcc:], i, src)
		rec[sessTimer] = uint64(c.need(rec))
		k := c.kx.clone(key)
		s.insert(k, sh, r)
		c.timers.push(timer[K]{t: int64(rec[sessTimer]), key: k, kg: int32(ti)})
		t.n++
		c.nsess++
		if t.needSplit() {
			t.split(&c.c, st, true)
		}
		return true
	}
	// The first overlapping session in the chain absorbs the window and
	// every other overlapping one (never the head, which would be first).
	m := int32(-1)
	for r := head; r >= 0; r = s.next(r, st) {
		rec := s.rec(r, st)
		if int64(rec[sessStart]) <= end && start <= int64(rec[sessEnd]) {
			m = r
			break
		}
	}
	if m < 0 && end-1+L <= c.wm {
		return false
	}
	if s.ver <= c.c.frozen {
		s = t.writable(si, &c.c)
	}
	if m < 0 {
		m = s.alloc(st)
		rec, h := s.rec(m, st), s.rec(head, st)
		rec[sessStart], rec[sessEnd] = uint64(start), uint64(end)
		rec[sessNext], h[sessNext] = h[sessNext], uint64(m)
		c.nsess++
	}
	rec := s.rec(m, st)
	start, end = min(start, int64(rec[sessStart])), max(end, int64(rec[sessEnd]))
	c.fold(rec[sessAcc:], i, src)
	prev := m
	for r := s.next(m, st); r >= 0; {
		o := s.rec(r, st)
		nx := int32(int64(o[sessNext]))
		if int64(o[sessStart]) <= end && start <= int64(o[sessEnd]) {
			start, end = min(start, int64(o[sessStart])), max(end, int64(o[sessEnd]))
			mergeAcc(rec[sessAcc:], o[sessAcc:], c.l.ops)
			rec[sessAcc] |= dirtyBit // the merged session has not been emitted
			s.rec(prev, st)[sessNext] = uint64(int64(nx))
			s.release(r, st)
			c.nsess--
		} else {
			prev = r
		}
		r = nx
	}
	rec[sessStart], rec[sessEnd] = uint64(start), uint64(end)
	h := s.rec(head, st)
	if n := c.need(rec); n < int64(h[sessTimer]) {
		h[sessTimer] = uint64(n)
		c.timers.push(timer[K]{t: n, key: c.kx.clone(key), kg: int32(ti)})
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
	for len(c.timers) > 0 && c.timers[0].t <= wm {
		tm := c.timers.pop()
		t := c.tabs[tm.kg]
		h := c.kx.segHash(tm.key)
		si := t.segOf(h)
		s := t.seg(si)
		head, ok := s.find(tm.key, h)
		if !ok || int64(s.rec(head, st)[sessTimer]) != tm.t {
			continue // stale
		}
		s = t.writable(si, &c.c)
		need, first, prev := int64(math.MaxInt64), int32(-1), int32(-1)
		for r := head; r >= 0; {
			rec := s.rec(r, st)
			nx := int32(int64(rec[sessNext]))
			end := int64(rec[sessEnd])
			if rec[sessAcc]&dirtyBit != 0 && end-1 <= wm {
				rec[sessAcc] &^= dirtyBit
				// release below writes only sessNext; the accumulator stays
				// intact until the next alloc, after emitting.
				c.fire = append(c.fire, fired[K]{key: tm.key, start: int64(rec[sessStart]), end: end, acc: rec[sessAcc:]})
			}
			if end-1+L <= wm {
				s.release(r, st)
				c.nsess--
			} else {
				if prev < 0 {
					first = r
				} else {
					s.rec(prev, st)[sessNext] = uint64(int64(r))
				}
				prev = r
				need = min(need, c.need(rec))
			}
			r = nx
		}
		if first < 0 {
			s.del(tm.key, h)
			t.n--
			continue
		}
		s.rec(prev, st)[sessNext] = noNext
		if first != head {
			s.set(tm.key, h, first)
		}
		s.rec(first, st)[sessTimer] = uint64(need)
		c.timers.push(timer[K]{t: need, key: tm.key, kg: tm.kg})
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
func appendSessions[K keyT](dst []byte, s *segment[K], r int32, stride int) []byte {
	var recs [][]uint64
	for ; r >= 0; r = s.next(r, stride) {
		recs = append(recs, s.rec(r, stride))
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
		dst = appendAcc(dst, rec[sessAcc:])
	}
	return dst
}

func (c *sessionCore[K]) restore(kg int, data []byte) error {
	d := &dec{b: data}
	ti := kg - c.kgStart
	if c.tabs == nil {
		c.tabs = make([]*table[K], c.nkg)
	}
	acc := make([]uint64, c.l.accWords)
	nk := d.count(2)
	for range nk {
		k := readKey(d, c.kx, kg)
		ns := d.count(3)
		sh := c.kx.segHash(k)
		for range ns {
			start, end := d.varint(), d.varint()
			d.acc(acc)
			if d.err != nil {
				break
			}
			c.insert(ti, k, sh, start, end, 0, acc)
		}
		if d.err != nil {
			break
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("trailing bytes")
	}
	return d.err
}

func (c *sessionCore[K]) size() (int, int64) {
	_, strKeys := any(c.kx).(*encKeyer)
	var bytes int64
	for _, t := range c.tabs {
		if t != nil {
			bytes += t.memBytes(c.kx, strKeys) + 48
		}
	}
	bytes += int64(cap(c.timers)) * int64(unsafe.Sizeof(timer[K]{}))
	return c.nsess, bytes
}
