package dispatcher

import (
	"strings"
	"testing"
)

// FuzzDecodeSubmit feeds POST /v1/jobs bodies to its decoding: it never
// panics, and what it accepts is a valid spec without the savepoint field
// (what the master gets), with the savepoint taken out.
func FuzzDecodeSubmit(f *testing.F) {
	f.Add([]byte(goodSpec), "")
	f.Add([]byte(goodYAML), "")
	f.Add([]byte(goodYAML), "file:///sp/other")
	f.Add([]byte(strings.Replace(goodSpec, `"name"`, `"savepoint": "file:///sp/1", "name"`, 1)), "")
	f.Add([]byte(strings.Replace(goodSpec, `"name"`, `"savepoint": 7, "name"`, 1)), "")
	f.Add([]byte(`{"savepoint": null}`), "")
	f.Add([]byte("savepoint: [a]\nname: x"), "")
	f.Add([]byte(`{"name": "t", "nodes": [`), "")
	f.Add([]byte("\xff\xfe{"), "")
	f.Add([]byte(""), "x")
	f.Add([]byte("- a\n- b"), "")
	f.Fuzz(func(t *testing.T, body []byte, query string) {
		specBytes, name, sp, err := decodeSubmit(body, query)
		if err != nil {
			if specBytes != nil || name != "" || sp != "" {
				t.Fatalf("an error with results: %v", err)
			}
			return
		}
		if query != "" && sp != query {
			t.Fatalf("savepoint %q, the query gave %q", sp, query)
		}
		j, err := validate(specBytes)
		if err != nil {
			t.Fatalf("accepted a spec that does not validate: %v", err)
		}
		if j.Name != name {
			t.Fatalf("name %q, the spec's is %q", name, j.Name)
		}
		if _, again, err := splitSavepoint(specBytes); err != nil || again != "" {
			t.Fatalf("the stored spec still has a savepoint field (%q, %v)", again, err)
		}
	})
}

// FuzzDecodeRescale: a rescale body is a strict {"parallelism": N ≥ 1}.
func FuzzDecodeRescale(f *testing.F) {
	for _, s := range []string{`{"parallelism": 3}`, `{"parallelism": 0}`, `{"parallelism": -1}`, `{"parallelism": 1e99}`,
		`{"parallelism": "3"}`, `{"p": 3}`, `{"parallelism": 3}{}`, `[]`, `null`, ``, `{"parallelism": 2, "parallelism": 5}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeRescale(b)
		if err == nil && req.Parallelism < 1 {
			t.Fatalf("accepted parallelism %d", req.Parallelism)
		}
	})
}
