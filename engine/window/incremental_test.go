package window

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/sluice-stream/sluice/engine/state"
)

// savedSnap is one checkpoint's snapshot as a job would store it.
type savedSnap struct {
	base int64 // 0: full
	kgs  map[int][]byte
	wm   int64
}

// chainOf returns the snapshots to restore for checkpoint id, oldest (the
// full one) first.
func chainOf(t *testing.T, saved map[int64]savedSnap, id int64) []savedSnap {
	var chain []savedSnap
	for {
		s, ok := saved[id]
		if !ok {
			t.Fatalf("checkpoint %d not saved", id)
		}
		chain = append(chain, s)
		if s.base == 0 {
			break
		}
		id = s.base
	}
	slices.Reverse(chain)
	return chain
}

// restoreChain restores a chain into a new operator for key groups kgs.
func restoreChain(t *testing.T, cfg Config, kgs state.KeyGroupRange, chain []savedSnap) *Operator {
	cfg.KeyGroups = kgs
	op, err := newOp(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range chain {
		for kg := kgs.Start; kg < kgs.End; kg++ {
			b, ok := s.kgs[kg]
			if !ok {
				continue
			}
			if i == 0 {
				err = op.Restore(kg, b)
			} else {
				err = op.RestoreDelta(kg, b)
			}
			if err != nil {
				t.Fatalf("restoring key group %d of chain element %d: %v", kg, i, err)
			}
		}
	}
	if err := op.FinishRestore(); err != nil {
		t.Fatal(err)
	}
	op.RestoreWatermark(chain[len(chain)-1].wm)
	return op
}

// TestIncremental takes an incremental snapshot after every step of a
// script (leaving some checkpoints unconfirmed, as failed ones are),
// restores chains at several points, also into two subtasks, and checks
// that the restored state serialises exactly like a full snapshot taken at
// the same point and then behaves like the original.
func TestIncremental(t *testing.T) {
	for i, cfg := range configs() {
		if i%4 != 0 && i%4 != 3 { // every kind, fewer key sets: badger under -race is slow
			continue
		}
		cfg.Backend = BackendBadger
		cfg.MaxParallelism = 16
		t.Run(name(cfg), func(t *testing.T) {
			t.Parallel()
			steps := script(21, 90)
			op, _ := newOp(t, cfg)
			saved := map[int64]savedSnap{}
			full := map[int64]map[int][]byte{}
			deltas, fulls := 0, 0
			var lastOK int64
			for i, st := range steps {
				run(t, op, []step{st})
				id := int64(i + 1)
				s := op.SnapshotIncremental(id, lastOK)
				saved[id] = savedSnap{base: s.Base(), kgs: snapBytes(s, cfg.MaxParallelism), wm: s.Watermark()}
				if err := s.Err(); err != nil {
					t.Fatal(err)
				}
				s.Release()
				if s.Base() == 0 {
					fulls++
				} else {
					deltas++
				}
				ref := op.Snapshot()
				full[id] = snapBytes(ref, cfg.MaxParallelism)
				ref.Release()
				if i%7 != 3 { // every seventh checkpoint fails
					op.Confirm(id)
					lastOK = id
				}
			}
			if deltas == 0 || fulls < 2 {
				t.Fatalf("%d full snapshots and %d deltas: want both, and compaction", fulls, deltas)
			}
			for _, at := range []int64{5, 52, int64(len(steps))} {
				chain := chainOf(t, saved, at)
				if len(chain) > MaxDeltas+1 {
					t.Fatalf("checkpoint %d: chain of %d snapshots", at, len(chain))
				}
				rest := append(slices.Clone(steps[at:]), step{wm: math.MaxInt64})
				// One subtask: the same bytes as a full snapshot.
				r := restoreChain(t, cfg, state.KeyGroupRange{Start: 0, End: cfg.MaxParallelism}, chain)
				rs := r.Snapshot()
				got := snapBytes(rs, cfg.MaxParallelism)
				rs.Release()
				if len(got) != len(full[at]) {
					t.Fatalf("checkpoint %d: %d key groups restored, %d in the full snapshot", at, len(got), len(full[at]))
				}
				for kg, b := range full[at] {
					if !bytes.Equal(b, got[kg]) {
						t.Fatalf("checkpoint %d (chain of %d): key group %d restores differently from the full snapshot", at, len(chain), kg)
					}
				}
				// The same behaviour as an operator restored from the full
				// snapshot, also split over two subtasks.
				ref, _ := newOp(t, cfg)
				for kg, b := range full[at] {
					if err := ref.Restore(kg, b); err != nil {
						t.Fatal(err)
					}
				}
				ref.RestoreWatermark(saved[at].wm)
				want := run(t, ref, rest)
				var split [][]any
				l, _ := plan(cfg, testSchema)
				for sub := range 2 {
					kgs := state.RangeForSubtask(sub, cfg.MaxParallelism, 2)
					o := restoreChain(t, cfg, kgs, chain)
					var mine []step
					for _, s := range rest {
						var rows []refRow
						for _, row := range s.rows {
							kg := state.KeyGroup(state.HashRow(batchOf(t, []refRow{row}), l.keyCols, 0), cfg.MaxParallelism)
							if kgs.Contains(kg) {
								rows = append(rows, row)
							}
						}
						mine = append(mine, step{rows: rows, wm: s.wm})
					}
					split = append(split, run(t, o, mine)...)
				}
				sameRows(t, fmt.Sprintf("checkpoint %d: chain on 1 subtask vs full", at), run(t, r, rest), want)
				sortAll(split)
				sortAll(want)
				sameRows(t, fmt.Sprintf("checkpoint %d: chain on 2 subtasks vs full", at), split, want)
			}
		})
	}
}

// TestIncrementalHeap: the heap backend takes full snapshots and rejects
// deltas.
func TestIncrementalHeap(t *testing.T) {
	cfg := configs()[0]
	op, _ := newOp(t, cfg)
	run(t, op, script(3, 10))
	s := op.SnapshotIncremental(1, 0)
	if s.Base() != 0 {
		t.Fatal("heap snapshot is a delta")
	}
	s.Release()
	if err := op.RestoreDelta(0, []byte(deltaMagic)); err == nil {
		t.Fatal("heap backend accepted a delta")
	}
}

// TestIncrementalOnlyOnNewest: a delta builds only on the snapshot of the
// checkpoint named as the newest completed one; otherwise (a savepoint
// completed in between, a notification not seen) the snapshot is full.
func TestIncrementalOnlyOnNewest(t *testing.T) {
	cfg := configs()[0]
	cfg.Backend = BackendBadger
	op, _ := newOp(t, cfg)
	steps := script(4, 30)
	run(t, op, steps[:10])
	s := op.SnapshotIncremental(1, 0)
	snapBytes(s, cfg.MaxParallelism)
	s.Release()
	op.Confirm(1)
	run(t, op, steps[10:20])
	if s := op.SnapshotIncremental(2, 7); s.Base() != 0 {
		t.Fatalf("delta on checkpoint %d while the newest completed is 7", s.Base())
	} else {
		s.Release()
	}
	run(t, op, steps[20:])
	if s := op.SnapshotIncremental(3, 1); s.Base() != 1 {
		t.Fatalf("base %d, want a delta on 1", s.Base())
	} else {
		s.Release()
	}
}
