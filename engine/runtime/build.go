package runtime

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/sluice-stream/sluice/engine/state"
)

// chainable reports whether n runs in the same goroutine as its only input.
func chainable(g *Graph, n *Node) bool {
	if n.NewSource != nil || len(n.Inputs) != 1 {
		return false
	}
	in := n.Inputs[0]
	up := g.node(in.From)
	return in.Partition == Forward && up.Parallelism == n.Parallelism
}

// build creates the tasks of this execution, wires their inputs and
// outputs, and opens every operator and source with its restored state.
func (e *execution) build(rr *restoreReader) error {
	g := e.g
	headOf := map[string]string{} // node → its chain's head
	chains := map[string][]*Node{}
	for _, n := range g.Nodes {
		h := n.ID
		if chainable(g, n) {
			h = headOf[n.Inputs[0].From]
		}
		headOf[n.ID] = h
		chains[h] = append(chains[h], n)
	}
	// tasks[node][subtask] and members for lookup.
	taskOf := map[string][]*task{}
	memberOf := map[string][]*member{}
	for _, n := range g.Nodes {
		if headOf[n.ID] != n.ID {
			continue
		}
		ts := make([]*task, n.Parallelism)
		for s := range ts {
			t := &task{idx: len(e.tasks), subtask: s, ctrl: make(chan ctrlMsg, 64), job: e}
			if n.NewSource == nil {
				perInput := make([]int, len(n.Inputs))
				for i, in := range n.Inputs {
					perInput[i] = channelsFrom(g, n, in)
				}
				t.in = newInbox(perInput)
			}
			e.tasks = append(e.tasks, t)
			ts[s] = t
		}
		for _, cn := range chains[n.ID] {
			ms := make([]*member, n.Parallelism)
			for s := range ms {
				ctx := &Context{
					JobName:        g.JobName,
					NodeID:         cn.ID,
					Subtask:        s,
					Parallelism:    cn.Parallelism,
					MaxParallelism: g.MaxParallelism,
					KeyGroups:      state.RangeForSubtask(s, g.MaxParallelism, cn.Parallelism),
					ExactlyOnce:    g.ExactlyOnce,
					Attempt:        e.attempt,
					Incremental:    e.opts.Incremental,
					LocalDir:       filepath.Join(e.localDir, fmt.Sprintf("%s-%d", cn.ID, s)),
					Log:            e.opts.Log.With("node", cn.ID, "subtask", s),
					Metrics:        e.metrics[cn.ID],
				}
				m := &member{node: cn, ctx: ctx}
				if cn.NewOperator != nil {
					m.op = cn.NewOperator()
				}
				ms[s] = m
				ts[s].members = append(ts[s].members, m)
				taskOf[cn.ID] = ts
			}
			memberOf[cn.ID] = ms
		}
	}
	// Outputs, per member and output name.
	for _, n := range g.Nodes {
		for s, m := range memberOf[n.ID] {
			outs := map[string][]Output{}
			for _, c := range g.Nodes {
				for i, in := range c.Inputs {
					if in.From != n.ID {
						continue
					}
					var o Output
					if headOf[c.ID] == headOf[n.ID] {
						cm := memberOf[c.ID][s]
						o = &chainLink{t: taskOf[n.ID][s], op: cm.op, input: i, m: e.metrics[c.ID]}
					} else {
						eo := e.edgeTo(n, s, c, i, taskOf[c.ID])
						taskOf[n.ID][s].edges = append(taskOf[n.ID][s].edges, eo)
						o = eo
					}
					outs[in.Output] = append(outs[in.Output], o)
				}
			}
			m.ctx.Out = countingOutput{out: combine(outs[""]), m: e.metrics[n.ID]}
			for name := range n.Side {
				if m.ctx.Side == nil {
					m.ctx.Side = map[string]Output{}
				}
				if len(outs[name]) > 0 {
					m.ctx.Side[name] = combine(outs[name])
				}
			}
		}
	}
	// Open with restored state: each task on its own goroutine (see open).
	var opens [][]*member
	for _, t := range e.tasks {
		opens = append(opens, t.members)
	}
	if err := e.open(rr, opens); err != nil {
		return err
	}
	for _, t := range e.tasks {
		if t.source != nil {
			e.sources++
		}
	}
	if md := rr.md; md != nil {
		for _, ns := range md.Nodes {
			if g.node(ns.NodeID) == nil {
				e.opts.Log.Warn("checkpoint has state for a node the job no longer has; ignoring it", "node", ns.NodeID)
			}
		}
	}
	return nil
}

func combine(outs []Output) Output {
	switch len(outs) {
	case 0:
		return discardOutput{}
	case 1:
		return outs[0]
	}
	return fanOut(outs)
}

// pointwise reports whether an edge connects subtask i only to subtask i.
func pointwise(g *Graph, n *Node, in Edge) bool {
	return in.Partition == Forward && g.node(in.From).Parallelism == n.Parallelism
}

// channelsFrom is the number of input channels an edge gives each consumer subtask.
func channelsFrom(g *Graph, n *Node, in Edge) int {
	if pointwise(g, n, in) {
		return 1
	}
	return g.node(in.From).Parallelism
}

// edgeTo builds producer subtask s's output over consumer c's input i.
func (e *execution) edgeTo(n *Node, s int, c *Node, i int, consumers []*task) *edgeOutput {
	in := c.Inputs[i]
	part := in.Partition
	// Channel index of (input i, producer subtask s) at each consumer.
	offset := 0
	for j := 0; j < i; j++ {
		offset += channelsFrom(e.g, c, c.Inputs[j])
	}
	eo := &edgeOutput{part: part, keyCols: in.KeyCols, maxPar: e.g.MaxParallelism}
	if pointwise(e.g, c, in) {
		eo.targets = []channelWriter{&sender{in: consumers[s].in, ch: int32(offset), ctx: e.ctx}}
		return eo
	}
	for _, t := range consumers {
		eo.targets = append(eo.targets, &sender{in: t.in, ch: int32(offset + s), ctx: e.ctx})
	}
	if part == Forward {
		eo.part = Rebalance
	}
	return eo
}

// open opens every task's members with their restored state. As a
// TaskManager will, each task restores its own share (reads its sections
// and opens its operators, in chain order) on its own goroutine, up to
// Options.RestoreConcurrency tasks at a time. On failure it closes what it
// opened and returns the error of the first task (in task order) that
// failed, as opening one after another would.
func (e *execution) open(rr *restoreReader, tasks [][]*member) error {
	limit := e.opts.RestoreConcurrency
	if limit <= 0 {
		limit = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		opened   []*member
		wg       sync.WaitGroup
		sem      = make(chan struct{}, limit)
		errs     = make([]error, len(tasks))
		byMember = map[*member]*task{}
	)
	for _, t := range e.tasks {
		for _, m := range t.members {
			byMember[m] = t
		}
	}
	for i, ms := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			for _, m := range ms {
				if ctx.Err() != nil {
					return
				}
				err := e.openMember(ctx, rr, m, byMember[m])
				if err != nil {
					errs[i] = err
					cancel() // the others stop reading state
					return
				}
				mu.Lock()
				opened = append(opened, m)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var first error
	for _, err := range errs {
		// A read cut short because another task failed is not the cause.
		if err != nil && (first == nil || errors.Is(first, context.Canceled) && !errors.Is(err, context.Canceled)) {
			first = err
		}
	}
	if first == nil {
		first = e.ctx.Err()
	}
	if first != nil {
		for _, m := range opened {
			if m.op != nil {
				m.op.Close()
			} else if t := byMember[m]; t.source != nil {
				t.source.Close()
			}
		}
	}
	return first
}

// openMember opens one member with its share of the restored state. It is
// the one place a *Restored is built for a subtask.
func (e *execution) openMember(ctx context.Context, rr *restoreReader, m *member, t *task) error {
	n := m.node
	r, err := rr.restoredFor(ctx, n.ID, m.ctx.KeyGroups)
	if err != nil {
		return err
	}
	e.opts.restoreFlags.apply(r)
	if n.NewSource != nil {
		src := n.NewSource()
		if err := src.Open(m.ctx, r); err != nil {
			return fmt.Errorf("opening %s#%d: %w", n.ID, m.ctx.Subtask, err)
		}
		t.source = src
		return nil
	}
	if err := m.op.Open(m.ctx, r); err != nil {
		return fmt.Errorf("opening %s#%d: %w", n.ID, m.ctx.Subtask, err)
	}
	return nil
}
