package nodes

import (
	"fmt"

	"github.com/sluice-stream/sluice/engine/row"
)

// SchemaField is a source's declared field ({name, type}) in its params.
type SchemaField struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// ParseFields turns a source's declared fields into its schema; errors name params.fields.
func ParseFields(fs []SchemaField) (*row.Schema, error) {
	if len(fs) == 0 {
		return nil, fmt.Errorf("params.fields: required (the schema: a list of {name, type})")
	}
	fields := make([]row.Field, len(fs))
	for i, f := range fs {
		t, err := row.ParseType(f.Type)
		if err != nil {
			return nil, fmt.Errorf("params.fields[%d] (%q).type: %w", i, f.Name, err)
		}
		fields[i] = row.Field{Name: f.Name, Type: t}
	}
	s, err := row.NewSchema(fields...)
	if err != nil {
		return nil, fmt.Errorf("params.fields: %w", err)
	}
	return s, nil
}
