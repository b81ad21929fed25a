package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/internal/kafkatest"
)

const kafkaCrashJob = `{
  "name": "kafka-crash", "parallelism": 2, "maxParallelism": 64,
  "checkpoint": {"interval": "100ms", "mode": "exactly-once", "retained": 2},
  "restart": {"strategy": "none"},
  "nodes": [
    {"id": "src", "type": "kafka", "params": {"brokers": [], "topics": ["in"], "bounded": true,
      "fields": [{"name": "id", "type": "int64"}, {"name": "pad", "type": "string"}]}},
    {"id": "even", "type": "project", "inputs": ["src"], "params": {"fields": [
      {"name": "id", "expr": "id"}, {"name": "double", "expr": "id * 2"}]}},
    {"id": "out", "type": "kafka", "inputs": [{"from": "even", "partition": "rebalance"}],
      "params": {"brokers": [], "topic": "out", "keyField": "id"}}
  ]
}`

// TestKafkaCrashExactlyOnce runs a kafka-to-kafka job as a separate process
// against a kfake cluster on a fixed loopback port, kills it with SIGKILL
// several times, restarts it with --restore latest (at another parallelism
// each time), and checks that a read_committed consumer sees every input
// record's result exactly once.
//
// Every kill must land mid-job, or the test proves nothing. A run to be
// killed reads at most 6000 records/s (the kafka source's rate param), and
// is killed a random 0-1.2 s after its own first completed checkpoint (not
// during start-up, when there is nothing new to recover), but at the latest
// 8 s after it started: so a killed run reads at most 48000 records however
// slow the machine, and the 4 kills together cannot reach the end of the
// 200000. A run that finishes before its kill fails the test. The final run
// reads at full speed.
func TestKafkaCrashExactlyOnce(t *testing.T) {
	const n, parts = 200_000, 4
	port := kafkatest.FreePort(t)
	c := kafkatest.Start(t, port, parts, "in", "out")
	pad := string(bytes.Repeat([]byte("p"), 100))
	for p := 0; p < parts; p++ {
		var recs []kafkatest.Record
		for i := p; i < n; i += parts {
			recs = append(recs, kafkatest.Record{Value: fmt.Appendf(nil, `{"id":%d,"pad":%q}`, i, pad)})
		}
		c.Produce(t, "in", int32(p), recs)
	}
	dir := t.TempDir()
	spec := filepath.Join(dir, "job.json")
	if err := os.WriteFile(spec, []byte(kafkaCrashJob), 0o644); err != nil {
		t.Fatal(err)
	}
	brokers := fmt.Sprintf(`["127.0.0.1:%d"]`, port)
	base := []string{"run",
		"--set", "nodes.src.params.brokers=" + brokers,
		"--set", "nodes.out.params.brokers=" + brokers,
		"--set", "checkpoint.storage=file://" + filepath.Join(dir, "checkpoints"),
		"--log-level", "debug", // for "checkpoint complete"
	}
	parallelisms := []int{2, 3, 1, 4}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	const kills = 4
	killed := 0
	for run := 0; ; run++ {
		args := append([]string{}, base...)
		if run > 0 {
			args = append(args, "--restore", "latest")
		}
		if killed < kills {
			args = append(args, "--set", "nodes.src.params.rate=6000")
		}
		args = append(args, "--set", fmt.Sprintf("parallelism=%d", parallelisms[run%len(parallelisms)]), spec)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, sluiceBin, args...)
		stderr := newWatchWriter("checkpoint complete")
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		if killed < kills {
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			finished := func(err error) {
				// The job ended before its kill: the run tested no crash.
				cancel()
				if err != nil {
					t.Fatalf("run %d failed: %v\n%s", run, err, stderr.String())
				}
				t.Fatalf("run %d finished before its kill (%d of %d kills landed): the source is not slow enough for the kills\n%s",
					run, killed, kills, tail(stderr.String(), 600))
			}
			latest := time.After(8 * time.Second)
			after := "after a checkpoint of its own"
			select {
			case err := <-exited:
				finished(err)
			case <-stderr.seen[0]:
			case <-latest:
				after = "8 s after its start, before a checkpoint of its own"
			}
			select {
			case err := <-exited:
				finished(err)
			case <-time.After(time.Duration(rng.IntN(1200)) * time.Millisecond):
			case <-latest:
			}
			_ = cmd.Process.Signal(syscall.SIGKILL)
			err := <-exited
			cancel()
			killed++
			t.Logf("run %d killed %s (%v); stderr tail: %s", run, after, err, tail(stderr.String(), 300))
			continue
		} else {
			err := cmd.Wait()
			cancel()
			if err != nil {
				t.Fatalf("final run failed: %v\n%s", err, stderr.String())
			}
			t.Logf("final run: %s", tail(stderr.String(), 400))
		}
		break
	}
	if killed != kills {
		t.Fatalf("%d of %d kills landed", killed, kills)
	}
	checkDoubledOnce(t, c, parts, n, fmt.Sprintf("%d kills", killed))
}

// checkDoubledOnce reads topic "out" read_committed and checks that each
// id in [0, n) was written exactly once, with double = 2·id (the doubling
// job's output); what says what the run went through.
func checkDoubledOnce(t *testing.T, c *kafkatest.Cluster, parts int32, n int64, what string) {
	t.Helper()
	seen := make([]int, n)
	for _, r := range c.ReadCommitted(t, "out", parts) {
		var v struct{ ID, Double int64 }
		if err := json.Unmarshal(r.Value, &v); err != nil || v.ID < 0 || v.ID >= n || v.Double != 2*v.ID {
			t.Fatalf("bad record %q (%v)", r.Value, err)
		}
		seen[v.ID]++
	}
	bad := 0
	for id, k := range seen {
		if k != 1 {
			if bad++; bad <= 5 {
				t.Errorf("id %d seen %d times", id, k)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d ids not seen exactly once (%s)", bad, n, what)
	}
}

// TestKeystoneRouter runs examples/keystone-router.json on kfake: events
// fan out by type to the playback and error topics, all go to the archive,
// records that do not parse to the dead-letter topic.
func TestKeystoneRouter(t *testing.T) {
	const parts = 3
	c := kafkatest.Start(t, 0, parts, "keystone-events", "keystone-playback", "keystone-errors", "keystone-archive", "keystone-dlq")
	types := []string{"play", "stop", "error", "browse"}
	const n = 4000
	var recs []kafkatest.Record
	for i := 0; i < n; i++ {
		recs = append(recs, kafkatest.Record{Value: fmt.Appendf(nil,
			`{"event_id":"e%d","type":%q,"device":"d%d","country":"NL","duration_ms":%d,"ts":%d}`, i, types[i%4], i%17, i, 1_700_000_000_000+int64(i))})
	}
	recs = append(recs, kafkatest.Record{Value: []byte(`{"event_id":1}`)}, kafkatest.Record{Value: []byte(`garbage`)})
	c.Produce(t, "keystone-events", -1, recs)
	brokers, _ := json.Marshal(c.Addrs)
	args := []string{"run", "--set", "checkpoint.storage=file://" + filepath.Join(t.TempDir(), "chk"),
		"--set", "nodes.events.params.bounded=true", "--set", "checkpoint.interval=100ms"}
	for _, id := range []string{"events", "to-playback", "to-errors", "to-archive", "to-dlq"} {
		args = append(args, "--set", fmt.Sprintf("nodes.%s.params.brokers=%s", id, brokers))
	}
	args = append(args, repoFile(t, "examples/keystone-router.json"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, sluiceBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("sluice run: %v\n%s", err, out)
	}
	count := func(topic string) map[string]int {
		m := map[string]int{}
		for _, r := range c.ReadCommitted(t, topic, parts) {
			var v map[string]any
			if err := json.Unmarshal(r.Value, &v); err != nil {
				m["raw"]++
				continue
			}
			if _, ok := v["country"]; ok && topic == "keystone-playback" {
				t.Fatalf("playback record not projected: %s", r.Value)
			}
			m[fmt.Sprint(v["type"])]++
		}
		return m
	}
	if got := count("keystone-playback"); got["play"] != n/4 || got["stop"] != n/4 || len(got) != 2 {
		t.Errorf("playback: %v", got)
	}
	if got := count("keystone-errors"); got["<nil>"] != n/4 || len(got) != 1 {
		t.Errorf("errors: %v", got) // projected without type
	}
	if got := count("keystone-archive"); got["play"]+got["stop"]+got["error"]+got["browse"] != n {
		t.Errorf("archive: %v", got)
	}
	if got := count("keystone-dlq"); got["raw"] != 1 || got["<nil>"] != 1 || len(got) != 2 {
		t.Errorf("dlq: %v", got)
	}
}

// watchWriter keeps a process's output and closes seen[i] once the output
// contains markers[i].
type watchWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	markers [][]byte
	seen    []chan struct{}
	done    []bool
}

func newWatchWriter(markers ...string) *watchWriter {
	w := &watchWriter{done: make([]bool, len(markers))}
	for _, m := range markers {
		w.markers = append(w.markers, []byte(m))
		w.seen = append(w.seen, make(chan struct{}))
	}
	return w
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	start := w.buf.Len()
	w.buf.Write(p)
	for i, m := range w.markers {
		from := max(0, start-len(m)) // a marker split over two writes
		if !w.done[i] && bytes.Contains(w.buf.Bytes()[from:], m) {
			w.done[i] = true
			close(w.seen[i])
		}
	}
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
