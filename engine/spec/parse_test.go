package spec

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// base is a small valid job the table tests modify with --set.
const base = `{
  "name": "t",
  "nodes": [
    {"id": "src", "type": "sequence", "params": {"rows": 10}},
    {"id": "kb", "type": "keyBy", "inputs": ["src"], "params": {"keys": ["key"]}},
    {"id": "win", "type": "window", "inputs": ["kb"], "params": {
      "type": "tumbling", "size": "1s",
      "aggregates": [{"name": "n", "fn": "count"}, {"name": "s", "fn": "sum", "field": "id"}]}},
    {"id": "out", "type": "print", "inputs": ["win"]}
  ]
}`

func mustParse(t *testing.T, data string, sets ...string) *Job {
	t.Helper()
	j, err := Parse([]byte(data), sets)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return j
}

func TestYAMLEqualsJSON(t *testing.T) {
	fromJSON, err := ParseFile("testdata/window.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	fromYAML, err := ParseFile("testdata/window.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromJSON, fromYAML) {
		a, _ := json.MarshalIndent(fromJSON, "", " ")
		b, _ := json.MarshalIndent(fromYAML, "", " ")
		t.Fatalf("JSON and YAML differ:\n%s\n---\n%s", a, b)
	}
	if fromJSON.Checkpoint.MinPause.D() != 5*time.Second || fromJSON.Checkpoint.Interval.D() != 30*time.Second {
		t.Errorf("durations: %+v", fromJSON.Checkpoint)
	}
	if got := fromJSON.Node("late").Inputs[0]; got.From != "win" || got.Output != "late" || got.Partition != Forward {
		t.Errorf("win.late input = %+v", got)
	}
	if got := fromJSON.Node("win").Inputs[0]; got.Partition != Hash || !reflect.DeepEqual(got.Keys, []string{"country"}) {
		t.Errorf("hash input = %+v", got)
	}
}

func TestTestdataParses(t *testing.T) {
	files, _ := filepath.Glob("testdata/*")
	examples, _ := filepath.Glob("../../examples/*")
	for _, f := range append(files, examples...) {
		if ext := filepath.Ext(f); ext != ".json" && ext != ".yaml" && ext != ".yml" {
			continue
		}
		if _, err := ParseFile(f, nil); err != nil {
			t.Errorf("%v", err)
		}
	}
}

func TestDefaults(t *testing.T) {
	j := mustParse(t, base)
	want := Job{
		Name:           "t",
		Parallelism:    1,
		MaxParallelism: 128,
		Checkpoint: Checkpoint{
			Mode:       ExactlyOnce,
			Timeout:    Duration(10 * time.Minute),
			Retained:   1,
			Storage:    DefaultStorage("t"),
			Savepoints: DefaultStorage("t") + "/savepoints",
		},
		StateBackend: Heap,
		Restart:      Restart{Strategy: FixedDelay, Attempts: 3, Delay: Duration(time.Second)},
		Heartbeat:    Heartbeat{Interval: Duration(time.Second), Timeout: Duration(4 * time.Second)},
	}
	got := *j
	got.Nodes = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
	}
	if want := "file://" + filepath.ToSlash(os.TempDir()) + "/sluice/t/checkpoints"; j.Checkpoint.Storage != want {
		t.Errorf("storage = %q, want %q", j.Checkpoint.Storage, want)
	}
	if j.Checkpoint.Interval != 0 {
		t.Errorf("interval default = %v, want 0", j.Checkpoint.Interval)
	}
	for _, n := range j.Nodes {
		for _, in := range n.Inputs {
			if in.Partition != Forward {
				t.Errorf("node %s: partition default %q", n.ID, in.Partition)
			}
		}
		if j.NodeParallelism(&n) != 1 {
			t.Errorf("node %s: parallelism %d", n.ID, j.NodeParallelism(&n))
		}
	}
	// none keeps attempts and delay at zero.
	j = mustParse(t, base, "restart.strategy=none")
	if j.Restart != (Restart{Strategy: NoRestart}) {
		t.Errorf("restart none: %+v", j.Restart)
	}
	// maxParallelism grows with a large parallelism, as in Flink.
	j = mustParse(t, base, "parallelism=200")
	if j.MaxParallelism != 512 {
		t.Errorf("maxParallelism for parallelism 200 = %d, want 512", j.MaxParallelism)
	}
	// Defaults are idempotent and Validate does not apply them.
	var bare Job
	bare.Name = "x"
	bare.Nodes = []Node{{ID: "a", Type: "sequence"}, {ID: "b", Type: "print", Inputs: []Input{{From: "a"}}}}
	if err := bare.Validate(); err != nil {
		t.Fatal(err)
	}
	if bare.Parallelism != 0 || bare.Nodes[1].Inputs[0].Partition != "" {
		t.Errorf("Validate modified the job: %+v", bare)
	}
	bare.ApplyDefaults()
	again := bare
	again.ApplyDefaults()
	if !reflect.DeepEqual(bare, again) {
		t.Error("ApplyDefaults is not idempotent")
	}
}

func TestSet(t *testing.T) {
	for _, tc := range []struct {
		sets  []string
		check func(j *Job) bool
	}{
		{[]string{"checkpoint.interval=2s"}, func(j *Job) bool { return j.Checkpoint.Interval.D() == 2*time.Second }},
		{[]string{"checkpoint.interval=1500"}, func(j *Job) bool { return j.Checkpoint.Interval.D() == 1500*time.Millisecond }},
		{[]string{"parallelism=4"}, func(j *Job) bool { return j.Parallelism == 4 }},
		{[]string{"parallelism=4", "parallelism=8"}, func(j *Job) bool { return j.Parallelism == 8 }},
		{[]string{"name=\"quoted\""}, func(j *Job) bool { return j.Name == "quoted" }},
		{[]string{"name=plain-1.0"}, func(j *Job) bool { return j.Name == "plain-1.0" }},
		{[]string{"checkpoint.mode=at-least-once"}, func(j *Job) bool { return j.Checkpoint.Mode == AtLeastOnce }},
		{[]string{"checkpoint.incremental=true", "stateBackend=badger"}, func(j *Job) bool { return j.Checkpoint.Incremental }},
		{[]string{"stateBackend=badger", "badger.memtableMiB=8"}, func(j *Job) bool { return j.Badger != nil && j.Badger.MemtableMiB == 8 }},
		{[]string{"checkpoint={\"interval\": \"3s\", \"retained\": 2}"}, func(j *Job) bool {
			return j.Checkpoint.Interval.D() == 3*time.Second && j.Checkpoint.Retained == 2
		}},
		{[]string{"restart.attempts=null"}, func(j *Job) bool { return j.Restart.Attempts == 3 }},
		{[]string{"resources.cpus=1.5"}, func(j *Job) bool { return j.Resources != nil && j.Resources.CPUs == 1.5 }},
		{[]string{"constraints=[[\"hostname\",\"UNIQUE\"]]"}, func(j *Job) bool { return len(j.Constraints) == 1 }},
		{[]string{"nodes.out.params.prefix=> "}, func(j *Job) bool { return string(j.Node("out").Params) == `{"prefix":"\u003e "}` }},
		{[]string{"nodes.src.params.rows=100"}, func(j *Job) bool { return string(j.Node("src").Params) == `{"rows":100}` }},
		{[]string{"nodes.src.parallelism=3"}, func(j *Job) bool { return j.Node("src").Parallelism == 3 }},
		{[]string{"nodes.win.params.aggregates.1.field=key"}, func(j *Job) bool {
			return strings.Contains(string(j.Node("win").Params), `{"field":"key","fn":"sum","name":"s"}`)
		}},
		{[]string{`nodes.win.params.aggregates.2={"name":"m","fn":"max","field":"id"}`}, func(j *Job) bool {
			return strings.Contains(string(j.Node("win").Params), `"name":"m"`)
		}},
		{[]string{"nodes.out.inputs.0=win"}, func(j *Job) bool { return j.Node("out").Inputs[0].From == "win" }},
		{[]string{`nodes.out.inputs.0={"from":"win","partition":"rebalance"}`}, func(j *Job) bool {
			return j.Node("out").Inputs[0].Partition == Rebalance
		}},
		{[]string{"nodes.win.inputs.0.partition=hash", `nodes.win.inputs.0.keys=["key"]`}, func(j *Job) bool {
			return j.Node("win").Inputs[0].Partition == Hash
		}},
		{[]string{"checkpoint.storage=file:///var/lib/sluice/chk"}, func(j *Job) bool {
			return j.Checkpoint.Storage == "file:///var/lib/sluice/chk" && j.Checkpoint.Savepoints == "file:///var/lib/sluice/chk/savepoints"
		}},
		{[]string{"name=a=b.c"}, nil}, // "=" only splits once: name "a=b.c" is invalid; checked below
	} {
		j, err := Parse([]byte(base), tc.sets)
		if tc.check == nil {
			if err == nil || !strings.Contains(err.Error(), `"a=b.c"`) {
				t.Errorf("%v: err = %v", tc.sets, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.sets, err)
			continue
		}
		if !tc.check(j) {
			b, _ := json.Marshal(j)
			t.Errorf("%v: not applied: %s", tc.sets, b)
		}
	}
	// The same overrides work on YAML.
	j, err := ParseFile("testdata/files.yaml", []string{"nodes.out.params.path=/tmp/out", "nodes.web.params.fields.2={\"name\":\"x\",\"type\":\"bool\"}"})
	if err != nil {
		t.Fatal(err)
	}
	if p := string(j.Node("out").Params); p != `{"path":"/tmp/out"}` {
		t.Errorf("out params = %s", p)
	}
	if !strings.Contains(string(j.Node("web").Params), `{"name":"x","type":"bool"}`) {
		t.Errorf("web params = %s", j.Node("web").Params)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string // default base
		sets []string
		want []string // substrings of the error
	}{
		// syntax
		{name: "empty", data: "  \n", want: []string{"empty job spec"}},
		{name: "json syntax", data: "{\n  \"name\": \"x\",\n  nodes: []\n}", want: []string{"JSON line 3, column 3"}},
		{name: "json truncated", data: `{"name": "x"`, want: []string{"unexpected end of input"}},
		{name: "json trailing", data: `{"name": "x"} {}`, want: []string{"after the top-level value"}},
		{name: "json duplicate", data: `{"name": "x", "name": "y"}`, want: []string{`duplicate key "name"`}},
		{name: "yaml syntax", data: "name: x\nnodes: [\n", want: []string{"YAML"}},
		{name: "yaml duplicate", data: "name: x\nname: y\n", want: []string{"YAML", `"name" already defined`}},
		{name: "yaml two docs", data: "name: x\n---\nname: y\n", want: []string{"one document"}},
		{name: "not an object", data: "[1, 2]", want: []string{"a job spec is an object", "an array"}},
		{name: "yaml scalar", data: "hello", want: []string{"a job spec is an object", `string "hello"`}},
		{name: "yaml nan", data: "name: x\nparallelism: .nan\n", want: []string{"not a valid number"}},

		// --set
		{name: "set no equals", sets: []string{"parallelism"}, want: []string{`--set "parallelism": want KEY=VALUE`}},
		{name: "set empty segment", sets: []string{"checkpoint..interval=1s"}, want: []string{"bad key"}},
		{name: "set missing node", sets: []string{"nodes.srcc.params.rows=1"}, want: []string{`--set nodes.srcc.params.rows`, `no node with id "srcc"`}},
		{name: "set into scalar", sets: []string{"name.first=x"}, want: []string{"--set name.first", `name is string "t", not an object or list`}},
		{name: "set bad index", sets: []string{"nodes.win.params.aggregates.x.field=y"}, want: []string{`"x" is not an index`}},
		{name: "set index range", sets: []string{"nodes.win.params.aggregates.5.field=y"}, want: []string{"index 5 is out of range"}},
		{name: "set unknown key", sets: []string{"checkpoint.intervall=2s"}, want: []string{`checkpoint: unknown field "intervall" (did you mean "interval"?)`}},

		// strict decoding
		{name: "top unknown", sets: []string{"paralelism=2"}, want: []string{`unknown field "paralelism" (did you mean "parallelism"?)`}},
		{name: "top case", sets: []string{"Name=x"}, want: []string{`unknown field "Name" (did you mean "name"?)`}},
		{name: "checkpoint unknown", sets: []string{"checkpoint.intervall=2s"}, want: []string{`checkpoint: unknown field "intervall"`}},
		{name: "restart unknown", sets: []string{"restart.retries=2"}, want: []string{`restart: unknown field "retries"`}},
		{name: "resources unknown", sets: []string{"resources.memory=2"}, want: []string{`resources: unknown field "memory"`}},
		{name: "node unknown", sets: []string{"nodes.win.param={}"}, want: []string{`nodes[2] (id "win"): unknown field "param" (did you mean "params"?)`}},
		{name: "input unknown", sets: []string{`nodes.win.inputs.0={"from":"kb","partiton":"hash"}`}, want: []string{`nodes[2] (id "win"): inputs[0]: unknown field "partiton"`}},
		{name: "node without id", data: `{"name":"x","nodes":[{"type":"sequence","bogus":1}]}`, want: []string{`nodes[0]: unknown field "bogus"`}},
		{name: "parallelism type", sets: []string{"parallelism=four"}, want: []string{`parallelism: want an integer, got string "four"`}},
		{name: "parallelism fraction", sets: []string{"parallelism=1.5"}, want: []string{`parallelism: want an integer, got number 1.5`}},
		{name: "parallelism huge", sets: []string{"parallelism=1e40"}, want: []string{`parallelism: want an integer`}},
		{name: "interval bad", sets: []string{"checkpoint.interval=2 seconds"}, want: []string{`checkpoint.interval: bad duration "2 seconds"`}},
		{name: "interval negative", sets: []string{"checkpoint.interval=-5"}, want: []string{`checkpoint.interval: duration -5 is negative`}},
		{name: "interval NaN", sets: []string{"checkpoint.interval=NaN"}, want: []string{`checkpoint.interval: bad duration "NaN"`}},
		{name: "interval huge", sets: []string{"checkpoint.interval=1e300"}, want: []string{`checkpoint.interval: duration 1e300 ms is too large`}},
		{name: "interval bool", sets: []string{"checkpoint.interval=true"}, want: []string{`checkpoint.interval: duration must be a string`}},
		{name: "checkpoint not object", sets: []string{"checkpoint=5"}, want: []string{`checkpoint: want an object, got number 5`}},
		{name: "nodes not list", sets: []string{"nodes={}"}, want: []string{`nodes: want a list, got an object`}},
		{name: "params not object", sets: []string{"nodes.win.params=[1]"}, want: []string{`nodes[2] (id "win"): params: want an object, got an array`}},
		{name: "input number", sets: []string{"nodes.out.inputs.0=7"}, want: []string{`nodes[3] (id "out"): inputs[0]: want a string or an object, got number 7`}},
		{name: "incremental type", sets: []string{`checkpoint.incremental="yes"`}, want: []string{`checkpoint.incremental: want true or false`}},
		{name: "keys type", sets: []string{`nodes.win.inputs.0.keys=[1]`}, want: []string{`nodes[2] (id "win"): inputs[0].keys[0]: want a string, got number 1`}},
		{name: "constraint type", sets: []string{`constraints=[["a", 1]]`}, want: []string{`constraints[0][1]: want a string`}},

		// validation: job
		{name: "name missing", sets: []string{"name=null"}, want: []string{"name: required"}},
		{name: "name bad", sets: []string{"name=-x"}, want: []string{`name: "-x" is not valid`}},
		{name: "name space", sets: []string{"name=a b"}, want: []string{`name: "a b" is not valid`}},
		{name: "parallelism negative", sets: []string{"parallelism=-1"}, want: []string{"parallelism: must be ≥ 1, got -1"}},
		{name: "maxParallelism range", sets: []string{"maxParallelism=40000"}, want: []string{"maxParallelism: must be between 1 and 32768, got 40000"}},
		{name: "maxParallelism below", sets: []string{"parallelism=8", "maxParallelism=4"}, want: []string{"maxParallelism: 4 is less than parallelism 8"}},
		{name: "mode", sets: []string{"checkpoint.mode=exactly_once"}, want: []string{`checkpoint.mode: "exactly_once" is not one of exactly-once, at-least-once`}},
		{name: "retained", sets: []string{"checkpoint.retained=-1"}, want: []string{"checkpoint.retained: must be ≥ 1, got -1"}},
		{name: "tolerable", sets: []string{"checkpoint.tolerableFailures=-1"}, want: []string{"checkpoint.tolerableFailures: must be ≥ 0"}},
		{name: "storage scheme", sets: []string{"checkpoint.storage=s3://bucket/x"}, want: []string{`checkpoint.storage: "s3://bucket/x": scheme "s3" is not supported`}},
		{name: "storage relative", sets: []string{"checkpoint.storage=file://relative/path"}, want: []string{"checkpoint.storage:", "no host"}},
		{name: "storage no scheme", sets: []string{"checkpoint.storage=/tmp/x"}, want: []string{`checkpoint.storage: "/tmp/x" has no scheme`}},
		{name: "storage hdfs no host", sets: []string{"checkpoint.storage=hdfs:///x"}, want: []string{"checkpoint.storage:", "namenode"}},
		{name: "savepoints", sets: []string{"checkpoint.savepoints=ftp://x/y"}, want: []string{`checkpoint.savepoints: "ftp://x/y": scheme "ftp"`}},
		{name: "state backend", sets: []string{"stateBackend=rocksdb"}, want: []string{`stateBackend: "rocksdb" is not one of heap, badger`}},
		{name: "incremental heap", sets: []string{"checkpoint.incremental=true"}, want: []string{"checkpoint.incremental: only the badger state backend"}},
		{name: "badger memory with heap", sets: []string{"badger.blockCacheMiB=16"}, want: []string{"badger: only with stateBackend badger"}},
		{name: "badger memtable too big", sets: []string{"stateBackend=badger", "badger.memtableMiB=4096"}, want: []string{"badger.memtableMiB: 4096 is outside [0, 1024]"}},
		{name: "restart strategy", sets: []string{"restart.strategy=exponential"}, want: []string{`restart.strategy: "exponential" is not one of fixed-delay, failure-rate, exponential-delay, none`}},
		{name: "restart attempts", sets: []string{"restart.attempts=-2"}, want: []string{"restart.attempts: must be ≥ 0, got -2"}},
		{name: "resources", sets: []string{"resources.cpus=-1"}, want: []string{"resources.cpus: must be ≥ 0"}},
		{name: "role", sets: []string{"role=a b"}, want: []string{`role: "a b" is not a valid Mesos role`}},
		{name: "constraint op", sets: []string{`constraints=[["hostname","UNIQ"]]`}, want: []string{`constraints[0]: operator "UNIQ" is not one of`}},
		{name: "constraint value", sets: []string{`constraints=[["rack","LIKE"]]`}, want: []string{`constraints[0]: LIKE needs a value`}},
		{name: "constraint len", sets: []string{`constraints=[["rack"]]`}, want: []string{`constraints[0]: want [field, operator]`}},

		// validation: graph
		{name: "no nodes", sets: []string{"nodes=[]"}, want: []string{"nodes: a job needs at least one node"}},
		{name: "id missing", sets: []string{`nodes.out.id=""`}, want: []string{"nodes[3]: id: required"}},
		{name: "id bad", sets: []string{`nodes.out.id=o.ut`}, want: []string{`nodes[3]: id: "o.ut" is not valid`}},
		{name: "id duplicate", sets: []string{`nodes.out.id=win`}, want: []string{`node "win": id is used by nodes[2] and nodes[3]`}},
		{name: "type missing", sets: []string{`nodes.out.type=""`}, want: []string{`node "out": type: required`}},
		{name: "node parallelism", sets: []string{"nodes.win.parallelism=-3"}, want: []string{`node "win": parallelism: must be ≥ 1, got -3`}},
		{name: "node parallelism max", sets: []string{"nodes.win.parallelism=300"}, want: []string{`node "win": parallelism: 300 exceeds maxParallelism 128`}},
		{name: "input missing", sets: []string{"nodes.win.inputs.0=srcc"}, want: []string{`node "win": input "srcc" does not exist`}},
		{name: "input from empty", sets: []string{`nodes.win.inputs.0={"partition":"rebalance"}`}, want: []string{`node "win": inputs[0]: from: required`}},
		{name: "input side output", sets: []string{"nodes.out.inputs.0=win.la.te"}, want: []string{`node "out": input "win.la.te": output: "la.te" is not a valid side output name`}},
		{name: "partition", sets: []string{"nodes.win.inputs.0.partition=hsh"}, want: []string{`node "win": input "kb": partition "hsh" is not one of forward, rebalance, hash, broadcast`}},
		{name: "hash keys", sets: []string{"nodes.win.inputs.0.partition=hash"}, want: []string{`node "win": input "kb": partition hash needs keys`}},
		{name: "keys not hash", sets: []string{`nodes.win.inputs.0.keys=["key"]`}, want: []string{`node "win": input "kb": keys are only used with partition hash (partition is forward)`}},
		{name: "key empty", sets: []string{"nodes.win.inputs.0.partition=hash", `nodes.win.inputs.0.keys=[""]`}, want: []string{`node "win": input "kb": keys[0]: empty field name`}},
		{name: "self loop", sets: []string{`nodes.win.inputs.1=win`}, want: []string{"cycle: win -> win"}},
		{name: "cycle", sets: []string{`nodes.kb.inputs.1=out`}, want: []string{"cycle: kb -> win -> out -> kb"}},
		{name: "no source", sets: []string{`nodes.src.inputs=["out"]`}, want: []string{"nodes: no source", "cycle: src -> kb -> win -> out -> src"}},
		{name: "cut off", data: `{"name":"x","nodes":[
			{"id":"s","type":"sequence"},{"id":"a","type":"filter","inputs":["b"]},{"id":"b","type":"filter","inputs":["a"]},
			{"id":"c","type":"print","inputs":["b"]}]}`, want: []string{"cycle: a -> b -> a", `nodes "c": not connected to any source`}},
		{name: "several", sets: []string{"parallelism=-1", "nodes.win.inputs.0=nope"}, want: []string{"parallelism: must be ≥ 1", `node "win": input "nope" does not exist`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data
			if data == "" {
				data = base
			}
			j, err := Parse([]byte(data), tc.sets)
			if err == nil {
				b, _ := json.Marshal(j)
				t.Fatalf("no error; job %s", b)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\n does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseFileNamesPath(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(p, []byte("name: x\nnodez: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ParseFile(p, nil)
	if err == nil || !strings.HasPrefix(err.Error(), p+": ") || !strings.Contains(err.Error(), `unknown field "nodez"`) {
		t.Fatalf("err = %v", err)
	}
	if _, err := ParseFile(filepath.Join(dir, "missing.json"), nil); err == nil {
		t.Fatal("missing file: no error")
	}
}

// A parsed job marshals to JSON that parses back to the same job (what the
// dispatcher stores is what it ran).
func TestRoundTrip(t *testing.T) {
	for _, f := range []string{"testdata/window.json", "testdata/files.yaml", "testdata/sequence.json"} {
		j, err := ParseFile(f, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(j)
		if err != nil {
			t.Fatal(err)
		}
		j2, err := Parse(b, nil)
		if err != nil {
			t.Fatalf("%s: re-parse: %v\n%s", f, err, b)
		}
		if !reflect.DeepEqual(j, j2) {
			t.Errorf("%s: round trip differs", f)
		}
	}
}

func TestGraph(t *testing.T) {
	j := mustParse(t, `{"name": "g", "nodes": [
		{"id": "out", "type": "print", "inputs": ["u"]},
		{"id": "late", "type": "print", "inputs": ["w.late"]},
		{"id": "w", "type": "window", "inputs": ["b"]},
		{"id": "u", "type": "union", "inputs": ["a", "w"]},
		{"id": "a", "type": "sequence"},
		{"id": "b", "type": "sequence"}
	]}`)
	order, err := j.TopoOrder()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range order {
		ids = append(ids, n.ID)
	}
	if got := strings.Join(ids, " "); got != "a b w late u out" {
		t.Errorf("TopoOrder = %s", got)
	}
	if n := j.Node("w"); n == nil || n.Type != "window" || n != &j.Nodes[2] {
		t.Errorf("Node(w) = %v", n)
	}
	if j.Node("nope") != nil {
		t.Error("Node(nope) != nil")
	}
	var cons []string
	for _, n := range j.Consumers("w") {
		cons = append(cons, n.ID)
	}
	if got := strings.Join(cons, " "); got != "late u" {
		t.Errorf("Consumers(w) = %s", got)
	}
	if len(j.Consumers("out")) != 0 {
		t.Error("Consumers(out) not empty")
	}
	if !j.Node("a").IsSource() || j.Node("u").IsSource() {
		t.Error("IsSource")
	}

	// TopoOrder on an unvalidated graph reports cycles and missing inputs.
	bad := Job{Nodes: []Node{{ID: "x", Inputs: []Input{{From: "y"}}}, {ID: "y", Inputs: []Input{{From: "x"}}}}}
	if _, err := bad.TopoOrder(); err == nil || !strings.Contains(err.Error(), "cycle: x -> y -> x") {
		t.Errorf("cycle: %v", err)
	}
	bad.Nodes[1].Inputs[0].From = "z"
	if _, err := bad.TopoOrder(); err == nil || !strings.Contains(err.Error(), `node "y": input "z" does not exist`) {
		t.Errorf("missing: %v", err)
	}
}
