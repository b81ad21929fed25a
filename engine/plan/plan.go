// Package plan turns a job spec into the graph the runtime executes: it
// resolves each node's type, checks its params and schemas, and decides how
// every edge is partitioned. Every error names the node and the field.
package plan

import (
	"fmt"
	"slices"
	"strings"

	_ "github.com/sluice-stream/sluice/engine/connectors/file"  // registers the file source and sink
	_ "github.com/sluice-stream/sluice/engine/connectors/kafka" // registers the kafka source and sink
	"github.com/sluice-stream/sluice/engine/nodes"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
)

// Build plans a parsed, validated job.
func Build(j *spec.Job) (*runtime.Graph, error) {
	order, err := j.TopoOrder()
	if err != nil {
		return nil, err
	}
	g := &runtime.Graph{JobName: j.Name, MaxParallelism: j.MaxParallelism, ExactlyOnce: j.Checkpoint.Mode != spec.AtLeastOnce}
	planned := map[string]*nodes.Planned{}
	built := map[string]*runtime.Node{}
	consumers := map[string]int{}
	for _, n := range order {
		for _, in := range n.Inputs {
			consumers[in.From]++
		}
	}
	for _, n := range order {
		f, ok := nodes.Lookup(n.Type, len(n.Inputs) > 0)
		if !ok {
			return nil, fmt.Errorf("node %q: type: unknown node type %q (known: %s)", n.ID, n.Type, strings.Join(nodes.Types(), ", "))
		}
		switch {
		case f.Kind == nodes.Source && len(n.Inputs) > 0:
			return nil, fmt.Errorf("node %q: inputs: a %s source takes no inputs", n.ID, n.Type)
		case f.Kind != nodes.Source && len(n.Inputs) < f.MinInputs:
			return nil, fmt.Errorf("node %q: inputs: %s needs at least %d input(s), has %d", n.ID, n.Type, f.MinInputs, len(n.Inputs))
		case f.Kind != nodes.Source && f.MaxInputs > 0 && len(n.Inputs) > f.MaxInputs:
			return nil, fmt.Errorf("node %q: inputs: %s takes at most %d input(s), has %d", n.ID, n.Type, f.MaxInputs, len(n.Inputs))
		case f.Kind == nodes.Sink && consumers[n.ID] > 0:
			return nil, fmt.Errorf("node %q: %s is a sink; nothing can read from it", n.ID, n.Type)
		}
		c := &nodes.PlanContext{Job: j, Node: n}
		for i, in := range n.Inputs {
			up := planned[in.From]
			s := up.Schema
			if in.Output != "" {
				s = up.Side[in.Output]
				if s == nil {
					return nil, fmt.Errorf("node %q: inputs[%d]: node %q has no side output %q", n.ID, i, in.From, in.Output)
				}
			}
			if s == nil {
				return nil, fmt.Errorf("node %q: inputs[%d]: node %q is a sink and has no output", n.ID, i, in.From)
			}
			c.Inputs = append(c.Inputs, s)
			var keys []string
			if in.Output == "" {
				keys = up.Keys
			}
			c.InputKeys = append(c.InputKeys, keys)
		}
		p, err := f.Plan(c)
		if err != nil {
			return nil, fmt.Errorf("node %q: %w", n.ID, err)
		}
		planned[n.ID] = p
		par := n.Parallelism
		if par == 0 {
			par = j.Parallelism
		}
		rn := &runtime.Node{ID: n.ID, Type: n.Type, Parallelism: par, Schema: p.Schema, Side: p.Side,
			NewSource: p.NewSource, NewOperator: p.NewOperator}
		for i, in := range n.Inputs {
			e, err := edge(n, i, in, c.Inputs[i], c.InputKeys[i], p.PartitionBy, built[in.From].Parallelism == par)
			if err != nil {
				return nil, err
			}
			rn.Inputs = append(rn.Inputs, e)
		}
		built[n.ID] = rn
		g.Nodes = append(g.Nodes, rn)
	}
	return g, nil
}

func edge(n *spec.Node, i int, in spec.Input, up *row.Schema, upKeys, partitionBy []string, samePar bool) (runtime.Edge, error) {
	e := runtime.Edge{From: in.From, Output: in.Output}
	keys := in.Keys
	switch in.Partition {
	case "", "forward":
		e.Partition = runtime.Forward
	case "rebalance":
		e.Partition = runtime.Rebalance
	case "broadcast":
		e.Partition = runtime.Broadcast
	case "hash":
		e.Partition = runtime.Hash
	default:
		return e, fmt.Errorf("node %q: inputs[%d].partition: unknown partitioning %q (want forward, rebalance, hash or broadcast)", n.ID, i, in.Partition)
	}
	if partitionBy != nil {
		switch {
		case e.Partition == runtime.Forward && samePar && slices.Equal(upKeys, partitionBy):
			return e, nil // already keyed by the same fields: chain
		case e.Partition == runtime.Forward || e.Partition == runtime.Hash:
			if len(keys) > 0 && !slices.Equal(keys, partitionBy) {
				return e, fmt.Errorf("node %q: inputs[%d].keys: %v differ from the node's keys %v", n.ID, i, keys, partitionBy)
			}
			e.Partition, keys = runtime.Hash, partitionBy
		default:
			return e, fmt.Errorf("node %q: inputs[%d].partition: %s needs its input hash-partitioned by %v, not %s", n.ID, i, n.Type, partitionBy, in.Partition)
		}
	}
	if e.Partition == runtime.Hash {
		if len(keys) == 0 {
			return e, fmt.Errorf("node %q: inputs[%d].keys: hash partitioning needs keys", n.ID, i)
		}
		for _, k := range keys {
			c := up.Index(k)
			if c < 0 {
				return e, fmt.Errorf("node %q: inputs[%d].keys: field %q is not in %q's output %s", n.ID, i, k, in.From, up)
			}
			e.KeyCols = append(e.KeyCols, c)
		}
	}
	return e, nil
}
