package plan_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sluice-stream/sluice/engine/nodes"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// opens counts the Opens of "opens" nodes per flag and subtask.
var opens sync.Map // "flag#subtask" → *atomic.Int64

func openCounter(flag string, subtask int) *atomic.Int64 {
	c, _ := opens.LoadOrStore(fmt.Sprintf("%s#%d", flag, subtask), new(atomic.Int64))
	return c.(*atomic.Int64)
}

func init() {
	nodes.Register("opens", nodes.Factory{Kind: nodes.Operator, MinInputs: 1, MaxInputs: 1, Plan: func(c *nodes.PlanContext) (*nodes.Planned, error) {
		var p struct {
			Flag string `json:"flag"`
		}
		if err := c.Params(&p); err != nil {
			return nil, err
		}
		return &nodes.Planned{Schema: c.Inputs[0], NewOperator: func() runtime.Operator { return &openCount{flag: p.Flag} }}, nil
	}})
}

// openCount passes rows on and counts its Opens per subtask.
type openCount struct {
	runtime.BaseOperator
	flag string
}

func (o *openCount) Open(ctx *runtime.Context, r *runtime.Restored) error {
	openCounter(o.flag, ctx.Subtask).Add(1)
	return o.BaseOperator.Open(ctx, r)
}

func (o *openCount) Process(_ int, b *row.Batch) error { o.Ctx.Out.Collect(b); return nil }

// TestRegionFailover: a job of forward edges only has one pipelined region
// per subtask. A task failure in subtask 0 restarts region 0 alone, from
// the latest checkpoint; the other subtasks are never restarted (opened
// once) and the output is exactly once.
func TestRegionFailover(t *testing.T) {
	flag := t.Name()
	failures.Store(flag, new(atomic.Int64))
	j := newJob(t, fmt.Sprintf(`{"name": "regions", "parallelism": 3,
		"checkpoint": {"interval": "30ms"},
		"restart": {"strategy": "fixed-delay", "attempts": 3, "delay": "1ms"},
		"nodes": [
		{"id": "src", "type": "sequence", "params": {"rows": 60000, "keys": 100, "rate": 60000}},
		{"id": "f", "type": "failing", "inputs": ["src"], "params": {"after": 1, "afterCheckpoint": true, "times": 1, "flag": %q}},
		{"id": "o", "type": "opens", "inputs": ["f"], "params": {"flag": %q}},
		{"id": "out", "type": "file", "inputs": ["o"], "params": {"path": "x"}}]}`, flag, flag))
	res := j.mustRun(t)
	if res.Restarts != 1 {
		t.Errorf("restarts = %d, want 1", res.Restarts)
	}
	for s, want := range []int64{2, 1, 1} {
		if n := openCounter(flag, s).Load(); n != want {
			t.Errorf("subtask %d opened %d times, want %d (only region 0 restarts)", s, n, want)
		}
	}
	seen := map[int64]int{}
	for _, r := range j.readOut(t, "out") {
		seen[r.fields["id"]]++
	}
	for id := int64(0); id < 60000; id++ {
		if seen[id] != 1 {
			t.Fatalf("id %d written %d times", id, seen[id])
		}
	}
	if len(seen) != 60000 {
		t.Fatalf("%d ids written, want 60000", len(seen))
	}
}
