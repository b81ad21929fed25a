package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-stream/sluice/engine/checkpoint"
)

// Options configure a run of a job.
type Options struct {
	Storage *checkpoint.Storage
	// Restore is "", "latest" or the path of a checkpoint or savepoint.
	Restore           string
	Interval          time.Duration
	Timeout           time.Duration
	MinPause          time.Duration
	Retained          int
	TolerableFailures int
	// RestartAttempts is how many times a failed run is restarted from the
	// latest checkpoint; RestartDelay waits between attempts.
	RestartAttempts int
	RestartDelay    time.Duration
	// LocalRecovery keeps a local copy of each subtask's latest state so a
	// restart on this machine restores without reading remote storage.
	LocalRecovery bool
	// Incremental lets operators take incremental checkpoints
	// (Context.Incremental).
	Incremental bool
	// RestoreConcurrency is how many tasks open (and restore their state)
	// at once; 0 means GOMAXPROCS.
	RestoreConcurrency int
	// LocalStateDir holds subtasks' local state directories (default: the
	// system temp directory); each run gets its own subdirectory.
	LocalStateDir string
	// Savepoints receives savepoint requests while the job runs.
	Savepoints <-chan SavepointRequest
	// Commands receives requests to the running job (command.go).
	Commands <-chan Command
	// AllowFallbackDuplicates lets a restore fall back from a corrupt
	// checkpoint to an older one even when a sink cannot take back what it
	// committed after it (Restored.AllowDuplicates).
	AllowFallbackDuplicates bool
	// AcceptLostTransactions lets a restore go on when a sink's pre-committed
	// output was lost and no older checkpoint can replay it
	// (RestoreBeforeError, Restored.AcceptLoss).
	AcceptLostTransactions bool
	Log                    *slog.Logger

	// restoreFlags is what Run tells the operators it opens about the
	// checkpoint it chose (set on each Restored by build).
	restoreFlags restoreFlags
}

// restoreFlags are the fields of Restored that Run decides, not the
// checkpoint.
type restoreFlags struct {
	skippedNewer    int64
	allowDuplicates bool
	acceptLoss      bool
}

func (f restoreFlags) apply(r *Restored) {
	if r != nil {
		r.SkippedNewer, r.AllowDuplicates, r.AcceptLoss = f.skippedNewer, f.allowDuplicates, f.acceptLoss
	}
}

// SavepointRequest asks the running job for a savepoint; Stop ends the job
// once it is written.
type SavepointRequest struct {
	Stop  bool
	Reply chan<- SavepointResult
}

// SavepointResult answers a SavepointRequest.
type SavepointResult struct {
	Path string
	Err  error
}

// Result describes a finished run.
type Result struct {
	Checkpoints int
	// FailedCheckpoints counts checkpoints and savepoints that failed.
	FailedCheckpoints int
	Restarts          int
	// Stopped is set when the job ended by stop-with-savepoint.
	Stopped bool
	Metrics map[string]*NodeMetrics
	// Pauses is every task's checkpoint pause (alignment plus synchronous
	// snapshot) over every checkpoint of the run.
	Pauses   Pauses
	pauseLog pauseLog
	// Restored counts the state bytes restores read, locally and remotely.
	Restored RestoreStats
	// RestoreTime is how long restoring took: reading the checkpoint's
	// state and opening every operator with it.
	RestoreTime time.Duration
	started     time.Time
}

// Run executes g until its sources end (bounded job), it is stopped with a
// savepoint, ctx is cancelled, or it fails more often than the restart
// strategy allows.
func Run(ctx context.Context, g *Graph, opts Options) (*Result, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Storage == nil {
		return nil, errors.New("no checkpoint storage")
	}
	res := &Result{Metrics: make(map[string]*NodeMetrics), started: time.Now()}
	for _, n := range g.Nodes {
		res.Metrics[n.ID] = &NodeMetrics{}
	}
	restore := opts.Restore
	before := int64(math.MaxInt64) // "latest" means the newest below this
	// What the restore being tried has skipped: the newest checkpoint
	// found corrupt (and why), and whether a sink's lost output is accepted.
	var skipped int64
	var corrupt error
	acceptLoss := false
	for {
		md, dir, err := resolveRestore(ctx, opts.Storage, restore, before)
		if err == nil {
			err = restorable(g, md, dir)
		}
		if err != nil && res.Restarts == 0 {
			return res, err // the restore asked for is not there: nothing starts
		}
		if err == nil {
			if md != nil {
				opts.Log.Info("restoring", "checkpoint", md.CheckpointID, "savepoint", md.Savepoint, "path", dir)
			}
			var e *execution
			began := time.Now()
			o := opts
			if md != nil {
				o.restoreFlags = restoreFlags{skippedNewer: skipped, allowDuplicates: opts.AllowFallbackDuplicates, acceptLoss: acceptLoss}
			}
			e, err = newExecution(ctx, g, o, md, dir, res)
			if md != nil {
				res.RestoreTime += time.Since(began)
			}
			var refused *FallbackRefusedError
			var lost *RestoreBeforeError
			switch {
			case err != nil && md != nil && restore == "latest" && isCorrupt(err):
				// A state file failed its checksum while restoring: try the
				// next older checkpoint, as Latest would have.
				next := "no older checkpoint to fall back to"
				if older, _, lerr := opts.Storage.LatestBefore(ctx, md.CheckpointID, false); lerr == nil && older != nil {
					next = fmt.Sprintf("falling back to checkpoint %d", older.CheckpointID)
				}
				opts.Log.Warn(fmt.Sprintf("checkpoint %d is corrupt: %v; %s", md.CheckpointID, err, next), "checkpoint", md.CheckpointID)
				if skipped == 0 {
					skipped, corrupt = md.CheckpointID, err
				}
				before = md.CheckpointID
				continue
			case err != nil && md != nil && errors.As(err, &refused):
				// A sink cannot take back what it committed: no fallback, no
				// restart would help.
				if skipped != 0 {
					return res, fmt.Errorf("%w: checkpoint %d is corrupt (%v) and falling back to checkpoint %d was refused (sluice run --allow-fallback-duplicates allows it, writing that output again): %w",
						ErrJobFailed, skipped, corrupt, md.CheckpointID, err)
				}
				return res, fmt.Errorf("%w: restoring checkpoint %d: %w", ErrJobFailed, md.CheckpointID, err)
			case err != nil && md != nil && errors.As(err, &lost) && !acceptLoss:
				// A sink's pre-committed output of checkpoint lost.Before or
				// later is gone: restore an older checkpoint so the sources
				// replay it. Each such fallback goes to a strictly older
				// checkpoint, so they are bounded by the retained ones and
				// use up no restart attempt.
				older, err2 := olderCheckpoint(ctx, opts.Storage, g.JobName, restore, lost.Before)
				if err2 != nil {
					return res, err2
				}
				if older != nil {
					opts.Log.Warn(fmt.Sprintf("checkpoint %d cannot be restored as it is (%s); falling back to checkpoint %d, whose sources replay the lost output", md.CheckpointID, lost.Reason, older.CheckpointID),
						"checkpoint", md.CheckpointID, "fallback", older.CheckpointID)
					restore, before = "latest", lost.Before
					continue
				}
				if opts.AcceptLostTransactions {
					opts.Log.Warn(fmt.Sprintf("checkpoint %d cannot be restored without losing output (%s) and no older checkpoint is retained; restoring it anyway (--accept-lost-transactions)", md.CheckpointID, lost.Reason),
						"checkpoint", md.CheckpointID)
					acceptLoss = true
					continue
				}
				where := fmt.Sprintf("no older checkpoint of this job is retained in %s", opts.Storage.CheckpointDir())
				if restore != "latest" && !inStorage(opts.Storage, restore) {
					where = fmt.Sprintf("%s is not in this job's checkpoint storage (%s), so no older checkpoint of its lineage is known", restore, opts.Storage.CheckpointDir())
				}
				return res, fmt.Errorf("%w: checkpoint %d cannot be restored without losing output and %s (sluice run --accept-lost-transactions accepts the loss): %w",
					ErrJobFailed, md.CheckpointID, where, err)
			}
			if err == nil {
				// Every operator accepted the fallback: nothing was committed
				// after the restored checkpoint, and this run commits nothing
				// before its first checkpoint, so a restart that restores the
				// same checkpoint need not ask again (the ids' epochs have
				// moved since, by this run's own fencing).
				skipped, corrupt = 0, nil
			}
			if err == nil && md != nil {
				opts.Log.Info("state restored", "checkpoint", md.CheckpointID,
					"localBytes", res.Restored.LocalBytes.Load(), "remoteBytes", res.Restored.RemoteBytes.Load())
			}
			if err == nil {
				e.pauses = &res.pauseLog
				err = e.run(ctx, res)
			}
		}
		res.Pauses = summarise(res.pauseLog.pauses)
		if err == nil || ctx.Err() != nil {
			return res, err
		}
		if res.Restarts >= opts.RestartAttempts {
			return res, fmt.Errorf("%w after %d restarts: %w", ErrJobFailed, res.Restarts, err)
		}
		res.Restarts++
		opts.Log.Warn("job failed; restarting from the latest checkpoint", "attempt", res.Restarts, "of", opts.RestartAttempts, "err", err)
		if err := waitRestart(ctx, g, opts, res); err != nil {
			return res, err
		}
		// Once this run has completed a checkpoint, restart from the latest
		// one; before that, from where the run began: checkpoints in the
		// storage may be an earlier run's. A storage error then fails the
		// attempt (and uses up a restart), not a silent fresh start.
		if res.Checkpoints > 0 {
			restore = "latest"
			before = math.MaxInt64
			skipped, corrupt, acceptLoss = 0, nil, false
		}
	}
}

// olderCheckpoint is the checkpoint to restore instead of the one being
// restored (restore: "latest" or a path) when a sink asked for one before
// id before: the newest retained checkpoint of the job's own checkpoint
// storage below it. A path outside that storage (a savepoint or checkpoint
// copied from elsewhere) has no known older checkpoint: checkpoint ids of
// another storage say nothing about this one's.
func olderCheckpoint(ctx context.Context, st *checkpoint.Storage, job, restore string, before int64) (*checkpoint.Metadata, error) {
	if restore != "latest" && !inStorage(st, restore) {
		return nil, nil
	}
	md, _, err := st.LatestBefore(ctx, before, false)
	if err != nil {
		return nil, fmt.Errorf("finding a checkpoint before %d: %w", before, err)
	}
	if md != nil && md.JobName != job {
		return nil, nil
	}
	return md, nil
}

// inStorage reports whether a checkpoint or savepoint location lies in the
// storage's checkpoint or savepoint directory.
func inStorage(st *checkpoint.Storage, loc string) bool {
	clean := func(u string) string {
		u = strings.TrimPrefix(u, "file://")
		if !strings.Contains(u, "://") {
			u = filepath.Clean(u)
		}
		return strings.TrimSuffix(u, "/") + "/"
	}
	l := clean(loc)
	return strings.HasPrefix(l, clean(st.CheckpointDir())) || strings.HasPrefix(l, clean(st.SavepointDir()))
}

func resolveRestore(ctx context.Context, st *checkpoint.Storage, restore string, before int64) (*checkpoint.Metadata, string, error) {
	switch restore {
	case "":
		return nil, "", nil
	case "latest":
		// State files' checksums are checked as they are read (or their
		// local copies are used): no need to read them all here first.
		md, dir, err := st.LatestBefore(ctx, before, false)
		if err != nil {
			return nil, "", fmt.Errorf("finding the latest checkpoint: %w", err)
		}
		return md, dir, nil
	default:
		md, err := st.Load(ctx, restore)
		if err != nil {
			return nil, "", fmt.Errorf("restoring from %s: %w", restore, err)
		}
		return md, restore, nil
	}
}

// restorable refuses a checkpoint that the job cannot take back as it is
// now, before anything opens. Keyed state is split by hash mod
// maxParallelism and sinks derive ids from it (Kafka transactional ids), so
// a change would misplace state and leave old transactions unfenced;
// Flink refuses it too.
func restorable(g *Graph, md *checkpoint.Metadata, dir string) error {
	if md == nil || md.MaxParallelism == g.MaxParallelism {
		return nil
	}
	return fmt.Errorf("cannot restore %s: checkpoint %d was taken with maxParallelism %d, the job has maxParallelism %d; "+
		"key groups cannot change on restore: set maxParallelism back to %d, or start without restoring",
		dir, md.CheckpointID, md.MaxParallelism, g.MaxParallelism, md.MaxParallelism)
}

type evKind uint8

const (
	evAck evKind = iota
	evDecline
	evSourceFinished
)

type event struct {
	kind   evKind
	task   int
	id     int64
	err    error
	states []nodeSubtaskState
}

type nodeSubtaskState struct {
	node  string
	par   int
	state checkpoint.SubtaskState
}

// execution is one attempt at running the job.
type execution struct {
	g           *Graph
	opts        Options
	exactlyOnce bool
	attempt     string
	tasks       []*task
	sources     int
	events      chan event
	ctx         context.Context
	cancel      context.CancelFunc
	uploads     sync.WaitGroup
	metrics     map[string]*NodeMetrics
	firstID     int64
	pauses      *pauseLog
	localDir    string // this attempt's local state directory
	recovery    localRecovery
	pruning     atomic.Bool // a Prune is running in the background
	written     writtenFiles
	cmds        commands
}

func (e *execution) event(ev event) {
	select {
	case e.events <- ev:
	case <-e.ctx.Done():
	}
}

func newAttemptID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newExecution(ctx context.Context, g *Graph, opts Options, md *checkpoint.Metadata, dir string, res *Result) (*execution, error) {
	e := &execution{g: g, opts: opts, exactlyOnce: g.ExactlyOnce, attempt: newAttemptID(), metrics: res.Metrics, events: make(chan event, 1024)}
	e.ctx, e.cancel = context.WithCancel(ctx)
	id, err := opts.Storage.NextCheckpointID(ctx)
	if err != nil {
		e.cancel()
		return nil, fmt.Errorf("reading checkpoint storage: %w", err)
	}
	e.firstID = id
	base := opts.LocalStateDir
	if base == "" {
		base = filepath.Join(os.TempDir(), "sluice-local")
	}
	e.localDir = filepath.Join(base, g.JobName, e.attempt)
	e.recovery = localRecovery{log: opts.Log}
	if opts.LocalRecovery {
		e.recovery.dir = filepath.Join(base, g.JobName, "recovery")
	}
	rr := &restoreReader{st: opts.Storage, md: md, dir: dir, local: e.recovery, stats: &res.Restored}
	if err := e.build(rr); err != nil {
		e.cancel()
		return nil, err
	}
	return e, nil
}

func (e *execution) run(ctx context.Context, res *Result) error {
	defer e.cancel()
	defer os.RemoveAll(e.localDir) // after the tasks closed their state
	defer e.endCommands()
	now := time.Now().UnixMilli()
	coord := NewCoordinator(CoordinatorConfig{
		Interval:          e.opts.Interval.Milliseconds(),
		Timeout:           e.opts.Timeout.Milliseconds(),
		MinPause:          e.opts.MinPause.Milliseconds(),
		Tasks:             len(e.tasks),
		SourceTasks:       e.sources,
		TolerableFailures: e.opts.TolerableFailures,
		FirstID:           e.firstID,
	}, now)

	errs := make(chan error, len(e.tasks))
	var running sync.WaitGroup
	for _, t := range e.tasks {
		running.Add(1)
		go func() {
			defer running.Done()
			if err := t.run(e.ctx); err != nil {
				errs <- err
			}
		}()
	}
	allExited := make(chan struct{})
	go func() { running.Wait(); close(allExited) }()
	stop := func() {
		e.cancel()
		<-allExited
		e.uploads.Wait()
	}

	tick := e.opts.Interval / 4
	if tick <= 0 || tick > 100*time.Millisecond {
		tick = 100 * time.Millisecond
	}
	if tick < 5*time.Millisecond {
		tick = 5 * time.Millisecond
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()

	var waiting []SavepointRequest // replied when the savepoint in flight ends
	var finished, stopped bool
	var apply func(a Actions) error
	apply = func(a Actions) error {
		now := time.Now().UnixMilli()
		for _, id := range a.Abort {
			e.background(func(ctx context.Context) {
				e.opts.Storage.Abort(ctx, id, false)
				e.opts.Storage.Abort(ctx, id, true)
			})
		}
		for _, id := range a.Abort {
			for _, t := range e.tasks {
				if !e.send(t, ctrlMsg{kind: ctrlAbort, id: id}) {
					return e.ctx.Err()
				}
			}
		}
		if a.Failed != nil {
			res.FailedCheckpoints++
			e.opts.Log.Warn("checkpoint failed", "err", a.Failed)
			if a.FailedSavepoint {
				for _, w := range waiting {
					w.Reply <- SavepointResult{Err: a.Failed}
				}
				waiting = nil
			}
		}
		if a.Fail != nil {
			return a.Fail
		}
		if p := a.Commit; p != nil {
			path, err := e.commit(p)
			if err != nil {
				return apply(coord.CommitFailed(now, p.ID, err))
			}
			if p.Savepoint {
				e.opts.Log.Info("savepoint written", "id", p.ID, "path", path)
				for _, w := range waiting {
					w.Reply <- SavepointResult{Path: path}
				}
				waiting = nil
			} else {
				res.Checkpoints++
				chains := chainIDs(p)
				e.opts.Log.Debug("checkpoint complete", "id", p.ID, "path", path, "builds_on", len(chains))
				e.written.completed(p.ID)
				e.recovery.prune(p.ID, chains)
				if e.pruning.CompareAndSwap(false, true) {
					e.background(func(ctx context.Context) {
						defer e.pruning.Store(false)
						if err := e.opts.Storage.Prune(ctx, e.opts.Retained); err != nil {
							e.opts.Log.Warn("pruning old checkpoints", "err", err)
						}
					})
				}
			}
			if err := apply(coord.Committed(now, p.ID)); err != nil {
				return err
			}
		}
		if a.Notify != 0 {
			for _, t := range e.tasks {
				if !e.send(t, ctrlMsg{kind: ctrlNotify, id: a.Notify}) {
					return e.ctx.Err()
				}
			}
		}
		if a.Trigger != nil {
			for _, t := range e.tasks {
				if t.source != nil && !e.send(t, ctrlMsg{kind: ctrlTrigger, trigger: *a.Trigger}) {
					return e.ctx.Err()
				}
			}
		}
		finished = finished || a.Finished
		stopped = stopped || a.Stopped
		return nil
	}

	for !finished && !stopped {
		var err error
		select {
		case ev := <-e.events:
			now := time.Now().UnixMilli()
			switch ev.kind {
			case evAck:
				err = apply(coord.Ack(now, ev.id, ev.task, ev.states))
			case evDecline:
				err = apply(coord.Decline(now, ev.id, ev.err))
			case evSourceFinished:
				err = apply(coord.SourceFinished(now))
			}
		case <-ticker.C:
			err = apply(coord.Tick(time.Now().UnixMilli()))
		case req := <-e.opts.Savepoints:
			waiting = append(waiting, req)
			err = apply(coord.RequestSavepoint(time.Now().UnixMilli(), req.Stop))
		case c := <-e.opts.Commands:
			e.command(c, res)
		case err = <-errs:
		case <-allExited:
			err = errors.New("every task exited before the job finished")
		case <-ctx.Done():
			stop()
			return ctx.Err()
		}
		if err != nil {
			stop()
			for _, w := range waiting {
				w.Reply <- SavepointResult{Err: err}
			}
			return err
		}
	}
	if stopped {
		res.Stopped = true
		stop()
		return nil
	}
	// Finished: tasks exit once told the final checkpoint completed.
	select {
	case <-allExited:
	case err := <-errs:
		stop()
		return err
	case <-ctx.Done():
		stop()
		return ctx.Err()
	}
	select {
	case err := <-errs:
		return err
	default:
	}
	e.uploads.Wait()
	return nil
}

// storageTimeout bounds one call to checkpoint storage from the driver, so
// that a storage that hangs (rather than failing) cannot stall the
// coordinator: the checkpoint fails and the job goes on.
func (e *execution) storageTimeout() time.Duration {
	if e.opts.Timeout > 0 {
		return e.opts.Timeout
	}
	return time.Minute
}

// background runs storage housekeeping (aborts, pruning) off the driver
// goroutine, bounded by storageTimeout; the run waits for it before ending.
func (e *execution) background(f func(ctx context.Context)) {
	e.uploads.Add(1)
	go func() {
		defer e.uploads.Done()
		ctx, cancel := context.WithTimeout(e.ctx, e.storageTimeout())
		defer cancel()
		f(ctx)
	}()
}

func (e *execution) send(t *task, m ctrlMsg) bool {
	select {
	case t.ctrl <- m:
		return true
	case <-e.ctx.Done():
		return false
	}
}

// upload writes a task's snapshots asynchronously and acknowledges.
func (e *execution) upload(t *task, tr Trigger, snaps []Snapshot) {
	e.uploads.Add(1)
	go func() {
		defer e.uploads.Done()
		var states []nodeSubtaskState
		for i, s := range snaps {
			if s == nil {
				continue
			}
			n := t.members[i].node
			st, err := e.writeState(t, n, tr, s)
			if err != nil {
				e.event(event{kind: evDecline, task: t.idx, id: tr.ID, err: fmt.Errorf("%s#%d: %w", n.ID, t.subtask, err)})
				return
			}
			states = append(states, nodeSubtaskState{node: n.ID, par: n.Parallelism, state: st})
		}
		e.event(event{kind: evAck, task: t.idx, id: tr.ID, states: states})
	}()
}

// writeState streams one snapshot into its state file in checkpoint
// storage, and into the local recovery copy alongside.
func (e *execution) writeState(t *task, n *Node, tr Trigger, s Snapshot) (checkpoint.SubtaskState, error) {
	var chain []checkpoint.StateFile
	if d, ok := s.(DeltaSnapshot); ok && d.DeltaBase() > 0 && !tr.Savepoint {
		var err error
		if chain, err = e.written.chain(e.opts.Storage, n.ID, t.subtask, d.DeltaBase()); err != nil {
			return checkpoint.SubtaskState{}, err
		}
	}
	var local *localCopy
	if !tr.Savepoint {
		local = e.recovery.create(tr.ID, checkpoint.StateFileName(n.ID, t.subtask))
	}
	var tee io.Writer
	if local != nil {
		tee = local
	}
	w, err := e.opts.Storage.CreateState(e.ctx, tr.ID, tr.Savepoint, n.ID, t.subtask, tee)
	if err != nil {
		local.done(false)
		return checkpoint.SubtaskState{}, err
	}
	if err := s.Write(w); err != nil {
		w.Abort()
		local.done(false)
		return checkpoint.SubtaskState{}, fmt.Errorf("writing snapshot: %w", err)
	}
	st, err := w.Commit()
	local.done(err == nil)
	if err != nil {
		return st, err
	}
	if chain != nil {
		st.Delta, st.Chain = true, chain
	}
	if !tr.Savepoint {
		e.written.add(n.ID, t.subtask, tr.ID, st)
	}
	return st, nil
}

// commit writes the checkpoint's metadata, last.
func (e *execution) commit(p *Pending) (string, error) {
	md := &checkpoint.Metadata{
		Version:        1,
		JobName:        e.g.JobName,
		CheckpointID:   p.ID,
		Savepoint:      p.Savepoint,
		TimestampMs:    time.Now().UnixMilli(),
		MaxParallelism: e.g.MaxParallelism,
	}
	byNode := map[string]*checkpoint.NodeState{}
	var order []string
	for _, payload := range p.Acks {
		for _, s := range payload.([]nodeSubtaskState) {
			ns := byNode[s.node]
			if ns == nil {
				ns = &checkpoint.NodeState{NodeID: s.node, Parallelism: s.par}
				byNode[s.node] = ns
				order = append(order, s.node)
			}
			ns.Subtasks = append(ns.Subtasks, s.state)
		}
	}
	sort.Strings(order)
	for _, id := range order {
		ns := byNode[id]
		sort.Slice(ns.Subtasks, func(i, j int) bool { return ns.Subtasks[i].Subtask < ns.Subtasks[j].Subtask })
		md.Nodes = append(md.Nodes, *ns)
	}
	ctx, cancel := context.WithTimeout(e.ctx, e.storageTimeout())
	defer cancel()
	return e.opts.Storage.Commit(ctx, md)
}
