package window

import (
	"slices"

	"github.com/sluice-stream/sluice/engine/row"
)

// windowCore holds tumbling and sliding state, organised by window end.
type windowCore[K keyT] struct {
	*base
	kx     keyer[K]
	stride int
	p      keyed[K]
	ops    []colRef
	wins   []*win[K] // live windows by ascending end
	last   *win[K]   // the window the previous row went to
	fire   []fired[K]
}

// win is one window: a table per owned key group, and the keys updated
// after the window fired (by rows within the allowed lateness).
type win[K keyT] struct {
	end   int64
	tabs  []*table[K]
	dirty []ref[K]
}

type ref[K keyT] struct {
	key K
	kg  int32 // table index
}

func (c *windowCore[K]) process(b, late *row.Batch) int {
	c.kx.prepare(b, &c.p)
	c.ops = bindOps(c.l.ops, b, c.ops)
	ts := b.Cols[c.l.timeCol].Ints[:b.Len]
	size, slide := c.l.cfg.Size, c.l.cfg.Slide
	nlate := 0
	for i, t := range ts {
		if c.l.cfg.Kind == Tumbling {
			if c.add(t-floorMod(t, size)+size, i) {
				continue
			}
		} else {
			in := false
			for s := t - floorMod(t, slide); s > t-size; s -= slide {
				if c.add(s+size, i) {
					in = true
				}
			}
			if in {
				continue
			}
		}
		nlate++
		if late != nil {
			late.AppendFrom(b, i)
		}
	}
	return nlate
}

// add folds row i into window end; false if that window is past lateness.
func (c *windowCore[K]) add(end int64, i int) bool {
	if end-1+c.l.cfg.AllowedLateness <= c.wm {
		return false
	}
	w := c.last
	if w == nil || w.end != end {
		w = c.window(end)
		c.last = w
	}
	kg := c.kgIndex(c.p.kg[i])
	t := w.tabs[kg]
	if t == nil {
		t = newTable[K](&c.c)
		w.tabs[kg] = t
	}
	key, sh := c.p.keys[i], c.p.sh[i]
	si := t.segOf(sh)
	s := t.segs[si]
	if s.ver <= c.c.frozen {
		s = t.writable(si, &c.c)
	}
	r, ok := s.idx[key]
	if !ok {
		r = int32(len(s.words) / c.stride)
		s.words = append(s.words, make([]uint64, c.stride)...)
		s.idx[c.kx.clone(key)] = r
		t.n++
		if t.needSplit() {
			t.split(&c.c, c.stride, false, c.kx.segHash)
			s = t.segs[t.segOf(sh)]
			r = s.idx[key]
		}
	}
	acc := s.rec(r, c.stride)
	addRow(acc, c.ops, i)
	if end-1 <= c.wm && acc[0]&dirtyBit == 0 {
		acc[0] |= dirtyBit
		w.dirty = append(w.dirty, ref[K]{key: c.kx.clone(key), kg: int32(kg)})
	}
	return true
}

// window finds or creates the window ending at end.
func (c *windowCore[K]) window(end int64) *win[K] {
	i, found := slices.BinarySearchFunc(c.wins, end, func(w *win[K], e int64) int {
		switch {
		case w.end < e:
			return -1
		case w.end > e:
			return 1
		}
		return 0
	})
	if found {
		return c.wins[i]
	}
	w := &win[K]{end: end, tabs: make([]*table[K], c.nkg)}
	c.wins = slices.Insert(c.wins, i, w)
	return w
}

func (c *windowCore[K]) advance(old int64) {
	wm, size := c.wm, c.l.cfg.Size
	for _, w := range c.wins {
		if w.end-1 > wm {
			break
		}
		c.fire = c.fire[:0]
		start := w.end - size
		if w.end-1 > old {
			// Dirty flags can only predate the full firing after a restore
			// with an older watermark; the full firing covers them.
			c.clearDirty(w)
			for _, t := range w.tabs {
				if t == nil {
					continue
				}
				for _, s := range t.segs {
					for k, r := range s.idx {
						c.fire = append(c.fire, fired[K]{key: k, start: start, end: w.end, acc: s.rec(r, c.stride)})
					}
				}
			}
		} else {
			for _, d := range w.dirty {
				t := w.tabs[d.kg]
				si := t.segOf(c.kx.segHash(d.key))
				s := t.writable(si, &c.c)
				acc := s.rec(s.idx[d.key], c.stride)
				acc[0] &^= dirtyBit
				c.fire = append(c.fire, fired[K]{key: d.key, start: start, end: w.end, acc: acc})
			}
		}
		clear(w.dirty)
		w.dirty = w.dirty[:0]
		emitSorted(c.base, c.kx, c.fire)
	}
	clear(c.fire)
	c.fire = c.fire[:0]
	n := 0
	for n < len(c.wins) && c.wins[n].end-1+c.l.cfg.AllowedLateness <= wm {
		n++
	}
	if n > 0 {
		clear(c.wins[:n])
		c.wins = c.wins[n:]
		c.last = nil
	}
}

func (c *windowCore[K]) clearDirty(w *win[K]) {
	for _, d := range w.dirty {
		t := w.tabs[d.kg]
		s := t.writable(t.segOf(c.kx.segHash(d.key)), &c.c)
		s.rec(s.idx[d.key], c.stride)[0] &^= dirtyBit
	}
}

func (c *windowCore[K]) size() (keys int, bytes int64) {
	_, strKeys := any(c.kx).(*encKeyer)
	for _, w := range c.wins {
		bytes += 64 + int64(len(w.tabs))*8
		for _, t := range w.tabs {
			if t != nil {
				keys += t.n
				bytes += t.memBytes(c.kx, strKeys) + 48
			}
		}
	}
	return keys, bytes
}
