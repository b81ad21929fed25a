package state

import (
	"encoding/binary"
	"fmt"
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
// The delta format covers every tag of the database (badger.go), so value
// state, timers and list state of a store travel in one delta. Restoring a
// chain: restore the full snapshot's key groups, then ApplyDelta every
// delta in chain order, then rebuild what is kept in memory from the
// database.

// MaxDeltas bounds the deltas between two full snapshots.
const MaxDeltas = 8

// A key group's delta body (after the caller's header) is: uvarint
// entries, and per entry, in key order:
//
//	key:    uvarint bytes shared with the previous entry's database key,
//	        uvarint length of the rest, the rest
//	value:  uvarint tag: 0 the key was deleted; 1 raw: uvarint length,
//	        bytes; 2+n: n 8-byte words, each as a zigzag varint (values are
//	        record words: counts and integer sums are small)
//
// so that a delta entry costs about what the key's entry in a full
// snapshot does.

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

// Chain tracks the snapshots a store's deltas may build on.
type Chain struct {
	st        *Store
	mu        sync.Mutex
	pending   map[int64]*held
	confirmed *held
}

// NewChain returns a chain with no snapshot.
func NewChain(st *Store) *Chain { return &Chain{st: st, pending: map[int64]*held{}} }

func (in *Chain) discard(h *held) {
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

// Snapshot starts checkpoint id's snapshot. When the last confirmed
// snapshot is that of checkpoint base (the newest completed one: older
// ones may be pruned) and the chain is short, take is called with that
// snapshot's read timestamp and base, and makes a delta; otherwise with
// (0, 0), and makes a full snapshot. Either way take returns the read-only
// transaction the snapshot reads, which the chain keeps as a possible base
// (take runs under the chain's lock). The snapshot must call the returned
// function when its writer is done (bytes written, and whether completely).
func (in *Chain) Snapshot(id, base int64, take func(since uint64, on int64) *badger.Txn) (done func(bytes int64, ok bool)) {
	in.mu.Lock()
	defer in.mu.Unlock()
	on := in.confirmed
	if on != nil && (on.id != base || on.deltas >= MaxDeltas || on.dbytes >= on.full) {
		on = nil // not the newest completed, or compacting the chain: a full snapshot
	}
	h := &held{id: id, writing: true}
	if on == nil {
		h.txn = take(0, 0)
	} else {
		h.txn = take(on.txn.ReadTs(), on.id)
		h.deltas, h.full, h.dbytes = on.deltas+1, on.full, on.dbytes
	}
	if old := in.pending[id]; old != nil {
		in.discard(old)
	}
	in.pending[id] = h
	return func(bytes int64, ok bool) { in.finished(h, bytes, ok) }
}

// Confirm makes checkpoint id's snapshot the base of the next delta. Older
// snapshots are dropped.
func (in *Chain) Confirm(id int64) {
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
func (in *Chain) finished(h *held, bytes int64, ok bool) {
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

// Close drops every snapshot the chain holds.
func (in *Chain) Close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, p := range in.pending {
		in.discard(p)
	}
	in.discard(in.confirmed)
	in.pending, in.confirmed = nil, nil
}

// Delta is an incremental snapshot's data: the changes since a base,
// read from Txn (which the Chain owns), bucketed by key group. Its methods
// run on the snapshot writer's goroutine, one at a time.
type Delta struct {
	st      *Store
	kgStart int
	nkg     int
	since   uint64
	Txn     *badger.Txn
	once    sync.Once
	byKG    map[int][]byte // entries per key group, encoded
	counts  map[int]int
	prev    map[int][]byte // last key per key group (prefix compression)
	kgs     []int
	tags    []byte // the tags of the keys it carries; empty: all
	e       error
}

// NewDelta opens the transaction of a delta on the base read at since, for
// the key groups [kgStart, kgStart+nkg). With tags, the delta carries only
// keys of those tags (one state of a store that holds several).
func NewDelta(st *Store, kgStart, nkg int, since uint64, tags ...byte) *Delta {
	return &Delta{st: st, kgStart: kgStart, nkg: nkg, since: since, Txn: st.DB.NewTransaction(false), tags: tags}
}

// collect reads every change since the base, once, bucketed by key group.
func (d *Delta) collect() {
	d.once.Do(func() {
		d.byKG, d.counts, d.prev = map[int][]byte{}, map[int]int{}, map[int][]byte{}
		d.st.mu.RLock()
		defer d.st.mu.RUnlock()
		if d.st.closed {
			d.e = ErrClosed
			return
		}
		it := d.Txn.NewIterator(badger.IteratorOptions{AllVersions: true, SinceTs: d.since})
		defer it.Close()
		var last []byte
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if last != nil && string(k) == string(last) {
				continue // an older version of the key just handled
			}
			last = append(last[:0], k...)
			if len(d.tags) > 0 && (len(k) == 0 || !slices.Contains(d.tags, k[0])) {
				continue
			}
			kg := KeyGroupOfDBKey(k)
			if kg < d.kgStart || kg >= d.kgStart+d.nkg {
				d.e = fmt.Errorf("state: delta: key of key group %d outside [%d, %d)", kg, d.kgStart, d.kgStart+d.nkg)
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
				d.e = fmt.Errorf("state: reading badger state for a delta: %w", err)
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

// KeyGroups lists the key groups that changed, ascending.
func (d *Delta) KeyGroups() []int { d.collect(); return d.kgs }

// Write appends key group kg's delta body to dst.
func (d *Delta) Write(kg int, dst []byte) []byte {
	d.collect()
	dst = binary.AppendUvarint(dst, uint64(d.counts[kg]))
	return append(dst, d.byKG[kg]...)
}

// Err reports a failure to read the changes.
func (d *Delta) Err() error { return d.e }

// Release drops the collected changes; the transaction belongs to the Chain.
func (d *Delta) Release() { d.byKG, d.counts, d.prev = nil, nil, nil }

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

// ApplyDelta writes a key group's delta body (Delta.Write) into st. Every
// entry must be of key group kg.
func ApplyDelta(st *Store, kg int, body []byte) error {
	w := Writer{St: st}
	d := &Dec{B: body}
	n := d.Count(2)
	var prev []byte
	for range n {
		shared, kl := d.Uvarint(), d.Uvarint()
		if d.Err != nil || shared > uint64(len(prev)) || kl > uint64(len(d.B)) {
			d.Err = ErrShort
			break
		}
		k := append(append(w.Alloc(int(shared)+int(kl)), prev[:shared]...), d.B[:kl]...)
		d.B = d.B[kl:]
		prev = k
		if got := KeyGroupOfDBKey(k); got != kg {
			d.Err = fmt.Errorf("entry of key group %d", got)
			break
		}
		switch tag := d.Uvarint(); {
		case d.Err != nil:
		case tag == 0:
			w.Del(k)
		case tag == 1:
			vl := d.Uvarint()
			if d.Err != nil || vl > uint64(len(d.B)) {
				d.Err = ErrShort
				break
			}
			w.Set(k, append(w.Alloc(int(vl)), d.B[:vl]...))
			d.B = d.B[vl:]
		default:
			nw := tag - 2
			if nw > uint64(len(d.B)) {
				d.Err = ErrShort
				break
			}
			v := w.Alloc(int(nw) * 8)
			for range nw {
				v = binary.LittleEndian.AppendUint64(v, uint64(d.Varint()))
			}
			w.Set(k, v)
		}
		if d.Err != nil {
			break
		}
	}
	if err := d.End(); err != nil {
		return err
	}
	w.Flush()
	return nil
}
