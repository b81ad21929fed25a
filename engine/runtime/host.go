package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/row"
)

// A Host runs the tasks of one attempt that live in this process: all of
// them for `sluice run`, a TaskManager's share in a cluster. It builds the
// tasks, opens them with their restored state (NewHost), runs them (Start)
// and carries out what the attempt's driver asks (Trigger, Notify, Abort,
// SkipBacklog); what the tasks report comes out of Events. The driver —
// the checkpoint coordinator and the restart logic (Run, or a framework
// master through its control plane) — sees a Host as an Attempt.
type Host struct {
	g           *Graph
	cfg         HostConfig
	exactlyOnce bool
	attempt     string
	tasks       []*task // this process's tasks
	byIndex     []*task // by task index; nil for a task running elsewhere
	sources     int
	events      chan TaskEvent
	ctx         context.Context
	cancel      context.CancelFunc
	uploads     sync.WaitGroup
	metrics     map[string]*NodeMetrics
	pauses      *pauseLog
	localDir    string // this attempt's local state directory
	recovery    localRecovery
	written     writtenFiles
	running     sync.WaitGroup
	startOnce   sync.Once
	stopOnce    sync.Once
	// subs are the hosts that took over regions of this one's tasks
	// (RestartTasks); what the driver asks goes to them too.
	mu   sync.Mutex
	subs []*Host
}

// HostConfig configures a Host.
type HostConfig struct {
	Graph   *Graph
	Attempt string
	// Tasks lists the tasks this process runs (indices into Tasks(Graph));
	// nil means every task.
	Tasks []int
	// Network reaches the tasks that run in other processes; Locate gives
	// the data address of the process running a task.
	Network Network
	Locate  func(task int) string
	Storage *checkpoint.Storage
	// Restore is the checkpoint to restore (nil: start empty), read from
	// RestoreDir; RestoreFlags is what the driver decided about it.
	Restore      *checkpoint.Metadata
	RestoreDir   string
	RestoreFlags RestoreFlags
	Incremental  bool
	// LocalRecovery keeps a local copy of each subtask's latest state under
	// LocalStateDir/<job>/recovery (see Options.LocalRecovery).
	LocalRecovery      bool
	LocalStateDir      string
	RestoreConcurrency int
	Log                *slog.Logger
	// Metrics counts rows per node; nil: the host's own.
	Metrics map[string]*NodeMetrics
	// RestoreStats counts the bytes restored; nil: the host's own.
	RestoreStats *RestoreStats
	// Progress counts savepoints' and the restore's bytes and files
	// (progress.go); nil: not counted.
	Progress *Progress

	pauses *pauseLog // Run's, to summarise the run's pauses
}

// RestoreFlags are the fields of Restored that the driver decides, not
// the checkpoint (see Restored).
type RestoreFlags struct {
	SkippedNewer    int64
	AllowDuplicates bool
	AcceptLoss      bool
	Region          bool
}

func (f RestoreFlags) apply(r *Restored) {
	if r != nil {
		r.SkippedNewer, r.AllowDuplicates, r.AcceptLoss, r.Region = f.SkippedNewer, f.AllowDuplicates, f.AcceptLoss, f.Region
	}
}

// EventKind says what a TaskEvent reports.
type EventKind uint8

const (
	// EventAck: the task wrote its state for checkpoint ID (States).
	EventAck EventKind = iota
	// EventDecline: the task could not snapshot or upload checkpoint ID.
	EventDecline
	// EventSourceFinished: a source task emitted everything.
	EventSourceFinished
	// EventFailed: the task failed with Err.
	EventFailed
	// EventExited: every task of the host has exited (after any
	// EventFailed of theirs).
	EventExited
)

// TaskEvent is what a task reports to its attempt's driver.
type TaskEvent struct {
	Kind EventKind
	Task int
	// Tasks lists the tasks an EventFailed of Task -1 concerns (e.g. those
	// of a lost TaskManager); nil: the whole attempt.
	Tasks []int
	// Attempt is the deployment the task belongs to: after a region
	// restart the driver drops what the region's old tasks still report.
	Attempt string
	ID      int64
	Err     error
	States  []NodeSubtaskState
	// Alignment (EventAck) is how long the task held its inputs for the
	// checkpoint's barriers: from the first to the last (0 for a source).
	Alignment time.Duration
}

// ack is what the coordinator keeps of a task's acknowledgement.
type ack struct {
	states    []NodeSubtaskState
	alignment time.Duration
}

// NodeSubtaskState is one node's state file of a task's acknowledgement.
type NodeSubtaskState struct {
	Node        string
	Parallelism int
	State       checkpoint.SubtaskState
}

// Attempt is one deployment of a job's tasks as its driver sees it: a Host
// in this process, or the hosts of several TaskManagers behind a framework
// master.
type Attempt interface {
	ID() string
	// Events reports acknowledgements, declines, finished sources, failures
	// and the exit of every task.
	Events() <-chan TaskEvent
	// Start runs the tasks once every one of them is open.
	Start()
	// Trigger has every source task inject checkpoint tr's barrier.
	Trigger(tr Trigger) error
	// Notify tells every task that checkpoint id completed.
	Notify(id int64) error
	// Abort tells every task that the coordinator gave up on checkpoint id.
	Abort(id int64) error
	// SkipBacklog asks source task `task` to skip its backlog; done is
	// called once with the subtask's name ("node#i") and the outcome.
	SkipBacklog(task int, done func(subtask string, err error)) error
	// Stop cancels the tasks and waits until they and their uploads ended.
	Stop()
}

// RegionRestarter is an Attempt that can restart some of its tasks while
// the others go on (region failover).
type RegionRestarter interface {
	// RestartTasks stops tasks — pipelined regions: no channel joins them
	// to the other tasks — and runs them anew as attempt d, restored from
	// d.Restore. The tasks' events then carry d.Attempt.
	RestartTasks(ctx context.Context, tasks []int, d Deployment) error
}

// NewAttemptID returns a new random attempt id.
func NewAttemptID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NewHost builds this process's tasks of the attempt and opens them with
// their restored state. An error from an operator's Open is returned as
// it is (RestoreBeforeError, FallbackRefusedError, a corrupt state file);
// nothing is left running.
func NewHost(ctx context.Context, cfg HostConfig) (*Host, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Attempt == "" {
		cfg.Attempt = NewAttemptID()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = map[string]*NodeMetrics{}
		for _, n := range cfg.Graph.Nodes {
			cfg.Metrics[n.ID] = &NodeMetrics{}
		}
	}
	if cfg.RestoreStats == nil {
		cfg.RestoreStats = &RestoreStats{}
	}
	if cfg.pauses == nil {
		cfg.pauses = &pauseLog{}
	}
	h := &Host{g: cfg.Graph, cfg: cfg, exactlyOnce: cfg.Graph.ExactlyOnce, attempt: cfg.Attempt,
		metrics: cfg.Metrics, pauses: cfg.pauses, events: make(chan TaskEvent, 1024)}
	h.ctx, h.cancel = context.WithCancel(ctx)
	base := cfg.LocalStateDir
	if base == "" {
		base = filepath.Join(os.TempDir(), "sluice-local")
	}
	h.localDir = filepath.Join(base, h.g.JobName, h.attempt)
	h.recovery = localRecovery{log: cfg.Log}
	if cfg.LocalRecovery {
		h.recovery.dir = filepath.Join(base, h.g.JobName, "recovery")
	}
	rr := &restoreReader{st: cfg.Storage, md: cfg.Restore, dir: cfg.RestoreDir, local: h.recovery, stats: cfg.RestoreStats,
		progress: cfg.Progress, op: RestoreOp(cfg.Attempt)}
	if err := h.build(rr); err != nil {
		h.cancel()
		os.RemoveAll(h.localDir)
		return nil, err
	}
	return h, nil
}

// ID is the attempt's id.
func (h *Host) ID() string { return h.attempt }

// Events implements Attempt.
func (h *Host) Events() <-chan TaskEvent { return h.events }

// Start runs every task on its own goroutine.
func (h *Host) Start() {
	h.startOnce.Do(func() {
		for _, t := range h.tasks {
			h.running.Add(1)
			go func() {
				defer h.running.Done()
				defer close(t.done)
				if err := t.run(t.ctx); err != nil && !t.halted.Load() {
					h.event(TaskEvent{Kind: EventFailed, Task: t.idx, Err: err})
				}
			}()
		}
		go func() {
			h.running.Wait()
			h.event(TaskEvent{Kind: EventExited})
		}()
	})
}

// Stop cancels the tasks and waits for them and their uploads; it removes
// the attempt's local state directory.
func (h *Host) Stop() {
	h.stopOnce.Do(func() {
		h.cancel()
		for _, sub := range h.subHosts() {
			sub.Stop()
		}
		h.running.Wait()
		h.uploads.Wait()
		os.RemoveAll(h.localDir) // after the tasks closed their state
	})
}

func (h *Host) subHosts() []*Host {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Host(nil), h.subs...)
}

// StopTasks stops the given tasks of this host (those it runs), and waits
// until their goroutines ended; their exits are no failure. Their uploads
// in flight may still acknowledge: for checkpoints the driver aborted.
func (h *Host) StopTasks(tasks []int) {
	var stopping []*task
	for _, i := range tasks {
		if t := h.local(i); t != nil && !t.halted.Load() {
			t.halted.Store(true)
			t.cancel()
			stopping = append(stopping, t)
		}
	}
	for _, t := range stopping {
		<-t.done
	}
	for _, sub := range h.subHosts() {
		sub.StopTasks(tasks)
	}
}

// RestartTasks implements RegionRestarter for a host that runs every task
// of the job: the tasks stop, and a new host of them, attempt d, opens
// them restored from d.Restore and runs them. The host ends (EventExited)
// once its own tasks and every such new host ended.
func (h *Host) RestartTasks(ctx context.Context, tasks []int, d Deployment) error {
	h.running.Add(1) // the new host: this one must not end in between
	h.StopTasks(tasks)
	cfg := h.cfg
	cfg.Tasks, cfg.Attempt = tasks, d.Attempt
	cfg.Restore, cfg.RestoreDir, cfg.RestoreFlags = d.Restore, d.RestoreDir, d.Flags
	sub, err := NewHost(h.ctx, cfg)
	if err != nil {
		h.running.Done()
		return err
	}
	h.mu.Lock()
	h.subs = append(h.subs, sub)
	h.mu.Unlock()
	go func() {
		defer h.running.Done()
		for {
			select {
			case ev := <-sub.Events():
				if ev.Kind == EventExited {
					sub.Stop()
					return
				}
				h.event(ev)
			case <-h.ctx.Done():
				return
			}
		}
	}()
	sub.Start()
	return nil
}

// Done is closed once the host is being stopped.
func (h *Host) Done() <-chan struct{} { return h.ctx.Done() }

// Fail fails the attempt from outside its tasks (a TaskManager's data
// connection that its tasks depend on broke): an EventFailed for task -1.
func (h *Host) Fail(err error) {
	go h.event(TaskEvent{Kind: EventFailed, Task: -1, Err: err})
}

// Trigger implements Attempt: every source task of this host.
func (h *Host) Trigger(tr Trigger) error {
	for _, t := range h.tasks {
		if t.source != nil && !t.halted.Load() && !h.send(t, ctrlMsg{kind: ctrlTrigger, trigger: tr}) {
			return h.ctx.Err()
		}
	}
	for _, sub := range h.subHosts() {
		if err := sub.Trigger(tr); err != nil {
			return err
		}
	}
	return nil
}

// Notify implements Attempt.
func (h *Host) Notify(id int64) error {
	h.completed(id)
	for _, t := range h.tasks {
		if !t.halted.Load() && !h.send(t, ctrlMsg{kind: ctrlNotify, id: id}) {
			return h.ctx.Err()
		}
	}
	for _, sub := range h.subHosts() {
		if err := sub.Notify(id); err != nil {
			return err
		}
	}
	return nil
}

// completed forgets the state files no later checkpoint can build on, and
// the local copies of older checkpoints (but those the completed one's
// incremental chains refer to).
func (h *Host) completed(id int64) {
	h.recovery.prune(id, h.written.chainIDs(id))
	h.written.completed(id)
}

// Abort implements Attempt.
func (h *Host) Abort(id int64) error {
	for _, t := range h.tasks {
		if !t.halted.Load() && !h.send(t, ctrlMsg{kind: ctrlAbort, id: id}) {
			return h.ctx.Err()
		}
	}
	for _, sub := range h.subHosts() {
		if err := sub.Abort(id); err != nil {
			return err
		}
	}
	return nil
}

// SkipBacklog implements Attempt.
func (h *Host) SkipBacklog(task int, done func(subtask string, err error)) error {
	t := h.local(task)
	if t != nil && t.halted.Load() {
		for _, sub := range h.subHosts() {
			if st := sub.local(task); st != nil && !st.halted.Load() {
				return sub.SkipBacklog(task, done)
			}
		}
	}
	if t == nil || t.source == nil {
		return fmt.Errorf("%w: task %d is not a source task of this process", ErrBadCommand, task)
	}
	if !h.send(t, ctrlMsg{kind: ctrlSkipBacklog, skip: done}) {
		return fmt.Errorf("%w: the attempt stopped", ErrNotRunning)
	}
	return nil
}

func (h *Host) local(task int) *task {
	if task < 0 || task >= len(h.byIndex) {
		return nil
	}
	return h.byIndex[task]
}

// Schema implements Receiver.
func (h *Host) Schema(key ChannelKey) *row.Schema {
	if key.Attempt != h.attempt {
		return nil
	}
	t := h.local(int(key.Task))
	if t == nil || t.in == nil || key.Channel < 0 || int(key.Channel) >= len(t.in.schemas) {
		return nil
	}
	return t.in.schemas[key.Channel]
}

// Deliver implements Receiver.
func (h *Host) Deliver(key ChannelKey, m Message) error {
	if h.Schema(key) == nil {
		return fmt.Errorf("no channel %d of task %d in attempt %s here", key.Channel, key.Task, key.Attempt)
	}
	t := h.byIndex[key.Task]
	select {
	case t.in.credits[key.Channel] <- struct{}{}:
	default:
		return fmt.Errorf("channel %d of task %d: a message beyond its %d credits", key.Channel, key.Task, cap(t.in.credits[key.Channel]))
	}
	m.ch = key.Channel
	if mt := t.members[0].ctx.Metrics; mt != nil && m.Bytes > 0 {
		mt.BytesIn.Add(int64(m.Bytes))
		t.members[0].ctx.Counters.BytesIn.Add(int64(m.Bytes))
	}
	t.in.ch <- m // never blocks: capacity covers every credit
	return nil
}

func (h *Host) event(ev TaskEvent) {
	if ev.Attempt == "" {
		ev.Attempt = h.attempt
	}
	select {
	case h.events <- ev:
	case <-h.ctx.Done():
	}
}

func (h *Host) send(t *task, m ctrlMsg) bool {
	select {
	case t.ctrl <- m:
		return true
	case <-h.ctx.Done():
		return false
	}
}

// upload writes a task's snapshots asynchronously and acknowledges.
func (h *Host) upload(t *task, tr Trigger, snaps []Snapshot, alignment time.Duration) {
	h.uploads.Add(1)
	go func() {
		defer h.uploads.Done()
		var states []NodeSubtaskState
		for i, s := range snaps {
			if s == nil {
				continue
			}
			n := t.members[i].node
			st, err := h.writeState(t, n, tr, s)
			if err != nil {
				h.event(TaskEvent{Kind: EventDecline, Task: t.idx, ID: tr.ID, Err: fmt.Errorf("%s#%d: %w", n.ID, t.subtask, err)})
				return
			}
			states = append(states, NodeSubtaskState{Node: n.ID, Parallelism: n.Parallelism, State: st})
		}
		h.event(TaskEvent{Kind: EventAck, Task: t.idx, ID: tr.ID, States: states, Alignment: alignment})
	}()
}

// writeState streams one snapshot into its state file in checkpoint
// storage, and into the local recovery copy alongside.
func (h *Host) writeState(t *task, n *Node, tr Trigger, s Snapshot) (checkpoint.SubtaskState, error) {
	var chain []checkpoint.StateFile
	if d, ok := s.(DeltaSnapshot); ok && d.DeltaBase() > 0 && !tr.Savepoint {
		var err error
		if chain, err = h.written.chain(h.cfg.Storage, n.ID, t.subtask, d.DeltaBase()); err != nil {
			return checkpoint.SubtaskState{}, err
		}
	}
	var local *localCopy
	if !tr.Savepoint {
		local = h.recovery.create(tr.ID, checkpoint.StateFileName(n.ID, t.subtask))
	}
	var tee io.Writer
	if local != nil {
		tee = local
	}
	w, err := h.cfg.Storage.CreateState(h.ctx, tr.ID, tr.Savepoint, n.ID, t.subtask, tee)
	if err != nil {
		local.done(false)
		return checkpoint.SubtaskState{}, err
	}
	sp := h.cfg.Progress.snapshotFile(tr.ID, tr.Savepoint, n.ID, t.subtask, s)
	var sw StateWriter = w
	if sp != nil {
		sw = progressWriter{w, sp}
	}
	if err := s.Write(sw); err != nil {
		w.Abort()
		local.done(false)
		sp.fail(err)
		return checkpoint.SubtaskState{}, fmt.Errorf("writing snapshot: %w", err)
	}
	st, err := w.Commit()
	local.done(err == nil)
	if err != nil {
		sp.fail(err)
		return st, err
	}
	h.cfg.Progress.wrote(sp, n.ID, t.subtask, st, chain == nil)
	if chain != nil {
		st.Delta, st.Chain = true, chain
	}
	if !tr.Savepoint {
		h.written.add(n.ID, t.subtask, tr.ID, st)
	}
	return st, nil
}
