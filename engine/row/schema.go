package row

import (
	"fmt"
	"strings"
)

// Type is a column's declared type.
type Type uint8

const (
	Invalid Type = iota
	Int64
	Float64
	String
	Bool
	Bytes
	// Timestamp is epoch milliseconds, stored like Int64.
	Timestamp
)

var typeNames = [...]string{"invalid", "int64", "float64", "string", "bool", "bytes", "timestamp"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// ParseType accepts the names used in job specs.
func ParseType(s string) (Type, error) {
	for i, n := range typeNames {
		if i > 0 && n == s {
			return Type(i), nil
		}
	}
	return Invalid, fmt.Errorf("unknown type %q (want one of %s)", s, strings.Join(typeNames[1:], ", "))
}

// IsInt reports whether values of t live in Column.Ints.
func (t Type) IsInt() bool { return t == Int64 || t == Timestamp }

// Field is a named, typed column.
type Field struct {
	Name string `json:"name"`
	Type Type   `json:"type"`
}

// Schema is an ordered list of fields. It is immutable once built.
type Schema struct {
	Fields []Field
	index  map[string]int
}

// NewSchema builds a schema; field names must be unique.
func NewSchema(fields ...Field) (*Schema, error) {
	s := &Schema{Fields: fields, index: make(map[string]int, len(fields))}
	for i, f := range fields {
		if f.Name == "" {
			return nil, fmt.Errorf("field %d has no name", i)
		}
		if f.Type == Invalid || int(f.Type) >= len(typeNames) {
			return nil, fmt.Errorf("field %q has no valid type", f.Name)
		}
		if _, dup := s.index[f.Name]; dup {
			return nil, fmt.Errorf("field %q is declared twice", f.Name)
		}
		s.index[f.Name] = i
	}
	return s, nil
}

// MustSchema is NewSchema for fixed schemas in code.
func MustSchema(fields ...Field) *Schema {
	s, err := NewSchema(fields...)
	if err != nil {
		panic(err)
	}
	return s
}

// Index returns the position of the named field, or -1.
func (s *Schema) Index(name string) int {
	if i, ok := s.index[name]; ok {
		return i
	}
	return -1
}

// Len is the number of fields.
func (s *Schema) Len() int { return len(s.Fields) }

// Equal reports whether two schemas have the same names and types in order.
func (s *Schema) Equal(o *Schema) bool {
	if len(s.Fields) != len(o.Fields) {
		return false
	}
	for i := range s.Fields {
		if s.Fields[i] != o.Fields[i] {
			return false
		}
	}
	return true
}

func (s *Schema) String() string {
	var sb strings.Builder
	sb.WriteByte('{')
	for i, f := range s.Fields {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(f.Name)
		sb.WriteByte(' ')
		sb.WriteString(f.Type.String())
	}
	sb.WriteByte('}')
	return sb.String()
}
