package dispatcher

import (
	"bytes"
	"encoding/json"
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/sluice-stream/sluice/engine/plan"
	"github.com/sluice-stream/sluice/engine/spec"
)

// splitSavepoint takes the optional top-level "savepoint" field out of a
// submitted spec (JSON or YAML, told apart as engine/spec does: '{' first
// is JSON). A body that does not decode as an object is returned as it is:
// spec.Parse then says what is wrong with it, with its position.
func splitSavepoint(body []byte) ([]byte, string, error) {
	t := bytes.TrimSpace(body)
	if len(t) == 0 {
		return body, "", nil
	}
	if t[0] == '{' {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(t, &m); err != nil {
			return body, "", nil
		}
		raw, ok := m["savepoint"]
		if !ok {
			return body, "", nil
		}
		var sp string
		if err := json.Unmarshal(raw, &sp); err != nil {
			return nil, "", fmt.Errorf("savepoint: want a string (a savepoint's path), got %s", raw)
		}
		delete(m, "savepoint")
		out, err := json.Marshal(m)
		if err != nil {
			return nil, "", fmt.Errorf("re-encoding the spec: %w", err)
		}
		return out, sp, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(t, &doc); err != nil || doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return body, "", nil
	}
	mp := doc.Content[0]
	for i := 0; i+1 < len(mp.Content); i += 2 {
		if mp.Content[i].Value != "savepoint" {
			continue
		}
		v := mp.Content[i+1]
		if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			return nil, "", fmt.Errorf("savepoint: want a string (a savepoint's path)")
		}
		sp := v.Value
		mp.Content = append(mp.Content[:i], mp.Content[i+2:]...)
		out, err := yaml.Marshal(&doc)
		if err != nil {
			return nil, "", fmt.Errorf("re-encoding the spec: %w", err)
		}
		return out, sp, nil
	}
	return body, "", nil
}

// validate parses and plans a spec the way its master will: every error a
// master would stop at names its node and field here, before anything is
// stored.
func validate(specBytes []byte) (*spec.Job, error) {
	j, err := spec.Parse(specBytes, nil)
	if err != nil {
		return nil, err
	}
	if _, err := plan.Build(j); err != nil {
		return nil, err
	}
	return j, nil
}

// decodeSubmit reads a POST /v1/jobs body: the spec to store, its job's
// name and the savepoint to start from (the body's "savepoint" field or
// the query's). Any error is the client's (400).
func decodeSubmit(body []byte, querySavepoint string) (specBytes []byte, name, savepoint string, err error) {
	specBytes, savepoint, err = splitSavepoint(body)
	if err != nil {
		return nil, "", "", err
	}
	if querySavepoint != "" {
		if savepoint != "" && savepoint != querySavepoint {
			return nil, "", "", fmt.Errorf("savepoint: given twice (field %q, query %q)", savepoint, querySavepoint)
		}
		savepoint = querySavepoint
	}
	j, err := validate(specBytes)
	if err != nil {
		return nil, "", "", fmt.Errorf("invalid job spec: %w", err)
	}
	return specBytes, j.Name, savepoint, nil
}
