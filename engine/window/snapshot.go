package window

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/sluice-stream/sluice/engine/state"
)

// Snapshot is a frozen view of an operator's state. Its methods are safe to
// call from any goroutine (one at a time), concurrently with the operator.
type Snapshot struct {
	data    snapData
	reg     *state.Registry
	ver     uint64
	wm      int64
	release sync.Once
	done    atomic.Bool
	// Incremental snapshots: the checkpoint this one is a delta on (0: a
	// full snapshot), the bytes written, and who to tell on Release.
	base      int64
	bytes     int64
	onRelease func(bytes int64, ok bool)
}

type snapData interface {
	keyGroups() []int
	write(kg int, dst []byte) []byte
	release()
	err() error
}

// Watermark is the operator's watermark when the snapshot was taken.
func (s *Snapshot) Watermark() int64 { return s.wm }

// KeyGroups lists, in ascending order, the key groups that have state.
func (s *Snapshot) KeyGroups() []int { return s.data.keyGroups() }

// WriteKeyGroup appends key group kg's state to dst in the stable binary
// format that Restore reads (empty state if kg has none). Entries are
// written in key order, so equal state gives equal bytes.
func (s *Snapshot) WriteKeyGroup(kg int, dst []byte) []byte {
	if s.done.Load() {
		panic("window: WriteKeyGroup after Release")
	}
	n := len(dst)
	dst = s.data.write(kg, dst)
	s.bytes += int64(len(dst) - n)
	return dst
}

// Base is the checkpoint whose snapshot this one is a delta on (see
// SnapshotIncremental), 0 for a full snapshot. A delta's key groups are
// read back with RestoreDelta, not Restore.
func (s *Snapshot) Base() int64 { return s.base }

// Err reports a failure to read the state while writing the snapshot
// (badger backend: a read error, or the operator closed under it); the
// bytes written are then incomplete. It is nil for the heap backend.
func (s *Snapshot) Err() error {
	if s.done.Load() {
		return nil
	}
	return s.data.err()
}

// Release lets the operator write frozen segments in place again. The
// snapshot must not be used afterwards. Calling it twice is harmless.
func (s *Snapshot) Release() {
	s.release.Do(func() {
		if s.onRelease != nil {
			s.onRelease(s.bytes, s.data.err() == nil)
		}
		s.done.Store(true)
		s.reg.Release(s.ver)
		s.data.release()
		s.data = nil
	})
}

// The format of one key group, version 2 (all integers varints unless said):
//
//	"SLWN" 0x02  uvarint len + fingerprint of the config (kind, sizes, key
//	             types, accumulator layout)
//	tumbling, sliding:
//	  uvarint panes; per pane (by end): end, uvarint entries; per entry (by
//	    key): key, accumulator (the dirty flag: a window containing the pane
//	    must fire again for the key)
//	session:
//	  uvarint keys; per key (by key): key, uvarint sessions; per session (by
//	    start): start, end, accumulator
//	key:          int64 key: varint; other keys: uvarint len + encoded bytes
//	accumulator:  uvarint count|dirty<<63, then each further word as 8 bytes
//	              little-endian
const magic = "SLWN\x02"

func appendHeader(dst []byte, l *layout) []byte { return state.AppendHeader(dst, magic, l.fp) }

func readHeader(src []byte, l *layout) ([]byte, error) {
	return state.ReadHeader(src, magic, l.fp, "window")
}

// tabSnap is one frozen table: its key group, window end (0 for sessions)
// and its segment array, shared with the table until the table changes it.
type tabSnap[K state.Key] struct {
	kg  int
	end int64
	v   state.View[K]
}

type coreSnap[K state.Key] struct {
	l       *layout
	kx      state.Keyer[K]
	stride  int
	session bool
	tabs    []tabSnap[K] // by kg, then end
	// ents is write's scratch, kept across key groups: a fresh one per
	// key group made ~0.7 GB of garbage per snapshot of 16 M keys, and
	// the GC cycles it caused ran beside the batches after the snapshot.
	ents []entry[K]
}

func (s *coreSnap[K]) add(kg int, end int64, t *state.Table[K]) {
	if t == nil || t.N == 0 {
		return
	}
	s.tabs = append(s.tabs, tabSnap[K]{kg: kg, end: end, v: t.View()})
}

func (s *coreSnap[K]) release()   { s.tabs, s.ents = nil, nil }
func (s *coreSnap[K]) err() error { return nil }

func (s *coreSnap[K]) keyGroups() []int {
	var kgs []int
	for _, t := range s.tabs {
		if len(kgs) == 0 || kgs[len(kgs)-1] != t.kg {
			kgs = append(kgs, t.kg)
		}
	}
	return kgs
}

type entry[K state.Key] struct {
	key K
	s   *state.Segment[K]
	r   int32
}

func (s *coreSnap[K]) write(kg int, dst []byte) []byte {
	dst = appendHeader(dst, s.l)
	i := sort.Search(len(s.tabs), func(i int) bool { return s.tabs[i].kg >= kg })
	j := i
	for j < len(s.tabs) && s.tabs[j].kg == kg {
		j++
	}
	if !s.session {
		dst = binary.AppendUvarint(dst, uint64(j-i))
	}
	ents := s.ents
	for _, t := range s.tabs[i:j] {
		ents = ents[:0]
		t.v.Segments(func(sg *state.Segment[K]) {
			for _, sl := range sg.Slots {
				if sl.Rec != 0 {
					ents = append(ents, entry[K]{sl.Key, sg, sl.Rec - 1})
				}
			}
		})
		slices.SortFunc(ents, func(a, b entry[K]) int {
			if a.key < b.key {
				return -1
			}
			if a.key > b.key {
				return 1
			}
			return 0
		})
		if s.session {
			dst = binary.AppendUvarint(dst, uint64(len(ents)))
			for _, e := range ents {
				dst = s.kx.AppendBin(dst, e.key)
				dst = appendSessions(dst, e.s, e.r, s.stride)
			}
			continue
		}
		dst = binary.AppendVarint(dst, t.end)
		dst = binary.AppendUvarint(dst, uint64(len(ents)))
		for _, e := range ents {
			dst = s.kx.AppendBin(dst, e.key)
			dst = state.AppendRecord(dst, e.s.Rec(e.r, s.stride))
		}
	}
	s.ents = ents
	if s.session && i == j {
		dst = binary.AppendUvarint(dst, 0)
	}
	return dst
}

func (c *windowCore[K]) snapshot() snapData {
	s := &coreSnap[K]{l: c.l, kx: c.kx, stride: c.stride, tabs: make([]tabSnap[K], 0, len(c.panes)*c.nkg)}
	for kg := 0; kg < c.nkg; kg++ {
		for _, p := range c.panes {
			s.add(c.kgStart+kg, p.end, p.tabs[kg])
		}
	}
	return s
}

func (c *windowCore[K]) restore(kg int, data []byte) error {
	ti := kg - c.kgStart
	var w *pane[K]
	err := c.decodePanes(kg, data,
		func(end int64) { w = c.paneAt(end) },
		func(k K, acc []uint64) { c.merge(w, ti, k, acc) })
	c.last = nil
	return err
}

// decodePanes reads key group kg's tumbling or sliding state (the format
// above) for either backend: open is called for each pane that is still
// live under the watermark, then add for each of its entries (acc is
// reused); entries of panes already purged are skipped.
func (c *windowCore[K]) decodePanes(kg int, data []byte, open func(end int64), add func(k K, acc []uint64)) error {
	d := &state.Dec{B: data}
	tmp := make([]uint64, c.stride)
	nw := d.Count(2)
	for range nw {
		end := d.Varint()
		n := d.Count(2)
		if d.Err != nil {
			break
		}
		live := false
		if ps := end - c.pane; ps-floorMod(ps, c.slide)+c.wsize-1+c.l.cfg.AllowedLateness > c.wm {
			if floorMod(end, c.pane) != 0 {
				d.Err = fmt.Errorf("pane end %d is not a multiple of the pane length %d", end, c.pane)
				break
			}
			live = true
			open(end)
		}
		for range n {
			k := state.ReadKey(d, c.kx, kg)
			d.Record(tmp)
			if d.Err != nil {
				break
			}
			if live {
				add(k, tmp)
			}
		}
	}
	return d.End()
}

// merge adds a restored accumulator for key k (already owned: not cloned).
func (c *windowCore[K]) merge(w *pane[K], ti int, k K, acc []uint64) {
	t := w.tabs[ti]
	if t == nil {
		t = state.NewTable[K](&c.c)
		w.tabs[ti] = t
	}
	sh := c.kx.SegHash(k)
	si := t.SegOf(sh)
	s := t.Writable(si, &c.c)
	r, ok := s.Find(k, sh)
	if !ok {
		r = s.NewRec(c.stride)
		s.Insert(k, sh, r)
		t.N++
		if t.NeedSplit() {
			t.Split(&c.c, c.stride, -1)
			s = t.Seg(t.SegOf(sh))
			r, _ = s.Find(k, sh)
		}
	}
	dst := s.Rec(r, c.stride)
	wasDirty := dst[0]&dirtyBit != 0
	mergeAcc(dst, acc, c.l.ops)
	if dst[0]&dirtyBit != 0 && !wasDirty {
		w.dirty = append(w.dirty, ref[K]{key: k, kg: int32(ti)})
	}
}
