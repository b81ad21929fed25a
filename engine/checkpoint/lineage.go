package checkpoint

import (
	"context"
	"fmt"
	"sort"
)

// Lineage says which checkpoints belong to the job's history when several
// masters (fencing epochs) have led it: for each epoch that took the job
// over, the id of the checkpoint its master restored (0: none). A master
// that was paused, not dead, can still land a commit after a newer master
// chose where to go on from; such a checkpoint is superseded — a later
// restore must never pick it, or it would bring back what the job moved
// on from.
type Lineage map[int64]int64

// Superseded returns why md is not part of the job's history ("" when it
// is): a newer epoch took the job over from an older checkpoint than md.
// A checkpoint without an epoch (a one-process run) is never superseded.
func (l Lineage) Superseded(md *Metadata) string {
	if md.Epoch == 0 {
		return ""
	}
	epochs := make([]int64, 0, len(l))
	for e := range l {
		epochs = append(epochs, e)
	}
	sort.Slice(epochs, func(i, j int) bool { return epochs[i] < epochs[j] })
	for _, e := range epochs {
		if e > md.Epoch && md.CheckpointID > l[e] {
			return fmt.Sprintf("committed by the master of epoch %d after the master of epoch %d took the job over from checkpoint %d", md.Epoch, e, l[e])
		}
	}
	return ""
}

// WithLineage makes Latest and LatestBefore skip the checkpoints that
// lineage (read afresh for each call) says were superseded.
func WithLineage(lineage func(ctx context.Context) (Lineage, error)) Option {
	return func(s *Storage) { s.lineage = lineage }
}

// SetLineage is WithLineage on an open storage (before it is shared).
func (s *Storage) SetLineage(lineage func(ctx context.Context) (Lineage, error)) {
	s.lineage = lineage
}
