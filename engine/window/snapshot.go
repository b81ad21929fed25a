package window

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
)

// registry tracks live snapshots. The task goroutine reads frozen once per
// call; Release may run on any goroutine.
type registry struct {
	mu     sync.Mutex
	live   map[uint64]int
	frozen atomic.Uint64 // newest live snapshot version, 0 if none
	oldest atomic.Uint64 // oldest live snapshot version, MaxUint64 if none
}

func newRegistry() *registry {
	r := &registry{live: map[uint64]int{}}
	r.oldest.Store(math.MaxUint64)
	return r
}

func (r *registry) freeze(v uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live[v]++
	r.frozen.Store(v)
	r.oldest.Store(min(r.oldest.Load(), v))
}

// release is the writer's last touch of the snapshot's segments: the
// atomic stores order it before the operator reuses them (cow.load).
func (r *registry) release(v uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.live[v]--; r.live[v] <= 0 {
		delete(r.live, v)
	}
	var m uint64
	o := uint64(math.MaxUint64)
	for lv := range r.live {
		m = max(m, lv)
		o = min(o, lv)
	}
	r.frozen.Store(m)
	r.oldest.Store(o)
}

// Snapshot is a frozen view of an operator's state. Its methods are safe to
// call from any goroutine (one at a time), concurrently with the operator.
type Snapshot struct {
	data    snapData
	reg     *registry
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
		s.reg.release(s.ver)
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

func appendHeader(dst []byte, l *layout) []byte {
	dst = append(dst, magic...)
	dst = binary.AppendUvarint(dst, uint64(len(l.fp)))
	return append(dst, l.fp...)
}

func readHeader(src []byte, l *layout) ([]byte, error) {
	if len(src) < len(magic) || string(src[:len(magic)]) != magic {
		return nil, errors.New("not window state (bad magic or version)")
	}
	src = src[len(magic):]
	n, k := binary.Uvarint(src)
	if k <= 0 || uint64(len(src)-k) < n {
		return nil, errShort
	}
	if fp := string(src[k : k+int(n)]); fp != l.fp {
		return nil, fmt.Errorf("state was written by another window configuration (%s, this is %s)", fp, l.fp)
	}
	return src[k+int(n):], nil
}

func appendAcc(dst []byte, acc []uint64) []byte {
	dst = binary.AppendUvarint(dst, acc[0])
	for _, w := range acc[1:] {
		dst = binary.LittleEndian.AppendUint64(dst, w)
	}
	return dst
}

// dec reads the format; the first error sticks.
type dec struct {
	b   []byte
	err error
}

func (d *dec) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) acc(dst []uint64) {
	dst[0] = d.uvarint()
	for i := 1; i < len(dst); i++ {
		if d.err != nil {
			return
		}
		if len(d.b) < 8 {
			d.err = errShort
			return
		}
		dst[i] = binary.LittleEndian.Uint64(d.b)
		d.b = d.b[8:]
	}
}

// count reads a count and checks it against what the rest could hold.
func (d *dec) count(minBytes int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/minBytes) {
		d.err = errShort
		return 0
	}
	return int(n)
}

func readKey[K keyT](d *dec, kx keyer[K], kg int) K {
	var k K
	if d.err != nil {
		return k
	}
	k, n, err := kx.readBin(d.b)
	if err != nil {
		d.err = err
		return k
	}
	d.b = d.b[n:]
	g, err := kx.keyGroup(k)
	if err != nil {
		d.err = err
	} else if g != kg {
		d.err = fmt.Errorf("a key of key group %d is in the state of key group %d (another key schema or max parallelism?)", g, kg)
	}
	return k
}

// tabSnap is one frozen table: its key group, window end (0 for sessions)
// and its segment array, shared with the table until the table changes it.
type tabSnap[K keyT] struct {
	kg     int
	end    int64
	chunks []*segChunk[K]
	bits   uint8
}

type coreSnap[K keyT] struct {
	l       *layout
	kx      keyer[K]
	stride  int
	session bool
	tabs    []tabSnap[K] // by kg, then end
	// ents is write's scratch, kept across key groups: a fresh one per
	// key group made ~0.7 GB of garbage per snapshot of 16 M keys, and
	// the GC cycles it caused ran beside the batches after the snapshot.
	ents []entry[K]
}

func (s *coreSnap[K]) add(kg int, end int64, t *table[K]) {
	if t == nil || t.n == 0 {
		return
	}
	s.tabs = append(s.tabs, tabSnap[K]{kg: kg, end: end, chunks: t.chunks, bits: t.bits})
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

type entry[K keyT] struct {
	key K
	s   *segment[K]
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
		segsOf(t.chunks, t.bits, func(sg *segment[K]) {
			for _, sl := range sg.slots {
				if sl.rec != 0 {
					ents = append(ents, entry[K]{sl.key, sg, sl.rec - 1})
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
				dst = s.kx.appendBin(dst, e.key)
				dst = appendSessions(dst, e.s, e.r, s.stride)
			}
			continue
		}
		dst = binary.AppendVarint(dst, t.end)
		dst = binary.AppendUvarint(dst, uint64(len(ents)))
		for _, e := range ents {
			dst = s.kx.appendBin(dst, e.key)
			dst = appendAcc(dst, e.s.rec(e.r, s.stride))
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
	d := &dec{b: data}
	tmp := make([]uint64, c.stride)
	nw := d.count(2)
	for range nw {
		end := d.varint()
		n := d.count(2)
		if d.err != nil {
			break
		}
		live := false
		if ps := end - c.pane; ps-floorMod(ps, c.slide)+c.wsize-1+c.l.cfg.AllowedLateness > c.wm {
			if floorMod(end, c.pane) != 0 {
				d.err = fmt.Errorf("pane end %d is not a multiple of the pane length %d", end, c.pane)
				break
			}
			live = true
			open(end)
		}
		for range n {
			k := readKey(d, c.kx, kg)
			d.acc(tmp)
			if d.err != nil {
				break
			}
			if live {
				add(k, tmp)
			}
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("trailing bytes")
	}
	return d.err
}

// merge adds a restored accumulator for key k (already owned: not cloned).
func (c *windowCore[K]) merge(w *pane[K], ti int, k K, acc []uint64) {
	t := w.tabs[ti]
	if t == nil {
		t = newTable[K](&c.c)
		w.tabs[ti] = t
	}
	sh := c.kx.segHash(k)
	si := t.segOf(sh)
	s := t.writable(si, &c.c)
	r, ok := s.find(k, sh)
	if !ok {
		r = s.newRec(c.stride)
		s.insert(k, sh, r)
		t.n++
		if t.needSplit() {
			t.split(&c.c, c.stride, false)
			s = t.seg(t.segOf(sh))
			r, _ = s.find(k, sh)
		}
	}
	dst := s.rec(r, c.stride)
	wasDirty := dst[0]&dirtyBit != 0
	mergeAcc(dst, acc, c.l.ops)
	if dst[0]&dirtyBit != 0 && !wasDirty {
		w.dirty = append(w.dirty, ref[K]{key: k, kg: int32(ti)})
	}
}
