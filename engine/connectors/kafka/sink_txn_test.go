package kafka

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/nodes"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
	"github.com/sluice-stream/sluice/internal/kafkatest"
)

// txnSink is an exactly-once kafka sink subtask driven by hand: rows in,
// Snapshot (pre-commit), CheckpointComplete (commit), Close (crash).
type txnSink struct {
	*kafkaSinkEO
	schema *row.Schema
	logs   *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuf) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func newTxnSink(t testing.TB, c *kafkatest.Cluster, timeout time.Duration) *txnSink {
	t.Helper()
	schema, err := row.NewSchema(row.Field{Name: "id", Type: row.Int64})
	if err != nil {
		t.Fatal(err)
	}
	params, _ := json.Marshal(map[string]any{"brokers": c.Addrs, "topic": "out", "keyField": "id", "transactionTimeout": timeout.String()})
	job := &spec.Job{Name: "txn", Checkpoint: spec.Checkpoint{Interval: spec.Duration(100 * time.Millisecond), Timeout: spec.Duration(time.Second)}, Restart: spec.Restart{Strategy: spec.NoRestart}}
	p, err := planKafkaSink(&nodes.PlanContext{Job: job, Node: &spec.Node{ID: "out", Type: "kafka", Params: params}, Inputs: []*row.Schema{schema}})
	if err != nil {
		t.Fatal(err)
	}
	return &txnSink{kafkaSinkEO: p.NewOperator().(*kafkaSinkEO), schema: schema, logs: &syncBuf{}}
}

func (s *txnSink) open(r *runtime.Restored) error {
	return s.openAs(r, 0, 1, &runtime.NodeMetrics{})
}

// openAs opens the sink as subtask sub of par, counting into m.
func (s *txnSink) openAs(r *runtime.Restored, sub, par int, m *runtime.NodeMetrics) error {
	return s.Open(&runtime.Context{JobName: "txn", NodeID: "out", Subtask: sub, Parallelism: par, MaxParallelism: par, ExactlyOnce: true,
		Log: slog.New(slog.NewTextHandler(s.logs, nil)), Metrics: m}, r)
}

func (s *txnSink) write(t testing.TB, from, to int) {
	t.Helper()
	b := row.NewBatch(s.schema)
	for i := from; i < to; i++ {
		if err := b.AppendRow(int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Process(0, b); err != nil {
		t.Fatal(err)
	}
}

// snapshot pre-commits and returns what the checkpoint records.
func (s *txnSink) snapshot(t testing.TB, id int64) *runtime.Restored {
	t.Helper()
	snap, err := s.Snapshot(id)
	if err != nil {
		t.Fatal(err)
	}
	r := &runtime.Restored{CheckpointID: id}
	if err := snap.Write(stateCollector{r}); err != nil {
		t.Fatal(err)
	}
	return r
}

type stateCollector struct{ r *runtime.Restored }

func (c stateCollector) AddKeyGroup(int, []byte)   {}
func (c stateCollector) AddOperatorState(d []byte) { c.r.OperatorState = append(c.r.OperatorState, d) }

// TestKafkaSinkAbortedTxnNotTakenForCommitted: a transaction pre-committed
// at a checkpoint, then aborted by the broker on its timeout while the job
// is down, must not be taken for committed on restore (its rows would be
// lost): the restore asks for an older checkpoint, or, when the loss is
// accepted, counts it.
func TestKafkaSinkAbortedTxnNotTakenForCommitted(t *testing.T) {
	c := kafkatest.Start(t, 0, 2, "out")
	s := newTxnSink(t, c, time.Second)
	if err := s.open(nil); err != nil {
		t.Fatal(err)
	}
	s.write(t, 0, 10)
	r := s.snapshot(t, 7)
	_ = s.Close() // crash before CheckpointComplete
	time.Sleep(1500 * time.Millisecond)

	s2 := newTxnSink(t, c, time.Second)
	err := s2.open(r)
	var rb *runtime.RestoreBeforeError
	if !errors.As(err, &rb) || rb.Before != 7 || !strings.Contains(rb.Reason, "txn-out-0-0") {
		t.Fatalf("open: %v (%T), want a RestoreBeforeError before 7 naming the transactional id\nlog:\n%s", err, err, s2.logs)
	}
	_ = s2.Close()
	if got := c.ReadCommitted(t, "out", 2); len(got) != 0 {
		t.Fatalf("read %d records, want 0", len(got))
	}

	// Accepting the loss: logged, counted once over the subtasks (each
	// sees every entry), and the sink goes on.
	r.AcceptLoss = true
	m := &runtime.NodeMetrics{}
	s3, s3b := newTxnSink(t, c, time.Second), newTxnSink(t, c, time.Second)
	if err := s3.openAs(r, 0, 2, m); err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if err := s3b.openAs(r, 1, 2, m); err != nil {
		t.Fatal(err)
	}
	defer s3b.Close()
	if n := m.LostTransactions.Load(); n != 1 {
		t.Fatalf("LostTransactions = %d, want 1", n)
	}
	if !strings.Contains(s3.logs.String(), "aborted by the broker") {
		t.Fatalf("no warning in the log:\n%s", s3.logs)
	}
}

// TestKafkaSinkCommittedTxnRestored: a transaction committed before the
// crash (or by an earlier restore) is recognised as committed from its
// marker, however often the checkpoint is restored, and nothing is written
// twice.
func TestKafkaSinkCommittedTxnRestored(t *testing.T) {
	c := kafkatest.Start(t, 0, 2, "out")
	s := newTxnSink(t, c, 5*time.Second)
	if err := s.open(nil); err != nil {
		t.Fatal(err)
	}
	s.write(t, 0, 10)
	r := s.snapshot(t, 3)
	_ = s.Close() // crash before the commit: the restore commits it
	for i := 0; i < 3; i++ {
		s2 := newTxnSink(t, c, 5*time.Second)
		if err := s2.open(r); err != nil {
			t.Fatalf("restore %d: %v\nlog:\n%s", i, err, s2.logs)
		}
		_ = s2.Close()
		time.Sleep(100 * time.Millisecond)
	}
	if got := c.ReadCommitted(t, "out", 2); len(got) != 10 {
		t.Fatalf("read %d records, want 10", len(got))
	}
}

// TestKafkaSinkForgottenTxnID: after transactional.id.expiration.ms the
// broker forgets the transactional id and EndTxn answers
// INVALID_PRODUCER_ID_MAPPING; the transaction ended long ago, so a
// savepoint that recorded it must still restore.
func TestKafkaSinkForgottenTxnID(t *testing.T) {
	c := kafkatest.StartWith(t, kafkatest.Options{Partitions: 2, Topics: []string{"out"},
		Kfake: []kfake.Opt{kfake.BrokerConfigs(map[string]string{"transactional.id.expiration.ms": "300"})}})
	s := newTxnSink(t, c, 5*time.Second)
	if err := s.open(nil); err != nil {
		t.Fatal(err)
	}
	s.write(t, 0, 10)
	r := s.snapshot(t, 5)
	if err := s.CheckpointComplete(5); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	time.Sleep(time.Second) // the id expires

	s2 := newTxnSink(t, c, 5*time.Second)
	if err := s2.open(r); err != nil {
		t.Fatalf("open: %v\nlog:\n%s", err, s2.logs)
	}
	_ = s2.Close()
	if got := c.ReadCommitted(t, "out", 2); len(got) != 10 {
		t.Fatalf("read %d records, want 10", len(got))
	}
	// An id the broker never saw answers the same.
	r.OperatorState = [][]byte{[]byte(fmt.Sprintf("%snever-seen-0-0 12345 0 5", kafkaTxnEntry))}
	s3 := newTxnSink(t, c, 5*time.Second)
	if err := s3.open(r); err != nil {
		t.Fatalf("open with an unknown id: %v\nlog:\n%s", err, s3.logs)
	}
	_ = s3.Close()
}

// TestKafkaSinkFallbackCheck: restoring a checkpoint older than a skipped
// (corrupt) one, the exactly-once sink goes on only when it can show that
// none of its transactional ids was used after the restored checkpoint;
// otherwise it refuses, unless duplicates are allowed.
func TestKafkaSinkFallbackCheck(t *testing.T) {
	c := kafkatest.Start(t, 0, 2, "out")

	// Nothing written after checkpoint 1: falling back to it is safe.
	s := newTxnSink(t, c, 5*time.Second)
	if err := s.open(nil); err != nil {
		t.Fatal(err)
	}
	s.write(t, 0, 10)
	r1 := s.snapshot(t, 1)
	if err := s.CheckpointComplete(1); err != nil {
		t.Fatal(err)
	}
	s.snapshot(t, 2)
	_ = s.Close()
	r1.SkippedNewer = 2
	s2 := newTxnSink(t, c, 5*time.Second)
	if err := s2.open(r1); err != nil {
		t.Fatalf("fallback with nothing after the checkpoint: %v\nlog:\n%s", err, s2.logs)
	}
	// Rows after checkpoint 1 (restored), committed at checkpoint 2.
	s2.write(t, 10, 20)
	r1b := s2.snapshot(t, 1)
	if err := s2.CheckpointComplete(1); err != nil {
		t.Fatal(err)
	}
	s2.write(t, 20, 30)
	s2.snapshot(t, 2)
	if err := s2.CheckpointComplete(2); err != nil {
		t.Fatal(err)
	}
	_ = s2.Close()

	r1b.SkippedNewer = 2
	s3 := newTxnSink(t, c, 5*time.Second)
	err := s3.open(r1b)
	var refused *runtime.FallbackRefusedError
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "txn-out-0-0") {
		t.Fatalf("fallback past a committed transaction: %v (%T), want a FallbackRefusedError naming txn-out-0-0\nlog:\n%s", err, err, s3.logs)
	}
	r1b.AllowDuplicates = true
	s4 := newTxnSink(t, c, 5*time.Second)
	if err := s4.open(r1b); err != nil {
		t.Fatalf("fallback with duplicates allowed: %v", err)
	}
	_ = s4.Close()
}

// BenchmarkKafkaSinkOpen measures an exactly-once sink subtask's Open at
// maxParallelism 128: fencing 4 × 128 transactional ids on kfake, as it
// answers and with 2 ms added to every InitProducerId (a broker's round
// trip and log append).
func BenchmarkKafkaSinkOpen(b *testing.B) {
	for _, delay := range []time.Duration{0, 2 * time.Millisecond} {
		b.Run(fmt.Sprintf("initProducerIdDelay=%v", delay), func(b *testing.B) {
			c := kafkatest.Start(b, 0, 2, "out")
			if delay > 0 {
				c.ControlKey(int16(kmsg.InitProducerID), func(kmsg.Request) (kmsg.Response, error, bool) {
					c.KeepControl()
					c.SleepControl(func() { time.Sleep(delay) })
					return nil, nil, false
				})
			}
			for i := 0; i < b.N; i++ {
				s := newTxnSink(b, c, 5*time.Second)
				err := s.Open(&runtime.Context{JobName: "bench", NodeID: "out", Parallelism: 1, MaxParallelism: 128, ExactlyOnce: true,
					Log: slog.New(slog.NewTextHandler(s.logs, nil)), Metrics: &runtime.NodeMetrics{}}, nil)
				if err != nil {
					b.Fatal(err)
				}
				_ = s.Close()
			}
		})
	}
}

// TestKafkaSinkTxnTimeoutPlan: the default transaction timeout is Kafka's
// transaction.max.timeout.ms (15 min); a shorter one that a slow checkpoint
// plus a restart can outlast is planned with a warning, one below two
// checkpoint intervals is refused.
func TestKafkaSinkTxnTimeoutPlan(t *testing.T) {
	schema, _ := row.NewSchema(row.Field{Name: "id", Type: row.Int64})
	job := &spec.Job{Name: "txn", Checkpoint: spec.Checkpoint{Interval: spec.Duration(time.Minute), Timeout: spec.Duration(10 * time.Minute)},
		Restart: spec.Restart{Strategy: spec.FixedDelay, Delay: spec.Duration(time.Minute)}}
	plan := func(timeout string) (*kafkaSinkConfig, string, error) {
		var logs syncBuf
		prev := slog.Default()
		slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
		defer slog.SetDefault(prev)
		params := map[string]any{"brokers": []string{"k:9092"}, "topic": "out"}
		if timeout != "" {
			params["transactionTimeout"] = timeout
		}
		raw, _ := json.Marshal(params)
		p, err := planKafkaSink(&nodes.PlanContext{Job: job, Node: &spec.Node{ID: "out", Type: "kafka", Params: raw}, Inputs: []*row.Schema{schema}})
		if err != nil {
			return nil, logs.String(), err
		}
		return p.NewOperator().(*kafkaSinkEO).cfg, logs.String(), nil
	}
	cfg, logs, err := plan("")
	if err != nil || cfg.txnTimeout != 15*time.Minute || logs != "" {
		t.Fatalf("default: %v, timeout %v, log %q; want 15m and no warning", err, cfg.txnTimeout, logs)
	}
	// 1m interval + 10m checkpoint timeout + 1m restart delay = 12m.
	if _, logs, err = plan("11m"); err != nil || !strings.Contains(logs, "12m0s") {
		t.Fatalf("11m: %v, log %q; want a warning naming 12m0s", err, logs)
	}
	if _, _, err = plan("90s"); err == nil || !strings.Contains(err.Error(), "two checkpoint intervals") {
		t.Fatalf("90s: %v, want refused", err)
	}
}

// BenchmarkKafkaSinkTxn measures one checkpoint's transaction of an
// exactly-once sink subtask: rows in, pre-commit, commit; with kfake as it
// answers and with 2 ms added to every transaction-coordinator request
// (InitProducerId, AddPartitionsToTxn, EndTxn: a broker's round trip and
// log append). commit-µs/op is the commit and the next transaction's
// start (CheckpointComplete, begin), the part a reused producer changes.
func BenchmarkKafkaSinkTxn(b *testing.B) {
	for _, delay := range []time.Duration{0, 2 * time.Millisecond} {
		for _, rows := range []int{10, 1000} {
			b.Run(fmt.Sprintf("coordinatorDelay=%v/rows=%d", delay, rows), func(b *testing.B) {
				c := kafkatest.Start(b, 0, 4, "out")
				if delay > 0 {
					for _, k := range []kmsg.Key{kmsg.InitProducerID, kmsg.AddPartitionsToTxn, kmsg.EndTxn} {
						c.ControlKey(int16(k), func(kmsg.Request) (kmsg.Response, error, bool) {
							c.KeepControl()
							c.SleepControl(func() { time.Sleep(delay) })
							return nil, nil, false
						})
					}
				}
				s := newTxnSink(b, c, time.Minute)
				if err := s.open(nil); err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				inits := countRequests(c, kmsg.InitProducerID)
				var commit time.Duration
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					s.write(b, i*rows, (i+1)*rows)
					s.snapshot(b, int64(i+1))
					t0 := time.Now()
					if err := s.CheckpointComplete(int64(i + 1)); err != nil {
						b.Fatal(err)
					}
					if err := s.begin(); err != nil {
						b.Fatal(err)
					}
					commit += time.Since(t0)
				}
				b.ReportMetric(float64(rows), "rows/op")
				b.ReportMetric(float64(commit.Microseconds())/float64(b.N), "commit-µs/op")
				b.ReportMetric(float64(inits.Load())/float64(b.N), "initProducerId/op")
			})
		}
	}
}

// TestKafkaSinkMixedOutcome: of one checkpoint's transactions, one
// subtask's committed and another's was aborted by the broker: restoring
// that checkpoint loses rows, an older one duplicates rows, so the restore
// is refused.
func TestKafkaSinkMixedOutcome(t *testing.T) {
	c := kafkatest.Start(t, 0, 2, "out")
	a, b := newTxnSink(t, c, time.Second), newTxnSink(t, c, time.Second)
	if err := a.openAs(nil, 0, 2, &runtime.NodeMetrics{}); err != nil {
		t.Fatal(err)
	}
	if err := b.openAs(nil, 1, 2, &runtime.NodeMetrics{}); err != nil {
		t.Fatal(err)
	}
	a.write(t, 0, 10)
	b.write(t, 10, 20)
	r := a.snapshot(t, 5)
	r.OperatorState = append(r.OperatorState, b.snapshot(t, 5).OperatorState...)
	if err := a.CheckpointComplete(5); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	_ = b.Close() // crashed before its commit
	time.Sleep(1500 * time.Millisecond)

	s := newTxnSink(t, c, time.Second)
	err := s.openAs(r, 0, 2, &runtime.NodeMetrics{})
	var refused *runtime.FallbackRefusedError
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "txn-out-1-0") || !strings.Contains(err.Error(), "txn-out-0-0") {
		t.Fatalf("open: %v (%T), want a FallbackRefusedError naming both transactions\nlog:\n%s", err, err, s.logs)
	}
}

// countRequests counts the requests of one kind the cluster answers.
func countRequests(c *kafkatest.Cluster, key kmsg.Key) *atomic.Int64 {
	var n atomic.Int64
	c.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		n.Add(1)
		return nil, nil, false
	})
	return &n
}

// keysOf returns the ids (record keys) a reader saw, sorted.
func keysOf(t *testing.T, recs []kafkatest.Record) []int {
	t.Helper()
	var out []int
	for _, r := range recs {
		var k int
		if _, err := fmt.Sscanf(string(r.Key), "%d", &k); err != nil {
			t.Fatalf("record key %q: %v", r.Key, err)
		}
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// wantIDs fails unless keys are from..to-1, each once.
func wantIDs(t *testing.T, keys []int, from, to int) {
	t.Helper()
	ok := len(keys) == to-from
	for i := 0; ok && i < len(keys); i++ {
		ok = keys[i] == from+i
	}
	if !ok {
		t.Fatalf("read ids %v, want %d..%d once each", keys, from, to-1)
	}
}

// TestKafkaSinkReusesProducers: an exactly-once sink subtask runs its
// transactions on the producers of its pool, one after another, so a run
// of many checkpoints asks for a producer id (InitProducerId) about once
// per pool slot, not once per transaction.
func TestKafkaSinkReusesProducers(t *testing.T) {
	c := kafkatest.Start(t, 0, 2, "out")
	s := newTxnSink(t, c, 5*time.Second)
	if err := s.open(nil); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	inits := countRequests(c, kmsg.InitProducerID)
	const n = 20
	for i := 0; i < n; i++ {
		s.write(t, i*10, (i+1)*10)
		s.snapshot(t, int64(i+1))
		if i > 0 { // one checkpoint pending while the next rows come
			if err := s.CheckpointComplete(int64(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.CheckpointComplete(n); err != nil {
		t.Fatal(err)
	}
	if got := inits.Load(); got > kafkaTxnPool {
		t.Fatalf("%d InitProducerId requests over %d transactions, want at most %d (the pool)", got, n, kafkaTxnPool)
	}
	wantIDs(t, keysOf(t, c.ReadCommitted(t, "out", 2)), 0, n*10)

	// A producer left free longer than kafkaProducerIdle, or with an
	// empty transaction open that long, is replaced (the broker may have
	// forgotten its id).
	if err := s.begin(); err != nil {
		t.Fatal(err)
	}
	defer func(d time.Duration) { kafkaProducerIdle = d }(kafkaProducerIdle)
	kafkaProducerIdle = 0
	before := inits.Load()
	s.write(t, n*10, n*10+10)
	if got := inits.Load() - before; got != 1 {
		t.Fatalf("%d InitProducerId requests for a transaction on an idle producer, want 1", got)
	}
	s.snapshot(t, n+1)
	if err := s.CheckpointComplete(n + 1); err != nil {
		t.Fatal(err)
	}
	wantIDs(t, keysOf(t, c.ReadCommitted(t, "out", 2)), 0, n*10+10)
}

// TestKafkaSinkReusedProducerCrash: checkpoint 2 records the transaction
// of checkpoint 1 (still pending at its snapshot), which then commits; its
// producer takes the rows after checkpoint 2 and the job crashes with
// that transaction open, under the same (id, producer id, epoch) as the
// recorded one. The restore of checkpoint 2 must commit checkpoint 2's
// transaction, leave checkpoint 1's alone (committing "it" again would
// commit the open one: rows the sources replay) and abort the open one.
// Another subtask's transaction, open since before, holds the partitions'
// last stable offset below the recorded transactions, so the restore
// reads on to their end markers.
func TestKafkaSinkReusedProducerCrash(t *testing.T) {
	c := kafkatest.Start(t, 0, 2, "out")
	a, b := newTxnSink(t, c, 10*time.Second), newTxnSink(t, c, 10*time.Second)
	if err := a.openAs(nil, 0, 2, &runtime.NodeMetrics{}); err != nil {
		t.Fatal(err)
	}
	if err := b.openAs(nil, 1, 2, &runtime.NodeMetrics{}); err != nil {
		t.Fatal(err)
	}
	b.write(t, 1000, 1010) // open until the crash: never pre-committed
	a.write(t, 0, 10)
	a.snapshot(t, 1)
	first := *a.pending[0]
	a.write(t, 10, 20)
	r := a.snapshot(t, 2)
	if err := a.CheckpointComplete(1); err != nil {
		t.Fatal(err)
	}
	a.write(t, 20, 30)
	if a.cur.id != first.id || a.cur.pid != first.pid || a.cur.epoch != first.epoch {
		t.Fatalf("the rows after checkpoint 2 went to %s (producer %d epoch %d), not to checkpoint 1's %s (producer %d epoch %d)",
			a.cur.id, a.cur.pid, a.cur.epoch, first.id, first.pid, first.epoch)
	}
	_ = a.Close()
	_ = b.Close()

	for i := 0; i < 2; i++ { // restored twice: the second finds everything settled
		m := &runtime.NodeMetrics{}
		a2, b2 := newTxnSink(t, c, 10*time.Second), newTxnSink(t, c, 10*time.Second)
		if err := a2.openAs(r, 0, 2, m); err != nil {
			t.Fatalf("restore %d: %v\nlog:\n%s", i, err, a2.logs)
		}
		if err := b2.openAs(r, 1, 2, m); err != nil {
			t.Fatalf("restore %d: %v\nlog:\n%s", i, err, b2.logs)
		}
		_ = a2.Close()
		_ = b2.Close()
	}
	wantIDs(t, keysOf(t, c.ReadCommitted(t, "out", 2)), 0, 20)
}

// TestKafkaSinkFallbackReusedUncommitted: after checkpoint 1 the producer
// of its transaction takes the next rows, pre-committed at checkpoint 2,
// which is then skipped (corrupt) before that transaction committed.
// Nothing committed after checkpoint 1, so falling back to it is safe,
// although the id was used after it under the same epoch; once that
// transaction commits, the same fallback is refused.
func TestKafkaSinkFallbackReusedUncommitted(t *testing.T) {
	c := kafkatest.Start(t, 0, 2, "out")
	s := newTxnSink(t, c, 5*time.Second)
	if err := s.open(nil); err != nil {
		t.Fatal(err)
	}
	s.write(t, 0, 10)
	r1 := s.snapshot(t, 1)
	if err := s.CheckpointComplete(1); err != nil {
		t.Fatal(err)
	}
	s.write(t, 10, 20)
	s.snapshot(t, 2)
	_ = s.Close() // crash before checkpoint 2 completes

	r1.SkippedNewer = 2
	s2 := newTxnSink(t, c, 5*time.Second)
	if err := s2.open(r1); err != nil {
		t.Fatalf("fallback with nothing committed after the checkpoint: %v\nlog:\n%s", err, s2.logs)
	}
	wantIDs(t, keysOf(t, c.ReadCommitted(t, "out", 2)), 0, 10)

	// Again from checkpoint 1 of this attempt, and this time the rows
	// after it commit (checkpoint 2 completes).
	s2.write(t, 10, 20)
	r1b := s2.snapshot(t, 1)
	if err := s2.CheckpointComplete(1); err != nil {
		t.Fatal(err)
	}
	s2.write(t, 20, 30)
	s2.snapshot(t, 2)
	if err := s2.CheckpointComplete(2); err != nil {
		t.Fatal(err)
	}
	_ = s2.Close()
	r1b.SkippedNewer = 2
	s3 := newTxnSink(t, c, 5*time.Second)
	err := s3.open(r1b)
	var refused *runtime.FallbackRefusedError
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "txn-out-0-0 committed a transaction after checkpoint 1") {
		t.Fatalf("fallback past a committed transaction: %v (%T), want a FallbackRefusedError naming txn-out-0-0\nlog:\n%s", err, err, s3.logs)
	}
}

// BenchmarkKafkaSinkRestore measures the restore of one exactly-once sink
// subtask (Open, subtask 0 of 4) from a checkpoint whose four subtasks
// each pre-committed a transaction of rows over 4 partitions, interleaved
// in the logs, and crashed before committing: the restore settles all
// four (each subtask sees every entry).
func BenchmarkKafkaSinkRestore(b *testing.B) {
	for _, rows := range []int{1000, 20000} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			c := kafkatest.Start(b, 0, 4, "out")
			var took time.Duration
			for i := 0; i < b.N; i++ {
				subs := make([]*txnSink, 4)
				for k := range subs {
					subs[k] = newTxnSink(b, c, time.Minute)
					subs[k].cfg.p.TransactionalIDPrefix = fmt.Sprintf("bench%d", i)
					if err := subs[k].openAs(nil, k, 4, &runtime.NodeMetrics{}); err != nil {
						b.Fatal(err)
					}
				}
				for j := 0; j < rows; j += 100 {
					for _, s := range subs {
						s.write(b, j, j+100)
					}
				}
				r := &runtime.Restored{CheckpointID: 1}
				for _, s := range subs {
					r.OperatorState = append(r.OperatorState, s.snapshot(b, 1).OperatorState...)
					_ = s.Close()
				}
				s := newTxnSink(b, c, time.Minute)
				s.cfg.p.TransactionalIDPrefix = fmt.Sprintf("bench%d", i)
				t0 := time.Now()
				if err := s.openAs(r, 0, 4, &runtime.NodeMetrics{}); err != nil {
					b.Fatal(err)
				}
				took += time.Since(t0)
				_ = s.Close()
			}
			b.ReportMetric(float64(took.Microseconds())/float64(b.N), "restore-µs/op")
		})
	}
}
