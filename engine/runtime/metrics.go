package runtime

import (
	"math/bits"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-stream/sluice/engine/row"
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
	// SourceRecords and SourceBytes count the records a source read and
	// their size; SinkRecords and SinkBytes the rows a sink (a node no
	// other node reads) took in and theirs. A RecordSizeCounter counts its
	// own (Kafka: the messages' bytes); for the others the runtime
	// estimates the row codec's size from a sample of batches. Sizing
	// (`sluice size`) divides one by the other.
	SourceRecords, SourceBytes, SinkRecords, SinkBytes atomic.Int64
	// StateKeys and StateBytes are the subtask's keyed state as its
	// StateSizer last said (sampled on the task goroutine about once a
	// second and after each snapshot); 0 while no task runs it here.
	StateKeys, StateBytes atomic.Int64

	partMu sync.Mutex
	parts  []SourcePartition // a partitioned source's positions
}

// SourcePartition is where a source subtask is in one partition of a log
// (Kafka): the next offset it reads and the partition's high watermark,
// so that the lag is HighWatermark − Offset.
type SourcePartition struct {
	Cluster       int    `json:"cluster"`
	Topic         string `json:"topic"`
	Partition     int32  `json:"partition"`
	Offset        int64  `json:"offset"`
	HighWatermark int64  `json:"highWatermark"`
}

// Lag is how many records the source is behind in the partition (0 when
// the high watermark is not known yet).
func (p SourcePartition) Lag() int64 { return max(0, p.HighWatermark-p.Offset) }

// SetSourcePartitions replaces the subtask's partition positions (a
// source calls it now and then, not per record; ps is kept).
func (c *SubtaskCounters) SetSourcePartitions(ps []SourcePartition) {
	c.partMu.Lock()
	c.parts = ps
	c.partMu.Unlock()
}

// SourcePartitions is what SetSourcePartitions last set (not to be
// modified).
func (c *SubtaskCounters) SourcePartitions() []SourcePartition {
	c.partMu.Lock()
	defer c.partMu.Unlock()
	return c.parts
}

// clearGauges forgets what a task that no longer runs measured: its
// state size and partitions belong to whoever runs the subtask next.
func (c *SubtaskCounters) clearGauges() {
	c.StateKeys.Store(0)
	c.StateBytes.Store(0)
	c.SetSourcePartitions(nil)
}

// StateSizer is an Operator that can tell the size of its keyed state:
// keys is its entries (a window's accumulators: one per key and pane, or
// per session), bytes their size in memory or on disk. Called on the task
// goroutine about once a second: it must not be proportional to the keys.
type StateSizer interface {
	StateSize() (keys int, bytes int64)
}

// RecordSizeCounter is a Source or a sink Operator that counts its
// records and their bytes itself into Context.Counters (SourceRecords and
// SourceBytes, or SinkRecords and SinkBytes): Kafka counts its messages'
// key, value and header bytes. The runtime estimates the others'.
type RecordSizeCounter interface {
	CountsRecordSize()
}

// recordSizer estimates the encoded size of the rows that pass (a source's
// output or a sink's input): it measures one batch in sizeSampleEvery and
// counts every batch at the last measured bytes per row, so the hot path
// pays a multiplication. It runs on its task's goroutine only.
type recordSizer struct {
	records, bytes *atomic.Int64
	off            bool // the node counts its own (RecordSizeCounter)
	n              int
	perRow         float64
}

const sizeSampleEvery = 16

func (s *recordSizer) add(b *row.Batch) {
	if s == nil || s.off || b.Len == 0 {
		return
	}
	if s.n%sizeSampleEvery == 0 {
		s.perRow = float64(encodedRowsSize(b)) / float64(b.Len)
	}
	s.n++
	s.records.Add(int64(b.Len))
	s.bytes.Add(int64(s.perRow*float64(b.Len) + 0.5))
}

// encodedRowsSize is the size of b's rows in the row codec's single-value
// encoding (row.AppendRow): zigzag varints, 8-byte floats, length-prefixed
// strings and bytes, one byte per bool.
func encodedRowsSize(b *row.Batch) int {
	n := 0
	for i := range b.Cols {
		c := &b.Cols[i]
		switch c.Type {
		case row.Int64, row.Timestamp:
			for _, v := range c.Ints[:b.Len] {
				n += varintLen(uint64(v<<1) ^ uint64(v>>63))
			}
		case row.Float64:
			n += 8 * b.Len
		case row.String:
			for _, v := range c.Strs[:b.Len] {
				n += varintLen(uint64(len(v))) + len(v)
			}
		case row.Bytes:
			for _, v := range c.Bytes[:b.Len] {
				n += varintLen(uint64(len(v))) + len(v)
			}
		case row.Bool:
			n += b.Len
		}
	}
	return n
}

func varintLen(x uint64) int { return max(1, (bits.Len64(x)+6)/7) }

// stateSample is one chain member's StateSizer and where it reports.
type stateSample struct {
	s StateSizer
	c *SubtaskCounters
}

// stateEvery is how often a task asks its StateSizers.
const stateEvery = time.Second

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

// measure sets up what member m of task t measures: a source's records, a
// sink's (sink: no node reads it), a StateSizer's state.
func measure(m *member, t *task, sink bool) {
	c := m.ctx.Counters
	if c == nil {
		return
	}
	if m.node.NewSource != nil {
		m.srcSize = &recordSizer{records: &c.SourceRecords, bytes: &c.SourceBytes}
	} else if sink {
		_, own := m.op.(RecordSizeCounter)
		m.sinkSize = &recordSizer{records: &c.SinkRecords, bytes: &c.SinkBytes, off: own}
	}
	if s, ok := m.op.(StateSizer); ok {
		t.states = append(t.states, stateSample{s: s, c: c})
	}
}

// sampleState asks the chain's StateSizers about once every stateEvery
// (now when force: after a snapshot). On the task goroutine.
func (t *task) sampleState(force bool) {
	if len(t.states) == 0 {
		return
	}
	now := time.Now()
	if !force && now.Before(t.stateAt) {
		return
	}
	t.stateAt = now.Add(stateEvery)
	for _, s := range t.states {
		k, b := s.s.StateSize()
		s.c.StateKeys.Store(int64(k))
		s.c.StateBytes.Store(b)
	}
}
