package nodes

import "github.com/sluice-stream/sluice/engine/runtime"

var _ runtime.StateSizer = (*windowOp)(nil)

// StateSize is the window operator's own figure for the keyed state's
// metrics (sluice_vertex_state_keys and _bytes): its accumulators and their
// size.
func (w *windowOp) StateSize() (keys int, bytes int64) {
	if w.op == nil {
		return 0, 0
	}
	return w.op.StateSize()
}
