package framework

import (
	"fmt"
	"sort"

	"github.com/sluice-stream/sluice/engine/runtime"
)

// Slot sharing, as Flink does it: slot k of the job holds the k-th subtask
// of every chain (a pipeline), so a job needs as many slots as its highest
// parallelism, whatever its number of nodes.

// Worker is what the scheduler knows of a registered TaskManager.
type Worker struct {
	ID    string
	Slots int
}

// Placement maps each pipeline (slot sharing group: the subtask index) to
// the TaskManager that runs it.
type Placement map[int]string

// Pipelines is the number of slots the tasks need.
func Pipelines(tasks []runtime.TaskInfo) int {
	n := 0
	for _, t := range tasks {
		n = max(n, t.Subtask+1)
	}
	return n
}

// Place puts every pipeline on a worker with a free slot. A pipeline stays
// on the worker prev gave it when that worker is still there (its local
// recovery copies are there); the others go to the workers with the most
// free slots first (spread out, so a shuffle crosses processes the way it
// will on Mesos), ties broken by ID. It fails when the slots do not
// suffice.
func Place(pipelines int, workers []Worker, prev Placement) (Placement, error) {
	all := make([]int, pipelines)
	for i := range all {
		all[i] = i
	}
	return PlaceSome(all, workers, prev)
}

// PlaceSome is Place for some pipelines; workers' Slots are their free
// ones. The Placement holds only those pipelines.
func PlaceSome(pipelines []int, workers []Worker, prev Placement) (Placement, error) {
	free := map[string]int{}
	total := 0
	for _, w := range workers {
		free[w.ID] = max(w.Slots, 0)
		total += max(w.Slots, 0)
	}
	if total < len(pipelines) {
		return nil, fmt.Errorf("%d pipelines need a slot and the %d TaskManagers have %d free", len(pipelines), len(workers), total)
	}
	p := Placement{}
	for _, k := range pipelines {
		if id, ok := prev[k]; ok && free[id] > 0 {
			p[k] = id
			free[id]--
		}
	}
	ids := make([]string, 0, len(workers))
	for _, w := range workers {
		ids = append(ids, w.ID)
	}
	for _, k := range pipelines {
		if _, ok := p[k]; ok {
			continue
		}
		sort.SliceStable(ids, func(i, j int) bool {
			if free[ids[i]] != free[ids[j]] {
				return free[ids[i]] > free[ids[j]]
			}
			return ids[i] < ids[j]
		})
		p[k] = ids[0]
		free[ids[0]]--
	}
	return p, nil
}

// TasksOf lists the tasks each worker runs under placement p.
func TasksOf(tasks []runtime.TaskInfo, p Placement) map[string][]int {
	out := map[string][]int{}
	for _, t := range tasks {
		id := p[t.Subtask]
		out[id] = append(out[id], t.Index)
	}
	return out
}
