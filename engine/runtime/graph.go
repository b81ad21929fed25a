package runtime

import (
	"github.com/sluice-stream/sluice/engine/row"
)

// Partition says how an edge spreads batches over the consumer's subtasks.
type Partition int

const (
	Forward Partition = iota
	Rebalance
	Hash
	Broadcast
)

func (p Partition) String() string {
	return [...]string{"forward", "rebalance", "hash", "broadcast"}[p]
}

// Graph is a planned job: what the runtime executes.
type Graph struct {
	JobName        string
	MaxParallelism int
	ExactlyOnce    bool
	Nodes          []*Node // in topological order
}

// Node is a planned node. Exactly one of NewSource and NewOperator is set.
type Node struct {
	ID          string
	Type        string
	Parallelism int
	Inputs      []Edge
	Schema      *row.Schema            // main output
	Side        map[string]*row.Schema // side outputs
	NewSource   func() Source
	NewOperator func() Operator
}

// Edge is one input of a node.
type Edge struct {
	From      string
	Output    string // side output name, "" for main
	Partition Partition
	KeyCols   []int // Hash: key columns in the upstream schema
}

func (g *Graph) node(id string) *Node {
	for _, n := range g.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}
