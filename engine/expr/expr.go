package expr

import (
	"errors"
	"fmt"
	"strings"

	exprlang "github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/optimizer"
	"github.com/expr-lang/expr/vm"
	"github.com/sluice-stream/sluice/engine/row"
)

// Expr is a compiled expression over one input schema.
//
// An Expr owns scratch buffers that Eval and Select reuse from batch to
// batch, so it must be used by one goroutine at a time; give each goroutine
// (each subtask) its own, from Compile or Clone.
type Expr struct {
	src    string
	schema *row.Schema
	typ    row.Type
	kind   kind
	root   any        // vec[int64], vec[float64], vec[string] or boolVec
	bytes  int        // the field a Bytes-typed expression (a bare bytes field) copies, else -1
	refs   []fieldRef // fields read, checked against every batch
	prog   *vm.Program
	nfall  int
	c      ctx
}

// Compile parses and type-checks src with expr-lang against the fields of s
// and compiles it into vector kernels (see the package comment).
//
// Fields are variables typed as expr-lang sees them: int64 and timestamp
// (epoch ms) as int, float64 as float, string, bool, and bytes as string.
// The result type is Int64, Float64, String or Bool, with two refinements:
// a bare bytes field is Bytes, and an int expression that is a timestamp
// field, a timestamp plus or minus an int, or a ternary of two timestamps is
// Timestamp.
func Compile(src string, s *row.Schema) (e *Expr, err error) {
	defer func() {
		if r := recover(); r != nil { // expr-lang is not supposed to panic; if it does, say so
			e, err = nil, fmt.Errorf("cannot compile %q: internal error: %v", src, r)
		}
	}()
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("empty expression")
	}
	env := make(map[string]any, len(s.Fields))
	for _, f := range s.Fields {
		env[f.Name] = zeroValue(f.Type)
	}
	config := conf.CreateNew()
	exprlang.Env(env)(config)
	config.Check()
	tree, err := checker.ParseCheck(src, config)
	if err != nil {
		return nil, compileError(src, s, err)
	}
	if err := optimizer.Optimize(&tree.Node, config); err != nil {
		return nil, compileError(src, s, err)
	}
	prog, err := compiler.Compile(tree, config)
	if err != nil {
		return nil, compileError(src, s, err)
	}
	e = &Expr{src: src, schema: s, prog: prog, bytes: -1}

	root := tree.Node
	e.kind = kindOf(root.Type())
	switch e.kind {
	case kInt:
		e.typ = row.Int64
		if isTimestamp(root, s) {
			e.typ = row.Timestamp
		}
	case kFloat:
		e.typ = row.Float64
	case kStr:
		e.typ = row.String
		if id, ok := root.(*ast.IdentifierNode); ok {
			if i := s.Index(id.Value); i >= 0 && s.Fields[i].Type == row.Bytes {
				e.typ, e.bytes = row.Bytes, i
			}
		}
	case kBool:
		e.typ = row.Bool
	default:
		t := "unknown"
		if root.Type() != nil && root.Type().Kind() != 0 {
			t = root.Type().String()
		}
		if t == "interface {}" {
			t = "unknown"
		}
		return nil, fmt.Errorf("%q has type %s, which no column can hold: an expression must give int, float, string or bool (convert with int(), float() or string())", src, t)
	}

	b := &builder{s: s, config: config, source: tree.Source, refs: map[int]bool{}}
	r, ok := b.build(root, true)
	if !ok { // the root's type is a column type, so the fallback always works
		return nil, fmt.Errorf("cannot compile %q", src)
	}
	e.root, e.nfall = r.v, b.fallbacks
	for i, f := range s.Fields {
		if b.refs[i] || i == e.bytes {
			e.refs = append(e.refs, fieldRef{f.Name, i, f.Type})
		}
	}
	return e, nil
}

// compileError turns expr-lang's error into one that names the expression.
func compileError(src string, s *row.Schema, err error) error {
	var fe *file.Error
	if !errors.As(err, &fe) {
		return fmt.Errorf("%s in %q", oneLine(err.Error()), src)
	}
	if name, ok := strings.CutPrefix(fe.Message, "unknown name "); ok {
		return fmt.Errorf("unknown field %q in %q (the input has %s)", name, src, s)
	}
	if fe.Line > 0 {
		return fmt.Errorf("%s in %q (at %d:%d)", oneLine(fe.Message), src, fe.Line, fe.Column+1)
	}
	return fmt.Errorf("%s in %q", oneLine(fe.Message), src)
}

func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// isTimestamp reports whether an int expression denotes a point in time.
func isTimestamp(n ast.Node, s *row.Schema) bool {
	switch n := n.(type) {
	case *ast.IdentifierNode:
		i := s.Index(n.Value)
		return i >= 0 && s.Fields[i].Type == row.Timestamp
	case *ast.BinaryNode:
		l, r := isTimestamp(n.Left, s), isTimestamp(n.Right, s)
		isInt := func(x ast.Node) bool { return kindOf(x.Type()) == kInt }
		switch n.Operator {
		case "+":
			return (l && !r && isInt(n.Right)) || (r && !l && isInt(n.Left))
		case "-":
			return l && !r && isInt(n.Right)
		}
	case *ast.ConditionalNode:
		return isTimestamp(n.Exp1, s) && isTimestamp(n.Exp2, s)
	}
	return false
}

// Clone returns an independent copy with its own scratch space, for use by
// another goroutine.
func (e *Expr) Clone() *Expr {
	c, err := Compile(e.src, e.schema)
	if err != nil {
		panic(fmt.Sprintf("expr: recompiling %q: %v", e.src, err)) // it compiled before
	}
	return c
}

// Type is the type of the expression's values.
func (e *Expr) Type() row.Type { return e.typ }

// Source is the expression's text.
func (e *Expr) Source() string { return e.src }

func (e *Expr) String() string { return e.src }

// Vectorized reports whether the whole expression runs as vector kernels,
// with no part evaluated row by row by expr-lang.
func (e *Expr) Vectorized() bool { return e.nfall == 0 }

// check verifies that b has the columns the expression was compiled for.
func (e *Expr) check(b *row.Batch) error {
	for _, r := range e.refs {
		if r.idx >= len(b.Cols) {
			return fmt.Errorf("evaluating %q: batch has %d columns, field %q is column %d", e.src, len(b.Cols), r.name, r.idx)
		}
		col := &b.Cols[r.idx]
		if col.Type != r.typ && !(col.Type.IsInt() && r.typ.IsInt()) {
			return fmt.Errorf("evaluating %q: column %d is %s, but field %q was compiled as %s", e.src, r.idx, col.Type, r.name, r.typ)
		}
		if col.Len() < b.Len {
			return fmt.Errorf("evaluating %q: column %q has %d values, batch has %d rows", e.src, r.name, col.Len(), b.Len)
		}
	}
	return nil
}

func (e *Expr) wrap(err error) error {
	var ee *evalError
	if errors.As(err, &ee) && ee.what == e.src {
		return fmt.Errorf("evaluating %q: %s (row %d of the batch)", e.src, ee.msg, ee.row)
	}
	return fmt.Errorf("evaluating %q: %w", e.src, err)
}

// Eval appends b.Len values, one per row, to out, whose Type must be
// e.Type() (Int64 and Timestamp are interchangeable; an untyped column gets
// e.Type()). Strings in the result may share memory with the batch's
// strings and bytes, which are immutable.
func (e *Expr) Eval(b *row.Batch, out *row.Column) error {
	if out.Type == row.Invalid {
		out.Type = e.typ
	}
	if out.Type != e.typ && !(out.Type.IsInt() && e.typ.IsInt()) {
		return fmt.Errorf("evaluating %q: output column is %s, expression is %s", e.src, out.Type, e.typ)
	}
	if err := e.check(b); err != nil {
		return err
	}
	n := b.Len
	if n == 0 {
		return nil
	}
	if e.bytes >= 0 {
		out.Bytes = append(out.Bytes, b.Cols[e.bytes].Bytes[:n]...)
		return nil
	}
	c := &e.c
	c.b, c.n = b, n
	defer func() { c.b = nil }()
	var err error
	switch e.kind {
	case kInt:
		var v []int64
		if v, err = e.root.(vec[int64]).eval(c, nil); err == nil {
			out.Ints = append(out.Ints, v[:n]...)
		}
	case kFloat:
		var v []float64
		if v, err = e.root.(vec[float64]).eval(c, nil); err == nil {
			out.Floats = append(out.Floats, v[:n]...)
		}
	case kStr:
		var v []string
		if v, err = e.root.(vec[string]).eval(c, nil); err == nil {
			out.Strs = append(out.Strs, v[:n]...)
		}
	case kBool:
		var v []bool
		if v, err = e.root.(boolVec).eval(c, nil); err == nil {
			out.Bools = append(out.Bools, v[:n]...)
		}
	}
	if err != nil {
		return e.wrap(err)
	}
	return nil
}

// Select appends to sel the indexes of the rows of b for which the
// expression, which must be Bool, is true, in ascending order, and returns
// sel.
func (e *Expr) Select(b *row.Batch, sel []int32) ([]int32, error) {
	if e.kind != kBool {
		return sel, fmt.Errorf("%q is %s, not bool: it cannot select rows", e.src, e.typ)
	}
	if err := e.check(b); err != nil {
		return sel, err
	}
	if b.Len == 0 {
		return sel, nil
	}
	c := &e.c
	c.b, c.n = b, b.Len
	out, err := e.root.(boolVec).filter(c, nil, sel)
	c.b = nil
	if err != nil {
		return sel, e.wrap(err)
	}
	return out, nil
}
