package runtime

import (
	"fmt"
	"sync"

	"github.com/sluice-stream/sluice/engine/checkpoint"
)

// writtenFiles remembers the state files this execution wrote, per
// subtask and checkpoint, so that an incremental checkpoint can record the
// chain of files its delta builds on. Entries older than the newest
// completed checkpoint are dropped when a checkpoint completes: operators
// build on the newest completed one (tasks handle its completion before
// the next barrier, see task.drainCtrl).
type writtenFiles struct {
	mu    sync.Mutex
	files map[writtenKey]checkpoint.SubtaskState
}

type writtenKey struct {
	node    string
	subtask int
	id      int64
}

func (w *writtenFiles) add(node string, subtask int, id int64, st checkpoint.SubtaskState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.files == nil {
		w.files = map[writtenKey]checkpoint.SubtaskState{}
	}
	w.files[writtenKey{node, subtask, id}] = st
}

// completed drops what no later delta can build on.
func (w *writtenFiles) completed(id int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k := range w.files {
		if k.id < id {
			delete(w.files, k)
		}
	}
}

// chain is the Chain of a delta on the subtask's state of checkpoint base.
func (w *writtenFiles) chain(st *checkpoint.Storage, node string, subtask int, base int64) ([]checkpoint.StateFile, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	prev, ok := w.files[writtenKey{node, subtask, base}]
	if !ok {
		return nil, fmt.Errorf("incremental snapshot on checkpoint %d, whose state this run did not write or no longer tracks", base)
	}
	chain := make([]checkpoint.StateFile, 0, len(prev.Chain)+1)
	chain = append(chain, prev.Chain...)
	return append(chain, st.Ref(base, prev)), nil
}

// chainIDs lists the checkpoints whose files the chains of checkpoint
// id's state files (written here) refer to.
func (w *writtenFiles) chainIDs(id int64) map[int64]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	ids := map[int64]bool{}
	for k, st := range w.files {
		if k.id != id {
			continue
		}
		for _, f := range st.Chain {
			ids[f.CheckpointID] = true
		}
	}
	return ids
}

// chainIDs lists the checkpoints whose files a pending checkpoint's chains
// refer to (for the log).
func chainIDs(p *Pending) map[int64]bool {
	ids := map[int64]bool{}
	for _, payload := range p.Acks {
		for _, s := range payload.(ack).states {
			for _, f := range s.State.Chain {
				ids[f.CheckpointID] = true
			}
		}
	}
	return ids
}
