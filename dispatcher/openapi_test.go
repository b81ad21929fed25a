package dispatcher

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestOpenAPI checks docs/dispatcher-openapi.yaml against the server: the
// same routes (method and path), every $ref resolves, and a request to
// each documented operation is served (not the catch-all's 404) with a
// documented status, its JSON fields all documented.
func TestOpenAPI(t *testing.T) {
	b, err := os.ReadFile("../docs/dispatcher-openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("openapi: %q, want 3.x", v)
	}
	checkRefs(t, doc, doc, "")

	// The same routes.
	paths := doc["paths"].(map[string]any)
	var documented, served []string
	ops := map[string]map[string]any{} // "METHOD path" → operation
	for p, item := range paths {
		for m, op := range item.(map[string]any) {
			if m == "parameters" {
				continue
			}
			k := strings.ToUpper(m) + " " + p
			documented = append(documented, k)
			ops[k] = op.(map[string]any)
		}
	}
	for _, r := range routes {
		// OpenAPI names a wildcard {path}; the mux {path...}.
		served = append(served, r.method+" "+strings.ReplaceAll(r.path, "...}", "}"))
	}
	sort.Strings(documented)
	sort.Strings(served)
	if strings.Join(documented, "\n") != strings.Join(served, "\n") {
		t.Fatalf("documented routes:\n%s\n\nserved routes:\n%s", strings.Join(documented, "\n"), strings.Join(served, "\n"))
	}

	// Each operation, against the real handler (a fake master).
	e := newEnv(t, "tok")
	id := e.submit(goodSpec)
	e.waitState(id, Running)
	order := []string{"POST /v1/jobs", "GET /v1/jobs", "GET /v1/jobs/{id}", "POST /v1/jobs/{id}/savepoints",
		"POST /v1/jobs/{id}/skip-backlog", "GET /v1/jobs/{id}/master/{path}", "GET /v1/jobs/{id}/progress", "POST /v1/jobs/{id}/rescale", "POST /v1/jobs/{id}/upgrade", "GET /healthz", "GET /metrics", "DELETE /v1/jobs/{id}"}
	if len(order) != len(served) {
		t.Fatalf("the test requests %d operations, the server has %d", len(order), len(served))
	}
	// (An upgrade with a bad spec: upgrade_test.go checks a 200's fields.)
	bodies := map[string]string{"POST /v1/jobs": goodSpec, "POST /v1/jobs/{id}/rescale": `{"parallelism": 1}`, "POST /v1/jobs/{id}/upgrade": `{}`}
	replies := map[string]string{"POST /v1/jobs": "SubmitReply", "GET /v1/jobs/{id}": "JobStatus", "POST /v1/jobs/{id}/savepoints": "SavepointReply",
		"POST /v1/jobs/{id}/rescale": "RescaleReply", "DELETE /v1/jobs/{id}": "CancelReply",
		"GET /v1/jobs/{id}/progress": "ProgressReply"}
	for _, k := range order {
		op := ops[k]
		if op == nil {
			t.Fatalf("%s is not documented", k)
		}
		method, path, _ := strings.Cut(k, " ")
		if k == "POST /v1/jobs/{id}/rescale" {
			e.waitState(id, Running)
		}
		req, _ := http.NewRequest(method, e.srv.URL+strings.NewReplacer("{id}", id, "{path}", "v1/status").Replace(path), strings.NewReader(bodies[k]))
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), "no route") {
			t.Fatalf("%s: not served: %s", k, body)
		}
		codes := op["responses"].(map[string]any)
		if _, ok := codes[strconv.Itoa(resp.StatusCode)]; !ok {
			t.Fatalf("%s answered %d, not documented: %s", k, resp.StatusCode, body)
		}
		if name := replies[k]; name != "" && resp.StatusCode/100 == 2 {
			var got map[string]any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("%s: %v", k, err)
			}
			props := schemaProps(doc, "#/components/schemas/"+name)
			for f := range got {
				if !props[f] {
					t.Errorf("%s: field %q is not in the schema %s", k, f, name)
				}
			}
		}
	}
}

// checkRefs fails on a $ref that does not resolve.
func checkRefs(t *testing.T, doc map[string]any, v any, at string) {
	t.Helper()
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if k == "$ref" {
				if resolve(doc, c.(string)) == nil {
					t.Errorf("%s: $ref %s does not resolve", at, c)
				}
				continue
			}
			checkRefs(t, doc, c, at+"/"+k)
		}
	case []any:
		for i, c := range x {
			checkRefs(t, doc, c, at+"/"+strconv.Itoa(i))
		}
	}
}

func resolve(doc map[string]any, ref string) map[string]any {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil
	}
	var cur any = doc
	for _, seg := range strings.Split(p, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[seg]
	}
	m, _ := cur.(map[string]any)
	return m
}

// schemaProps lists a schema's properties, through allOf and $ref.
func schemaProps(doc map[string]any, ref string) map[string]bool {
	out := map[string]bool{}
	s := resolve(doc, ref)
	if ps, ok := s["properties"].(map[string]any); ok {
		for k := range ps {
			out[k] = true
		}
	}
	if all, ok := s["allOf"].([]any); ok {
		for _, a := range all {
			am := a.(map[string]any)
			if r, ok := am["$ref"].(string); ok {
				for k := range schemaProps(doc, r) {
					out[k] = true
				}
				continue
			}
			for k := range am["properties"].(map[string]any) {
				out[k] = true
			}
		}
	}
	return out
}
