package spec

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse: Parse never panics, whatever the spec and overrides; a job it
// accepts has a topological order and survives a JSON round trip.
//
//	go test ./engine/spec -run '^$' -fuzz FuzzParse -fuzztime 60s
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.*")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "")
		f.Add(data, "parallelism=3\nnodes.out.params.path=/tmp/x")
	}
	f.Add([]byte(base), "checkpoint.interval=2s\nnodes.win.params.aggregates.0.field=x")
	f.Add([]byte(base), "nodes.win.inputs.0.partition=hash\nnodes.win.inputs.0.keys=[\"key\"]")
	f.Add([]byte(base), "nodes.kb.inputs.1=out")
	f.Add([]byte("name: a\nnodes: [{id: s, type: sequence}, {id: p, type: print, inputs: [s.x]}]\n"), "restart=null")
	f.Add([]byte("a: &a [*a]"), "")
	f.Add([]byte(`{"name":"x","nodes":[{"id":"a","type":"t","inputs":[{"from":"a"}]}]}`), "")
	f.Fuzz(func(t *testing.T, data []byte, sets string) {
		var list []string
		if sets != "" {
			list = strings.Split(sets, "\n")
		}
		j, err := Parse(data, list)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if _, err := j.TopoOrder(); err != nil {
			t.Fatalf("valid job without a topological order: %v", err)
		}
		b, err := json.Marshal(j)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		j2, err := Parse(b, nil)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		if !reflect.DeepEqual(j, j2) {
			b2, _ := json.Marshal(j2)
			t.Fatalf("round trip differs:\n%s\n%s", b, b2)
		}
	})
}
