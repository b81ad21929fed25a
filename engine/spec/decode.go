package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// decodeJob decodes a generic tree strictly into a Job. Unlike
// encoding/json it matches field names exactly (case included), rejects
// unknown fields at every level, and says where a problem is:
//
//	checkpoint: unknown field "intervall" (did you mean "interval"?)
//	nodes[2] (id "win"): inputs[0].partition: want a string, got number 3
func decodeJob(tree any) (*Job, error) {
	j := &Job{}
	if err := decodeValue(loc{}, tree, reflect.ValueOf(j).Elem()); err != nil {
		return nil, err
	}
	return j, nil
}

// loc is where a value sits: an optional label (a node) and a dotted path
// below it.
type loc struct{ label, path string }

func (l loc) String() string {
	switch {
	case l.label == "":
		return l.path
	case l.path == "":
		return l.label
	}
	return l.label + ": " + l.path
}

func (l loc) field(name string) loc {
	if l.path != "" {
		name = l.path + "." + name
	}
	return loc{l.label, name}
}

func (l loc) index(i int) loc {
	return loc{l.label, l.path + "[" + strconv.Itoa(i) + "]"}
}

func (l loc) errorf(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if s := l.String(); s != "" {
		return errors.New(s + ": " + msg)
	}
	return errors.New(msg)
}

var (
	rawType         = reflect.TypeFor[json.RawMessage]()
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	nodeType        = reflect.TypeFor[Node]()
)

func decodeValue(at loc, v any, rv reflect.Value) error {
	if v == nil {
		return nil // null is the same as absent
	}
	t := rv.Type()
	if t == rawType {
		if _, ok := v.(map[string]any); !ok {
			return at.errorf("want an object, got %s", describe(v))
		}
		b, err := json.Marshal(v)
		if err != nil {
			return at.errorf("%v", err)
		}
		rv.SetBytes(b)
		return nil
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		// Types with their own JSON form (Duration, the "id.output" form
		// of Input). Objects of struct types are decoded below so that
		// unknown fields are named with their place.
		if _, isObj := v.(map[string]any); !isObj || t.Kind() != reflect.Struct {
			if t.Kind() == reflect.Struct {
				if _, ok := v.(string); !ok {
					return at.errorf("want a string or an object, got %s", describe(v))
				}
			}
			b, err := json.Marshal(v)
			if err != nil {
				return at.errorf("%v", err)
			}
			if err := rv.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(b); err != nil {
				return at.errorf("%v", err)
			}
			return nil
		}
	}
	switch t.Kind() {
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		if err := decodeValue(at, v, p.Elem()); err != nil {
			return err
		}
		rv.Set(p)
		return nil
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return at.errorf("want an object, got %s", describe(v))
		}
		return decodeStruct(at, m, rv)
	case reflect.Slice:
		a, ok := v.([]any)
		if !ok {
			return at.errorf("want a list, got %s", describe(v))
		}
		s := reflect.MakeSlice(t, len(a), len(a))
		for i, e := range a {
			el := at.index(i)
			if t.Elem() == nodeType {
				el = loc{label: nodeLabel(i, e)}
			}
			if err := decodeValue(el, e, s.Index(i)); err != nil {
				return err
			}
		}
		rv.Set(s)
		return nil
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return at.errorf("want a string, got %s", describe(v))
		}
		rv.SetString(s)
		return nil
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			return at.errorf("want true or false, got %s", describe(v))
		}
		rv.SetBool(b)
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			return at.errorf("want an integer, got %s", describe(v))
		}
		i, err := n.Int64()
		if err != nil {
			f, ferr := n.Float64()
			if ferr != nil || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
				return at.errorf("want an integer, got %s", describe(v))
			}
			i = int64(f)
		}
		if rv.OverflowInt(i) {
			return at.errorf("%s is out of range", n)
		}
		rv.SetInt(i)
		return nil
	case reflect.Float32, reflect.Float64:
		n, ok := v.(json.Number)
		if !ok {
			return at.errorf("want a number, got %s", describe(v))
		}
		f, err := n.Float64()
		if err != nil || rv.OverflowFloat(f) {
			return at.errorf("%s is out of range", n)
		}
		rv.SetFloat(f)
		return nil
	}
	return at.errorf("cannot decode into %s", t)
}

// nodeLabel is how errors name the i-th node: nodes[2] (id "win").
func nodeLabel(i int, v any) string {
	l := "nodes[" + strconv.Itoa(i) + "]"
	if m, ok := v.(map[string]any); ok {
		if id, ok := m["id"].(string); ok && id != "" {
			l += " (id " + strconv.Quote(id) + ")"
		}
	}
	return l
}

func decodeStruct(at loc, m map[string]any, rv reflect.Value) error {
	fields := jsonFields(rv.Type())
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// Unknown fields first: a misspelt key is the likelier mistake and the
	// more useful message.
	for _, k := range keys {
		if _, ok := fields[k]; !ok {
			msg := fmt.Sprintf("unknown field %q", k)
			if s := suggest(k, fields); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			return at.errorf("%s", msg)
		}
	}
	for _, k := range keys {
		if err := decodeValue(at.field(k), m[k], rv.Field(fields[k])); err != nil {
			return err
		}
	}
	return nil
}

// jsonFields maps a struct's JSON field names to field indexes.
func jsonFields(t reflect.Type) map[string]int {
	out := map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = i
	}
	return out
}

// suggest returns the known field closest to k, if one is close.
func suggest(k string, fields map[string]int) string {
	best, bestD := "", 3
	for f := range fields {
		if strings.EqualFold(f, k) {
			return f
		}
		if d := editDistance(strings.ToLower(k), strings.ToLower(f)); d < bestD || d == bestD && f < best {
			best, bestD = f, d
		}
	}
	if bestD > 2 {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
