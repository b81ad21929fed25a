package expr

import (
	"slices"

	"github.com/sluice-stream/sluice/engine/row"
)

// The vector machinery. A compiled expression is a tree of nodes; each node
// computes one typed vector per batch into a scratch buffer it owns and
// reuses. Vectors are indexed by row: a node asked to compute the rows of a
// selection (ascending row numbers; nil means every row 0..n-1) writes only
// those positions and leaves the others as they were. Consumers never write
// into a vector they did not produce.
//
// Selections let && || and ?: evaluate an operand only on the rows where its
// value is needed (so `x != 0 && 10 % x > 1` cannot fail on x == 0), and let
// Select narrow a filter's rows conjunct by conjunct without materializing
// booleans.

// ctx is the batch being evaluated.
type ctx struct {
	b *row.Batch
	n int
}

// vec is a node producing values of type T.
type vec[T any] interface {
	eval(c *ctx, sel []int32) ([]T, error)
}

// boolVec is a boolean node; filter appends to out the rows of sel (nil:
// all) for which it is true, in order.
type boolVec interface {
	vec[bool]
	filter(c *ctx, sel, out []int32) ([]int32, error)
}

type number interface{ ~int64 | ~float64 }

type cmpOp uint8

const (
	op_eq cmpOp = iota
	op_ne
	op_lt
	op_le
	op_gt
	op_ge
)

var cmpOps = map[string]cmpOp{"==": op_eq, "!=": op_ne, "<": op_lt, "<=": op_le, ">": op_gt, ">=": op_ge}

// swap is the operator for swapped operands: a < b is b > a.
func (o cmpOp) swap() cmpOp {
	switch o {
	case op_lt:
		return op_gt
	case op_le:
		return op_ge
	case op_gt:
		return op_lt
	case op_ge:
		return op_le
	}
	return o
}

// scratch returns (*p)[:n], allocating once when the buffer is too small.
func scratch[T any](p *[]T, n int) []T {
	if cap(*p) < n {
		*p = make([]T, max(n, row.DefaultBatchSize))
	}
	return (*p)[:n]
}

// selScratch returns an empty, non-nil selection buffer with room for n rows.
func selScratch(p *[]int32, n int) []int32 {
	if *p == nil || cap(*p) < n {
		*p = make([]int32, 0, max(n, row.DefaultBatchSize))
	}
	return (*p)[:0]
}

// grow extends out by m positions (to be overwritten), keeping its content.
func grow(out []int32, m int) []int32 {
	return slices.Grow(out, m)[:len(out)+m]
}

// selLen is the number of rows in sel.
func selLen(sel []int32, n int) int {
	if sel == nil {
		return n
	}
	return len(sel)
}

// appendSel appends the rows of sel (nil: 0..n-1) to out.
func appendSel(out, sel []int32, n int) []int32 {
	if sel != nil {
		return append(out, sel...)
	}
	k := len(out)
	out = grow(out, n)
	for i := range n {
		out[k+i] = int32(i)
	}
	return out
}

// gatherTrue appends the rows of sel where v is true.
func gatherTrue(out []int32, v []bool, n int, sel []int32) []int32 {
	k := len(out)
	if sel == nil {
		out = grow(out, n)
		v = v[:n]
		for i, t := range v {
			out[k] = int32(i)
			if t {
				k++
			}
		}
		return out[:k]
	}
	out = grow(out, len(sel))
	for _, i := range sel {
		out[k] = i
		if v[i] {
			k++
		}
	}
	return out[:k]
}

// split appends the rows of sel where v is true to t and the others to f.
func split(t, f []int32, v []bool, n int, sel []int32) ([]int32, []int32) {
	m := selLen(sel, n)
	kt, kf := len(t), len(f)
	t, f = grow(t, m), grow(f, m)
	if sel == nil {
		v = v[:n]
		for i, x := range v {
			t[kt], f[kf] = int32(i), int32(i)
			if x {
				kt++
			} else {
				kf++
			}
		}
	} else {
		for _, i := range sel {
			t[kt], f[kf] = i, i
			if v[i] {
				kt++
			} else {
				kf++
			}
		}
	}
	return t[:kt], f[:kf]
}

// complement appends to out the rows of sel (nil: 0..n-1) that are not in
// sub, a subsequence of sel.
func complement(out, sel []int32, n int, sub []int32) []int32 {
	j := 0
	if sel == nil {
		for i := range int32(n) {
			if j < len(sub) && sub[j] == i {
				j++
				continue
			}
			out = append(out, i)
		}
		return out
	}
	for _, i := range sel {
		if j < len(sub) && sub[j] == i {
			j++
			continue
		}
		out = append(out, i)
	}
	return out
}

// merge appends the union of the disjoint ascending selections x and y.
func merge(out, x, y []int32) []int32 {
	if len(y) == 0 {
		return append(out, x...)
	}
	if len(x) == 0 {
		return append(out, y...)
	}
	i, j := 0, 0
	for i < len(x) && j < len(y) {
		if x[i] < y[j] {
			out = append(out, x[i])
			i++
		} else {
			out = append(out, y[j])
			j++
		}
	}
	out = append(out, x[i:]...)
	return append(out, y[j:]...)
}

// boolFilter gives a boolean node the default filter: evaluate, then gather.
type boolFilter struct {
	vec[bool]
}

func (f boolFilter) filter(c *ctx, sel, out []int32) ([]int32, error) {
	v, err := f.eval(c, sel)
	if err != nil {
		return out, err
	}
	return gatherTrue(out, v, c.n, sel), nil
}

// Columns.

type colInt struct{ idx int }

func (n *colInt) eval(c *ctx, _ []int32) ([]int64, error) { return c.b.Cols[n.idx].Ints[:c.n], nil }

type colFloat struct{ idx int }

func (n *colFloat) eval(c *ctx, _ []int32) ([]float64, error) {
	return c.b.Cols[n.idx].Floats[:c.n], nil
}

type colStr struct{ idx int }

func (n *colStr) eval(c *ctx, _ []int32) ([]string, error) { return c.b.Cols[n.idx].Strs[:c.n], nil }

type colBool struct{ idx int }

func (n *colBool) eval(c *ctx, _ []int32) ([]bool, error) { return c.b.Cols[n.idx].Bools[:c.n], nil }

func (n *colBool) filter(c *ctx, sel, out []int32) ([]int32, error) {
	return gatherTrue(out, c.b.Cols[n.idx].Bools, c.n, sel), nil
}

// colBytes reads a bytes column as strings (expressions see bytes as
// strings); the strings share the bytes, which are immutable in a batch.
type colBytes struct {
	idx int
	buf []string
}

func (n *colBytes) eval(c *ctx, sel []int32) ([]string, error) {
	d := scratch(&n.buf, c.n)
	src := c.b.Cols[n.idx].Bytes[:c.n]
	if sel == nil {
		for i, v := range src {
			d[i] = bytesString(v)
		}
	} else {
		for _, i := range sel {
			d[i] = bytesString(src[i])
		}
	}
	return d, nil
}

// Constants.

type constVec[T any] struct {
	v   T
	buf []T
}

func (n *constVec[T]) eval(c *ctx, _ []int32) ([]T, error) {
	if len(n.buf) < c.n {
		n.buf = make([]T, max(c.n, row.DefaultBatchSize))
		for i := range n.buf {
			n.buf[i] = n.v
		}
	}
	return n.buf[:c.n], nil
}

type constBool struct{ constVec[bool] }

func (n *constBool) filter(c *ctx, sel, out []int32) ([]int32, error) {
	if !n.v {
		return out, nil
	}
	return appendSel(out, sel, c.n), nil
}
