package spec

import (
	"fmt"
	"slices"
	"strings"
)

// Node returns the node with this id, or nil.
func (j *Job) Node(id string) *Node {
	for i := range j.Nodes {
		if j.Nodes[i].ID == id {
			return &j.Nodes[i]
		}
	}
	return nil
}

// Consumers returns the nodes that read any output of node id, in the order
// the job lists them, each once.
func (j *Job) Consumers(id string) []*Node {
	var out []*Node
	for i := range j.Nodes {
		n := &j.Nodes[i]
		for _, in := range n.Inputs {
			if in.From == id {
				out = append(out, n)
				break
			}
		}
	}
	return out
}

// IsSource reports whether n has no inputs.
func (n *Node) IsSource() bool { return len(n.Inputs) == 0 }

// TopoOrder returns the nodes so that every node comes after all of its
// inputs; among nodes whose inputs are all placed, the job's order is kept.
// It fails on an input naming no node and on a cycle (naming its nodes).
func (j *Job) TopoOrder() ([]*Node, error) {
	index := make(map[string]int, len(j.Nodes))
	for i, n := range j.Nodes {
		if _, dup := index[n.ID]; !dup {
			index[n.ID] = i
		}
	}
	pending := make([]int, len(j.Nodes)) // inputs not yet placed
	for i, n := range j.Nodes {
		for _, in := range n.Inputs {
			if _, ok := index[in.From]; !ok {
				return nil, fmt.Errorf("node %q: input %q does not exist", n.ID, in.From)
			}
			pending[i]++
		}
	}
	placed := make([]bool, len(j.Nodes))
	order := make([]*Node, 0, len(j.Nodes))
	for len(order) < len(j.Nodes) {
		progress := false
		for i := range j.Nodes {
			if placed[i] || pending[i] > 0 {
				continue
			}
			placed[i] = true
			progress = true
			order = append(order, &j.Nodes[i])
			for k := range j.Nodes {
				for _, in := range j.Nodes[k].Inputs {
					if index[in.From] == i {
						pending[k]--
					}
				}
			}
			break // restart the scan so the job's order wins
		}
		if !progress {
			if cyc := j.findCycles(index); len(cyc) > 0 {
				return nil, cycleError(cyc[0])
			}
			return nil, fmt.Errorf("graph has a cycle")
		}
	}
	return order, nil
}

// findCycles returns cycles of the graph (in data-flow direction, from an
// input to its consumer), each as the ids of the nodes on it: one per back
// edge of a depth-first search, at most maxCycles. It returns at least one
// cycle when the graph has any.
func (j *Job) findCycles(index map[string]int) [][]string {
	const (
		white = iota
		grey
		black
	)
	color := make([]int, len(j.Nodes))
	// consumers[i] lists the nodes that read node i, in job order.
	consumers := make([][]int, len(j.Nodes))
	for k, n := range j.Nodes {
		for _, in := range n.Inputs {
			if i, ok := index[in.From]; ok && !slices.Contains(consumers[i], k) {
				consumers[i] = append(consumers[i], k)
			}
		}
	}
	var (
		cycles [][]string
		stack  []int
		visit  func(i int)
	)
	visit = func(i int) {
		color[i] = grey
		stack = append(stack, i)
		for _, k := range consumers[i] {
			switch color[k] {
			case white:
				visit(k)
			case grey:
				start := slices.Index(stack, k)
				var ids []string
				for _, s := range stack[start:] {
					ids = append(ids, j.Nodes[s].ID)
				}
				if len(cycles) < maxCycles {
					cycles = append(cycles, ids)
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[i] = black
	}
	for i := range j.Nodes {
		if color[i] == white {
			visit(i)
		}
	}
	return cycles
}

const maxCycles = 5

func cycleError(ids []string) error {
	return fmt.Errorf("cycle: %s -> %s (a job graph must be acyclic)", strings.Join(ids, " -> "), ids[0])
}

// checkGraph checks ids, types, inputs, partitioning, cycles, sources and
// that every node is fed from a source. j has its defaults applied.
func (j *Job) checkGraph() []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(j.Nodes) == 0 {
		add("nodes: a job needs at least one node")
		return errs
	}
	index := map[string]int{}
	for i, n := range j.Nodes {
		switch {
		case n.ID == "":
			add("nodes[%d]: id: required", i)
			continue
		case !nodeIDRE.MatchString(n.ID):
			add("nodes[%d]: id: %q is not valid (letters, digits, '_' and '-')", i, n.ID)
			continue
		}
		if first, dup := index[n.ID]; dup {
			add("node %q: id is used by nodes[%d] and nodes[%d]", n.ID, first, i)
			continue
		}
		index[n.ID] = i
	}
	missing := false
	sources := 0
	for i := range j.Nodes {
		n := &j.Nodes[i]
		name := fmt.Sprintf("node %q", n.ID)
		if n.ID == "" || !nodeIDRE.MatchString(n.ID) {
			name = fmt.Sprintf("nodes[%d]", i)
		}
		if strings.TrimSpace(n.Type) == "" {
			add("%s: type: required", name)
		}
		switch {
		case n.Parallelism < 0:
			add("%s: parallelism: must be ≥ 1, got %d", name, n.Parallelism)
		case n.Parallelism > j.MaxParallelism && j.MaxParallelism > 0:
			add("%s: parallelism: %d exceeds maxParallelism %d", name, n.Parallelism, j.MaxParallelism)
		}
		if len(n.Inputs) == 0 {
			sources++
		}
		for k, in := range n.Inputs {
			what := fmt.Sprintf("input %q", in.From)
			if in.Output != "" {
				what = fmt.Sprintf("input %q", in.From+"."+in.Output)
			}
			if in.From == "" {
				add("%s: inputs[%d]: from: required (the id of the upstream node)", name, k)
				missing = true
				continue
			}
			if _, ok := index[in.From]; !ok {
				add("%s: input %q does not exist", name, in.From)
				missing = true
			}
			if in.Output != "" && !nodeIDRE.MatchString(in.Output) {
				add("%s: %s: output: %q is not a valid side output name (letters, digits, '_' and '-')", name, what, in.Output)
			}
			switch in.Partition {
			case Hash:
				if len(in.Keys) == 0 {
					add("%s: %s: partition hash needs keys (the fields to hash)", name, what)
				}
			case Forward, Rebalance, Broadcast:
				if len(in.Keys) > 0 {
					add("%s: %s: keys are only used with partition hash (partition is %s)", name, what, in.Partition)
				}
			default:
				add("%s: %s: partition %q is not one of forward, rebalance, hash, broadcast", name, what, in.Partition)
			}
			for ki, key := range in.Keys {
				if strings.TrimSpace(key) == "" {
					add("%s: %s: keys[%d]: empty field name", name, what, ki)
				}
			}
		}
	}
	if sources == 0 {
		add("nodes: no source (a node without inputs); every node reads from another")
	}
	if missing {
		return errs // cycles and reachability make no sense on a broken graph
	}
	cycles := j.findCycles(index)
	onCycle := map[string]bool{}
	for _, c := range cycles {
		errs = append(errs, cycleError(c))
		for _, id := range c {
			onCycle[id] = true
		}
	}
	// Every node must be fed from a source. In an acyclic graph whose
	// inputs all exist this always holds; it fails only downstream of a
	// cycle that no source feeds.
	reached := make([]bool, len(j.Nodes))
	var queue []int
	for i, n := range j.Nodes {
		if len(n.Inputs) == 0 {
			reached[i] = true
			queue = append(queue, i)
		}
	}
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		for k := range j.Nodes {
			if reached[k] {
				continue
			}
			for _, in := range j.Nodes[k].Inputs {
				if idx, ok := index[in.From]; ok && idx == i {
					reached[k] = true
					queue = append(queue, k)
					break
				}
			}
		}
	}
	var cut []string
	for i, n := range j.Nodes {
		if !reached[i] && !onCycle[n.ID] && n.ID != "" {
			cut = append(cut, n.ID)
		}
	}
	if len(cut) > 0 {
		add("nodes %s: not connected to any source (they read only from a cycle)", strings.Join(quoteAll(cut), ", "))
	}
	return errs
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = fmt.Sprintf("%q", v)
	}
	return out
}
