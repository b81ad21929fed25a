package window

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-stream/sluice/engine/row"
)

// The reference model keeps every row of every (key, window) and recomputes
// aggregates from scratch: the naive operator with the same semantics.

var testSchema = row.MustSchema(
	row.Field{Name: "ki", Type: row.Int64},
	row.Field{Name: "ks", Type: row.String},
	row.Field{Name: "kt", Type: row.Timestamp},
	row.Field{Name: "kf", Type: row.Float64},
	row.Field{Name: "kb", Type: row.Bool},
	row.Field{Name: "ts", Type: row.Timestamp},
	row.Field{Name: "v", Type: row.Int64},
	row.Field{Name: "f", Type: row.Float64},
)

var testAggs = []Agg{
	{Name: "n", Fn: Count},
	{Name: "sv", Fn: Sum, Field: "v"},
	{Name: "sf", Fn: Sum, Field: "f"},
	{Name: "minv", Fn: Min, Field: "v"},
	{Name: "maxv", Fn: Max, Field: "v"},
	{Name: "minf", Fn: Min, Field: "f"},
	{Name: "maxf", Fn: Max, Field: "f"},
	{Name: "av", Fn: Avg, Field: "v"},
	{Name: "af", Fn: Avg, Field: "f"},
	{Name: "maxts", Fn: Max, Field: "ts"},
}

type refRow []any // values in testSchema order

type refWin struct {
	key        string // encoded for ordering
	keyVals    []any
	start, end int64
	rows       []refRow
	dirty      bool
}

type refModel struct {
	cfg      Config
	keyCols  []int
	wm       int64
	wins     map[[3]any]*refWin // (key, start, end) for tumbling/sliding
	sessions map[string][]*refWin
	late     int
	lateRows []refRow
}

func newRef(cfg Config) *refModel {
	m := &refModel{cfg: cfg, wm: math.MinInt64, wins: map[[3]any]*refWin{}, sessions: map[string][]*refWin{}}
	for _, k := range cfg.KeyFields {
		m.keyCols = append(m.keyCols, testSchema.Index(k))
	}
	return m
}

func (m *refModel) keyOf(r refRow) (string, []any) {
	var vals []any
	var sb strings.Builder
	for _, c := range m.keyCols {
		vals = append(vals, r[c])
		fmt.Fprintf(&sb, "%v|", r[c])
	}
	return sb.String(), vals
}

func (m *refModel) process(rows []refRow) {
	L := m.cfg.AllowedLateness
	for _, r := range rows {
		ts := r[5].(int64)
		key, kv := m.keyOf(r)
		if m.cfg.Kind == Session {
			m.addSession(key, kv, ts, r)
			continue
		}
		var starts []int64
		if m.cfg.Kind == Tumbling {
			starts = []int64{ts - floorMod(ts, m.cfg.Size)}
		} else {
			for s := ts - floorMod(ts, m.cfg.Slide); s > ts-m.cfg.Size; s -= m.cfg.Slide {
				starts = append(starts, s)
			}
		}
		in := false
		for _, s := range starts {
			e := s + m.cfg.Size
			if e-1+L <= m.wm {
				continue
			}
			in = true
			id := [3]any{key, s, e}
			w := m.wins[id]
			if w == nil {
				w = &refWin{key: key, keyVals: kv, start: s, end: e}
				m.wins[id] = w
			}
			w.rows = append(w.rows, r)
			if e-1 <= m.wm {
				w.dirty = true
			}
		}
		if !in {
			m.late++
			m.lateRows = append(m.lateRows, r)
		}
	}
}

func (m *refModel) addSession(key string, kv []any, ts int64, r refRow) {
	start, end := ts, ts+m.cfg.Gap
	var keep, merged []*refWin
	for _, s := range m.sessions[key] {
		if s.start <= end && start <= s.end {
			merged = append(merged, s)
		} else {
			keep = append(keep, s)
		}
	}
	if len(merged) == 0 && end-1+m.cfg.AllowedLateness <= m.wm {
		m.late++
		m.lateRows = append(m.lateRows, r)
		return
	}
	n := &refWin{key: key, keyVals: kv, start: start, end: end, rows: []refRow{r}, dirty: true}
	for _, s := range merged {
		n.start, n.end = min(n.start, s.start), max(n.end, s.end)
		n.rows = append(n.rows, s.rows...)
	}
	m.sessions[key] = append(keep, n)
}

// advance returns the output rows in the operator's order.
func (m *refModel) advance(wm int64) [][]any {
	old := m.wm
	m.wm = max(m.wm, wm)
	wm = m.wm
	L := m.cfg.AllowedLateness
	var out []*refWin
	if m.cfg.Kind == Session {
		for k, ss := range m.sessions {
			var keep []*refWin
			for _, s := range ss {
				if s.dirty && s.end-1 <= wm {
					out = append(out, s)
					s.dirty = false
				}
				if s.end-1+L > wm {
					keep = append(keep, s)
				}
			}
			if len(keep) == 0 {
				delete(m.sessions, k)
			} else {
				m.sessions[k] = keep
			}
		}
	} else {
		for id, w := range m.wins {
			if w.end-1 <= wm && (w.end-1 > old || w.dirty) {
				out = append(out, w)
				w.dirty = false
			}
			if w.end-1+L <= wm {
				delete(m.wins, id)
			}
		}
	}
	slices.SortFunc(out, func(a, b *refWin) int {
		if c := cmp.Compare(a.end, b.end); c != 0 {
			return c
		}
		return compareKeys(a.keyVals, b.keyVals)
	})
	var res [][]any
	for _, w := range out {
		res = append(res, w.result())
	}
	return res
}

func compareKeys(a, b []any) int {
	for i := range a {
		var c int
		switch x := a[i].(type) {
		case int64:
			c = cmp.Compare(x, b[i].(int64))
		case float64:
			c = cmp.Compare(x, b[i].(float64))
		case string:
			c = strings.Compare(x, b[i].(string))
		case bool:
			y := b[i].(bool)
			if x != y {
				c = 1
				if !x {
					c = -1
				}
			}
		}
		if c != 0 {
			return c
		}
	}
	return 0
}

func (w *refWin) result() []any {
	res := append([]any{}, w.keyVals...)
	res = append(res, w.start, w.end)
	n := int64(len(w.rows))
	var sv, minv, maxv, maxts int64
	var sf, minf, maxf float64
	for i, r := range w.rows {
		v, f, ts := r[6].(int64), r[7].(float64), r[5].(int64)
		sv += v
		sf += f
		if i == 0 || v < minv {
			minv = v
		}
		if i == 0 || v > maxv {
			maxv = v
		}
		if i == 0 || f < minf {
			minf = f
		}
		if i == 0 || f > maxf {
			maxf = f
		}
		if i == 0 || ts > maxts {
			maxts = ts
		}
	}
	return append(res, n, sv, sf, minv, maxv, minf, maxf, float64(sv)/float64(n), sf/float64(n), maxts)
}

// batchOf builds an input batch.
func batchOf(t testing.TB, rows []refRow) *row.Batch {
	b := row.NewBatch(testSchema)
	for _, r := range rows {
		if err := b.AppendRow(r...); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// rowsOf flattens output batches (and releases them).
func rowsOf(bs []*row.Batch) [][]any {
	var res [][]any
	for _, b := range bs {
		for i := 0; i < b.Len; i++ {
			r := make([]any, len(b.Cols))
			for c := range b.Cols {
				r[c] = b.Value(i, c)
				if bb, ok := r[c].([]byte); ok {
					r[c] = string(bb)
				}
			}
			res = append(res, r)
		}
		b.Release()
	}
	return res
}

func keyValsOfRow(r refRow, cols []int) []any {
	var vals []any
	for _, c := range cols {
		vals = append(vals, r[c])
	}
	return vals
}

func sameRows(t *testing.T, what string, got, want [][]any) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d rows, want %d\n got %v\nwant %v", what, len(got), len(want), head(got), head(want))
	}
	for i := range got {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("%s: row %d = %v, want %v", what, i, got[i], want[i])
		}
		for c := range got[i] {
			if !sameVal(got[i][c], want[i][c]) {
				t.Fatalf("%s: row %d col %d = %v, want %v\n got %v\nwant %v", what, i, c, got[i][c], want[i][c], got[i], want[i])
			}
		}
	}
}

func sameVal(a, b any) bool {
	fa, ok1 := a.(float64)
	fb, ok2 := b.(float64)
	if ok1 && ok2 {
		return fa == fb || math.Abs(fa-fb) <= 1e-9*math.Max(math.Abs(fa), math.Abs(fb))
	}
	return a == b
}

func head(r [][]any) [][]any {
	if len(r) > 8 {
		return r[:8]
	}
	return r
}
