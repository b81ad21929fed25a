// Package expr is Sluice's expression compiler: the one place where the
// expressions of job specs (the `filter` and `project` operators, and later
// others) are parsed, type-checked and turned into code that runs over row
// batches.
//
// The language is expr-lang's (github.com/expr-lang/expr): the fields of the
// input schema are variables, and expressions have literals, arithmetic
// (+ - * / % **), comparisons, && || ! (and, or, not), ?:, string
// concatenation and contains, startsWith, endsWith, matches, `in [list]`,
// and expr-lang's builtins (abs, len, lower, upper, int, float, string, …).
// expr-lang's parser and type checker do the parsing and checking, so
// expr-lang's typing rules apply: int64 and timestamp fields are int,
// float64 is float, bytes are strings, int op float is float, int / int is
// float, % needs ints. Errors name the expression: `unknown field "usr" in
// "usr == 1" (the input has {…})`, `invalid operation: + (mismatched types
// int and string) in "id + 'x'" (at 1:4)`.
//
// # How it runs
//
// Compile walks expr-lang's checked (and constant-folded) syntax tree and
// compiles the common subset into a tree of typed vector kernels, each a
// loop over a column slice ([]int64, []float64, []string, []bool) writing
// into a scratch buffer the Expr owns and reuses. The subset: fields,
// literals, unary - + ! not, + - * / % ** on ints and floats, comparisons
// on numbers, strings and bools, && || and or not with per-row short
// circuit, ?:, `in` a list of constants, string + (one allocation per batch
// for the result strings), contains, startsWith, endsWith, matches with a
// constant pattern, and the builtins abs, len, lower, upper, trim (one
// argument), int, float, string (of an int or string), ceil, floor, round.
// A filter narrows a selection vector conjunct by conjunct (Select), so
// `key % 2 == 0 && id > 10` costs a few nanoseconds per row and nothing is
// allocated per row or per batch.
//
// Anything else (member access, closures such as filter(…), let, most
// builtins, ?? …) runs as expr-lang's compiled program, row by row, for the
// smallest enclosing subexpression that has a column type; that part is as
// fast as expr-lang (some hundred times slower than the kernels) but
// correct. Vectorized reports whether an expression avoided it.
//
// Semantics follow expr-lang, and the tests compare every kernel with
// expr-lang's own evaluation. && || and ?: evaluate their right (or
// unchosen) side only on the rows that need it, so `key != 0 && 10 % key
// > 1` is fine; an integer division by zero that is reached is an error
// naming the expression and row, never a panic.
//
// # Result types
//
// Type is Int64, Float64, String or Bool, except that a bare bytes field is
// Bytes, and an int expression that is a timestamp field, a timestamp plus
// or minus an int (`ts - ts % 60000`), or a ternary of two timestamps is
// Timestamp. An expression whose type is not one of these (a list, a map,
// time.Time, or a ternary with branches of different types) does not
// compile.
//
// # Not for
//
// An Expr holds scratch space: it is for one goroutine at a time (Clone
// for another). Expressions see one row at a time: no aggregates, no state,
// no access to other rows; those are operators. There are no nulls: rows
// have a value in every field.
package expr
