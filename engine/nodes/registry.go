package nodes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"sync"

	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
)

// Kind says where a node type may stand in a graph.
type Kind int

const (
	Source Kind = iota
	Operator
	Sink
)

// Factory is a node type.
type Factory struct {
	Kind Kind
	// MinInputs and MaxInputs bound the number of inputs of an operator or
	// sink (MaxInputs 0 = no limit).
	MinInputs, MaxInputs int
	// Plan checks the node's params against its inputs and returns what the
	// runtime needs. Errors should name the param ("params.expr: …"); the
	// caller adds the node id.
	Plan func(c *PlanContext) (*Planned, error)
}

// PlanContext is what a factory sees of the job while planning one node.
type PlanContext struct {
	Job    *spec.Job
	Node   *spec.Node
	Inputs []*row.Schema
	// InputKeys are the key fields of each input when it is keyed (the
	// input comes from a keyBy), else nil.
	InputKeys [][]string
}

// Params decodes the node's params strictly into p.
func (c *PlanContext) Params(p any) error {
	raw := c.Node.Params
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		raw = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(p); err != nil {
		return fmt.Errorf("params: %w", err)
	}
	return nil
}

// Planned is a planned node.
type Planned struct {
	Schema      *row.Schema
	Side        map[string]*row.Schema
	NewSource   func() runtime.Source
	NewOperator func() runtime.Operator
	// Keys marks the output as keyed by these fields (keyBy): a consumer
	// that partitions by the same keys can be chained to it.
	Keys []string
	// PartitionBy asks for the input to be hash-partitioned by these fields
	// (keyBy, window).
	PartitionBy []string
}

var (
	mu sync.RWMutex
	// A name may have a source and a non-source factory ("file"): which one
	// a node gets depends on whether it has inputs.
	registry = map[string][]Factory{}
)

// Register adds a node type; it panics on a duplicate name and kind.
func Register(name string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	for _, g := range registry[name] {
		if (g.Kind == Source) == (f.Kind == Source) {
			panic("nodes: type registered twice: " + name)
		}
	}
	registry[name] = append(registry[name], f)
}

// Lookup returns the factory of a type: its source when the node has no
// inputs, else its operator or sink. ok is false for unknown names.
func Lookup(name string, hasInputs bool) (f Factory, ok bool) {
	mu.RLock()
	defer mu.RUnlock()
	fs := registry[name]
	for _, g := range fs {
		if (g.Kind != Source) == hasInputs {
			return g, true
		}
	}
	if len(fs) > 0 {
		return fs[0], true // the caller reports the inputs mismatch
	}
	return Factory{}, false
}

// Types lists the registered type names.
func Types() []string {
	mu.RLock()
	defer mu.RUnlock()
	var names []string
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
