package window

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/sluice-stream/sluice/engine/state"
)

// Incremental snapshots (badger backend): engine/state's Chain decides
// between a full snapshot and a delta, and its Delta collects the changes
// since the base (see engine/state/incremental.go for why that is sound).
// What is the window's: the delta's header (the configuration's
// fingerprint) and rebuilding what the badger cores keep in memory (live
// panes, key counts, session timers) after a delta was restored.

// MaxDeltas bounds the deltas between two full snapshots.
const MaxDeltas = state.MaxDeltas

// deltaMagic starts a key group's delta: "SLWD" and a version byte, then
// the configuration fingerprint like a full snapshot, then the body of
// state.Delta (uvarint entries, each a prefix-compressed database key and
// its value or a tombstone), so that a delta entry costs about what the
// key's entry in a full snapshot does.
const deltaMagic = "SLWD\x01"

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
		o.inc = state.NewChain(o.st)
	}
	var s *Snapshot
	done := o.inc.Snapshot(id, base, func(since uint64, on int64) *badger.Txn {
		if on == 0 {
			s = o.Snapshot()
			return s.data.(interface{ keep() *badger.Txn }).keep()
		}
		o.sync()
		d := state.NewDelta(o.st, o.kgStart, o.nkg, since)
		s = o.snapshotOf(&bdelta{Delta: d, l: o.l})
		s.base = on
		return d.Txn
	})
	s.onRelease = done
	return s
}

// Confirm tells the operator that checkpoint id completed: its snapshot
// becomes the base of the next delta. Older snapshots are dropped.
func (o *Operator) Confirm(id int64) {
	if o.inc != nil {
		o.inc.Confirm(id)
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
	rest, err := state.ReadHeader(data, deltaMagic, o.l.fp, "window")
	if err != nil {
		return fmt.Errorf("window: restore delta of key group %d: %w", kg, err)
	}
	if err := state.ApplyDelta(o.st, kg, rest); err != nil {
		return fmt.Errorf("window: restore delta of key group %d: %w", kg, err)
	}
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

// bdelta is an incremental snapshot's data: state.Delta under the
// window's header.
type bdelta struct {
	*state.Delta
	l *layout
}

func (d *bdelta) keyGroups() []int { return d.KeyGroups() }
func (d *bdelta) err() error       { return d.Err() }
func (d *bdelta) release()         { d.Release() }

func (d *bdelta) write(kg int, dst []byte) []byte {
	dst = state.AppendHeader(dst, deltaMagic, d.l.fp)
	return d.Write(kg, dst)
}

// keep hands the snapshot's transaction to the operator's Chain instead of
// discarding it on release.
func (s *bsnap[K]) keep() *badger.Txn {
	s.kept = true
	return s.txn
}

// ---- rebuilding the in-memory index ----

func (c *bwinCore[K]) rebuildIndex() error {
	c.panes = c.panes[:0]
	c.n = 0
	txn := c.st.DB.NewTransaction(false)
	defer txn.Discard()
	pre := []byte{state.TagState}
	st := c.l.accWords
	return state.Scan(txn, pre, func(item *badger.Item) error {
		k := item.Key()
		if len(k) < 11 {
			return errors.New("malformed key")
		}
		ti := int(binary.BigEndian.Uint16(k[1:])) - c.kgStart
		if ti < 0 || ti >= c.nkg {
			return fmt.Errorf("key of key group %d outside the subtask's range", ti+c.kgStart)
		}
		key, err := state.KeyFromBytes[K](k[11:])
		if err != nil {
			return err
		}
		p := c.paneAt(state.ReadOrd(k[3:]))
		p.has[ti] = true
		p.keys.Add(state.FilterHash(key))
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
	txn := c.st.DB.NewTransaction(false)
	defer txn.Discard()
	err := state.Scan(txn, []byte{state.TagTimer}, func(item *badger.Item) error {
		k := item.Key()
		c.w.Del(append(c.w.Alloc(len(k)), k...))
		return nil
	})
	if err != nil {
		return err
	}
	err = state.Scan(txn, []byte{state.TagState}, func(item *badger.Item) error {
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
			tk := append(c.w.Alloc(len(k)+8), state.TagTimer)
			tk = state.AppendOrd(tk, int64(binary.LittleEndian.Uint64(v)))
			c.w.Set(append(tk, k[1:]...), nil)
			return nil
		})
	})
	if err != nil {
		return err
	}
	c.w.Flush()
	return nil
}
