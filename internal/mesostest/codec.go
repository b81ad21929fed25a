package mesostest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/gogo/protobuf/proto"
)

// The real master writes and reads JSON with proto field names, enum names as
// strings, bytes as base64 and integral doubles with a ".0". mesos-go's own JSON
// codec (ffjson) neither knows enum values newer than the library (QUOTA_V2) nor
// reports missing required fields the way the master does, so mesostest walks the
// gogo-generated structs by their `protobuf` struct tags instead.

type fieldTag struct {
	name     string
	required bool
	enum     string
}

func parseTag(tag string) (fieldTag, bool) {
	if tag == "" {
		return fieldTag{}, false
	}
	var ft fieldTag
	for i, part := range strings.Split(tag, ",") {
		switch {
		case i == 2:
			ft.required = part == "req"
		case strings.HasPrefix(part, "name="):
			ft.name = part[len("name="):]
		case strings.HasPrefix(part, "enum="):
			ft.enum = part[len("enum="):]
		}
	}
	return ft, ft.name != ""
}

// extraEnumNames are values a Mesos 1.12 master sends that mesos-go v0.0.11 lacks.
var extraEnumNames = map[string]map[int32]string{
	"mesos.MasterInfo_Capability_Type": {2: "AGENT_DRAINING", 3: "QUOTA_V2"},
}

// quotaV2 is MasterInfo.Capability QUOTA_V2 (absent from mesos-go v0.0.11).
const quotaV2 = 3

var enumNameCache sync.Map // enum type name -> map[int32]string

func enumName(enum string, v int32) string {
	if m, ok := extraEnumNames[enum]; ok {
		if s, ok := m[v]; ok {
			return s
		}
	}
	names, ok := enumNameCache.Load(enum)
	if !ok {
		rev := map[int32]string{}
		for k, n := range proto.EnumValueMap(enum) {
			rev[n] = k
		}
		enumNameCache.Store(enum, rev)
		names = rev
	}
	if s, ok := names.(map[int32]string)[v]; ok {
		return s
	}
	return strconv.Itoa(int(v))
}

// formatDouble writes a double as the master does: integral values keep ".0".
func formatDouble(f float64) string {
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".eE") {
		s += ".0"
	}
	return s
}

// marshalJSON encodes a gogo-generated message as the Mesos master writes JSON.
func marshalJSON(msg any) []byte {
	var b bytes.Buffer
	encodeValue(&b, reflect.ValueOf(msg), "")
	return b.Bytes()
}

func encodeValue(b *bytes.Buffer, v reflect.Value, enum string) {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			b.WriteString("null")
			return
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.Struct:
		encodeStruct(b, v)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			js, _ := json.Marshal(base64.StdEncoding.EncodeToString(v.Bytes()))
			b.Write(js)
			return
		}
		b.WriteByte('[')
		for i := 0; i < v.Len(); i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			encodeValue(b, v.Index(i), enum)
		}
		b.WriteByte(']')
	case reflect.Map:
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			js, _ := json.Marshal(k.String())
			b.Write(js)
			b.WriteByte(':')
			encodeValue(b, v.MapIndex(k), "")
		}
		b.WriteByte('}')
	case reflect.String:
		js, _ := json.Marshal(v.String())
		b.Write(js)
	case reflect.Bool:
		b.WriteString(strconv.FormatBool(v.Bool()))
	case reflect.Int32, reflect.Int64, reflect.Int:
		if enum != "" {
			js, _ := json.Marshal(enumName(enum, int32(v.Int())))
			b.Write(js)
			return
		}
		b.WriteString(strconv.FormatInt(v.Int(), 10))
	case reflect.Uint32, reflect.Uint64:
		b.WriteString(strconv.FormatUint(v.Uint(), 10))
	case reflect.Float64, reflect.Float32:
		b.WriteString(formatDouble(v.Float()))
	default:
		b.WriteString("null")
	}
}

func encodeStruct(b *bytes.Buffer, v reflect.Value) {
	t := v.Type()
	b.WriteByte('{')
	first := true
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		ft, ok := parseTag(sf.Tag.Get("protobuf"))
		if !ok {
			continue
		}
		fv := v.Field(i)
		switch fv.Kind() {
		case reflect.Pointer, reflect.Map:
			if fv.IsNil() {
				continue
			}
		case reflect.Slice:
			if fv.Len() == 0 {
				continue
			}
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		js, _ := json.Marshal(ft.name)
		b.Write(js)
		b.WriteByte(':')
		encodeValue(b, fv, ft.enum)
	}
	b.WriteByte('}')
}

// jsonError is a conversion error with the master's wording.
type jsonError struct{ msg string }

func (e *jsonError) Error() string { return e.msg }

// parseJSONBody checks the syntax the way the master reports it.
func parseJSONBody(body []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	if err == nil {
		if _, terr := dec.Token(); terr == nil {
			err = &json.SyntaxError{Offset: dec.InputOffset()}
		}
	}
	if err != nil {
		off := int64(len(body))
		if se, ok := err.(*json.SyntaxError); ok {
			off = se.Offset
		}
		if off > int64(len(body)) {
			off = int64(len(body))
		}
		line := 1 + bytes.Count(body[:off], []byte("\n"))
		return nil, &jsonError{fmt.Sprintf("syntax error at line %d near: %s", line, body[off:])}
	}
	return v, nil
}

// unmarshalJSONValue fills msg (a pointer to a gogo struct) from parsed JSON.
// Unknown enum names leave the field unset (the master then reports the field
// as missing); missing required fields are listed as the master lists them.
func unmarshalJSONValue(v any, msg any) error {
	var missing []string
	if err := decodeInto(v, reflect.ValueOf(msg).Elem(), "", "", &missing); err != nil {
		return err
	}
	if len(missing) > 0 {
		return &jsonError{"Missing required fields: " + strings.Join(missing, ", ")}
	}
	return nil
}

func kindName(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case nil:
		return "null"
	}
	return "value"
}

func decodeInto(v any, dst reflect.Value, path, enum string, missing *[]string) error {
	fieldName := path
	if i := strings.LastIndexAny(path, "."); i >= 0 {
		fieldName = path[i+1:]
	}
	if k := strings.IndexByte(fieldName, '['); k >= 0 {
		fieldName = fieldName[:k]
	}
	if dst.Kind() == reflect.Pointer {
		if v == nil {
			return nil
		}
		nv := reflect.New(dst.Type().Elem())
		if err := decodeInto(v, nv.Elem(), path, enum, missing); err != nil {
			return err
		}
		if enum != "" && nv.Elem().Int() == -1 {
			return nil // unknown enum name: leave unset
		}
		dst.Set(nv)
		return nil
	}
	switch dst.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return &jsonError{fmt.Sprintf("Not expecting a JSON %s for field '%s'", kindName(v), fieldName)}
		}
		t := dst.Type()
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			ft, ok := parseTag(sf.Tag.Get("protobuf"))
			if !ok {
				continue
			}
			sub := ft.name
			if path != "" {
				sub = path + "." + ft.name
			}
			fv, present := obj[ft.name]
			if !present || fv == nil {
				// null counts as absent (mesos-go's ffjson writes "capabilities":null).
				if ft.required {
					*missing = append(*missing, sub)
				}
				continue
			}
			if err := decodeInto(fv, dst.Field(i), sub, ft.enum, missing); err != nil {
				return err
			}
			if ft.enum != "" && dst.Field(i).Kind() != reflect.Pointer && dst.Field(i).Int() == -1 {
				dst.Field(i).SetInt(0)
			}
		}
	case reflect.Slice:
		if dst.Type().Elem().Kind() == reflect.Uint8 {
			s, ok := v.(string)
			if !ok {
				return &jsonError{fmt.Sprintf("Not expecting a JSON %s for field '%s'", kindName(v), fieldName)}
			}
			raw, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return &jsonError{fmt.Sprintf("Failed to base64 decode for field '%s'", fieldName)}
			}
			dst.SetBytes(raw)
			return nil
		}
		arr, ok := v.([]any)
		if !ok {
			return &jsonError{fmt.Sprintf("Not expecting a JSON %s for field '%s'", kindName(v), fieldName)}
		}
		out := reflect.MakeSlice(dst.Type(), 0, len(arr))
		for i, e := range arr {
			ev := reflect.New(dst.Type().Elem()).Elem()
			if err := decodeInto(e, ev, fmt.Sprintf("%s[%d]", path, i), enum, missing); err != nil {
				return err
			}
			if enum != "" && ev.Int() == -1 {
				continue
			}
			out = reflect.Append(out, ev)
		}
		dst.Set(out)
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			if _, isArray := v.([]any); isArray {
				// The master reads a map as its entries and then trips over
				// the entry's value (13-quota-limits-and-offers.txt).
				return &jsonError{"Not expecting a JSON string for field 'value'"}
			}
			return &jsonError{fmt.Sprintf("Not expecting a JSON %s for field '%s'", kindName(v), fieldName)}
		}
		m := reflect.MakeMapWithSize(dst.Type(), len(obj))
		for k, e := range obj {
			ev := reflect.New(dst.Type().Elem()).Elem()
			if err := decodeInto(e, ev, path+"."+k, "", missing); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(k).Convert(dst.Type().Key()), ev)
		}
		dst.Set(m)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return &jsonError{fmt.Sprintf("Not expecting a JSON %s for field '%s'", kindName(v), fieldName)}
		}
		dst.SetString(s)
	case reflect.Bool:
		bv, ok := v.(bool)
		if !ok {
			return &jsonError{fmt.Sprintf("Not expecting a JSON %s for field '%s'", kindName(v), fieldName)}
		}
		dst.SetBool(bv)
	case reflect.Int32, reflect.Int64:
		if enum != "" {
			s, ok := v.(string)
			if !ok {
				return &jsonError{fmt.Sprintf("Not expecting a JSON %s for field '%s'", kindName(v), fieldName)}
			}
			n, ok := proto.EnumValueMap(enum)[s]
			if !ok {
				dst.SetInt(-1)
				return nil
			}
			dst.SetInt(int64(n))
			return nil
		}
		n, err := number(v, fieldName)
		if err != nil {
			return err
		}
		i, perr := strconv.ParseInt(n.String(), 10, 64)
		if perr != nil {
			f, _ := n.Float64()
			i = int64(f)
		}
		dst.SetInt(i)
	case reflect.Uint32, reflect.Uint64:
		n, err := number(v, fieldName)
		if err != nil {
			return err
		}
		u, perr := strconv.ParseUint(n.String(), 10, 64)
		if perr != nil {
			f, _ := n.Float64()
			u = uint64(f)
		}
		dst.SetUint(u)
	case reflect.Float64, reflect.Float32:
		n, err := number(v, fieldName)
		if err != nil {
			return err
		}
		f, _ := n.Float64()
		dst.SetFloat(f)
	}
	return nil
}

func number(v any, field string) (json.Number, error) {
	switch x := v.(type) {
	case json.Number:
		return x, nil
	case string:
		// The master parses the string as JSON and reports where that failed.
		if _, err := strconv.ParseFloat(x, 64); err == nil {
			return json.Number(x), nil
		}
		near := x
		if len(near) > 0 {
			near = near[1:]
		}
		return "", &jsonError{fmt.Sprintf("Failed to parse '%s' as a JSON number for field '%s': syntax error at line 1 near: %s", x, field, near)}
	}
	return "", &jsonError{fmt.Sprintf("Not expecting a JSON %s for field '%s'", kindName(v), field)}
}

// recordIO frames one record: decimal length, newline, bytes.
func recordIO(rec []byte) []byte {
	out := make([]byte, 0, len(rec)+12)
	out = strconv.AppendInt(out, int64(len(rec)), 10)
	out = append(out, '\n')
	return append(out, rec...)
}
