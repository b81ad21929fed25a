package window

import (
	"slices"
	"unsafe"
)

// segMax is the number of keys a segment holds on average before its table
// doubles its segments. It bounds the cost of one copy-on-write copy (two
// memcpys: the slot array and the record slab of about this many keys).
// With Go maps and 128 keys per segment, the batches right after a
// snapshot of 16M keys took up to ~70 ms (a 1024-row batch of random keys
// cloned ~1000 maps); flat segments of 32 keys copy ~1000 × ~2 KB. A var
// so tests can force splits.
var segMax = 32

// noNext ends a chain of records.
const noNext = ^uint64(0)

// slot is one entry of a segment's open-addressing index. rec is the
// record number plus one (0: empty); h is the top 32 bits of the key's
// segment hash: its top bits chose the segment, its low bits the slot.
type slot[K keyT] struct {
	key K
	rec int32
	h   uint32
}

// segment is a small open-addressing hash table (linear probing, at most
// 3/4 full, deletion by backward shift) from key to record number; a record
// is stride words of words. Records of removed sessions are chained on
// free. A segment with ver <= the newest live snapshot's version is frozen:
// it is shared with that snapshot and is copied before any write.
type segment[K keyT] struct {
	slots []slot[K] // power-of-two length, or empty
	n     int32     // keys
	free  int32     // first free record, -1 if none (sessions only)
	words []uint64
	ver   uint64
	// sharedSlots: slots is still the array of the frozen segment this one
	// was copied from (clone copies only the records, which is all an
	// update of existing keys writes); insert, set and del copy it first.
	sharedSlots bool
}

func newSegment[K keyT](ver uint64, hint, stride int) *segment[K] {
	s := &segment[K]{free: -1, ver: ver}
	if hint > 0 {
		n := 8
		for n*3/4 < hint {
			n *= 2
		}
		s.slots = make([]slot[K], n)
		s.words = make([]uint64, 0, hint*stride)
	}
	return s
}

func (s *segment[K]) rec(r int32, stride int) []uint64 {
	o := int(r) * stride
	return s.words[o : o+stride : o+stride]
}

// find returns key's record.
func (s *segment[K]) find(key K, h uint32) (int32, bool) {
	if len(s.slots) == 0 {
		return -1, false
	}
	mask := uint32(len(s.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		sl := &s.slots[i]
		if sl.rec == 0 {
			return -1, false
		}
		if sl.h == h && sl.key == key {
			return sl.rec - 1, true
		}
	}
}

// ownSlots copies a slot array shared with a frozen segment.
func (s *segment[K]) ownSlots() {
	if s.sharedSlots {
		s.slots = slices.Clone(s.slots)
		s.sharedSlots = false
	}
}

// insert adds key (absent, owned) with record r.
func (s *segment[K]) insert(key K, h uint32, r int32) {
	if int(s.n+1) > len(s.slots)*3/4 {
		s.grow()
	}
	s.ownSlots()
	mask := uint32(len(s.slots) - 1)
	i := h & mask
	for s.slots[i].rec != 0 {
		i = (i + 1) & mask
	}
	s.slots[i] = slot[K]{key: key, rec: r + 1, h: h}
	s.n++
}

// set changes the record of key, which is present.
func (s *segment[K]) set(key K, h uint32, r int32) {
	s.ownSlots()
	mask := uint32(len(s.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		if sl := &s.slots[i]; sl.h == h && sl.key == key {
			sl.rec = r + 1
			return
		}
	}
}

// del removes key, which is present, shifting later entries of its probe
// run back so that no tombstones are needed.
func (s *segment[K]) del(key K, h uint32) {
	s.ownSlots()
	mask := uint32(len(s.slots) - 1)
	i := h & mask
	for {
		if sl := &s.slots[i]; sl.h == h && sl.key == key {
			break
		}
		i = (i + 1) & mask
	}
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		sl := &s.slots[j]
		if sl.rec == 0 {
			break
		}
		// Move sl to the hole at i unless its home lies cyclically in (i, j].
		home := sl.h & mask
		if (j-home)&mask >= (j-i)&mask {
			s.slots[i] = *sl
			i = j
		}
	}
	s.slots[i] = slot[K]{}
	s.n--
}

func (s *segment[K]) grow() {
	old := s.slots
	n := max(8, len(old)*2)
	s.slots = make([]slot[K], n)
	s.sharedSlots = false
	mask := uint32(n - 1)
	for _, sl := range old {
		if sl.rec == 0 {
			continue
		}
		i := sl.h & mask
		for s.slots[i].rec != 0 {
			i = (i + 1) & mask
		}
		s.slots[i] = sl
	}
}

// newRec appends a zeroed record.
func (s *segment[K]) newRec(stride int) int32 {
	r := int32(len(s.words) / stride)
	if len(s.words)+stride <= cap(s.words) {
		s.words = s.words[:len(s.words)+stride]
		clear(s.words[len(s.words)-stride:])
	} else {
		s.words = append(s.words, make([]uint64, stride)...)
	}
	return r
}

// alloc returns a zeroed record, reusing a free one.
func (s *segment[K]) alloc(stride int) int32 {
	if r := s.free; r >= 0 {
		w := s.rec(r, stride)
		s.free = int32(w[sessNext])
		clear(w)
		return r
	}
	return s.newRec(stride)
}

func (s *segment[K]) release(r int32, stride int) {
	w := s.rec(r, stride)
	w[sessNext] = uint64(int64(s.free))
	s.free = r
}

// clone copies the segment for writing at version ver: its records, not
// its slot array, which is copied only if a key comes or goes.
func (s *segment[K]) clone(ver uint64) *segment[K] {
	return &segment[K]{slots: s.slots, sharedSlots: len(s.slots) > 0, n: s.n, free: s.free, words: slices.Clone(s.words), ver: ver}
}

// cow is the copy-on-write state shared by an operator's tables.
type cow struct {
	ver    uint64 // version of segments created or copied now
	frozen uint64 // segments with ver <= frozen belong to a live snapshot
	oldest uint64 // oldest live snapshot's version, MaxUint64 if none
	copies int    // segments copied (tests and benchmarks)
}

// load reads the live snapshots' versions, once per call into the operator.
func (c *cow) load(r *registry) {
	c.frozen = r.frozen.Load()
	c.oldest = r.oldest.Load()
}

// table is the state of one key group (of one pane, for tumbling and
// sliding): 2^bits segments chosen by the top bits of the key's hash, held
// in chunks of chunkLen segment pointers. The table itself is private to
// the operator; snapshots copy its chunk array (one slice header).
//
// Copy-on-write happens at three levels, each with a version: a segment, a
// chunk and the chunk array are copied before they are written if a live
// snapshot shares them. Chunks keep the first write after a snapshot from
// copying a table's whole pointer array (4096 pointers at 125k keys).
type table[K keyT] struct {
	chunks    []*segChunk[K]
	chunksVer uint64
	shift     uint8 // 32 - bits: h >> shift is the segment (0 when bits is 0)
	bits      uint8
	n         int // keys
	// pool holds segments replaced by their copies, oldest first, until
	// the snapshots that shared them are released; then the next copy
	// reuses one's header and record slab. Without it the batches after a
	// snapshot allocate ~1000 objects each, and pay the allocator, page
	// faults and GC assists for it (most of their p99 on a 1 GB state).
	pool []retired[K]
}

// retired is a segment replaced while the snapshots up to version frozen
// shared it.
type retired[K keyT] struct {
	s      *segment[K]
	frozen uint64
}

const (
	chunkBits = 6
	chunkLen  = 1 << chunkBits
)

type segChunk[K keyT] struct {
	segs [chunkLen]*segment[K]
	ver  uint64
}

func newTable[K keyT](c *cow) *table[K] {
	ch := &segChunk[K]{ver: c.ver}
	ch.segs[0] = newSegment[K](c.ver, 0, 0)
	return &table[K]{chunks: []*segChunk[K]{ch}, chunksVer: c.ver, shift: 32}
}

func (t *table[K]) segOf(h uint32) int { return int(uint64(h) >> t.shift) }

func (t *table[K]) seg(i int) *segment[K] { return t.chunks[i>>chunkBits].segs[i&(chunkLen-1)] }

// segsOf calls f for each of the 2^bits segments in chunks.
func segsOf[K keyT](chunks []*segChunk[K], bits uint8, f func(*segment[K])) {
	n := min(1<<bits, chunkLen)
	for _, ch := range chunks {
		for _, s := range ch.segs[:n] {
			f(s)
		}
	}
}

// writable returns segment i, copying it first if a snapshot shares it.
func (t *table[K]) writable(i int, c *cow) *segment[K] {
	ci := i >> chunkBits
	ch := t.chunks[ci]
	s := ch.segs[i&(chunkLen-1)]
	if s.ver > c.frozen {
		return s
	}
	n := t.copyOf(s, c)
	if ch.ver <= c.frozen {
		if t.chunksVer <= c.frozen {
			t.chunks = slices.Clone(t.chunks)
			t.chunksVer = c.ver
		}
		nc := *ch
		nc.ver = c.ver
		ch = &nc
		t.chunks[ci] = ch
	}
	ch.segs[i&(chunkLen-1)] = n
	return n
}

// copyOf returns a writable copy of the frozen segment s at version
// c.ver, reusing a retired segment no live snapshot holds any more, and
// retires s.
func (t *table[K]) copyOf(s *segment[K], c *cow) *segment[K] {
	c.copies++
	var n *segment[K]
	if len(t.pool) > 0 && t.pool[0].frozen < c.oldest {
		n = t.pool[0].s
		t.pool[0] = retired[K]{}
		t.pool = t.pool[1:]
		w := n.words[:0]
		if cap(w) < len(s.words) {
			w = make([]uint64, 0, len(s.words))
		}
		*n = segment[K]{slots: s.slots, sharedSlots: len(s.slots) > 0, n: s.n, free: s.free, words: append(w, s.words...), ver: c.ver}
	} else {
		n = s.clone(c.ver)
	}
	// At most one table's worth of segments waits: what a snapshot holds.
	if len(t.pool) < 1<<t.bits {
		t.pool = append(t.pool, retired[K]{s: s, frozen: c.frozen})
	}
	return n
}

// split doubles the number of segments, moving each key's chain of records
// (one record for windows; a session list, linked through sessNext, for
// sessions) to the segment its next hash bit picks. Old segments are left
// untouched for any snapshot that holds them.
func (t *table[K]) split(c *cow, stride int, chained bool) {
	old, oldBits := t.chunks, t.bits
	t.bits++
	t.shift = 32 - t.bits
	nsegs := 1 << t.bits
	t.chunks = make([]*segChunk[K], max(1, nsegs>>chunkBits))
	t.chunksVer = c.ver
	hint := segMax/2 + segMax/8
	for ci := range t.chunks {
		ch := &segChunk[K]{ver: c.ver}
		for j := range min(nsegs, chunkLen) {
			ch.segs[j] = newSegment[K](c.ver, hint, stride)
		}
		t.chunks[ci] = ch
	}
	segsOf(old, oldBits, func(s *segment[K]) {
		for _, sl := range s.slots {
			if sl.rec == 0 {
				continue
			}
			d := t.seg(t.segOf(sl.h))
			r := sl.rec - 1
			if !chained {
				nr := d.newRec(stride)
				copy(d.rec(nr, stride), s.rec(r, stride))
				d.insert(sl.key, sl.h, nr)
				continue
			}
			prev := int32(-1)
			for r >= 0 {
				src := s.rec(r, stride)
				nr := d.newRec(stride)
				copy(d.rec(nr, stride), src)
				if prev < 0 {
					d.insert(sl.key, sl.h, nr)
				} else {
					d.rec(prev, stride)[sessNext] = uint64(int64(nr))
				}
				d.rec(nr, stride)[sessNext] = noNext
				prev = nr
				r = int32(int64(src[sessNext]))
			}
		}
	})
}

// needSplit reports whether the table has outgrown its segments.
func (t *table[K]) needSplit() bool { return t.n > segMax<<t.bits && t.bits < 24 }

// memBytes estimates the table's heap size: slot arrays, slabs, segment
// headers and pointers, and key bytes for string keys.
func (t *table[K]) memBytes(kx keyer[K], countKeys bool) int64 {
	var b int64
	slotSize := int64(unsafe.Sizeof(slot[K]{}))
	b += int64(len(t.chunks)) * int64(unsafe.Sizeof(segChunk[K]{})+8)
	segsOf(t.chunks, t.bits, func(s *segment[K]) {
		b += int64(cap(s.words))*8 + int64(len(s.slots))*slotSize + int64(unsafe.Sizeof(*s))
		if countKeys {
			for _, sl := range s.slots {
				if sl.rec != 0 {
					b += int64(kx.memSize(sl.key)) - 16
				}
			}
		}
	})
	return b
}
