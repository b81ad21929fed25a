package window

import (
	"fmt"
	"math"
	"slices"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/state"
)

// Operator is the window operator's state and logic. It is not safe for
// concurrent use: one task goroutine calls all of its methods. The only
// thing another goroutine may touch is a *Snapshot it returned.
type Operator struct {
	base
	core core
	reg  *state.Registry
	st   *state.Store // badger backend, else nil
	inc  *state.Chain // incremental snapshots (badger), created on first use
	// rebuild: a delta was restored; FinishRestore rebuilds the index.
	rebuild bool
}

// base is what the cores share with the operator.
type base struct {
	l       *layout
	wm      int64
	c       state.COW
	kgStart int
	nkg     int
	late    int64
	out     *row.Batch // output batch being filled during AdvanceWatermark
	emit    func(*row.Batch)
}

type core interface {
	process(b, late *row.Batch) int
	advance(old int64)
	snapshot() snapData
	restore(kg int, data []byte) error
	size() (keys int, bytes int64)
}

// New validates cfg (see OutputSchema) and returns an operator with no
// state and the watermark at math.MinInt64.
func New(cfg Config, in *row.Schema) (*Operator, error) {
	l, err := plan(cfg, in)
	if err != nil {
		return nil, err
	}
	o := &Operator{reg: state.NewRegistry()}
	o.base = base{l: l, wm: math.MinInt64, c: state.NewCOW(), kgStart: l.cfg.KeyGroups.Start, nkg: l.cfg.KeyGroups.End - l.cfg.KeyGroups.Start}
	maxPar := l.cfg.MaxParallelism
	if l.cfg.Backend == BackendBadger {
		st, err := state.OpenStore(l.cfg.Dir, l.cfg.Badger)
		if err != nil {
			return nil, err
		}
		o.st = st
		if l.intKey {
			o.core = newBadgerCore[int64](&o.base, state.NewIntKeyer(l.keyCols[0], maxPar), st)
		} else {
			o.core = newBadgerCore[string](&o.base, state.NewEncKeyer(l.keyCols, l.keyTypes, maxPar), st)
		}
		return o, nil
	}
	if l.intKey {
		o.core = newCore[int64](&o.base, state.NewIntKeyer(l.keyCols[0], maxPar))
	} else {
		o.core = newCore[string](&o.base, state.NewEncKeyer(l.keyCols, l.keyTypes, maxPar))
	}
	return o, nil
}

// Close releases the operator's resources: with the badger backend it
// closes the database and removes its directory. A snapshot still being
// written fails (see Snapshot.Err). Calling Close twice is harmless; the
// operator must not be used afterwards.
func (o *Operator) Close() error {
	if o.st == nil {
		return nil
	}
	if o.inc != nil {
		o.inc.Close()
	}
	return o.st.Close()
}

func newCore[K state.Key](b *base, kx state.Keyer[K]) core {
	if b.l.cfg.Kind == Session {
		return &sessionCore[K]{base: b, kx: kx, stride: sessAcc + b.l.accWords, tabs: make([]*state.Table[K], b.nkg)}
	}
	return newWindowCore[K](b, kx)
}

// Schema is the output schema (see OutputSchema).
func (o *Operator) Schema() *row.Schema { return o.l.out }

// Process adds b's rows to their windows. A row whose windows are all past
// watermark+AllowedLateness is late: it is appended to late (a batch of the
// input schema; nil drops it) and counted in the result and in LateRows. A
// row of a window that already fired (but within lateness) updates it, and
// the window fires again, for that key, at the next AdvanceWatermark.
// Process keeps no reference to b.
func (o *Operator) Process(b *row.Batch, late *row.Batch) (lateRows int) {
	if b == nil || b.Len == 0 {
		return 0
	}
	o.c.Load(o.reg)
	n := o.core.process(b, late)
	o.late += int64(n)
	return n
}

// AdvanceWatermark moves event time to wm (a smaller wm is ignored, but
// windows updated by late rows still fire). It emits, in order of window
// end then key, one row per (key, window) for every window with end-1 <= wm
// that has not fired, and the updated rows of windows changed by late rows;
// then it purges windows with end-1+AllowedLateness <= wm. emit receives
// batches of the output schema (from row.NewBatch) and owns them.
func (o *Operator) AdvanceWatermark(wm int64, emit func(*row.Batch)) {
	o.c.Load(o.reg)
	old := o.wm
	if wm > o.wm {
		o.wm = wm
	}
	o.emit = emit
	o.core.advance(old)
	if o.out != nil && o.out.Len > 0 {
		emit(o.out)
	}
	o.out, o.emit = nil, nil
}

// Watermark is the current watermark (math.MinInt64 before the first).
func (o *Operator) Watermark() int64 { return o.wm }

// RestoreWatermark sets the watermark from a checkpoint (the minimum over
// the restored subtasks' watermarks, or the one saved with the snapshot).
// Windows with end-1 <= wm are taken to have fired.
func (o *Operator) RestoreWatermark(wm int64) { o.wm = wm }

// LateRows is the number of late rows seen since New.
func (o *Operator) LateRows() int64 { return o.late }

// Snapshot freezes the current state for a checkpoint and returns it. Its
// cost is one slice header per table (key group × window); entries are not
// copied. After it, the first write to a frozen segment copies that segment. The snapshot may
// be serialised from another goroutine while the operator keeps running;
// call Release when done with it, so that writes stop copying.
func (o *Operator) Snapshot() *Snapshot {
	o.sync()
	return o.snapshotOf(o.core.snapshot())
}

// sync writes what the badger backend caches to its database.
func (o *Operator) sync() {
	if s, ok := o.core.(interface{ sync() }); ok {
		s.sync()
	}
}

func (o *Operator) snapshotOf(data snapData) *Snapshot {
	v := o.c.Freeze(o.reg)
	return &Snapshot{data: data, reg: o.reg, ver: v, wm: o.wm}
}

// Restore adds the state of key group kg from bytes written by
// (*Snapshot).WriteKeyGroup, possibly by another subtask of an earlier run
// with another parallelism. kg must be in Config.KeyGroups, and the
// snapshot's operator must have had the same kind, sizes, key types,
// aggregates and max parallelism. Restoring state for keys that already
// have state merges the accumulators.
func (o *Operator) Restore(kg int, data []byte) error {
	if kg < o.kgStart || kg >= o.kgStart+o.nkg {
		return fmt.Errorf("window: restore key group %d outside this subtask's range [%d, %d)", kg, o.kgStart, o.kgStart+o.nkg)
	}
	o.c.Load(o.reg)
	rest, err := readHeader(data, o.l)
	if err != nil {
		return fmt.Errorf("window: restore key group %d: %w", kg, err)
	}
	if err := o.core.restore(kg, rest); err != nil {
		return fmt.Errorf("window: restore key group %d: %w", kg, err)
	}
	return nil
}

// StateSize approximates the state: keys is the number of accumulators
// (one per key and window, or per session), bytes their heap size.
func (o *Operator) StateSize() (keys int, bytes int64) { return o.core.size() }

// kgIndex maps a row's key group to its table index.
func (b *base) kgIndex(kg int32) int {
	i := int(kg) - b.kgStart
	if uint(i) >= uint(b.nkg) {
		panic(fmt.Sprintf("window: row of key group %d reached the subtask owning [%d, %d)", kg, b.kgStart, b.kgStart+b.nkg))
	}
	return i
}

// fired is one output row waiting to be sorted and emitted.
type fired[K state.Key] struct {
	key        K
	start, end int64
	acc        []uint64
}

func emitSorted[K state.Key](b *base, kx state.Keyer[K], ents []fired[K]) {
	sortFired(ents)
	nk := len(b.l.keyCols)
	for i := range ents {
		e := &ents[i]
		if b.out == nil {
			b.out = row.NewBatch(b.l.out)
		}
		out := b.out
		kx.AppendKey(out.Cols[:nk], e.key)
		out.Cols[nk].Ints = append(out.Cols[nk].Ints, e.start)
		out.Cols[nk+1].Ints = append(out.Cols[nk+1].Ints, e.end)
		appendAggs(out.Cols[nk+2:], e.acc, b.l.outs)
		out.Len++
		if out.Len >= row.DefaultBatchSize {
			b.emit(out)
			b.out = nil
		}
	}
}

func sortFired[K state.Key](ents []fired[K]) {
	slices.SortFunc(ents, func(a, b fired[K]) int {
		if a.end != b.end {
			if a.end < b.end {
				return -1
			}
			return 1
		}
		if a.key < b.key {
			return -1
		}
		if a.key > b.key {
			return 1
		}
		if a.start < b.start {
			return -1
		}
		if a.start > b.start {
			return 1
		}
		return 0
	})
}

func floorMod(t, m int64) int64 {
	r := t % m
	if r < 0 {
		r += m
	}
	return r
}

// keySize is what Table.MemBytes counts per key: nil for int64 keys.
func keySize[K state.Key](kx state.Keyer[K]) func(K) int {
	var k K
	if _, ok := any(k).(string); ok {
		return kx.MemSize
	}
	return nil
}
