package window

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/state"
)

func TestMain(m *testing.M) {
	// Small databases open fast; the benchmarks set production sizes.
	state.BadgerMem.MemTable, state.BadgerMem.BaseTable, state.BadgerMem.BlockCache, state.BadgerMem.IndexCache = 1<<20, 256<<10, 1<<20, 1<<20
	code := m.Run()
	for _, s := range sliding { // benchmark state kept across runs
		s.op.Close()
	}
	os.Exit(code)
}

// The semantic tests run once per state backend.
var backends = []string{BackendHeap, BackendBadger}

func forBackends(t *testing.T, f func(t *testing.T, be string)) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) { f(t, be) })
	}
}

// smallSegs: the heap backend is also run with tiny segments (splits and
// copy-on-write everywhere); segments mean nothing to badger.
func smallSegs(be string) []bool {
	if be == BackendBadger {
		return []bool{false}
	}
	return []bool{false, true}
}

// parallelBadger runs a badger subtest in parallel with its siblings:
// badger's cost is mostly waiting on its own goroutines. (Heap subtests
// stay sequential: some change state.SegMax.)
func parallelBadger(t *testing.T, be string) {
	if be == BackendBadger {
		t.Parallel()
	}
}

// newOp is New with, for badger, a fresh directory per operator, closed
// at the end of the test.
func newOp(t testing.TB, cfg Config) (*Operator, error) {
	if cfg.Backend == BackendBadger && cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "state")
	}
	op, err := New(cfg, testSchema)
	if err == nil {
		t.Cleanup(func() {
			if err := op.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	return op, err
}

// TestCrossBackend snapshots on one backend, restores into the other and
// checks that the restored operator behaves like one replayed to the
// snapshot point. For tumbling and sliding windows (rows fold in the same
// order on both backends) the snapshot bytes are equal too.
func TestCrossBackend(t *testing.T) {
	for _, pair := range [][2]string{{BackendHeap, BackendBadger}, {BackendBadger, BackendHeap}} {
		for _, cfg := range configs() {
			t.Run(fmt.Sprintf("%s→%s/%s", pair[0], pair[1], name(cfg)), func(t *testing.T) {
				t.Parallel()
				steps := script(5, 100)
				const at = 60
				from, to := cfg, cfg
				from.Backend, to.Backend = pair[0], pair[1]
				a, _ := newOp(t, from)
				run(t, a, steps[:at])
				snap := a.Snapshot()
				saved := snapBytes(snap, cfg.MaxParallelism)
				if err := snap.Err(); err != nil {
					t.Fatal(err)
				}
				snap.Release()
				r, _ := newOp(t, to)
				for kg, b := range saved {
					if err := r.Restore(kg, b); err != nil {
						t.Fatal(err)
					}
				}
				r.RestoreWatermark(snap.Watermark())
				ref, _ := newOp(t, to)
				run(t, ref, steps[:at])
				if cfg.Kind != Session {
					s := ref.Snapshot()
					other := snapBytes(s, cfg.MaxParallelism)
					s.Release()
					if len(other) != len(saved) {
						t.Fatalf("%d key groups on %s, %d on %s", len(saved), pair[0], len(other), pair[1])
					}
					for kg, b := range saved {
						if !bytes.Equal(b, other[kg]) {
							t.Fatalf("key group %d: snapshot bytes differ between backends", kg)
						}
					}
				}
				rest := append(slices.Clone(steps[at:]), step{wm: math.MaxInt64})
				sameRows(t, "restored vs replayed", run(t, r, rest), run(t, ref, rest))
			})
		}
	}
}

// TestBadgerClose: Close removes the directory, and a snapshot written
// after it reports an error instead of reading a closed database.
func TestBadgerClose(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	cfg := Config{Kind: Session, Gap: 5, KeyFields: []string{"ki"}, TimeField: "ts", Aggs: testAggs, Backend: BackendBadger, Dir: dir}
	op, err := New(cfg, testSchema)
	if err != nil {
		t.Fatal(err)
	}
	run(t, op, script(3, 20))
	s := op.Snapshot()
	if err := op.Close(); err != nil {
		t.Fatal(err)
	}
	if err := op.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("state directory left after Close: %v", err)
	}
	s.WriteKeyGroup(0, nil)
	if s.Err() == nil {
		t.Fatal("no error writing a snapshot after Close")
	}
	s.Release()
	if _, err := New(Config{Kind: Tumbling, Size: 1, KeyFields: []string{"ki"}, TimeField: "ts", Aggs: testAggs, Backend: BackendBadger}, testSchema); err == nil {
		t.Fatal("badger without a directory accepted")
	}
	if _, err := New(Config{Kind: Tumbling, Size: 1, KeyFields: []string{"ki"}, TimeField: "ts", Aggs: testAggs, Backend: "rocksdb"}, testSchema); err == nil {
		t.Fatal("unknown backend accepted")
	}
}

// TestBadgerSnapshotWhileClosing writes a snapshot on another goroutine
// while the operator processes and then closes (run with -race): every
// key group is either complete or the snapshot reports an error.
func TestBadgerSnapshotWhileClosing(t *testing.T) {
	cfg := Config{Kind: Sliding, Size: 10, Slide: 5, KeyFields: []string{"ki", "ks"}, TimeField: "ts", Aggs: testAggs, MaxParallelism: 16, Backend: BackendBadger, Dir: filepath.Join(t.TempDir(), "s")}
	op, err := New(cfg, testSchema)
	if err != nil {
		t.Fatal(err)
	}
	steps := script(8, 120)
	run(t, op, steps[:80])
	s := op.Snapshot()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, kg := range s.KeyGroups() {
			s.WriteKeyGroup(kg, nil)
		}
	}()
	var out []*row.Batch
	for _, st := range steps[80:] {
		op.Process(batchOf(t, st.rows), nil)
		op.AdvanceWatermark(st.wm, collect(&out))
	}
	if err := op.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	_ = s.Err() // either is fine; the point is no crash and no race
	s.Release()
}
