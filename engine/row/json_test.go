package row

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

func TestAppendJSON(t *testing.T) {
	b := NewBatch(allTypes)
	must(t, b.AppendRow(int64(-42), 1.5, "a\"b\\c\n\x01\u2028é\xff", true, []byte{0, 1, 0xfe}, int64(1700000000123)))
	must(t, b.AppendRow(int64(0), math.NaN(), "", false, []byte{}, int64(0)))
	must(t, b.AppendRow(int64(math.MaxInt64), 1e21, "x", false, []byte(nil), int64(-1)))
	must(t, b.AppendRow(int64(math.MinInt64), 1e-7, "x", false, []byte("hi"), int64(-1)))
	must(t, b.AppendRow(int64(1), math.Inf(-1), "x", false, []byte("hi"), int64(-1)))
	must(t, b.AppendRow(int64(1), 100.0, "x", false, []byte("hi"), int64(-1)))
	want := []string{
		`{"i":-42,"f":1.5,"s":"a\"b\\c\n\u0001\u2028é\ufffd","b":true,"y":"AAH+","ts":1700000000123}`,
		`{"i":0,"f":null,"s":"","b":false,"y":"","ts":0}`,
		`{"i":9223372036854775807,"f":1e+21,"s":"x","b":false,"y":"","ts":-1}`,
		`{"i":-9223372036854775808,"f":1e-7,"s":"x","b":false,"y":"aGk=","ts":-1}`,
		`{"i":1,"f":null,"s":"x","b":false,"y":"aGk=","ts":-1}`,
		`{"i":1,"f":100,"s":"x","b":false,"y":"aGk=","ts":-1}`,
	}
	for i, w := range want {
		got := string(AppendJSON(nil, b, i))
		if got != w {
			t.Errorf("row %d:\n got %s\nwant %s", i, got, w)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("row %d is not valid JSON", i)
		}
	}
}

func TestAppendJSONFloatsMatchEncodingJSON(t *testing.T) {
	s := MustSchema(Field{"f", Float64})
	r := rand.New(rand.NewPCG(1, 1))
	b := NewBatch(s)
	for range 2000 {
		f := r.NormFloat64() * math.Pow(10, float64(r.IntN(60)-30))
		b.Reset()
		b.AppendRow(f)
		want, _ := json.Marshal(map[string]float64{"f": f})
		if got := AppendJSON(nil, b, 0); string(got) != string(want) {
			t.Fatalf("%v: got %s, want %s", f, got, want)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestParseJSON(t *testing.T) {
	b := NewBatch(allTypes)
	lines := []string{
		`{"i":-42,"f":1.5,"s":"a\"b\\c\n\u0001\u2028é","b":true,"y":"AAH+","ts":1700000000123}`,
		` { "ts" : "2023-11-14T22:13:20.5Z" , "y":"aGk", "extra": {"a":[1,2,{"b":null}],"c":"\u00e9"}, "b":false,"s":"\ud83d\ude00 \ud800x","f":-0,"i":3e2 } `,
		`{"i":1,"f":1,"s":"","b":false,"y":"","ts":1.7e12,"i":7}`, // last i wins
		`{"i":-9223372036854775808,"f":12345678901234567890,"s":"x","b":true,"y":"aGk=","ts":"2024-01-01T00:00:00+01:00"}`,
	}
	for _, l := range lines {
		if err := ParseJSON([]byte(l), b); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
	}
	check := func(i, c int, want any) {
		t.Helper()
		got := b.Value(i, c)
		if gb, ok := got.([]byte); ok {
			got = string(gb)
		}
		if got != want {
			t.Errorf("row %d field %s = %#v, want %#v", i, allTypes.Fields[c].Name, got, want)
		}
	}
	check(0, 0, int64(-42))
	check(0, 2, "a\"b\\c\n\x01\u2028é")
	check(0, 4, "\x00\x01\xfe")
	check(0, 5, int64(1700000000123))
	check(1, 0, int64(300))
	check(1, 2, "😀 \uFFFDx")
	check(1, 3, false)
	check(1, 4, "hi")
	check(1, 5, int64(1700000000500))
	if f := b.Cols[1].Floats[1]; f != 0 || !math.Signbit(f) {
		t.Errorf("-0 parsed as %v", f)
	}
	check(2, 0, int64(7))
	check(2, 5, int64(1.7e12))
	check(3, 0, int64(math.MinInt64))
	check(3, 1, 12345678901234567890.0)
	check(3, 5, int64(1704063600000))
	if b.Len != 4 || b.Cols[0].Len() != 4 {
		t.Fatalf("Len = %d, column has %d", b.Len, b.Cols[0].Len())
	}
}

func TestParseJSONErrors(t *testing.T) {
	full := map[string]string{"i": "1", "f": "1.5", "s": `"x"`, "b": "true", "y": `"aGk="`, "ts": "5"}
	line := func(override map[string]string) string {
		var parts []string
		for _, f := range allTypes.Fields {
			v, ok := override[f.Name]
			if !ok {
				v = full[f.Name]
			}
			if v != "<omit>" {
				parts = append(parts, strconv.Quote(f.Name)+":"+v)
			}
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	cases := []struct {
		line, err string
	}{
		{line(map[string]string{"s": "<omit>"}), `field "s" is missing`},
		{line(map[string]string{"i": `"1"`}), `field "i": want int64, got string`},
		{line(map[string]string{"i": `null`}), `field "i": want int64, got null`},
		{line(map[string]string{"f": `null`}), `field "f": want float64, got null`},
		{line(map[string]string{"s": `1`}), `field "s": want string, got number`},
		{line(map[string]string{"b": `"true"`}), `field "b": want bool, got string`},
		{line(map[string]string{"b": `tru`}), `field "b": invalid JSON`},
		{line(map[string]string{"y": `"!!"`}), `field "y": want base64`},
		{line(map[string]string{"y": `[1]`}), `field "y": want bytes, got array`},
		{line(map[string]string{"i": `1.5`}), `field "i": want int64, got 1.5`},
		{line(map[string]string{"i": `9223372036854775808`}), `field "i": 9223372036854775808 is out of range for int64`},
		{line(map[string]string{"i": `1e19`}), `out of range`},
		{line(map[string]string{"f": `1e400`}), `out of range`},
		{line(map[string]string{"ts": `"yesterday"`}), `field "ts": want epoch milliseconds or an RFC 3339 time, got "yesterday"`},
		{line(map[string]string{"ts": `true`}), `field "ts": want timestamp, got bool`},
		{line(map[string]string{"i": `01`}), `invalid JSON`},
		{line(map[string]string{"i": `-`}), `invalid JSON`},
		{line(map[string]string{"f": `1.`}), `invalid JSON`},
		{line(map[string]string{"s": "\"a\x01\""}), `control character`},
		{line(map[string]string{"s": `"a\q"`}), `bad escape`},
		{line(map[string]string{"s": `"\u12"`}), `bad \u escape`},
		{line(nil) + "x", `data after the object`},
		{line(nil)[:20], `invalid JSON`},
		{`[1]`, `not a JSON object`},
		{``, `not a JSON object`},
		{`{"i":1,}`, `invalid JSON`},
		{`{"i" 1}`, `invalid JSON`},
		{`{"q":[1 2]}`, `invalid JSON`},
		{`{"q":{"a" 1}}`, `invalid JSON`},
		{`{"q":` + strings.Repeat("[", 2000) + strings.Repeat("]", 2000) + `}`, `nested too deeply`},
	}
	for _, c := range cases {
		b := NewBatch(allTypes)
		must(t, ParseJSON([]byte(line(nil)), b))
		before := b.Clone()
		err := ParseJSON([]byte(c.line), b)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s:\n err = %v\nwant %q", c.line, err, c.err)
		}
		sameRows(t, b, before)
		for i := range b.Cols {
			if b.Cols[i].Len() != 1 {
				t.Errorf("%s: column %d has %d values after a failed parse", c.line, i, b.Cols[i].Len())
			}
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	b := randomBatch(rand.New(rand.NewPCG(5, 5)), 500)
	// NaN/Inf become null, which does not read back; strings are valid UTF-8.
	for i, f := range b.Cols[1].Floats {
		if math.IsInf(f, 0) || math.IsNaN(f) {
			b.Cols[1].Floats[i] = 0
		}
	}
	out := NewBatch(allTypes)
	var line []byte
	for i := 0; i < b.Len; i++ {
		line = AppendJSON(line[:0], b, i)
		if err := ParseJSON(line, out); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
	}
	sameRows(t, out, b)
}

func FuzzParseJSON(f *testing.F) {
	f.Add([]byte(`{"i":-42,"f":1.5,"s":"a\"b\\c\n\u0001\u2028é","b":true,"y":"AAH+","ts":1700000000123}`))
	f.Add([]byte(`{"ts":"2023-11-14T22:13:20.5Z","y":"aGk","x":{"a":[1,2,{"b":null}]},"b":false,"s":"\ud83d\ude00","f":-0,"i":3e2}`))
	f.Add([]byte(`{"i":1,"f":1e400,"s":"","b":false,"y":"","ts":1.7e12,"i":7}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		b := NewBatch(allTypes)
		err := ParseJSON(line, b)
		if err != nil {
			if b.Len != 0 || b.Cols[0].Len() != 0 || b.Cols[2].Len() != 0 {
				t.Fatal("failed parse left values behind")
			}
			return
		}
		if !json.Valid(line) {
			t.Fatalf("accepted invalid JSON %q", line)
		}
		for c := range b.Cols {
			if b.Cols[c].Len() != 1 {
				t.Fatalf("column %d has %d values", c, b.Cols[c].Len())
			}
		}
		out := AppendJSON(nil, b, 0)
		again := NewBatch(allTypes)
		if err := ParseJSON(out, again); err != nil {
			t.Fatalf("re-parsing %s: %v", out, err)
		}
		sameRows(t, again, b)
	})
}

func BenchmarkJSON(b *testing.B) {
	batch := randomBatch(rand.New(rand.NewPCG(11, 12)), DefaultBatchSize)
	// Realistic floats: extreme ones (denormals) take strconv's slow path.
	r := rand.New(rand.NewPCG(1, 2))
	for i := range batch.Cols[1].Floats {
		batch.Cols[1].Floats[i] = math.Round(r.NormFloat64()*1e6) / 100
	}
	var lines [][]byte
	size := 0
	for i := 0; i < batch.Len; i++ {
		l := AppendJSON(nil, batch, i)
		lines = append(lines, l)
		size += len(l)
	}
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(size))
		var buf []byte
		for b.Loop() {
			for i := 0; i < batch.Len; i++ {
				buf = AppendJSON(buf[:0], batch, i)
			}
		}
		b.ReportMetric(float64(batch.Len), "rows/op")
	})
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(size))
		into := NewBatch(allTypes)
		for b.Loop() {
			into.Reset()
			for _, l := range lines {
				if err := ParseJSON(l, into); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(batch.Len), "rows/op")
	})
}
