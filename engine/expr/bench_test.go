package expr

import (
	"fmt"
	"math/rand/v2"
	"testing"

	exprlang "github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"github.com/sluice-stream/sluice/engine/row"
)

var benchSchema = row.MustSchema(
	row.Field{Name: "id", Type: row.Int64},
	row.Field{Name: "key", Type: row.Int64},
	row.Field{Name: "ts", Type: row.Timestamp},
	row.Field{Name: "price", Type: row.Float64},
	row.Field{Name: "name", Type: row.String},
	row.Field{Name: "city", Type: row.String},
)

func benchBatch() *row.Batch {
	r := rand.New(rand.NewPCG(1, 2))
	b := row.NewBatch(benchSchema)
	cities := []string{"Berlin", "Paris", "Lisbon", "Oslo", "Rome"}
	for i := range row.DefaultBatchSize {
		b.AppendRow(int64(i), r.Int64N(1000), 1_700_000_000_000+int64(i)*37, r.Float64()*100,
			fmt.Sprintf("user-%d", r.IntN(100000)), cities[r.IntN(len(cities))])
	}
	return b
}

func reportRows(b *testing.B, rows int) {
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkFilter(b *testing.B) {
	for _, src := range []string{
		"key % 2 == 0 && id > 10",
		"price > 50.0 || city == 'Oslo'",
		"city in ['Berlin', 'Rome'] && name startsWith 'user-1'",
	} {
		b.Run(src, func(b *testing.B) {
			batch := benchBatch()
			e, err := Compile(src, benchSchema)
			if err != nil {
				b.Fatal(err)
			}
			sel := make([]int32, 0, batch.Len)
			b.ReportAllocs()
			for b.Loop() {
				sel, err = e.Select(batch, sel[:0])
				if err != nil {
					b.Fatal(err)
				}
			}
			reportRows(b, batch.Len)
		})
	}
}

// BenchmarkFilterRowByRow is the same filter run by expr-lang one row at a
// time, for comparison (what the fallback costs).
func BenchmarkFilterRowByRow(b *testing.B) {
	batch := benchBatch()
	env := map[string]any{}
	for _, f := range benchSchema.Fields {
		env[f.Name] = zeroValue(f.Type)
	}
	prog, err := exprlang.Compile("key % 2 == 0 && id > 10", exprlang.Env(env))
	if err != nil {
		b.Fatal(err)
	}
	var machine vm.VM
	b.ReportAllocs()
	for b.Loop() {
		for i := range batch.Len {
			for c, f := range benchSchema.Fields {
				env[f.Name] = envValue(&batch.Cols[c], i)
			}
			if _, err := machine.Run(prog, env); err != nil {
				b.Fatal(err)
			}
		}
	}
	reportRows(b, batch.Len)
}

func BenchmarkProject(b *testing.B) {
	for _, src := range []string{
		"id * 2 + key",
		"ts - ts % 1000",
		"price * 1.19",
		"name + '@' + city",
		"lower(city)",
		"key > 500 ? 'high' : 'low'",
	} {
		b.Run(src, func(b *testing.B) {
			batch := benchBatch()
			e, err := Compile(src, benchSchema)
			if err != nil {
				b.Fatal(err)
			}
			out := row.Column{Type: e.Type()}
			b.ReportAllocs()
			for b.Loop() {
				out.Ints, out.Floats, out.Strs = out.Ints[:0], out.Floats[:0], out.Strs[:0]
				if err := e.Eval(batch, &out); err != nil {
					b.Fatal(err)
				}
			}
			reportRows(b, batch.Len)
		})
	}
}
