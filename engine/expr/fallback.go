package expr

import (
	"fmt"

	"github.com/expr-lang/expr/vm"
	"github.com/sluice-stream/sluice/engine/row"
)

// fallback evaluates a subexpression outside the vectorized subset with
// expr-lang's own compiled program, one row at a time, with a reused
// environment and VM. Correct, and about as slow as expr-lang.
type fallback[T any] struct {
	prog *vm.Program
	text string
	refs []fieldRef // the fields the program reads
	env  map[string]any
	vm   vm.VM
	conv func(any) (T, bool)
	buf  []T
}

type fieldRef struct {
	name string
	idx  int
	typ  row.Type
}

func (n *fallback[T]) eval(c *ctx, sel []int32) ([]T, error) {
	d := scratch(&n.buf, c.n)
	one := func(i int32) error {
		for _, r := range n.refs {
			n.env[r.name] = envValue(&c.b.Cols[r.idx], int(i))
		}
		out, err := n.vm.Run(n.prog, n.env)
		if err != nil {
			return &evalError{what: n.text, row: i, msg: oneLine(err.Error())}
		}
		v, ok := n.conv(out)
		if !ok {
			return &evalError{what: n.text, row: i, msg: fmt.Sprintf("unexpected result %v (%T)", out, out)}
		}
		d[i] = v
		return nil
	}
	if sel == nil {
		for i := range int32(c.n) {
			if err := one(i); err != nil {
				return nil, err
			}
		}
	} else {
		for _, i := range sel {
			if err := one(i); err != nil {
				return nil, err
			}
		}
	}
	return d, nil
}

// envValue is the value expressions see for row i of col: int for int64 and
// timestamp, float64, string (also for bytes), bool.
func envValue(col *row.Column, i int) any {
	switch col.Type {
	case row.Int64, row.Timestamp:
		return int(col.Ints[i])
	case row.Float64:
		return col.Floats[i]
	case row.String:
		return col.Strs[i]
	case row.Bool:
		return col.Bools[i]
	case row.Bytes:
		return bytesString(col.Bytes[i])
	}
	return nil
}

// zeroValue is the env value declaring a field's type to the checker.
func zeroValue(t row.Type) any {
	switch t {
	case row.Int64, row.Timestamp:
		return 0
	case row.Float64:
		return 0.0
	case row.String, row.Bytes:
		return ""
	case row.Bool:
		return false
	}
	return nil
}

func convInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int64:
		return x, true
	case int32:
		return int64(x), true
	}
	return 0, false
}

func convFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	}
	return 0, false
}

func convString(v any) (string, bool) {
	x, ok := v.(string)
	return x, ok
}

func convBool(v any) (bool, bool) {
	x, ok := v.(bool)
	return x, ok
}
