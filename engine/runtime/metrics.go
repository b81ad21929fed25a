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
	// LostTransactions counts sink transactions the broker aborted that a
	// restore accepted as lost (Options.AcceptLostTransactions).
	LostTransactions atomic.Int64
	OffsetResets     atomic.Int64 // source offsets out of range moved to the earliest or latest
	// BackPressured and BytesOut are, for a master, the sums of its
	// TaskManagers' reports; a process running the subtasks counts them
	// per subtask (Subtask) instead: read both with BackPressuredTotal and
	// BytesOutTotal.
	BackPressured atomic.Int64
	BytesOut      atomic.Int64
	// BytesIn counts what crossed processes on the node's channels,
	// encoded (the data plane's bytes; 0 in one process).
	BytesIn atomic.Int64

	// subtasks: each subtask's own counters (Subtask), by index.
	subMu    sync.Mutex
	subtasks []*SubtaskCounters

	// watermarks: the event-time watermark each subtask (or reporting
	// process) has reached; the node's is their minimum.
	wmMu       sync.Mutex
	watermarks map[int]int64
}

// SetWatermark records that subtask (or reporter) key reached wm. Called
// when a watermark advances, not per row.
func (m *NodeMetrics) SetWatermark(key int, wm int64) {
	m.wmMu.Lock()
	if m.watermarks == nil {
		m.watermarks = map[int]int64{}
	}
	m.watermarks[key] = wm
	m.wmMu.Unlock()
}

// ReplaceWatermarks sets every reporter's watermark at once (a master
// summing its TaskManagers' reports).
func (m *NodeMetrics) ReplaceWatermarks(ws map[int]int64) {
	m.wmMu.Lock()
	m.watermarks = ws
	m.wmMu.Unlock()
}

// SubtaskCounters are one subtask's share of its node's counters, over
// every attempt that ran it in this process. Rows and bytes in are added
// to both; BackPressured (ns a send waited for a credit: the consumer was
// behind) and BytesOut (encoded bytes sent to other processes) only here.
type SubtaskCounters struct {
	RowsIn, RowsOut, BytesIn, BytesOut, BackPressured atomic.Int64
}

// Subtask returns subtask i's counters (made on first use, when a task is
// built: not on a hot path).
func (m *NodeMetrics) Subtask(i int) *SubtaskCounters {
	m.subMu.Lock()
	defer m.subMu.Unlock()
	for len(m.subtasks) <= i {
		m.subtasks = append(m.subtasks, nil)
	}
	if m.subtasks[i] == nil {
		m.subtasks[i] = &SubtaskCounters{}
	}
	return m.subtasks[i]
}

// Subtasks calls f for every subtask that has counters here, in order.
func (m *NodeMetrics) Subtasks(f func(i int, c *SubtaskCounters)) {
	m.subMu.Lock()
	subs := m.subtasks
	m.subMu.Unlock()
	for i, c := range subs {
		if c != nil {
			f(i, c)
		}
	}
}

// BackPressuredTotal is the node's back-pressured time (ns): BackPressured
// plus its subtasks'.
func (m *NodeMetrics) BackPressuredTotal() int64 {
	t := m.BackPressured.Load()
	m.Subtasks(func(_ int, c *SubtaskCounters) { t += c.BackPressured.Load() })
	return t
}

// BytesOutTotal is BytesOut plus the node's subtasks'.
func (m *NodeMetrics) BytesOutTotal() int64 {
	t := m.BytesOut.Load()
	m.Subtasks(func(_ int, c *SubtaskCounters) { t += c.BytesOut.Load() })
	return t
}

// Watermark is the lowest watermark of the node's subtasks (or
// reporters); ok is false before any, or when it is MinWatermark or
// MaxWatermark (no event time, or the input ended).
func (m *NodeMetrics) Watermark() (wm int64, ok bool) {
	m.wmMu.Lock()
	defer m.wmMu.Unlock()
	if len(m.watermarks) == 0 {
		return 0, false
	}
	wm = MaxWatermark
	for _, w := range m.watermarks {
		wm = min(wm, w)
	}
	return wm, wm != MinWatermark && wm != MaxWatermark
}

// pauseLog records how long tasks held back processing for checkpoints:
// from the first barrier (alignment) to the end of the synchronous snapshot.
type pauseLog struct {
	mu     sync.Mutex
	pauses []pauseSample
}

// pauseSample is one task's pause for one checkpoint. Only tasks with an
// operator that has state are summarised: a source's or a stateless
// chain's snapshot is a few offsets, and counting those no-op samples
// would halve every percentile's weight.
type pauseSample struct {
	d     time.Duration
	state bool
}

func (p *pauseLog) record(d time.Duration, state bool) {
	p.mu.Lock()
	p.pauses = append(p.pauses, pauseSample{d, state})
	p.mu.Unlock()
}

// operatorState reports whether a task's snapshot holds an operator's
// state: a member other than a source head returned a snapshot.
func operatorState(members []*member, snaps []Snapshot) bool {
	for i, s := range snaps {
		if s != nil && members[i].op != nil {
			return true
		}
	}
	return false
}

// Pauses summarises the checkpoint pauses of operator subtasks with state.
type Pauses struct {
	N             int
	P50, P99, Max time.Duration
	// Other counts the pauses left out: source tasks and chains without
	// operator state.
	Other int
}

func summarise(ps []pauseSample) Pauses {
	var s []time.Duration
	other := 0
	for _, p := range ps {
		if p.state {
			s = append(s, p.d)
		} else {
			other++
		}
	}
	if len(s) == 0 {
		return Pauses{Other: other}
	}
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(f float64) time.Duration { return s[min(len(s)-1, int(f*float64(len(s))))] }
	return Pauses{N: len(s), P50: q(0.5), P99: q(0.99), Max: s[len(s)-1], Other: other}
}
