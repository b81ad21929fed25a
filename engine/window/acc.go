package window

import (
	"math"

	"github.com/sluice-stream/sluice/engine/row"
)

// An accumulator is accWords uint64 words in a segment's slab. Word 0 holds
// the row count in its low 63 bits and the dirty flag (updated after it was
// emitted, fire again) in bit 63; the other words hold sums, minima and
// maxima as int64 or float64 bits. Every function is mergeable, so session
// merges and restores add accumulators without rows.

const (
	dirtyBit  = uint64(1) << 63
	countMask = dirtyBit - 1
)

type opCode uint8

const (
	opSumI opCode = iota + 1
	opSumF
	opMinI
	opMinF
	opMaxI
	opMaxF
)

// updOp updates one word from one input column.
type updOp struct {
	code opCode
	col  int
	word int
}

// outOp makes one output column from an accumulator.
type outOp struct {
	fn    Fn
	typ   row.Type
	word  int
	float bool // the word holds float64 bits
}

// colRef is an updOp bound to a batch's column slices.
type colRef struct {
	updOp
	ints   []int64
	floats []float64
}

func bindOps(ops []updOp, b *row.Batch, dst []colRef) []colRef {
	dst = dst[:0]
	for _, op := range ops {
		c := &b.Cols[op.col]
		dst = append(dst, colRef{updOp: op, ints: c.Ints, floats: c.Floats})
	}
	return dst
}

// addRow folds row i into acc.
func addRow(acc []uint64, ops []colRef, i int) {
	first := acc[0]&countMask == 0
	acc[0]++
	for k := range ops {
		op := &ops[k]
		w := &acc[op.word]
		switch op.code {
		case opSumI:
			*w = uint64(int64(*w) + op.ints[i])
		case opSumF:
			*w = math.Float64bits(math.Float64frombits(*w) + op.floats[i])
		case opMinI:
			if v := op.ints[i]; first || v < int64(*w) {
				*w = uint64(v)
			}
		case opMaxI:
			if v := op.ints[i]; first || v > int64(*w) {
				*w = uint64(v)
			}
		case opMinF:
			if v := op.floats[i]; first || v < math.Float64frombits(*w) {
				*w = math.Float64bits(v)
			}
		case opMaxF:
			if v := op.floats[i]; first || v > math.Float64frombits(*w) {
				*w = math.Float64bits(v)
			}
		}
	}
}

// mergeAcc folds src into dst; the dirty flags are or-ed.
func mergeAcc(dst, src []uint64, ops []updOp) {
	sc := src[0] & countMask
	if sc == 0 {
		dst[0] |= src[0] & dirtyBit
		return
	}
	dc := dst[0] & countMask
	dst[0] = (dst[0]|src[0])&dirtyBit | (dc + sc)
	for _, op := range ops {
		d, s := &dst[op.word], src[op.word]
		switch op.code {
		case opSumI:
			*d = uint64(int64(*d) + int64(s))
		case opSumF:
			*d = math.Float64bits(math.Float64frombits(*d) + math.Float64frombits(s))
		case opMinI:
			if dc == 0 || int64(s) < int64(*d) {
				*d = s
			}
		case opMaxI:
			if dc == 0 || int64(s) > int64(*d) {
				*d = s
			}
		case opMinF:
			if dc == 0 || math.Float64frombits(s) < math.Float64frombits(*d) {
				*d = s
			}
		case opMaxF:
			if dc == 0 || math.Float64frombits(s) > math.Float64frombits(*d) {
				*d = s
			}
		}
	}
}

// appendAggs appends acc's aggregates to cols (the aggregate columns of an
// output batch).
func appendAggs(cols []row.Column, acc []uint64, outs []outOp) {
	n := acc[0] & countMask
	for k, o := range outs {
		c := &cols[k]
		w := acc[o.word]
		switch o.fn {
		case Count:
			c.Ints = append(c.Ints, int64(n))
		case Avg:
			var s float64
			if o.float {
				s = math.Float64frombits(w)
			} else {
				s = float64(int64(w))
			}
			c.Floats = append(c.Floats, s/float64(n))
		default:
			if o.float {
				c.Floats = append(c.Floats, math.Float64frombits(w))
			} else {
				c.Ints = append(c.Ints, int64(w))
			}
		}
	}
}
