package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/internal/jobtest"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/internal/kafkatest"
)

// openSourceMode is openSource with the job's mode (exactly-once or not)
// and the metrics returned; Open's error is returned, not fatal.
func openSourceMode(t *testing.T, exactlyOnce bool, restored *runtime.Restored, sets ...string) (runtime.Source, *collector, *runtime.NodeMetrics, error) {
	t.Helper()
	g, _ := jobtest.Plan(t, skipSource, sets...)
	var n *runtime.Node
	for _, gn := range g.Nodes {
		if gn.ID == "src" {
			n = gn
		}
	}
	src := n.NewSource()
	out := &collector{ids: map[int64]int{}}
	m := &runtime.NodeMetrics{}
	ctx := &runtime.Context{JobName: "reset", NodeID: "src", Parallelism: 1, MaxParallelism: 64, ExactlyOnce: exactlyOnce, Out: out,
		Log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})), Metrics: m}
	err := src.Open(ctx, restored)
	t.Cleanup(func() { _ = src.Close() })
	return src, out, m, err
}

// deleteRecords moves the log start offset of topic/partition to offset.
func deleteRecords(t *testing.T, c *kafkatest.Cluster, topic string, partition int32, offset int64) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = partition, offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10_000
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// DeleteRecords goes to the partition's leader: kgo's sharded request.
	shards := cl.RequestSharded(ctx, req)
	for _, sh := range shards {
		if sh.Err != nil {
			t.Fatalf("DeleteRecords %s/%d to %d: %v", topic, partition, offset, sh.Err)
		}
		for _, rt := range sh.Resp.(*kmsg.DeleteRecordsResponse).Topics {
			for _, rp := range rt.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					t.Fatalf("DeleteRecords %s/%d to %d: %v", topic, partition, offset, err)
				}
				if rp.LowWatermark != offset {
					t.Fatalf("DeleteRecords %s/%d: log start %d, want %d", topic, partition, rp.LowWatermark, offset)
				}
			}
		}
	}
}

// pollFor polls s for d and returns what it emitted.
func pollFor(t *testing.T, s runtime.Source, out *collector, d time.Duration) map[int64]int {
	t.Helper()
	got := map[int64]int{}
	for end := time.Now().Add(d); time.Now().Before(end); {
		if _, err := s.Poll(); err != nil {
			t.Fatalf("poll: %v", err)
		}
	}
	for id, k := range out.take() {
		got[id] += k
	}
	return got
}

// TestKafkaSourceOffsetReset restores offsets outside the partition's
// range: above the high watermark (a topic recreated since the checkpoint)
// and below the log start (records deleted). Exactly-once fails by default
// with an error naming the partition, the offset and the range;
// at-least-once and offsetReset earliest read from the log start, latest
// from the high watermark; every reset is counted.
func TestKafkaSourceOffsetReset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		next  int64
		where string
	}{
		{"above", 500, "above the high watermark"},
		{"below", 10, "below the log start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := kafkatest.Start(t, 0, 1, "in")
			produceIDs(t, c, "in", 1, 0, 100)
			deleteRecords(t, c, "in", 0, 40) // the partition's range is now [40, 100]
			brokers := `nodes.src.params.brokers=["` + c.Addrs[0] + `"]`
			r := &runtime.Restored{CheckpointID: 3, OperatorState: [][]byte{kafkaStateV1("in", 0, tc.next)}}
			for _, mode := range []struct {
				exactlyOnce bool
				reset       string
			}{{true, ""}, {false, "fail"}} {
				sets := []string{brokers, "nodes.src.params.clusters=null"}
				if mode.reset != "" {
					sets = append(sets, "nodes.src.params.offsetReset="+mode.reset)
				}
				_, _, m, err := openSourceMode(t, mode.exactlyOnce, r, sets...)
				want := fmt.Sprintf("offset %d of in/0 (cluster 0) is out of range [40, 100], %s", tc.next, tc.where)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("exactly-once %v, offsetReset %q: Open error %v, want one containing %q", mode.exactlyOnce, mode.reset, err, want)
				}
				if n := m.OffsetResets.Load(); n != 0 {
					t.Fatalf("offsetResets %d after a refusal", n)
				}
			}
			// earliest: explicitly, and the at-least-once default.
			for _, sets := range [][]string{{"nodes.src.params.offsetReset=earliest"}, nil} {
				src, out, m, err := openSourceMode(t, sets != nil, r, append(sets, brokers, "nodes.src.params.clusters=null")...)
				if err != nil {
					t.Fatalf("open %v: %v", sets, err)
				}
				got := pollUntil(t, src, out, [2]int{40, 100})
				got2 := pollFor(t, src, out, 200*time.Millisecond)
				if len(got) != 60 || len(got2) != 0 {
					t.Fatalf("offsetReset %v read %d + %d ids, want 40-99", sets, len(got), len(got2))
				}
				if n := m.OffsetResets.Load(); n != 1 {
					t.Fatalf("offsetResets %d, want 1", n)
				}
			}
			src, out, m, err := openSourceMode(t, true, r, brokers, "nodes.src.params.clusters=null", "nodes.src.params.offsetReset=latest")
			if err != nil {
				t.Fatalf("open latest: %v", err)
			}
			if got := pollFor(t, src, out, 300*time.Millisecond); len(got) != 0 {
				t.Fatalf("offsetReset latest read %d old ids", len(got))
			}
			if n := m.OffsetResets.Load(); n != 1 {
				t.Fatalf("offsetResets %d, want 1", n)
			}
			produceIDs(t, c, "in", 1, 1000, 1010)
			got := pollUntil(t, src, out, [2]int{1000, 1010})
			if len(got) != 10 {
				t.Fatalf("offsetReset latest read %d ids, want the 10 produced after the reset", len(got))
			}
		})
	}
}

// deleteTopic deletes a topic.
func deleteTopic(t *testing.T, c *kafkatest.Cluster, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDeleteTopicsRequest()
	rt := kmsg.NewDeleteTopicsRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	req.TopicNames = append(req.TopicNames, topic)
	req.TimeoutMillis = 10_000
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("deleting topic %s: %v", topic, err)
	}
	for _, r := range resp.Topics {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			t.Fatalf("deleting topic %s: %v", topic, err)
		}
	}
}

// TestKafkaSourceOffsetResetWhileRunning deletes and recreates the topic a
// running source has read up to offset 100, with 20 records: its fetch
// offset is now above the high watermark, which sarama reports once before
// it stops the partition. fail fails the poll naming the range; earliest
// reads the new topic from its start, latest waits at its end.
func TestKafkaSourceOffsetResetWhileRunning(t *testing.T) {
	for _, reset := range []string{"fail", "earliest", "latest"} {
		t.Run(reset, func(t *testing.T) {
			c := kafkatest.Start(t, 0, 1, "in")
			produceIDs(t, c, "in", 1, 0, 100)
			src, out, m, err := openSourceMode(t, true, nil, `nodes.src.params.brokers=["`+c.Addrs[0]+`"]`, "nodes.src.params.clusters=null",
				"nodes.src.params.offsetReset="+reset)
			if err != nil {
				t.Fatal(err)
			}
			pollUntil(t, src, out, [2]int{0, 100})
			deleteTopic(t, c, "in")
			c.CreateTopic(t, "in", 1, nil)
			produceIDs(t, c, "in", 1, 1000, 1020)
			got := map[int64]int{}
			var perr error
			for deadline := time.Now().Add(60 * time.Second); perr == nil && m.OffsetResets.Load() == 0; {
				if time.Now().After(deadline) {
					t.Fatalf("timed out: the source did not notice the recreated topic")
				}
				_, perr = src.Poll()
			}
			if reset == "fail" {
				want := "offset 100 of in/0 (cluster 0) is out of range [0, 20], above the high watermark"
				if perr == nil || !strings.Contains(perr.Error(), want) {
					t.Fatalf("poll error %v, want one containing %q", perr, want)
				}
				return
			}
			if perr != nil {
				t.Fatalf("poll: %v", perr)
			}
			produceIDs(t, c, "in", 1, 2000, 2010)
			got = pollUntil(t, src, out, [2]int{2000, 2010})
			if n := m.OffsetResets.Load(); n != 1 {
				t.Fatalf("offsetResets %d, want 1", n)
			}
			want := 30 // earliest: the recreated topic's 20, then 10 more
			if reset == "latest" {
				want = 10
			}
			if len(got) != want || (reset == "earliest" && !hasAll(got, 1000, 1020)) {
				t.Fatalf("read %d ids after the reset, want %d", len(got), want)
			}
		})
	}
}

// TestKafkaSourceRate: a rate-limited source reads no faster than its rate.
func TestKafkaSourceRate(t *testing.T) {
	c := kafkatest.Start(t, 0, 2, "in")
	produceIDs(t, c, "in", 2, 0, 3000)
	src, out, _, err := openSourceMode(t, false, nil, `nodes.src.params.brokers=["`+c.Addrs[0]+`"]`, "nodes.src.params.clusters=null",
		"nodes.src.params.rate=1000")
	if err != nil {
		t.Fatal(err)
	}
	// 1000/s allows at most ~1000 + one batch in the first second however
	// fast the machine; without the limit all 3000 come at once.
	got := pollFor(t, src, out, time.Second)
	if len(got) > 2100 {
		t.Fatalf("read %d records in 1 s at rate 1000", len(got))
	}
}

const kafkaResetJob = `{
  "name": "reset", "parallelism": 1, "maxParallelism": 64,
  "checkpoint": {"interval": "50ms", "mode": "exactly-once"},
  "restart": {"strategy": "none"},
  "nodes": [
    {"id": "src", "type": "kafka", "params": {"brokers": [], "topics": ["in"], "bounded": true,
      "fields": [{"name": "id", "type": "int64"}, {"name": "v", "type": "string"}]}},
    {"id": "out", "type": "file", "inputs": ["src"], "params": {"path": "/dev/null"}}
  ]
}`

// TestKafkaSourceOffsetResetJob restores an exactly-once job after its
// topic was recreated: by default the run fails with the out-of-range
// error; with offsetReset earliest it reads the new topic, counted once.
func TestKafkaSourceOffsetResetJob(t *testing.T) {
	c := kafkatest.Start(t, 0, 1, "in")
	produceIDs(t, c, "in", 1, 0, 100)
	dir := t.TempDir()
	sets := []string{brokersSet("src", c), "checkpoint.storage=file://" + filepath.Join(dir, "chk"),
		"nodes.out.params.path=" + filepath.Join(dir, "out")}
	runKafkaJob(t, kafkaResetJob, "", sets...)
	deleteTopic(t, c, "in")
	c.CreateTopic(t, "in", 1, nil)
	produceIDs(t, c, "in", 1, 1000, 1020)

	g, opts := jobtest.Plan(t, kafkaResetJob, sets...)
	opts.Restore = "latest"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := runtime.Run(ctx, g, opts)
	want := "offset 100 of in/0 (cluster 0) is out of range [0, 20], above the high watermark"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("run error %v, want one containing %q", err, want)
	}

	res := runKafkaJob(t, kafkaResetJob, "latest", append(sets, "nodes.src.params.offsetReset=earliest")...)
	if n := res.Metrics["src"].OffsetResets.Load(); n != 1 {
		t.Fatalf("offsetResets %d, want 1", n)
	}
	got := fileIDs(t, filepath.Join(dir, "out"))
	if len(got) != 120 || !hasAll(got, 0, 100) || !hasAll(got, 1000, 1020) {
		t.Fatalf("committed %d ids, want 0-99 and 1000-1019", len(got))
	}
	for id, k := range got {
		if k != 1 {
			t.Fatalf("id %d committed %d times", id, k)
		}
	}
}
