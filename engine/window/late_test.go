package window

import (
	"fmt"
	"testing"

	"github.com/sluice-stream/sluice/engine/row"
)

// TestLateness walks one key through on-time, late-within-lateness
// (re-fire with the updated result) and too-late rows, for each kind.
func TestLateness(t *testing.T) {
	forBackends(t, testLateness)
}

func testLateness(t *testing.T, be string) {
	aggs := []Agg{{Name: "n", Fn: Count}, {Name: "sv", Fn: Sum, Field: "v"}}
	r := func(ts, v int64) refRow { return refRow{int64(1), "", int64(0), 0.0, false, ts, v, 0.0} }
	type step struct {
		rows     []refRow
		wm       int64
		wantLate int
		want     string // fmt of output rows
	}
	for _, c := range []struct {
		cfg   Config
		steps []step
	}{
		{Config{Kind: Tumbling, Size: 10, AllowedLateness: 5}, []step{
			{rows: []refRow{r(1, 1), r(9, 2), r(10, 4)}, wm: 8, want: "[]"},
			{wm: 9, want: "[[1 0 10 2 3]]"},
			{rows: []refRow{r(3, 10)}, wm: 9, want: "[[1 0 10 3 13]]"},    // within lateness: fires again
			{rows: []refRow{r(4, 100)}, wm: 14, want: "[[1 0 10 4 113]]"}, // fires updated, then purged (9+5 <= 14)
			{rows: []refRow{r(5, 1000)}, wm: 19, wantLate: 1, want: "[[1 10 20 1 4]]"},
		}},
		{Config{Kind: Sliding, Size: 10, Slide: 5, AllowedLateness: 2}, []step{
			{rows: []refRow{r(7, 1)}, wm: 9, want: "[[1 0 10 1 1]]"},
			{rows: []refRow{r(2, 2)}, wm: 11, want: "[[1 0 10 2 3]]"},  // [0,10) within lateness, [-5,5) past it
			{rows: []refRow{r(3, 2)}, wm: 11, wantLate: 1, want: "[]"}, // [0,10) purged at 11
			{rows: []refRow{r(6, 4)}, wm: 14, want: "[[1 5 15 2 5]]"},
			{rows: []refRow{r(6, 8)}, wm: 14, want: "[[1 5 15 3 13]]"},
			{rows: []refRow{r(1, 8)}, wm: 20, wantLate: 1, want: "[]"},
		}},
		{Config{Kind: Session, Gap: 5, AllowedLateness: 3}, []step{
			{rows: []refRow{r(0, 1), r(3, 2)}, wm: 7, want: "[[1 0 8 2 3]]"},
			{rows: []refRow{r(9, 4)}, wm: 9, want: "[]"}, // touches [0,8)? no: 9 > 8, a new session
			{rows: []refRow{r(8, 8)}, wm: 9, want: "[]"}, // touches both: merged into [0,14)
			{rows: []refRow{r(20, 1)}, wm: 13, want: "[[1 0 14 4 15]]"},
			{rows: []refRow{r(1, 100)}, wm: 24, want: "[[1 0 14 5 115] [1 20 25 1 1]]"},
			{rows: []refRow{r(2, 100)}, wm: 30, wantLate: 1, want: "[]"},
		}},
	} {
		t.Run(c.cfg.Kind.String(), func(t *testing.T) {
			cfg := c.cfg
			cfg.KeyFields, cfg.TimeField, cfg.Aggs, cfg.Backend = []string{"ki"}, "ts", aggs, be
			op, err := newOp(t, cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range c.steps {
				late := row.NewBatch(testSchema)
				if n := op.Process(batchOf(t, s.rows), late); n != s.wantLate || late.Len != n {
					t.Fatalf("step %d: %d late rows, want %d", i, n, s.wantLate)
				}
				var out []*row.Batch
				op.AdvanceWatermark(s.wm, collect(&out))
				if got := fmt.Sprint(rowsOf(out)); got != s.want {
					t.Fatalf("step %d: output %s, want %s", i, got, s.want)
				}
			}
		})
	}
}
