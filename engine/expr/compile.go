package expr

import (
	"math"
	"reflect"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/sluice-stream/sluice/engine/row"
)

// kind is the value class of a vector.
type kind uint8

const (
	kNone kind = iota
	kInt
	kFloat
	kStr
	kBool
)

// kindOf maps a type from expr-lang's checker to a vector kind.
func kindOf(t reflect.Type) kind {
	if t == nil {
		return kNone
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int64:
		return kInt
	case reflect.Float64:
		return kFloat
	case reflect.String:
		return kStr
	case reflect.Bool:
		return kBool
	}
	return kNone
}

// built is a compiled node: a vec[int64], vec[float64], vec[string] or
// boolVec according to k.
type built struct {
	k     kind
	v     any
	safe  bool // cannot fail and is cheap: fine to compute on rows nobody needs
	konst bool // depends on no field: folded at compile time
}

func (r built) ints() vec[int64]     { return r.v.(vec[int64]) }
func (r built) strs() vec[string]    { return r.v.(vec[string]) }
func (r built) bools() boolVec       { return r.v.(boolVec) }
func (r built) numeric() bool        { return r.k == kInt || r.k == kFloat }
func (r built) floats() vec[float64] { return r.asFloat().v.(vec[float64]) }

// asFloat converts an int node to float (expr-lang's int op float rule).
func (r built) asFloat() built {
	if r.k != kInt {
		return r
	}
	if c, ok := r.v.(*constVec[int64]); ok {
		return mkConst(float64(c.v))
	}
	return built{k: kFloat, v: &intToFloat{a: r.ints()}, safe: r.safe, konst: r.konst}
}

// constOf returns the value of a constant node.
func constOf[T any](r built) (T, bool) {
	if c, ok := r.v.(*constVec[T]); ok {
		return c.v, true
	}
	var zero T
	return zero, false
}

func isConst(r built) bool {
	switch r.v.(type) {
	case *constVec[int64], *constVec[float64], *constVec[string], *constBool:
		return true
	}
	return false
}

func mkConst(v any) built {
	r := built{safe: true, konst: true}
	switch x := v.(type) {
	case int:
		r.k, r.v = kInt, &constVec[int64]{v: int64(x)}
	case int64:
		r.k, r.v = kInt, &constVec[int64]{v: x}
	case float64:
		r.k, r.v = kFloat, &constVec[float64]{v: x}
	case string:
		r.k, r.v = kStr, &constVec[string]{v: x}
	case bool:
		r.k, r.v = kBool, &constBool{constVec[bool]{v: x}}
	default:
		r.k = kNone
	}
	return r
}

type builder struct {
	s         *row.Schema
	config    *conf.Config
	source    file.Source
	refs      map[int]bool // columns read
	fallbacks int
}

// build compiles n into vector nodes, or, where n is outside the
// vectorized subset, into a per-row fallback running expr-lang's program
// for n. esc says whether string results may outlive the batch.
func (b *builder) build(n ast.Node, esc bool) (built, bool) {
	want := kindOf(n.Type())
	if want == kNone {
		return built{}, false
	}
	if r, ok := b.vector(n, esc); ok && r.k == want {
		return b.fold(r), true
	}
	return b.fallback(n, want)
}

// fold evaluates a node that depends on no field once, at compile time.
func (b *builder) fold(r built) built {
	if !r.konst || isConst(r) {
		return r
	}
	c := &ctx{n: 1}
	var v any
	var err error
	switch r.k {
	case kInt:
		var x []int64
		x, err = r.ints().eval(c, nil)
		if err == nil {
			v = x[0]
		}
	case kFloat:
		var x []float64
		x, err = r.v.(vec[float64]).eval(c, nil)
		if err == nil {
			v = x[0]
		}
	case kStr:
		var x []string
		x, err = r.strs().eval(c, nil)
		if err == nil {
			v = x[0]
		}
	case kBool:
		var x []bool
		x, err = r.bools().eval(c, nil)
		if err == nil {
			v = x[0]
		}
	}
	if err != nil {
		return r // fails on every row: leave it to fail at run time
	}
	return mkConst(v)
}

func (b *builder) fallback(n ast.Node, want kind) (built, bool) {
	prog, err := compiler.Compile(&parser.Tree{Node: n, Source: b.source}, b.config)
	if err != nil {
		return built{}, false
	}
	var refs []fieldRef
	all := false
	seen := map[int]bool{}
	ast.Find(n, func(x ast.Node) bool {
		if id, ok := x.(*ast.IdentifierNode); ok {
			if id.Value == "$env" {
				all = true
			} else if i := b.s.Index(id.Value); i >= 0 && !seen[i] {
				seen[i] = true
				refs = append(refs, fieldRef{id.Value, i, b.s.Fields[i].Type})
			}
		}
		return false
	})
	if all {
		refs = refs[:0]
		for i, f := range b.s.Fields {
			refs = append(refs, fieldRef{f.Name, i, f.Type})
		}
	}
	for _, r := range refs {
		b.refs[r.idx] = true
	}
	env := make(map[string]any, len(b.s.Fields))
	for _, f := range b.s.Fields {
		env[f.Name] = zeroValue(f.Type)
	}
	text := n.String()
	b.fallbacks++
	r := built{k: want}
	switch want {
	case kInt:
		r.v = &fallback[int64]{prog: prog, text: text, refs: refs, env: env, conv: convInt}
	case kFloat:
		r.v = &fallback[float64]{prog: prog, text: text, refs: refs, env: env, conv: convFloat}
	case kStr:
		r.v = &fallback[string]{prog: prog, text: text, refs: refs, env: env, conv: convString}
	case kBool:
		r.v = boolFilter{&fallback[bool]{prog: prog, text: text, refs: refs, env: env, conv: convBool}}
	}
	return r, true
}

// vector compiles the vectorized subset; false means n is outside it.
func (b *builder) vector(n ast.Node, esc bool) (built, bool) {
	switch n := n.(type) {
	case *ast.IdentifierNode:
		i := b.s.Index(n.Value)
		if i < 0 {
			return built{}, false
		}
		b.refs[i] = true
		r := built{safe: true}
		switch b.s.Fields[i].Type {
		case row.Int64, row.Timestamp:
			r.k, r.v = kInt, &colInt{i}
		case row.Float64:
			r.k, r.v = kFloat, &colFloat{i}
		case row.String:
			r.k, r.v = kStr, &colStr{i}
		case row.Bool:
			r.k, r.v = kBool, &colBool{i}
		case row.Bytes:
			r.k, r.v = kStr, &colBytes{idx: i}
		default:
			return built{}, false
		}
		return r, true
	case *ast.IntegerNode:
		return mkConst(n.Value), true
	case *ast.FloatNode:
		return mkConst(n.Value), true
	case *ast.StringNode:
		return mkConst(n.Value), true
	case *ast.BoolNode:
		return mkConst(n.Value), true
	case *ast.ConstantNode:
		r := mkConst(n.Value)
		return r, r.k != kNone
	case *ast.UnaryNode:
		return b.unary(n)
	case *ast.BinaryNode:
		return b.binary(n, esc)
	case *ast.ConditionalNode:
		return b.conditional(n, esc)
	case *ast.BuiltinNode:
		return b.builtin(n, esc)
	}
	return built{}, false
}

func (b *builder) unary(n *ast.UnaryNode) (built, bool) {
	a, ok := b.build(n.Node, false)
	if !ok {
		return built{}, false
	}
	r := built{k: a.k, safe: a.safe, konst: a.konst}
	switch {
	case (n.Operator == "!" || n.Operator == "not") && a.k == kBool:
		r.v = &not{a: a.bools()}
	case n.Operator == "-" && a.k == kInt:
		r.v = &neg[int64]{a: a.ints()}
	case n.Operator == "-" && a.k == kFloat:
		r.v = &neg[float64]{a: a.floats()}
	case n.Operator == "+" && a.numeric():
		return a, true
	default:
		return built{}, false
	}
	return r, true
}

func (b *builder) binary(n *ast.BinaryNode, esc bool) (built, bool) {
	if n.Operator == "in" {
		return b.in(n)
	}
	switch n.Operator {
	case "&&", "and", "||", "or", "+", "-", "*", "/", "%", "**", "^",
		"==", "!=", "<", "<=", ">", ">=", "contains", "startsWith", "endsWith", "matches":
	default:
		return built{}, false
	}
	l, ok := b.build(n.Left, false)
	if !ok {
		return built{}, false
	}
	r, ok := b.build(n.Right, false)
	if !ok {
		return built{}, false
	}
	out := built{safe: l.safe && r.safe, konst: l.konst && r.konst}
	switch op := n.Operator; op {
	case "&&", "and", "||", "or":
		if l.k != kBool || r.k != kBool {
			return built{}, false
		}
		out.k = kBool
		if op == "&&" || op == "and" {
			out.v = &and{a: l.bools(), b: r.bools(), bSafe: r.safe}
		} else {
			out.v = &or{a: l.bools(), b: r.bools(), bSafe: r.safe}
		}
	case "+", "-", "*", "/", "**", "^":
		if op == "+" && l.k == kStr && r.k == kStr {
			out.k, out.v, out.safe = kStr, &concat{parts: append(concatParts(l), concatParts(r)...), ar: arena{escapes: esc}}, false
			break
		}
		if !l.numeric() || !r.numeric() {
			return built{}, false
		}
		if op == "**" || op == "^" {
			out.k, out.v = kFloat, &pow{a: l.floats(), b: r.floats()}
			break
		}
		aop := map[string]arithOp{"+": opAdd, "-": opSub, "*": opMul, "/": opDiv}[op]
		if l.k == kInt && r.k == kInt && op != "/" {
			out.k, out.v = kInt, newArith(aop, l, r, func(x built) vec[int64] { return x.ints() })
		} else {
			out.k, out.v = kFloat, newArith(aop, l.asFloat(), r.asFloat(), func(x built) vec[float64] { return x.v.(vec[float64]) })
		}
	case "%":
		if l.k != kInt || r.k != kInt {
			return built{}, false
		}
		m := &mod{text: n.String()}
		lc, lok := constOf[int64](l)
		rc, rok := constOf[int64](r)
		switch {
		case rok && !lok:
			m.a, m.bc = l.ints(), &rc
		case lok && !rok:
			m.ac, m.b = &lc, r.ints()
		default:
			m.a, m.b = l.ints(), r.ints()
		}
		out.k, out.v = kInt, m
		out.safe = out.safe && rok && rc != 0
	case "==", "!=", "<", "<=", ">", ">=":
		out.k = kBool
		cop := cmpOps[op]
		switch {
		case l.k == kBool && r.k == kBool && (op == "==" || op == "!="):
			out.v = &boolEq{ne: op == "!=", a: l.bools(), b: r.bools()}
		case l.k == kInt && r.k == kInt:
			out.v = newCompare(cop, l, r, func(x built) vec[int64] { return x.ints() })
		case l.numeric() && r.numeric():
			out.v = newCompare(cop, l.asFloat(), r.asFloat(), func(x built) vec[float64] { return x.v.(vec[float64]) })
		case l.k == kStr && r.k == kStr:
			out.v = newCompare(cop, l, r, func(x built) vec[string] { return x.strs() })
		default:
			return built{}, false
		}
	case "contains", "startsWith", "endsWith", "matches":
		if l.k != kStr || r.k != kStr {
			return built{}, false
		}
		p := &strPred{a: l.strs()}
		c, isc := constOf[string](r)
		switch op {
		case "contains":
			p.f = strings.Contains
		case "startsWith":
			p.f = strings.HasPrefix
		case "endsWith":
			p.f = strings.HasSuffix
		case "matches":
			if !isc {
				return built{}, false // a pattern per row: expr-lang's way
			}
			re, err := regexp.Compile(c)
			if err != nil {
				return built{}, false
			}
			p.re = re
		}
		if isc {
			p.bc = c
		} else {
			p.b = r.strs()
		}
		out.k, out.v, out.safe = kBool, p, false
	}
	return out, true
}

func newArith[T number](op arithOp, l, r built, get func(built) vec[T]) *arith[T] {
	a := &arith[T]{op: op}
	lc, lok := constOf[T](l)
	rc, rok := constOf[T](r)
	switch {
	case rok && !lok:
		a.a, a.bc = get(l), &rc
	case lok && !rok:
		a.ac, a.b = &lc, get(r)
	default:
		a.a, a.b = get(l), get(r)
	}
	return a
}

func newCompare[T interface{ ~int64 | ~float64 | ~string }](op cmpOp, l, r built, get func(built) vec[T]) boolVec {
	c := &compare[T]{op: op}
	lc, lok := constOf[T](l)
	rc, rok := constOf[T](r)
	switch {
	case rok && !lok:
		c.a, c.bc = get(l), rc
	case lok && !rok:
		c.a, c.bc, c.op = get(r), lc, op.swap()
	default:
		c.a, c.b = get(l), get(r)
	}
	return c
}

// in is membership in a list of constants.
func (b *builder) in(n *ast.BinaryNode) (built, bool) {
	l, ok := b.build(n.Left, false)
	if !ok {
		return built{}, false
	}
	var vals []any
	switch right := n.Right.(type) {
	case *ast.ConstantNode:
		switch v := right.Value.(type) {
		case map[int]struct{}:
			for x := range v {
				vals = append(vals, x)
			}
		case map[string]struct{}:
			for x := range v {
				vals = append(vals, x)
			}
		case []any:
			vals = v
		default:
			return built{}, false
		}
	case *ast.ArrayNode:
		for _, e := range right.Nodes {
			r, ok := b.build(e, false)
			if !ok || !isConst(r) {
				return built{}, false
			}
			switch c := r.v.(type) {
			case *constVec[int64]:
				vals = append(vals, c.v)
			case *constVec[float64]:
				vals = append(vals, c.v)
			case *constVec[string]:
				vals = append(vals, c.v)
			case *constBool:
				vals = append(vals, c.v)
			}
		}
	default:
		return built{}, false
	}
	var ints []int64
	var floats []float64
	var strs []string
	var bools []bool
	for _, v := range vals {
		switch x := v.(type) {
		case int:
			ints = append(ints, int64(x))
			floats = append(floats, float64(x))
		case int64:
			ints = append(ints, x)
			floats = append(floats, float64(x))
		case float64:
			floats = append(floats, x)
		case string:
			strs = append(strs, x)
		case bool:
			bools = append(bools, x)
		default:
			return built{}, false
		}
	}
	out := built{k: kBool, safe: l.safe, konst: l.konst}
	m := len(vals)
	switch {
	case l.k == kInt && len(ints) == m:
		out.v = newInList(l.ints(), ints)
	case l.numeric() && len(floats) == m:
		out.v = newInList(l.floats(), floats)
	case l.k == kStr && len(strs) == m:
		out.v = newInList(l.strs(), strs)
	case l.k == kBool && len(bools) == m:
		out.v = newInList(l.v.(vec[bool]), bools)
	default:
		return built{}, false
	}
	return out, true
}

func (b *builder) conditional(n *ast.ConditionalNode, esc bool) (built, bool) {
	c, ok := b.build(n.Cond, false)
	if !ok || c.k != kBool {
		return built{}, false
	}
	x, ok := b.build(n.Exp1, esc)
	if !ok {
		return built{}, false
	}
	y, ok := b.build(n.Exp2, esc)
	if !ok || x.k != y.k {
		return built{}, false
	}
	safe := x.safe && y.safe
	out := built{k: x.k, safe: c.safe && safe, konst: c.konst && x.konst && y.konst}
	switch x.k {
	case kInt:
		out.v = &cond[int64]{c: c.bools(), a: x.ints(), b: y.ints(), safe: safe}
	case kFloat:
		out.v = &cond[float64]{c: c.bools(), a: x.v.(vec[float64]), b: y.v.(vec[float64]), safe: safe}
	case kStr:
		out.v = &cond[string]{c: c.bools(), a: x.strs(), b: y.strs(), safe: safe}
	case kBool:
		out.v = boolFilter{&cond[bool]{c: c.bools(), a: x.bools(), b: y.bools(), safe: safe}}
	}
	return out, true
}

func (b *builder) builtin(n *ast.BuiltinNode, esc bool) (built, bool) {
	if len(n.Arguments) != 1 || n.Map != nil {
		return built{}, false
	}
	passThrough := false
	switch n.Name {
	case "lower", "upper", "trim", "int", "float", "string":
		passThrough = true
	case "abs", "len", "ceil", "floor", "round":
	default:
		return built{}, false
	}
	a, ok := b.build(n.Arguments[0], esc && passThrough)
	if !ok {
		return built{}, false
	}
	out := built{safe: a.safe, konst: a.konst}
	switch {
	case n.Name == "abs" && a.k == kInt:
		out.k, out.v = kInt, &abs[int64]{a: a.ints()}
	case n.Name == "abs" && a.k == kFloat:
		out.k, out.v = kFloat, &abs[float64]{a: a.v.(vec[float64])}
	case n.Name == "len" && a.k == kStr:
		out.k, out.v = kInt, &mapFunc[string, int64]{a: a.strs(), f: runeCount}
	case (n.Name == "lower" || n.Name == "upper") && a.k == kStr:
		out.k, out.v, out.safe = kStr, &caseMap{upper: n.Name == "upper", a: a.strs(), ar: arena{escapes: esc}}, false
	case n.Name == "trim" && a.k == kStr:
		out.k, out.v = kStr, &mapFunc[string, string]{a: a.strs(), f: strings.TrimSpace}
	case n.Name == "int" && a.k == kInt, n.Name == "float" && a.k == kFloat, n.Name == "string" && a.k == kStr:
		return a, true
	case n.Name == "int" && a.k == kFloat:
		out.k, out.v = kInt, &floatToInt{a: a.v.(vec[float64])}
	case n.Name == "float" && a.k == kInt:
		return a.asFloat(), true
	case n.Name == "string" && a.k == kInt:
		out.k, out.v, out.safe = kStr, &intString{a: a.ints(), ar: arena{escapes: esc}}, false
	case (n.Name == "ceil" || n.Name == "floor" || n.Name == "round") && a.k == kInt:
		return a.asFloat(), true
	case (n.Name == "ceil" || n.Name == "floor" || n.Name == "round") && a.k == kFloat:
		f := map[string]func(float64) float64{"ceil": math.Ceil, "floor": math.Floor, "round": math.Round}[n.Name]
		out.k, out.v = kFloat, &mapFunc[float64, float64]{a: a.v.(vec[float64]), f: f}
	default:
		return built{}, false
	}
	return out, true
}

func runeCount(s string) int64 { return int64(utf8.RuneCountInString(s)) }

// concatParts flattens a + b + c into one concat node. An inner concat
// (never escaping: esc is false for operands) is dissolved into its parts.
func concatParts(r built) []vec[string] {
	if c, ok := r.v.(*concat); ok {
		return c.parts
	}
	return []vec[string]{r.strs()}
}
