package state

import (
	"math"
	"slices"
	"unsafe"
)

// Heap keyed state: copy-on-write hash tables of fixed-width records.
//
// A Table is the state of one key group (of one pane, for windows): 2^bits
// Segments chosen by the top bits of the key's hash, held in chunks of 64
// pointers. A Segment is a small open-addressing hash table (no Go maps)
// from key to a record of stride uint64 words in a flat slab, about SegMax
// keys each. A single int64 key is stored as int64; every other key shape
// as its order-preserving byte encoding in a string (see Keyer).
//
// Snapshots are by version (COW): a snapshot takes a View of each table
// (one slice header) and bumps the version; a segment, chunk or chunk
// array whose version is not newer than the newest live snapshot is copied
// before it is written, so a snapshot never sees later writes and the pause
// does not grow with the state's size. The first writes after a snapshot
// pay for it: each first write to a segment copies its records (and its
// chunk); its slot array is copied only when a key comes or goes.
//
// Records of one key may form a chain (sessions: a short linked list
// through the record word the caller names); records freed from a chain
// are reused through Segment.Free.

// SegMax is the number of keys a segment holds on average before its table
// doubles its segments. It bounds the cost of one copy-on-write copy (two
// memcpys: the slot array and the record slab of about this many keys).
// With Go maps and 128 keys per segment, the batches right after a
// snapshot of 16M keys took up to ~70 ms (a 1024-row batch of random keys
// cloned ~1000 maps); flat segments of 32 keys copy ~1000 × ~2 KB. A var
// so tests can force splits.
var SegMax = 32

// NoNext ends a chain of records.
const NoNext = ^uint64(0)

// Slot is one entry of a segment's open-addressing index. Rec is the
// record number plus one (0: empty); H is the top 32 bits of the key's
// segment hash (Keyer.SegHash): its top bits chose the segment, its low
// bits the slot.
type Slot[K Key] struct {
	Key K
	Rec int32
	H   uint32
}

// Segment is a small open-addressing hash table (linear probing, at most
// 3/4 full, deletion by backward shift) from key to record number; a record
// is stride words of Words. Records freed from chains are listed from
// Free. A segment with Ver <= the newest live snapshot's version is frozen:
// it is shared with that snapshot and is copied (Table.Writable) before any
// write. Callers read Slots and Words directly; they change them only
// through the methods.
type Segment[K Key] struct {
	Slots []Slot[K] // power-of-two length, or empty
	N     int32     // keys
	Free  int32     // first free record, -1 if none (chains only)
	Words []uint64
	Ver   uint64
	// sharedSlots: Slots is still the array of the frozen segment this one
	// was copied from (clone copies only the records, which is all an
	// update of existing keys writes); Insert, Set and Del copy it first.
	sharedSlots bool
}

// NewSegment returns an empty segment at version ver, sized for hint keys
// of stride words.
func NewSegment[K Key](ver uint64, hint, stride int) *Segment[K] {
	s := &Segment[K]{Free: -1, Ver: ver}
	if hint > 0 {
		n := 8
		for n*3/4 < hint {
			n *= 2
		}
		s.Slots = make([]Slot[K], n)
		s.Words = make([]uint64, 0, hint*stride)
	}
	return s
}

func (s *Segment[K]) Rec(r int32, stride int) []uint64 {
	o := int(r) * stride
	return s.Words[o : o+stride : o+stride]
}

// find returns key's record.
func (s *Segment[K]) Find(key K, h uint32) (int32, bool) {
	if len(s.Slots) == 0 {
		return -1, false
	}
	mask := uint32(len(s.Slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		sl := &s.Slots[i]
		if sl.Rec == 0 {
			return -1, false
		}
		if sl.H == h && sl.Key == key {
			return sl.Rec - 1, true
		}
	}
}

// ownSlots copies a slot array shared with a frozen segment.
func (s *Segment[K]) ownSlots() {
	if s.sharedSlots {
		s.Slots = slices.Clone(s.Slots)
		s.sharedSlots = false
	}
}

// insert adds key (absent, owned) with record r.
func (s *Segment[K]) Insert(key K, h uint32, r int32) {
	if int(s.N+1) > len(s.Slots)*3/4 {
		s.grow()
	}
	s.ownSlots()
	mask := uint32(len(s.Slots) - 1)
	i := h & mask
	for s.Slots[i].Rec != 0 {
		i = (i + 1) & mask
	}
	s.Slots[i] = Slot[K]{Key: key, Rec: r + 1, H: h}
	s.N++
}

// set changes the record of key, which is present.
func (s *Segment[K]) Set(key K, h uint32, r int32) {
	s.ownSlots()
	mask := uint32(len(s.Slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		if sl := &s.Slots[i]; sl.H == h && sl.Key == key {
			sl.Rec = r + 1
			return
		}
	}
}

// del removes key, which is present, shifting later entries of its probe
// run back so that no tombstones are needed.
func (s *Segment[K]) Del(key K, h uint32) {
	s.ownSlots()
	mask := uint32(len(s.Slots) - 1)
	i := h & mask
	for {
		if sl := &s.Slots[i]; sl.H == h && sl.Key == key {
			break
		}
		i = (i + 1) & mask
	}
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		sl := &s.Slots[j]
		if sl.Rec == 0 {
			break
		}
		// Move sl to the hole at i unless its home lies cyclically in (i, j].
		home := sl.H & mask
		if (j-home)&mask >= (j-i)&mask {
			s.Slots[i] = *sl
			i = j
		}
	}
	s.Slots[i] = Slot[K]{}
	s.N--
}

func (s *Segment[K]) grow() {
	old := s.Slots
	n := max(8, len(old)*2)
	s.Slots = make([]Slot[K], n)
	s.sharedSlots = false
	mask := uint32(n - 1)
	for _, sl := range old {
		if sl.Rec == 0 {
			continue
		}
		i := sl.H & mask
		for s.Slots[i].Rec != 0 {
			i = (i + 1) & mask
		}
		s.Slots[i] = sl
	}
}

// newRec appends a zeroed record.
func (s *Segment[K]) NewRec(stride int) int32 {
	r := int32(len(s.Words) / stride)
	if len(s.Words)+stride <= cap(s.Words) {
		s.Words = s.Words[:len(s.Words)+stride]
		clear(s.Words[len(s.Words)-stride:])
	} else {
		s.Words = append(s.Words, make([]uint64, stride)...)
	}
	return r
}

// Alloc returns a zeroed record, reusing a free one; next is the record
// word that links free records (and chains).
func (s *Segment[K]) Alloc(stride, next int) int32 {
	if r := s.Free; r >= 0 {
		w := s.Rec(r, stride)
		s.Free = int32(w[next])
		clear(w)
		return r
	}
	return s.NewRec(stride)
}

// Release frees record r (its word next links it to the free list).
func (s *Segment[K]) Release(r int32, stride, next int) {
	w := s.Rec(r, stride)
	w[next] = uint64(int64(s.Free))
	s.Free = r
}

// clone copies the segment for writing at version Ver: its records, not
// its slot array, which is copied only if a key comes or goes.
func (s *Segment[K]) clone(ver uint64) *Segment[K] {
	return &Segment[K]{Slots: s.Slots, sharedSlots: len(s.Slots) > 0, N: s.N, Free: s.Free, Words: slices.Clone(s.Words), Ver: ver}
}

// COW is the copy-on-write state shared by an operator's tables.
type COW struct {
	Ver    uint64 // version of segments created or copied now
	Frozen uint64 // segments with Ver <= Frozen belong to a live snapshot
	Oldest uint64 // oldest live snapshot's version, MaxUint64 if none
	Copies int    // segments copied (tests and benchmarks)
}

// NewCOW is the state of an operator with no snapshot yet.
func NewCOW() COW { return COW{Ver: 1, Oldest: math.MaxUint64} }

// Load reads the live snapshots' versions, once per call into the operator.
func (c *COW) Load(r *Registry) {
	c.Frozen = r.Frozen.Load()
	c.Oldest = r.Oldest.Load()
}

// Table is the state of one key group (of one pane, for tumbling and
// sliding): 2^bits segments chosen by the top bits of the key's hash, held
// in chunks of chunkLen segment pointers. The table itself is private to
// the operator; snapshots copy its chunk array (one slice header: View).
//
// Copy-on-write happens at three levels, each with a version: a segment, a
// chunk and the chunk array are copied before they are written if a live
// snapshot shares them. Chunks keep the first write after a snapshot from
// copying a table's whole pointer array (4096 pointers at 125k keys).
type Table[K Key] struct {
	chunks    []*segChunk[K]
	chunksVer uint64
	shift     uint8 // 32 - bits: h >> shift is the segment (0 when bits is 0)
	bits      uint8
	N         int // keys; the caller counts the keys it inserts and deletes
	// pool holds segments replaced by their copies, oldest first, until
	// the snapshots that shared them are released; then the next copy
	// reuses one's header and record slab. Without it the batches after a
	// snapshot allocate ~1000 objects each, and pay the allocator, page
	// faults and GC assists for it (most of their p99 on a 1 GB state).
	pool []retired[K]
}

// retired is a segment replaced while the snapshots up to version frozen
// shared it.
type retired[K Key] struct {
	s      *Segment[K]
	Frozen uint64
}

const (
	chunkBits = 6
	chunkLen  = 1 << chunkBits
)

type segChunk[K Key] struct {
	segs [chunkLen]*Segment[K]
	Ver  uint64
}

// NewTable returns an empty table of one segment.
func NewTable[K Key](c *COW) *Table[K] {
	ch := &segChunk[K]{Ver: c.Ver}
	ch.segs[0] = NewSegment[K](c.Ver, 0, 0)
	return &Table[K]{chunks: []*segChunk[K]{ch}, chunksVer: c.Ver, shift: 32}
}

// SegOf is the segment of segment hash h.
func (t *Table[K]) SegOf(h uint32) int { return int(uint64(h) >> t.shift) }

// Seg is segment i, to read (Writable, to write).
func (t *Table[K]) Seg(i int) *Segment[K] { return t.chunks[i>>chunkBits].segs[i&(chunkLen-1)] }

// segsOf calls f for each of the 2^bits segments in chunks.
func segsOf[K Key](chunks []*segChunk[K], bits uint8, f func(*Segment[K])) {
	n := min(1<<bits, chunkLen)
	for _, ch := range chunks {
		for _, s := range ch.segs[:n] {
			f(s)
		}
	}
}

// Writable returns segment i, copying it first if a snapshot shares it.
func (t *Table[K]) Writable(i int, c *COW) *Segment[K] {
	ci := i >> chunkBits
	ch := t.chunks[ci]
	s := ch.segs[i&(chunkLen-1)]
	if s.Ver > c.Frozen {
		return s
	}
	n := t.copyOf(s, c)
	if ch.Ver <= c.Frozen {
		if t.chunksVer <= c.Frozen {
			t.chunks = slices.Clone(t.chunks)
			t.chunksVer = c.Ver
		}
		nc := *ch
		nc.Ver = c.Ver
		ch = &nc
		t.chunks[ci] = ch
	}
	ch.segs[i&(chunkLen-1)] = n
	return n
}

// copyOf returns a writable copy of the frozen segment s at version
// c.Ver, reusing a retired segment no live snapshot holds any more, and
// retires s.
func (t *Table[K]) copyOf(s *Segment[K], c *COW) *Segment[K] {
	c.Copies++
	var n *Segment[K]
	if len(t.pool) > 0 && t.pool[0].Frozen < c.Oldest {
		n = t.pool[0].s
		t.pool[0] = retired[K]{}
		t.pool = t.pool[1:]
		w := n.Words[:0]
		if cap(w) < len(s.Words) {
			w = make([]uint64, 0, len(s.Words))
		}
		*n = Segment[K]{Slots: s.Slots, sharedSlots: len(s.Slots) > 0, N: s.N, Free: s.Free, Words: append(w, s.Words...), Ver: c.Ver}
	} else {
		n = s.clone(c.Ver)
	}
	// At most one table's worth of segments waits: what a snapshot holds.
	if len(t.pool) < 1<<t.bits {
		t.pool = append(t.pool, retired[K]{s: s, Frozen: c.Frozen})
	}
	return n
}

// Split doubles the number of segments, moving each key's chain of records
// (one record when chain < 0; else a list linked through word chain, as
// sessions are) to the segment its next hash bit picks. Old segments are
// left untouched for any snapshot that holds them.
func (t *Table[K]) Split(c *COW, stride, chain int) {
	old, oldBits := t.chunks, t.bits
	t.bits++
	t.shift = 32 - t.bits
	nsegs := 1 << t.bits
	t.chunks = make([]*segChunk[K], max(1, nsegs>>chunkBits))
	t.chunksVer = c.Ver
	hint := SegMax/2 + SegMax/8
	for ci := range t.chunks {
		ch := &segChunk[K]{Ver: c.Ver}
		for j := range min(nsegs, chunkLen) {
			ch.segs[j] = NewSegment[K](c.Ver, hint, stride)
		}
		t.chunks[ci] = ch
	}
	segsOf(old, oldBits, func(s *Segment[K]) {
		for _, sl := range s.Slots {
			if sl.Rec == 0 {
				continue
			}
			d := t.Seg(t.SegOf(sl.H))
			r := sl.Rec - 1
			if chain < 0 {
				nr := d.NewRec(stride)
				copy(d.Rec(nr, stride), s.Rec(r, stride))
				d.Insert(sl.Key, sl.H, nr)
				continue
			}
			prev := int32(-1)
			for r >= 0 {
				src := s.Rec(r, stride)
				nr := d.NewRec(stride)
				copy(d.Rec(nr, stride), src)
				if prev < 0 {
					d.Insert(sl.Key, sl.H, nr)
				} else {
					d.Rec(prev, stride)[chain] = uint64(int64(nr))
				}
				d.Rec(nr, stride)[chain] = NoNext
				prev = nr
				r = int32(int64(src[chain]))
			}
		}
	})
}

// NeedSplit reports whether the table has outgrown its segments.
func (t *Table[K]) NeedSplit() bool { return t.N > SegMax<<t.bits && t.bits < 24 }

// MemBytes estimates the table's heap size: slot arrays, slabs, segment
// headers and pointers, and key bytes for string keys (keySize is what a
// key takes beyond its 16-byte header; nil for int64 keys).
func (t *Table[K]) MemBytes(keySize func(K) int) int64 {
	var b int64
	slotSize := int64(unsafe.Sizeof(Slot[K]{}))
	b += int64(len(t.chunks)) * int64(unsafe.Sizeof(segChunk[K]{})+8)
	segsOf(t.chunks, t.bits, func(s *Segment[K]) {
		b += int64(cap(s.Words))*8 + int64(len(s.Slots))*slotSize + int64(unsafe.Sizeof(*s))
		if keySize != nil {
			for _, sl := range s.Slots {
				if sl.Rec != 0 {
					b += int64(keySize(sl.Key)) - 16
				}
			}
		}
	})
	return b
}

// View is a table frozen by a snapshot: its chunk array, shared with the
// table until the table changes it. Reading it is safe from any goroutine
// while the snapshot is live.
type View[K Key] struct {
	chunks []*segChunk[K]
	bits   uint8
	N      int
}

// View freezes the table's current segments (the caller then bumps the
// version: Registry.Freeze and COW.Ver++).
func (t *Table[K]) View() View[K] { return View[K]{chunks: t.chunks, bits: t.bits, N: t.N} }

// Segments calls f for each segment of the view.
func (v View[K]) Segments(f func(*Segment[K])) { segsOf(v.chunks, v.bits, f) }

// Segments calls f for each segment of the table, to read.
func (t *Table[K]) Segments(f func(*Segment[K])) { segsOf(t.chunks, t.bits, f) }

// Reset empties a private segment (one no snapshot holds: a scratch
// table) and sizes it for n keys.
func (s *Segment[K]) Reset(n int) {
	want := 8
	for want*3/4 < n {
		want *= 2
	}
	if len(s.Slots) < want || len(s.Slots) > 4*want {
		s.Slots = make([]Slot[K], want)
	} else {
		clear(s.Slots)
	}
	s.sharedSlots = false
	s.N = 0
	s.Words = s.Words[:0]
}
