package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-stream/sluice/engine/nodes"
	"github.com/sluice-stream/sluice/engine/plan"
	"github.com/sluice-stream/sluice/engine/row"
	rt "github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
)

// bigstate: a badger window job whose state is several times the Go heap's
// limit is savepointed, restored with the same parallelism and restored
// rescaled, each phase in a child process started with GOMEMLIMIT, so that
// each phase's peak memory is its own. The child reports the peak live Go
// heap (sampled every 5 ms) and the peak RSS, separately while restoring
// and while writing the savepoint.

const bigstateEnv = "SLUICE_BENCH_BIGSTATE_CHILD"

// bigstateLimit is the children's GOMEMLIMIT.
const bigstateLimit = 128 << 20

const specBigstate = `{"name": "bench-bigstate", "parallelism": 2, "stateBackend": "badger",
 "badger": {"memtableMiB": 8, "blockCacheMiB": 8, "indexCacheMiB": 4},
 "checkpoint": {"interval": "1h", "timeout": "30m"},
 "nodes": [
  {"id": "src", "type": "bigkeys", "params": {"rows": 0, "keyBytes": 200}},
  {"id": "win", "type": "window", "inputs": ["src"], "params": {
    "keys": ["key"], "timeField": "ts", "type": "tumbling", "size": "100000h",
    "aggregates": [{"name": "n", "fn": "count"}]}},
  {"id": "out", "type": "discard", "inputs": ["win"]}]}`

// bigkeysEmitted counts the rows the bigkeys sources emitted.
var bigkeysEmitted atomic.Int64

type bigkeysParams struct {
	Rows     int64 `json:"rows"`
	KeyBytes int   `json:"keyBytes"`
}

// bigkeys emits rows with distinct keys of keyBytes bytes, then nothing
// (it never ends, so that nothing fires and the state stays).
type bigkeys struct {
	p      bigkeysParams
	schema *row.Schema
	ctx    *rt.Context
	next   int64
	key    []byte
}

func init() {
	nodes.Register("bigkeys", nodes.Factory{Kind: nodes.Source, Plan: func(c *nodes.PlanContext) (*nodes.Planned, error) {
		var p bigkeysParams
		if err := c.Params(&p); err != nil {
			return nil, err
		}
		s := row.MustSchema(row.Field{Name: "key", Type: row.String}, row.Field{Name: "ts", Type: row.Timestamp})
		return &nodes.Planned{Schema: s, NewSource: func() rt.Source { return &bigkeys{p: p, schema: s} }}, nil
	}})
}

func (b *bigkeys) Open(ctx *rt.Context, _ *rt.Restored) error {
	b.ctx, b.next = ctx, int64(ctx.Subtask)
	b.key = make([]byte, b.p.KeyBytes)
	return nil
}

func (b *bigkeys) Poll() (bool, error) {
	if b.next >= b.p.Rows {
		time.Sleep(time.Millisecond)
		return false, nil
	}
	batch := row.NewBatch(b.schema)
	for ; b.next < b.p.Rows && batch.Len < row.DefaultBatchSize; b.next += int64(b.ctx.Parallelism) {
		// A distinct key: the row id in hex, padded with a pattern.
		for i := range b.key {
			b.key[i] = 'a' + byte((int64(i)*7+b.next)%26)
		}
		copy(b.key, strconv.FormatInt(b.next, 16)+"-")
		batch.Cols[0].Strs = append(batch.Cols[0].Strs, string(b.key))
		batch.Cols[1].Ints = append(batch.Cols[1].Ints, b.next)
		batch.Len++
	}
	bigkeysEmitted.Add(int64(batch.Len))
	b.ctx.Out.Collect(batch)
	return false, nil
}

func (b *bigkeys) Watermark() (int64, bool)            { return rt.MinWatermark, false }
func (b *bigkeys) Snapshot(int64) (rt.Snapshot, error) { return nil, nil }
func (b *bigkeys) CheckpointComplete(int64) error      { return nil }
func (b *bigkeys) Close() error                        { return nil }

// bigstateResult is what a child reports on stdout.
type bigstateResult struct {
	Phase          string  `json:"phase"`
	Savepoint      string  `json:"savepoint"`
	SavepointBytes int64   `json:"savepointBytes"`
	RestoreSec     float64 `json:"restoreSec"`
	SavepointSec   float64 `json:"savepointSec"`
	// Peaks by phase: live Go heap (runtime/metrics heap objects) and RSS.
	RestoreHeap, RestoreRSS       uint64
	CheckpointHeap, CheckpointRSS uint64
	HWM                           uint64 // VmHWM of the whole child
}

// phaseLog follows the runtime's log to tell the phases apart.
type phaseLog struct {
	slog.Handler
	phase *atomic.Int32 // 0 start, 1 restoring, 2 restored
}

func (h phaseLog) Handle(ctx context.Context, r slog.Record) error {
	switch r.Message {
	case "restoring":
		h.phase.Store(1)
	case "state restored":
		h.phase.Store(2)
	}
	if r.Level < slog.LevelWarn {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h phaseLog) WithAttrs(as []slog.Attr) slog.Handler {
	return phaseLog{h.Handler.WithAttrs(as), h.phase}
}

func (h phaseLog) WithGroup(n string) slog.Handler { return phaseLog{h.Handler.WithGroup(n), h.phase} }

func (h phaseLog) Enabled(context.Context, slog.Level) bool { return true }

func procStatus(field string) uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func dirBytes(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// bigstateChild runs one phase: env holds "phase storage parallelism rows restore".
func bigstateChild(arg string) {
	f := strings.Fields(arg)
	phase, storage, par, rowsS := f[0], f[1], f[2], f[3]
	restore := ""
	if len(f) > 4 {
		restore = f[4]
	}
	rows, _ := strconv.ParseInt(rowsS, 10, 64)
	j, err := spec.Parse([]byte(specBigstate), []string{"checkpoint.storage=" + storage, "parallelism=" + par,
		fmt.Sprintf("nodes.src.params.rows=%d", rows)})
	if err != nil {
		fail(err)
	}
	g, opts, err := plan.Prepare(j)
	if err != nil {
		fail(err)
	}
	var ph atomic.Int32
	opts.Log = slog.New(phaseLog{slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}), &ph})
	opts.LocalStateDir = filepath.Join(filepath.Dir(storage[len("file://"):]), "local-"+phase)
	opts.Restore = restore
	sps := make(chan rt.SavepointRequest, 1)
	opts.Savepoints = sps

	var res bigstateResult
	res.Phase = phase
	var mu sync.Mutex
	inCheckpoint := false
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			metrics.Read(s)
			heap, rss := s[0].Value.Uint64(), procStatus("VmRSS")
			mu.Lock()
			switch {
			case inCheckpoint:
				res.CheckpointHeap, res.CheckpointRSS = max(res.CheckpointHeap, heap), max(res.CheckpointRSS, rss)
			case ph.Load() == 1:
				res.RestoreHeap, res.RestoreRSS = max(res.RestoreHeap, heap), max(res.RestoreRSS, rss)
			}
			mu.Unlock()
		}
	}()
	reply := make(chan rt.SavepointResult, 1)
	var spStart time.Time
	go func() {
		// Once the state is loaded (or restored), stop with a savepoint.
		for bigkeysEmitted.Load() < rows || restore != "" && ph.Load() < 2 {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // the last batches reach the window
		mu.Lock()
		inCheckpoint = true
		spStart = time.Now()
		mu.Unlock()
		sps <- rt.SavepointRequest{Stop: true, Reply: reply}
	}()
	r, err := rt.Run(context.Background(), g, opts)
	if err != nil {
		fail(err)
	}
	sp := <-reply
	if sp.Err != nil {
		fail(sp.Err)
	}
	close(done)
	<-sampled
	res.SavepointSec = time.Since(spStart).Seconds()
	res.RestoreSec = r.RestoreTime.Seconds()
	res.Savepoint = sp.Path
	res.SavepointBytes = dirBytes(strings.TrimPrefix(sp.Path, "file://"))
	res.HWM = procStatus("VmHWM")
	json.NewEncoder(os.Stdout).Encode(res)
}

func init() {
	if arg := os.Getenv(bigstateEnv); arg != "" {
		bigstateChild(arg)
		os.Exit(0)
	}
}

func runBigstateChild(args ...string) bigstateResult {
	exe, err := os.Executable()
	if err != nil {
		fail(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), bigstateEnv+"="+strings.Join(args, " "), fmt.Sprintf("GOMEMLIMIT=%d", bigstateLimit))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		fail(fmt.Errorf("bigstate %s: %w", args[0], err))
	}
	var res bigstateResult
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if json.Unmarshal(sc.Bytes(), &res) == nil && res.Phase != "" {
			return res
		}
	}
	fail(fmt.Errorf("bigstate %s: no result in %q", args[0], out.String()))
	return res
}

func scenarioBigstate() {
	rows := int64(2_000_000 * *scale)
	dir, err := os.MkdirTemp("", "sluice-bench-bigstate")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	storage := "file://" + filepath.Join(dir, "checkpoints")
	mib := func(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
	report := func(what string, r bigstateResult) {
		fmt.Fprintf(os.Stderr, "bigstate %s: %+v\n", what, r)
		add("bigstate (GOMEMLIMIT "+mib(bigstateLimit)+")", what,
			fmt.Sprintf("%d", rows),
			fmt.Sprintf("restore %.2fs, savepoint %.2fs", r.RestoreSec, r.SavepointSec),
			fmt.Sprintf("savepoint %s", mib(uint64(r.SavepointBytes))),
			fmt.Sprintf("peak heap: restore %s, savepoint %s", mib(r.RestoreHeap), mib(r.CheckpointHeap)),
			fmt.Sprintf("peak RSS: restore %s, savepoint %s; VmHWM %s", mib(r.RestoreRSS), mib(r.CheckpointRSS), mib(r.HWM)))
	}
	load := runBigstateChild("load", storage, "2", strconv.FormatInt(rows, 10))
	report("load 2 subtasks, savepoint", load)
	same := runBigstateChild("restore", storage, "2", "0", load.Savepoint)
	report("restore 2 → 2, savepoint", same)
	rescaled := runBigstateChild("rescale", storage, "3", "0", same.Savepoint)
	report("restore 2 → 3 (rescaled), savepoint", rescaled)
}
