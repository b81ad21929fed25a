package state

import (
	"math"
	"sync"
	"sync/atomic"
)

// Registry tracks an operator's live snapshots. The task goroutine reads
// Frozen and Oldest once per call (COW.Load); Release may run on any
// goroutine.
type Registry struct {
	mu     sync.Mutex
	live   map[uint64]int
	Frozen atomic.Uint64 // newest live snapshot version, 0 if none
	Oldest atomic.Uint64 // oldest live snapshot version, MaxUint64 if none
}

// NewRegistry returns a registry with no live snapshot.
func NewRegistry() *Registry {
	r := &Registry{live: map[uint64]int{}}
	r.Oldest.Store(math.MaxUint64)
	return r
}

// Freeze records a snapshot of version v.
func (r *Registry) Freeze(v uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live[v]++
	r.Frozen.Store(v)
	r.Oldest.Store(min(r.Oldest.Load(), v))
}

// Release is the writer's last touch of the snapshot's segments: the
// atomic stores order it before the operator reuses them (COW.Load).
func (r *Registry) Release(v uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.live[v]--; r.live[v] <= 0 {
		delete(r.live, v)
	}
	var m uint64
	o := uint64(math.MaxUint64)
	for lv := range r.live {
		m = max(m, lv)
		o = min(o, lv)
	}
	r.Frozen.Store(m)
	r.Oldest.Store(o)
}

// Freeze takes a snapshot version: it registers c.Ver as live and moves
// c to the next version. It returns the snapshot's version, for Release.
func (c *COW) Freeze(r *Registry) uint64 {
	v := c.Ver
	r.Freeze(v)
	c.Load(r)
	c.Ver++
	return v
}
