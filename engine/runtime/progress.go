package runtime

import (
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/state"
)

// Progress of long operations (savepoints and restores; the dispatcher
// adds rescales and upgrades on top): bytes and state files done of the
// total, per subtask, and an estimate of the time left.
//
// Counting is cheap: each subtask's share has atomic counters, bumped per
// Write of a snapshot (a key group or a chunk of one, never per record)
// and read from the state file reader's own byte counter while restoring.
//
// Totals:
//   - a savepoint's state file: a Snapshot that is a SizedSnapshot tells
//     its size up front; otherwise the size of the last full state file
//     this process wrote or restored for the same subtask; otherwise the
//     driver's estimate from the last completed checkpoint's metadata (a
//     delta chain counts whole); otherwise unknown (0) until the file is
//     committed. Once committed, the total is the file's size.
//   - a restore: the sizes of the sections each subtask reads, known from
//     the checkpoint's metadata before a byte is read.
//
// One Progress serves a job: the driver begins and ends operations, the
// hosts count their subtasks' shares into it (the same Progress in one
// process; a TaskManager's own one otherwise, whose Report the master
// Merges).

// Progress kinds and states, as the REST API shows them.
const (
	ProgressSavepoint = "savepoint"
	ProgressRestore   = "restore"
	ProgressRescale   = "rescale"
	ProgressUpgrade   = "upgrade"

	ProgressRunning = "running"
	ProgressDone    = "done"
	ProgressFailed  = "failed"
)

// SizedSnapshot is a Snapshot that knows (or estimates) how many bytes its
// Write will write, for the progress of a savepoint.
type SizedSnapshot interface {
	Snapshot
	SnapshotSize() int64
}

// progressKeep is how many finished operations a Progress keeps, and
// progressMax how many in all.
const (
	progressKeep = 10
	progressMax  = 50
)

// Progress tracks the operations of one job (or one process's share of
// them). The zero value is not usable; a nil *Progress tracks nothing.
type Progress struct {
	mu   sync.Mutex
	ops  map[string]*progressOp
	last map[subKey]int64 // last full state file size per subtask
	now  func() time.Time
}

// NewProgress returns an empty Progress.
func NewProgress() *Progress {
	return &Progress{ops: map[string]*progressOp{}, last: map[subKey]int64{}, now: time.Now}
}

type subKey struct {
	node    string
	subtask int
}

type progressOp struct {
	id, kind string
	started  time.Time
	ended    time.Time
	state    string // "" while running unless the driver ended it
	err      string
	subs     map[subKey]*subProgress
	seq      int64 // creation order, for newest first among equal times
}

// subProgress is one subtask's share of an operation.
type subProgress struct {
	bytesDone, bytesTotal, filesDone, filesTotal atomic.Int64
	done                                         atomic.Bool
	// reading is the state file a restore is reading now; its bytes read
	// count on top of bytesDone.
	reading atomic.Pointer[checkpoint.StateReader]
	failed  atomic.Pointer[string]
	sent    ProgressEntry // what Report sent last (under Progress.mu)
}

func (s *subProgress) bytes() int64 {
	n := s.bytesDone.Load()
	if r := s.reading.Load(); r != nil {
		n += r.BytesRead()
	}
	return n
}

var progressSeq atomic.Int64

// SavepointOp and RestoreOp name operations.
func SavepointOp(id int64) string     { return "sp-" + strconv.FormatInt(id, 10) }
func RestoreOp(attempt string) string { return "restore-" + attempt }

func (p *Progress) op(id, kind string) *progressOp {
	o := p.ops[id]
	if o == nil {
		o = &progressOp{id: id, kind: kind, started: p.now(), subs: map[subKey]*subProgress{}, seq: progressSeq.Add(1)}
		p.ops[id] = o
		p.prune()
	}
	return o
}

func (o *progressOp) sub(node string, subtask int) *subProgress {
	k := subKey{node, subtask}
	s := o.subs[k]
	if s == nil {
		s = &subProgress{}
		o.subs[k] = s
	}
	return s
}

// Begin starts operation id of kind (again: a restart of the same id
// starts afresh).
func (p *Progress) Begin(id, kind string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.ops, id)
	p.op(id, kind)
}

// Estimate sets a subtask's expected bytes and files, unless something
// better is known already.
func (p *Progress) Estimate(id, kind, node string, subtask int, bytes, files int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.op(id, kind).sub(node, subtask)
	if s.bytesTotal.Load() == 0 {
		s.bytesTotal.Store(bytes)
	}
	if s.filesTotal.Load() == 0 {
		s.filesTotal.Store(files)
	}
}

// End ends operation id: done when err is nil, else failed. A done
// operation's totals become what was done.
func (p *Progress) End(id string, err error) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	o := p.ops[id]
	if o == nil || o.state != "" {
		return
	}
	o.ended = p.now()
	defer p.prune()
	if err != nil {
		o.state, o.err = ProgressFailed, err.Error()
		return
	}
	o.state = ProgressDone
	for _, s := range o.subs {
		s.finish()
	}
}

func (s *subProgress) finish() {
	if r := s.reading.Swap(nil); r != nil {
		s.bytesDone.Add(r.BytesRead())
	}
	s.bytesTotal.Store(s.bytesDone.Load())
	s.filesTotal.Store(s.filesDone.Load())
	s.done.Store(true)
}

// prune drops the oldest finished operations beyond progressKeep, and
// the oldest of any beyond progressMax (a TaskManager's restore that
// failed halfway is never finished there).
func (p *Progress) prune() {
	var fin, all []*progressOp
	for _, o := range p.ops {
		all = append(all, o)
		if o.finished() {
			fin = append(fin, o)
		}
	}
	newestFirst := func(a, b *progressOp) int { return int(b.seq - a.seq) }
	if len(fin) > progressKeep {
		slices.SortFunc(fin, newestFirst)
		for _, o := range fin[progressKeep:] {
			delete(p.ops, o.id)
		}
	}
	if len(all) > progressMax {
		slices.SortFunc(all, newestFirst)
		for _, o := range all[progressMax:] {
			delete(p.ops, o.id)
		}
	}
}

// finished: ended by the driver, or every subtask's share done (an
// operation only hosts know of, such as a region's restore).
func (o *progressOp) finished() bool {
	if o.state != "" {
		return true
	}
	if len(o.subs) == 0 {
		return false
	}
	for _, s := range o.subs {
		if !s.done.Load() {
			return false
		}
	}
	return true
}

// ---- hosts: counting ----

// snapshotFile starts counting a state file of savepoint id; nil when
// the progress of this checkpoint is not tracked (checkpoints are not).
func (p *Progress) snapshotFile(id int64, savepoint bool, node string, subtask int, s Snapshot) *subProgress {
	if p == nil || !savepoint {
		return nil
	}
	est := int64(0)
	if ss, ok := s.(SizedSnapshot); ok {
		est = ss.SnapshotSize()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if est <= 0 {
		est = p.last[subKey{node, subtask}]
	}
	sp := p.op(SavepointOp(id), ProgressSavepoint).sub(node, subtask)
	if est > 0 {
		sp.bytesTotal.Store(est)
	}
	sp.filesTotal.Store(1)
	sp.bytesDone.Store(0)
	sp.filesDone.Store(0)
	return sp
}

// wrote remembers a committed full state file's size for the next
// savepoint's estimate, and ends its share.
func (p *Progress) wrote(sp *subProgress, node string, subtask int, st checkpoint.SubtaskState, full bool) {
	if p == nil {
		return
	}
	if full {
		p.mu.Lock()
		p.last[subKey{node, subtask}] = st.Size
		p.mu.Unlock()
	}
	if sp != nil {
		sp.bytesDone.Store(st.Size)
		sp.filesDone.Store(1)
		sp.finish()
	}
}

func (s *subProgress) fail(err error) {
	if s == nil {
		return
	}
	msg := err.Error()
	s.failed.Store(&msg)
	s.done.Store(true)
}

// progressWriter counts what a snapshot writes into its state file.
type progressWriter struct {
	w *checkpoint.StateFileWriter
	s *subProgress
}

func (w progressWriter) AddKeyGroup(kg int, data []byte) {
	w.w.AddKeyGroup(kg, data)
	w.s.bytesDone.Add(int64(len(data)))
}

func (w progressWriter) AddOperatorState(data []byte) {
	w.w.AddOperatorState(data)
	w.s.bytesDone.Add(int64(len(data)))
}

func (w progressWriter) KeyGroup(kg int) io.Writer {
	return countingWriter{w.w.KeyGroup(kg), w.s}
}

type countingWriter struct {
	w io.Writer
	s *subProgress
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.s.bytesDone.Add(int64(n))
	return n, err
}

// restoreShare starts counting a subtask's share of restore op: the
// files and bytes of the sections it will read.
func (p *Progress) restoreShare(op, node string, subtask int, files, bytes int64) *subProgress {
	if p == nil || op == "" {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.op(op, ProgressRestore).sub(node, subtask)
	s.bytesTotal.Store(bytes)
	s.filesTotal.Store(files)
	s.bytesDone.Store(0)
	s.filesDone.Store(0)
	if bytes > 0 {
		p.last[subKey{node, subtask}] = bytes
	}
	return s
}

// reading counts r as the file being read, until readDone.
func (s *subProgress) startRead(r *checkpoint.StateReader) {
	if s != nil {
		s.reading.Store(r)
	}
}

func (s *subProgress) readDone(r *checkpoint.StateReader) {
	if s == nil {
		return
	}
	if s.reading.CompareAndSwap(r, nil) {
		s.bytesDone.Add(r.BytesRead())
	}
	s.filesDone.Add(1)
}

// ---- the driver: estimates ----

// beginSavepoint starts the progress of savepoint id, each subtask's
// share estimated from the last completed checkpoint's (or the restored
// one's) state files.
func (p *Progress) beginSavepoint(id int64, g *Graph, md *checkpoint.Metadata) {
	if p == nil {
		return
	}
	op := SavepointOp(id)
	p.Begin(op, ProgressSavepoint)
	if md == nil {
		return
	}
	for _, ns := range md.Nodes {
		n := g.node(ns.NodeID)
		if n == nil || len(ns.Subtasks) == 0 {
			continue
		}
		var total int64
		per := map[int]int64{}
		for _, st := range ns.Subtasks {
			for _, f := range st.Files() {
				total += f.Size
				per[st.Subtask] += f.Size
			}
		}
		for i := range n.Parallelism {
			b := total / int64(n.Parallelism) // another parallelism: spread evenly
			if ns.Parallelism == n.Parallelism {
				b = per[i]
			}
			p.Estimate(op, ProgressSavepoint, n.ID, i, b, 1)
		}
	}
}

// committed ends a savepoint with the sizes its acknowledgements carry.
func (p *Progress) committed(pd *Pending) {
	if p == nil || !pd.Savepoint {
		return
	}
	op := SavepointOp(pd.ID)
	p.mu.Lock()
	if o := p.ops[op]; o != nil && o.state == "" {
		for _, payload := range pd.Acks {
			a, _ := payload.(ack)
			for _, s := range a.states {
				sp := o.sub(s.Node, s.State.Subtask)
				sp.reading.Store(nil)
				sp.bytesDone.Store(s.State.Size)
				sp.filesDone.Store(1)
			}
		}
	}
	p.mu.Unlock()
	p.End(op, nil)
}

// ---- reports: TaskManager to master ----

// ProgressEntry is one subtask's share of an operation, as a TaskManager
// reports it to the master.
type ProgressEntry struct {
	Op, Kind                                     string
	Node                                         string
	Subtask                                      int
	BytesDone, BytesTotal, FilesDone, FilesTotal int64
	Done                                         bool
	Error                                        string
}

func (s *subProgress) entry(op *progressOp, k subKey) ProgressEntry {
	e := ProgressEntry{Op: op.id, Kind: op.kind, Node: k.node, Subtask: k.subtask,
		BytesDone: s.bytes(), BytesTotal: s.bytesTotal.Load(), FilesDone: s.filesDone.Load(), FilesTotal: s.filesTotal.Load(),
		Done: s.done.Load()}
	if f := s.failed.Load(); f != nil {
		e.Error = *f
	}
	return e
}

// Report lists the shares that changed since the last Report.
func (p *Progress) Report() []ProgressEntry {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []ProgressEntry
	for _, o := range p.ops {
		for k, s := range o.subs {
			e := s.entry(o, k)
			if e != s.sent {
				s.sent = e
				out = append(out, e)
			}
		}
	}
	return out
}

// Merge takes a TaskManager's Report. An operation the driver ended keeps
// what it ended with.
func (p *Progress) Merge(es []ProgressEntry) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range es {
		if e.Op == "" {
			continue
		}
		o := p.op(e.Op, e.Kind)
		if o.state != "" {
			continue
		}
		s := o.sub(e.Node, e.Subtask)
		s.bytesDone.Store(e.BytesDone)
		s.filesDone.Store(e.FilesDone)
		if e.BytesTotal > 0 || e.Done {
			s.bytesTotal.Store(e.BytesTotal)
		}
		if e.FilesTotal > 0 || e.Done {
			s.filesTotal.Store(e.FilesTotal)
		}
		if e.Error != "" {
			msg := e.Error
			s.failed.Store(&msg)
		}
		s.done.Store(e.Done)
	}
}

// ---- the REST view ----

// ProgressOperation is one operation as GET /v1/progress shows it.
type ProgressOperation struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	State     string    `json:"state"`
	StartedAt time.Time `json:"startedAt"`
	// Phase: a dispatcher operation's current step (savepoint, restore...).
	Phase      string `json:"phase,omitempty"`
	BytesDone  int64  `json:"bytesDone"`
	BytesTotal int64  `json:"bytesTotal"`
	FilesDone  int64  `json:"filesDone"`
	FilesTotal int64  `json:"filesTotal"`
	// EtaMs is the time left at the rate so far; -1 while unknown (nothing
	// done yet, or no total), 0 once ended.
	EtaMs    int64                `json:"etaMs"`
	Error    string               `json:"error,omitempty"`
	Subtasks []ProgressSubtaskRow `json:"subtasks"`
}

// ProgressSubtaskRow is one subtask's share.
type ProgressSubtaskRow struct {
	Vertex     string `json:"vertex"`
	Subtask    int    `json:"subtask"`
	BytesDone  int64  `json:"bytesDone"`
	BytesTotal int64  `json:"bytesTotal"`
	FilesDone  int64  `json:"filesDone"`
	FilesTotal int64  `json:"filesTotal"`
}

// Operations lists the operations, newest first.
func (p *Progress) Operations() []ProgressOperation {
	if p == nil {
		return []ProgressOperation{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ops := make([]*progressOp, 0, len(p.ops))
	for _, o := range p.ops {
		ops = append(ops, o)
	}
	slices.SortFunc(ops, func(a, b *progressOp) int { return int(b.seq - a.seq) })
	now := p.now()
	out := make([]ProgressOperation, 0, len(ops))
	for _, o := range ops {
		v := ProgressOperation{ID: o.id, Kind: o.kind, State: o.state, StartedAt: o.started.UTC(), Error: o.err, Subtasks: []ProgressSubtaskRow{}}
		keys := make([]subKey, 0, len(o.subs))
		for k := range o.subs {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b subKey) int {
			if a.node != b.node {
				if a.node < b.node {
					return -1
				}
				return 1
			}
			return a.subtask - b.subtask
		})
		failed := ""
		for _, k := range keys {
			s := o.subs[k]
			e := s.entry(o, k)
			if e.BytesTotal < e.BytesDone && !e.Done {
				e.BytesTotal = e.BytesDone // an estimate that fell short
			}
			if e.Error != "" && failed == "" {
				failed = k.node + "#" + strconv.Itoa(k.subtask) + ": " + e.Error
			}
			v.Subtasks = append(v.Subtasks, ProgressSubtaskRow{Vertex: k.node, Subtask: k.subtask,
				BytesDone: e.BytesDone, BytesTotal: e.BytesTotal, FilesDone: e.FilesDone, FilesTotal: e.FilesTotal})
			v.BytesDone += e.BytesDone
			v.BytesTotal += e.BytesTotal
			v.FilesDone += e.FilesDone
			v.FilesTotal += e.FilesTotal
		}
		if v.State == "" {
			v.State = ProgressRunning
			if o.finished() {
				v.State = ProgressDone
				if failed != "" {
					v.State, v.Error = ProgressFailed, failed
				}
			}
		}
		v.EtaMs = -1
		if v.State != ProgressRunning {
			v.EtaMs = 0
		} else {
			v.EtaMs = ETA(now.Sub(o.started), v.BytesDone, v.BytesTotal)
		}
		out = append(out, v)
	}
	return out
}

// ETA is the time left to do total bytes having done done in elapsed, at
// the same rate, in milliseconds; -1 when unknown.
func ETA(elapsed time.Duration, done, total int64) int64 {
	switch {
	case done <= 0 || total <= 0:
		return -1
	case done >= total:
		return 0
	}
	return int64(float64(elapsed.Milliseconds()) * float64(total-done) / float64(done))
}

// opened ends a subtask's share of the restore once its operator opened.
func (r *restoreReader) opened(node string, subtask int) {
	if r == nil || r.md == nil || r.progress == nil {
		return
	}
	p := r.progress
	p.mu.Lock()
	defer p.mu.Unlock()
	if o := p.ops[r.op]; o != nil {
		if s := o.subs[subKey{node, subtask}]; s != nil && !s.done.Load() {
			s.finish()
		}
	}
}

// beginRestore starts the progress of attempt's restore of md with each
// new subtask's share as the hosts will count it (the sections of its key
// groups and every old subtask's operator state, from the metadata), so
// the totals are whole before the first host reports.
func (p *Progress) beginRestore(attempt string, g *Graph, md *checkpoint.Metadata) {
	if p == nil || md == nil {
		return
	}
	op := RestoreOp(attempt)
	p.Begin(op, ProgressRestore)
	rr := &restoreReader{md: md}
	for i := range md.Nodes {
		ns := &md.Nodes[i]
		n := g.node(ns.NodeID)
		if n == nil || len(ns.Subtasks) == 0 {
			continue
		}
		for sub := range n.Parallelism {
			_, files, bytes := rr.pieces(ns, state.RangeForSubtask(sub, g.MaxParallelism, n.Parallelism))
			p.Estimate(op, ProgressRestore, n.ID, sub, bytes, files)
		}
	}
}
