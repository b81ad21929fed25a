package runtime

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/sluice-stream/sluice/engine/row"
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

// TaskInfo describes one task of a job: a chain of nodes' subtasks that
// runs on one goroutine. Tasks(g) lists them in a fixed order, so that every
// process planning the same job agrees on the indices.
type TaskInfo struct {
	Index   int
	Subtask int
	Nodes   []string // the chain, head first
	Source  bool
}

// Tasks lists g's tasks: per chain head in graph order, its subtasks.
func Tasks(g *Graph) []TaskInfo {
	heads, chains := chainsOf(g)
	var ts []TaskInfo
	for _, n := range g.Nodes {
		if heads[n.ID] != n.ID {
			continue
		}
		var ids []string
		for _, cn := range chains[n.ID] {
			ids = append(ids, cn.ID)
		}
		for s := 0; s < n.Parallelism; s++ {
			ts = append(ts, TaskInfo{Index: len(ts), Subtask: s, Nodes: ids, Source: n.NewSource != nil})
		}
	}
	return ts
}

// chainsOf maps every node to its chain's head, and every head to its
// chain (in topological order).
func chainsOf(g *Graph) (headOf map[string]string, chains map[string][]*Node) {
	headOf = map[string]string{}
	chains = map[string][]*Node{}
	for _, n := range g.Nodes {
		h := n.ID
		if chainable(g, n) {
			h = headOf[n.Inputs[0].From]
		}
		headOf[n.ID] = h
		chains[h] = append(chains[h], n)
	}
	return headOf, chains
}

// build creates this process's tasks of the attempt, wires their inputs
// and outputs (to tasks here or, through the Network, elsewhere), and opens
// every operator and source with its restored state.
func (e *Host) build(rr *restoreReader) error {
	g := e.g
	headOf, chains := chainsOf(g)
	infos := Tasks(g)
	here := make([]bool, len(infos))
	if e.cfg.Tasks == nil {
		for i := range here {
			here[i] = true
		}
	} else {
		for _, i := range e.cfg.Tasks {
			if i < 0 || i >= len(infos) {
				return fmt.Errorf("task %d: the job has %d tasks", i, len(infos))
			}
			here[i] = true
		}
	}
	e.byIndex = make([]*task, len(infos))
	// taskOf[node][subtask] is the task index; memberOf the members here.
	taskOf := map[string][]int{}
	memberOf := map[string][]*member{}
	idx := 0
	consumed := map[string]bool{} // nodes some node reads: the others are sinks
	for _, n := range g.Nodes {
		for _, in := range n.Inputs {
			consumed[in.From] = true
		}
	}
	for _, n := range g.Nodes {
		if headOf[n.ID] != n.ID {
			continue
		}
		ts := make([]int, n.Parallelism)
		for s := range ts {
			ts[s] = idx
			if here[idx] {
				t := &task{idx: idx, subtask: s, ctrl: make(chan ctrlMsg, 64), job: e, done: make(chan struct{})}
				t.ctx, t.cancel = context.WithCancel(e.ctx)
				if n.NewSource == nil {
					perInput := make([]int, len(n.Inputs))
					for i, in := range n.Inputs {
						perInput[i] = channelsFrom(g, n, in)
					}
					t.in = newInbox(perInput)
					for i, in := range n.Inputs {
						for range perInput[i] {
							t.in.schemas = append(t.in.schemas, outputSchema(g.node(in.From), in.Output))
						}
					}
				}
				e.tasks = append(e.tasks, t)
				e.byIndex[idx] = t
			}
			idx++
		}
		for _, cn := range chains[n.ID] {
			taskOf[cn.ID] = ts
			ms := make([]*member, n.Parallelism)
			for s := range ms {
				t := e.byIndex[ts[s]]
				if t == nil {
					continue
				}
				ctx := &Context{
					JobName:        g.JobName,
					NodeID:         cn.ID,
					Subtask:        s,
					Parallelism:    cn.Parallelism,
					MaxParallelism: g.MaxParallelism,
					KeyGroups:      state.RangeForSubtask(s, g.MaxParallelism, cn.Parallelism),
					ExactlyOnce:    g.ExactlyOnce,
					Attempt:        e.attempt,
					Incremental:    e.cfg.Incremental,
					LocalDir:       filepath.Join(e.localDir, fmt.Sprintf("%s-%d", cn.ID, s)),
					Log:            e.cfg.Log.With("node", cn.ID, "subtask", s),
					Metrics:        e.metrics[cn.ID],
				}
				if ctx.Metrics != nil {
					ctx.Counters = ctx.Metrics.Subtask(s)
				}
				m := &member{node: cn, ctx: ctx}
				if cn.NewOperator != nil {
					m.op = cn.NewOperator()
				}
				measure(m, t, !consumed[cn.ID])
				ms[s] = m
				t.members = append(t.members, m)
			}
			memberOf[cn.ID] = ms
		}
	}
	// Outputs, per member and output name.
	for _, n := range g.Nodes {
		for s, m := range memberOf[n.ID] {
			if m == nil {
				continue
			}
			t := e.byIndex[taskOf[n.ID][s]]
			outs := map[string][]Output{}
			for _, c := range g.Nodes {
				for i, in := range c.Inputs {
					if in.From != n.ID {
						continue
					}
					var o Output
					if headOf[c.ID] == headOf[n.ID] {
						cm := memberOf[c.ID][s]
						o = &chainLink{t: t, op: cm.op, input: i, m: e.metrics[c.ID], sc: cm.ctx.Counters, size: cm.sinkSize}
					} else {
						eo, err := e.edgeTo(n, s, t, c, i, taskOf[c.ID])
						if err != nil {
							return err
						}
						t.edges = append(t.edges, eo)
						o = eo
					}
					outs[in.Output] = append(outs[in.Output], o)
				}
			}
			m.ctx.Out = countingOutput{out: combine(outs[""]), m: e.metrics[n.ID], sc: m.ctx.Counters, size: m.srcSize}
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
	// Inputs whose producers run elsewhere give their credits back through
	// the Network.
	for _, t := range e.tasks {
		if t.in == nil {
			continue
		}
		n := t.members[0].node
		ch := 0
		for _, in := range n.Inputs {
			producers := taskOf[in.From]
			for k := range channelsFrom(g, n, in) {
				p := producers[k]
				if pointwise(g, n, in) {
					p = producers[t.subtask]
				}
				if e.byIndex[p] == nil {
					if t.in.remote == nil {
						if e.cfg.Network == nil {
							return fmt.Errorf("task %d has an input from task %d, which runs elsewhere, and no network", t.idx, p)
						}
						t.in.remote = make([]bool, len(t.in.credits))
						key := ChannelKey{Attempt: e.attempt, Task: int32(t.idx)}
						net := e.cfg.Network
						t.in.grant = func(ch int32) {
							k := key
							k.Channel = ch
							net.Grant(k, 1)
						}
					}
					t.in.setRemote(ch)
				}
				ch++
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
				e.cfg.Log.Warn("checkpoint has state for a node the job no longer has; ignoring it", "node", ns.NodeID)
			}
		}
	}
	return nil
}

// outputSchema is the schema of node n's output name ("" for main).
func outputSchema(n *Node, name string) *row.Schema {
	if name == "" {
		return n.Schema
	}
	return n.Side[name]
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

// edgeTo builds producer subtask s's output (on task t) over consumer
// c's input i, whose subtasks are the tasks consumers.
func (e *Host) edgeTo(n *Node, s int, t *task, c *Node, i int, consumers []int) (*edgeOutput, error) {
	in := c.Inputs[i]
	part := in.Partition
	// Channel index of (input i, producer subtask s) at each consumer.
	offset := 0
	for j := 0; j < i; j++ {
		offset += channelsFrom(e.g, c, c.Inputs[j])
	}
	eo := &edgeOutput{part: part, keyCols: in.KeyCols, maxPar: e.g.MaxParallelism}
	target := func(consumer int, ch int32) (channelWriter, error) {
		if ct := e.byIndex[consumer]; ct != nil {
			return &sender{in: ct.in, ch: ch, ctx: t.ctx, waited: backPressured(e.metrics, n.ID, s)}, nil
		}
		if e.cfg.Network == nil || e.cfg.Locate == nil {
			return nil, fmt.Errorf("task %d runs elsewhere and there is no network", consumer)
		}
		key := ChannelKey{Attempt: e.attempt, Task: int32(consumer), Channel: ch}
		cs, err := e.cfg.Network.Sender(t.ctx, e.cfg.Locate(consumer), key)
		if err != nil {
			return nil, fmt.Errorf("channel to task %d: %w", consumer, err)
		}
		if c, ok := cs.(CreditWaitCounter); ok {
			c.CountCreditWait(backPressured(e.metrics, n.ID, s))
		}
		if c, ok := cs.(ByteCounter); ok && e.metrics[n.ID] != nil {
			c.CountBytes(&e.metrics[n.ID].Subtask(s).BytesOut)
		}
		return &remoteSender{cs: cs, t: t, key: key}, nil
	}
	if pointwise(e.g, c, in) {
		w, err := target(consumers[s], int32(offset))
		if err != nil {
			return nil, err
		}
		eo.targets = []channelWriter{w}
		return eo, nil
	}
	for _, ct := range consumers {
		w, err := target(ct, int32(offset+s))
		if err != nil {
			return nil, err
		}
		eo.targets = append(eo.targets, w)
	}
	if part == Forward {
		eo.part = Rebalance
	}
	return eo, nil
}

// open opens every task's members with their restored state. As a
// TaskManager will, each task restores its own share (reads its sections
// and opens its operators, in chain order) on its own goroutine, up to
// Options.RestoreConcurrency tasks at a time. On failure it closes what it
// opened and returns the error of the first task (in task order) that
// failed, as opening one after another would.
func (e *Host) open(rr *restoreReader, tasks [][]*member) error {
	limit := e.cfg.RestoreConcurrency
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
func (e *Host) openMember(ctx context.Context, rr *restoreReader, m *member, t *task) error {
	n := m.node
	r, err := rr.restoredFor(ctx, n.ID, m.ctx.Subtask, m.ctx.KeyGroups)
	if err != nil {
		return err
	}
	defer rr.opened(n.ID, m.ctx.Subtask)
	e.cfg.RestoreFlags.apply(r)
	if n.NewSource != nil {
		src := n.NewSource()
		if err := src.Open(m.ctx, r); err != nil {
			return fmt.Errorf("opening %s#%d: %w", n.ID, m.ctx.Subtask, err)
		}
		t.source = src
		if _, ok := src.(RecordSizeCounter); ok && m.srcSize != nil {
			m.srcSize.off = true
		}
		return nil
	}
	if err := m.op.Open(m.ctx, r); err != nil {
		return fmt.Errorf("opening %s#%d: %w", n.ID, m.ctx.Subtask, err)
	}
	return nil
}

// Regions splits g's tasks into pipelined regions: tasks joined by a
// channel (any edge that is not chained) are in one region, so a region can
// restart from a checkpoint without the others noticing. A job of forward
// edges only (a router) has one region per subtask; one hash edge between
// all subtasks makes the whole job one region. Regions are lists of task
// indices, ascending, in order of their first task.
func Regions(g *Graph) [][]int {
	infos := Tasks(g)
	headOf, _ := chainsOf(g)
	first := map[string]int{} // chain head → index of its subtask 0
	for _, t := range infos {
		if t.Subtask == 0 {
			first[t.Nodes[0]] = t.Index
		}
	}
	parent := make([]int, len(infos))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	union := func(a, b int) {
		if ra, rb := find(a), find(b); ra != rb {
			parent[max(ra, rb)] = min(ra, rb)
		}
	}
	for _, n := range g.Nodes {
		if chainable(g, n) {
			continue // inside its upstream's task
		}
		for _, in := range n.Inputs {
			up := g.node(in.From)
			c, p := first[headOf[n.ID]], first[headOf[in.From]]
			if pointwise(g, n, in) {
				for s := 0; s < n.Parallelism; s++ {
					union(c+s, p+s)
				}
				continue
			}
			for s := 0; s < n.Parallelism; s++ {
				for u := 0; u < up.Parallelism; u++ {
					union(c+s, p+u)
				}
			}
		}
	}
	var regions [][]int
	at := map[int]int{}
	for i := range infos {
		r := find(i)
		k, ok := at[r]
		if !ok {
			k = len(regions)
			at[r] = k
			regions = append(regions, nil)
		}
		regions[k] = append(regions[k], i)
	}
	return regions
}
