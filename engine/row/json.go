package row

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// JSON lines: one object per row, fields in schema order. Both directions
// are hand-written (no reflection, no allocation per field when encoding)
// because file sources and print/file sinks move millions of rows a second.

// AppendJSON appends row i of b as one JSON object with the fields in schema
// order. Timestamps are integer epoch milliseconds, bytes are standard
// base64 strings, floats take their shortest form that reads back exactly
// (as encoding/json writes them), and NaN and ±Inf become null.
func AppendJSON(dst []byte, b *Batch, i int) []byte {
	dst = append(dst, '{')
	for c := range b.Cols {
		if c > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, b.Schema.Fields[c].Name)
		dst = append(dst, ':')
		col := &b.Cols[c]
		switch col.Type {
		case Int64, Timestamp:
			dst = strconv.AppendInt(dst, col.Ints[i], 10)
		case Float64:
			dst = appendJSONFloat(dst, col.Floats[i])
		case String:
			dst = appendJSONString(dst, col.Strs[i])
		case Bool:
			dst = strconv.AppendBool(dst, col.Bools[i])
		case Bytes:
			dst = append(dst, '"')
			dst = base64.StdEncoding.AppendEncode(dst, col.Bytes[i])
			dst = append(dst, '"')
		default:
			dst = append(dst, "null"...)
		}
	}
	return append(dst, '}')
}

func appendJSONFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	// encoding/json's choice: plain notation unless very small or large.
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// 1e-07 → 1e-7
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// jsonSafe[c] is true for ASCII bytes that go into a JSON string as is.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return
}()

const hexDigits = "0123456789abcdef"

// appendJSONString appends s quoted. Invalid UTF-8 becomes U+FFFD; U+2028
// and U+2029 are escaped so the output is also valid JavaScript.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// ParseJSON appends one row read from a JSON object. Every schema field must
// be present and not null (`field "x" is missing`); a value of the wrong JSON
// type is an error naming the field and both types; unknown fields are
// ignored; when a field appears twice the last value wins. Int64 fields
// accept integral numbers (3, 3.0, 3e2), timestamps also RFC 3339 strings,
// float64 fields any number, bytes fields base64 strings. Anything but
// whitespace after the object is an error. On error, into is left as it was.
func ParseJSON(line []byte, into *Batch) error {
	p := &jsonParser{buf: line}
	if err := p.object(into); err != nil {
		for c := range into.Cols {
			into.Cols[c].truncate(into.Len)
		}
		return err
	}
	into.Len++
	return nil
}

type jsonParser struct {
	buf     []byte
	pos     int
	scratch []byte // unescaped keys
}

// maxJSONDepth bounds the nesting of skipped (unknown) values.
const maxJSONDepth = 1000

func (p *jsonParser) ws() {
	for p.pos < len(p.buf) {
		switch p.buf[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *jsonParser) syntax(what string) error {
	if p.pos >= len(p.buf) {
		return fmt.Errorf("invalid JSON: unexpected end of input, want %s", what)
	}
	return fmt.Errorf("invalid JSON at offset %d: unexpected %q, want %s", p.pos, p.buf[p.pos], what)
}

func (p *jsonParser) object(into *Batch) error {
	s := into.Schema
	nf := len(into.Cols)
	var seenStack [4]uint64
	seen := seenStack[:]
	if nf > 64*len(seenStack) {
		seen = make([]uint64, (nf+63)/64)
	}
	p.ws()
	if p.pos >= len(p.buf) || p.buf[p.pos] != '{' {
		if p.pos >= len(p.buf) {
			return errors.New("not a JSON object: empty line")
		}
		return fmt.Errorf("not a JSON object: starts with %q", p.buf[p.pos])
	}
	p.pos++
	p.ws()
	if p.pos < len(p.buf) && p.buf[p.pos] == '}' {
		p.pos++
	} else {
		for {
			p.ws()
			if p.pos >= len(p.buf) || p.buf[p.pos] != '"' {
				return p.syntax("a field name")
			}
			key, err := p.key()
			if err != nil {
				return err
			}
			p.ws()
			if p.pos >= len(p.buf) || p.buf[p.pos] != ':' {
				return p.syntax("':'")
			}
			p.pos++
			p.ws()
			if idx, ok := s.index[string(key)]; ok {
				col := &into.Cols[idx]
				if seen[idx>>6]&(1<<(idx&63)) != 0 {
					col.truncate(into.Len) // the last value wins
				}
				seen[idx>>6] |= 1 << (idx & 63)
				if err := p.value(col); err != nil {
					return fmt.Errorf("field %q: %w", s.Fields[idx].Name, err)
				}
			} else if err := p.skip(0); err != nil {
				return err
			}
			p.ws()
			if p.pos < len(p.buf) && p.buf[p.pos] == ',' {
				p.pos++
				continue
			}
			if p.pos < len(p.buf) && p.buf[p.pos] == '}' {
				p.pos++
				break
			}
			return p.syntax("',' or '}'")
		}
	}
	p.ws()
	if p.pos < len(p.buf) {
		return fmt.Errorf("invalid JSON at offset %d: data after the object", p.pos)
	}
	for i := range nf {
		if seen[i>>6]&(1<<(i&63)) == 0 {
			return fmt.Errorf("field %q is missing", s.Fields[i].Name)
		}
	}
	return nil
}

// key reads a quoted field name; the result aliases buf or scratch.
func (p *jsonParser) key() ([]byte, error) {
	start := p.pos + 1
	end, escaped, err := p.scanString()
	if err != nil {
		return nil, err
	}
	raw := p.buf[start:end]
	if !escaped {
		return raw, nil
	}
	p.scratch = unescape(p.scratch[:0], raw)
	return p.scratch, nil
}

// scanString validates the string starting at p.pos (a '"'), moves past it
// and returns the offset of its closing quote and whether it has escapes.
func (p *jsonParser) scanString() (end int, escaped bool, err error) {
	b := p.buf
	i := p.pos + 1
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			p.pos = i + 1
			return i, escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(b) {
				return 0, false, errors.New("invalid JSON: unterminated string")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex4(b[i+2:i+6]) {
					return 0, false, fmt.Errorf("invalid JSON at offset %d: bad \\u escape", i)
				}
				i += 6
			default:
				return 0, false, fmt.Errorf("invalid JSON at offset %d: bad escape \\%c", i, b[i+1])
			}
		case c < 0x20:
			return 0, false, fmt.Errorf("invalid JSON at offset %d: control character in string", i)
		default:
			i++
		}
	}
	return 0, false, errors.New("invalid JSON: unterminated string")
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b {
		r <<= 4
		switch {
		case c <= '9':
			r |= rune(c - '0')
		case c >= 'a':
			r |= rune(c - 'a' + 10)
		default:
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// unescape appends the contents of a validated JSON string (without quotes).
// Lone surrogates become U+FFFD, as in encoding/json.
func unescape(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		switch s[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s[i+2 : i+6])
			i += 6
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					r2 = utf16.DecodeRune(r, hex4(s[i+2:i+6]))
					if r2 != utf8.RuneError {
						i += 6
					}
				}
				r = r2
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\', '/'
			dst = append(dst, s[i+1])
		}
		i += 2
	}
	return dst
}

// stringValue reads a string value at p.pos (a '"').
func (p *jsonParser) stringValue() (string, error) {
	start := p.pos + 1
	end, escaped, err := p.scanString()
	if err != nil {
		return "", err
	}
	raw := p.buf[start:end]
	var s string
	if escaped {
		s = string(unescape(make([]byte, 0, len(raw)), raw))
	} else {
		s = string(raw)
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return s, nil
}

// kind names the JSON value at p.pos for type errors.
func (p *jsonParser) kind() string {
	if p.pos >= len(p.buf) {
		return "end of input"
	}
	switch c := p.buf[p.pos]; {
	case c == '"':
		return "string"
	case c == '{':
		return "object"
	case c == '[':
		return "array"
	case c == 't' || c == 'f':
		return "bool"
	case c == 'n':
		return "null"
	case c == '-' || '0' <= c && c <= '9':
		return "number"
	default:
		return fmt.Sprintf("invalid JSON %q", c)
	}
}

func (p *jsonParser) wrongType(want Type) error {
	return fmt.Errorf("want %s, got %s", want, p.kind())
}

// number validates the number at p.pos, moves past it and returns its text
// and whether it is an integer literal (no fraction, no exponent).
func (p *jsonParser) number() (num []byte, isInt bool, err error) {
	b := p.buf
	i := p.pos
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return nil, false, fmt.Errorf("invalid JSON at offset %d: bad number", p.pos)
	}
	isInt = true
	if i < len(b) && b[i] == '.' {
		isInt = false
		i++
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return nil, false, fmt.Errorf("invalid JSON at offset %d: bad number", p.pos)
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		isInt = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return nil, false, fmt.Errorf("invalid JSON at offset %d: bad number", p.pos)
		}
	}
	num = b[p.pos:i]
	p.pos = i
	return num, isInt, nil
}

// parseInt parses a validated integer literal; ok is false on overflow.
func parseInt(num []byte) (v int64, ok bool) {
	neg := num[0] == '-'
	if neg {
		num = num[1:]
	}
	if len(num) > 19 {
		return 0, false
	}
	var u uint64
	for _, c := range num {
		u = u*10 + uint64(c-'0') // at most 19 digits: cannot wrap uint64
	}
	if neg {
		if u > 1<<63 {
			return 0, false
		}
		return -int64(u), true // -(1<<63) wraps to itself, which is right
	}
	if u > math.MaxInt64 {
		return 0, false
	}
	return int64(u), true
}

// parseFloat parses a validated number.
func parseFloat(num []byte, isInt bool) (float64, error) {
	digits := len(num)
	if num[0] == '-' {
		digits--
	}
	if isInt && digits <= 15 { // |v| < 1e15 < 2^53: exact as a float64
		v, _ := parseInt(num)
		if v == 0 && num[0] == '-' {
			return math.Copysign(0, -1), nil
		}
		return float64(v), nil
	}
	// The string does not outlive the call: ParseFloat copies it into
	// errors, and the grammar is already checked.
	f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(num), len(num)), 64)
	if err != nil {
		return 0, fmt.Errorf("%s is out of range for float64", num)
	}
	return f, nil
}

func (p *jsonParser) intValue(t Type) (int64, error) {
	num, isInt, err := p.number()
	if err != nil {
		return 0, err
	}
	if isInt {
		if v, ok := parseInt(num); ok {
			return v, nil
		}
		return 0, fmt.Errorf("%s is out of range for %s", num, t)
	}
	f, err := parseFloat(num, false)
	if err != nil || f < -(1<<63) || f >= 1<<63 {
		return 0, fmt.Errorf("%s is out of range for %s", num, t)
	}
	if f != math.Trunc(f) {
		return 0, fmt.Errorf("want %s, got %s", t, num)
	}
	return int64(f), nil
}

func (p *jsonParser) literal(lit string) bool {
	if len(p.buf)-p.pos >= len(lit) && string(p.buf[p.pos:p.pos+len(lit)]) == lit {
		p.pos += len(lit)
		return true
	}
	return false
}

// value reads the value at p.pos into col.
func (p *jsonParser) value(col *Column) error {
	if p.pos >= len(p.buf) {
		return p.syntax("a value")
	}
	c := p.buf[p.pos]
	switch col.Type {
	case Int64, Timestamp:
		if c == '"' && col.Type == Timestamp {
			s, err := p.stringValue()
			if err != nil {
				return err
			}
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return fmt.Errorf("want epoch milliseconds or an RFC 3339 time, got %q", s)
			}
			col.Ints = append(col.Ints, t.UnixMilli())
			return nil
		}
		if c != '-' && (c < '0' || c > '9') {
			return p.wrongType(col.Type)
		}
		v, err := p.intValue(col.Type)
		if err != nil {
			return err
		}
		col.Ints = append(col.Ints, v)
	case Float64:
		if c != '-' && (c < '0' || c > '9') {
			return p.wrongType(col.Type)
		}
		num, isInt, err := p.number()
		if err != nil {
			return err
		}
		f, err := parseFloat(num, isInt)
		if err != nil {
			return err
		}
		col.Floats = append(col.Floats, f)
	case String:
		if c != '"' {
			return p.wrongType(col.Type)
		}
		s, err := p.stringValue()
		if err != nil {
			return err
		}
		col.Strs = append(col.Strs, s)
	case Bool:
		switch {
		case c == 't' && p.literal("true"):
			col.Bools = append(col.Bools, true)
		case c == 'f' && p.literal("false"):
			col.Bools = append(col.Bools, false)
		case c == 't' || c == 'f':
			return p.syntax("true or false")
		default:
			return p.wrongType(col.Type)
		}
	case Bytes:
		if c != '"' {
			return p.wrongType(col.Type)
		}
		start := p.pos + 1
		end, escaped, err := p.scanString()
		if err != nil {
			return err
		}
		raw := p.buf[start:end]
		if escaped {
			raw = unescape(nil, raw)
		}
		enc := base64.StdEncoding
		if len(raw)%4 != 0 {
			enc = base64.RawStdEncoding
		}
		out := make([]byte, enc.DecodedLen(len(raw)))
		n, err := enc.Decode(out, raw)
		if err != nil {
			return fmt.Errorf("want base64, got %q", raw)
		}
		col.Bytes = append(col.Bytes, out[:n:n])
	default:
		return errors.New("column has no type")
	}
	return nil
}

// skip validates and moves past the value at p.pos.
func (p *jsonParser) skip(depth int) error {
	if depth > maxJSONDepth {
		return fmt.Errorf("invalid JSON at offset %d: nested too deeply", p.pos)
	}
	if p.pos >= len(p.buf) {
		return p.syntax("a value")
	}
	switch c := p.buf[p.pos]; {
	case c == '"':
		_, _, err := p.scanString()
		return err
	case c == '-' || '0' <= c && c <= '9':
		_, _, err := p.number()
		return err
	case c == 't' && p.literal("true"), c == 'f' && p.literal("false"), c == 'n' && p.literal("null"):
		return nil
	case c == '{' || c == '[':
		obj := c == '{'
		closing := byte(']')
		if obj {
			closing = '}'
		}
		p.pos++
		p.ws()
		if p.pos < len(p.buf) && p.buf[p.pos] == closing {
			p.pos++
			return nil
		}
		for {
			p.ws()
			if obj {
				if p.pos >= len(p.buf) || p.buf[p.pos] != '"' {
					return p.syntax("a field name")
				}
				if _, _, err := p.scanString(); err != nil {
					return err
				}
				p.ws()
				if p.pos >= len(p.buf) || p.buf[p.pos] != ':' {
					return p.syntax("':'")
				}
				p.pos++
				p.ws()
			}
			if err := p.skip(depth + 1); err != nil {
				return err
			}
			p.ws()
			if p.pos < len(p.buf) && p.buf[p.pos] == ',' {
				p.pos++
				continue
			}
			if p.pos < len(p.buf) && p.buf[p.pos] == closing {
				p.pos++
				return nil
			}
			return p.syntax(fmt.Sprintf("',' or '%c'", closing))
		}
	default:
		return p.syntax("a value")
	}
}
