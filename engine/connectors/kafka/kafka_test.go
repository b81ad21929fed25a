package kafka_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/internal/jobtest"

	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/internal/kafkatest"
)

// runKafkaJob plans and runs a job spec (JSON) with overrides.
func runKafkaJob(t *testing.T, specJSON string, restore string, sets ...string) *runtime.Result {
	t.Helper()
	g, opts := jobtest.Plan(t, specJSON, sets...)
	opts.Restore = restore
	var logs strings.Builder
	opts.Log = slog.New(slog.NewTextHandler(&jobtest.LockedWriter{B: &logs}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts.Storage.Log = opts.Log
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := runtime.Run(ctx, g, opts)
	if err != nil {
		t.Fatalf("run: %v\nlog:\n%s", err, logs.String())
	}
	return res
}

// readLines reads every committed part file of a file sink.
func readLines(t *testing.T, dir string) []map[string]any {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "part-") {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("%s: %q: %v", e.Name(), sc.Text(), err)
			}
			out = append(out, m)
		}
		f.Close()
	}
	return out
}

func produceJSON(t *testing.T, c *kafkatest.Cluster, topic string, partitions int32, n int) {
	t.Helper()
	for p := int32(0); p < partitions; p++ {
		var recs []kafkatest.Record
		for i := int(p); i < n; i += int(partitions) {
			recs = append(recs, kafkatest.Record{Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprintf(`{"id":%d,"v":"x%d"}`, i, i)), Timestamp: time.UnixMilli(int64(1_000_000 + i))})
		}
		c.Produce(t, topic, p, recs)
	}
}

const kafkaToFile = `{
  "name": "k2f", "parallelism": 3, "maxParallelism": 64,
  "checkpoint": {"interval": "100ms", "mode": "exactly-once"},
  "restart": {"strategy": "none"},
  "nodes": [
    {"id": "src", "type": "kafka", "params": {"brokers": [], "topics": ["in"], "bounded": true,
      "fields": [{"name": "id", "type": "int64"}, {"name": "v", "type": "string"}],
      "keyField": "k", "partitionField": "p", "offsetField": "o", "timestampField": "ts", "topicField": "t"}},
    {"id": "out", "type": "file", "inputs": ["src"], "params": {"path": "/dev/null"}},
    {"id": "bad", "type": "file", "inputs": ["src.dlq"], "params": {"path": "/dev/null"}}
  ]
}`

func brokersSet(node string, c *kafkatest.Cluster) string {
	js, _ := json.Marshal(c.Addrs)
	return fmt.Sprintf("nodes.%s.params.brokers=%s", node, js)
}

func TestKafkaSourceToFile(t *testing.T) {
	c := kafkatest.Start(t, 0, 5, "in")
	const n = 5000
	produceJSON(t, c, "in", 5, n)
	// Two records that do not parse go to the dead letters.
	c.Produce(t, "in", 2, []kafkatest.Record{{Value: []byte(`{"id":"nope","v":"a"}`)}, {Value: []byte(`not json`)}})
	dir := t.TempDir()
	res := runKafkaJob(t, kafkaToFile, "", brokersSet("src", c),
		"checkpoint.storage=file://"+filepath.Join(dir, "chk"),
		"nodes.out.params.path="+filepath.Join(dir, "out"),
		"nodes.bad.params.path="+filepath.Join(dir, "bad"))
	_ = res
	rows := readLines(t, filepath.Join(dir, "out"))
	if len(rows) != n {
		t.Fatalf("got %d rows, want %d", len(rows), n)
	}
	seen := map[int64]bool{}
	for _, r := range rows {
		id := int64(r["id"].(float64))
		if seen[id] {
			t.Fatalf("id %d twice", id)
		}
		seen[id] = true
		if r["v"] != fmt.Sprintf("x%d", id) || r["k"] != fmt.Sprint(id) || r["t"] != "in" ||
			int64(r["p"].(float64)) != id%5 || int64(r["o"].(float64)) != id/5 || int64(r["ts"].(float64)) != 1_000_000+id {
			t.Fatalf("bad row %v", r)
		}
	}
	bad := readLines(t, filepath.Join(dir, "bad"))
	if len(bad) != 2 {
		t.Fatalf("dead letters: %v, want 2", bad)
	}
	for _, b := range bad {
		if b["topic"] != "in" || b["partition"].(float64) != 2 || b["error"] == "" {
			t.Fatalf("bad dead letter %v", b)
		}
	}
}

const seqToKafka = `{
  "name": "s2k", "parallelism": 2, "maxParallelism": 64,
  "checkpoint": {"interval": "50ms", "mode": "exactly-once"},
  "restart": {"strategy": "none"},
  "nodes": [
    {"id": "src", "type": "sequence", "params": {"rows": 20000, "rate": 100000}},
    {"id": "out", "type": "kafka", "inputs": ["src"], "params": {"brokers": [], "topic": "out", "keyField": "id"}}
  ]
}`

func checkIDs(t *testing.T, recs []kafkatest.Record, n int) {
	t.Helper()
	seen := make([]int, n)
	for _, r := range recs {
		var v struct{ ID int64 }
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatalf("bad value %q: %v", r.Value, err)
		}
		if v.ID < 0 || v.ID >= int64(n) {
			t.Fatalf("id %d out of range", v.ID)
		}
		if string(r.Key) != fmt.Sprint(v.ID) {
			t.Fatalf("key %q for id %d", r.Key, v.ID)
		}
		seen[v.ID]++
	}
	for id, k := range seen {
		if k != 1 {
			t.Fatalf("id %d seen %d times (of %d records)", id, k, len(recs))
		}
	}
}

func TestKafkaSinkExactlyOnce(t *testing.T) {
	c := kafkatest.Start(t, 0, 4, "out")
	dir := t.TempDir()
	runKafkaJob(t, seqToKafka, "", brokersSet("out", c), "checkpoint.storage=file://"+filepath.Join(dir, "chk"))
	checkIDs(t, c.ReadCommitted(t, "out", 4), 20000)
}

func TestKafkaSinkAtLeastOnce(t *testing.T) {
	c := kafkatest.Start(t, 0, 4, "out")
	dir := t.TempDir()
	runKafkaJob(t, seqToKafka, "", brokersSet("out", c), "checkpoint.storage=file://"+filepath.Join(dir, "chk"),
		"checkpoint.mode=at-least-once")
	// Nothing failed, so at-least-once wrote every row exactly once too.
	checkIDs(t, c.ReadCommitted(t, "out", 4), 20000)
}

const kafkaToKafka = `{
  "name": "k2k", "parallelism": 2, "maxParallelism": 64,
  "checkpoint": {"interval": "50ms", "mode": "exactly-once"},
  "restart": {"strategy": "none"},
  "nodes": [
    {"id": "src", "type": "kafka", "params": {"brokers": [], "topics": ["in"], "bounded": true,
      "fields": [{"name": "id", "type": "int64"}, {"name": "v", "type": "string"}]}},
    {"id": "out", "type": "kafka", "inputs": [{"from": "src", "partition": "rebalance"}], "params": {"brokers": [], "topic": "out", "keyField": "id"}}
  ]
}`

// TestKafkaRestoreRescaled runs a bounded kafka-to-kafka job over the first
// half of a topic at parallelism 2, then, after the second half arrived,
// restores its last checkpoint at parallelism 3: the source resumes from the
// stored offsets, and the output holds every row once.
func TestKafkaRestoreRescaled(t *testing.T) {
	c := kafkatest.Start(t, 0, 6, "in", "out")
	dir := t.TempDir()
	sets := []string{brokersSet("src", c), brokersSet("out", c), "checkpoint.storage=file://" + filepath.Join(dir, "chk"), "checkpoint.retained=3"}
	const n = 6000
	half := func(from, to int) {
		for p := int32(0); p < 6; p++ {
			var recs []kafkatest.Record
			for i := from; i < to; i++ {
				if i%6 == int(p) {
					recs = append(recs, kafkatest.Record{Value: []byte(fmt.Sprintf(`{"id":%d,"v":"x"}`, i))})
				}
			}
			c.Produce(t, "in", p, recs)
		}
	}
	half(0, n/2)
	runKafkaJob(t, kafkaToKafka, "", sets...)
	checkIDs(t, c.ReadCommitted(t, "out", 6), n/2)
	half(n/2, n)
	runKafkaJob(t, kafkaToKafka, "latest", append(sets, "parallelism=3")...)
	checkIDs(t, c.ReadCommitted(t, "out", 6), n)
}
