package state

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
)

// Map state: per key group and key, a map from a user key (bytes) to a
// value (bytes); with one empty user key it is a value state of bytes (a
// join's latest row per key, an aggregate that does not fit a fixed-width
// record). Snapshot bytes are the same for both backends, per key group
// framed by AppendHeader with mapMagic and the caller's fingerprint:
//
//	uvarint entries; per entry (by key length, key, then user key): uvarint
//	len + key, uvarint len + user key, uvarint len + value
//
// Database keys: TagMap kg(2, BE) len(key)(4, BE) key userKey → value.
const (
	mapMagic      = "SLMS\x01"
	mapDeltaMagic = "SLMD\x01"
)

// MapState is keyed map state of the key groups of one subtask;
// single-goroutine like ListState.
type MapState interface {
	// Put sets key's value of user key uk (both copied).
	Put(kg int, key, uk, value []byte)
	// Get returns the value (valid until the next call) and whether it is
	// there.
	Get(kg int, key, uk []byte) ([]byte, bool)
	// Delete removes user key uk of key.
	Delete(kg int, key, uk []byte)
	// Range calls f with key's entries, by user key, until f returns false.
	Range(kg int, key []byte, f func(uk, value []byte) bool)
	// Len is the number of entries.
	Len() int
	Snapshot() StateSnapshot
	SnapshotIncremental(id, base int64) StateSnapshot
	Confirm(id int64)
	Restore(kg int, data []byte) error
	RestoreDelta(kg int, data []byte) error
	FinishRestore() error
	Close() error
}

// ---- heap ----

// NewHeapMap returns empty map state of the key groups kgs on the heap.
func NewHeapMap(kgs KeyGroupRange, fp string) MapState {
	return &heapMap{kgs: kgs, fp: fp, tabs: make([]map[string]map[string][]byte, kgs.End-kgs.Start)}
}

// heapMap's values are never written in place (Put stores a fresh copy),
// so a snapshot shares them; it copies the maps, a pause linear in the
// entries.
type heapMap struct {
	kgs  KeyGroupRange
	fp   string
	tabs []map[string]map[string][]byte
	n    int
}

func (h *heapMap) tab(kg int) map[string]map[string][]byte {
	if !h.kgs.Contains(kg) {
		panic(fmt.Sprintf("state: map state of key group %d in the subtask owning [%d, %d)", kg, h.kgs.Start, h.kgs.End))
	}
	i := kg - h.kgs.Start
	if h.tabs[i] == nil {
		h.tabs[i] = map[string]map[string][]byte{}
	}
	return h.tabs[i]
}

func (h *heapMap) Put(kg int, key, uk, value []byte) {
	t := h.tab(kg)
	m := t[string(key)]
	if m == nil {
		m = map[string][]byte{}
		t[string(key)] = m
	}
	if _, ok := m[string(uk)]; !ok {
		h.n++
	}
	m[string(uk)] = append([]byte{}, value...)
}

func (h *heapMap) Get(kg int, key, uk []byte) ([]byte, bool) {
	v, ok := h.tab(kg)[string(key)][string(uk)]
	return v, ok
}

func (h *heapMap) Delete(kg int, key, uk []byte) {
	t := h.tab(kg)
	m := t[string(key)]
	if _, ok := m[string(uk)]; !ok {
		return
	}
	delete(m, string(uk))
	h.n--
	if len(m) == 0 {
		delete(t, string(key))
	}
}

func (h *heapMap) Range(kg int, key []byte, f func(uk, value []byte) bool) {
	m := h.tab(kg)[string(key)]
	uks := make([]string, 0, len(m))
	for uk := range m {
		uks = append(uks, uk)
	}
	slices.Sort(uks)
	for _, uk := range uks {
		if !f([]byte(uk), m[uk]) {
			return
		}
	}
}

func (h *heapMap) Len() int { return h.n }

type mapEnt struct {
	key, uk string
	v       []byte
}

func (h *heapMap) Snapshot() StateSnapshot {
	s := &heapMapSnap{fp: h.fp}
	for i, t := range h.tabs {
		if len(t) == 0 {
			continue
		}
		var es []mapEnt
		for k, m := range t {
			for uk, v := range m {
				es = append(es, mapEnt{k, uk, v})
			}
		}
		s.kgs = append(s.kgs, h.kgs.Start+i)
		s.ents = append(s.ents, es)
	}
	return s
}

func (h *heapMap) SnapshotIncremental(int64, int64) StateSnapshot { return h.Snapshot() }
func (h *heapMap) Confirm(int64)                                  {}

func (h *heapMap) Restore(kg int, data []byte) error {
	if !h.kgs.Contains(kg) {
		return fmt.Errorf("state: restore map state of key group %d outside [%d, %d)", kg, h.kgs.Start, h.kgs.End)
	}
	if err := decodeMap(data, h.fp, func(k, uk, v []byte) { h.Put(kg, k, uk, v) }); err != nil {
		return fmt.Errorf("state: restore map state of key group %d: %w", kg, err)
	}
	return nil
}

func (h *heapMap) RestoreDelta(int, []byte) error {
	return errors.New("state: an incremental checkpoint restores only into the badger state backend (restore from a savepoint to change backends)")
}
func (h *heapMap) FinishRestore() error { return nil }
func (h *heapMap) Close() error         { return nil }

type heapMapSnap struct {
	fp   string
	kgs  []int
	ents [][]mapEnt
}

func (s *heapMapSnap) KeyGroups() []int { return s.kgs }
func (s *heapMapSnap) Base() int64      { return 0 }
func (s *heapMapSnap) Err() error       { return nil }
func (s *heapMapSnap) Release()         { s.kgs, s.ents = nil, nil }

func (s *heapMapSnap) WriteKeyGroup(kg int, dst []byte) []byte {
	dst = AppendHeader(dst, mapMagic, s.fp)
	i, ok := slices.BinarySearch(s.kgs, kg)
	if !ok {
		return binary.AppendUvarint(dst, 0)
	}
	es := s.ents[i]
	slices.SortFunc(es, func(a, b mapEnt) int {
		return cmp.Or(cmp.Compare(len(a.key), len(b.key)), strings.Compare(a.key, b.key), strings.Compare(a.uk, b.uk))
	})
	dst = binary.AppendUvarint(dst, uint64(len(es)))
	for _, e := range es {
		dst = appendMapEntry(dst, e.key, e.uk, e.v)
	}
	return dst
}

func appendMapEntry[S string | []byte](dst []byte, key, uk S, v []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	dst = binary.AppendUvarint(dst, uint64(len(uk)))
	dst = append(dst, uk...)
	dst = binary.AppendUvarint(dst, uint64(len(v)))
	return append(dst, v...)
}

func decodeMap(data []byte, fp string, put func(k, uk, v []byte)) error {
	body, err := ReadHeader(data, mapMagic, fp, "map")
	if err != nil {
		return err
	}
	d := &Dec{B: body}
	n := d.Count(3)
	for range n {
		k, uk, v := d.Bytes(), d.Bytes(), d.Bytes()
		if d.Err != nil {
			break
		}
		put(k, uk, v)
	}
	return d.End()
}

// ---- badger ----

// NewBadgerMap returns empty map state of the key groups kgs in st.
func NewBadgerMap(st *Store, kgs KeyGroupRange, fp string) MapState {
	return &badgerMap{st: st, kgs: kgs, fp: fp, w: Writer{St: st}, kgN: make([]int, kgs.End-kgs.Start)}
}

// badgerMap writes through a WriteBatch flushed before reads of values;
// Put and Delete look a key up first (to count entries): in the keys
// written since the last flush, else with a point read.
type badgerMap struct {
	st      *Store
	kgs     KeyGroupRange
	fp      string
	w       Writer
	pending int
	kgN     []int
	n       int
	chain   *Chain
	rebuild bool
	kbuf    []byte
	val     []byte
	pend    map[string]bool // keys written since the flush: present?
}

func mapPrefix(dst []byte, kg int, key []byte) []byte {
	dst = binary.BigEndian.AppendUint16(append(dst, TagMap), uint16(kg))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(key)))
	return append(dst, key...)
}

func (b *badgerMap) check(kg int) {
	if !b.kgs.Contains(kg) {
		panic(fmt.Sprintf("state: map state of key group %d in the subtask owning [%d, %d)", kg, b.kgs.Start, b.kgs.End))
	}
}

func (b *badgerMap) flush() {
	if b.pending > 0 {
		b.w.Flush()
		b.pending = 0
		clear(b.pend)
	}
}

func (b *badgerMap) exists(k []byte) bool {
	if v, ok := b.pend[string(k)]; ok {
		return v
	}
	txn := b.st.DB.NewTransaction(false)
	defer txn.Discard()
	return GetValue(txn, k, func([]byte) {})
}

// wrote records a write of k (present after it or not).
func (b *badgerMap) wrote(k []byte, present bool) {
	if b.pend == nil {
		b.pend = map[string]bool{}
	}
	b.pend[string(k)] = present
	if b.pending++; b.pending >= 1<<12 {
		b.flush()
	}
}

func (b *badgerMap) Put(kg int, key, uk, value []byte) {
	b.check(kg)
	b.kbuf = append(mapPrefix(b.kbuf[:0], kg, key), uk...)
	if !b.exists(b.kbuf) {
		b.kgN[kg-b.kgs.Start]++
		b.n++
	}
	b.w.Set(append(b.w.Alloc(len(b.kbuf)), b.kbuf...), append(b.w.Alloc(len(value)), value...))
	b.wrote(b.kbuf, true)
}

func (b *badgerMap) Get(kg int, key, uk []byte) ([]byte, bool) {
	b.check(kg)
	b.flush()
	b.kbuf = append(mapPrefix(b.kbuf[:0], kg, key), uk...)
	txn := b.st.DB.NewTransaction(false)
	defer txn.Discard()
	ok := GetValue(txn, b.kbuf, func(v []byte) { b.val = append(b.val[:0], v...) })
	return b.val, ok
}

func (b *badgerMap) Delete(kg int, key, uk []byte) {
	b.check(kg)
	b.kbuf = append(mapPrefix(b.kbuf[:0], kg, key), uk...)
	if !b.exists(b.kbuf) {
		return
	}
	b.w.Del(append(b.w.Alloc(len(b.kbuf)), b.kbuf...))
	b.wrote(b.kbuf, false)
	b.kgN[kg-b.kgs.Start]--
	b.n--
}

func (b *badgerMap) Range(kg int, key []byte, f func(uk, value []byte) bool) {
	b.check(kg)
	b.flush()
	pre := mapPrefix(nil, kg, key)
	txn := b.st.DB.NewTransaction(false)
	defer txn.Discard()
	stop := errors.New("stop")
	err := Scan(txn, pre, func(item *badger.Item) error {
		uk := item.Key()[len(pre):]
		return item.Value(func(v []byte) error {
			if !f(uk, v) {
				return stop
			}
			return nil
		})
	})
	if err != nil && err != stop {
		Fail("map read", err)
	}
}

func (b *badgerMap) Len() int { return b.n }

func (b *badgerMap) Snapshot() StateSnapshot {
	b.flush()
	s := &badgerMapSnap{badgerTxnSnap{st: b.st, fp: b.fp, txn: b.st.DB.NewTransaction(false)}}
	for i, n := range b.kgN {
		if n > 0 {
			s.kgs = append(s.kgs, b.kgs.Start+i)
		}
	}
	return s
}

func (b *badgerMap) SnapshotIncremental(id, base int64) StateSnapshot {
	if b.chain == nil {
		b.chain = NewChain(b.st)
	}
	var s StateSnapshot
	var counter *int64
	done := b.chain.Snapshot(id, base, func(since uint64, on int64) *badger.Txn {
		if on == 0 {
			fs := b.Snapshot().(*badgerMapSnap)
			fs.kept = true
			s, counter = fs, &fs.bytes
			return fs.txn
		}
		b.flush()
		d := &badgerDelta{Delta: NewDelta(b.st, b.kgs.Start, b.kgs.End-b.kgs.Start, since, TagMap), magic: mapDeltaMagic, fp: b.fp, base: on}
		s, counter = d, &d.bytes
		return d.Txn
	})
	return &chained{StateSnapshot: s, bytes: counter, done: done}
}

func (b *badgerMap) Confirm(id int64) {
	if b.chain != nil {
		b.chain.Confirm(id)
	}
}

func (b *badgerMap) Restore(kg int, data []byte) error {
	if !b.kgs.Contains(kg) {
		return fmt.Errorf("state: restore map state of key group %d outside [%d, %d)", kg, b.kgs.Start, b.kgs.End)
	}
	if err := decodeMap(data, b.fp, func(k, uk, v []byte) { b.Put(kg, k, uk, v) }); err != nil {
		return fmt.Errorf("state: restore map state of key group %d: %w", kg, err)
	}
	b.flush()
	return nil
}

func (b *badgerMap) RestoreDelta(kg int, data []byte) error {
	if !b.kgs.Contains(kg) {
		return fmt.Errorf("state: restore map delta of key group %d outside [%d, %d)", kg, b.kgs.Start, b.kgs.End)
	}
	body, err := ReadHeader(data, mapDeltaMagic, b.fp, "map delta")
	if err == nil {
		err = ApplyDelta(b.st, kg, body)
	}
	if err != nil {
		return fmt.Errorf("state: restore map delta of key group %d: %w", kg, err)
	}
	b.rebuild = true
	return nil
}

func (b *badgerMap) FinishRestore() error {
	if !b.rebuild {
		return nil
	}
	b.rebuild = false
	clear(b.kgN)
	b.n = 0
	txn := b.st.DB.NewTransaction(false)
	defer txn.Discard()
	return Scan(txn, []byte{TagMap}, func(item *badger.Item) error {
		kg := KeyGroupOfDBKey(item.Key())
		if !b.kgs.Contains(kg) {
			return errors.New("state: rebuilding map state: malformed key")
		}
		b.kgN[kg-b.kgs.Start]++
		b.n++
		return nil
	})
}

func (b *badgerMap) Close() error {
	b.flush()
	if b.chain != nil {
		b.chain.Close()
	}
	return nil
}

type badgerMapSnap struct{ badgerTxnSnap }

func (s *badgerMapSnap) WriteKeyGroup(kg int, dst []byte) []byte {
	n0 := len(dst)
	dst = AppendHeader(dst, mapMagic, s.fp)
	var body []byte
	n := 0
	err := s.st.Use(func() error {
		pre := binary.BigEndian.AppendUint16([]byte{TagMap}, uint16(kg))
		return Scan(s.txn, pre, func(item *badger.Item) error {
			k := item.Key()
			if len(k) < 7 {
				return errors.New("malformed map key")
			}
			kl := int(binary.BigEndian.Uint32(k[3:7]))
			if len(k) < 7+kl {
				return errors.New("malformed map key")
			}
			return item.Value(func(v []byte) error {
				body = appendMapEntry(body, k[7:7+kl], k[7+kl:], v)
				n++
				return nil
			})
		})
	})
	if err != nil && s.e == nil {
		s.e = fmt.Errorf("state: reading map state for a snapshot: %w", err)
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	dst = append(dst, body...)
	s.bytes += int64(len(dst) - n0)
	return dst
}
