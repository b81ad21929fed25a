package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-stream/sluice/internal/kafkatest"
)

const skipJob = `{
  "name": "skip-backlog", "parallelism": 2, "maxParallelism": 64,
  "checkpoint": {"interval": "100ms", "mode": "exactly-once", "retained": 2},
  "restart": {"strategy": "none"},
  "nodes": [
    {"id": "src", "type": "kafka", "params": {"brokers": [], "topics": ["in"],
      "fields": [{"name": "id", "type": "int64"}]}},
    {"id": "double", "type": "project", "inputs": ["src"], "params": {"fields": [
      {"name": "id", "expr": "id"}, {"name": "double", "expr": "id * 2"}]}},
    {"id": "out", "type": "kafka", "inputs": ["double"], "params": {"brokers": [], "topic": "out", "keyField": "id"}}
  ]
}`

var apiLine = regexp.MustCompile(`"http API listening" addr=(\S+)`)

// apiURL waits for the job's "http API listening" line (it listens on port 0).
func (p *proc) apiURL() string {
	p.t.Helper()
	var url string
	p.waitFor("the http API", func() bool {
		if m := apiLine.FindStringSubmatch(p.stderr.String()); m != nil {
			url = m[1]
		}
		return url != ""
	})
	return url
}

// call does one request to the job's API and decodes its JSON answer.
func call(t *testing.T, method, url string, v any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q: %s", method, url, ct, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("%s %s: %v: %s", method, url, err, body)
	}
	return resp.StatusCode
}

type apiStatus struct {
	Job         string
	State       string
	Attempt     string
	Checkpoints int
	Nodes       []struct {
		ID             string
		CanSkipBacklog bool
		RowsOut        int64
	}
}

func status(t *testing.T, api string) apiStatus {
	t.Helper()
	var st apiStatus
	if code := call(t, "GET", api+"/v1/status", &st); code != 200 {
		t.Fatalf("status: HTTP %d", code)
	}
	return st
}

func produceIDs(t *testing.T, c *kafkatest.Cluster, parts, from, to int) {
	t.Helper()
	for p := 0; p < parts; p++ {
		var recs []kafkatest.Record
		for i := from + p; i < to; i += parts {
			recs = append(recs, kafkatest.Record{Value: fmt.Appendf(nil, `{"id":%d}`, i)})
		}
		c.Produce(t, "in", int32(p), recs)
	}
}

// TestSkipBacklogKafka runs a kafka-to-kafka job with --http whose source
// cannot fetch (kfake fails its fetches) while a backlog waits in the input
// topic; `sluice skip-backlog` makes it seek to the latest offsets; once
// fetching works, only what was produced after the skip comes out. Then the
// job is cancelled and restored from its latest checkpoint: the checkpoint
// recorded the new offsets, so the backlog is still not read.
func TestSkipBacklogKafka(t *testing.T) {
	const parts, backlog, after = 4, 2000, 1000
	port := kafkatest.FreePort(t)
	c := kafkatest.Start(t, port, parts, "in", "out")
	// NOT_LEADER_FOR_PARTITION: sarama retries the partition after a
	// backoff instead of giving up, so the job runs but reads nothing.
	blocked := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: "in", Err: kerr.NotLeaderForPartition, Count: -1})
	produceIDs(t, c, parts, 0, backlog)

	dir := t.TempDir()
	spec := filepath.Join(dir, "job.json")
	if err := os.WriteFile(spec, []byte(skipJob), 0o644); err != nil {
		t.Fatal(err)
	}
	brokers := fmt.Sprintf(`["127.0.0.1:%d"]`, port)
	args := []string{"run",
		"--set", "nodes.src.params.brokers=" + brokers,
		"--set", "nodes.out.params.brokers=" + brokers,
		"--set", "checkpoint.storage=file://" + filepath.Join(dir, "checkpoints"),
	}
	p := startSluice(t, append(args, "--http", "127.0.0.1:0", spec)...)
	api := p.apiURL()
	p.waitFor("a checkpoint", func() bool { return status(t, api).Checkpoints >= 1 })
	st := status(t, api)
	if st.Job != "skip-backlog" || st.State != "running" || st.Attempt == "" || len(st.Nodes) != 3 || !st.Nodes[0].CanSkipBacklog {
		t.Fatalf("status: %+v", st)
	}
	if st.Nodes[0].RowsOut != 0 {
		t.Fatalf("the source read %d rows while its fetches fail", st.Nodes[0].RowsOut)
	}

	// Errors are JSON with a clear message, and the CLI exits non-zero.
	var e struct{ Error string }
	if code := call(t, "POST", api+"/v1/skip-backlog?node=nope", &e); code != 400 || !strings.Contains(e.Error, `no node "nope"`) {
		t.Errorf("skip an unknown node: HTTP %d %q", code, e.Error)
	}
	if code := call(t, "GET", api+"/v1/skip-backlog", &e); code != 405 || !strings.Contains(e.Error, "use POST") {
		t.Errorf("GET skip-backlog: HTTP %d %q", code, e.Error)
	}
	if code := call(t, "GET", api+"/v2/nothing", &e); code != 404 {
		t.Errorf("unknown path: HTTP %d %q", code, e.Error)
	}
	out, err := exec.Command(sluiceBin, "skip-backlog", "--job", api, "--node", "double").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), `node "double" (project) is not a source (HTTP 400)`) {
		t.Errorf("skip-backlog --node double: %v: %s", err, out)
	}

	out, err = exec.Command(sluiceBin, "skip-backlog", "--job", strings.TrimPrefix(api, "http://"), "--node", "src").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "skipped the backlog: src#0, src#1" {
		t.Fatalf("skip-backlog: %v: %s", err, out)
	}
	skippedAt := status(t, api).Checkpoints

	var sp struct{ Path, Error string }
	if code := call(t, "POST", api+"/v1/savepoint", &sp); code != 200 || sp.Path == "" {
		t.Fatalf("savepoint: HTTP %d %+v", code, sp)
	}
	if _, err := os.Stat(filepath.Join(strings.TrimPrefix(sp.Path, "file://"), "_metadata")); err != nil {
		t.Errorf("savepoint %s: %v", sp.Path, err)
	}

	blocked.Remove()
	produceIDs(t, c, parts, backlog, backlog+after)
	p.waitFor("the records produced after the skip", func() bool { return len(c.ReadCommitted(t, "out", parts)) >= after })
	// A checkpoint in flight at the skip may predate it; the next cannot.
	p.waitFor("two checkpoints after the skip", func() bool { return status(t, api).Checkpoints >= skippedAt+2 })
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(); code != 130 {
		t.Fatalf("exit %d after SIGTERM, want 130; stderr:\n%s", code, p.stderr.String())
	}

	// Restored from the latest checkpoint and bounded: reads from the
	// recorded offsets to the end of the topic.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	restored, err := exec.CommandContext(ctx, sluiceBin, append(args, "--restore", "latest", "--set", "nodes.src.params.bounded=true", spec)...).CombinedOutput()
	if err != nil {
		t.Fatalf("restored run: %v\n%s", err, restored)
	}

	seen := map[int64]int{}
	for _, r := range c.ReadCommitted(t, "out", parts) {
		var v struct{ ID, Double int64 }
		if err := json.Unmarshal(r.Value, &v); err != nil || v.Double != 2*v.ID {
			t.Fatalf("bad record %q (%v)", r.Value, err)
		}
		seen[v.ID]++
	}
	read := 0
	for id := int64(0); id < backlog; id++ {
		read += seen[id]
	}
	if read > 0 {
		t.Errorf("%d of the %d backlog records were read after the skip", read, backlog)
	}
	for id := int64(backlog); id < backlog+after; id++ {
		if seen[id] != 1 {
			t.Errorf("id %d produced after the skip seen %d times", id, seen[id])
		}
	}
	if t.Failed() {
		t.Logf("first run:\n%s\nrestored run:\n%s", tail(p.stderr.String(), 3000), tail(string(restored), 2000))
	}
}
