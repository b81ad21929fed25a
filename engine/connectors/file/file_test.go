package file_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/internal/jobtest"

	"github.com/sluice-stream/sluice/engine/fs"
	"github.com/sluice-stream/sluice/engine/nodes"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/internal/hdfstest"
)

// fileTestFailures counts the failures of the "fileTestFailing" operator.
var fileTestFailures atomic.Int64

func init() {
	nodes.Register("fileTestFailing", nodes.Factory{Kind: nodes.Operator, MinInputs: 1, MaxInputs: 1, Plan: func(c *nodes.PlanContext) (*nodes.Planned, error) {
		var p struct {
			Times int64 `json:"times"`
		}
		if err := c.Params(&p); err != nil {
			return nil, err
		}
		return &nodes.Planned{Schema: c.Inputs[0], NewOperator: func() runtime.Operator { return &fileTestFailing{times: p.Times} }}, nil
	}})
}

// fileTestFailing passes batches on slowly (so that checkpoints complete
// while the input lasts); its subtask 0 fails once a checkpoint of its
// attempt completed and it passed on some rows since, `times` times in all.
type fileTestFailing struct {
	runtime.BaseOperator
	times     int64
	completed int
	rows      int
}

func (f *fileTestFailing) CheckpointComplete(int64) error { f.completed++; return nil }

func (f *fileTestFailing) Process(_ int, b *row.Batch) error {
	time.Sleep(10 * time.Millisecond)
	if f.completed > 0 {
		f.rows += b.Len
	}
	if f.Ctx.Subtask == 0 && f.rows > 2000 {
		if n := fileTestFailures.Add(1); n <= f.times {
			b.Release()
			return fmt.Errorf("injected failure %d of %d", n, f.times)
		}
		fileTestFailures.Add(-1)
	}
	f.Ctx.Out.Collect(b)
	return nil
}

const fileHDFSJob = `{
  "name": "file-hdfs", "parallelism": 2, "maxParallelism": 64,
  "checkpoint": {"interval": "40ms", "mode": "exactly-once", "retained": 2},
  "restart": {"strategy": "fixed-delay", "attempts": 5, "delay": "10ms"},
  "nodes": [
    {"id": "src", "type": "file", "params": {"path": "", "fields": [{"name": "id", "type": "int64"}, {"name": "v", "type": "string"}]}},
    {"id": "slow", "type": "fileTestFailing", "inputs": ["src"], "params": {"times": 2}},
    {"id": "out", "type": "file", "inputs": [{"from": "slow", "partition": "rebalance"}], "params": {"path": ""}}
  ]
}`

// TestFileConnectorsHDFS runs a job whose file source reads hdfs:// and
// whose exactly-once file sink writes hdfs://, with two injected failures
// after completed checkpoints: the committed part files on HDFS hold every
// input row exactly once, and no in-progress file is left.
func TestFileConnectorsHDFS(t *testing.T) {
	c, err := hdfstest.Start(t.TempDir(), hdfstest.BlockSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	t.Setenv("HADOOP_USER_NAME", "sluice")
	t.Setenv("HADOOP_CONF_DIR", t.TempDir())
	base := "hdfs://" + c.Addr()
	fsys, _, err := fs.Open(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const files, perFile = 4, 20_000
	for k := 0; k < files; k++ {
		var b bytes.Buffer
		for i := k * perFile; i < (k+1)*perFile; i++ {
			fmt.Fprintf(&b, "{\"id\":%d,\"v\":\"x%d\"}\n", i, i)
		}
		if err := fsys.WriteFile(ctx, fmt.Sprintf("/in/%d.jsonl", k), b.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	fileTestFailures.Store(0)
	g, opts := jobtest.Plan(t, fileHDFSJob, "nodes.src.params.path="+base+"/in", "nodes.out.params.path="+base+"/out",
		"checkpoint.storage=file://"+t.TempDir())
	var logs strings.Builder
	opts.Log = slog.New(slog.NewTextHandler(&jobtest.LockedWriter{B: &logs}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts.Storage.Log = opts.Log
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	res, err := runtime.Run(rctx, g, opts)
	if err != nil {
		t.Fatalf("run: %v\nlog:\n%s", err, logs.String())
	}
	if n := fileTestFailures.Load(); n != 2 {
		t.Fatalf("%d injected failures, want 2: the test tested no restore", n)
	}
	if res.Restarts != 2 {
		t.Fatalf("%d restarts, want 2", res.Restarts)
	}
	entries, err := fsys.List(ctx, "/out")
	if err != nil {
		t.Fatal(err)
	}
	seen := make([]int, files*perFile)
	for _, e := range entries {
		if strings.HasPrefix(e.Name, ".") {
			t.Errorf("in-progress file left: %s", e.Name)
			continue
		}
		data, err := fsys.ReadFile(ctx, "/out/"+e.Name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			var r struct{ ID int }
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.ID < 0 || r.ID >= len(seen) {
				t.Fatalf("%s: bad line %q (%v)", e.Name, sc.Text(), err)
			}
			seen[r.ID]++
		}
	}
	bad := 0
	for id, k := range seen {
		if k != 1 {
			if bad++; bad <= 5 {
				t.Errorf("id %d written %d times", id, k)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d ids not written exactly once (%d part files)\nlog:\n%s", bad, len(seen), len(entries), logs.String())
	}
}
