package row

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"unsafe"
)

// The binary row codec. One encoding serves snapshots, state keys and values
// and (later) the network, so that a value written by one is read by all.
//
// A batch is laid out column by column, because a column of one type
// encodes and decodes in a tight loop:
//
//	version  byte (codecVersion)
//	rows     uvarint
//	columns  uvarint, then one Type byte per column
//	column data, in schema order:
//	  int64      zigzag varint per value
//	  timestamp  zigzag varint of the difference to the previous row's value
//	             (the first against 0): event times of a batch are close
//	  float64    8 bytes little endian (IEEE 754 bits) per value
//	  string     uvarint length per value, then all the bytes
//	  bytes      as string
//	  bool       bit-packed, row i in bit i%8 of byte i/8
//
// A batch is self-delimiting: DecodeBatch returns what follows it.
//
// AppendBatchPacked writes the same layout under version 2 with the
// integer columns (int64 and timestamp alike) in frame of reference
// instead of varints: a width byte w (1, 2, 4 or 8), the column's smallest
// value as 8 bytes little endian, then each value minus it in w bytes
// little endian. It is larger or smaller than varints depending on the
// values, and decodes without a branch per byte: the data plane's choice,
// where decoding costs as much as the rest of a batch's way between
// processes. DecodeBatch reads both versions.
//
// A single value (AppendValue, DecodeValue, and AppendRow for one row) uses
// the same per-type encoding without the column framing: zigzag varint for
// int64 and timestamp (no delta), 8 bytes for float64, uvarint length and
// bytes for string and bytes, one byte 0 or 1 for bool.

const (
	codecVersion       = 1
	codecVersionPacked = 2
)

// ErrCorrupt is wrapped by every decoding error caused by the input.
var ErrCorrupt = errors.New("corrupt row encoding")

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// AppendBatch appends the binary encoding of b to dst.
func AppendBatch(dst []byte, b *Batch) []byte { return appendBatch(dst, b, false) }

// AppendBatchPacked appends b with its integer columns in frame of
// reference (version 2, see above).
func AppendBatchPacked(dst []byte, b *Batch) []byte { return appendBatch(dst, b, true) }

func appendBatch(dst []byte, b *Batch, packed bool) []byte {
	n := b.Len
	if packed {
		dst = append(dst, codecVersionPacked)
	} else {
		dst = append(dst, codecVersion)
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	dst = binary.AppendUvarint(dst, uint64(len(b.Cols)))
	for i := range b.Cols {
		dst = append(dst, byte(b.Cols[i].Type))
	}
	for i := range b.Cols {
		c := &b.Cols[i]
		if packed && c.Type.IsInt() {
			dst = appendPacked(dst, c.Ints[:n])
			continue
		}
		switch c.Type {
		case Int64:
			for _, v := range c.Ints[:n] {
				dst = binary.AppendVarint(dst, v)
			}
		case Timestamp:
			var prev int64
			for _, v := range c.Ints[:n] {
				dst = binary.AppendVarint(dst, v-prev) // wraps, and so does the sum when decoding
				prev = v
			}
		case Float64:
			if littleEndian {
				dst = append(dst, float64Bytes(c.Floats[:n])...)
				break
			}
			dst = slices.Grow(dst, 8*n)
			for _, v := range c.Floats[:n] {
				dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
			}
		case String:
			strs := c.Strs[:n]
			total := 0
			dst = slices.Grow(dst, n)
			for _, s := range strs {
				if l := len(s); l < 0x80 {
					dst = append(dst, byte(l)) // most strings: a one-byte length
				} else {
					dst = binary.AppendUvarint(dst, uint64(l))
				}
				total += len(s)
			}
			dst = slices.Grow(dst, total)
			for _, s := range strs {
				dst = append(dst, s...)
			}
		case Bytes:
			total := 0
			for _, s := range c.Bytes[:n] {
				dst = binary.AppendUvarint(dst, uint64(len(s)))
				total += len(s)
			}
			dst = slices.Grow(dst, total)
			for _, s := range c.Bytes[:n] {
				dst = append(dst, s...)
			}
		case Bool:
			start := len(dst)
			dst = append(dst, make([]byte, (n+7)/8)...)
			bits := dst[start:]
			for j, v := range c.Bools[:n] {
				if v {
					bits[j>>3] |= 1 << (j & 7)
				}
			}
		}
	}
	return dst
}

// decodeVarints decodes len(out) zigzag varints from p into out, summing
// them when delta, and returns the bytes read. It refuses what
// binary.Varint refuses: a truncated varint, or one beyond 64 bits. One
// loop without a call per value: binary.Varint's costs twice as much.
func decodeVarints(p []byte, out []int64, delta bool) (int, bool) {
	i := 0
	var prev int64
	for j := range out {
		var ux uint64
		var s uint
		for k := 0; ; k++ {
			if i >= len(p) || k == binary.MaxVarintLen64 {
				return i, false
			}
			b := p[i]
			i++
			if b < 0x80 {
				if k == binary.MaxVarintLen64-1 && b > 1 {
					return i, false
				}
				ux |= uint64(b) << s
				break
			}
			ux |= uint64(b&0x7f) << s
			s += 7
		}
		x := int64(ux>>1) ^ -int64(ux&1)
		if delta {
			x += prev
			prev = x
		}
		out[j] = x
	}
	return i, true
}

// appendPacked appends vs in frame of reference: width, base, offsets.
func appendPacked(dst []byte, vs []int64) []byte {
	if len(vs) == 0 {
		return binary.LittleEndian.AppendUint64(append(dst, 1), 0)
	}
	lo, hi := vs[0], vs[0]
	for _, v := range vs[1:] {
		if v < lo {
			lo = v
		}
		if v > hi {
			hi = v
		}
	}
	span := uint64(hi) - uint64(lo) // fits: hi ≥ lo
	w := 8
	switch {
	case span < 1<<8:
		w = 1
	case span < 1<<16:
		w = 2
	case span < 1<<32:
		w = 4
	}
	dst = binary.LittleEndian.AppendUint64(append(dst, byte(w)), uint64(lo))
	start := len(dst)
	dst = slices.Grow(dst, w*len(vs))[:start+w*len(vs)]
	out := dst[start:]
	base := uint64(lo)
	switch w {
	case 1:
		for j, v := range vs {
			out[j] = byte(uint64(v) - base)
		}
	case 2:
		for j, v := range vs {
			d := uint64(v) - base
			o := out[2*j : 2*j+2]
			o[0], o[1] = byte(d), byte(d>>8)
		}
	case 4:
		out = out[:4*len(vs)] // the bounds known: checks fall out of the loop
		for j, v := range vs {
			binary.LittleEndian.PutUint32(out[4*j:4*j+4], uint32(uint64(v)-base))
		}
	default:
		for j, v := range vs {
			binary.LittleEndian.PutUint64(out[8*j:], uint64(v)-base)
		}
	}
	return dst
}

// decodePacked decodes len(out) values written by appendPacked and
// returns the bytes read.
func decodePacked(p []byte, out []int64) (int, error) {
	if len(p) < 9 {
		return 0, corrupt("truncated packed integers")
	}
	w := int(p[0])
	if w != 1 && w != 2 && w != 4 && w != 8 {
		return 0, corrupt("packed integer width %d", w)
	}
	base := binary.LittleEndian.Uint64(p[1:])
	p = p[9:]
	if len(p)/w < len(out) {
		return 0, corrupt("truncated packed integers")
	}
	switch w {
	case 1:
		for j, b := range p[:len(out)] {
			out[j] = int64(base + uint64(b))
		}
	case 2:
		p = p[:2*len(out)] // the bounds known: checks fall out of the loop
		for j := range out {
			out[j] = int64(base + (uint64(p[2*j]) | uint64(p[2*j+1])<<8))
		}
	case 4:
		p = p[:4*len(out)]
		for j := range out {
			out[j] = int64(base + uint64(binary.LittleEndian.Uint32(p[4*j:4*j+4])))
		}
	default:
		for j := range out {
			out[j] = int64(base + binary.LittleEndian.Uint64(p[8*j:]))
		}
	}
	return 9 + w*len(out), nil
}

// minBits is the fewest bits one row of a column of type t can take.
func minBits(t Type) uint64 {
	switch t {
	case Float64:
		return 64
	case Bool:
		return 1
	}
	return 8
}

// DecodeBatch decodes one batch from src and appends its rows to into,
// whose schema must have the encoded column types. It returns the bytes
// after the batch. On error, into is left as it was. Strings and byte slices
// of the decoded rows do not alias src.
func DecodeBatch(src []byte, into *Batch) (rest []byte, err error) {
	if len(src) == 0 {
		return src, corrupt("empty input")
	}
	if src[0] != codecVersion && src[0] != codecVersionPacked {
		return src, corrupt("unknown batch encoding version %d", src[0])
	}
	packed := src[0] == codecVersionPacked
	p := src[1:]
	n, k := binary.Uvarint(p)
	if k <= 0 {
		return src, corrupt("bad row count")
	}
	p = p[k:]
	ncols, k := binary.Uvarint(p)
	if k <= 0 {
		return src, corrupt("bad column count")
	}
	p = p[k:]
	if ncols != uint64(len(into.Cols)) {
		return src, corrupt("batch has %d columns, schema %s has %d", ncols, into.Schema, len(into.Cols))
	}
	if uint64(len(p)) < ncols {
		return src, corrupt("truncated column types")
	}
	var bits uint64
	for i := range into.Cols {
		if t := Type(p[i]); t != into.Cols[i].Type {
			return src, corrupt("column %d is %s, schema %s says %s", i, t, into.Schema, into.Cols[i].Type)
		}
		bits += minBits(into.Cols[i].Type)
	}
	p = p[ncols:]
	// Refuse counts the input cannot hold before allocating for them.
	if ncols == 0 {
		if n > math.MaxInt32 {
			return src, corrupt("row count %d without columns", n)
		}
	} else if n > uint64(len(p))*8 || n*bits > uint64(len(p))*8 {
		return src, corrupt("row count %d does not fit in %d bytes", n, len(p))
	}
	rows := int(n)
	for i := range into.Cols {
		if p, err = decodeColumn(p, &into.Cols[i], rows, packed); err != nil {
			for j := 0; j <= i; j++ {
				into.Cols[j].truncate(into.Len)
			}
			return src, fmt.Errorf("column %d (%s): %w", i, into.Schema.Fields[i].Name, err)
		}
	}
	into.Len += rows
	return p, nil
}

func decodeColumn(p []byte, c *Column, n int, packed bool) ([]byte, error) {
	switch c.Type {
	case Int64, Timestamp:
		c.Ints = slices.Grow(c.Ints, n)
		l := len(c.Ints)
		if packed {
			k, err := decodePacked(p, c.Ints[l:l+n])
			if err != nil {
				return p, err
			}
			c.Ints = c.Ints[:l+n]
			return p[k:], nil
		}
		k, ok := decodeVarints(p, c.Ints[l:l+n], c.Type == Timestamp)
		if !ok {
			return p, corrupt("bad varint")
		}
		c.Ints = c.Ints[:l+n]
		p = p[k:]
	case Float64:
		if len(p) < 8*n {
			return p, corrupt("truncated floats")
		}
		c.Floats = slices.Grow(c.Floats, n)
		l := len(c.Floats)
		out := c.Floats[l : l+n]
		if littleEndian {
			copy(float64Bytes(out), p[:8*n])
		} else {
			q := p[:8*n]
			for j := range out {
				out[j] = math.Float64frombits(binary.LittleEndian.Uint64(q[8*j : 8*j+8]))
			}
		}
		c.Floats = c.Floats[:l+n]
		p = p[8*n:]
	case String:
		return decodeStrings(p, c, n)
	case Bytes:
		// First pass: lengths, to find the data and copy it once.
		q := p
		total := uint64(0)
		for range n {
			l, k := binary.Uvarint(q)
			if k <= 0 {
				return p, corrupt("bad length")
			}
			q = q[k:]
			if l > uint64(len(q)) || total+l > uint64(len(q)) {
				return p, corrupt("length %d exceeds the input", l)
			}
			total += l
		}
		if total > uint64(len(q)) {
			return p, corrupt("truncated data")
		}
		data := q[:total]
		rest := q[total:]
		all := append([]byte(nil), data...)
		if all == nil {
			all = []byte{}
		}
		c.Bytes = slices.Grow(c.Bytes, n)
		off := uint64(0)
		for range n {
			l, k := binary.Uvarint(p)
			p = p[k:]
			c.Bytes = append(c.Bytes, all[off:off+l:off+l])
			off += l
		}
		p = rest
	case Bool:
		nb := (n + 7) / 8
		if len(p) < nb {
			return p, corrupt("truncated bools")
		}
		c.Bools = slices.Grow(c.Bools, n)
		for j := range n {
			c.Bools = append(c.Bools, p[j>>3]&(1<<(j&7)) != 0)
		}
		p = p[nb:]
	default:
		return p, corrupt("column has no type")
	}
	return p, nil
}

// decodeStrings decodes a string column of n values: n uvarint lengths,
// then the bytes. The bytes are copied once, into one allocation made for
// this column of this batch alone, and the strings are slices of it: a
// string outlives any buffer it was decoded from or into (the batch's reuse
// by the pool, the frame's by the data plane), the garbage collector keeping
// the allocation alive as long as one of its strings is.
func decodeStrings(p []byte, c *Column, n int) ([]byte, error) {
	// First pass: check the lengths and find the data. Nearly every
	// length takes one byte: that case goes without a call.
	i, total := 0, uint64(0)
	for range n {
		if i >= len(p) {
			return p, corrupt("bad length")
		}
		if b := p[i]; b < 0x80 {
			total += uint64(b) // ≤ 127 per value, n ≤ 8·len(p): no overflow
			i++
			continue
		}
		l, k := binary.Uvarint(p[i:])
		if k <= 0 {
			return p, corrupt("bad length")
		}
		i += k
		if l > uint64(len(p)) || total+l > uint64(len(p)) {
			return p, corrupt("length %d exceeds the input", l)
		}
		total += l
	}
	if total > uint64(len(p)-i) {
		return p, corrupt("truncated data")
	}
	lens := p[:i]
	all := string(p[i : i+int(total)]) // one allocation for the column
	rest := p[i+int(total):]

	// Second pass: the strings, by index into room made once. The lengths
	// were checked above, so each string is within all.
	c.Strs = slices.Grow(c.Strs, n)
	l0 := len(c.Strs)
	out := c.Strs[l0 : l0+n]
	base := unsafe.StringData(all)
	off, j := 0, 0
	for x := range out {
		var l int
		if b := lens[j]; b < 0x80 {
			l = int(b)
			j++
		} else {
			v, k := binary.Uvarint(lens[j:])
			l = int(v)
			j += k
		}
		if l == 0 {
			out[x] = "" // no pointer past the end of all
			continue
		}
		out[x] = unsafe.String((*byte)(unsafe.Add(unsafe.Pointer(base), off)), l)
		off += l
	}
	c.Strs = c.Strs[:l0+n]
	return rest, nil
}

// AppendValue appends value i of c in the single-value encoding.
func AppendValue(dst []byte, c *Column, i int) []byte {
	switch c.Type {
	case Int64, Timestamp:
		return binary.AppendVarint(dst, c.Ints[i])
	case Float64:
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(c.Floats[i]))
	case String:
		dst = binary.AppendUvarint(dst, uint64(len(c.Strs[i])))
		return append(dst, c.Strs[i]...)
	case Bytes:
		dst = binary.AppendUvarint(dst, uint64(len(c.Bytes[i])))
		return append(dst, c.Bytes[i]...)
	case Bool:
		if c.Bools[i] {
			return append(dst, 1)
		}
		return append(dst, 0)
	}
	return dst
}

// DecodeValue decodes one value of c's type from src, appends it to c and
// returns the bytes after it. The value does not alias src.
func DecodeValue(src []byte, c *Column) (rest []byte, err error) {
	switch c.Type {
	case Int64, Timestamp:
		v, k := binary.Varint(src)
		if k <= 0 {
			return src, corrupt("bad %s varint", c.Type)
		}
		c.Ints = append(c.Ints, v)
		return src[k:], nil
	case Float64:
		if len(src) < 8 {
			return src, corrupt("truncated float64")
		}
		c.Floats = append(c.Floats, math.Float64frombits(binary.LittleEndian.Uint64(src)))
		return src[8:], nil
	case String, Bytes:
		l, k := binary.Uvarint(src)
		if k <= 0 {
			return src, corrupt("bad %s length", c.Type)
		}
		if l > uint64(len(src)-k) {
			return src, corrupt("%s length %d exceeds the input", c.Type, l)
		}
		v := src[k : k+int(l)]
		if c.Type == String {
			c.Strs = append(c.Strs, string(v))
		} else {
			c.Bytes = append(c.Bytes, append([]byte{}, v...))
		}
		return src[k+int(l):], nil
	case Bool:
		if len(src) < 1 || src[0] > 1 {
			return src, corrupt("bad bool")
		}
		c.Bools = append(c.Bools, src[0] == 1)
		return src[1:], nil
	}
	return src, corrupt("column has no type")
}

// AppendRow appends row i of b as its values in schema order, each in the
// single-value encoding (no header: the reader knows the schema).
func AppendRow(dst []byte, b *Batch, i int) []byte {
	for c := range b.Cols {
		dst = AppendValue(dst, &b.Cols[c], i)
	}
	return dst
}

// DecodeRow decodes one row written by AppendRow and appends it to into.
// On error, into is left as it was.
func DecodeRow(src []byte, into *Batch) (rest []byte, err error) {
	p := src
	for c := range into.Cols {
		if p, err = DecodeValue(p, &into.Cols[c]); err != nil {
			for j := 0; j < c; j++ {
				into.Cols[j].truncate(into.Len)
			}
			return src, fmt.Errorf("field %q: %w", into.Schema.Fields[c].Name, err)
		}
	}
	into.Len++
	return p, nil
}
