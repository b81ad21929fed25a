package expr

import (
	"cmp"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"unicode"
	"unicode/utf8"
	"unsafe"
)

//go:generate go run gen_kernels.go

// evalError is a failure while evaluating a row: it names the
// subexpression and the row; Expr wraps it with the whole expression.
type evalError struct {
	what string // subexpression
	row  int32
	msg  string
}

func (e *evalError) Error() string {
	return fmt.Sprintf("%s in %s (row %d of the batch)", e.msg, e.what, e.row)
}

func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// Arithmetic.

type arithOp uint8

const (
	opAdd arithOp = iota
	opSub
	opMul
	opDiv
)

// arith is + - * / over int64 or float64. At most one operand is constant
// (ac or bc set, then a or b is nil).
type arith[T number] struct {
	op     arithOp
	a, b   vec[T]
	ac, bc *T
	buf    []T
}

func (n *arith[T]) eval(c *ctx, sel []int32) ([]T, error) {
	var a, b []T
	var err error
	if n.a != nil {
		if a, err = n.a.eval(c, sel); err != nil {
			return nil, err
		}
	}
	if n.b != nil {
		if b, err = n.b.eval(c, sel); err != nil {
			return nil, err
		}
	}
	d := scratch(&n.buf, c.n)
	switch {
	case n.bc != nil:
		k := *n.bc
		switch n.op {
		case opAdd:
			addVS(d, a, k, sel)
		case opSub:
			subVS(d, a, k, sel)
		case opMul:
			mulVS(d, a, k, sel)
		case opDiv:
			divVS(d, a, k, sel)
		}
	case n.ac != nil:
		k := *n.ac
		switch n.op {
		case opAdd:
			addSV(d, k, b, sel)
		case opSub:
			subSV(d, k, b, sel)
		case opMul:
			mulSV(d, k, b, sel)
		case opDiv:
			divSV(d, k, b, sel)
		}
	default:
		switch n.op {
		case opAdd:
			addVV(d, a, b, sel)
		case opSub:
			subVV(d, a, b, sel)
		case opMul:
			mulVV(d, a, b, sel)
		case opDiv:
			divVV(d, a, b, sel)
		}
	}
	return d, nil
}

// mod is integer %: a zero divisor is an error, not a panic.
type mod struct {
	a, b   vec[int64]
	ac, bc *int64
	text   string
	buf    []int64
}

func (n *mod) eval(c *ctx, sel []int32) ([]int64, error) {
	var a, b []int64
	var err error
	if n.a != nil {
		if a, err = n.a.eval(c, sel); err != nil {
			return nil, err
		}
	}
	if n.b != nil {
		if b, err = n.b.eval(c, sel); err != nil {
			return nil, err
		}
	}
	d := scratch(&n.buf, c.n)
	bad := int32(-1)
	switch {
	case n.bc != nil:
		bad = modVS(d, a, *n.bc, sel)
	case n.ac != nil:
		bad = modSV(d, *n.ac, b, sel)
	default:
		bad = modVV(d, a, b, sel)
	}
	if bad >= 0 {
		return nil, &evalError{what: n.text, row: bad, msg: "integer divide by zero"}
	}
	return d, nil
}

func modVS(d, a []int64, k int64, sel []int32) int32 {
	switch {
	case k == 0:
		if sel == nil {
			if len(d) > 0 {
				return 0
			}
		} else if len(sel) > 0 {
			return sel[0]
		}
		return -1
	case k > 0 && k&(k-1) == 0:
		// Power of two: Go's truncated remainder without a division.
		m := k - 1
		if sel == nil {
			a = a[:len(d)]
			for i, x := range a {
				bias := (x >> 63) & m
				d[i] = ((x + bias) & m) - bias
			}
			return -1
		}
		for _, i := range sel {
			x := a[i]
			bias := (x >> 63) & m
			d[i] = ((x + bias) & m) - bias
		}
		return -1
	}
	if sel == nil {
		a = a[:len(d)]
		for i, x := range a {
			d[i] = x % k
		}
		return -1
	}
	for _, i := range sel {
		d[i] = a[i] % k
	}
	return -1
}

func modSV(d []int64, k int64, b []int64, sel []int32) int32 {
	if sel == nil {
		b = b[:len(d)]
		for i, y := range b {
			if y == 0 {
				return int32(i)
			}
			d[i] = k % y
		}
		return -1
	}
	for _, i := range sel {
		y := b[i]
		if y == 0 {
			return i
		}
		d[i] = k % y
	}
	return -1
}

func modVV(d, a, b []int64, sel []int32) int32 {
	if sel == nil {
		a, b = a[:len(d)], b[:len(d)]
		for i := range d {
			y := b[i]
			if y == 0 {
				return int32(i)
			}
			d[i] = a[i] % y
		}
		return -1
	}
	for _, i := range sel {
		y := b[i]
		if y == 0 {
			return i
		}
		d[i] = a[i] % y
	}
	return -1
}

// pow is ** (and ^).
type pow struct {
	a, b vec[float64]
	buf  []float64
}

func (n *pow) eval(c *ctx, sel []int32) ([]float64, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return nil, err
	}
	b, err := n.b.eval(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	if sel == nil {
		for i := range d {
			d[i] = math.Pow(a[i], b[i])
		}
	} else {
		for _, i := range sel {
			d[i] = math.Pow(a[i], b[i])
		}
	}
	return d, nil
}

type mapFunc[A, R any] struct {
	a   vec[A]
	f   func(A) R
	buf []R
}

func (n *mapFunc[A, R]) eval(c *ctx, sel []int32) ([]R, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	if sel == nil {
		a = a[:len(d)]
		for i, x := range a {
			d[i] = n.f(x)
		}
	} else {
		for _, i := range sel {
			d[i] = n.f(a[i])
		}
	}
	return d, nil
}

type neg[T number] struct {
	a   vec[T]
	buf []T
}

func (n *neg[T]) eval(c *ctx, sel []int32) ([]T, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	if sel == nil {
		a = a[:len(d)]
		for i, x := range a {
			d[i] = -x
		}
	} else {
		for _, i := range sel {
			d[i] = -a[i]
		}
	}
	return d, nil
}

type abs[T number] struct {
	a   vec[T]
	buf []T
}

func (n *abs[T]) eval(c *ctx, sel []int32) ([]T, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	if sel == nil {
		a = a[:len(d)]
		for i, x := range a {
			if x < 0 { // as expr-lang's abs: -0.0 and NaN pass unchanged
				x = -x
			}
			d[i] = x
		}
	} else {
		for _, i := range sel {
			x := a[i]
			if x < 0 {
				x = -x
			}
			d[i] = x
		}
	}
	return d, nil
}

type intToFloat struct {
	a   vec[int64]
	buf []float64
}

func (n *intToFloat) eval(c *ctx, sel []int32) ([]float64, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	if sel == nil {
		a = a[:len(d)]
		for i, x := range a {
			d[i] = float64(x)
		}
	} else {
		for _, i := range sel {
			d[i] = float64(a[i])
		}
	}
	return d, nil
}

type floatToInt struct {
	a   vec[float64]
	buf []int64
}

func (n *floatToInt) eval(c *ctx, sel []int32) ([]int64, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	if sel == nil {
		a = a[:len(d)]
		for i, x := range a {
			d[i] = int64(int(x))
		}
	} else {
		for _, i := range sel {
			d[i] = int64(int(a[i]))
		}
	}
	return d, nil
}

// Comparisons.

type compare[T cmp.Ordered] struct {
	op  cmpOp
	a   vec[T]
	b   vec[T] // nil when bc is set
	bc  T
	buf []bool
}

func (n *compare[T]) eval(c *ctx, sel []int32) ([]bool, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	if n.b == nil {
		cmpVS(n.op, d, a, n.bc, sel)
		return d, nil
	}
	b, err := n.b.eval(c, sel)
	if err != nil {
		return nil, err
	}
	cmpVV(n.op, d, a, b, sel)
	return d, nil
}

func (n *compare[T]) filter(c *ctx, sel, out []int32) ([]int32, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return out, err
	}
	if n.b == nil {
		return selCmpVS(n.op, out, a, n.bc, c.n, sel), nil
	}
	b, err := n.b.eval(c, sel)
	if err != nil {
		return out, err
	}
	return selCmpVV(n.op, out, a, b, c.n, sel), nil
}

// boolEq is == or != between booleans (ne set for !=).
type boolEq struct {
	ne   bool
	a, b vec[bool]
	buf  []bool
}

func (n *boolEq) eval(c *ctx, sel []int32) ([]bool, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return nil, err
	}
	b, err := n.b.eval(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	if n.ne {
		neVV(d, a, b, sel)
	} else {
		eqVV(d, a, b, sel)
	}
	return d, nil
}

func (n *boolEq) filter(c *ctx, sel, out []int32) ([]int32, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return out, err
	}
	b, err := n.b.eval(c, sel)
	if err != nil {
		return out, err
	}
	if n.ne {
		return selneVV(out, a, b, c.n, sel), nil
	}
	return seleqVV(out, a, b, c.n, sel), nil
}

// Logic.

type not struct {
	a   boolVec
	buf []bool
	tmp []int32
}

func (n *not) eval(c *ctx, sel []int32) ([]bool, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	if sel == nil {
		a = a[:len(d)]
		for i, x := range a {
			d[i] = !x
		}
	} else {
		for _, i := range sel {
			d[i] = !a[i]
		}
	}
	return d, nil
}

func (n *not) filter(c *ctx, sel, out []int32) ([]int32, error) {
	t, err := n.a.filter(c, sel, selScratch(&n.tmp, selLen(sel, c.n)))
	if err != nil {
		return out, err
	}
	n.tmp = t
	return complement(out, sel, c.n, t), nil
}

// and is && with per-row short circuit: b is evaluated only on the rows
// where a is true, unless b is safe (cannot fail, cheap), in which case
// computing it everywhere is faster and gives the same result.
type and struct {
	a, b  boolVec
	bSafe bool
	buf   []bool
	t, f  []int32
}

func (n *and) eval(c *ctx, sel []int32) ([]bool, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	if n.bSafe {
		b, err := n.b.eval(c, sel)
		if err != nil {
			return nil, err
		}
		if sel == nil {
			a, b = a[:len(d)], b[:len(d)]
			for i := range d {
				d[i] = a[i] && b[i]
			}
		} else {
			for _, i := range sel {
				d[i] = a[i] && b[i]
			}
		}
		return d, nil
	}
	m := selLen(sel, c.n)
	t, f := split(selScratch(&n.t, m), selScratch(&n.f, m), a, c.n, sel)
	n.t, n.f = t, f
	for _, i := range f {
		d[i] = false
	}
	if len(t) > 0 {
		b, err := n.b.eval(c, t)
		if err != nil {
			return nil, err
		}
		for _, i := range t {
			d[i] = b[i]
		}
	}
	return d, nil
}

func (n *and) filter(c *ctx, sel, out []int32) ([]int32, error) {
	t, err := n.a.filter(c, sel, selScratch(&n.t, selLen(sel, c.n)))
	if err != nil {
		return out, err
	}
	n.t = t
	if len(t) == 0 {
		return out, nil
	}
	return n.b.filter(c, t, out)
}

// or is || with per-row short circuit: b is evaluated only where a is false.
type or struct {
	a, b     boolVec
	bSafe    bool
	buf      []bool
	t, f, bt []int32
}

func (n *or) eval(c *ctx, sel []int32) ([]bool, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	if n.bSafe {
		b, err := n.b.eval(c, sel)
		if err != nil {
			return nil, err
		}
		if sel == nil {
			a, b = a[:len(d)], b[:len(d)]
			for i := range d {
				d[i] = a[i] || b[i]
			}
		} else {
			for _, i := range sel {
				d[i] = a[i] || b[i]
			}
		}
		return d, nil
	}
	m := selLen(sel, c.n)
	t, f := split(selScratch(&n.t, m), selScratch(&n.f, m), a, c.n, sel)
	n.t, n.f = t, f
	for _, i := range t {
		d[i] = true
	}
	if len(f) > 0 {
		b, err := n.b.eval(c, f)
		if err != nil {
			return nil, err
		}
		for _, i := range f {
			d[i] = b[i]
		}
	}
	return d, nil
}

func (n *or) filter(c *ctx, sel, out []int32) ([]int32, error) {
	m := selLen(sel, c.n)
	t, err := n.a.filter(c, sel, selScratch(&n.t, m))
	if err != nil {
		return out, err
	}
	n.t = t
	if len(t) == m {
		return append(out, t...), nil
	}
	f := complement(selScratch(&n.f, m), sel, c.n, t)
	n.f = f
	bt, err := n.b.filter(c, f, selScratch(&n.bt, len(f)))
	if err != nil {
		return out, err
	}
	n.bt = bt
	return merge(out, t, bt), nil
}

// cond is c ? a : b; each branch is evaluated only on its rows unless both
// are safe.
type cond[T any] struct {
	c    boolVec
	a, b vec[T]
	safe bool
	buf  []T
	t, f []int32
}

func (n *cond[T]) eval(c *ctx, sel []int32) ([]T, error) {
	v, err := n.c.eval(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	if n.safe {
		a, err := n.a.eval(c, sel)
		if err != nil {
			return nil, err
		}
		b, err := n.b.eval(c, sel)
		if err != nil {
			return nil, err
		}
		if sel == nil {
			v, a, b = v[:len(d)], a[:len(d)], b[:len(d)]
			for i := range d {
				if v[i] {
					d[i] = a[i]
				} else {
					d[i] = b[i]
				}
			}
		} else {
			for _, i := range sel {
				if v[i] {
					d[i] = a[i]
				} else {
					d[i] = b[i]
				}
			}
		}
		return d, nil
	}
	m := selLen(sel, c.n)
	t, f := split(selScratch(&n.t, m), selScratch(&n.f, m), v, c.n, sel)
	n.t, n.f = t, f
	if len(t) > 0 {
		a, err := n.a.eval(c, t)
		if err != nil {
			return nil, err
		}
		for _, i := range t {
			d[i] = a[i]
		}
	}
	if len(f) > 0 {
		b, err := n.b.eval(c, f)
		if err != nil {
			return nil, err
		}
		for _, i := range f {
			d[i] = b[i]
		}
	}
	return d, nil
}

// Membership in a constant list.

type inList[T comparable] struct {
	a    vec[T]
	list []T
	set  map[T]struct{} // for long lists
	buf  []bool
}

func newInList[T comparable](a vec[T], list []T) *inList[T] {
	n := &inList[T]{a: a, list: list}
	if len(list) > 8 {
		n.set = make(map[T]struct{}, len(list))
		for _, v := range list {
			n.set[v] = struct{}{}
		}
	}
	return n
}

func (n *inList[T]) has(x T) bool {
	if n.set != nil {
		_, ok := n.set[x]
		return ok
	}
	for _, v := range n.list {
		if v == x {
			return true
		}
	}
	return false
}

func (n *inList[T]) eval(c *ctx, sel []int32) ([]bool, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	if sel == nil {
		a = a[:len(d)]
		for i, x := range a {
			d[i] = n.has(x)
		}
	} else {
		for _, i := range sel {
			d[i] = n.has(a[i])
		}
	}
	return d, nil
}

func (n *inList[T]) filter(c *ctx, sel, out []int32) ([]int32, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return out, err
	}
	if sel == nil {
		for i, x := range a[:c.n] {
			if n.has(x) {
				out = append(out, int32(i))
			}
		}
		return out, nil
	}
	for _, i := range sel {
		if n.has(a[i]) {
			out = append(out, i)
		}
	}
	return out, nil
}

// Strings.

// strPred is contains, startsWith, endsWith or matches.
type strPred struct {
	f    func(s, t string) bool
	re   *regexp.Regexp // matches with a constant pattern (then b is nil)
	a, b vec[string]
	bc   string // constant right operand when b is nil and re is nil
	buf  []bool
}

func (n *strPred) test(a, b []string, i int32) bool {
	switch {
	case n.re != nil:
		return n.re.MatchString(a[i])
	case b == nil:
		return n.f(a[i], n.bc)
	}
	return n.f(a[i], b[i])
}

func (n *strPred) operands(c *ctx, sel []int32) (a, b []string, err error) {
	if a, err = n.a.eval(c, sel); err != nil {
		return nil, nil, err
	}
	if n.b != nil {
		b, err = n.b.eval(c, sel)
	}
	return a, b, err
}

func (n *strPred) eval(c *ctx, sel []int32) ([]bool, error) {
	a, b, err := n.operands(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	if sel == nil {
		for i := range int32(c.n) {
			d[i] = n.test(a, b, i)
		}
	} else {
		for _, i := range sel {
			d[i] = n.test(a, b, i)
		}
	}
	return d, nil
}

func (n *strPred) filter(c *ctx, sel, out []int32) ([]int32, error) {
	a, b, err := n.operands(c, sel)
	if err != nil {
		return out, err
	}
	if sel == nil {
		for i := range int32(c.n) {
			if n.test(a, b, i) {
				out = append(out, i)
			}
		}
		return out, nil
	}
	for _, i := range sel {
		if n.test(a, b, i) {
			out = append(out, i)
		}
	}
	return out, nil
}

// arena hands out strings carved from one byte buffer per batch. If the
// strings escape (they are the expression's result) the buffer is new for
// every batch, one allocation; otherwise it is reused.
type arena struct {
	escapes bool
	b       []byte
	off     int
}

func (a *arena) reset(size int) {
	if a.escapes || len(a.b) < size {
		a.b = make([]byte, size)
	}
	a.off = 0
}

// alloc returns n bytes to fill. If the estimate given to reset was short,
// it starts a new buffer: strings made from the old one stay valid.
func (a *arena) alloc(n int) []byte {
	if a.off+n > len(a.b) {
		a.b = make([]byte, max(n, len(a.b)))
		a.off = 0
	}
	p := a.b[a.off : a.off+n : a.off+n]
	a.off += n
	return p
}

func str(p []byte) string {
	if len(p) == 0 {
		return ""
	}
	return unsafe.String(&p[0], len(p))
}

// concat is a + b + ...: chains of + are flattened into one node.
type concat struct {
	parts []vec[string]
	vals  [][]string
	ar    arena
	buf   []string
}

func (n *concat) eval(c *ctx, sel []int32) ([]string, error) {
	if cap(n.vals) < len(n.parts) {
		n.vals = make([][]string, len(n.parts))
	}
	vals := n.vals[:len(n.parts)]
	for j, p := range n.parts {
		v, err := p.eval(c, sel)
		if err != nil {
			return nil, err
		}
		vals[j] = v
	}
	d := scratch(&n.buf, c.n)
	size := 0
	for _, v := range vals {
		if sel == nil {
			for _, s := range v[:c.n] {
				size += len(s)
			}
		} else {
			for _, i := range sel {
				size += len(v[i])
			}
		}
	}
	n.ar.reset(size)
	if sel == nil {
		for i := range d {
			d[i] = n.join(vals, i)
		}
	} else {
		for _, i := range sel {
			d[i] = n.join(vals, int(i))
		}
	}
	clear(vals) // do not keep the batch's strings
	return d, nil
}

func (n *concat) join(vals [][]string, i int) string {
	m := 0
	for _, v := range vals {
		m += len(v[i])
	}
	p := n.ar.alloc(m)
	k := 0
	for _, v := range vals {
		k += copy(p[k:], v[i])
	}
	return str(p)
}

// caseMap is lower or upper, with an ASCII fast path.
type caseMap struct {
	upper bool
	a     vec[string]
	ar    arena
	buf   []string
}

func (n *caseMap) eval(c *ctx, sel []int32) ([]string, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	size := 0
	if sel == nil {
		for _, s := range a[:c.n] {
			size += len(s)
		}
	} else {
		for _, i := range sel {
			size += len(a[i])
		}
	}
	n.ar.reset(size)
	if sel == nil {
		for i := range d {
			d[i] = n.one(a[i])
		}
	} else {
		for _, i := range sel {
			d[i] = n.one(a[i])
		}
	}
	return d, nil
}

func (n *caseMap) one(s string) string {
	from, to := byte('A'), byte('Z')
	if n.upper {
		from, to = 'a', 'z'
	}
	change := false
	for j := 0; j < len(s); j++ {
		ch := s[j]
		if ch >= utf8.RuneSelf {
			return n.mapRunes(s)
		}
		change = change || from <= ch && ch <= to
	}
	if !change {
		return s
	}
	p := n.ar.alloc(len(s))
	for j := range p {
		ch := s[j]
		if from <= ch && ch <= to {
			ch ^= 0x20
		}
		p[j] = ch
	}
	return str(p)
}

// mapRunes is strings.ToLower/ToUpper's general case, strings.Map with
// unicode.ToLower/ToUpper.
func (n *caseMap) mapRunes(s string) string {
	m := 0
	for _, r := range s {
		m += utf8.RuneLen(n.mapRune(r))
	}
	p := n.ar.alloc(m)[:0]
	for _, r := range s {
		p = utf8.AppendRune(p, n.mapRune(r))
	}
	return str(p)
}

func (n *caseMap) mapRune(r rune) rune {
	if n.upper {
		return unicode.ToUpper(r)
	}
	return unicode.ToLower(r)
}

// intString is string(int).
type intString struct {
	a   vec[int64]
	ar  arena
	buf []string
	tmp [20]byte
}

func (n *intString) eval(c *ctx, sel []int32) ([]string, error) {
	a, err := n.a.eval(c, sel)
	if err != nil {
		return nil, err
	}
	d := scratch(&n.buf, c.n)
	n.ar.reset(20 * selLen(sel, c.n))
	if sel == nil {
		for i := range d {
			d[i] = n.one(a[i])
		}
	} else {
		for _, i := range sel {
			d[i] = n.one(a[i])
		}
	}
	return d, nil
}

func (n *intString) one(x int64) string {
	t := strconv.AppendInt(n.tmp[:0], x, 10)
	p := n.ar.alloc(len(t))
	copy(p, t)
	return str(p)
}
