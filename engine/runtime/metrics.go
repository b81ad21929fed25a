package runtime

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// NodeMetrics counts one node's traffic over all its subtasks.
type NodeMetrics struct {
	RowsIn  atomic.Int64
	RowsOut atomic.Int64
	Dropped atomic.Int64 // e.g. late rows with no side output
	Invalid atomic.Int64 // rows a source could not parse

	OffsetResets atomic.Int64 // source offsets out of range moved to the earliest or latest
}

// pauseLog records how long tasks held back processing for checkpoints:
// from the first barrier (alignment) to the end of the synchronous snapshot.
type pauseLog struct {
	mu     sync.Mutex
	pauses []time.Duration
}

func (p *pauseLog) record(d time.Duration) {
	p.mu.Lock()
	p.pauses = append(p.pauses, d)
	p.mu.Unlock()
}

// Pauses summarises checkpoint pauses.
type Pauses struct {
	N             int
	P50, P99, Max time.Duration
}

func summarise(ds []time.Duration) Pauses {
	if len(ds) == 0 {
		return Pauses{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(f float64) time.Duration { return s[min(len(s)-1, int(f*float64(len(s))))] }
	return Pauses{N: len(s), P50: q(0.5), P99: q(0.99), Max: s[len(s)-1]}
}
