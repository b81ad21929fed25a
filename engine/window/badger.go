package window

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/state"
)

// The badger backend keeps the window's state in a badger database (an
// LSM tree on local disk, engine/state's Store) instead of heap tables,
// for state larger than memory. Semantics, output and the snapshot bytes per key group are those
// of the heap backend (snapshot.go's format), so state moves between the
// two backends and across parallelisms.
//
// Keys:
//
//	tumbling, sliding  0x00 kg(2, BE) paneEnd(8, BE, sign flipped) key
//	session            0x00 kg(2, BE) key
//	session timer      0x01 time(8, BE, sign flipped) kg(2, BE) key
//
// where key is the order-preserving key encoding (state.Keyer; an int64 key is
// its 8 bytes big-endian with the sign flipped), so iterating a prefix
// visits keys in output and snapshot order. A pane value is the
// accumulator's words (8 bytes little-endian each); a session value is the
// key's timer, its session count, then per session (by start) start, end
// and the accumulator, all as such words.
//
// What stays in memory: the sorted list of live panes (end, which key
// groups have entries, the keys made dirty by late rows), and per batch a
// map of the accumulators it touches. Process loads each touched
// accumulator once (read-modify-write), folds the batch's rows into it in
// row order (so float sums round as on the heap) and writes the batch back
// in one WriteBatch. Session timers live in the database, one per key (no
// stale entries), and AdvanceWatermark scans them up to the watermark.
//
// A snapshot is a read-only transaction opened by Snapshot (badger is
// MVCC: a consistent view for free); WriteKeyGroup serialises from it on
// any goroutine, Release discards it. A database error in Process or
// AdvanceWatermark panics (the runtime fails the task and restarts the
// job from its last checkpoint); in a snapshot it is reported by Err.

func newBadgerCore[K state.Key](b *base, kx state.Keyer[K], st *state.Store) core {
	if b.l.cfg.Kind == Session {
		return &bsessCore[K]{base: b, kx: kx, st: st, stride: b.l.accWords, w: state.Writer{St: st}, batch: map[skey[K]]int{},
			kgKeys: make([]int, b.nkg), scanFrom: math.MinInt64}
	}
	return &bwinCore[K]{base: b, kx: kx, st: st, w: state.Writer{St: st}, geo: newWindowCore(b, kx), batch: map[wkey[K]]int{}}
}

// ---- tumbling and sliding ----

type bwinCore[K state.Key] struct {
	*base
	kx    state.Keyer[K]
	st    *state.Store
	w     state.Writer
	geo   *windowCore[K] // pane geometry, and the fired-window arena and emitter
	panes []*bpane[K]
	p     state.Keyed[K]
	ops   []colRef
	n     int // accumulators in the database
	kbuf  []byte

	// The write-back cache: (pane, key group, key) → accumulator, read
	// from the database on first use and written back in one WriteBatch
	// when it holds cacheMax accumulators, before anything reads the
	// database (firing, purging) and before a snapshot. Hot keys then cost
	// a map lookup, not a read and a write per batch.
	batch map[wkey[K]]int
	ents  []bent[K]
	slab  []uint64
}

type bpane[K state.Key] struct {
	end, first, last int64
	has              []bool // by table index: the key group has entries
	dirty            []ref[K]
	keys             state.KeyFilter // every key the pane has in the database
}

type wkey[K state.Key] struct {
	end int64
	kg  int32 // table index
	key K
}

type bent[K state.Key] struct {
	wkey[K]
	p     *bpane[K]
	isNew bool
}

func (c *bwinCore[K]) dbKey(dst []byte, ti int, end int64, key K) []byte {
	dst = state.AppendOrd(state.StateKey(dst, c.kgStart+ti), end)
	return state.AppendKeyBytes(dst, key)
}

func (c *bwinCore[K]) paneAt(end int64) *bpane[K] {
	lo, hi := 0, len(c.panes)
	for lo < hi {
		m := (lo + hi) / 2
		if c.panes[m].end < end {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(c.panes) && c.panes[lo].end == end {
		return c.panes[lo]
	}
	g := c.geo
	ps := end - g.pane
	p := &bpane[K]{end: end, first: g.windowEndAtLeast(end), last: ps - floorMod(ps, g.slide) + g.wsize, has: make([]bool, c.nkg)}
	c.panes = append(c.panes, nil)
	copy(c.panes[lo+1:], c.panes[lo:])
	c.panes[lo] = p
	return p
}

// acc returns the batch's accumulator of (p, ti, key), loading it from the
// database the first time.
func (c *bwinCore[K]) acc(txn *badger.Txn, p *bpane[K], ti int, key K) []uint64 {
	st := c.l.accWords
	wk := wkey[K]{end: p.end, kg: int32(ti), key: key}
	if i, ok := c.batch[wk]; ok {
		return c.slab[i*st : (i+1)*st : (i+1)*st]
	}
	wk.key = c.kx.Clone(key)
	i := len(c.ents)
	c.batch[wk] = i
	c.slab = append(c.slab, make([]uint64, st)...)
	acc := c.slab[i*st : (i+1)*st : (i+1)*st]
	found := false
	if p.keys.MayContain(state.FilterHash(key)) {
		c.kbuf = c.dbKey(c.kbuf[:0], ti, p.end, key)
		found = state.GetValue(txn, c.kbuf, func(v []byte) { state.ReadWords(acc, v) })
	}
	c.ents = append(c.ents, bent[K]{wkey: wk, p: p, isNew: !found})
	return acc
}

// flushBatch writes the batch's accumulators.
func (c *bwinCore[K]) flushBatch() {
	st := c.l.accWords
	for i, e := range c.ents {
		k := c.dbKey(c.w.Alloc(11+16+len(c.kbuf)), int(e.kg), e.end, e.key)
		v := state.AppendWords(c.w.Alloc(8*st), c.slab[i*st:(i+1)*st])
		c.w.Set(k, v)
		if e.isNew {
			c.n++
			e.p.has[e.kg] = true
			e.p.keys.Add(state.FilterHash(e.key))
		}
	}
	c.w.Flush()
	clear(c.batch)
	clear(c.ents)
	c.ents = c.ents[:0]
	c.slab = c.slab[:0]
}

func (c *bwinCore[K]) process(b, late *row.Batch) int {
	c.kx.Prepare(b, &c.p)
	c.ops = bindOps(c.l.ops, b, c.ops)
	ts := b.Cols[c.l.timeCol].Ints[:b.Len]
	g := c.geo
	L, pn := c.l.cfg.AllowedLateness, g.pane
	txn := c.st.DB.NewTransaction(false)
	defer txn.Discard()
	nlate := 0
	var p *bpane[K]
	for i, t := range ts {
		pe := t - floorMod(t, pn) + pn
		if p == nil || p.end != pe {
			ps := pe - pn
			if ps-floorMod(ps, g.slide)+g.wsize-1+L <= c.wm {
				nlate++
				if late != nil {
					late.AppendFrom(b, i)
				}
				p = nil
				continue
			}
			p = c.paneAt(pe)
		}
		ti := c.kgIndex(c.p.KG[i])
		acc := c.acc(txn, p, ti, c.p.Keys[i])
		addRow(acc, c.ops, i)
		if p.first-1 <= c.wm && acc[0]&dirtyBit == 0 {
			acc[0] |= dirtyBit
			p.dirty = append(p.dirty, ref[K]{key: c.kx.Clone(c.p.Keys[i]), kg: int32(ti)})
		}
	}
	if len(c.ents) >= cacheMax {
		c.flushBatch()
	}
	return nlate
}

// cacheMax bounds the write-back cache (accumulators); flushing it is
// part of a snapshot's synchronous pause, so it stays small.
const cacheMax = 1 << 15

// sync writes the write-back cache to the database.
func (c *bwinCore[K]) sync() {
	if len(c.ents) > 0 {
		c.flushBatch()
	}
}

func (c *bwinCore[K]) advance(old int64) {
	wm, L := c.wm, c.l.cfg.AllowedLateness
	g := c.geo
	// The transaction and iterator are opened only if something fires:
	// most watermarks fire nothing.
	var txn *badger.Txn
	open := func() {
		if txn == nil {
			c.sync()
			txn = c.st.DB.NewTransaction(false)
		}
	}
	if len(c.panes) > 0 {
		anyDirty := false
		for _, p := range c.panes {
			anyDirty = anyDirty || len(p.dirty) > 0
		}
		g.firing(old, anyDirty, len(c.panes),
			func(i int) int64 { return c.panes[i].end },
			func(i int) int64 { return c.panes[i].first },
			func(pi, pj int, full bool) {
				open()
				if full {
					c.fireFull(txn, c.panes[pi:pj])
				} else {
					c.fireDirty(txn, c.panes[pi:pj])
				}
			})
		clear(g.fk)
		g.fk = g.fk[:0]
		if anyDirty {
			open()
			for _, p := range c.panes {
				c.clearDirty(txn, p)
			}
			c.w.Flush()
		}
		if txn != nil {
			txn.Discard()
		}
	}
	n := 0
	for n < len(c.panes) && c.panes[n].last-1+L <= wm {
		n++
	}
	if n > 0 {
		c.sync()
		c.purge(c.panes[:n])
		clear(c.panes[:n])
		c.panes = c.panes[n:]
	}
}

// fireFull puts every key of the window made of panes ps, with its merged
// accumulator, in the arena: per key group, panes merged in pane order as
// on the heap.
func (c *bwinCore[K]) fireFull(txn *badger.Txn, ps []*bpane[K]) {
	g := c.geo
	st := c.l.accWords
	idx := map[K]int{}
	src := make([]uint64, st)
	for ti := 0; ti < c.nkg; ti++ {
		np := 0
		for _, p := range ps {
			if p.has[ti] {
				np++
			}
		}
		if np == 0 {
			continue
		}
		if np > 1 {
			clear(idx)
		}
		for _, p := range ps {
			if !p.has[ti] {
				continue
			}
			pre := state.AppendOrd(state.StateKey(nil, c.kgStart+ti), p.end)
			err := state.Scan(txn, pre, func(item *badger.Item) error {
				k, err := state.KeyFromBytes[K](item.Key()[len(pre):])
				if err != nil {
					return err
				}
				off, seen := 0, false
				if np > 1 {
					off, seen = idx[k]
				}
				if !seen {
					off = len(g.arena)
					g.arena = append(g.arena, make([]uint64, st)...)
					g.fk = append(g.fk, fk[K]{key: k, off: off})
					if np > 1 {
						idx[k] = off
					}
				}
				dst := g.arena[off : off+st]
				return item.Value(func(v []byte) error {
					if !seen {
						state.ReadWords(dst, v)
						return nil
					}
					state.ReadWords(src, v)
					mergeAcc(dst, src, c.l.ops)
					return nil
				})
			})
			if err != nil {
				state.Fail("fire", err)
			}
		}
	}
}

// fireDirty puts in the arena the keys of the fired window made of panes ps
// that have a dirty pane accumulator, merged over all of ps.
func (c *bwinCore[K]) fireDirty(txn *badger.Txn, ps []*bpane[K]) {
	g := c.geo
	st := c.l.accWords
	seen := map[ref[K]]bool{}
	tmp := make([]uint64, st)
	for _, p := range ps {
		for _, d := range p.dirty {
			if seen[d] {
				continue
			}
			seen[d] = true
			off := len(g.arena)
			g.arena = append(g.arena, make([]uint64, st)...)
			for _, q := range ps {
				c.kbuf = c.dbKey(c.kbuf[:0], int(d.kg), q.end, d.key)
				if state.GetValue(txn, c.kbuf, func(v []byte) { state.ReadWords(tmp, v) }) {
					mergeAcc(g.arena[off:off+st], tmp, c.l.ops)
				}
			}
			g.fk = append(g.fk, fk[K]{key: d.key, off: off})
		}
	}
}

func (c *bwinCore[K]) clearDirty(txn *badger.Txn, p *bpane[K]) {
	st := c.l.accWords
	tmp := make([]uint64, st)
	for _, d := range p.dirty {
		c.kbuf = c.dbKey(c.kbuf[:0], int(d.kg), p.end, d.key)
		if !state.GetValue(txn, c.kbuf, func(v []byte) { state.ReadWords(tmp, v) }) {
			continue
		}
		tmp[0] &^= dirtyBit
		c.w.Set(append(c.w.Alloc(len(c.kbuf)), c.kbuf...), state.AppendWords(c.w.Alloc(8*st), tmp))
	}
	clear(p.dirty)
	p.dirty = p.dirty[:0]
}

// purge deletes the entries of panes ps.
func (c *bwinCore[K]) purge(ps []*bpane[K]) {
	txn := c.st.DB.NewTransaction(false)
	defer txn.Discard()
	for _, p := range ps {
		for ti, has := range p.has {
			if !has {
				continue
			}
			pre := state.AppendOrd(state.StateKey(nil, c.kgStart+ti), p.end)
			err := state.Scan(txn, pre, func(item *badger.Item) error {
				k := item.Key()
				c.w.Del(append(c.w.Alloc(len(k)), k...))
				c.n--
				return nil
			})
			if err != nil {
				state.Fail("purge", err)
			}
		}
	}
	c.w.Flush()
}

func (c *bwinCore[K]) restore(kg int, data []byte) error {
	ti := kg - c.kgStart
	txn := c.st.DB.NewTransaction(false)
	defer txn.Discard()
	var w *bpane[K]
	err := c.geo.decodePanes(kg, data,
		func(end int64) { w = c.paneAt(end) },
		func(k K, acc []uint64) {
			dst := c.acc(txn, w, ti, k)
			wasDirty := dst[0]&dirtyBit != 0
			mergeAcc(dst, acc, c.l.ops)
			if dst[0]&dirtyBit != 0 && !wasDirty {
				w.dirty = append(w.dirty, ref[K]{key: k, kg: int32(ti)})
			}
		})
	c.flushBatch()
	return err
}

func (c *bwinCore[K]) size() (int, int64) { return c.n, c.st.Size() }

func (c *bwinCore[K]) snapshot() snapData {
	s := newBsnap(c.st, c.l, c.kx, c.kgStart, c.nkg, false)
	for _, p := range c.panes {
		s.panes = append(s.panes, snapPane{end: p.end, has: slices.Clone(p.has)})
	}
	for ti := range c.nkg {
		for _, p := range c.panes {
			if p.has[ti] {
				s.kgs = append(s.kgs, c.kgStart+ti)
				break
			}
		}
	}
	return s
}

// ---- sessions ----

type bsessCore[K state.Key] struct {
	*base
	kx     state.Keyer[K]
	st     *state.Store
	w      state.Writer
	stride int
	p      state.Keyed[K]
	ops    []colRef
	nsess  int
	kgKeys []int // keys with sessions, by table index
	kbuf   []byte
	fire   []fired[K]
	// Timers below scanFrom were all handled (deleted or moved past the
	// watermark): the scan starts there, not at the tombstones of timers
	// that fired long ago.
	scanFrom int64

	// the batch being processed: (key group, key) → its sessions
	batch map[skey[K]]int
	keys  []*skeyState[K]
}

type skey[K state.Key] struct {
	kg  int32 // table index
	key K
}

type bsess struct {
	start, end int64
	acc        []uint64
}

type skeyState[K state.Key] struct {
	skey[K]
	timer, oldTimer int64 // oldTimer: the one in the database, if had
	had             bool
	sess            []bsess // by start
}

func (c *bsessCore[K]) dbKey(dst []byte, ti int, key K) []byte {
	return state.AppendKeyBytes(state.StateKey(dst, c.kgStart+ti), key)
}

func timerKey[K state.Key](dst []byte, t int64, kg int, key K) []byte {
	dst = state.AppendOrd(append(dst, state.TagTimer), t)
	dst = binary.BigEndian.AppendUint16(dst, uint16(kg))
	return state.AppendKeyBytes(dst, key)
}

func (c *bsessCore[K]) decode(s *skeyState[K], v []byte) {
	s.timer = int64(binary.LittleEndian.Uint64(v))
	n := int(binary.LittleEndian.Uint64(v[8:]))
	v = v[16:]
	s.sess = s.sess[:0]
	for range n {
		acc := make([]uint64, c.stride)
		start, end := int64(binary.LittleEndian.Uint64(v)), int64(binary.LittleEndian.Uint64(v[8:]))
		state.ReadWords(acc, v[16:])
		v = v[16+8*c.stride:]
		s.sess = append(s.sess, bsess{start: start, end: end, acc: acc})
	}
	s.oldTimer, s.had = s.timer, true
}

func (c *bsessCore[K]) encode(dst []byte, s *skeyState[K]) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(s.timer))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(len(s.sess)))
	for _, x := range s.sess {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(x.start))
		dst = binary.LittleEndian.AppendUint64(dst, uint64(x.end))
		dst = state.AppendWords(dst, x.acc)
	}
	return dst
}

// state returns the batch's sessions of (ti, key), loading them first.
func (c *bsessCore[K]) state(txn *badger.Txn, ti int, key K) *skeyState[K] {
	sk := skey[K]{kg: int32(ti), key: key}
	if i, ok := c.batch[sk]; ok {
		return c.keys[i]
	}
	sk.key = c.kx.Clone(key)
	s := &skeyState[K]{skey: sk, timer: math.MaxInt64}
	c.kbuf = c.dbKey(c.kbuf[:0], ti, key)
	state.GetValue(txn, c.kbuf, func(v []byte) { c.decode(s, v) })
	c.batch[sk] = len(c.keys)
	c.keys = append(c.keys, s)
	return s
}

// put writes s back (deleting it if it has no sessions) and moves its
// timer.
func (c *bsessCore[K]) put(s *skeyState[K]) {
	if !s.had && len(s.sess) == 0 {
		return // a late row of a key without state
	}
	k := c.dbKey(c.w.Alloc(3+len(c.kbuf)+16), int(s.kg), s.key)
	if len(s.sess) == 0 {
		c.w.Del(k)
	} else {
		c.w.Set(k, c.encode(c.w.Alloc(16+len(s.sess)*(16+8*c.stride)), s))
	}
	if s.had && (len(s.sess) == 0 || s.oldTimer != s.timer) {
		c.w.Del(state.TimerKey(c.w.Alloc(11+len(k)), s.oldTimer, c.kgStart+int(s.kg), s.key))
	}
	if len(s.sess) > 0 && (!s.had || s.oldTimer != s.timer) {
		c.w.Set(state.TimerKey(c.w.Alloc(11+len(k)), s.timer, c.kgStart+int(s.kg), s.key), nil)
		c.scanFrom = min(c.scanFrom, s.timer)
	}
	switch {
	case !s.had && len(s.sess) > 0:
		c.kgKeys[s.kg]++
	case s.had && len(s.sess) == 0:
		c.kgKeys[s.kg]--
	}
}

func (c *bsessCore[K]) flushBatch() {
	for _, s := range c.keys {
		c.put(s)
	}
	c.w.Flush()
	clear(c.batch)
	clear(c.keys)
	c.keys = c.keys[:0]
}

func (c *bsessCore[K]) need(x *bsess) int64 {
	if x.acc[0]&dirtyBit != 0 {
		return x.end - 1
	}
	return x.end - 1 + c.l.cfg.AllowedLateness
}

// insert adds the window [start, end) to s: row i of the current batch if
// src is nil, else the accumulator src, merging every session it overlaps
// or touches. It returns false, changing nothing, if the window is new and
// past lateness.
func (c *bsessCore[K]) insert(s *skeyState[K], start, end int64, i int, src []uint64) bool {
	fold := func(acc []uint64) {
		if src == nil {
			addRow(acc, c.ops, i)
			acc[0] |= dirtyBit
		} else {
			mergeAcc(acc, src, c.l.ops)
		}
	}
	m := -1
	for j := range s.sess {
		if x := &s.sess[j]; x.start <= end && start <= x.end {
			m = j
			break
		}
	}
	if m < 0 {
		if end-1+c.l.cfg.AllowedLateness <= c.wm {
			return false
		}
		x := bsess{start: start, end: end, acc: make([]uint64, c.stride)}
		fold(x.acc)
		j := 0
		for j < len(s.sess) && s.sess[j].start < start {
			j++
		}
		s.sess = append(s.sess, bsess{})
		copy(s.sess[j+1:], s.sess[j:])
		s.sess[j] = x
		c.nsess++
		s.timer = min(s.timer, c.need(&x))
		return true
	}
	x := &s.sess[m]
	start, end = min(start, x.start), max(end, x.end)
	fold(x.acc)
	j := m + 1
	for j < len(s.sess) && s.sess[j].start <= end && start <= s.sess[j].end {
		o := &s.sess[j]
		start, end = min(start, o.start), max(end, o.end)
		mergeAcc(x.acc, o.acc, c.l.ops)
		x.acc[0] |= dirtyBit
		j++
	}
	if j > m+1 {
		c.nsess -= j - m - 1
		s.sess = append(s.sess[:m+1], s.sess[j:]...)
		x = &s.sess[m]
	}
	x.start, x.end = start, end
	s.timer = min(s.timer, c.need(x))
	return true
}

func (c *bsessCore[K]) process(b, late *row.Batch) int {
	c.kx.Prepare(b, &c.p)
	c.ops = bindOps(c.l.ops, b, c.ops)
	ts := b.Cols[c.l.timeCol].Ints[:b.Len]
	txn := c.st.DB.NewTransaction(false)
	defer txn.Discard()
	nlate := 0
	for i, t := range ts {
		ti := c.kgIndex(c.p.KG[i])
		s := c.state(txn, ti, c.p.Keys[i])
		if c.insert(s, t, t+c.l.cfg.Gap, i, nil) {
			continue
		}
		nlate++
		if late != nil {
			late.AppendFrom(b, i)
		}
	}
	c.flushBatch()
	return nlate
}

func (c *bsessCore[K]) advance(int64) {
	wm, L := c.wm, c.l.cfg.AllowedLateness
	c.fire = c.fire[:0]
	txn := c.st.DB.NewTransaction(false)
	defer txn.Discard()
	var due [][]byte
	if c.scanFrom <= wm {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: []byte{state.TagTimer}})
		for it.Seek(state.AppendOrd([]byte{state.TagTimer}, c.scanFrom)); it.Valid(); it.Next() {
			k := it.Item().Key()
			if state.ReadOrd(k[1:9]) > wm {
				break
			}
			due = append(due, append([]byte(nil), k...))
		}
		it.Close()
		c.scanFrom = wm + 1 // timers set below are > wm, or lower scanFrom
	}
	for _, tk := range due {
		t := state.ReadOrd(tk[1:9])
		kg := int(binary.BigEndian.Uint16(tk[9:11]))
		key, err := state.KeyFromBytes[K](tk[11:])
		if err != nil {
			state.Fail("timer", err)
		}
		s := c.state(txn, kg-c.kgStart, key)
		if !s.had || s.timer != t {
			c.w.Del(tk) // stale (not written by this backend)
			continue
		}
		keep := s.sess[:0]
		need := int64(math.MaxInt64)
		for _, x := range s.sess {
			if x.acc[0]&dirtyBit != 0 && x.end-1 <= wm {
				x.acc[0] &^= dirtyBit
				c.fire = append(c.fire, fired[K]{key: s.key, start: x.start, end: x.end, acc: x.acc})
			}
			if x.end-1+L <= wm {
				c.nsess--
				continue
			}
			keep = append(keep, x)
			need = min(need, c.need(&x))
		}
		s.sess = keep
		s.timer = need
	}
	c.flushBatch()
	emitSorted(c.base, c.kx, c.fire)
	clear(c.fire)
	c.fire = c.fire[:0]
}

func (c *bsessCore[K]) restore(kg int, data []byte) error {
	d := &state.Dec{B: data}
	ti := kg - c.kgStart
	txn := c.st.DB.NewTransaction(false)
	defer txn.Discard()
	nk := d.Count(2)
	for range nk {
		k := state.ReadKey(d, c.kx, kg)
		ns := d.Count(3)
		if d.Err != nil {
			break
		}
		s := c.state(txn, ti, k)
		for range ns {
			start, end := d.Varint(), d.Varint()
			acc := make([]uint64, c.stride)
			d.Record(acc)
			if d.Err != nil {
				break
			}
			c.insert(s, start, end, 0, acc)
		}
		if d.Err != nil {
			break
		}
	}
	c.flushBatch()
	return d.End()
}

func (c *bsessCore[K]) size() (int, int64) { return c.nsess, c.st.Size() }

func (c *bsessCore[K]) snapshot() snapData {
	s := newBsnap(c.st, c.l, c.kx, c.kgStart, c.nkg, true)
	for ti, n := range c.kgKeys {
		if n > 0 {
			s.kgs = append(s.kgs, c.kgStart+ti)
		}
	}
	return s
}

// ---- snapshots ----

type bsnap[K state.Key] struct {
	st       *state.Store
	txn      *badger.Txn
	l        *layout
	kx       state.Keyer[K]
	kgStart  int
	nkg      int
	session  bool
	kgs      []int      // key groups with state, from memory
	panes    []snapPane // live panes (tumbling, sliding)
	e        error
	released bool
	kept     bool // the transaction belongs to the operator's incr
}

type snapPane struct {
	end int64
	has []bool
}

func newBsnap[K state.Key](st *state.Store, l *layout, kx state.Keyer[K], kgStart, nkg int, session bool) *bsnap[K] {
	return &bsnap[K]{st: st, txn: st.DB.NewTransaction(false), l: l, kx: kx, kgStart: kgStart, nkg: nkg, session: session}
}

func (s *bsnap[K]) err() error { return s.e }

// use runs f with the database guaranteed open, or records an error.
func (s *bsnap[K]) use(f func() error) {
	err := s.st.Use(f)
	switch {
	case err == nil || s.e != nil:
	case errors.Is(err, state.ErrClosed):
		s.e = errors.New("window: snapshot written after the operator closed")
	default:
		s.e = fmt.Errorf("window: reading badger state for a snapshot: %w", err)
	}
}

func (s *bsnap[K]) keyGroups() []int { return s.kgs }

func (s *bsnap[K]) write(kg int, dst []byte) []byte {
	dst = appendHeader(dst, s.l)
	s.use(func() error {
		var err error
		dst, err = s.writeKG(kg, dst)
		return err
	})
	return dst
}

func (s *bsnap[K]) writeKG(kg int, dst []byte) ([]byte, error) {
	st := s.l.accWords
	acc := make([]uint64, st)
	var ents []byte
	n := 0
	entry := func(pre []byte) func(item *badger.Item) error {
		return func(item *badger.Item) error {
			key, err := state.KeyFromBytes[K](item.Key()[len(pre):])
			if err != nil {
				return err
			}
			ents = s.kx.AppendBin(ents, key)
			n++
			return item.Value(func(v []byte) error {
				if !s.session {
					if len(v) != 8*st {
						return errors.New("malformed accumulator")
					}
					state.ReadWords(acc, v)
					ents = state.AppendRecord(ents, acc)
					return nil
				}
				if len(v) < 16 {
					return errors.New("malformed sessions")
				}
				ns := int(binary.LittleEndian.Uint64(v[8:]))
				v = v[16:]
				if len(v) != ns*(16+8*st) {
					return errors.New("malformed sessions")
				}
				ents = binary.AppendUvarint(ents, uint64(ns))
				for range ns {
					ents = binary.AppendVarint(ents, int64(binary.LittleEndian.Uint64(v)))
					ents = binary.AppendVarint(ents, int64(binary.LittleEndian.Uint64(v[8:])))
					state.ReadWords(acc, v[16:])
					ents = state.AppendRecord(ents, acc)
					v = v[16+8*st:]
				}
				return nil
			})
		}
	}
	if s.session {
		pre := state.StateKey(nil, kg)
		if err := state.Scan(s.txn, pre, entry(pre)); err != nil {
			return dst, err
		}
		dst = binary.AppendUvarint(dst, uint64(n))
		return append(dst, ents...), nil
	}
	var body []byte
	groups := 0
	if ti := kg - s.kgStart; ti >= 0 && ti < s.nkg {
		for _, p := range s.panes {
			if !p.has[ti] {
				continue
			}
			pre := state.AppendOrd(state.StateKey(nil, kg), p.end)
			ents, n = ents[:0], 0
			if err := state.Scan(s.txn, pre, entry(pre)); err != nil {
				return dst, err
			}
			body = binary.AppendVarint(body, p.end)
			body = binary.AppendUvarint(body, uint64(n))
			body = append(body, ents...)
			groups++
		}
	}
	dst = binary.AppendUvarint(dst, uint64(groups))
	return append(dst, body...), nil
}

func (s *bsnap[K]) release() {
	s.st.Use(func() error {
		if !s.released && !s.kept {
			s.txn.Discard()
		}
		return nil
	})
	s.released = true
}
