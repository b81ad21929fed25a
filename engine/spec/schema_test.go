package spec

import (
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// repoRoot is found from this file's path, so the test runs from any
// working directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("runtime.Caller failed")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	path := filepath.Join(repoRoot(t), "docs", "job.schema.json")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource("job.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("job.schema.json")
	if err != nil {
		t.Fatalf("compile %s: %v", path, err)
	}
	return s
}

// specFiles lists the JSON and YAML files of examples/ and testdata/.
func specFiles(t *testing.T) []string {
	t.Helper()
	root := repoRoot(t)
	var files []string
	for _, dir := range []string{filepath.Join(root, "examples"), filepath.Join(root, "engine", "spec", "testdata")} {
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() && p == filepath.Join(root, "examples", "marathon") {
				return filepath.SkipDir // Marathon app definitions and a DC/OS package, not job specs
			}
			if err != nil || d.IsDir() {
				return nil
			}
			switch strings.ToLower(filepath.Ext(p)) {
			case ".json", ".yaml", ".yml":
				files = append(files, p)
			}
			return nil
		})
	}
	return files
}

// TestSchemaValidatesExamples checks every example against
// docs/job.schema.json, and that the Go parser accepts it too.
func TestSchemaValidatesExamples(t *testing.T) {
	s := compileSchema(t)
	files := specFiles(t)
	if len(files) < 4 {
		t.Fatalf("found only %d spec files: %v", len(files), files)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tree, err := parseTree(data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if err := s.Validate(tree); err != nil {
			t.Errorf("%s: schema: %v", f, err)
		}
		if _, err := Parse(data, nil); err != nil {
			t.Errorf("%s: Parse: %v", f, err)
		}
	}
}

// TestSchemaRejects checks that the schema catches what the parser and the
// planner reject, per node type.
func TestSchemaRejects(t *testing.T) {
	s := compileSchema(t)
	check := func(name string, sets []string, valid bool) {
		t.Helper()
		tree, err := parseTree([]byte(base))
		if err != nil {
			t.Fatal(err)
		}
		tree, err = ApplySets(tree, sets)
		if err != nil {
			t.Fatal(err)
		}
		err = s.Validate(tree)
		if valid && err != nil {
			t.Errorf("%s: schema rejects a valid job: %v", name, err)
		}
		if !valid && err == nil {
			t.Errorf("%s: schema accepts %v", name, sets)
		}
	}
	check("base", nil, true)
	check("custom type with any params", []string{"nodes.out.type=myCompanySink", `nodes.out.params={"anything":[1]}`}, true)
	check("duration ms", []string{"checkpoint.interval=1500", `nodes.win.params.size="250"`}, true)
	check("string input with side output", []string{"nodes.out.inputs.0=win.late", "nodes.win.params.lateOutput=late"}, true)

	check("top unknown", []string{"paralelism=2"}, false)
	check("name", []string{"name=-x"}, false)
	check("checkpoint unknown", []string{"checkpoint.intervall=1s"}, false)
	check("bad duration", []string{"checkpoint.interval=2 seconds"}, false)
	check("negative duration", []string{"checkpoint.interval=-1"}, false)
	check("mode", []string{"checkpoint.mode=exactly_once"}, false)
	check("storage", []string{"checkpoint.storage=s3://b/x"}, false)
	check("state backend", []string{"stateBackend=rocksdb"}, false)
	check("restart", []string{"restart.strategy=always"}, false)
	check("fixed-delay", []string{"restart.attempts=5", "restart.delay=2s"}, true)
	check("failure-rate", []string{"restart.strategy=failure-rate", "restart.maxFailuresPerInterval=3", "restart.failureRateInterval=5m", "restart.delay=10s"}, true)
	check("exponential-delay", []string{"restart.strategy=exponential-delay", "restart.initialBackoff=1s", "restart.maxBackoff=1m",
		"restart.backoffMultiplier=2", "restart.resetBackoffThreshold=1h", "restart.jitterFactor=0", "restart.attempts=10"}, true)
	check("none with other fields", []string{"restart.strategy=none", "restart.attempts=3", "restart.maxBackoff=1s"}, true)
	check("failure-rate 0", []string{"restart.strategy=failure-rate", "restart.maxFailuresPerInterval=0"}, false)
	check("multiplier", []string{"restart.strategy=exponential-delay", "restart.backoffMultiplier=0.5"}, false)
	check("jitter", []string{"restart.strategy=exponential-delay", "restart.jitterFactor=2"}, false)
	check("exponential field on default strategy", []string{"restart.maxBackoff=1m"}, false)
	check("attempts on failure-rate", []string{"restart.strategy=failure-rate", "restart.attempts=3"}, false)
	check("delay on exponential-delay", []string{"restart.strategy=exponential-delay", "restart.delay=3s"}, false)
	check("heartbeat", []string{"heartbeat.interval=2s", "heartbeat.timeout=10s"}, true)
	check("heartbeat unknown", []string{"heartbeat.period=2s"}, false)
	check("spares", []string{"resources.spareTaskManagers=2"}, true)
	check("spares negative", []string{"resources.spareTaskManagers=-1"}, false)
	check("quota limit", []string{`resources.quota={"limit":{"cpus":4,"mem":8192}}`}, true)
	check("quota limit negative", []string{`resources.quota={"limit":{"cpus":-1}}`}, false)
	check("quota limit empty", []string{`resources.quota={"limit":{}}`}, false)
	check("constraint", []string{`constraints=[["hostname","UNIQUE","x"]]`}, false)
	check("node unknown", []string{"nodes.win.param={}"}, false)
	check("node id", []string{"nodes.out.id=a.b"}, false)
	check("hash without keys", []string{"nodes.win.inputs.0.partition=hash"}, false)
	check("keys without hash", []string{`nodes.win.inputs.0.keys=["key"]`}, false)
	check("input unknown", []string{"nodes.win.inputs.0.partiton=hash"}, false)

	check("sequence with inputs", []string{`nodes.src.inputs=["out"]`}, false)
	check("sequence keys 0", []string{"nodes.src.params.keys=0"}, false)
	check("sequence unknown", []string{"nodes.src.params.row=1"}, false)
	check("sequence watermark", []string{"nodes.src.params.watermark.outOfOrderness=1s", "nodes.src.params.watermark.idle=1s"}, false)
	check("keyBy without keys", []string{"nodes.kb.params={}"}, false)
	check("window without type", []string{"nodes.win.params.type=null"}, false)
	check("tumbling without size", []string{"nodes.win.params.size=null"}, false)
	check("tumbling with gap", []string{"nodes.win.params.gap=1s"}, false)
	check("sliding without slide", []string{"nodes.win.params.type=sliding"}, false)
	check("sliding", []string{"nodes.win.params.type=sliding", "nodes.win.params.slide=500ms"}, true)
	check("session", []string{"nodes.win.params.type=session", "nodes.win.params.size=null", "nodes.win.params.gap=5m"}, true)
	check("session with size", []string{"nodes.win.params.type=session", "nodes.win.params.gap=5m"}, false)
	check("count with field", []string{"nodes.win.params.aggregates.0.field=id"}, false)
	check("sum without field", []string{"nodes.win.params.aggregates.1.field=null"}, false)
	check("unknown fn", []string{"nodes.win.params.aggregates.1.fn=median"}, false)
	check("no aggregates", []string{"nodes.win.params.aggregates=[]"}, false)
	check("window two inputs", []string{"nodes.win.inputs.1=src"}, false)
	check("print prefix", []string{"nodes.out.params.prefix=> "}, true)
	check("print unknown", []string{"nodes.out.params.prefx=x"}, false)
	check("filter", []string{"nodes.out.type=filter", `nodes.out.params={"expr":"id > 3"}`}, true)
	check("filter without expr", []string{"nodes.out.type=filter"}, false)
	check("project", []string{"nodes.out.type=project", `nodes.out.params={"fields":[{"name":"x","expr":"id*2"}]}`}, true)
	check("project without expr", []string{"nodes.out.type=project", `nodes.out.params={"fields":[{"name":"x"}]}`}, false)
	check("union one input", []string{"nodes.out.type=union"}, false)
	check("union", []string{"nodes.out.type=union", "nodes.out.inputs.1=src"}, true)
	check("union params", []string{"nodes.out.type=union", "nodes.out.inputs.1=src", "nodes.out.params.x=1"}, false)
	check("discard", []string{"nodes.out.type=discard", "nodes.out.inputs.1=src"}, true)
	check("file sink", []string{"nodes.out.type=file", "nodes.out.params.path=/tmp/o"}, true)
	check("file sink without path", []string{"nodes.out.type=file"}, false)
	check("file sink with source params", []string{"nodes.out.type=file", "nodes.out.params.path=/tmp/o", `nodes.out.params.fields=[{"name":"a","type":"string"}]`}, false)
	check("file source", []string{"nodes.src.type=file", `nodes.src.params={"path":"/in/*.jsonl","fields":[{"name":"a","type":"int64"}],"eventTime":"a"}`}, true)
	check("file source without fields", []string{"nodes.src.type=file", `nodes.src.params={"path":"/in"}`}, false)
	check("file source bad type", []string{"nodes.src.type=file", `nodes.src.params={"path":"/in","fields":[{"name":"a","type":"int"}]}`}, false)
	check("datagen", []string{"nodes.src.type=datagen", `nodes.src.params={"fields":[{"name":"a","type":"int64","min":0,"max":9}]}`}, true)
	check("datagen without fields", []string{"nodes.src.type=datagen", `nodes.src.params={"rows":1}`}, false)
	check("datagen bad field", []string{"nodes.src.type=datagen", `nodes.src.params={"fields":[{"name":"a","type":"int64","lenght":3}]}`}, false)
}

// TestDocExample keeps the full example of docs/job-spec.md equal to
// testdata/window.json.
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "job-spec.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "## Full example")
	if !ok {
		t.Fatal("docs/job-spec.md has no \"## Full example\" section")
	}
	_, rest, ok = strings.Cut(rest, "```json\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no json block in the full example")
	}
	fromDoc, err := Parse([]byte(block), nil)
	if err != nil {
		t.Fatalf("doc example: %v", err)
	}
	want, err := ParseFile("testdata/window.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromDoc, want) {
		t.Error("the doc's full example differs from testdata/window.json")
	}
}
