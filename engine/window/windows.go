package window

import (
	"cmp"
	"math"
	"slices"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/state"
)

// windowCore holds tumbling and sliding state as panes (Flink's and
// Arroyo's slicing): the time axis is cut into panes of gcd(Size, Slide)
// ms, a row updates the one accumulator of (its key, its pane), and a
// window [E-Size, E) is computed when it fires by merging its Size/pane
// panes per key. For tumbling windows a pane is a window.
//
// Dirty flags live on pane accumulators: a pane accumulator updated after a
// window containing it fired (a late row within lateness) is dirty, and
// every fired, unpurged window containing it fires again for that key at
// the next AdvanceWatermark, after which the flag is cleared.
type windowCore[K state.Key] struct {
	*base
	kx                 state.Keyer[K]
	stride             int
	wsize, slide, pane int64
	fast               fastKind
	p                  state.Keyed[K]
	ops                []colRef
	panes              []*pane[K]        // live panes by ascending end
	last               *pane[K]          // the pane the previous run of rows went to
	fk, fkTmp          []fk[K]           // keys of the window being fired
	arena              []uint64          // merged accumulators of the window being fired
	scratch            *state.Segment[K] // merge table (key → arena record)
	mtabs              []*state.Table[K]
}

// pane is the state of one pane: a table per owned key group, and the
// keys whose accumulator became dirty.
type pane[K state.Key] struct {
	end         int64
	first, last int64 // ends of the first and the last window containing the pane
	tabs        []*state.Table[K]
	dirty       []ref[K]
}

type ref[K state.Key] struct {
	key K
	kg  int32 // table index
}

func newWindowCore[K state.Key](b *base, kx state.Keyer[K]) *windowCore[K] {
	cfg := &b.l.cfg
	c := &windowCore[K]{base: b, kx: kx, stride: b.l.accWords, wsize: cfg.Size, slide: cfg.Size, pane: cfg.Size}
	if cfg.Kind == Sliding {
		c.slide = cfg.Slide
		c.pane = gcd(cfg.Size, cfg.Slide)
	}
	c.fast = fastOf(b.l.ops)
	c.scratch = state.NewSegment[K](0, 0, 0)
	return c
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// windowEndAtLeast is the smallest window end >= x.
func (c *windowCore[K]) windowEndAtLeast(x int64) int64 {
	return x + floorMod(c.wsize-x, c.slide)
}

func (c *windowCore[K]) paneAt(end int64) *pane[K] {
	i, found := slices.BinarySearchFunc(c.panes, end, func(p *pane[K], e int64) int {
		switch {
		case p.end < e:
			return -1
		case p.end > e:
			return 1
		}
		return 0
	})
	if found {
		return c.panes[i]
	}
	ps := end - c.pane
	p := &pane[K]{end: end, first: c.windowEndAtLeast(end), last: ps - floorMod(ps, c.slide) + c.wsize, tabs: make([]*state.Table[K], c.nkg)}
	c.panes = slices.Insert(c.panes, i, p)
	return p
}

func (c *windowCore[K]) process(b, late *row.Batch) int {
	c.kx.Prepare(b, &c.p)
	c.ops = bindOps(c.l.ops, b, c.ops)
	ts := b.Cols[c.l.timeCol].Ints[:b.Len]
	L, pn := c.l.cfg.AllowedLateness, c.pane
	nlate := 0
	for i := 0; i < len(ts); {
		t := ts[i]
		pe := t - floorMod(t, pn) + pn
		lo := pe - pn
		j := i + 1
		for j < len(ts) && ts[j] >= lo && ts[j] < pe {
			j++
		}
		p := c.last
		if p == nil || p.end != pe {
			ps := pe - pn
			if ps-floorMod(ps, c.slide)+c.wsize-1+L <= c.wm {
				nlate += j - i
				if late != nil {
					for k := i; k < j; k++ {
						late.AppendFrom(b, k)
					}
				}
				i = j
				continue
			}
			p = c.paneAt(pe)
			c.last = p
		}
		c.addRun(p, i, j, p.first-1 <= c.wm)
		i = j
	}
	return nlate
}

// fastKind names accumulator layouts with a specialised update loop.
type fastKind uint8

const (
	fastNone     fastKind = iota
	fastCount             // count only
	fastCountSum          // count, sum of one int column
	fastCSMM              // count, sum, min, max of one int column
)

func fastOf(ops []updOp) fastKind {
	switch {
	case len(ops) == 0:
		return fastCount
	case len(ops) == 1 && ops[0].code == opSumI && ops[0].word == 1:
		return fastCountSum
	case len(ops) == 3 && ops[0].code == opSumI && ops[1].code == opMinI && ops[2].code == opMaxI &&
		ops[0].col == ops[1].col && ops[1].col == ops[2].col &&
		ops[0].word == 1 && ops[1].word == 2 && ops[2].word == 3:
		return fastCSMM
	}
	return fastNone
}

// addRun folds rows [i0, i1) of the batch into pane p; dirty says that a
// window containing p has fired.
func (c *windowCore[K]) addRun(p *pane[K], i0, i1 int, dirty bool) {
	keys, kgs, hs := c.p.Keys[:i1], c.p.KG[:i1], c.p.H[:i1]
	stride, frozen, tabs, kgStart := c.stride, c.c.Frozen, p.tabs, c.kgStart
	var vals []int64
	if c.fast >= fastCountSum {
		vals = c.ops[0].ints[:i1]
	}
	for i := i0; i < i1; i++ {
		kg := int(kgs[i]) - kgStart
		if uint(kg) >= uint(len(tabs)) {
			c.kgIndex(kgs[i]) // panics
		}
		t := tabs[kg]
		if t == nil {
			t = state.NewTable[K](&c.c)
			tabs[kg] = t
		}
		h, key := hs[i], keys[i]
		si := t.SegOf(h)
		s := t.Seg(si)
		if s.Ver <= frozen {
			s = t.Writable(si, &c.c)
		}
		r := int32(-1)
		if len(s.Slots) > 0 {
			mask := uint32(len(s.Slots) - 1)
			for j := h & mask; ; j = (j + 1) & mask {
				sl := &s.Slots[j]
				if sl.Rec == 0 {
					break
				}
				if sl.H == h && sl.Key == key {
					r = sl.Rec - 1
					break
				}
			}
		}
		if r < 0 {
			r = s.NewRec(stride)
			s.Insert(c.kx.Clone(key), h, r)
			t.N++
			if t.NeedSplit() {
				t.Split(&c.c, stride, -1)
				s = t.Seg(t.SegOf(h))
				r, _ = s.Find(key, h)
			}
		}
		o := int(r) * stride
		acc := s.Words[o : o+stride : o+stride]
		switch c.fast {
		case fastCount:
			acc[0]++
		case fastCountSum:
			acc[0]++
			acc[1] = uint64(int64(acc[1]) + vals[i])
		case fastCSMM:
			v := vals[i]
			if acc[0]&countMask == 0 {
				acc[2], acc[3] = uint64(v), uint64(v)
			} else {
				acc[2] = uint64(min(int64(acc[2]), v))
				acc[3] = uint64(max(int64(acc[3]), v))
			}
			acc[0]++
			acc[1] = uint64(int64(acc[1]) + v)
		default:
			addRow(acc, c.ops, i)
		}
		if dirty && acc[0]&dirtyBit == 0 {
			acc[0] |= dirtyBit
			p.dirty = append(p.dirty, ref[K]{key: c.kx.Clone(key), kg: int32(kg)})
		}
	}
}

// firing walks the windows that the watermark moving from old to c.wm
// makes fire, for either backend: fire fills the arena for the panes
// [pi, pj) of a window, full the first time it fires, only its dirty keys
// when it fires again after late rows; the window is then emitted. n panes,
// by end ascending; first(i) is the end of the first window holding pane i.
func (c *windowCore[K]) firing(old int64, anyDirty bool, n int, end, first func(i int) int64, fire func(pi, pj int, full bool)) {
	e := first(0)
	if old != math.MinInt64 {
		lo := old + 2 // windows not fired yet: e-1 > old
		if anyDirty {
			lo = old + 2 - c.l.cfg.AllowedLateness // and fired windows not purged: e-1+L > old
		}
		if lo > e {
			e = c.windowEndAtLeast(lo)
		}
	}
	pi := 0
	for e-1 <= c.wm {
		for pi < n && end(pi) <= e-c.wsize {
			pi++
		}
		if pi == n {
			break
		}
		pj := pi
		for pj < n && end(pj) <= e {
			pj++
		}
		if pj == pi {
			e = first(pi)
			continue
		}
		c.fk, c.arena = c.fk[:0], c.arena[:0]
		fire(pi, pj, e-1 > old)
		c.emitWindow(e-c.wsize, e)
		e += c.slide
	}
}

func (c *windowCore[K]) advance(old int64) {
	wm, L := c.wm, c.l.cfg.AllowedLateness
	c.last = nil
	if len(c.panes) > 0 {
		anyDirty := false
		for _, p := range c.panes {
			anyDirty = anyDirty || len(p.dirty) > 0
		}
		c.firing(old, anyDirty, len(c.panes),
			func(i int) int64 { return c.panes[i].end },
			func(i int) int64 { return c.panes[i].first },
			func(pi, pj int, full bool) {
				if full {
					c.fireFull(c.panes[pi:pj])
				} else {
					c.fireDirty(c.panes[pi:pj])
				}
			})
		clear(c.fk)
		c.fk = c.fk[:0]
		if anyDirty {
			for _, p := range c.panes {
				c.clearDirty(p)
			}
		}
	}
	n := 0
	for n < len(c.panes) && c.panes[n].last-1+L <= wm {
		n++
	}
	if n > 0 {
		clear(c.panes[:n])
		c.panes = c.panes[n:]
	}
}

// fk is one key of the window being fired; its accumulator is at off in
// the arena.
type fk[K state.Key] struct {
	key K
	off int
}

// fireFull puts every key of the window made of panes ps, with its merged
// accumulator, in c.fk and c.arena.
func (c *windowCore[K]) fireFull(ps []*pane[K]) {
	st := c.stride
	for kg := 0; kg < c.nkg; kg++ {
		c.mtabs = c.mtabs[:0]
		n := 0
		for _, p := range ps {
			if t := p.tabs[kg]; t != nil && t.N > 0 {
				c.mtabs = append(c.mtabs, t)
				n += t.N
			}
		}
		switch len(c.mtabs) {
		case 0:
			continue
		case 1:
			c.mtabs[0].Segments(func(s *state.Segment[K]) {
				for _, sl := range s.Slots {
					if sl.Rec != 0 {
						c.fk = append(c.fk, fk[K]{key: sl.Key, off: len(c.arena)})
						c.arena = append(c.arena, s.Rec(sl.Rec-1, st)...)
					}
				}
			})
			continue
		}
		sc := c.resetScratch(n)
		for _, t := range c.mtabs {
			t.Segments(func(s *state.Segment[K]) {
				for _, sl := range s.Slots {
					if sl.Rec == 0 {
						continue
					}
					src := s.Rec(sl.Rec-1, st)
					if r, ok := sc.Find(sl.Key, sl.H); ok {
						mergeAcc(sc.Rec(r, st), src, c.l.ops)
						continue
					}
					r := sc.NewRec(st)
					copy(sc.Rec(r, st), src)
					sc.Insert(sl.Key, sl.H, r)
				}
			})
		}
		base := len(c.arena)
		c.arena = append(c.arena, sc.Words...)
		for _, sl := range sc.Slots {
			if sl.Rec != 0 {
				c.fk = append(c.fk, fk[K]{key: sl.Key, off: base + int(sl.Rec-1)*st})
			}
		}
	}
}

// fireDirty puts in c.fk and c.arena the keys of the fired window made of
// panes ps that have a dirty pane accumulator.
func (c *windowCore[K]) fireDirty(ps []*pane[K]) {
	st := c.stride
	if len(ps) == 1 {
		for _, d := range ps[0].dirty {
			t := ps[0].tabs[d.kg]
			h := c.kx.SegHash(d.key)
			s := t.Seg(t.SegOf(h))
			r, _ := s.Find(d.key, h)
			c.fk = append(c.fk, fk[K]{key: d.key, off: len(c.arena)})
			c.arena = append(c.arena, s.Rec(r, st)...)
		}
		return
	}
	n := 0
	for _, p := range ps {
		n += len(p.dirty)
	}
	if n == 0 {
		return
	}
	// Dirty keys, each once: scratch maps key → a record holding its kg.
	sc := c.resetScratch(n)
	for _, p := range ps {
		for _, d := range p.dirty {
			h := c.kx.SegHash(d.key)
			if _, ok := sc.Find(d.key, h); !ok {
				r := sc.NewRec(1)
				sc.Words[r] = uint64(d.kg)
				sc.Insert(d.key, h, r)
			}
		}
	}
	for _, sl := range sc.Slots {
		if sl.Rec == 0 {
			continue
		}
		kg := int(sc.Words[sl.Rec-1])
		base := len(c.arena)
		c.arena = append(c.arena, make([]uint64, st)...)
		for _, p := range ps {
			t := p.tabs[kg]
			if t == nil {
				continue
			}
			s := t.Seg(t.SegOf(sl.H))
			if r, ok := s.Find(sl.Key, sl.H); ok {
				mergeAcc(c.arena[base:base+st], s.Rec(r, st), c.l.ops)
			}
		}
		c.fk = append(c.fk, fk[K]{key: sl.Key, off: base})
	}
}

// emitWindow sorts c.fk by key and appends the window's rows to the output,
// column by column.
func (c *windowCore[K]) emitWindow(start, end int64) {
	ents := c.sortFK()
	nk := len(c.l.keyCols)
	for len(ents) > 0 {
		if c.out == nil {
			c.out = row.NewBatch(c.l.out)
		}
		out := c.out
		n := min(len(ents), row.DefaultBatchSize-out.Len)
		chunk := ents[:n]
		ents = ents[n:]
		if ik, ok := any(&chunk).(*[]fk[int64]); ok && nk == 1 {
			col := &out.Cols[0]
			for _, f := range *ik {
				col.Ints = append(col.Ints, f.key)
			}
		} else {
			for _, f := range chunk {
				c.kx.AppendKey(out.Cols[:nk], f.key)
			}
		}
		cs, ce := &out.Cols[nk], &out.Cols[nk+1]
		for range chunk {
			cs.Ints = append(cs.Ints, start)
			ce.Ints = append(ce.Ints, end)
		}
		for k, o := range c.l.outs {
			col := &out.Cols[nk+2+k]
			w := o.word
			switch {
			case o.fn == Count:
				for _, f := range chunk {
					col.Ints = append(col.Ints, int64(c.arena[f.off]&countMask))
				}
			case o.fn == Avg:
				for _, f := range chunk {
					v := c.arena[f.off+w]
					var sum float64
					if o.float {
						sum = math.Float64frombits(v)
					} else {
						sum = float64(int64(v))
					}
					col.Floats = append(col.Floats, sum/float64(c.arena[f.off]&countMask))
				}
			case o.float:
				for _, f := range chunk {
					col.Floats = append(col.Floats, math.Float64frombits(c.arena[f.off+w]))
				}
			default:
				for _, f := range chunk {
					col.Ints = append(col.Ints, int64(c.arena[f.off+w]))
				}
			}
		}
		out.Len += n
		if out.Len >= row.DefaultBatchSize {
			c.emit(out)
			c.out = nil
		}
	}
}

// sortFK sorts c.fk by key: int64 keys by radix sort.
func (c *windowCore[K]) sortFK() []fk[K] {
	if ik, ok := any(&c.fk).(*[]fk[int64]); ok {
		tmp := any(&c.fkTmp).(*[]fk[int64])
		*tmp = state.Grow(*tmp, len(*ik))
		res := radixSortFK(*ik, *tmp)
		return *any(&res).(*[]fk[K])
	}
	slices.SortFunc(c.fk, func(a, b fk[K]) int { return cmp.Compare(a.key, b.key) })
	return c.fk
}

// radixSortFK sorts a by key (LSD, 8-bit digits, skipping digits that are
// the same for every key) using tmp (of a's length); it returns the sorted
// slice, a or tmp.
func radixSortFK(a, tmp []fk[int64]) []fk[int64] {
	if len(a) < 256 {
		slices.SortFunc(a, func(x, y fk[int64]) int { return cmp.Compare(x.key, y.key) })
		return a
	}
	var counts [8][256]int
	for _, f := range a {
		u := uint64(f.key) ^ 1<<63
		for d := range 8 {
			counts[d][byte(u>>(8*d))]++
		}
	}
	src, dst := a, tmp
	for d := range 8 {
		cnt := &counts[d]
		if cnt[byte((uint64(a[0].key)^1<<63)>>(8*d))] == len(a) {
			continue // every key has this digit
		}
		pos := 0
		for i, n := range cnt {
			cnt[i] = pos
			pos += n
		}
		shift := uint(8 * d)
		for _, f := range src {
			b := byte((uint64(f.key) ^ 1<<63) >> shift)
			dst[cnt[b]] = f
			cnt[b]++
		}
		src, dst = dst, src
	}
	return src
}

// resetScratch empties the merge table, sized for n keys.
func (c *windowCore[K]) resetScratch(n int) *state.Segment[K] {
	c.scratch.Reset(n)
	return c.scratch
}

func (c *windowCore[K]) clearDirty(p *pane[K]) {
	for _, d := range p.dirty {
		t := p.tabs[d.kg]
		h := c.kx.SegHash(d.key)
		s := t.Writable(t.SegOf(h), &c.c)
		r, _ := s.Find(d.key, h)
		s.Rec(r, c.stride)[0] &^= dirtyBit
	}
	clear(p.dirty)
	p.dirty = p.dirty[:0]
}

func (c *windowCore[K]) size() (keys int, bytes int64) {
	ks := keySize(c.kx)
	for _, p := range c.panes {
		bytes += 64 + int64(len(p.tabs))*8
		for _, t := range p.tabs {
			if t != nil {
				keys += t.N
				bytes += t.MemBytes(ks) + 48
			}
		}
	}
	return keys, bytes
}
