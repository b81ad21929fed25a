package state

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"github.com/sluice-stream/sluice/engine/row"
)

// Key is the in-memory key: an int64 for a single int64/timestamp key
// field (the fast path), otherwise the key fields encoded as a string.
type Key interface{ int64 | string }

// Keyed is one batch's keys, computed column by column before the state is
// touched.
type Keyed[K Key] struct {
	Keys []K
	KG   []int32  // key group of each row
	H    []uint32 // segment hash of each row (see Slot.H)
}

// Keyer turns rows into keys and keys back into columns and bytes.
type Keyer[K Key] interface {
	// Prepare fills p for b. String keys point into a scratch buffer that
	// the next Prepare overwrites: Clone before storing.
	Prepare(b *row.Batch, p *Keyed[K])
	SegHash(k K) uint32
	// KeyGroup is the key group of a key read back from bytes.
	KeyGroup(k K) (int, error)
	Clone(k K) K
	// AppendKey appends the key's fields to cols (one per key field).
	AppendKey(cols []row.Column, k K)
	// AppendBin and ReadBin are the key's form in snapshots: a varint for
	// int64 keys, uvarint length and bytes for the others.
	AppendBin(dst []byte, k K) []byte
	ReadBin(src []byte) (k K, n int, err error)
	// MemSize is the key's heap size.
	MemSize(k K) int
}

// ErrShort is the error of truncated state bytes.
var ErrShort = errors.New("state: truncated state")

// NewIntKeyer is the keyer of a single int64 or timestamp key field, at
// column col.
func NewIntKeyer(col, maxParallelism int) Keyer[int64] {
	return &intKeyer{col: col, maxPar: uint64(maxParallelism)}
}

// NewEncKeyer is the keyer of any other key: the fields at cols, of
// types, in the order-preserving encoding below.
func NewEncKeyer(cols []int, types []row.Type, maxParallelism int) Keyer[string] {
	return &encKeyer{cols: cols, types: types, maxPar: uint64(maxParallelism)}
}

// intKeyer: a single int64 or timestamp key field. Its hash is
// HashInt, which is what HashRow gives for one int column.
type intKeyer struct {
	col    int
	maxPar uint64
}

func (x *intKeyer) Prepare(b *row.Batch, p *Keyed[int64]) {
	n := b.Len
	keys := b.Cols[x.col].Ints[:n]
	p.Keys = keys
	p.KG = Grow(p.KG, n)[:n]
	p.H = Grow(p.H, n)[:n]
	kgs, hs := p.KG[:len(keys)], p.H[:len(keys)]
	if x.maxPar&(x.maxPar-1) == 0 {
		mask := x.maxPar - 1
		for i, k := range keys {
			h := HashInt(k)
			hs[i] = uint32(h >> 32)
			kgs[i] = int32(h & mask)
		}
		return
	}
	for i, k := range keys {
		h := HashInt(k)
		hs[i] = uint32(h >> 32)
		kgs[i] = int32(h % x.maxPar)
	}
}

func (x *intKeyer) SegHash(k int64) uint32 { return uint32(HashInt(k) >> 32) }
func (x *intKeyer) KeyGroup(k int64) (int, error) {
	return int(HashInt(k) % x.maxPar), nil
}
func (x *intKeyer) Clone(k int64) int64                  { return k }
func (x *intKeyer) AppendKey(cols []row.Column, k int64) { cols[0].Ints = append(cols[0].Ints, k) }
func (x *intKeyer) AppendBin(dst []byte, k int64) []byte { return binary.AppendVarint(dst, k) }
func (x *intKeyer) MemSize(int64) int                    { return 8 }
func (x *intKeyer) ReadBin(src []byte) (int64, int, error) {
	k, n := binary.Varint(src)
	if n <= 0 {
		return 0, 0, ErrShort
	}
	return k, n, nil
}

// encKeyer: any other key. The encoding is order-preserving (byte order of
// the strings is the natural order of the key tuples), so sorting encoded
// keys sorts output by key:
//
//	int64, timestamp  8 bytes big-endian, sign bit flipped
//	float64           8 bytes big-endian, sign-magnitude made monotonic
//	bool              1 byte
//	string, bytes     the bytes; unless last, 0x00 escaped as 0x00 0xFF and
//	                  ended by 0x00 0x00
type encKeyer struct {
	cols   []int
	types  []row.Type
	maxPar uint64
	buf    []byte
	offs   []int
}

func (x *encKeyer) Prepare(b *row.Batch, p *Keyed[string]) {
	n := b.Len
	p.KG = Grow(p.KG, n)
	p.H = Grow(p.H, n)
	p.Keys = Grow(p.Keys, n)
	x.offs = Grow(x.offs, n+1)
	x.buf = x.buf[:0]
	for i := 0; i < n; i++ {
		x.offs[i] = len(x.buf)
		x.buf = x.encodeRow(x.buf, b, i)
		p.KG[i] = int32(HashRow(b, x.cols, i) % x.maxPar)
	}
	x.offs[n] = len(x.buf)
	for i := 0; i < n; i++ {
		a, e := x.offs[i], x.offs[i+1]
		if a == e {
			p.Keys[i] = ""
		} else {
			// Points into x.buf, valid until the next prepare: lookups do
			// not retain it, inserts clone it.
			p.Keys[i] = unsafe.String(&x.buf[a], e-a)
		}
		p.H[i] = uint32(xxhash.Sum64String(p.Keys[i]) >> 32)
	}
}

func (x *encKeyer) encodeRow(dst []byte, b *row.Batch, i int) []byte {
	last := len(x.cols) - 1
	for n, c := range x.cols {
		col := &b.Cols[c]
		switch col.Type {
		case row.Int64, row.Timestamp:
			dst = binary.BigEndian.AppendUint64(dst, uint64(col.Ints[i])^(1<<63))
		case row.Float64:
			dst = binary.BigEndian.AppendUint64(dst, FloatOrder(col.Floats[i]))
		case row.Bool:
			v := byte(0)
			if col.Bools[i] {
				v = 1
			}
			dst = append(dst, v)
		case row.String:
			dst = appendEscaped(dst, col.Strs[i], n == last)
		case row.Bytes:
			dst = appendEscaped(dst, unsafe.String(unsafe.SliceData(col.Bytes[i]), len(col.Bytes[i])), n == last)
		}
	}
	return dst
}

// FloatOrder maps a float64 to a uint64 of the same order.
func FloatOrder(f float64) uint64 {
	u := math.Float64bits(f)
	if u&(1<<63) != 0 {
		return ^u
	}
	return u | 1<<63
}

// FloatUnorder inverts FloatOrder.
func FloatUnorder(u uint64) float64 {
	if u&(1<<63) != 0 {
		return math.Float64frombits(u &^ (1 << 63))
	}
	return math.Float64frombits(^u)
}

func appendEscaped(dst []byte, s string, last bool) []byte {
	if last {
		return append(dst, s...)
	}
	for {
		j := strings.IndexByte(s, 0)
		if j < 0 {
			break
		}
		dst = append(dst, s[:j+1]...)
		dst = append(dst, 0xFF)
		s = s[j+1:]
	}
	dst = append(dst, s...)
	return append(dst, 0, 0)
}

// field decodes the field of type t at the front of k; it returns the
// field's value as a string (for string and bytes fields; a substring of k
// when nothing was escaped) or its 8/1 raw bytes, and the rest of k.
func cutField(k string, t row.Type, last bool) (v string, rest string, ok bool) {
	switch t {
	case row.Int64, row.Timestamp, row.Float64:
		if len(k) < 8 {
			return "", "", false
		}
		return k[:8], k[8:], true
	case row.Bool:
		if len(k) < 1 {
			return "", "", false
		}
		return k[:1], k[1:], true
	case row.String, row.Bytes:
		if last {
			return k, "", true
		}
		var sb []byte
		s := k
		for {
			j := strings.IndexByte(s, 0)
			if j < 0 || j+1 >= len(s) {
				return "", "", false
			}
			switch s[j+1] {
			case 0:
				if sb == nil {
					return k[:len(k)-len(s)+j], s[j+2:], true
				}
				sb = append(sb, s[:j]...)
				return string(sb), s[j+2:], true
			case 0xFF:
				sb = append(sb, s[:j+1]...)
				s = s[j+2:]
			default:
				return "", "", false
			}
		}
	}
	return "", "", false
}

func (x *encKeyer) SegHash(k string) uint32 { return uint32(xxhash.Sum64String(k) >> 32) }
func (x *encKeyer) Clone(k string) string   { return strings.Clone(k) }
func (x *encKeyer) MemSize(k string) int    { return 16 + len(k) }

// keyGroup decodes k and hashes the fields as HashRow does.
func (x *encKeyer) KeyGroup(k string) (int, error) {
	var h uint64
	last := len(x.types) - 1
	for n, t := range x.types {
		v, rest, ok := cutField(k, t, n == last)
		if !ok {
			return 0, errors.New("state: malformed key")
		}
		k = rest
		var fh uint64
		switch t {
		case row.Int64, row.Timestamp:
			fh = HashInt(int64(be64(v) ^ (1 << 63)))
		case row.Float64:
			fh = HashInt(int64(math.Float64bits(FloatUnorder(be64(v)))))
		case row.String, row.Bytes:
			fh = xxhash.Sum64String(v)
		case row.Bool:
			fh = HashInt(int64(v[0]))
		}
		if n == 0 {
			h = fh
		} else {
			h = h*0x9e3779b97f4a7c15 ^ fh
		}
	}
	if k != "" {
		return 0, errors.New("state: malformed key")
	}
	return int(h % x.maxPar), nil
}

func (x *encKeyer) AppendKey(cols []row.Column, k string) {
	last := len(x.types) - 1
	for n, t := range x.types {
		v, rest, _ := cutField(k, t, n == last)
		k = rest
		c := &cols[n]
		switch t {
		case row.Int64, row.Timestamp:
			c.Ints = append(c.Ints, int64(be64(v)^(1<<63)))
		case row.Float64:
			c.Floats = append(c.Floats, FloatUnorder(be64(v)))
		case row.Bool:
			c.Bools = append(c.Bools, v[0] != 0)
		case row.String:
			c.Strs = append(c.Strs, v)
		case row.Bytes:
			c.Bytes = append(c.Bytes, []byte(v))
		}
	}
}

func be64(s string) uint64 {
	_ = s[7]
	return uint64(s[7]) | uint64(s[6])<<8 | uint64(s[5])<<16 | uint64(s[4])<<24 |
		uint64(s[3])<<32 | uint64(s[2])<<40 | uint64(s[1])<<48 | uint64(s[0])<<56
}

func (x *encKeyer) AppendBin(dst []byte, k string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(k)))
	return append(dst, k...)
}

func (x *encKeyer) ReadBin(src []byte) (string, int, error) {
	l, n := binary.Uvarint(src)
	if n <= 0 || uint64(len(src)-n) < l {
		return "", 0, ErrShort
	}
	return string(src[n : n+int(l)]), n + int(l), nil
}

// Grow returns s with length n, reusing its array when it is big enough.
func Grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n, n+n/4)
	}
	return s[:n]
}
