package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/sluice-stream/sluice/engine/nodes"
	"github.com/sluice-stream/sluice/engine/plan"
	"github.com/sluice-stream/sluice/engine/row"
	rt "github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
	"github.com/sluice-stream/sluice/internal/hdfstest"
)

// ballast is an operator with a fixed amount of keyed state (spread over
// the key groups), for measuring how long restoring that much state takes.
type ballast struct {
	rt.BaseOperator
	chunk []byte
}

var ballastBytes = int64(1 << 30)

func init() {
	nodes.Register("ballast", nodes.Factory{Kind: nodes.Operator, MinInputs: 1, MaxInputs: 1,
		Plan: func(c *nodes.PlanContext) (*nodes.Planned, error) {
			return &nodes.Planned{Schema: c.Inputs[0], NewOperator: func() rt.Operator { return &ballast{} }}, nil
		}})
}

func (b *ballast) Open(ctx *rt.Context, r *rt.Restored) error {
	b.Ctx = ctx
	if r != nil && r.Keyed != nil {
		// Read every key group's state, one at a time, as the window does.
		var buf []byte
		err := r.Keyed(func(s rt.KeyedState) error {
			buf = slices.Grow(buf[:0], int(s.Size))[:s.Size]
			_, err := io.ReadFull(s.R, buf)
			return err
		})
		if err != nil {
			return err
		}
	}
	b.chunk = make([]byte, ballastBytes/int64(ctx.MaxParallelism))
	for i := range b.chunk {
		b.chunk[i] = byte(i * 7)
	}
	return nil
}

func (b *ballast) Process(_ int, batch *row.Batch) error { b.Ctx.Out.Collect(batch); return nil }

func (b *ballast) Snapshot(int64) (rt.Snapshot, error) {
	r := b.Ctx.KeyGroups
	return rt.SnapshotFunc(func(w rt.StateWriter) error {
		for kg := r.Start; kg < r.End; kg++ {
			w.AddKeyGroup(kg, b.chunk)
		}
		return nil
	}), nil
}

const specRestore = `{"name": "bench-restore", "parallelism": 1,
 "checkpoint": {"interval": "1h", "retained": 10},
 "nodes": [
  {"id": "src", "type": "sequence", "params": {"rows": 1000}},
  {"id": "state", "type": "ballast", "inputs": ["src"]},
  {"id": "out", "type": "discard", "inputs": ["state"]}]}`

// scenarioRestore: restore 1 GB of state from a checkpoint on hdfstest
// (remote) and from the local recovery copy, same checkpoint, same run.
func scenarioRestore() {
	ballastBytes = int64(float64(1<<30) * *scale)
	dir, err := os.MkdirTemp("", "sluice-bench-restore")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	c, err := hdfstest.Start(filepath.Join(dir, "hdfs"), hdfstest.BlockSize(64<<20))
	if err != nil {
		fail(err)
	}
	defer c.Stop()
	os.Setenv("HADOOP_USER_NAME", "sluice")
	storage := "hdfs://" + c.Addr() + "/bench/checkpoints"
	local := filepath.Join(dir, "local")
	for _, par := range []int{1, 4} {
		restoreAt(storage+fmt.Sprintf("-p%d", par), local, par)
	}
}

// restoreAt writes a 1 GB checkpoint with parallelism par and restores it
// twice with the same parallelism: from storage, then from the local copy.
func restoreAt(storage, local string, par int) {
	run := func(restore string, localRecovery bool) *rt.Result {
		j, err := spec.Parse([]byte(specRestore), []string{"checkpoint.storage=" + storage, fmt.Sprintf("checkpoint.localRecovery=%v", localRecovery), fmt.Sprintf("parallelism=%d", par)})
		if err != nil {
			fail(err)
		}
		g, opts, err := plan.Prepare(j)
		if err != nil {
			fail(err)
		}
		opts.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		opts.LocalStateDir, opts.Restore = local, restore
		res, err := rt.Run(context.Background(), g, opts)
		if err != nil {
			fail(err)
		}
		return res
	}
	// The first run ends with its final checkpoint: 1 GB, kept locally too.
	t0 := time.Now()
	run("", true)
	write := time.Since(t0)
	st, err := plan.Options(mustParse(specRestore, "checkpoint.storage="+storage))
	if err != nil {
		fail(err)
	}
	_, chk, err := st.Storage.Latest(context.Background())
	if err != nil || chk == "" {
		fail(fmt.Errorf("no checkpoint to restore: %v", err))
	}
	remote := run(chk, false) // reads hdfstest
	loc := run(chk, true)     // reads the local copy
	mb := float64(ballastBytes) / 1e6
	what := fmt.Sprintf("restore 1 GB state, parallelism %d", par)
	add(what, fmt.Sprintf("from hdfstest (remote bytes %d)", remote.Restored.RemoteBytes.Load()), "", remote.RestoreTime.Round(time.Millisecond).String(), fmt.Sprintf("%.0f MB/s", mb/remote.RestoreTime.Seconds()), "", "")
	add(what, fmt.Sprintf("local recovery (remote bytes %d)", loc.Restored.RemoteBytes.Load()), "", loc.RestoreTime.Round(time.Millisecond).String(), fmt.Sprintf("%.0f MB/s", mb/loc.RestoreTime.Seconds()),
		"", fmt.Sprintf("%.2f×", loc.RestoreTime.Seconds()/remote.RestoreTime.Seconds()))
	fmt.Fprintf(os.Stderr, "bench restore: first run (parallelism %d) with a 1 GB final checkpoint on hdfstest took %v\n", par, write.Round(time.Millisecond))
}

func mustParse(s string, sets ...string) *spec.Job {
	j, err := spec.Parse([]byte(s), sets)
	if err != nil {
		fail(err)
	}
	return j
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
