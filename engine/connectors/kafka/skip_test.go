package kafka_test

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/internal/jobtest"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/internal/kafkatest"
)

// collector is an Output that keeps the ids (column 0) it is given.
type collector struct {
	mu  sync.Mutex
	ids map[int64]int
}

func (c *collector) Collect(b *row.Batch) {
	c.mu.Lock()
	for _, id := range b.Cols[0].Ints[:b.Len] {
		c.ids[id]++
	}
	c.mu.Unlock()
	b.Release()
}

func (c *collector) Watermark(int64) {}

func (c *collector) take() map[int64]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.ids
	c.ids = map[int64]int{}
	return out
}

// stateWriter keeps operator state entries.
type stateWriter struct{ entries [][]byte }

func (w *stateWriter) AddKeyGroup(int, []byte)   {}
func (w *stateWriter) AddOperatorState(e []byte) { w.entries = append(w.entries, e) }
func (w *stateWriter) snapshot(t *testing.T, s runtime.Source, id int64) [][]byte {
	t.Helper()
	snap, err := s.Snapshot(id)
	if err != nil {
		t.Fatal(err)
	}
	w.entries = nil
	if snap != nil {
		if err := snap.Write(w); err != nil {
			t.Fatal(err)
		}
	}
	return w.entries
}

const skipSource = `{
  "name": "skip", "parallelism": 1, "maxParallelism": 64,
  "nodes": [
    {"id": "src", "type": "kafka", "params": {"clusters": [], "topics": ["in"], "discoveryInterval": "1h",
      "fields": [{"name": "id", "type": "int64"}, {"name": "v", "type": "string"}]}},
    {"id": "out", "type": "discard", "inputs": ["src"]}
  ]
}`

// openSource plans a job and opens its node "src" as subtask 0 of 1,
// outside any runtime: the test calls Poll, Snapshot and SkipBacklog itself.
func openSource(t *testing.T, specJSON string, restored *runtime.Restored, sets ...string) (runtime.Source, *collector) {
	t.Helper()
	g, _ := jobtest.Plan(t, specJSON, sets...)
	var n *runtime.Node
	for _, gn := range g.Nodes {
		if gn.ID == "src" {
			n = gn
		}
	}
	src := n.NewSource()
	out := &collector{ids: map[int64]int{}}
	ctx := &runtime.Context{JobName: "skip", NodeID: "src", Parallelism: 1, MaxParallelism: 64, Out: out,
		Log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})), Metrics: &runtime.NodeMetrics{}}
	if err := src.Open(ctx, restored); err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = src.Close() })
	return src, out
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// pollUntil polls s until the collected ids include [from, to) of every
// range, and returns everything collected.
func pollUntil(t *testing.T, s runtime.Source, out *collector, ranges ...[2]int) map[int64]int {
	t.Helper()
	got := map[int64]int{}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := s.Poll(); err != nil {
			t.Fatalf("poll: %v", err)
		}
		for id, k := range out.take() {
			got[id] += k
		}
		ok := true
		for _, r := range ranges {
			ok = ok && hasAll(got, r[0], r[1])
		}
		if ok {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: have %d ids, want ranges %v", len(got), ranges)
		}
	}
}

// TestKafkaSkipBacklog calls SkipBacklog on a dual-cluster source: the
// records produced before the call are never emitted, those after are, and
// a snapshot taken right after the call restores at the new positions.
func TestKafkaSkipBacklog(t *testing.T) {
	const parts = 3
	a := kafkatest.Start(t, 0, parts, "in")
	b := kafkatest.Start(t, 0, parts, "in")
	sets := []string{clustersSet("src", a, b)}
	produceIDs(t, a, "in", parts, 0, 300)
	produceIDs(t, b, "in", parts, 1000, 1300)
	src, out := openSource(t, skipSource, nil, sets...)
	pollUntil(t, src, out, [2]int{0, 300}, [2]int{1000, 1300})

	// A backlog the source may have prefetched but not emitted.
	produceIDs(t, a, "in", parts, 300, 600)
	produceIDs(t, b, "in", parts, 1300, 1600)
	time.Sleep(200 * time.Millisecond) // let the partition consumers fetch some of it
	skipper, ok := src.(runtime.BacklogSkipper)
	if !ok {
		t.Fatal("the kafka source is not a runtime.BacklogSkipper")
	}
	if err := skipper.SkipBacklog(); err != nil {
		t.Fatalf("SkipBacklog: %v", err)
	}
	var w stateWriter
	entries := w.snapshot(t, src, 1)
	if len(entries) != 2*parts {
		t.Fatalf("%d state entries, want %d", len(entries), 2*parts)
	}
	for _, e := range entries {
		// Cluster 0 keeps writing version 1 entries (readable by older
		// releases); the second cluster's are version 2.
		if e[0] != 1 && (e[0] != 2 || e[1] != 1) {
			t.Fatalf("state entry version %d cluster %d", e[0], e[1])
		}
	}
	produceIDs(t, a, "in", parts, 600, 700)
	produceIDs(t, b, "in", parts, 1600, 1700)
	got := pollUntil(t, src, out, [2]int{600, 700}, [2]int{1600, 1700})
	if n := countIn(got, 300, 600) + countIn(got, 1300, 1600); n > 0 {
		t.Fatalf("%d backlog records emitted after SkipBacklog", n)
	}

	// The snapshot after the skip restores past the backlog.
	re, reOut := openSource(t, skipSource, &runtime.Restored{CheckpointID: 1, OperatorState: entries}, sets...)
	got = pollUntil(t, re, reOut, [2]int{600, 700}, [2]int{1600, 1700})
	if len(got) != 200 {
		t.Fatalf("restored source read %d ids, want the 200 after the skip", len(got))
	}
}

// kafkaStateV1 is a state entry as releases before dual-cluster wrote it.
func kafkaStateV1(topic string, partition int32, next int64) []byte {
	e := make([]byte, 21, 21+len(topic))
	e[0] = 1
	binary.BigEndian.PutUint32(e[1:], uint32(partition))
	binary.BigEndian.PutUint64(e[5:], uint64(next))
	binary.BigEndian.PutUint64(e[13:], 1<<63) // runtime.MinWatermark
	return append(e, topic...)
}

// TestKafkaSourceRestoresV1State restores a single-cluster checkpoint
// written before state entries had a cluster, into a single-cluster and a
// dual-cluster source: the entries are the first cluster's.
func TestKafkaSourceRestoresV1State(t *testing.T) {
	a := kafkatest.Start(t, 0, 1, "in")
	b := kafkatest.Start(t, 0, 1, "in")
	produceIDs(t, a, "in", 1, 0, 100)
	produceIDs(t, b, "in", 1, 1000, 1100)
	r := &runtime.Restored{CheckpointID: 7, OperatorState: [][]byte{kafkaStateV1("in", 0, 60)}}

	src, out := openSource(t, skipSource, r, `nodes.src.params.brokers=["`+a.Addrs[0]+`"]`, "nodes.src.params.clusters=null")
	got := pollUntil(t, src, out, [2]int{60, 100})
	if len(got) != 40 {
		t.Fatalf("single cluster: read %d ids, want 60-99", len(got))
	}
	// Dual: cluster 0 resumes at 60; cluster 1, not in the checkpoint,
	// starts at the earliest.
	src, out = openSource(t, skipSource, r, clustersSet("src", a, b))
	got = pollUntil(t, src, out, [2]int{60, 100}, [2]int{1000, 1100})
	if len(got) != 140 {
		t.Fatalf("dual cluster: read %d ids, want 60-99 and 1000-1099", len(got))
	}
}

const patternSource = `{
  "name": "pattern", "parallelism": 1, "maxParallelism": 64,
  "nodes": [
    {"id": "src", "type": "kafka", "params": {"brokers": [], "topicPattern": "ev-.*", "discoveryInterval": "100ms",
      "fields": [{"name": "id", "type": "int64"}, {"name": "v", "type": "string"}]}},
    {"id": "out", "type": "discard", "inputs": ["src"]}
  ]
}`

// TestKafkaSourceDiscovery reads topicPattern ev-.*: a topic that does not
// match is never read; partitions added to a matching topic and a matching
// topic created while the source runs are found and read from their start.
func TestKafkaSourceDiscovery(t *testing.T) {
	c := kafkatest.Start(t, 0, 2, "ev-a", "other")
	produceIDs(t, c, "ev-a", 2, 0, 100)
	produceIDs(t, c, "other", 2, 5000, 5100)
	src, out := openSource(t, patternSource, nil, brokersSet("src", c))
	pollUntil(t, src, out, [2]int{0, 100})

	c.AddPartitions(t, "ev-a", 4)
	produceIDs(t, c, "ev-a", 4, 100, 200) // to all four partitions
	c.CreateTopic(t, "ev-b", 2, nil)
	produceIDs(t, c, "ev-b", 2, 200, 300)
	got := pollUntil(t, src, out, [2]int{100, 300})
	if n := countIn(got, 5000, 5100); n > 0 {
		t.Fatalf("%d records of a topic that does not match the pattern", n)
	}
	if n := countIn(got, 0, 100); n > 0 {
		t.Fatalf("%d records read twice after discovery", n)
	}
}

// TestKafkaSourceStartFromTimestamp starts at the first record at or after
// startTimestamp in every partition.
func TestKafkaSourceStartFromTimestamp(t *testing.T) {
	c := kafkatest.Start(t, 0, 2, "in")
	for p := int32(0); p < 2; p++ {
		var recs []kafkatest.Record
		for i := int(p); i < 100; i += 2 {
			recs = append(recs, kafkatest.Record{Value: []byte(fmt.Sprintf(`{"id":%d,"v":"x"}`, i)), Timestamp: time.UnixMilli(int64(1_000_000 + i*1000))})
		}
		c.Produce(t, "in", p, recs)
	}
	src, out := openSource(t, skipSource, nil, `nodes.src.params.brokers=["`+c.Addrs[0]+`"]`, "nodes.src.params.clusters=null",
		"nodes.src.params.startFrom=timestamp", "nodes.src.params.startTimestamp=1050000")
	got := pollUntil(t, src, out, [2]int{50, 100})
	// Let anything before the timestamp show up if it were read.
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if _, err := src.Poll(); err != nil {
			t.Fatal(err)
		}
	}
	for id, k := range out.take() {
		got[id] += k
	}
	if len(got) != 50 {
		t.Fatalf("read %d ids, want 50-99 (ids: %v)", len(got), got)
	}
}
