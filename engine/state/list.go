package state

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// List state: per key group and key, a list of entries in append order,
// each an event time and the bytes of an encoded row (what a join keeps
// per key: the rows of one side waiting for the other). Entries older than
// a bound are dropped by Expire (state TTL, on event time). Keys are the
// caller's bytes (Keyer's encoding, say); the caller computes key groups.
//
// Both backends give the same results and write the same snapshot bytes,
// so list state moves between backends and across parallelisms like the
// window's: per key group, framed by AppendHeader with listMagic and the
// caller's fingerprint, then
//
//	uvarint keys; per key (by key length, then key bytes): uvarint len +
//	key, uvarint entries; per entry (in append order): varint ts, uvarint
//	seq, uvarint len + row bytes
//
// seq orders a key's entries and names them in the badger backend's
// database, so that a delta (incremental snapshot, badger only) restored
// on top of its full snapshot names the same entries; the heap backend
// writes positions.
const listMagic = "SLLS\x01"

// listDeltaMagic frames a list state's delta (state.Delta's body).
const listDeltaMagic = "SLLD\x01"

// ListState is keyed list state of the key groups of one subtask. Like
// the rest of this package it is single-goroutine: only the snapshots it
// returns may be used from another goroutine.
type ListState interface {
	// Append adds an entry to key's list; row is copied.
	Append(kg int, key []byte, ts int64, row []byte)
	// Get calls f with key's entries in append order until f returns
	// false. row is valid only during the call.
	Get(kg int, key []byte, f func(ts int64, row []byte) bool)
	// Expire drops every entry with ts < before and returns how many.
	Expire(before int64) int
	// Len is the number of entries.
	Len() int
	// Snapshot freezes the state for a checkpoint.
	Snapshot() StateSnapshot
	// SnapshotIncremental is Snapshot for checkpoint id of a job that
	// takes incremental checkpoints: on badger, a delta on checkpoint
	// base's snapshot when that is the last confirmed one (see Chain).
	SnapshotIncremental(id, base int64) StateSnapshot
	// Confirm says checkpoint id completed (its snapshot may be a base).
	Confirm(id int64)
	// Restore adds key group kg's state written by WriteKeyGroup of a
	// full snapshot, of either backend and any parallelism.
	Restore(kg int, data []byte) error
	// RestoreDelta applies a delta after its full snapshot (badger only);
	// FinishRestore follows the last one.
	RestoreDelta(kg int, data []byte) error
	FinishRestore() error
	Close() error
}

// StateSnapshot is a frozen view of a state, written by key group; its
// methods may run on any goroutine, one at a time.
type StateSnapshot interface {
	KeyGroups() []int
	WriteKeyGroup(kg int, dst []byte) []byte
	// Base is the checkpoint a delta builds on, 0 for a full snapshot.
	Base() int64
	Err() error
	Release()
}

// ---- heap ----

// NewHeapList returns empty list state of the key groups kgs on the heap;
// fp fingerprints what the caller's bytes mean (checked on restore).
func NewHeapList(kgs KeyGroupRange, fp string) ListState {
	return &heapList{kgs: kgs, fp: fp, tabs: make([]map[string]*hlist, kgs.End-kgs.Start)}
}

type heapList struct {
	kgs  KeyGroupRange
	fp   string
	tabs []map[string]*hlist // by key group - kgs.Start
	// exp holds one valid timer per list, at its earliest entry (hlist.min);
	// others are stale.
	exp Timers[string]
	n   int
}

// hlist is one key's entries: data holds the rows back to back. After a
// snapshot took the slice headers, nothing below their lengths is written
// again: Append writes past them and Expire builds new arrays, so a
// snapshot shares the lists without copying them.
type hlist struct {
	ents []lent
	data []byte
	min  int64
}

type lent struct {
	ts     int64
	off, n uint32
}

func (h *heapList) tab(kg int) map[string]*hlist {
	i := kg - h.kgs.Start
	if i < 0 || kg >= h.kgs.End {
		panic(fmt.Sprintf("state: list state of key group %d in the subtask owning [%d, %d)", kg, h.kgs.Start, h.kgs.End))
	}
	if h.tabs[i] == nil {
		h.tabs[i] = map[string]*hlist{}
	}
	return h.tabs[i]
}

func (h *heapList) Append(kg int, key []byte, ts int64, row []byte) {
	t := h.tab(kg)
	l := t[string(key)]
	if l == nil {
		l = &hlist{min: ts}
		t[string(key)] = l
		h.exp.Push(Timer[string]{T: ts, Key: string(key), KG: int32(kg - h.kgs.Start)})
	} else if ts < l.min {
		l.min = ts
		h.exp.Push(Timer[string]{T: ts, Key: string(key), KG: int32(kg - h.kgs.Start)})
	}
	l.ents = append(l.ents, lent{ts: ts, off: uint32(len(l.data)), n: uint32(len(row))})
	l.data = append(l.data, row...)
	h.n++
}

func (h *heapList) Get(kg int, key []byte, f func(ts int64, row []byte) bool) {
	l := h.tab(kg)[string(key)]
	if l == nil {
		return
	}
	for _, e := range l.ents {
		if !f(e.ts, l.data[e.off:e.off+e.n:e.off+e.n]) {
			return
		}
	}
}

func (h *heapList) Expire(before int64) int {
	dropped := 0
	for h.exp.Due(before - 1) {
		tm := h.exp.Pop()
		t := h.tabs[tm.KG]
		l := t[tm.Key]
		if l == nil || l.min != tm.T {
			continue // stale
		}
		keep := 0
		for _, e := range l.ents {
			if e.ts >= before {
				keep++
			}
		}
		dropped += len(l.ents) - keep
		if keep == 0 {
			delete(t, tm.Key)
			continue
		}
		// New arrays: a snapshot may share the old ones.
		nl := &hlist{ents: make([]lent, 0, keep), min: before}
		first := true
		for _, e := range l.ents {
			if e.ts < before {
				continue
			}
			if first || e.ts < nl.min {
				nl.min, first = e.ts, false
			}
			nl.ents = append(nl.ents, lent{ts: e.ts, off: uint32(len(nl.data)), n: e.n})
			nl.data = append(nl.data, l.data[e.off:e.off+e.n]...)
		}
		t[tm.Key] = nl
		h.exp.Push(Timer[string]{T: nl.min, Key: tm.Key, KG: tm.KG})
	}
	h.n -= dropped
	return dropped
}

func (h *heapList) Len() int { return h.n }

// Snapshot copies each list's slice headers: its pause is linear in the
// number of keys (not entries).
func (h *heapList) Snapshot() StateSnapshot {
	s := &heapListSnap{fp: h.fp}
	for i, t := range h.tabs {
		if len(t) == 0 {
			continue
		}
		ks := make([]frozenList, 0, len(t))
		for k, l := range t {
			ks = append(ks, frozenList{key: k, ents: l.ents[:len(l.ents):len(l.ents)], data: l.data[:len(l.data):len(l.data)]})
		}
		s.kgs = append(s.kgs, h.kgs.Start+i)
		s.lists = append(s.lists, ks)
	}
	return s
}

func (h *heapList) SnapshotIncremental(int64, int64) StateSnapshot { return h.Snapshot() }
func (h *heapList) Confirm(int64)                                  {}

func (h *heapList) Restore(kg int, data []byte) error {
	if !h.kgs.Contains(kg) {
		return fmt.Errorf("state: restore list state of key group %d outside [%d, %d)", kg, h.kgs.Start, h.kgs.End)
	}
	err := decodeList(data, h.fp, func(key []byte, ts int64, _ uint64, row []byte) { h.Append(kg, key, ts, row) })
	if err != nil {
		return fmt.Errorf("state: restore list state of key group %d: %w", kg, err)
	}
	return nil
}

func (h *heapList) RestoreDelta(int, []byte) error {
	return errors.New("state: an incremental checkpoint restores only into the badger state backend (restore from a savepoint to change backends)")
}
func (h *heapList) FinishRestore() error { return nil }
func (h *heapList) Close() error         { return nil }

type frozenList struct {
	key  string
	ents []lent
	data []byte
}

type heapListSnap struct {
	fp    string
	kgs   []int
	lists [][]frozenList // by kgs
}

func (s *heapListSnap) KeyGroups() []int { return s.kgs }
func (s *heapListSnap) Base() int64      { return 0 }
func (s *heapListSnap) Err() error       { return nil }
func (s *heapListSnap) Release()         { s.kgs, s.lists = nil, nil }

func (s *heapListSnap) WriteKeyGroup(kg int, dst []byte) []byte {
	dst = AppendHeader(dst, listMagic, s.fp)
	i, ok := slices.BinarySearch(s.kgs, kg)
	if !ok {
		return binary.AppendUvarint(dst, 0)
	}
	ls := s.lists[i]
	slices.SortFunc(ls, func(a, b frozenList) int {
		return cmp.Or(cmp.Compare(len(a.key), len(b.key)), cmp.Compare(a.key, b.key))
	})
	dst = binary.AppendUvarint(dst, uint64(len(ls)))
	for _, l := range ls {
		dst = binary.AppendUvarint(dst, uint64(len(l.key)))
		dst = append(dst, l.key...)
		dst = binary.AppendUvarint(dst, uint64(len(l.ents)))
		for seq, e := range l.ents {
			dst = appendListEntry(dst, e.ts, uint64(seq), l.data[e.off:e.off+e.n])
		}
	}
	return dst
}

func appendListEntry(dst []byte, ts int64, seq uint64, row []byte) []byte {
	dst = binary.AppendVarint(dst, ts)
	dst = binary.AppendUvarint(dst, seq)
	dst = binary.AppendUvarint(dst, uint64(len(row)))
	return append(dst, row...)
}

// decodeList reads a key group of list state, calling add per entry.
func decodeList(data []byte, fp string, add func(key []byte, ts int64, seq uint64, row []byte)) error {
	body, err := ReadHeader(data, listMagic, fp, "list")
	if err != nil {
		return err
	}
	d := &Dec{B: body}
	nk := d.Count(2)
	for range nk {
		key := d.Bytes()
		n := d.Count(3)
		for range n {
			ts, seq, row := d.Varint(), d.Uvarint(), d.Bytes()
			if d.Err != nil {
				break
			}
			add(key, ts, seq, row)
		}
		if d.Err != nil {
			break
		}
	}
	return d.End()
}
