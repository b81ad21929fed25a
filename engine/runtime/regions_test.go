package runtime

import (
	"reflect"
	"testing"
)

func TestRegions(t *testing.T) {
	src := func(id string, par int) *Node {
		return &Node{ID: id, Parallelism: par, NewSource: func() Source { return nil }}
	}
	op := func(id string, par int, ins ...Edge) *Node {
		return &Node{ID: id, Parallelism: par, Inputs: ins, NewOperator: func() Operator { return nil }}
	}
	fwd := func(from string) Edge { return Edge{From: from} }
	hash := func(from string) Edge { return Edge{From: from, Partition: Hash} }
	for _, tc := range []struct {
		name  string
		nodes []*Node
		tasks int
		want  [][]int
	}{
		{"router: forward edges only, one region per subtask",
			[]*Node{src("s", 3), op("f", 3, fwd("s")), op("out", 3, fwd("f"))}, 3,
			[][]int{{0}, {1}, {2}}},
		{"a hash edge joins every subtask",
			[]*Node{src("s", 2), op("w", 2, hash("s")), op("out", 2, fwd("w"))}, 4,
			[][]int{{0, 1, 2, 3}}},
		{"two independent pipelines, one with a shuffle",
			[]*Node{src("a", 2), op("a2", 2, fwd("a")), src("b", 2), op("w", 2, hash("b"))}, 6,
			[][]int{{0}, {1}, {2, 3, 4, 5}}},
		{"forward between different parallelism is a rebalance",
			[]*Node{src("s", 1), op("f", 2, fwd("s"))}, 3,
			[][]int{{0, 1, 2}}},
		{"a two-input node with forward inputs: pointwise channels",
			[]*Node{src("a", 2), src("b", 2), op("u", 2, fwd("a"), fwd("b"))}, 6,
			[][]int{{0, 2, 4}, {1, 3, 5}}},
	} {
		g := &Graph{JobName: "j", MaxParallelism: 128, Nodes: tc.nodes}
		if n := len(Tasks(g)); n != tc.tasks {
			t.Fatalf("%s: %d tasks, want %d", tc.name, n, tc.tasks)
		}
		if got := Regions(g); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: regions %v, want %v", tc.name, got, tc.want)
		}
	}
}
