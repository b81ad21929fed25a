package marathon

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// schemaDir is ../shared/schemas beside the repository, found from this
// file's path so the tests run from any directory.
func schemaDir(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("runtime.Caller failed")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "shared", "schemas")
}

// compile loads one of the public schemas. They are written for JSON
// Schema draft 4: the Universe ones name no draft, and Marathon's says
// "http://json-schema.org/schema#" (the latest draft, which was draft 4
// for the validator Marathon used) while it relies on draft 4's array form
// of items, which later drafts dropped. So each is read as draft 4.
func compile(t *testing.T, rel string) *jsonschema.Schema {
	t.Helper()
	path := filepath.Join(schemaDir(t), rel)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the public schemas (see shared/schemas/README.md): %v", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if m, ok := doc.(map[string]any); ok {
		delete(m, "$schema") // in memory only: the file stays as published
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft4)
	c.AssertFormat()
	if err := c.AddResource(rel, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(rel)
	if err != nil {
		t.Fatalf("compile %s: %v", rel, err)
	}
	return s
}

// validate checks data, JSON, against the schema.
func validate(t *testing.T, s *jsonschema.Schema, what string, data []byte) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s is not JSON: %v\n%s", what, err, data)
	}
	if err := s.Validate(v); err != nil {
		t.Errorf("%s: %v\n%s", what, err, data)
	}
}

// TestMarathonSchemaNeedsDraft4 pins why compile reads Marathon's schema as
// draft 4: as published, this library takes it for the latest draft and
// rejects it (items given as an array).
func TestMarathonSchemaNeedsDraft4(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(schemaDir(t), "marathon", "AppDefinition.json"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("AppDefinition.json", doc); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compile("AppDefinition.json"); err == nil {
		t.Fatal("AppDefinition.json compiles as published: compile need not read it as draft 4 any more")
	}
}

// compileDoc compiles a schema given as bytes (a package's config.json)
// as draft 4, as Cosmos reads it.
func compileDoc(t *testing.T, data []byte) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := doc.(map[string]any); ok {
		delete(m, "$schema")
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft4)
	if err := c.AddResource("config.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("config.json")
	if err != nil {
		t.Fatalf("config.json as a schema: %v", err)
	}
	return s
}

var readFile = os.ReadFile

// TestMarathonSchemasBite: the compiled public schemas do reject what they
// should, so the validations above mean something.
func TestMarathonSchemasBite(t *testing.T) {
	for _, c := range []struct{ schema, doc string }{
		{"marathon/AppDefinition.json", `{"id": "/sluice", "cmd": "a", "args": ["b"]}`},
		{"marathon/AppDefinition.json", `{"id": "/sluice", "cmd": "a", "cpus": -1}`},
		{"marathon/AppDefinition.json", `{"id": "/Sluice", "cmd": "a"}`},
		{"marathon/AppDefinition.json", `{"id": "/sluice", "cmd": "a", "upgradeStrategy": {"minimumHealthCapacity": 2}}`},
		{"marathon/AppDefinition.json", `{"id": "/sluice", "cmd": "a", "healthChecks": [{"protocol": "GOPHER"}]}`},
		{"marathon/AppDefinition.json", `{"id": "/sluice", "cmd": "a", "env": {"A": 1}}`},
		{"universe/package-schema.json", `{"packagingVersion": "4.0", "name": "sluice", "version": "1", "maintainer": "m", "tags": []}`},
		{"universe/package-schema.json", `{"packagingVersion": "4.0", "name": "sluice", "version": "1", "maintainer": "m", "description": "d", "tags": [], "manager": {}}`},
		{"universe/config-schema.json", `{"type": "object", "properties": {"a": {"type": "strin"}}}`},
		{"universe/v3-resource-schema.json", `{"assets": {"uris": {"sluice": 1}}}`},
	} {
		s := compile(t, c.schema)
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(c.doc))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(v); err == nil {
			t.Errorf("%s accepts %s", c.schema, c.doc)
		}
	}
}
