package row

import (
	"fmt"
	"sync"
)

// DefaultBatchSize is the number of rows sources put in a batch.
const DefaultBatchSize = 1024

// Column holds one field's values for every row of a batch. Exactly one slice
// is used, chosen by Type: Ints for Int64 and Timestamp, Floats, Strs, Bools,
// Bytes for the others.
type Column struct {
	Type   Type
	Ints   []int64
	Floats []float64
	Strs   []string
	Bools  []bool
	Bytes  [][]byte
}

func (c *Column) truncate(n int) {
	switch c.Type {
	case Int64, Timestamp:
		c.Ints = c.Ints[:n]
	case Float64:
		c.Floats = c.Floats[:n]
	case String:
		clear(c.Strs[n:]) // let the strings go
		c.Strs = c.Strs[:n]
	case Bool:
		c.Bools = c.Bools[:n]
	case Bytes:
		clear(c.Bytes[n:])
		c.Bytes = c.Bytes[:n]
	}
}

// Len is the number of values in the column.
func (c *Column) Len() int {
	switch c.Type {
	case Int64, Timestamp:
		return len(c.Ints)
	case Float64:
		return len(c.Floats)
	case String:
		return len(c.Strs)
	case Bool:
		return len(c.Bools)
	case Bytes:
		return len(c.Bytes)
	}
	return 0
}

// Value returns value i boxed: int64, float64, string, bool or []byte.
func (c *Column) Value(i int) any {
	switch c.Type {
	case Int64, Timestamp:
		return c.Ints[i]
	case Float64:
		return c.Floats[i]
	case String:
		return c.Strs[i]
	case Bool:
		return c.Bools[i]
	case Bytes:
		return c.Bytes[i]
	}
	return nil
}

// AppendValue appends a boxed value, converting numeric kinds where lossless.
func (c *Column) AppendValue(v any) error {
	switch c.Type {
	case Int64, Timestamp:
		switch x := v.(type) {
		case int64:
			c.Ints = append(c.Ints, x)
		case int:
			c.Ints = append(c.Ints, int64(x))
		case float64:
			if x != float64(int64(x)) {
				return fmt.Errorf("%v is not an integer", x)
			}
			c.Ints = append(c.Ints, int64(x))
		default:
			return fmt.Errorf("%T is not %s", v, c.Type)
		}
	case Float64:
		switch x := v.(type) {
		case float64:
			c.Floats = append(c.Floats, x)
		case int64:
			c.Floats = append(c.Floats, float64(x))
		case int:
			c.Floats = append(c.Floats, float64(x))
		default:
			return fmt.Errorf("%T is not float64", v)
		}
	case String:
		x, ok := v.(string)
		if !ok {
			return fmt.Errorf("%T is not string", v)
		}
		c.Strs = append(c.Strs, x)
	case Bool:
		x, ok := v.(bool)
		if !ok {
			return fmt.Errorf("%T is not bool", v)
		}
		c.Bools = append(c.Bools, x)
	case Bytes:
		switch x := v.(type) {
		case []byte:
			c.Bytes = append(c.Bytes, x)
		case string:
			c.Bytes = append(c.Bytes, []byte(x))
		default:
			return fmt.Errorf("%T is not bytes", v)
		}
	default:
		return fmt.Errorf("column has no type")
	}
	return nil
}

// appendFrom copies value i of src (same type) to the end of c.
func (c *Column) appendFrom(src *Column, i int) {
	switch c.Type {
	case Int64, Timestamp:
		c.Ints = append(c.Ints, src.Ints[i])
	case Float64:
		c.Floats = append(c.Floats, src.Floats[i])
	case String:
		c.Strs = append(c.Strs, src.Strs[i])
	case Bool:
		c.Bools = append(c.Bools, src.Bools[i])
	case Bytes:
		c.Bytes = append(c.Bytes, src.Bytes[i])
	}
}

// keep retains the values at the given ascending positions, in place.
func (c *Column) keep(sel []int32) {
	switch c.Type {
	case Int64, Timestamp:
		for j, i := range sel {
			c.Ints[j] = c.Ints[i]
		}
	case Float64:
		for j, i := range sel {
			c.Floats[j] = c.Floats[i]
		}
	case String:
		for j, i := range sel {
			c.Strs[j] = c.Strs[i]
		}
	case Bool:
		for j, i := range sel {
			c.Bools[j] = c.Bools[i]
		}
	case Bytes:
		for j, i := range sel {
			c.Bytes[j] = c.Bytes[i]
		}
	}
	c.truncate(len(sel))
}

// Batch is a set of rows stored column by column. A batch is owned by one
// goroutine at a time: whoever is handed a batch (Collect, a channel) owns it
// and either passes it on or calls Release.
type Batch struct {
	Schema *Schema
	Cols   []Column
	Len    int
}

var pools sync.Map // *Schema -> *sync.Pool

// NewBatch returns an empty batch for s, reusing a released one if possible.
func NewBatch(s *Schema) *Batch {
	p, ok := pools.Load(s)
	if !ok {
		p, _ = pools.LoadOrStore(s, &sync.Pool{})
	}
	if b, ok := p.(*sync.Pool).Get().(*Batch); ok {
		return b
	}
	b := &Batch{Schema: s, Cols: make([]Column, len(s.Fields))}
	for i, f := range s.Fields {
		b.Cols[i].Type = f.Type
		switch f.Type {
		case Int64, Timestamp:
			b.Cols[i].Ints = make([]int64, 0, DefaultBatchSize)
		case Float64:
			b.Cols[i].Floats = make([]float64, 0, DefaultBatchSize)
		case String:
			b.Cols[i].Strs = make([]string, 0, DefaultBatchSize)
		case Bool:
			b.Cols[i].Bools = make([]bool, 0, DefaultBatchSize)
		case Bytes:
			b.Cols[i].Bytes = make([][]byte, 0, DefaultBatchSize)
		}
	}
	return b
}

// Release empties b and returns it to its schema's pool. b must not be used
// afterwards.
func (b *Batch) Release() {
	b.Reset()
	if p, ok := pools.Load(b.Schema); ok {
		p.(*sync.Pool).Put(b)
	}
}

// Reset empties the batch, keeping its capacity.
func (b *Batch) Reset() {
	for i := range b.Cols {
		b.Cols[i].truncate(0)
	}
	b.Len = 0
}

// Value returns the boxed value of column col in row i (slow path: sinks,
// tests, JSON).
func (b *Batch) Value(i, col int) any { return b.Cols[col].Value(i) }

// AppendRow appends one row of boxed values, one per field.
func (b *Batch) AppendRow(vals ...any) error {
	if len(vals) != len(b.Cols) {
		return fmt.Errorf("row has %d values, schema %s has %d fields", len(vals), b.Schema, len(b.Cols))
	}
	for i, v := range vals {
		if err := b.Cols[i].AppendValue(v); err != nil {
			for j := 0; j < i; j++ {
				b.Cols[j].truncate(b.Len)
			}
			return fmt.Errorf("field %q: %w", b.Schema.Fields[i].Name, err)
		}
	}
	b.Len++
	return nil
}

// AppendFrom copies row i of src, which must have the same schema layout.
func (b *Batch) AppendFrom(src *Batch, i int) {
	for c := range b.Cols {
		b.Cols[c].appendFrom(&src.Cols[c], i)
	}
	b.Len++
}

// Keep retains only the rows at the given ascending positions, in place.
func (b *Batch) Keep(sel []int32) {
	if len(sel) == b.Len {
		return
	}
	for c := range b.Cols {
		b.Cols[c].keep(sel)
	}
	b.Len = len(sel)
}

// SetLen fixes Len after columns were filled directly; it checks that every
// column has n values.
func (b *Batch) SetLen(n int) {
	for i := range b.Cols {
		if l := b.Cols[i].Len(); l != n {
			panic(fmt.Sprintf("row: column %q has %d values, want %d", b.Schema.Fields[i].Name, l, n))
		}
	}
	b.Len = n
}
