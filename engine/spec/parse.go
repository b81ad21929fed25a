package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Parse reads a job spec written as JSON or YAML, applies the overrides in
// sets (each "KEY=VALUE", see ApplySets), decodes the result strictly into a
// Job (unknown fields are errors that say where they are), applies the
// defaults and validates the graph's structure.
//
// The format is detected from the first non-space byte: '{' is JSON,
// anything else YAML. Both are first read into the same generic tree
// (objects, arrays, strings, json.Number, bool, nil), so a YAML job and its
// JSON transcription decode to equal Jobs.
//
// What each node type's params mean is not checked here; the planner does
// that and Params stays raw JSON (object keys sorted).
func Parse(data []byte, sets []string) (*Job, error) {
	tree, err := parseTree(data)
	if err != nil {
		return nil, err
	}
	tree, err = ApplySets(tree, sets)
	if err != nil {
		return nil, err
	}
	j, err := decodeJob(tree)
	if err != nil {
		return nil, err
	}
	j.ApplyDefaults()
	if err := j.Validate(); err != nil {
		return nil, err
	}
	return j, nil
}

// ParseFile is Parse of a file's contents; errors start with the path.
func ParseFile(path string, sets []string) (*Job, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	j, err := Parse(data, sets)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return j, nil
}

// maxDepth bounds how deeply a spec may nest objects and arrays. Real specs
// nest a handful of levels; the bound keeps hostile input from exhausting
// the stack.
const maxDepth = 200

// parseTree reads JSON or YAML into a generic tree.
func parseTree(data []byte) (any, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // UTF-8 BOM
	if !utf8.Valid(data) {
		line, col := position(data, int64(invalidUTF8At(data)))
		return nil, fmt.Errorf("line %d, column %d: the job spec is not valid UTF-8", line, col)
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, errors.New("empty job spec")
	}
	var (
		tree any
		err  error
	)
	if trimmed[0] == '{' {
		tree, err = parseJSON(data)
	} else {
		tree, err = parseYAML(data)
	}
	if err != nil {
		return nil, err
	}
	if _, ok := tree.(map[string]any); !ok {
		return nil, fmt.Errorf("a job spec is an object (name, nodes, …), got %s", describe(tree))
	}
	return tree, nil
}

// parseJSON decodes one JSON value into a generic tree, rejecting duplicate
// object keys and trailing data, and numbers kept as json.Number.
func parseJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := readJSON(dec, 0)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("unexpected data after the top-level value")
		}
	}
	if err != nil {
		var se *json.SyntaxError
		off := dec.InputOffset()
		if errors.As(err, &se) {
			off = se.Offset
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = errors.New("unexpected end of input")
			off = int64(len(data))
		}
		line, col := position(data, off)
		return nil, fmt.Errorf("JSON line %d, column %d: %w", line, col, err)
	}
	return v, nil
}

func readJSON(dec *json.Decoder, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested more than %d levels deep", maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := map[string]any{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, ok := kt.(string)
				if !ok {
					return nil, fmt.Errorf("object key must be a string")
				}
				if _, dup := m[k]; dup {
					return nil, fmt.Errorf("duplicate key %q", k)
				}
				v, err := readJSON(dec, depth+1)
				if err != nil {
					return nil, err
				}
				m[k] = v
			}
			if _, err := dec.Token(); err != nil { // '}'
				return nil, err
			}
			return m, nil
		case '[':
			a := []any{}
			for dec.More() {
				v, err := readJSON(dec, depth+1)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			if _, err := dec.Token(); err != nil { // ']'
				return nil, err
			}
			return a, nil
		}
		return nil, fmt.Errorf("unexpected %q", rune(t))
	default: // string, json.Number, bool, nil
		return t, nil
	}
}

// position turns a byte offset into a 1-based line and column.
func position(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	if off < 0 {
		off = 0
	}
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(off) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return line, col
}

// parseYAML decodes one YAML document into the same generic tree as
// parseJSON: mapping keys become strings, numbers json.Number, timestamps
// RFC 3339 strings.
func parseYAML(data []byte) (tree any, err error) {
	defer func() {
		// yaml.v3 has panicked on malformed input in the past; a spec
		// parser must answer with an error, whatever it is given.
		if r := recover(); r != nil {
			tree, err = nil, fmt.Errorf("YAML: malformed document (%v)", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var raw any
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty job spec")
		}
		return nil, fmt.Errorf("YAML: %w", trimYAMLPrefix(err))
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("YAML: a job spec is one document; found a second after \"---\"")
	}
	return fromYAML(raw, 0)
}

func trimYAMLPrefix(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		return errors.New(strings.Join(te.Errors, "; "))
	}
	if s, ok := bytes.CutPrefix([]byte(err.Error()), []byte("yaml: ")); ok {
		return errors.New(string(s))
	}
	return err
}

func fromYAML(v any, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("YAML: nested more than %d levels deep", maxDepth)
	}
	switch t := v.(type) {
	case nil, string, bool:
		return t, nil
	case int:
		return json.Number(strconv.FormatInt(int64(t), 10)), nil
	case int64:
		return json.Number(strconv.FormatInt(t, 10)), nil
	case uint64:
		return json.Number(strconv.FormatUint(t, 10)), nil
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return nil, fmt.Errorf("YAML: %v is not a valid number in a job spec", t)
		}
		return json.Number(strconv.FormatFloat(t, 'g', -1, 64)), nil
	case time.Time:
		return t.Format(time.RFC3339Nano), nil
	case []byte:
		return string(t), nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			c, err := fromYAML(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			c, err := fromYAML(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			var ks string
			switch kk := k.(type) {
			case string:
				ks = kk
			case int, int64, uint64, bool:
				ks = fmt.Sprint(kk)
			case float64:
				ks = strconv.FormatFloat(kk, 'g', -1, 64)
			case nil:
				ks = "null"
			default:
				return nil, fmt.Errorf("YAML: a mapping key must be a scalar, got %T", k)
			}
			if _, dup := out[ks]; dup {
				return nil, fmt.Errorf("YAML: duplicate key %q", ks)
			}
			c, err := fromYAML(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[ks] = c
		}
		return out, nil
	default:
		return nil, fmt.Errorf("YAML: unsupported value of type %T", v)
	}
}

// describe names a generic value's kind for error messages.
func describe(v any) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case string:
		if len(t) > 40 {
			t = t[:40] + "…"
		}
		return "string " + strconv.Quote(t)
	case json.Number:
		return "number " + string(t)
	case bool:
		return "bool " + strconv.FormatBool(t)
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("%T", v)
}

func invalidUTF8At(data []byte) int {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(data)
}
