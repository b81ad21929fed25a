package marathon

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/cbroglie/mustache"
)

// merge lays user options over the defaults, object by object, as Cosmos
// does for `dcos package install --options=FILE`.
func merge(defaults, user any) any {
	d, ok1 := defaults.(map[string]any)
	u, ok2 := user.(map[string]any)
	if !ok1 || !ok2 {
		return user
	}
	out := map[string]any{}
	for k, v := range d {
		out[k] = v
	}
	for k, v := range u {
		out[k] = merge(d[k], v)
	}
	return out
}

// TestMarathonExampleOptions installs the committed example package with
// examples/marathon/options.json as Cosmos would: the options pass
// config.json, the rendered app passes AppDefinition.json, and it is the app
// `sluice marathon app` writes for the same settings.
func TestMarathonExampleOptions(t *testing.T) {
	dir := filepath.Join("..", "examples", "marathon")
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cfg := read("package/config.json")
	options := merge(defaults(decode(t, cfg).(map[string]any)), decode(t, read("options.json")))
	validate(t, compileDoc(t, cfg), "options.json over config.json's defaults", mustJSON(t, options))

	saved := mustache.AllowMissingVariables
	mustache.AllowMissingVariables = false
	defer func() { mustache.AllowMissingVariables = saved }()
	tmpl, err := mustache.ParseString(string(read("package/marathon.json.mustache")))
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := tmpl.Render(options)
	if err != nil {
		t.Fatal(err)
	}
	validate(t, compile(t, "marathon/AppDefinition.json"), "rendered with options.json", []byte(rendered))

	o := testOptions()
	o.Mem = 2048
	o.Principal, o.DCOSSecret, o.DCOSTokenSecret = "sluice", "sluice/mesos-secret", "sluice/api-token"
	want, err := AppJSON(o)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(decode(t, []byte(rendered)), decode(t, want)) {
		t.Errorf("rendered:\n%s\nwant:\n%s", rendered, want)
	}
}
