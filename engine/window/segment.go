package window

import (
	"maps"
	"slices"
)

// segMax is the number of keys a segment holds on average before its table
// doubles its segments. It bounds the cost of one copy-on-write copy (a map
// clone and a slab copy of about this many entries). With 1024, the batches
// right after a snapshot of 16M keys took up to seconds (a 1024-row batch
// of random keys copied ~1M entries); 128 keeps them near 10 ms and small
// maps are also faster to fill. A var so tests can force splits.
var segMax = 128

// noNext ends a chain of records.
const noNext = ^uint64(0)

// segment is a small hash map from key to record number; a record is
// stride words of words. Records of removed sessions are chained on free.
// A segment with ver <= the newest live snapshot's version is frozen: it is
// shared with that snapshot and is copied before any write.
type segment[K keyT] struct {
	idx   map[K]int32
	words []uint64
	free  int32 // first free record, -1 if none (sessions only)
	ver   uint64
}

func newSegment[K keyT](ver uint64, hint int) *segment[K] {
	return &segment[K]{idx: make(map[K]int32, hint), free: -1, ver: ver}
}

func (s *segment[K]) rec(r int32, stride int) []uint64 {
	o := int(r) * stride
	return s.words[o : o+stride : o+stride]
}

// alloc returns a zeroed record.
func (s *segment[K]) alloc(stride int) int32 {
	if r := s.free; r >= 0 {
		w := s.rec(r, stride)
		s.free = int32(w[sessNext])
		clear(w)
		return r
	}
	r := int32(len(s.words) / stride)
	s.words = append(s.words, make([]uint64, stride)...)
	return r
}

func (s *segment[K]) release(r int32, stride int) {
	w := s.rec(r, stride)
	w[sessNext] = uint64(int64(s.free))
	s.free = r
}

// cow is the copy-on-write state shared by an operator's tables.
type cow struct {
	ver    uint64 // version of segments created or copied now
	frozen uint64 // segments with ver <= frozen belong to a live snapshot
}

// table is the state of one key group (of one window, for tumbling and
// sliding): 2^bits segments chosen by the top bits of the key's segment
// hash. The table itself is private to the operator; snapshots copy its
// segment pointers.
//
// Snapshots share the segs array itself too (Snapshot copies one slice
// header per table, not one pointer per segment): segsVer is the array's
// version, and the array is cloned before a segment pointer in it changes.
type table[K keyT] struct {
	segs    []*segment[K]
	segsVer uint64
	bits    uint8
	n       int // keys
}

func newTable[K keyT](c *cow) *table[K] {
	return &table[K]{segs: []*segment[K]{newSegment[K](c.ver, 0)}, segsVer: c.ver}
}

func (t *table[K]) segOf(sh uint64) int { return int(sh >> (64 - uint(t.bits)) & (1<<t.bits - 1)) }

// writable returns segment i, copying it first if a snapshot shares it.
func (t *table[K]) writable(i int, c *cow) *segment[K] {
	s := t.segs[i]
	if s.ver > c.frozen {
		return s
	}
	n := &segment[K]{idx: maps.Clone(s.idx), words: slices.Clone(s.words), free: s.free, ver: c.ver}
	if n.idx == nil {
		n.idx = map[K]int32{}
	}
	if t.segsVer <= c.frozen {
		t.segs = slices.Clone(t.segs)
		t.segsVer = c.ver
	}
	t.segs[i] = n
	return n
}

// split doubles the number of segments, moving each key's chain of records
// (one record for windows; a session list, linked through sessNext, for
// sessions) to the segment its next hash bit picks. Old segments are left
// untouched for any snapshot that holds them.
func (t *table[K]) split(c *cow, stride int, chained bool, hash func(K) uint64) {
	old := t.segs
	t.bits++
	t.segs = make([]*segment[K], len(old)*2)
	t.segsVer = c.ver
	for i := range t.segs {
		t.segs[i] = newSegment[K](c.ver, segMax/2+segMax/8)
	}
	for _, s := range old {
		for k, r := range s.idx {
			d := t.segs[t.segOf(hash(k))]
			if !chained {
				nr := int32(len(d.words) / stride)
				d.words = append(d.words, s.rec(r, stride)...)
				d.idx[k] = nr
				continue
			}
			prev := int32(-1)
			for r >= 0 {
				src := s.rec(r, stride)
				nr := int32(len(d.words) / stride)
				d.words = append(d.words, src...)
				if prev < 0 {
					d.idx[k] = nr
				} else {
					d.rec(prev, stride)[sessNext] = uint64(int64(nr))
				}
				d.rec(nr, stride)[sessNext] = noNext
				prev = nr
				r = int32(int64(src[sessNext]))
			}
		}
	}
}

// needSplit reports whether the table has outgrown its segments.
func (t *table[K]) needSplit() bool { return t.n > len(t.segs)*segMax && t.bits < 24 }

// memBytes estimates the table's heap size: map slots (key, int32 value,
// control byte, at ~75% load), slabs, and key bytes for string keys.
func (t *table[K]) memBytes(kx keyer[K], countKeys bool) int64 {
	var b int64
	for _, s := range t.segs {
		b += int64(cap(s.words))*8 + 64
		if countKeys {
			for k := range s.idx {
				b += int64(kx.memSize(k)+5) * 4 / 3
			}
		} else {
			b += int64(len(s.idx)) * (8 + 5) * 4 / 3
		}
	}
	return b
}
