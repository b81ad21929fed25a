package runtime

import (
	"math"
	"testing"

	"github.com/sluice-stream/sluice/engine/row"
)

// TestEncodedRowsSize: the size the runtime counts for a source's or a
// sink's rows is the row codec's (AppendRow) to the byte.
func TestEncodedRowsSize(t *testing.T) {
	s := row.MustSchema(row.Field{Name: "i", Type: row.Int64}, row.Field{Name: "ts", Type: row.Timestamp},
		row.Field{Name: "f", Type: row.Float64}, row.Field{Name: "s", Type: row.String},
		row.Field{Name: "b", Type: row.Bytes}, row.Field{Name: "ok", Type: row.Bool})
	b := row.NewBatch(s)
	for i, v := range []int64{0, -1, 63, -64, 64, 1 << 20, math.MaxInt64, math.MinInt64} {
		if err := b.AppendRow(v, v/2, float64(i), string(make([]byte, i*40)), make([]byte, 200-i), i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	want := 0
	for i := range b.Len {
		want += len(row.AppendRow(nil, b, i))
	}
	if got := encodedRowsSize(b); got != want {
		t.Fatalf("encodedRowsSize = %d, AppendRow wrote %d", got, want)
	}
}
