package window

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/state"
)

var keySets = [][]string{
	{"ki"},
	{"kt"},
	{"ks"},
	{"ki", "ks"},
	{"ks", "kb", "kf"},
	{},
}

var strKeys = []string{"", "a", "a\x00", "a\x00b", "b", "ab", "\x00", "zz\x00\x00"}

type gen struct {
	r   *rand.Rand
	now int64
}

func (g *gen) rows(n int, jitter int64) []refRow {
	rows := make([]refRow, n)
	for i := range rows {
		ts := g.now - g.r.Int64N(jitter+1) + g.r.Int64N(3)
		rows[i] = refRow{
			g.r.Int64N(30) - 5,
			strKeys[g.r.IntN(len(strKeys))],
			int64(1_700_000_000_000 + g.r.IntN(4)),
			[]float64{-1.5, 0, 2.25, 1e9}[g.r.IntN(4)],
			g.r.IntN(2) == 0,
			ts,
			g.r.Int64N(2001) - 1000,
			float64(g.r.Int64N(801)-400) / 4,
		}
	}
	return rows
}

func configs() []Config {
	var cfgs []Config
	for _, ks := range keySets {
		for _, c := range []Config{
			{Kind: Tumbling, Size: 10},
			{Kind: Tumbling, Size: 10, AllowedLateness: 7},
			{Kind: Sliding, Size: 10, Slide: 3, AllowedLateness: 4},
			{Kind: Sliding, Size: 12, Slide: 4},
			{Kind: Session, Gap: 5},
			{Kind: Session, Gap: 4, AllowedLateness: 6},
		} {
			c.KeyFields, c.TimeField, c.Aggs = ks, "ts", testAggs
			c.MaxParallelism = 8
			cfgs = append(cfgs, c)
		}
	}
	return cfgs
}

func name(c Config) string {
	return fmt.Sprintf("%s-%d-%d-%d-L%d-%v", c.Kind, c.Size, c.Slide, c.Gap, c.AllowedLateness, c.KeyFields)
}

func collect(bs *[]*row.Batch) func(*row.Batch) {
	return func(b *row.Batch) { *bs = append(*bs, b) }
}

// TestAgainstModel steps the operator and the reference model through the
// same random, out-of-order script and compares every output and late row.
func TestAgainstModel(t *testing.T) {
	forBackends(t, func(t *testing.T, be string) {
		for _, small := range smallSegs(be) {
			for _, cfg := range configs() {
				cfg.Backend = be
				t.Run(fmt.Sprintf("%s/smallseg=%v", name(cfg), small), func(t *testing.T) {
					parallelBadger(t, be)
					if small {
						defer func(v int) { state.SegMax = v }(state.SegMax)
						state.SegMax = 2
					}
					runScript(t, cfg, 1)
				})
			}
		}
	})
}

func runScript(t *testing.T, cfg Config, seed uint64) {
	op, err := newOp(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := newRef(cfg)
	g := &gen{r: rand.New(rand.NewPCG(seed, 7)), now: -40}
	for step := 0; step < 120; step++ {
		g.now += g.r.Int64N(4)
		rows := g.rows(g.r.IntN(40), 12)
		late := row.NewBatch(testSchema)
		n := op.Process(batchOf(t, rows), late)
		before := m.late
		m.process(rows)
		if n != m.late-before || late.Len != n {
			t.Fatalf("step %d: %d late rows (batch %d), want %d", step, n, late.Len, m.late-before)
		}
		sameRows(t, fmt.Sprintf("step %d late rows", step), rowsOf([]*row.Batch{late}), toAny(m.lateRows[before:]))
		if g.r.IntN(3) == 0 {
			wm := g.now - g.r.Int64N(6)
			var out []*row.Batch
			op.AdvanceWatermark(wm, collect(&out))
			sameRows(t, fmt.Sprintf("step %d wm %d", step, wm), rowsOf(out), m.advance(wm))
		}
	}
	var out []*row.Batch
	op.AdvanceWatermark(math.MaxInt64, collect(&out))
	sameRows(t, "final", rowsOf(out), m.advance(math.MaxInt64))
	if k, _ := op.StateSize(); k != 0 {
		t.Fatalf("%d accumulators left after the final watermark", k)
	}
}

func toAny(rows []refRow) [][]any {
	res := make([][]any, len(rows))
	for i, r := range rows {
		res[i] = append([]any{}, r...)
	}
	return res
}

// TestBruteForce checks in-order streams against a plain group-by over all
// rows, independently of the model.
func TestBruteForce(t *testing.T) {
	forBackends(t, func(t *testing.T, be string) { testBruteForce(t, be) })
}

func testBruteForce(t *testing.T, be string) {
	for _, cfg := range configs() {
		if cfg.AllowedLateness != 0 {
			continue
		}
		cfg.Backend = be
		t.Run(name(cfg), func(t *testing.T) {
			parallelBadger(t, be)
			g := &gen{r: rand.New(rand.NewPCG(3, 4))}
			var all []refRow
			for range 50 {
				g.now += g.r.Int64N(5)
				all = append(all, g.rows(20, 0)...)
			}
			slices.SortStableFunc(all, func(a, b refRow) int { return int(a[5].(int64) - b[5].(int64)) })
			op, err := newOp(t, cfg)
			if err != nil {
				t.Fatal(err)
			}
			var out []*row.Batch
			for i := 0; i < len(all); i += 37 {
				op.Process(batchOf(t, all[i:min(i+37, len(all))]), nil)
				// -2: with -1 a session ending at the next row's ts fires and is
				// purged before that row could touch it (Flink does the same).
				op.AdvanceWatermark(all[min(i+37, len(all))-1][5].(int64)-2, collect(&out))
			}
			op.AdvanceWatermark(math.MaxInt64, collect(&out))
			sameRows(t, "brute force", rowsOf(out), bruteForce(cfg, all))
		})
	}
}

func bruteForce(cfg Config, rows []refRow) [][]any {
	m := newRef(cfg)
	groups := map[string]*refWin{}
	for _, r := range rows {
		key, kv := m.keyOf(r)
		ts := r[5].(int64)
		switch cfg.Kind {
		case Session:
			continue
		case Tumbling:
			s := ts - floorMod(ts, cfg.Size)
			id := fmt.Sprint(key, s)
			if groups[id] == nil {
				groups[id] = &refWin{keyVals: kv, start: s, end: s + cfg.Size}
			}
			groups[id].rows = append(groups[id].rows, r)
		case Sliding:
			for s := ts - floorMod(ts, cfg.Slide); s > ts-cfg.Size; s -= cfg.Slide {
				id := fmt.Sprint(key, s)
				if groups[id] == nil {
					groups[id] = &refWin{keyVals: kv, start: s, end: s + cfg.Size}
				}
				groups[id].rows = append(groups[id].rows, r)
			}
		}
	}
	var wins []*refWin
	for _, w := range groups {
		wins = append(wins, w)
	}
	if cfg.Kind == Session {
		byKey := map[string][]refRow{}
		kvs := map[string][]any{}
		for _, r := range rows {
			key, kv := m.keyOf(r)
			byKey[key] = append(byKey[key], r)
			kvs[key] = kv
		}
		for key, rs := range byKey {
			var cur *refWin
			var maxTs int64
			for _, r := range rs { // sorted by ts
				ts := r[5].(int64)
				if cur == nil || ts > maxTs+cfg.Gap {
					cur = &refWin{keyVals: kvs[key], start: ts}
					wins = append(wins, cur)
				}
				maxTs = ts
				cur.end = ts + cfg.Gap
				cur.rows = append(cur.rows, r)
			}
		}
	}
	slices.SortFunc(wins, func(a, b *refWin) int {
		if a.end != b.end {
			if a.end < b.end {
				return -1
			}
			return 1
		}
		return compareKeys(a.keyVals, b.keyVals)
	})
	var res [][]any
	for _, w := range wins {
		res = append(res, w.result())
	}
	return res
}

func TestOutputSchema(t *testing.T) {
	s, err := OutputSchema(Config{Kind: Tumbling, Size: 10, KeyFields: []string{"ks", "ki"}, TimeField: "ts", Aggs: testAggs}, testSchema)
	if err != nil {
		t.Fatal(err)
	}
	want := "{ks string, ki int64, window_start timestamp, window_end timestamp, n int64, sv int64, sf float64, minv int64, maxv int64, minf float64, maxf float64, av float64, af float64, maxts timestamp}"
	if s.String() != want {
		t.Fatalf("schema %s\nwant %s", s, want)
	}
	ok := Config{Kind: Tumbling, Size: 10, TimeField: "ts", Aggs: []Agg{{Name: "n"}}}
	for _, c := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.KeyFields = []string{"nope"} }, `unknown key field "nope"`},
		{func(c *Config) { c.TimeField = "nope" }, `unknown time field "nope"`},
		{func(c *Config) { c.TimeField = "f" }, `time field "f" is float64`},
		{func(c *Config) { c.Aggs = []Agg{{Name: "x", Fn: Sum, Field: "nope"}} }, `unknown field "nope"`},
		{func(c *Config) { c.Aggs = []Agg{{Name: "x", Fn: Sum, Field: "ks"}} }, `sum of string field "ks"`},
		{func(c *Config) { c.Aggs = []Agg{{Name: "x", Fn: Max, Field: "kb"}} }, `max of bool field "kb"`},
		{func(c *Config) { c.Aggs = []Agg{{Name: "x", Fn: Avg}} }, `avg needs a field`},
		{func(c *Config) { c.Aggs = []Agg{{Name: "x"}, {Name: "x", Fn: Sum, Field: "v"}} }, `"x" of aggregate "x" duplicates aggregate "x"`},
		{func(c *Config) { c.KeyFields = []string{"ki"}; c.Aggs = []Agg{{Name: "ki"}} }, `duplicates key field "ki"`},
		{func(c *Config) { c.Aggs = []Agg{{Name: "window_end"}} }, `duplicates the window end`},
		{func(c *Config) { c.Aggs = []Agg{{Fn: Count}} }, `has no name`},
		{func(c *Config) { c.Aggs = nil }, `no aggregates`},
		{func(c *Config) { c.Size = 0 }, `size must be > 0`},
		{func(c *Config) { c.Kind, c.Slide = Sliding, 20 }, `slide 20 ms is larger than size 10 ms`},
		{func(c *Config) { c.Kind, c.Slide = Sliding, 0 }, `slide must be > 0`},
		{func(c *Config) { c.Kind = Session }, `gap must be > 0`},
		{func(c *Config) { c.AllowedLateness = -1 }, `lateness must be >= 0`},
		{func(c *Config) { c.MaxParallelism, c.KeyGroups = 8, state.KeyGroupRange{Start: 4, End: 9} }, `key group range [4, 9)`},
	} {
		cfg := ok
		c.mod(&cfg)
		_, err := OutputSchema(cfg, testSchema)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
			t.Errorf("error %v, want it to contain %q", err, c.want)
		}
	}
}

// TestSnapshotCOW takes a snapshot in the middle of a script, keeps going,
// and checks that (1) the snapshot's bytes did not change, (2) restoring
// them gives an operator that behaves like one that stopped at the snapshot.
func TestSnapshotCOW(t *testing.T) {
	forBackends(t, func(t *testing.T, be string) {
		for _, small := range smallSegs(be) {
			for _, cfg := range configs() {
				cfg.Backend = be
				t.Run(fmt.Sprintf("%s/smallseg=%v", name(cfg), small), func(t *testing.T) {
					parallelBadger(t, be)
					if small {
						defer func(v int) { state.SegMax = v }(state.SegMax)
						state.SegMax = 2
					}
					testSnapshotCOW(t, cfg)
				})
			}
		}
	})
}

type step struct {
	rows []refRow
	wm   int64 // advance after the rows if != 0
}

func script(seed uint64, n int) []step {
	g := &gen{r: rand.New(rand.NewPCG(seed, 9)), now: -20}
	var steps []step
	for range n {
		g.now += g.r.Int64N(4)
		s := step{rows: g.rows(g.r.IntN(30), 10)}
		if g.r.IntN(3) == 0 {
			s.wm = g.now - g.r.Int64N(5)
		}
		steps = append(steps, s)
	}
	return steps
}

func run(t testing.TB, op *Operator, steps []step) [][]any {
	var out []*row.Batch
	for _, s := range steps {
		op.Process(batchOf(t, s.rows), nil)
		if s.wm != 0 {
			op.AdvanceWatermark(s.wm, collect(&out))
		}
	}
	return rowsOf(out)
}

func snapBytes(s *Snapshot, maxPar int) map[int][]byte {
	res := map[int][]byte{}
	for _, kg := range s.KeyGroups() {
		res[kg] = s.WriteKeyGroup(kg, nil)
	}
	return res
}

func testSnapshotCOW(t *testing.T, cfg Config) {
	steps := script(5, 100)
	const at = 60
	a, _ := newOp(t, cfg)
	run(t, a, steps[:at])
	snap := a.Snapshot()
	before := snapBytes(snap, cfg.MaxParallelism)
	// Keep writing: every segment changes or splits after the snapshot.
	run(t, a, steps[at:])
	a.AdvanceWatermark(math.MaxInt64, func(b *row.Batch) { b.Release() })
	after := snapBytes(snap, cfg.MaxParallelism)
	snap.Release()
	if len(before) != len(after) {
		t.Fatalf("snapshot has %d key groups after more processing, %d before", len(after), len(before))
	}
	for kg, b := range before {
		if !bytes.Equal(b, after[kg]) {
			t.Fatalf("key group %d: snapshot bytes changed after the snapshot", kg)
		}
	}
	// Restore into a new operator and compare with one replayed to the
	// snapshot point.
	r, _ := newOp(t, cfg)
	for kg, b := range before {
		if err := r.Restore(kg, b); err != nil {
			t.Fatal(err)
		}
	}
	r.RestoreWatermark(snap.Watermark())
	ref, _ := newOp(t, cfg)
	run(t, ref, steps[:at])
	rs := r.Snapshot()
	for kg, b := range snapBytes(rs, cfg.MaxParallelism) {
		if !bytes.Equal(b, before[kg]) {
			t.Fatalf("key group %d: restored state serialises differently", kg)
		}
	}
	rs.Release()
	rest := append(slices.Clone(steps[at:]), step{wm: math.MaxInt64})
	sameRows(t, "restored vs replayed", run(t, r, rest), run(t, ref, rest))
}

// TestRescale runs a script on 2 subtasks, snapshots, restores the key
// groups into 3 subtasks and finishes there; the union of outputs equals
// one subtask's.
func TestRescale(t *testing.T) {
	forBackends(t, testRescale)
}

func testRescale(t *testing.T, be string) {
	for _, cfg := range configs() {
		cfg.Backend = be
		t.Run(name(cfg), func(t *testing.T) {
			parallelBadger(t, be)
			cfg.MaxParallelism = 16
			steps := script(11, 90)
			const at = 50
			rest := append(slices.Clone(steps[at:]), step{wm: math.MaxInt64})
			single, _ := newOp(t, cfg)
			want := run(t, single, append(slices.Clone(steps), step{wm: math.MaxInt64}))

			l, _ := plan(cfg, testSchema)
			var got [][]any
			routed := func(steps []step, p int) [][]step {
				per := make([][]step, p)
				for _, s := range steps {
					parts := make([][]refRow, p)
					for _, r := range s.rows {
						b := batchOf(t, []refRow{r})
						kg := state.KeyGroup(state.HashRow(b, l.keyCols, 0), cfg.MaxParallelism)
						st := state.SubtaskForKeyGroup(kg, cfg.MaxParallelism, p)
						parts[st] = append(parts[st], r)
					}
					for i := range per {
						per[i] = append(per[i], step{rows: parts[i], wm: s.wm})
					}
				}
				return per
			}
			saved := map[int][]byte{}
			var wm int64 = math.MaxInt64
			for i, ss := range routed(steps[:at], 2) {
				c := cfg
				c.KeyGroups = state.RangeForSubtask(i, cfg.MaxParallelism, 2)
				op, err := newOp(t, c)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, run(t, op, ss)...)
				s := op.Snapshot()
				for kg, b := range snapBytes(s, cfg.MaxParallelism) {
					saved[kg] = b
				}
				wm = min(wm, s.Watermark())
				s.Release()
			}
			for i, ss := range routed(rest, 3) {
				c := cfg
				c.KeyGroups = state.RangeForSubtask(i, cfg.MaxParallelism, 3)
				op, _ := newOp(t, c)
				for kg := c.KeyGroups.Start; kg < c.KeyGroups.End; kg++ {
					if b, ok := saved[kg]; ok {
						if err := op.Restore(kg, b); err != nil {
							t.Fatal(err)
						}
					}
				}
				op.RestoreWatermark(wm)
				got = append(got, run(t, op, ss)...)
			}
			sortAll(got)
			sortAll(want)
			sameRows(t, "2→3 subtasks vs 1", got, want)
		})
	}
}

func sortAll(rows [][]any) {
	slices.SortFunc(rows, func(a, b []any) int {
		return bytes.Compare([]byte(fmt.Sprint(a...)), []byte(fmt.Sprint(b...)))
	})
}

// TestConcurrentSnapshotWrite serialises a snapshot on another goroutine
// while the operator keeps processing (run with -race).
func TestConcurrentSnapshotWrite(t *testing.T) {
	forBackends(t, testConcurrentSnapshotWrite)
}

func testConcurrentSnapshotWrite(t *testing.T, be string) {
	for _, kind := range []Kind{Tumbling, Sliding, Session} {
		t.Run(kind.String(), func(t *testing.T) {
			defer func(v int) { state.SegMax = v }(state.SegMax)
			state.SegMax = 8
			cfg := Config{Kind: kind, Size: 10, Slide: 5, Gap: 5, AllowedLateness: 5, KeyFields: []string{"ki", "ks"}, TimeField: "ts", Aggs: testAggs, MaxParallelism: 4, Backend: be}
			steps := script(21, 200)
			op, _ := newOp(t, cfg)
			run(t, op, steps[:100])
			s := op.Snapshot()
			want := snapBytes(s, 4)
			var got map[int][]byte
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 5 {
					got = snapBytes(s, 4)
				}
			}()
			run(t, op, steps[100:])
			wg.Wait()
			s.Release()
			for kg, b := range want {
				if !bytes.Equal(b, got[kg]) {
					t.Fatalf("key group %d differs when written concurrently", kg)
				}
			}
		})
	}
}

func TestRestoreErrors(t *testing.T) {
	forBackends(t, testRestoreErrors)
}

func testRestoreErrors(t *testing.T, be string) {
	cfg := Config{Kind: Tumbling, Size: 10, KeyFields: []string{"ki"}, TimeField: "ts", Aggs: testAggs, MaxParallelism: 4, Backend: be}
	op, _ := newOp(t, cfg)
	op.Process(batchOf(t, script(1, 1)[0].rows), nil)
	s := op.Snapshot()
	kg := s.KeyGroups()[0]
	b := s.WriteKeyGroup(kg, nil)
	s.Release()
	other := cfg
	other.Size = 20
	o2, _ := newOp(t, other)
	if err := o2.Restore(kg, b); err == nil {
		t.Fatal("restored state of another window size")
	}
	o3, _ := newOp(t, cfg)
	if err := o3.Restore((kg+1)%4, b); err == nil {
		t.Fatal("restored state into the wrong key group")
	}
	if err := o3.Restore(kg, b[:len(b)-3]); err == nil {
		t.Fatal("restored truncated state")
	}
	if err := o3.Restore(kg, b); err != nil {
		t.Fatal(err)
	}
}

func TestKeyGroupMatchesHashRow(t *testing.T) {
	g := &gen{r: rand.New(rand.NewPCG(1, 2))}
	b := batchOf(t, g.rows(500, 5))
	for _, ks := range keySets {
		l, err := plan(Config{Kind: Tumbling, Size: 1, KeyFields: ks, TimeField: "ts", Aggs: []Agg{{Name: "n"}}, MaxParallelism: 1000}, testSchema)
		if err != nil {
			t.Fatal(err)
		}
		if l.intKey {
			continue
		}
		x := state.NewEncKeyer(l.keyCols, l.keyTypes, 1000)
		var p state.Keyed[string]
		x.Prepare(b, &p)
		for i := 0; i < b.Len; i++ {
			want := state.KeyGroup(state.HashRow(b, l.keyCols, i), 1000)
			if int(p.KG[i]) != want {
				t.Fatalf("%v row %d: key group %d, want %d", ks, i, p.KG[i], want)
			}
			if got, err := x.KeyGroup(p.Keys[i]); err != nil || got != want {
				t.Fatalf("%v row %d: decoded key group %d (%v), want %d", ks, i, got, err, want)
			}
		}
	}
	x := state.NewIntKeyer(0, 1000)
	var p state.Keyed[int64]
	x.Prepare(b, &p)
	for i := 0; i < b.Len; i++ {
		if want := state.KeyGroup(state.HashRow(b, []int{0}, i), 1000); int(p.KG[i]) != want {
			t.Fatalf("int key row %d: key group %d, want %d", i, p.KG[i], want)
		}
	}
}
