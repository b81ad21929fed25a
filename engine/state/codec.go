package state

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Snapshot bytes, per key group, are framed the same way by every user of
// this package: a magic string that names the format and its version, then
// a fingerprint of what gives the bytes their meaning (the operator's
// configuration), then the body. The fingerprint is checked on restore, so
// state written by another configuration is refused rather than misread.

// AppendHeader appends the frame's header.
func AppendHeader(dst []byte, magic, fp string) []byte {
	dst = append(dst, magic...)
	dst = binary.AppendUvarint(dst, uint64(len(fp)))
	return append(dst, fp...)
}

// ReadHeader checks src's header and returns the body. what names the
// state in errors ("window").
func ReadHeader(src []byte, magic, fp, what string) ([]byte, error) {
	if len(src) < len(magic) || string(src[:len(magic)]) != magic {
		return nil, fmt.Errorf("not %s state (bad magic or version)", what)
	}
	src = src[len(magic):]
	n, k := binary.Uvarint(src)
	if k <= 0 || uint64(len(src)-k) < n {
		return nil, ErrShort
	}
	if got := string(src[k : k+int(n)]); got != fp {
		return nil, fmt.Errorf("state was written by another %s configuration (%s, this is %s)", what, got, fp)
	}
	return src[k+int(n):], nil
}

// AppendRecord appends a fixed-width record: word 0 as a uvarint (a count
// and flags: small), each further word as 8 bytes little-endian.
func AppendRecord(dst []byte, rec []uint64) []byte {
	dst = binary.AppendUvarint(dst, rec[0])
	for _, w := range rec[1:] {
		dst = binary.LittleEndian.AppendUint64(dst, w)
	}
	return dst
}

// Dec reads snapshot bytes; the first error sticks in Err.
type Dec struct {
	B   []byte
	Err error
}

// Uvarint reads a uvarint.
func (d *Dec) Uvarint() uint64 {
	if d.Err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.B)
	if n <= 0 {
		d.Err = ErrShort
		return 0
	}
	d.B = d.B[n:]
	return v
}

// Varint reads a varint.
func (d *Dec) Varint() int64 {
	if d.Err != nil {
		return 0
	}
	v, n := binary.Varint(d.B)
	if n <= 0 {
		d.Err = ErrShort
		return 0
	}
	d.B = d.B[n:]
	return v
}

// Record reads what AppendRecord wrote into dst.
func (d *Dec) Record(dst []uint64) {
	dst[0] = d.Uvarint()
	for i := 1; i < len(dst); i++ {
		if d.Err != nil {
			return
		}
		if len(d.B) < 8 {
			d.Err = ErrShort
			return
		}
		dst[i] = binary.LittleEndian.Uint64(d.B)
		d.B = d.B[8:]
	}
}

// Bytes reads a uvarint length and that many bytes (not copied).
func (d *Dec) Bytes() []byte {
	n := d.Uvarint()
	if d.Err != nil {
		return nil
	}
	if n > uint64(len(d.B)) {
		d.Err = ErrShort
		return nil
	}
	b := d.B[:n:n]
	d.B = d.B[n:]
	return b
}

// Count reads a count and checks it against what the rest could hold, at
// minBytes per item.
func (d *Dec) Count(minBytes int) int {
	n := d.Uvarint()
	if d.Err == nil && n > uint64(len(d.B)/minBytes) {
		d.Err = ErrShort
		return 0
	}
	return int(n)
}

// End checks that nothing is left.
func (d *Dec) End() error {
	if d.Err == nil && len(d.B) != 0 {
		d.Err = errors.New("trailing bytes")
	}
	return d.Err
}

// ReadKey reads a key (Keyer.AppendBin's form) and checks that it belongs
// to key group kg.
func ReadKey[K Key](d *Dec, kx Keyer[K], kg int) K {
	var k K
	if d.Err != nil {
		return k
	}
	k, n, err := kx.ReadBin(d.B)
	if err != nil {
		d.Err = err
		return k
	}
	d.B = d.B[n:]
	g, err := kx.KeyGroup(k)
	if err != nil {
		d.Err = err
	} else if g != kg {
		d.Err = fmt.Errorf("a key of key group %d is in the state of key group %d (another key schema or max parallelism?)", g, kg)
	}
	return k
}
