package plan_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/nodes"
	"github.com/sluice-stream/sluice/engine/plan"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
)

// ---- custom node types, registered the way a binary built on the engine's
// Go API registers its own.

// failures counts, per test (the node's "flag" param), how often a
// "failing" node has failed.
var failures sync.Map // string → *atomic.Int64

func failCounter(flag string) *atomic.Int64 {
	c, _ := failures.LoadOrStore(flag, new(atomic.Int64))
	return c.(*atomic.Int64)
}

type failingParams struct {
	After int64 `json:"after"` // rows a subtask passes on before it fails
	// AfterCheckpoint: fail only once a checkpoint of this attempt has
	// completed, so that the restart has one to restore from.
	AfterCheckpoint bool `json:"afterCheckpoint"`
	// AfterCheckpoints: fail only once this many checkpoints of this
	// attempt have completed.
	AfterCheckpoints int    `json:"afterCheckpoints"`
	Times            int64  `json:"times"` // failures in all (over every attempt)
	Flag             string `json:"flag"`
}

func init() {
	nodes.Register("failing", nodes.Factory{Kind: nodes.Operator, MinInputs: 1, MaxInputs: 1, Plan: func(c *nodes.PlanContext) (*nodes.Planned, error) {
		var p failingParams
		if err := c.Params(&p); err != nil {
			return nil, err
		}
		if p.Flag == "" {
			return nil, errors.New("params.flag: required")
		}
		return &nodes.Planned{Schema: c.Inputs[0], NewOperator: func() runtime.Operator {
			return &failing{p: p, failed: failCounter(p.Flag)}
		}}, nil
	}})
}

// failing passes rows on; its subtask 0 fails after `after` rows (counted
// from its start), `times` times in all.
type failing struct {
	runtime.BaseOperator
	p         failingParams
	failed    *atomic.Int64
	rows      int64
	completed int
}

func (f *failing) CheckpointComplete(int64) error { f.completed++; return nil }

func (f *failing) Process(_ int, b *row.Batch) error {
	f.rows += int64(b.Len)
	need := f.p.AfterCheckpoints
	if f.p.AfterCheckpoint {
		need = max(need, 1)
	}
	if f.Ctx.Subtask == 0 && f.rows >= f.p.After && f.completed >= need {
		if n := f.failed.Add(1); n <= f.p.Times {
			b.Release()
			return fmt.Errorf("injected failure %d of %d", n, f.p.Times)
		}
		f.failed.Add(-1)
	}
	f.Ctx.Out.Collect(b)
	return nil
}

// ---- running jobs

// logHook receives every log record of a run (on the goroutine that logs).
type logHook func(r slog.Record)

type hookHandler struct {
	mu    *sync.Mutex
	buf   *strings.Builder
	hook  logHook
	attrs []slog.Attr
}

func (h *hookHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *hookHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	fmt.Fprintf(h.buf, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(h.buf, " %s", a); return true })
	h.buf.WriteByte('\n')
	h.mu.Unlock()
	if h.hook != nil {
		h.hook(r)
	}
	return nil
}
func (h *hookHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}
func (h *hookHandler) WithGroup(string) slog.Handler { return h }

type testJob struct {
	dir         string // a fresh directory per job
	checkpoints string
	spec        string
	sets        []string
	hook        logHook
	restore     string // runtime.Options.Restore
}

func newJob(t *testing.T, specJSON string) *testJob {
	dir := t.TempDir()
	return &testJob{dir: dir, checkpoints: filepath.Join(dir, "checkpoints"), spec: specJSON}
}

// out is the directory of the file sink named id.
func (j *testJob) out(id string) string { return filepath.Join(j.dir, id) }

// run parses, plans and runs the job; the file sinks write under j.dir.
func (j *testJob) run(t *testing.T) (*runtime.Result, error) {
	t.Helper()
	sets := append([]string{"checkpoint.storage=file://" + j.checkpoints}, j.sets...)
	parsed, err := spec.Parse([]byte(j.spec), nil)
	if err != nil {
		t.Fatalf("spec: %v", err)
	}
	for _, n := range parsed.Nodes {
		if n.Type == "file" && len(n.Inputs) > 0 {
			sets = append(sets, fmt.Sprintf("nodes.%s.params.path=%s", n.ID, j.out(n.ID)))
		}
	}
	sj, err := spec.Parse([]byte(j.spec), sets)
	if err != nil {
		t.Fatalf("spec: %v", err)
	}
	g, opts, err := plan.Prepare(sj)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	var mu sync.Mutex
	var logs strings.Builder
	opts.Restore = j.restore
	opts.Log = slog.New(&hookHandler{mu: &mu, buf: &logs, hook: j.hook})
	opts.Storage.Log = opts.Log
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("job log:\n%s", logs.String())
			mu.Unlock()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return runtime.Run(ctx, g, opts)
}

// countRestores counts the runs that restore a checkpoint.
func (j *testJob) countRestores() *atomic.Int64 {
	var n atomic.Int64
	prev := j.hook
	j.hook = func(r slog.Record) {
		if r.Message == "restoring" {
			n.Add(1)
		}
		if prev != nil {
			prev(r)
		}
	}
	return &n
}

func (j *testJob) mustRun(t *testing.T) *runtime.Result {
	t.Helper()
	res, err := j.run(t)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return res
}

// outRow is a row of a file sink with the part file's subtask.
type outRow struct {
	fields  map[string]int64
	subtask string
}

// readOut reads every committed part file of sink id (dot-files are not
// committed) as rows of int64 fields.
func (j *testJob) readOut(t *testing.T, id string) []outRow {
	t.Helper()
	dir := j.out(id)
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var rows []outRow
	for _, e := range es {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		parts := strings.Split(e.Name(), "-") // part-<attempt>-<subtask>-<n>
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var m map[string]int64
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("%s: %q: %v", e.Name(), sc.Text(), err)
			}
			rows = append(rows, outRow{fields: m, subtask: parts[2]})
		}
		f.Close()
	}
	return rows
}

// ---- expected results

type seqRow struct{ id, key, ts int64 }

// sequence returns what a sequence source emits.
func sequence(rows, keys, start, interval int64) []seqRow {
	out := make([]seqRow, rows)
	for id := range rows {
		out[id] = seqRow{id, id % keys, start + id*interval}
	}
	return out
}

type winKey struct{ key, start int64 }
type winAgg struct{ count, sum int64 }

// windows is a 1 s tumbling window per key with count and sum of id.
func windows(rows ...[]seqRow) map[winKey]winAgg {
	want := map[winKey]winAgg{}
	for _, rs := range rows {
		for _, r := range rs {
			k := winKey{r.key, r.ts / 1000 * 1000}
			a := want[k]
			a.count++
			a.sum += r.id
			want[k] = a
		}
	}
	return want
}

// checkWindows compares a window sink's output with want: every window
// exactly once with the right aggregates.
func checkWindows(t *testing.T, rows []outRow, want map[winKey]winAgg) {
	t.Helper()
	got := map[winKey]winAgg{}
	for _, r := range rows {
		k := winKey{r.fields["key"], r.fields["window_start"]}
		if _, dup := got[k]; dup {
			t.Fatalf("key %d window %d emitted twice", k.key, k.start)
		}
		got[k] = winAgg{r.fields["count"], r.fields["sum"]}
	}
	bad := 0
	for k, w := range want {
		if g := got[k]; g != w {
			if bad++; bad <= 5 {
				t.Errorf("key %d window %d: got %+v, want %+v", k.key, k.start, g, w)
			}
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			if bad++; bad <= 5 {
				t.Errorf("unexpected key %d window %d", k.key, k.start)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d windows wrong of %d", bad, len(want))
	}
}

const windowNode = `{"id": "win", "type": "window", "inputs": [%q], "params": {
	"keys": ["key"], "type": "tumbling", "size": "1s",
	"aggregates": [{"name": "count", "fn": "count"}, {"name": "sum", "fn": "sum", "field": "id"}]}}`

// ---- tests

func TestUnionOfTwoSequences(t *testing.T) {
	j := newJob(t, `{"name": "union", "parallelism": 2, "nodes": [
		{"id": "a", "type": "sequence", "params": {"rows": 5000, "keys": 7, "start": 0}},
		{"id": "b", "type": "sequence", "parallelism": 1, "params": {"rows": 3000, "keys": 7, "start": 1000000}},
		{"id": "u", "type": "union", "inputs": ["a", "b"]},
		{"id": "out", "type": "file", "inputs": ["u"], "params": {"path": "x"}}]}`)
	j.mustRun(t)
	seen := map[seqRow]int{}
	for _, r := range j.readOut(t, "out") {
		seen[seqRow{r.fields["id"], r.fields["key"], r.fields["ts"]}]++
	}
	want := append(sequence(5000, 7, 0, 1), sequence(3000, 7, 1000000, 1)...)
	if len(seen) != len(want) {
		t.Errorf("got %d distinct rows, want %d", len(seen), len(want))
	}
	for _, r := range want {
		if seen[r] != 1 {
			t.Fatalf("row %+v seen %d times, want once", r, seen[r])
		}
	}
}

func TestPartitionings(t *testing.T) {
	const rows, keys = 10_000, 13
	j := newJob(t, fmt.Sprintf(`{"name": "parts", "parallelism": 2, "nodes": [
		{"id": "src", "type": "sequence", "params": {"rows": %d, "keys": %d}},
		{"id": "hash", "type": "file", "parallelism": 3, "inputs": [{"from": "src", "partition": "hash", "keys": ["key"]}], "params": {"path": "x"}},
		{"id": "rebalance", "type": "file", "parallelism": 3, "inputs": [{"from": "src", "partition": "rebalance"}], "params": {"path": "x"}},
		{"id": "broadcast", "type": "file", "parallelism": 3, "inputs": [{"from": "src", "partition": "broadcast"}], "params": {"path": "x"}}]}`, rows, keys))
	res := j.mustRun(t)

	// hash: every row once, every key on one subtask.
	hash := j.readOut(t, "hash")
	subOfKey := map[int64]string{}
	ids := map[int64]int{}
	for _, r := range hash {
		ids[r.fields["id"]]++
		k := r.fields["key"]
		if s, ok := subOfKey[k]; ok && s != r.subtask {
			t.Fatalf("hash: key %d on subtasks %s and %s", k, s, r.subtask)
		}
		subOfKey[k] = r.subtask
	}
	if len(hash) != rows || len(ids) != rows {
		t.Errorf("hash: %d rows (%d distinct ids), want %d", len(hash), len(ids), rows)
	}

	// rebalance: every row once, spread over the subtasks.
	reb := j.readOut(t, "rebalance")
	ids = map[int64]int{}
	subs := map[string]int{}
	for _, r := range reb {
		ids[r.fields["id"]]++
		subs[r.subtask]++
	}
	if len(reb) != rows || len(ids) != rows {
		t.Errorf("rebalance: %d rows (%d distinct ids), want %d", len(reb), len(ids), rows)
	}
	if len(subs) != 3 {
		t.Errorf("rebalance: rows reached subtasks %v, want all 3", subs)
	}

	// broadcast: every row once on every subtask.
	bc := j.readOut(t, "broadcast")
	perSub := map[string]map[int64]bool{}
	for _, r := range bc {
		if perSub[r.subtask] == nil {
			perSub[r.subtask] = map[int64]bool{}
		}
		if perSub[r.subtask][r.fields["id"]] {
			t.Fatalf("broadcast: id %d twice on subtask %s", r.fields["id"], r.subtask)
		}
		perSub[r.subtask][r.fields["id"]] = true
	}
	if len(bc) != 3*rows || len(perSub) != 3 {
		t.Errorf("broadcast: %d rows on %d subtasks, want %d on 3", len(bc), len(perSub), 3*rows)
	}
	for id, n := range map[string]int64{"hash": rows, "rebalance": rows, "broadcast": 3 * rows} {
		if got := res.Metrics[id].RowsIn.Load(); got != n {
			t.Errorf("%s: metrics count %d rows in, want %d", id, got, n)
		}
	}
}

// twoInputJob unions two rate-limited sequences (different parallelism and
// event-time steps) into a window, through a node that fails `failTimes`
// times, with frequent checkpoints. The input lasts about a second: on a
// loaded machine (race detector, other tests) a shorter run could end
// before the failing subtask saw a checkpoint complete, and never fail.
func twoInputJob(t *testing.T, mode string, failTimes int) *testJob {
	failures.Store(t.Name(), new(atomic.Int64))
	return newJob(t, fmt.Sprintf(`{"name": "two-inputs", "parallelism": 2,
		"checkpoint": {"interval": "5ms", "mode": %q, "retained": 2},
		"restart": {"strategy": "fixed-delay", "attempts": 3, "delay": "1ms"},
		"nodes": [
		{"id": "a", "type": "sequence", "params": {"rows": 12000, "keys": 10, "rate": 10000}},
		{"id": "b", "type": "sequence", "parallelism": 1, "params": {"rows": 6000, "keys": 10, "intervalMs": 2, "rate": 5000}},
		{"id": "u", "type": "union", "parallelism": 3, "inputs": ["a", {"from": "b", "partition": "rebalance"}]},
		{"id": "f", "type": "failing", "inputs": ["u"], "parallelism": 3, "params": {"after": 2000, "afterCheckpoint": true, "times": %d, "flag": %q}},
		`+windowNode+`,
		{"id": "out", "type": "file", "inputs": ["win"], "params": {"path": "x"}}]}`,
		mode, failTimes, t.Name(), "f"))
}

func twoInputWant() map[winKey]winAgg {
	return windows(sequence(12000, 10, 0, 1), sequence(6000, 10, 0, 2))
}

// TestAlignmentExactlyOnce: a two-input node aligns barriers; with a failure
// mid-run, the restart from the latest checkpoint still gives each window
// exactly once.
func TestAlignmentExactlyOnce(t *testing.T) {
	j := twoInputJob(t, "exactly-once", 1)
	restores := j.countRestores()
	res := j.mustRun(t)
	if n := restores.Load(); n != 1 {
		t.Errorf("restored from a checkpoint %d times, want 1", n)
	}
	if res.Restarts != 1 {
		t.Errorf("restarts = %d, want 1", res.Restarts)
	}
	checkWindows(t, j.readOut(t, "out"), twoInputWant())
}

// TestAtLeastOnce: without alignment and without failures the result is
// the same.
func TestAtLeastOnce(t *testing.T) {
	j := twoInputJob(t, "at-least-once", 0)
	res := j.mustRun(t)
	if res.Restarts != 0 || res.FailedCheckpoints != 0 {
		t.Errorf("restarts = %d, failed checkpoints = %d, want 0", res.Restarts, res.FailedCheckpoints)
	}
	checkWindows(t, j.readOut(t, "out"), twoInputWant())
}

// TestLateSideOutput: rows later than the watermark (event time minus
// outOfOrderness) go to the window's side output; rows merely out of order
// are counted in their windows.
func TestLateSideOutput(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	var b strings.Builder
	var all, late []seqRow
	emit := func(r seqRow) {
		fmt.Fprintf(&b, `{"id": %d, "key": %d, "ts": %d}`+"\n", r.id, r.key, r.ts)
		all = append(all, r)
	}
	id := int64(0)
	for i := range int64(4000) {
		ts := 10000 + i*10
		if i%7 == 3 && i > 0 {
			ts -= 150 // out of order, within outOfOrderness
		}
		emit(seqRow{id, id % 5, ts})
		id++
		// Well after the first batches (1024 rows each) have moved the
		// watermark on: rows for windows long closed.
		if i >= 2100 && i%400 == 0 {
			r := seqRow{id, id % 5, 11500 + i}
			emit(r)
			late = append(late, r)
			id++
		}
	}
	if err := os.WriteFile(in, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	j := newJob(t, fmt.Sprintf(`{"name": "late", "nodes": [
		{"id": "src", "type": "file", "params": {"path": %q, "eventTime": "ts",
			"watermark": {"outOfOrderness": "200ms"},
			"fields": [{"name": "id", "type": "int64"}, {"name": "key", "type": "int64"}, {"name": "ts", "type": "timestamp"}]}},
		{"id": "win", "type": "window", "inputs": ["src"], "params": {
			"keys": ["key"], "type": "tumbling", "size": "1s", "lateOutput": "late",
			"aggregates": [{"name": "count", "fn": "count"}, {"name": "sum", "fn": "sum", "field": "id"}]}},
		{"id": "out", "type": "file", "inputs": ["win"], "params": {"path": "x"}},
		{"id": "lateOut", "type": "file", "inputs": ["win.late"], "params": {"path": "x"}}]}`, in))
	res := j.mustRun(t)

	gotLate := map[seqRow]bool{}
	for _, r := range j.readOut(t, "lateOut") {
		gotLate[seqRow{r.fields["id"], r.fields["key"], r.fields["ts"]}] = true
	}
	if len(gotLate) != len(late) {
		t.Errorf("late output has %d rows, want %d: %v", len(gotLate), len(late), gotLate)
	}
	isLate := map[seqRow]bool{}
	for _, r := range late {
		isLate[r] = true
		if !gotLate[r] {
			t.Errorf("late row %+v missing from the side output", r)
		}
	}
	var onTime []seqRow
	for _, r := range all {
		if !isLate[r] {
			onTime = append(onTime, r)
		}
	}
	checkWindows(t, j.readOut(t, "out"), windows(onTime))
	if d := res.Metrics["win"].Dropped.Load(); d != 0 {
		t.Errorf("%d rows dropped, want 0 (they go to the side output)", d)
	}
}

// restartJob fails subtask 0 of node f `failTimes` times, each time after
// `after` rows: an attempt restored from a checkpoint taken before the
// previous failure still has that many rows to go.
func restartJob(t *testing.T, attempts, failTimes int, after int) *testJob {
	failures.Store(t.Name(), new(atomic.Int64))
	return newJob(t, fmt.Sprintf(`{"name": "restarts", "parallelism": 2,
		"checkpoint": {"interval": "10ms"},
		"restart": {"strategy": "fixed-delay", "attempts": %d, "delay": "1ms"},
		"nodes": [
		{"id": "src", "type": "sequence", "params": {"rows": 20000, "keys": 20, "rate": 40000}},
		{"id": "f", "type": "failing", "inputs": ["src"], "params": {"after": %d, "afterCheckpoint": true, "times": %d, "flag": %q}},
		`+windowNode+`,
		{"id": "out", "type": "file", "inputs": ["win"], "params": {"path": "x"}}]}`, attempts, after, failTimes, t.Name(), "f"))
}

// TestRestartFromCheckpoint: a node that fails twice is restarted from the
// latest checkpoint each time and the output is exactly once.
func TestRestartFromCheckpoint(t *testing.T) {
	j := restartJob(t, 3, 2, 3000)
	restores := j.countRestores()
	res := j.mustRun(t)
	if n := restores.Load(); n != 2 {
		t.Errorf("restored from a checkpoint %d times, want 2", n)
	}
	if res.Restarts != 2 {
		t.Errorf("restarts = %d, want 2", res.Restarts)
	}
	checkWindows(t, j.readOut(t, "out"), windows(sequence(20000, 20, 0, 1)))
}

// TestRestartIncremental: with badger state and incremental checkpoints, a
// node that fails after the second checkpoint of each attempt makes every
// restart restore from a delta (an attempt's first checkpoint is full, its
// second builds on it); output stays exactly once.
func TestRestartIncremental(t *testing.T) {
	failures.Store(t.Name(), new(atomic.Int64))
	j := newJob(t, fmt.Sprintf(`{"name": "incremental", "parallelism": 2, "stateBackend": "badger",
		"checkpoint": {"interval": "20ms", "incremental": true, "retained": 2},
		"restart": {"strategy": "fixed-delay", "attempts": 4, "delay": "1ms"},
		"nodes": [
		{"id": "src", "type": "sequence", "params": {"rows": 120000, "keys": 2000, "rate": 40000}},
		{"id": "f", "type": "failing", "inputs": ["src"], "params": {"after": 1, "afterCheckpoints": 2, "times": 2, "flag": %q}},
		`+windowNode+`,
		{"id": "out", "type": "file", "inputs": ["win"], "params": {"path": "x"}}]}`, t.Name(), "f"))
	res := j.mustRun(t)
	if res.Restarts < 1 {
		t.Errorf("restarts = %d, want 1 or 2", res.Restarts)
	}
	if n := res.Restored.Deltas.Load(); n == 0 {
		t.Errorf("no restore read a delta")
	}
	checkWindows(t, j.readOut(t, "out"), windows(sequence(120000, 2000, 0, 1)))
}

// TestRescaleIncremental: a run with badger and incremental checkpoints
// fails for good after its second checkpoint (a delta on the first); the
// next run restores that chain with parallelism 3 instead of 2, and the
// output is exactly once.
func TestRescaleIncremental(t *testing.T) {
	failures.Store(t.Name(), new(atomic.Int64))
	j := newJob(t, fmt.Sprintf(`{"name": "rescale-incremental", "parallelism": 2, "stateBackend": "badger",
		"checkpoint": {"interval": "20ms", "incremental": true},
		"restart": {"strategy": "none"},
		"nodes": [
		{"id": "src", "type": "sequence", "params": {"rows": 100000, "keys": 2000, "rate": 40000}},
		{"id": "f", "type": "failing", "inputs": ["src"], "params": {"after": 1, "afterCheckpoints": 2, "times": 1, "flag": %q}},
		`+windowNode+`,
		{"id": "out", "type": "file", "inputs": ["win"], "params": {"path": "x"}}]}`, t.Name(), "f"))
	if _, err := j.run(t); err == nil {
		t.Fatal("the first run did not fail")
	}
	j.restore = "latest"
	j.sets = append(j.sets, "parallelism=3")
	res := j.mustRun(t)
	if n := res.Restored.Deltas.Load(); n == 0 {
		t.Errorf("the restore read no delta")
	}
	checkWindows(t, j.readOut(t, "out"), windows(sequence(100000, 2000, 0, 1)))
}

// TestRestartAttemptsExhausted: a node that keeps failing fails the job
// after restart.attempts restarts.
func TestRestartAttemptsExhausted(t *testing.T) {
	j := restartJob(t, 2, 1000, 2000)
	res, err := j.run(t)
	if !errors.Is(err, runtime.ErrJobFailed) || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("err = %v, want a job failure caused by the injected one", err)
	}
	if res.Restarts != 2 {
		t.Errorf("restarts = %d, want 2", res.Restarts)
	}
}

// storageBreaker makes checkpoint storage unwritable, and repairs it. Tests
// run as root, so permissions would not stop anything: the storage path is
// a symbolic link, atomically switched between the real directory and a
// regular file.
type storageBreaker struct {
	t               *testing.T
	link, real, bad string
}

func newStorageBreaker(t *testing.T, j *testJob) *storageBreaker {
	s := &storageBreaker{t: t, link: j.checkpoints, real: j.checkpoints + ".real", bad: j.checkpoints + ".file"}
	if err := os.Mkdir(s.real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.bad, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.point(s.real)
	return s
}

func (s *storageBreaker) point(to string) {
	tmp := s.link + ".new"
	if err := os.Symlink(to, tmp); err != nil {
		s.t.Error(err)
		return
	}
	if err := os.Rename(tmp, s.link); err != nil {
		s.t.Error(err)
	}
}

func (s *storageBreaker) break_() { s.point(s.bad) }
func (s *storageBreaker) repair() { s.point(s.real) }

func checkpointJob(t *testing.T, tolerable int, restart string) *testJob {
	return newJob(t, fmt.Sprintf(`{"name": "tolerable", "parallelism": 2,
		"checkpoint": {"interval": "10ms", "tolerableFailures": %d, "retained": 2},
		"restart": %s,
		"nodes": [
		{"id": "src", "type": "sequence", "params": {"rows": 20000, "keys": 20, "rate": 40000}},
		`+windowNode+`,
		{"id": "out", "type": "file", "inputs": ["win"], "params": {"path": "x"}}]}`, tolerable, restart, "src"))
}

// TestTolerableCheckpointFailures: failed checkpoints below the limit are
// counted and the job goes on to the exact result once storage is back.
func TestTolerableCheckpointFailures(t *testing.T) {
	j := checkpointJob(t, 1000, `{"strategy": "none"}`)
	sb := newStorageBreaker(t, j)
	var failed atomic.Int64
	j.hook = func(r slog.Record) {
		switch r.Message {
		case "checkpoint complete":
			if failed.Load() == 0 {
				sb.break_()
			}
		case "checkpoint failed":
			if failed.Add(1) == 3 {
				sb.repair()
			}
		}
	}
	res := j.mustRun(t)
	if res.FailedCheckpoints < 3 {
		t.Errorf("failed checkpoints = %d, want ≥ 3", res.FailedCheckpoints)
	}
	if res.Restarts != 0 {
		t.Errorf("restarts = %d, want 0", res.Restarts)
	}
	checkWindows(t, j.readOut(t, "out"), windows(sequence(20000, 20, 0, 1)))
}

// TestTooManyCheckpointFailures: one more consecutive failure than
// tolerated fails the run.
func TestTooManyCheckpointFailures(t *testing.T) {
	j := checkpointJob(t, 2, `{"strategy": "none"}`)
	sb := newStorageBreaker(t, j)
	j.hook = func(r slog.Record) {
		if r.Message == "checkpoint complete" {
			sb.break_()
		}
	}
	res, err := j.run(t)
	sb.repair()
	if err == nil || !strings.Contains(err.Error(), "3 consecutive checkpoint failures (tolerable: 2)") {
		t.Fatalf("err = %v, want 3 consecutive checkpoint failures", err)
	}
	if res.FailedCheckpoints != 3 {
		t.Errorf("failed checkpoints = %d, want 3", res.FailedCheckpoints)
	}
}

// TestCheckpointFailuresFailOver: too many checkpoint failures fail the run
// over; the restart resumes from the latest checkpoint and the output is
// exactly once.
func TestCheckpointFailuresFailOver(t *testing.T) {
	j := checkpointJob(t, 1, `{"strategy": "fixed-delay", "attempts": 2, "delay": "1ms"}`)
	sb := newStorageBreaker(t, j)
	var once atomic.Bool
	j.hook = func(r slog.Record) {
		switch {
		case r.Message == "checkpoint complete" && !once.Load():
			sb.break_()
		case strings.HasPrefix(r.Message, "job failed; restarting"):
			once.Store(true)
			sb.repair()
		}
	}
	res := j.mustRun(t)
	if res.Restarts != 1 {
		t.Errorf("restarts = %d, want 1", res.Restarts)
	}
	if res.FailedCheckpoints < 2 {
		t.Errorf("failed checkpoints = %d, want ≥ 2", res.FailedCheckpoints)
	}
	checkWindows(t, j.readOut(t, "out"), windows(sequence(20000, 20, 0, 1)))
}

// TestRestartIgnoresEarlierRuns: a job started fresh (no restore) on storage
// that holds an earlier run's checkpoints, which fails before it completes
// a checkpoint of its own, restarts from scratch, not from the earlier
// run's checkpoint.
func TestRestartIgnoresEarlierRuns(t *testing.T) {
	const specJSON = `{"name": "reruns", "parallelism": 2,
		"restart": {"strategy": "fixed-delay", "attempts": 1, "delay": "1ms"},
		"nodes": [
		{"id": "src", "type": "sequence", "params": {"rows": 20000, "keys": 20}},
		{"id": "f", "type": "failing", "inputs": ["src"], "params": {"after": 3000, "times": %d, "flag": %q}},
		` + windowNode + `,
		{"id": "out", "type": "file", "inputs": ["win"], "params": {"path": "x"}}]}`
	want := windows(sequence(20000, 20, 0, 1))
	failures.Store(t.Name(), new(atomic.Int64))
	first := newJob(t, fmt.Sprintf(specJSON, 0, t.Name(), "f"))
	first.mustRun(t)
	checkWindows(t, first.readOut(t, "out"), want)

	// No periodic checkpoints: the second run fails before its only one.
	second := newJob(t, fmt.Sprintf(specJSON, 1, t.Name(), "f"))
	second.checkpoints = first.checkpoints
	res := second.mustRun(t)
	if res.Restarts != 1 {
		t.Errorf("restarts = %d, want 1", res.Restarts)
	}
	checkWindows(t, second.readOut(t, "out"), want)
}
