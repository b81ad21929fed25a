package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/state"
	"github.com/sluice-stream/sluice/engine/window"
)

// scenarioIncremental measures checkpoint size and duration, full against
// incremental, for badger window state of 10 M keys after 1 % and after
// 10 % of the keys changed (issue #3's benchmark). It drives the window
// operator directly (no job around it) so that the figures are the
// snapshot's own: serialising every key group of the snapshot and writing
// it to a local file, as the checkpoint upload does.
func scenarioIncremental() {
	keys := int64(10_000_000 * *scale)
	dir, err := os.MkdirTemp("", "sluice-bench-incr")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	in := row.MustSchema(row.Field{Name: "key", Type: row.Int64}, row.Field{Name: "ts", Type: row.Timestamp}, row.Field{Name: "v", Type: row.Int64})
	const maxPar = 128
	op, err := window.New(window.Config{
		Kind: window.Tumbling, Size: 1 << 40, // one window: nothing fires, every key keeps its state
		KeyFields: []string{"key"}, TimeField: "ts",
		Aggs:           []window.Agg{{Name: "n", Fn: window.Count}, {Name: "s", Fn: window.Sum, Field: "v"}},
		MaxParallelism: maxPar, KeyGroups: state.KeyGroupRange{Start: 0, End: maxPar},
		Backend: window.BackendBadger, Dir: filepath.Join(dir, "db"),
	}, in)
	if err != nil {
		fail(err)
	}
	defer op.Close()
	feed := func(n int64, key func(i int64) int64) {
		for i := int64(0); i < n; i += row.DefaultBatchSize {
			b := row.NewBatch(in)
			for j := i; j < min(i+row.DefaultBatchSize, n); j++ {
				k := key(j)
				b.Cols[0].Ints = append(b.Cols[0].Ints, k)
				b.Cols[1].Ints = append(b.Cols[1].Ints, 1)
				b.Cols[2].Ints = append(b.Cols[2].Ints, k%1000)
				b.Len++
			}
			op.Process(b, nil)
			b.Release()
		}
	}
	var peak uint64
	stop := sampleHeap(&peak)
	t0 := time.Now()
	feed(keys, func(i int64) int64 { return i })
	load := time.Since(t0)
	stop()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	_, disk := op.StateSize()
	if *mprof != "" {
		f, err := os.Create(*mprof)
		if err != nil {
			fail(err)
		}
		_ = pprof.WriteHeapProfile(f)
		f.Close()
	}
	fmt.Fprintf(os.Stderr, "incremental: %d keys loaded into badger in %v\n", keys, load.Round(time.Millisecond))
	add("badger state, loaded", fmt.Sprintf("%d keys", keys), fmt.Sprintf("%d", keys), load.Round(time.Millisecond).String(), mrps(float64(keys)/load.Seconds()), "",
		fmt.Sprintf("%.2f GB on disk; Go heap %.0f MB live after GC, %.0f MB peak in use while loading", float64(disk)/1e9, float64(ms.HeapAlloc)/1e6, float64(peak)/1e6))

	// write serialises a snapshot into a file; it returns bytes and time.
	n := 0
	write := func(s *window.Snapshot) (int64, time.Duration) {
		t0 := time.Now()
		n++
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("snap-%d", n)))
		if err != nil {
			fail(err)
		}
		var total int64
		var buf []byte
		for _, kg := range s.KeyGroups() {
			buf = s.WriteKeyGroup(kg, buf[:0])
			total += int64(len(buf))
			if _, err := f.Write(buf); err != nil {
				fail(err)
			}
		}
		if err := s.Err(); err != nil {
			fail(err)
		}
		if err := f.Close(); err != nil {
			fail(err)
		}
		s.Release()
		os.Remove(f.Name())
		return total, time.Since(t0)
	}
	s := op.SnapshotIncremental(1, 0)
	fullBytes, fullTime := write(s)
	op.Confirm(1)
	add("checkpoint, full (badger)", fmt.Sprintf("%d keys", keys), "", fmt.Sprintf("%.0f MB in %v", float64(fullBytes)/1e6, fullTime.Round(time.Millisecond)), "", "", "")

	rng := rand.New(rand.NewPCG(7, 7))
	id := int64(1)
	for _, frac := range []float64{0.01, 0.10} {
		changed := int64(float64(keys) * frac)
		perm := rng.Perm(int(keys))[:changed]
		feed(changed, func(i int64) int64 { return int64(perm[i]) })
		id++
		d := op.SnapshotIncremental(id, id-1)
		if d.Base() != id-1 {
			fail(fmt.Errorf("checkpoint %d is not a delta on %d", id, id-1))
		}
		dBytes, dTime := write(d)
		full := op.Snapshot()
		fBytes, fTime := write(full)
		op.Confirm(id)
		// Every key's entry has about the same size, so the changed state
		// is the full snapshot's share of the changed keys.
		changedBytes := float64(fBytes) * frac
		add(fmt.Sprintf("checkpoint after %.0f%% changed", frac*100), fmt.Sprintf("%d of %d keys", changed, keys), "",
			fmt.Sprintf("incremental %.1f MB in %v; full %.0f MB in %v", float64(dBytes)/1e6, dTime.Round(time.Millisecond), float64(fBytes)/1e6, fTime.Round(time.Millisecond)),
			fmt.Sprintf("incremental = %.2f× the changed state", float64(dBytes)/changedBytes), "", "")
	}
}
