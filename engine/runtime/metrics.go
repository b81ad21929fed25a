package runtime

import "sync/atomic"

// NodeMetrics counts one node's traffic over all its subtasks.
type NodeMetrics struct {
	RowsIn  atomic.Int64
	RowsOut atomic.Int64
	Dropped atomic.Int64 // e.g. late rows with no side output
	Invalid atomic.Int64 // rows a source could not parse
}
