package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	badger "github.com/dgraph-io/badger/v4"
)

// Badger list state. Database keys (badger.go's tags):
//
//	entry   TagList kg(2, BE) len(key)(4, BE) key seq(8, BE)  → ts(8, LE) row
//	expiry  TagTTL ts(8, ord) kg(2, BE) len(key)(4, BE) key seq(8, BE) → empty
//
// so a key's entries are one prefix, in seq (append) order, and Expire
// scans the expiry index up to its bound: it costs what it drops. seq is
// one counter for the store, above every seq restored. What stays in
// memory: entries per key group (which key groups a snapshot lists), and
// the counter. Appends go to a WriteBatch that is flushed before any read.

// NewBadgerList returns empty list state of the key groups kgs in st (which
// other states may share: the list's keys have their own tags); fp
// fingerprints what the caller's bytes mean.
func NewBadgerList(st *Store, kgs KeyGroupRange, fp string) ListState {
	return &badgerList{st: st, kgs: kgs, fp: fp, w: Writer{St: st}, kgN: make([]int, kgs.End-kgs.Start), expFrom: math.MinInt64}
}

type badgerList struct {
	st      *Store
	kgs     KeyGroupRange
	fp      string
	w       Writer
	pending int // appends not flushed
	seq     uint64
	kgN     []int // entries by key group - kgs.Start
	n       int
	chain   *Chain
	rebuild bool
	kbuf    []byte
	// Expiry entries below expFrom were all dropped: Expire seeks there,
	// not to the tombstones of entries dropped long ago.
	expFrom int64
}

func (b *badgerList) check(kg int) {
	if !b.kgs.Contains(kg) {
		panic(fmt.Sprintf("state: list state of key group %d in the subtask owning [%d, %d)", kg, b.kgs.Start, b.kgs.End))
	}
}

func listPrefix(dst []byte, kg int, key []byte) []byte {
	dst = binary.BigEndian.AppendUint16(append(dst, TagList), uint16(kg))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(key)))
	return append(dst, key...)
}

func ttlKey(dst []byte, ts int64, kg int, key []byte, seq uint64) []byte {
	dst = AppendOrd(append(dst, TagTTL), ts)
	dst = binary.BigEndian.AppendUint16(dst, uint16(kg))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(key)))
	dst = append(dst, key...)
	return binary.BigEndian.AppendUint64(dst, seq)
}

func (b *badgerList) put(kg int, key []byte, ts int64, seq uint64, row []byte) {
	k := binary.BigEndian.AppendUint64(listPrefix(b.w.Alloc(15+len(key)), kg, key), seq)
	v := append(binary.LittleEndian.AppendUint64(b.w.Alloc(8+len(row)), uint64(ts)), row...)
	b.w.Set(k, v)
	b.w.Set(ttlKey(b.w.Alloc(23+len(key)), ts, kg, key, seq), nil)
	b.kgN[kg-b.kgs.Start]++
	b.n++
	b.expFrom = min(b.expFrom, ts)
	if b.pending++; b.pending >= 1<<12 {
		b.flush()
	}
}

func (b *badgerList) flush() {
	if b.pending > 0 {
		b.w.Flush()
		b.pending = 0
	}
}

func (b *badgerList) Append(kg int, key []byte, ts int64, row []byte) {
	b.check(kg)
	b.seq++
	b.put(kg, key, ts, b.seq, row)
}

func (b *badgerList) Get(kg int, key []byte, f func(ts int64, row []byte) bool) {
	b.check(kg)
	b.flush()
	txn := b.st.DB.NewTransaction(false)
	defer txn.Discard()
	b.kbuf = listPrefix(b.kbuf[:0], kg, key)
	stop := errors.New("stop")
	err := Scan(txn, b.kbuf, func(item *badger.Item) error {
		if len(item.Key()) != len(b.kbuf)+8 {
			return nil // a longer key sharing the prefix cannot: len is in it
		}
		return item.Value(func(v []byte) error {
			if len(v) < 8 {
				return errors.New("malformed list entry")
			}
			if !f(int64(binary.LittleEndian.Uint64(v)), v[8:]) {
				return stop
			}
			return nil
		})
	})
	if err != nil && err != stop {
		Fail("list read", err)
	}
}

func (b *badgerList) Expire(before int64) int {
	b.flush()
	txn := b.st.DB.NewTransaction(false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: []byte{TagTTL}})
	dropped := 0
	for it.Seek(AppendOrd([]byte{TagTTL}, b.expFrom)); it.Valid(); it.Next() {
		k := it.Item().Key()
		if len(k) < 23 || ReadOrd(k[1:9]) >= before {
			break
		}
		kg := int(binary.BigEndian.Uint16(k[9:11]))
		kl := int(binary.BigEndian.Uint32(k[11:15]))
		if len(k) != 23+kl || !b.kgs.Contains(kg) {
			it.Close()
			Fail("list expiry", errors.New("malformed expiry key"))
		}
		b.w.Del(append(b.w.Alloc(len(k)), k...))
		ek := append(b.w.Alloc(15+kl), TagList)
		ek = append(ek, k[9:]...)
		b.w.Del(ek)
		b.kgN[kg-b.kgs.Start]--
		dropped++
	}
	it.Close()
	b.w.Flush()
	b.expFrom = max(b.expFrom, before)
	b.n -= dropped
	return dropped
}

func (b *badgerList) Len() int { return b.n }

func (b *badgerList) Snapshot() StateSnapshot {
	b.flush()
	s := &badgerListSnap{badgerTxnSnap{st: b.st, fp: b.fp, txn: b.st.DB.NewTransaction(false)}}
	for i, n := range b.kgN {
		if n > 0 {
			s.kgs = append(s.kgs, b.kgs.Start+i)
		}
	}
	return s
}

func (b *badgerList) SnapshotIncremental(id, base int64) StateSnapshot {
	if b.chain == nil {
		b.chain = NewChain(b.st)
	}
	var s StateSnapshot
	var counter *int64
	done := b.chain.Snapshot(id, base, func(since uint64, on int64) *badger.Txn {
		if on == 0 {
			fs := b.Snapshot().(*badgerListSnap)
			fs.kept = true
			s, counter = fs, &fs.bytes
			return fs.txn
		}
		b.flush()
		d := &badgerDelta{Delta: NewDelta(b.st, b.kgs.Start, b.kgs.End-b.kgs.Start, since, TagList, TagTTL), magic: listDeltaMagic, fp: b.fp, base: on}
		s, counter = d, &d.bytes
		return d.Txn
	})
	return &chained{StateSnapshot: s, bytes: counter, done: done}
}

func (b *badgerList) Confirm(id int64) {
	if b.chain != nil {
		b.chain.Confirm(id)
	}
}

func (b *badgerList) Restore(kg int, data []byte) error {
	if !b.kgs.Contains(kg) {
		return fmt.Errorf("state: restore list state of key group %d outside [%d, %d)", kg, b.kgs.Start, b.kgs.End)
	}
	// The snapshot's seqs name the entries, as in the database it was
	// written from: deltas on it then delete and add the same entries.
	err := decodeList(data, b.fp, func(key []byte, ts int64, seq uint64, row []byte) {
		b.seq = max(b.seq, seq)
		b.put(kg, key, ts, seq, row)
	})
	b.flush()
	if err != nil {
		return fmt.Errorf("state: restore list state of key group %d: %w", kg, err)
	}
	return nil
}

func (b *badgerList) RestoreDelta(kg int, data []byte) error {
	if !b.kgs.Contains(kg) {
		return fmt.Errorf("state: restore list delta of key group %d outside [%d, %d)", kg, b.kgs.Start, b.kgs.End)
	}
	body, err := ReadHeader(data, listDeltaMagic, b.fp, "list delta")
	if err == nil {
		err = ApplyDelta(b.st, kg, body)
	}
	if err != nil {
		return fmt.Errorf("state: restore list delta of key group %d: %w", kg, err)
	}
	b.rebuild = true
	return nil
}

// FinishRestore rebuilds the counts and the seq counter from the database
// after deltas.
func (b *badgerList) FinishRestore() error {
	if !b.rebuild {
		return nil
	}
	b.rebuild = false
	clear(b.kgN)
	b.n = 0
	b.expFrom = math.MinInt64
	txn := b.st.DB.NewTransaction(false)
	defer txn.Discard()
	return Scan(txn, []byte{TagList}, func(item *badger.Item) error {
		k := item.Key()
		kg := KeyGroupOfDBKey(k)
		if len(k) < 15 || !b.kgs.Contains(kg) {
			return errors.New("state: rebuilding list state: malformed key")
		}
		b.kgN[kg-b.kgs.Start]++
		b.n++
		b.seq = max(b.seq, binary.BigEndian.Uint64(k[len(k)-8:]))
		return nil
	})
}

func (b *badgerList) Close() error {
	b.flush()
	if b.chain != nil {
		b.chain.Close()
	}
	return nil
}

// badgerTxnSnap is what a list's and a map's full snapshot on badger
// share: a read transaction the key groups are written from.
type badgerTxnSnap struct {
	st       *Store
	fp       string
	txn      *badger.Txn
	kgs      []int
	e        error
	bytes    int64
	kept     bool // the transaction belongs to a Chain
	released bool
}

func (s *badgerTxnSnap) KeyGroups() []int { return s.kgs }
func (s *badgerTxnSnap) Base() int64      { return 0 }
func (s *badgerTxnSnap) Err() error       { return s.e }

func (s *badgerTxnSnap) Release() {
	s.st.Use(func() error {
		if !s.released && !s.kept {
			s.txn.Discard()
		}
		return nil
	})
	s.released = true
}

// badgerDelta is a list's or a map's incremental snapshot on badger: the
// entries of its tags written since the base, framed by magic.
type badgerDelta struct {
	*Delta
	magic string
	fp    string
	base  int64
	bytes int64
}

func (d *badgerDelta) Base() int64 { return d.base }

func (d *badgerDelta) WriteKeyGroup(kg int, dst []byte) []byte {
	n0 := len(dst)
	dst = d.Write(kg, AppendHeader(dst, d.magic, d.fp))
	d.bytes += int64(len(dst) - n0)
	return dst
}

type badgerListSnap struct{ badgerTxnSnap }

func (s *badgerListSnap) WriteKeyGroup(kg int, dst []byte) []byte {
	n0 := len(dst)
	dst = AppendHeader(dst, listMagic, s.fp)
	var body []byte
	keys := 0
	err := s.st.Use(func() error {
		pre := binary.BigEndian.AppendUint16([]byte{TagList}, uint16(kg))
		var cur []byte // current key's prefix
		var ents []byte
		n := 0
		end := func() {
			if cur != nil {
				body = binary.AppendUvarint(body, uint64(len(cur)-7))
				body = append(body, cur[7:]...)
				body = binary.AppendUvarint(body, uint64(n))
				body = append(body, ents...)
				keys++
			}
		}
		err := Scan(s.txn, pre, func(item *badger.Item) error {
			k := item.Key()
			if len(k) < 15 {
				return errors.New("malformed list key")
			}
			kp := k[:len(k)-8]
			if cur == nil || string(kp) != string(cur) {
				end()
				cur, ents, n = append(cur[:0:0], kp...), ents[:0], 0
			}
			seq := binary.BigEndian.Uint64(k[len(k)-8:])
			return item.Value(func(v []byte) error {
				if len(v) < 8 {
					return errors.New("malformed list entry")
				}
				ents = appendListEntry(ents, int64(binary.LittleEndian.Uint64(v)), seq, v[8:])
				n++
				return nil
			})
		})
		end()
		return err
	})
	if err != nil && s.e == nil {
		s.e = fmt.Errorf("state: reading list state for a snapshot: %w", err)
	}
	dst = binary.AppendUvarint(dst, uint64(keys))
	dst = append(dst, body...)
	s.bytes += int64(len(dst) - n0)
	return dst
}

// chained tells the Chain when the snapshot's writer is done.
type chained struct {
	StateSnapshot
	bytes *int64
	done  func(bytes int64, ok bool)
	once  bool
}

func (c *chained) Release() {
	if c.once {
		return
	}
	c.once = true
	c.done(*c.bytes, c.Err() == nil)
	c.StateSnapshot.Release()
}
