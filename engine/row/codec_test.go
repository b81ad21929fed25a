package row

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

var allTypes = MustSchema(
	Field{"i", Int64},
	Field{"f", Float64},
	Field{"s", String},
	Field{"b", Bool},
	Field{"y", Bytes},
	Field{"ts", Timestamp},
)

func randomBatch(r *rand.Rand, n int) *Batch {
	b := &Batch{Schema: allTypes, Cols: make([]Column, len(allTypes.Fields))}
	for i, f := range allTypes.Fields {
		b.Cols[i].Type = f.Type
	}
	ints := []int64{0, 1, -1, math.MaxInt64, math.MinInt64, 1 << 40}
	floats := []float64{0, math.Copysign(0, -1), 1.5, -3, math.Inf(1), math.Inf(-1), math.MaxFloat64, math.SmallestNonzeroFloat64, 1e-7, 1e21, 0.1}
	strs := []string{"", "a", "héllo", "quote\"back\\slash", "ctl\x01\n\t", "\u2028", "日本語"}
	ts := int64(1_700_000_000_000)
	for range n {
		var i int64
		if r.IntN(3) == 0 {
			i = ints[r.IntN(len(ints))]
		} else {
			i = r.Int64() >> r.IntN(64)
			if r.IntN(2) == 0 {
				i = -i
			}
		}
		f := floats[r.IntN(len(floats))]
		if r.IntN(2) == 0 {
			f = r.NormFloat64() * math.Pow(10, float64(r.IntN(40)-20))
		}
		y := make([]byte, r.IntN(5))
		for j := range y {
			y[j] = byte(r.IntN(256))
		}
		ts += int64(r.IntN(2000) - 500)
		if err := b.AppendRow(i, f, strs[r.IntN(len(strs))], r.IntN(2) == 0, y, ts); err != nil {
			panic(err)
		}
	}
	return b
}

// sameRows compares batches value by value; floats by their bits so that NaN
// and -0 count.
func sameRows(t testing.TB, got, want *Batch) {
	t.Helper()
	if got.Len != want.Len {
		t.Fatalf("Len = %d, want %d", got.Len, want.Len)
	}
	for c := range want.Cols {
		for i := 0; i < want.Len; i++ {
			g, w := got.Value(i, c), want.Value(i, c)
			if gf, ok := g.(float64); ok {
				if math.Float64bits(gf) != math.Float64bits(w.(float64)) {
					t.Fatalf("row %d col %d: %v, want %v", i, c, g, w)
				}
				continue
			}
			if gb, ok := g.([]byte); ok {
				if !bytes.Equal(gb, w.([]byte)) {
					t.Fatalf("row %d col %d: %q, want %q", i, c, g, w)
				}
				continue
			}
			if g != w {
				t.Fatalf("row %d col %d: %#v, want %#v", i, c, g, w)
			}
		}
	}
}

// The two layouts of a batch: varints (AppendBatch) and packed integers.
var encoders = []struct {
	name string
	fn   func([]byte, *Batch) []byte
}{{"varint", AppendBatch}, {"packed", AppendBatchPacked}}

func TestBatchRoundTrip(t *testing.T) {
	for _, e := range encoders {
		t.Run(e.name, func(t *testing.T) { testBatchRoundTrip(t, e.fn) })
	}
}

func testBatchRoundTrip(t *testing.T, appendBatch func([]byte, *Batch) []byte) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 7, 8, 9, 100, 1000} {
		b := randomBatch(r, n)
		enc := appendBatch([]byte("prefix"), b)
		enc = append(enc, "tail"...)
		into := NewBatch(allTypes)
		rest, err := DecodeBatch(enc[len("prefix"):], into)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if string(rest) != "tail" {
			t.Fatalf("n=%d: rest = %q", n, rest)
		}
		sameRows(t, into, b)
		// Appends to a non-empty batch.
		if _, err := DecodeBatch(enc[len("prefix"):], into); err != nil {
			t.Fatal(err)
		}
		if into.Len != 2*n {
			t.Fatalf("Len after second decode = %d", into.Len)
		}
	}
}

func TestBatchEncodingIsCompact(t *testing.T) {
	s := MustSchema(Field{"k", Int64}, Field{"ts", Timestamp}, Field{"ok", Bool})
	b := NewBatch(s)
	for i := range 1000 {
		b.AppendRow(int64(i%50), int64(1_700_000_000_000+i), i%2 == 0)
	}
	enc := AppendBatch(nil, b)
	// 1 byte per key, ~1 per timestamp delta (after the first), 1 bit per bool.
	if len(enc) > 1000+1000+8+125+16 {
		t.Errorf("1000 rows take %d bytes", len(enc))
	}
}

// Packed integer columns take the width their values span.
func TestPackedWidths(t *testing.T) {
	s := MustSchema(Field{"i", Int64})
	for _, c := range []struct {
		vals  []int64
		width int
	}{
		{[]int64{5, 5, 5}, 1},
		{[]int64{-3, 252}, 1},
		{[]int64{-3, 253}, 2},
		{[]int64{1 << 40, 1<<40 + 70000}, 4},
		{[]int64{math.MinInt64, math.MaxInt64, 0}, 8},
	} {
		b := NewBatch(s)
		for _, v := range c.vals {
			b.AppendRow(v)
		}
		enc := AppendBatchPacked(nil, b)
		if want := 4 + 9 + c.width*len(c.vals); len(enc) != want {
			t.Errorf("%v: %d bytes, want %d", c.vals, len(enc), want)
		}
		into := NewBatch(s)
		if _, err := DecodeBatch(enc, into); err != nil {
			t.Fatal(err)
		}
		sameRows(t, into, b)
	}
	bad := AppendBatchPacked(nil, NewBatch(s))
	bad[4] = 3 // width
	if _, err := DecodeBatch(bad, NewBatch(s)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("width 3: err = %v", err)
	}
}

func TestDecodeBatchErrors(t *testing.T) {
	for _, e := range encoders {
		t.Run(e.name, func(t *testing.T) { testDecodeBatchErrors(t, e.fn) })
	}
}

func testDecodeBatchErrors(t *testing.T, appendBatch func([]byte, *Batch) []byte) {
	b := randomBatch(rand.New(rand.NewPCG(3, 4)), 50)
	enc := appendBatch(nil, b)
	other := MustSchema(Field{"i", Int64}, Field{"f", Float64})
	if _, err := DecodeBatch(enc, NewBatch(other)); err == nil || !errors.Is(err, ErrCorrupt) {
		t.Errorf("wrong schema: err = %v", err)
	}
	swapped := MustSchema(Field{"i", Timestamp}, Field{"f", Float64}, Field{"s", String}, Field{"b", Bool}, Field{"y", Bytes}, Field{"ts", Timestamp})
	if _, err := DecodeBatch(enc, NewBatch(swapped)); err == nil {
		t.Error("int64 column decoded as timestamp")
	}
	// Every truncation fails and leaves the batch untouched.
	into := randomBatch(rand.New(rand.NewPCG(5, 6)), 3)
	before := into.Clone()
	for n := range len(enc) {
		if _, err := DecodeBatch(enc[:n], into); err == nil {
			t.Fatalf("truncated to %d bytes: no error", n)
		} else if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: error %v does not wrap ErrCorrupt", n, err)
		}
		sameRows(t, into, before)
		for c := range into.Cols {
			if into.Cols[c].Len() != into.Len {
				t.Fatalf("truncated to %d: column %d has %d values", n, c, into.Cols[c].Len())
			}
		}
	}
	// A huge row count must not allocate.
	huge := []byte{codecVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, byte(Bool), 0}
	if _, err := DecodeBatch(huge, NewBatch(MustSchema(Field{"b", Bool}))); err == nil {
		t.Error("huge row count accepted")
	}
}

func TestValueRoundTrip(t *testing.T) {
	b := randomBatch(rand.New(rand.NewPCG(7, 8)), 200)
	var enc []byte
	for i := 0; i < b.Len; i++ {
		enc = AppendRow(enc, b, i)
	}
	into := NewBatch(allTypes)
	p := enc
	for p2 := p; len(p2) > 0; {
		var err error
		if p2, err = DecodeRow(p2, into); err != nil {
			t.Fatal(err)
		}
	}
	sameRows(t, into, b)

	for c := range b.Cols {
		col := &Column{Type: b.Cols[c].Type}
		v := AppendValue(nil, &b.Cols[c], 5)
		rest, err := DecodeValue(append(v, 0xAA), col)
		if err != nil || !bytes.Equal(rest, []byte{0xAA}) {
			t.Fatalf("col %d: rest %x err %v", c, rest, err)
		}
		if !reflect.DeepEqual(col.Value(0), b.Cols[c].Value(5)) && c != 1 {
			t.Fatalf("col %d: %v, want %v", c, col.Value(0), b.Cols[c].Value(5))
		}
		for n := range len(v) {
			if _, err := DecodeValue(v[:n], &Column{Type: col.Type}); err == nil {
				t.Fatalf("col %d truncated to %d: no error", c, n)
			}
		}
	}
	if _, err := DecodeValue([]byte{2}, &Column{Type: Bool}); err == nil {
		t.Error("bool 2 accepted")
	}
}

func FuzzDecodeBatch(f *testing.F) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{0, 1, 3, 9, 40} {
		f.Add(AppendBatch(nil, randomBatch(r, n)))
		f.Add(AppendBatchPacked(nil, randomBatch(r, n)))
	}
	f.Add([]byte{})
	f.Add([]byte{codecVersion, 0, 6, 1, 2, 3, 4, 5, 6})
	f.Fuzz(func(t *testing.T, data []byte) {
		into := NewBatch(allTypes)
		into.AppendRow(int64(1), 2.0, "x", true, []byte("y"), int64(3))
		before := into.Clone()
		rest, err := DecodeBatch(data, into)
		if err != nil {
			sameRows(t, into, before)
			return
		}
		if len(rest) > len(data) {
			t.Fatal("rest longer than input")
		}
		for c := range into.Cols {
			if into.Cols[c].Len() != into.Len {
				t.Fatalf("column %d has %d values, Len %d", c, into.Cols[c].Len(), into.Len)
			}
		}
		// Re-encoding the decoded rows and decoding again is the identity.
		again := NewBatch(allTypes)
		if _, err := DecodeBatch(AppendBatch(nil, into), again); err != nil {
			t.Fatal(err)
		}
		sameRows(t, again, into)
	})
}

func BenchmarkBatchCodec(b *testing.B) {
	batch := randomBatch(rand.New(rand.NewPCG(11, 12)), DefaultBatchSize)
	enc := AppendBatch(nil, batch)
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(enc)))
		buf := make([]byte, 0, len(enc))
		for b.Loop() {
			buf = AppendBatch(buf[:0], batch)
		}
		b.ReportMetric(float64(batch.Len), "rows/op")
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(enc)))
		into := NewBatch(allTypes)
		for b.Loop() {
			into.Reset()
			if _, err := DecodeBatch(enc, into); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(batch.Len), "rows/op")
	})
}

// BenchmarkIntCodec: the sequence source's rows (id, key, ts), the batches
// harness job (b) sends between TaskManagers (varints of 4, 2 and 1 bytes),
// in both layouts.
func BenchmarkIntCodec(b *testing.B) {
	s := MustSchema(Field{"id", Int64}, Field{"key", Int64}, Field{"ts", Timestamp})
	batch := NewBatch(s)
	r := rand.New(rand.NewPCG(13, 14))
	id := int64(15_000_000)
	for range DefaultBatchSize {
		id += 1 + r.Int64N(3)
		batch.Cols[0].Ints = append(batch.Cols[0].Ints, id)
		batch.Cols[1].Ints = append(batch.Cols[1].Ints, id%1000)
		batch.Cols[2].Ints = append(batch.Cols[2].Ints, 1_764_000_000_000+id/100)
	}
	batch.Len = DefaultBatchSize
	for _, layout := range encoders {
		enc := layout.fn(nil, batch)
		b.Run(layout.name+"/encode", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			buf := make([]byte, 0, len(enc))
			for b.Loop() {
				buf = layout.fn(buf[:0], batch)
			}
		})
		b.Run(layout.name+"/decode", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			into := NewBatch(s)
			for b.Loop() {
				into.Reset()
				if _, err := DecodeBatch(enc, into); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// decodeVarints accepts and refuses exactly what binary.Varint does.
func TestDecodeVarintsAsBinaryVarint(t *testing.T) {
	inputs := [][]byte{
		{}, {0x80}, {0x7f}, {0x81, 0x01}, {0xff, 0xff, 0xff},
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},       // max uint64
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02},       // overflow in the 10th byte
		{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, // 11 bytes
		{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00},       // 10 bytes, non-canonical
	}
	r := rand.New(rand.NewPCG(15, 16))
	for range 1000 {
		in := binary.AppendVarint(nil, r.Int64()>>r.IntN(64))
		if r.IntN(4) == 0 {
			in = in[:r.IntN(len(in)+1)]
		}
		inputs = append(inputs, in)
	}
	for _, in := range inputs {
		want, wk := binary.Varint(in)
		var got [1]int64
		k, ok := decodeVarints(in, got[:], false)
		if ok != (wk > 0) || ok && (k != wk || got[0] != want) {
			t.Errorf("% x: decodeVarints gives %d, %d bytes, %v; binary.Varint %d, %d", in, got[0], k, ok, want, wk)
		}
	}
}

// mixedBatch is the data plane's benchmark batch: 1024 rows of an int64
// below 10⁶, a string of 16 letters and a float64.
func mixedBatch() *Batch {
	s := MustSchema(Field{"id", Int64}, Field{"name", String}, Field{"v", Float64})
	r := rand.New(rand.NewPCG(1, 2))
	b := NewBatch(s)
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var str [16]byte
	for range DefaultBatchSize {
		for i := range str {
			str[i] = letters[r.IntN(len(letters))]
		}
		b.Cols[0].Ints = append(b.Cols[0].Ints, r.Int64N(1_000_000))
		b.Cols[1].Strs = append(b.Cols[1].Strs, string(str[:]))
		b.Cols[2].Floats = append(b.Cols[2].Floats, r.Float64()*1000)
	}
	b.Len = DefaultBatchSize
	return b
}

// BenchmarkMixedCodec: the data plane's batch, packed, encoded into a
// reused buffer and decoded into a batch from the pool (released after),
// as the data plane does.
func BenchmarkMixedCodec(b *testing.B) {
	batch := mixedBatch()
	enc := AppendBatchPacked(nil, batch)
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(enc)))
		buf := make([]byte, 0, len(enc))
		for b.Loop() {
			buf = AppendBatchPacked(buf[:0], batch)
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(enc)))
		for b.Loop() {
			into := NewBatch(batch.Schema)
			if _, err := DecodeBatch(enc, into); err != nil {
				b.Fatal(err)
			}
			into.Release()
		}
	})
}

// Decoded strings are slices of one allocation per column of a batch: they
// must survive what happens to the buffers around them — the input
// overwritten (the data plane reuses its frame buffers), the batch released
// and its pooled successor decoded into, the whole batch garbage collected
// while a string of it is still held.
func TestDecodedStringsOwnTheirBytes(t *testing.T) {
	s := MustSchema(Field{"s", String}, Field{"y", Bytes})
	mk := func(tag string, n int) *Batch {
		b := NewBatch(s)
		for i := range n {
			b.Cols[0].Strs = append(b.Cols[0].Strs, fmt.Sprintf("%s-%04d-%s", tag, i, strings.Repeat("x", i%200)))
			b.Cols[1].Bytes = append(b.Cols[1].Bytes, []byte(fmt.Sprintf("%s-%d", tag, i)))
		}
		b.Len = n
		return b
	}
	const n = 300 // lengths of one and of two bytes
	buf := AppendBatchPacked(nil, mk("first", n))
	got := NewBatch(s)
	if _, err := DecodeBatch(buf, got); err != nil {
		t.Fatal(err)
	}
	kept := slices.Clone(got.Cols[0].Strs) // headers only: the bytes stay shared
	keptBytes := slices.Clone(got.Cols[1].Bytes)
	sub := got.Cols[0].Strs[7][2:9]

	// The input buffer reused for another batch, the batch released and
	// decoded into again, many times over, with collections in between.
	for round := range 20 {
		got.Release()
		buf = AppendBatchPacked(buf[:0], mk(fmt.Sprintf("r%02d", round), n))
		got = NewBatch(s)
		if _, err := DecodeBatch(buf, got); err != nil {
			t.Fatal(err)
		}
		for i := range buf {
			buf[i] = '#'
		}
		runtime.GC()
	}
	want := mk("first", n)
	for i := range n {
		if kept[i] != want.Cols[0].Strs[i] {
			t.Fatalf("string %d became %q, want %q", i, kept[i], want.Cols[0].Strs[i])
		}
		if string(keptBytes[i]) != string(want.Cols[1].Bytes[i]) {
			t.Fatalf("bytes %d became %q, want %q", i, keptBytes[i], want.Cols[1].Bytes[i])
		}
	}
	if sub != want.Cols[0].Strs[7][2:9] {
		t.Fatalf("substring became %q", sub)
	}
	// Empty strings point nowhere, not past the end of the column's bytes.
	e := NewBatch(s)
	e.AppendRow("", []byte{})
	e.AppendRow("a", []byte{})
	e.AppendRow("", []byte{})
	out := NewBatch(s)
	if _, err := DecodeBatch(AppendBatchPacked(nil, e), out); err != nil {
		t.Fatal(err)
	}
	for i, v := range out.Cols[0].Strs {
		if v != e.Cols[0].Strs[i] || (v == "" && unsafe.StringData(v) != nil) {
			t.Fatalf("string %d: %q at %p", i, v, unsafe.StringData(v))
		}
	}
}

// Floats go through memory as they are: every bit pattern, NaNs included,
// comes back.
func TestFloatBitsRoundTrip(t *testing.T) {
	s := MustSchema(Field{"f", Float64})
	b := NewBatch(s)
	r := rand.New(rand.NewPCG(17, 18))
	for range 1000 {
		b.Cols[0].Floats = append(b.Cols[0].Floats, math.Float64frombits(r.Uint64()))
	}
	b.Cols[0].Floats = append(b.Cols[0].Floats, math.NaN(), math.Float64frombits(0x7ff0000000000001), math.Copysign(0, -1))
	b.Len = len(b.Cols[0].Floats)
	for _, enc := range encoders {
		p := enc.fn(nil, b)
		// The wire layout: 8 bytes little endian per value.
		tail := p[len(p)-8*b.Len:]
		for i, v := range b.Cols[0].Floats {
			if binary.LittleEndian.Uint64(tail[8*i:]) != math.Float64bits(v) {
				t.Fatalf("%s: value %d encoded as % x", enc.name, i, tail[8*i:8*i+8])
			}
		}
		out := NewBatch(s)
		if _, err := DecodeBatch(p, out); err != nil {
			t.Fatal(err)
		}
		sameRows(t, out, b)
	}
}
