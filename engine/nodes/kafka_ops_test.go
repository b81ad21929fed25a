package nodes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/plan"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
	"github.com/sluice-stream/sluice/internal/kafkatest"
)

// bgJob is a job running in the background until stopped.
type bgJob struct {
	cancel context.CancelFunc
	done   chan struct{}
	res    *runtime.Result
	err    error
	logs   *strings.Builder
}

// startKafkaJob plans a job spec (JSON) with overrides and runs it on a
// goroutine; a checkpoint storage in a temporary directory is added.
func startKafkaJob(t *testing.T, specJSON string, sets ...string) *bgJob {
	t.Helper()
	sets = append([]string{"checkpoint.storage=file://" + filepath.Join(t.TempDir(), "chk")}, sets...)
	sj, err := spec.Parse([]byte(specJSON), sets)
	if err != nil {
		t.Fatalf("spec: %v", err)
	}
	g, err := plan.Build(sj)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	opts, err := plan.Options(sj)
	if err != nil {
		t.Fatalf("options: %v", err)
	}
	j := &bgJob{done: make(chan struct{}), logs: &strings.Builder{}}
	opts.Log = slog.New(slog.NewTextHandler(&lockedWriter{b: j.logs}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts.Storage.Log = opts.Log
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	j.cancel = cancel
	go func() {
		defer close(j.done)
		j.res, j.err = runtime.Run(ctx, g, opts)
	}()
	t.Cleanup(func() { cancel(); <-j.done })
	return j
}

// stop cancels the job and waits for it.
func (j *bgJob) stop(t *testing.T) *runtime.Result {
	t.Helper()
	j.cancel()
	<-j.done
	if j.err != nil && j.err != context.Canceled {
		t.Fatalf("job: %v\nlog:\n%s", j.err, j.log())
	}
	return j.res
}

// wait waits for the job to end by itself.
func (j *bgJob) wait(t *testing.T) (*runtime.Result, error) {
	t.Helper()
	select {
	case <-j.done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("job still running\nlog:\n%s", j.log())
	}
	return j.res, j.err
}

func (j *bgJob) log() string {
	logMu <- struct{}{}
	defer func() { <-logMu }()
	return j.logs.String()
}

func (j *bgJob) ended() bool {
	select {
	case <-j.done:
		return true
	default:
		return false
	}
}

// waitFor polls cond until it holds; the timeout is generous (a noisy
// machine), it only bounds a test that would otherwise hang.
func waitFor(t *testing.T, j *bgJob, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if j != nil && j.ended() {
			t.Fatalf("job ended while waiting for %s: %v\nlog:\n%s", what, j.err, j.log())
		}
		if time.Now().After(deadline) {
			log := ""
			if j != nil {
				log = j.log()
			}
			t.Fatalf("timed out waiting for %s\nlog:\n%s", what, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// produceIDs writes ids [from, to) as {"id":N,"v":"xN"} over partitions.
func produceIDs(t *testing.T, c *kafkatest.Cluster, topic string, partitions int32, from, to int) {
	t.Helper()
	for p := int32(0); p < partitions; p++ {
		var recs []kafkatest.Record
		for i := from + int(p); i < to; i += int(partitions) {
			recs = append(recs, kafkatest.Record{Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprintf(`{"id":%d,"v":"x%d"}`, i, i))})
		}
		if len(recs) > 0 {
			c.Produce(t, topic, p, recs)
		}
	}
}

// idSet returns the ids of JSON records {"id": N, ...}.
func idSet(t *testing.T, recs ...[]kafkatest.Record) map[int64]int {
	t.Helper()
	out := map[int64]int{}
	for _, rs := range recs {
		for _, r := range rs {
			var v struct{ ID int64 }
			if err := json.Unmarshal(r.Value, &v); err != nil {
				t.Fatalf("bad value %q: %v", r.Value, err)
			}
			out[v.ID]++
		}
	}
	return out
}

func hasAll(ids map[int64]int, from, to int) bool {
	for i := from; i < to; i++ {
		if ids[int64(i)] == 0 {
			return false
		}
	}
	return true
}

func countIn(ids map[int64]int, from, to int) int {
	n := 0
	for i := from; i < to; i++ {
		if ids[int64(i)] > 0 {
			n++
		}
	}
	return n
}

func clustersSet(node string, cs ...*kafkatest.Cluster) string {
	var v []map[string][]string
	for _, c := range cs {
		v = append(v, map[string][]string{"brokers": c.Addrs})
	}
	js, _ := json.Marshal(v)
	return fmt.Sprintf("nodes.%s.params.clusters=%s", node, js)
}

// Health checks every 100ms, a cluster down after 500ms of failed probes:
// the outages below are noticed quickly.
const fastHealth = `"healthCheckInterval": "100ms", "failureTimeout": "500ms", "retryInterval": "200ms"`

const dualJob = `{
  "name": "dual", "parallelism": 2, "maxParallelism": 64,
  "checkpoint": {"interval": "100ms", "mode": "at-least-once"},
  "restart": {"strategy": "fixed-delay", "attempts": 10, "delay": "100ms"},
  "nodes": [
    {"id": "src", "type": "kafka", "params": {"clusters": [], "topics": ["in"], "discoveryInterval": "500ms",
      "fields": [{"name": "id", "type": "int64"}, {"name": "v", "type": "string"}], ` + fastHealth + `}},
    {"id": "out", "type": "kafka", "inputs": [{"from": "src", "partition": "rebalance"}],
      "params": {"clusters": [], "topic": "out", "keyField": "id", "mode": "round-robin", ` + fastHealth + `}}
  ]
}`

// TestKafkaDualCluster runs a job reading and writing one logical topic
// over two clusters, cuts cluster A off the network mid-run (kafkatest's
// Gate: every connection refused, no data lost in the cluster) and brings
// it back. The job must never restart; every input id must reach the
// output at least once; A's records produced just before the outage must
// be read once it returns (its partitions re-opened at their offsets); and
// the sink must write to A again.
func TestKafkaDualCluster(t *testing.T) {
	for _, mode := range []string{"round-robin", "primary-backup"} {
		t.Run(mode, func(t *testing.T) { testKafkaDualCluster(t, mode) })
	}
}

func testKafkaDualCluster(t *testing.T, mode string) {
	const parts = 4
	a := kafkatest.Start(t, 0, parts, "in", "out")
	b := kafkatest.Start(t, 0, parts, "in", "out")
	outA, outB := a.NewReader(t, "out"), b.NewReader(t, "out")
	all := func() map[int64]int { return idSet(t, outA.Records(), outB.Records()) }

	produceIDs(t, a, "in", parts, 0, 1000)
	produceIDs(t, b, "in", parts, 1000, 2000)
	j := startKafkaJob(t, dualJob, clustersSet("src", a, b), clustersSet("out", a, b), "nodes.out.params.mode="+mode)
	waitFor(t, j, "ids 0-1999 before the outage", func() bool { return hasAll(all(), 0, 2000) })
	switch mode {
	case "primary-backup":
		// All to the primary while it is up.
		if n := len(outB.Records()); n > 0 {
			t.Fatalf("primary-backup: %d records on the backup while the primary was up", n)
		}
	case "round-robin":
		if len(outA.Records()) == 0 || len(outB.Records()) == 0 {
			t.Fatalf("round-robin: %d records on A, %d on B", len(outA.Records()), len(outB.Records()))
		}
	}

	// Records on A that the job may not have read yet when A goes away.
	produceIDs(t, a, "in", parts, 5000, 6000)
	a.Gate.Down()
	produceIDs(t, b, "in", parts, 2000, 3000)
	waitFor(t, j, "ids 2000-2999 through B while A is down", func() bool { return hasAll(idSet(t, outB.Records()), 2000, 3000) })
	a.Gate.Up()

	produceIDs(t, a, "in", parts, 3000, 4000)
	produceIDs(t, b, "in", parts, 4000, 5000)
	waitFor(t, j, "every id after A returned", func() bool { return hasAll(all(), 0, 6000) })
	// The sink takes A back: keep feeding B until rows land on A again.
	next := 6000
	waitFor(t, j, "the sink writing to A again", func() bool {
		if countIn(idSet(t, outA.Records()), 3000, next) > 0 {
			return true
		}
		produceIDs(t, b, "in", parts, next, next+100)
		next += 100
		time.Sleep(200 * time.Millisecond)
		return false
	})
	waitFor(t, j, "every id", func() bool { return hasAll(all(), 0, next) })
	res := j.stop(t)
	if res.Restarts != 0 {
		t.Fatalf("the job restarted %d times\nlog:\n%s", res.Restarts, j.log())
	}
	log := j.log()
	for _, want := range []string{"kafka source: cluster down", "kafka source: cluster back", "kafka sink: cluster down", "kafka sink: cluster back"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
}
