package window

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	badger "github.com/dgraph-io/badger/v4"
)

// Incremental snapshots (badger backend).
//
// A delta holds, per key group, the database entries that changed since the
// snapshot of an earlier checkpoint (the base): the newest version of every
// key written after the base's read timestamp, or a tombstone when that
// version is a delete. Badger is MVCC, so the changes are found by iterating
// with SinceTs = the base's read timestamp; tables with no newer version are
// skipped whole, which is what makes a delta cost what changed.
//
// Two things keep that sound:
//   - The base's read-only transaction stays open until a newer snapshot is
//     confirmed. Badger never discards versions above the oldest open
//     transaction's read timestamp, so the tombstones a delta must carry
//     survive compaction.
//   - A snapshot becomes a base only when its checkpoint completed
//     (Confirm), as in Flink's RocksDB backend: a delta never builds on a
//     checkpoint that may not exist.
//
// The chain is bounded: a snapshot is full when the confirmed chain already
// has MaxDeltas deltas, or when its deltas add up to more bytes than its
// full snapshot (then a full one is cheaper to restore than the chain).
//
// Restoring a chain: Restore the full snapshot's key groups, then
// RestoreDelta every delta in chain order, then FinishRestore, which
// rebuilds what the badger cores keep in memory (live panes, key counts)
// from the database.

// MaxDeltas bounds the deltas between two full snapshots.
const MaxDeltas = 8

// deltaMagic starts a key group's delta: "SLWD" and a version byte, then
// the configuration fingerprint like a full snapshot, uvarint entries, and
// per entry, in key order:
//
//	key:    uvarint bytes shared with the previous entry's database key,
//	        uvarint length of the rest, the rest
//	value:  uvarint tag: 0 the key was deleted; 1 raw: uvarint length,
//	        bytes; 2+n: n 8-byte words, each as a zigzag varint (values are
//	        accumulator words: counts and integer sums are small)
//
// so that a delta entry costs about what the key's entry in a full
// snapshot does.
const deltaMagic = "SLWD\x01"

// held is a snapshot's transaction, kept after the snapshot was written so
// that it can become the base of later deltas.
type held struct {
	id      int64
	txn     *badger.Txn
	deltas  int   // deltas between the last full snapshot and this one
	full    int64 // bytes of that full snapshot
	dbytes  int64 // bytes of those deltas, this one included
	bytes   int64 // bytes this snapshot wrote
	ok      bool  // written completely
	writing bool
	drop    bool // discard when the writer is done
}

// incr tracks the snapshots an operator's deltas may build on.
type incr struct {
	st        *bstore
	mu        sync.Mutex
	pending   map[int64]*held
	confirmed *held
}

func (in *incr) discard(h *held) {
	if h == nil {
		return
	}
	if h.writing {
		h.drop = true
		return
	}
	in.st.mu.RLock()
	if !in.st.closed && h.txn != nil {
		h.txn.Discard()
	}
	in.st.mu.RUnlock()
	h.txn = nil
}

// confirm makes checkpoint id's snapshot the base of the next delta.
func (in *incr) confirm(id int64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	h := in.pending[id]
	if h == nil {
		return
	}
	for pid, p := range in.pending {
		if pid <= id {
			delete(in.pending, pid)
			if p != h {
				in.discard(p)
			}
		}
	}
	if !h.ok {
		in.discard(h)
		return
	}
	in.discard(in.confirmed)
	in.confirmed = h
}

// finished records that the snapshot's writer is done with its transaction.
func (in *incr) finished(h *held, bytes int64, ok bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	h.writing = false
	h.bytes, h.ok = bytes, ok
	if h.deltas == 0 {
		h.full = bytes
	} else {
		h.dbytes += bytes
	}
	if h.drop {
		in.discard(h)
	}
}

func (in *incr) close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, p := range in.pending {
		in.discard(p)
	}
	in.discard(in.confirmed)
	in.pending, in.confirmed = nil, nil
}

// SnapshotIncremental is Snapshot for checkpoint id of a job that takes
// incremental checkpoints. With the badger backend, when the last confirmed
// snapshot is that of checkpoint base (the newest completed one: older
// ones may be pruned), it returns a delta on it (Snapshot.Base); otherwise
// a full snapshot. With the heap backend it is Snapshot.
func (o *Operator) SnapshotIncremental(id, base int64) *Snapshot {
	if o.st == nil {
		return o.Snapshot()
	}
	if o.inc == nil {
		o.inc = &incr{st: o.st, pending: map[int64]*held{}}
	}
	in := o.inc
	in.mu.Lock()
	defer in.mu.Unlock()
	on := in.confirmed
	if on != nil && (on.id != base || on.deltas >= MaxDeltas || on.dbytes >= on.full) {
		on = nil // not the newest completed, or compacting the chain: a full snapshot
	}
	var s *Snapshot
	h := &held{id: id, writing: true}
	if on == nil {
		s = o.Snapshot()
		bs := s.data.(interface{ keep() *badger.Txn })
		h.txn = bs.keep()
	} else {
		o.sync()
		d := &bdelta{st: o.st, l: o.l, kgStart: o.kgStart, nkg: o.nkg, since: on.txn.ReadTs(), txn: o.st.db.NewTransaction(false)}
		h.txn = d.txn
		h.deltas, h.full, h.dbytes = on.deltas+1, on.full, on.dbytes
		s = o.snapshotOf(d)
		s.base = on.id
	}
	s.onRelease = func(bytes int64, ok bool) { in.finished(h, bytes, ok) }
	if old := in.pending[id]; old != nil {
		in.discard(old)
	}
	in.pending[id] = h
	return s
}

// Confirm tells the operator that checkpoint id completed: its snapshot
// becomes the base of the next delta. Older snapshots are dropped.
func (o *Operator) Confirm(id int64) {
	if o.inc != nil {
		o.inc.confirm(id)
	}
}

// RestoreDelta applies a key group's delta written by an incremental
// snapshot. Deltas must come after the key group's full snapshot (Restore)
// and in chain order; FinishRestore must follow the last one. Only the
// badger backend reads deltas.
func (o *Operator) RestoreDelta(kg int, data []byte) error {
	if o.st == nil {
		return errors.New("window: an incremental checkpoint restores only into the badger state backend (restore from a savepoint to change backends)")
	}
	if kg < o.kgStart || kg >= o.kgStart+o.nkg {
		return fmt.Errorf("window: restore key group %d outside this subtask's range [%d, %d)", kg, o.kgStart, o.kgStart+o.nkg)
	}
	if len(data) < len(deltaMagic) || string(data[:len(deltaMagic)]) != deltaMagic {
		return fmt.Errorf("window: restore delta of key group %d: not a window delta (bad magic or version)", kg)
	}
	rest, err := readHeader(append([]byte(magic), data[len(deltaMagic):]...), o.l)
	if err != nil {
		return fmt.Errorf("window: restore delta of key group %d: %w", kg, err)
	}
	w := writer{st: o.st}
	d := &dec{b: rest}
	n := d.count(2)
	var prev []byte
	for range n {
		shared, kl := d.uvarint(), d.uvarint()
		if d.err != nil || shared > uint64(len(prev)) || kl > uint64(len(d.b)) {
			d.err = errShort
			break
		}
		k := append(append(w.alloc(int(shared)+int(kl)), prev[:shared]...), d.b[:kl]...)
		d.b = d.b[kl:]
		prev = k
		if got := keyGroupOfDBKey(k); got != kg {
			d.err = fmt.Errorf("entry of key group %d", got)
			break
		}
		switch tag := d.uvarint(); {
		case d.err != nil:
		case tag == 0:
			w.del(k)
		case tag == 1:
			vl := d.uvarint()
			if d.err != nil || vl > uint64(len(d.b)) {
				d.err = errShort
				break
			}
			w.set(k, append(w.alloc(int(vl)), d.b[:vl]...))
			d.b = d.b[vl:]
		default:
			nw := tag - 2
			if nw > uint64(len(d.b)) {
				d.err = errShort
				break
			}
			v := w.alloc(int(nw) * 8)
			for range nw {
				v = binary.LittleEndian.AppendUint64(v, uint64(d.varint()))
			}
			w.set(k, v)
		}
		if d.err != nil {
			break
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("trailing bytes")
	}
	if d.err != nil {
		return fmt.Errorf("window: restore delta of key group %d: %w", kg, d.err)
	}
	w.flush()
	o.rebuild = true
	return nil
}

// FinishRestore completes a restore that applied deltas: the badger cores
// rebuild their in-memory index of the state from the database.
func (o *Operator) FinishRestore() error {
	if !o.rebuild {
		return nil
	}
	o.rebuild = false
	r, ok := o.core.(interface{ rebuildIndex() error })
	if !ok {
		return errors.New("window: FinishRestore on a backend without deltas")
	}
	if err := r.rebuildIndex(); err != nil {
		return fmt.Errorf("window: rebuilding the state index after a delta restore: %w", err)
	}
	return nil
}

// keyGroupOfDBKey reads the key group out of a database key (badger.go's
// layout), -1 if malformed.
func keyGroupOfDBKey(k []byte) int {
	switch {
	case len(k) >= 3 && k[0] == tagState:
		return int(binary.BigEndian.Uint16(k[1:]))
	case len(k) >= 11 && k[0] == tagTimer:
		return int(binary.BigEndian.Uint16(k[9:]))
	}
	return -1
}

// bdelta is an incremental snapshot's data: the changes since a base.
type bdelta struct {
	st      *bstore
	l       *layout
	kgStart int
	nkg     int
	since   uint64
	txn     *badger.Txn
	once    sync.Once
	byKG    map[int][]byte // entries per key group, encoded
	counts  map[int]int
	prev    map[int][]byte // last key per key group (prefix compression)
	kgs     []int
	e       error
}

// collect reads every change since the base, once, bucketed by key group.
func (d *bdelta) collect() {
	d.once.Do(func() {
		d.byKG, d.counts, d.prev = map[int][]byte{}, map[int]int{}, map[int][]byte{}
		d.st.mu.RLock()
		defer d.st.mu.RUnlock()
		if d.st.closed {
			d.e = errors.New("window: snapshot written after the operator closed")
			return
		}
		it := d.txn.NewIterator(badger.IteratorOptions{AllVersions: true, SinceTs: d.since})
		defer it.Close()
		var last []byte
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if last != nil && string(k) == string(last) {
				continue // an older version of the key just handled
			}
			last = append(last[:0], k...)
			kg := keyGroupOfDBKey(k)
			if kg < d.kgStart || kg >= d.kgStart+d.nkg {
				d.e = fmt.Errorf("window: delta: key of key group %d outside [%d, %d)", kg, d.kgStart, d.kgStart+d.nkg)
				return
			}
			b := d.byKG[kg]
			prev := d.prev[kg]
			shared := 0
			for shared < len(prev) && shared < len(k) && prev[shared] == k[shared] {
				shared++
			}
			b = binary.AppendUvarint(b, uint64(shared))
			b = binary.AppendUvarint(b, uint64(len(k)-shared))
			b = append(b, k[shared:]...)
			d.prev[kg] = append(prev[:0], k...)
			if item.IsDeletedOrExpired() {
				b = append(b, 0)
			} else if err := item.Value(func(v []byte) error {
				b = appendDeltaValue(b, v)
				return nil
			}); err != nil {
				d.e = fmt.Errorf("window: reading badger state for a delta: %w", err)
				return
			}
			d.byKG[kg] = b
			d.counts[kg]++
		}
		for kg := range d.byKG {
			d.kgs = append(d.kgs, kg)
		}
		slices.Sort(d.kgs)
	})
}

func (d *bdelta) keyGroups() []int { d.collect(); return d.kgs }

func (d *bdelta) write(kg int, dst []byte) []byte {
	d.collect()
	dst = append(dst, deltaMagic...)
	dst = binary.AppendUvarint(dst, uint64(len(d.l.fp)))
	dst = append(dst, d.l.fp...)
	dst = binary.AppendUvarint(dst, uint64(d.counts[kg]))
	return append(dst, d.byKG[kg]...)
}

func (d *bdelta) err() error { return d.e }

// release keeps the transaction: it belongs to the operator's incr.
func (d *bdelta) release() { d.byKG, d.counts, d.prev = nil, nil, nil }

func appendDeltaValue(b, v []byte) []byte {
	if len(v)%8 != 0 {
		b = append(b, 1)
		b = binary.AppendUvarint(b, uint64(len(v)))
		return append(b, v...)
	}
	b = binary.AppendUvarint(b, uint64(2+len(v)/8))
	for ; len(v) > 0; v = v[8:] {
		b = binary.AppendVarint(b, int64(binary.LittleEndian.Uint64(v)))
	}
	return b
}

// keep hands the snapshot's transaction to the operator's incr instead of
// discarding it on release.
func (s *bsnap[K]) keep() *badger.Txn {
	s.kept = true
	return s.txn
}

// ---- rebuilding the in-memory index ----

func (c *bwinCore[K]) rebuildIndex() error {
	c.panes = c.panes[:0]
	c.n = 0
	txn := c.st.db.NewTransaction(false)
	defer txn.Discard()
	pre := []byte{tagState}
	st := c.l.accWords
	return scan(txn, pre, func(item *badger.Item) error {
		k := item.Key()
		if len(k) < 11 {
			return errors.New("malformed key")
		}
		ti := int(binary.BigEndian.Uint16(k[1:])) - c.kgStart
		if ti < 0 || ti >= c.nkg {
			return fmt.Errorf("key of key group %d outside the subtask's range", ti+c.kgStart)
		}
		key, err := keyFromBytes[K](k[11:])
		if err != nil {
			return err
		}
		p := c.paneAt(readOrd(k[3:]))
		p.has[ti] = true
		p.keys.add(filterHash(key))
		c.n++
		return item.Value(func(v []byte) error {
			if len(v) != 8*st {
				return errors.New("malformed accumulator")
			}
			if binary.LittleEndian.Uint64(v)&dirtyBit != 0 {
				p.dirty = append(p.dirty, ref[K]{key: key, kg: int32(ti)})
			}
			return nil
		})
	})
}

func (c *bsessCore[K]) rebuildIndex() error {
	clear(c.kgKeys)
	c.nsess = 0
	c.scanFrom = math.MinInt64
	// Timers are rebuilt from the sessions: a full restore writes each
	// key's exact timer, while the original database may hold an earlier
	// one (timers only move lazily), so a delta's timer entries need not
	// match the restored ones.
	txn := c.st.db.NewTransaction(false)
	defer txn.Discard()
	err := scan(txn, []byte{tagTimer}, func(item *badger.Item) error {
		k := item.Key()
		c.w.del(append(c.w.alloc(len(k)), k...))
		return nil
	})
	if err != nil {
		return err
	}
	err = scan(txn, []byte{tagState}, func(item *badger.Item) error {
		k := item.Key()
		ti := -1
		if len(k) >= 3 {
			ti = int(binary.BigEndian.Uint16(k[1:])) - c.kgStart
		}
		if ti < 0 || ti >= c.nkg {
			return errors.New("malformed key")
		}
		return item.Value(func(v []byte) error {
			if len(v) < 16 {
				return errors.New("malformed sessions")
			}
			c.kgKeys[ti]++
			c.nsess += int(binary.LittleEndian.Uint64(v[8:]))
			tk := append(c.w.alloc(len(k)+8), tagTimer)
			tk = appendOrd(tk, int64(binary.LittleEndian.Uint64(v)))
			c.w.set(append(tk, k[1:]...), nil)
			return nil
		})
	})
	if err != nil {
		return err
	}
	c.w.flush()
	return nil
}
