package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
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
	// Restart is the restart strategy: whether and when a failed run is
	// restarted from the latest checkpoint. Nil: FixedDelay with
	// RestartAttempts and RestartDelay.
	Restart         Restart
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
	// Fence, when set, is asked before each checkpoint's metadata is
	// written; an error fails that checkpoint's commit (a master that lost
	// its leadership must write no metadata for the job).
	Fence func(ctx context.Context) error
	// Epoch, when set, is the master's fencing epoch, recorded in each
	// checkpoint's metadata (checkpoint.Lineage tells a superseded
	// master's late commit by it).
	Epoch int64
	// Completed, when set, is told each completed checkpoint (not
	// savepoint) once its metadata is durable.
	Completed func(id int64, path string)
	// Metrics, when set, are the run's counters (Result.Metrics): a
	// Deployer whose tasks run elsewhere keeps them up to date.
	Metrics map[string]*NodeMetrics
	// OnCheckpoint, when set, is told of every checkpoint and savepoint
	// that completes or fails (stats.go); OnRestart of every restart. Both
	// run on the driver goroutine: they must not block.
	OnCheckpoint func(CheckpointStats)
	OnRestart    func(restarts int, cause error)
	Log          *slog.Logger

	// Progress, when set, tracks savepoints' and restores' progress
	// (progress.go).
	Progress *Progress
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
	return RunOn(ctx, g, opts, nil)
}

// RunOn is Run with the attempts' tasks deployed by dep (nil: in this
// process). Restore, fallback and restart work alike wherever tasks run.
func RunOn(ctx context.Context, g *Graph, opts Options, dep Deployer) (*Result, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Storage == nil {
		return nil, errors.New("no checkpoint storage")
	}
	res := &Result{Metrics: opts.Metrics, started: time.Now()}
	if res.Metrics == nil {
		res.Metrics = make(map[string]*NodeMetrics)
		for _, n := range g.Nodes {
			res.Metrics[n.ID] = &NodeMetrics{}
		}
	}
	if dep == nil {
		dep = localDeployer{g: g, opts: opts, res: res}
	}
	restore := opts.Restore
	restarts := restartStrategy(opts)
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
			var a Attempt
			var firstID int64
			began := time.Now()
			dp := Deployment{Attempt: NewAttemptID(), Restore: md, RestoreDir: dir}
			if md != nil {
				dp.Flags = RestoreFlags{SkippedNewer: skipped, AllowDuplicates: opts.AllowFallbackDuplicates, AcceptLoss: acceptLoss}
			}
			firstID, err = opts.Storage.NextCheckpointID(ctx)
			if err != nil {
				err = fmt.Errorf("reading checkpoint storage: %w", err)
			} else {
				opts.Progress.beginRestore(dp.Attempt, g, md)
				a, err = dep.Deploy(ctx, dp)
				if md != nil {
					opts.Progress.End(RestoreOp(dp.Attempt), err)
				}
			}
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
			if _, here := dep.(localDeployer); here && err == nil && md != nil {
				// (Tasks elsewhere log what they read themselves.)
				opts.Log.Info("state restored", "checkpoint", md.CheckpointID,
					"localBytes", res.Restored.LocalBytes.Load(), "remoteBytes", res.Restored.RemoteBytes.Load())
			}
			if err == nil {
				d := newDriver(ctx, g, opts, a)
				d.restarts, d.lastMD, d.lastDir = restarts, md, dir
				err = d.run(ctx, res, firstID)
			}
		}
		res.Pauses = summarise(res.pauseLog.pauses)
		if err == nil || ctx.Err() != nil || errors.Is(err, ErrJobFailed) {
			// ErrJobFailed: the driver's region restarts used up the
			// restart strategy.
			return res, err
		}
		delay, refused := restarts.Failed(time.Now())
		if refused != nil {
			return res, fmt.Errorf("%w after %d restarts (restart strategy %w): %w", ErrJobFailed, res.Restarts, refused, err)
		}
		res.Restarts++
		if opts.OnRestart != nil {
			opts.OnRestart(res.Restarts, err)
		}
		opts.Log.Warn("job failed; restarting from the latest checkpoint", "attempt", res.Restarts, "delay", delay, "err", err)
		wait := opts // waitRestart waits wait.RestartDelay
		wait.RestartDelay = delay
		if err := waitRestart(ctx, g, wait, res); err != nil {
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

// Deployer starts attempts of a job: it builds and opens the tasks of an
// attempt wherever they run, restored from the checkpoint the driver chose;
// the driver then starts them. Run deploys in this process; a framework
// master deploys on its TaskManagers.
type Deployer interface {
	// Deploy returns the opened attempt, or the first error of an
	// operator's Open as it is (RestoreBeforeError, FallbackRefusedError,
	// a corrupt state file), with nothing left running.
	Deploy(ctx context.Context, d Deployment) (Attempt, error)
}

// Deployment is one attempt to deploy.
type Deployment struct {
	Attempt    string
	Restore    *checkpoint.Metadata // nil: start empty
	RestoreDir string
	Flags      RestoreFlags
}

// localDeployer runs every task in this process.
type localDeployer struct {
	g    *Graph
	opts Options
	res  *Result
}

func (l localDeployer) Deploy(ctx context.Context, d Deployment) (Attempt, error) {
	return NewHost(ctx, HostConfig{
		Graph: l.g, Attempt: d.Attempt, Storage: l.opts.Storage,
		Restore: d.Restore, RestoreDir: d.RestoreDir, RestoreFlags: d.Flags,
		Incremental: l.opts.Incremental, LocalRecovery: l.opts.LocalRecovery, LocalStateDir: l.opts.LocalStateDir,
		RestoreConcurrency: l.opts.RestoreConcurrency, Log: l.opts.Log,
		Metrics: l.res.Metrics, RestoreStats: &l.res.Restored, pauses: &l.res.pauseLog,
		Progress: l.opts.Progress,
	})
}

// driver runs one attempt: the checkpoint coordinator, the checkpoints'
// metadata and housekeeping, and the commands. It runs on Run's goroutine;
// the attempt's tasks run wherever the Deployer put them.
type driver struct {
	g       *Graph
	opts    Options
	a       Attempt
	infos   []TaskInfo
	ctx     context.Context // ends with the attempt
	cancel  context.CancelFunc
	bg      sync.WaitGroup // storage housekeeping in the background
	pruning atomic.Bool    // a Prune is running in the background
	cmds    commands

	// Region failover: when the job's pipelined regions are independent,
	// a failure restarts only the failed ones (restartRegions).
	restarts   RestartStrategy
	regions    [][]int
	regionOf   []int
	attemptOf  []string // the attempt each task runs in now
	finished   map[int]bool
	lastMD     *checkpoint.Metadata // the latest completed checkpoint (or what the attempt restored)
	lastDir    string
	restarting bool
	regionDone chan regionRestarted
	stats      checkpointTracker
}

// regionRestarted ends a region restart.
type regionRestarted struct {
	tasks   []int
	attempt string
	err     error
}

func newDriver(ctx context.Context, g *Graph, opts Options, a Attempt) *driver {
	d := &driver{g: g, opts: opts, a: a, infos: Tasks(g), finished: map[int]bool{}, regionDone: make(chan regionRestarted, 1),
		stats: checkpointTracker{report: opts.OnCheckpoint}}
	d.ctx, d.cancel = context.WithCancel(ctx)
	d.regions = Regions(g)
	d.regionOf = make([]int, len(d.infos))
	d.attemptOf = make([]string, len(d.infos))
	for r, ts := range d.regions {
		for _, t := range ts {
			d.regionOf[t] = r
		}
	}
	for i := range d.attemptOf {
		d.attemptOf[i] = a.ID()
	}
	return d
}

// stale reports whether ev comes from a task's earlier attempt (a region
// that restarted since): it is dropped.
func (d *driver) stale(ev TaskEvent) bool {
	return ev.Task >= 0 && ev.Task < len(d.attemptOf) && ev.Attempt != "" && ev.Attempt != d.attemptOf[ev.Task] &&
		ev.Kind != EventExited
}

// failedRegions is the regions a failure concerns, nil when it concerns
// the whole attempt or region failover does not apply.
func (d *driver) failedRegions(ev TaskEvent) []int {
	if len(d.regions) < 2 || d.restarts == nil {
		return nil
	}
	if _, ok := d.a.(RegionRestarter); !ok {
		return nil
	}
	tasks := ev.Tasks
	if ev.Task >= 0 {
		tasks = []int{ev.Task}
	}
	if len(tasks) == 0 {
		return nil
	}
	seen := map[int]bool{}
	var rs []int
	for _, t := range tasks {
		if t < 0 || t >= len(d.regionOf) {
			return nil
		}
		if r := d.regionOf[t]; !seen[r] {
			seen[r] = true
			rs = append(rs, r)
		}
	}
	if len(rs) == len(d.regions) {
		return nil // every region: a plain restart
	}
	return rs
}

// restartRegions restarts the failed regions alone, from the latest
// completed checkpoint, while the others go on: the checkpoint in flight
// is aborted and none starts until the regions run again.
func (d *driver) restartRegions(now int64, rs []int, cause error, coord *Coordinator, apply func(Actions) error, res *Result) error {
	delay, refused := d.restarts.Failed(time.Now())
	if refused != nil {
		return fmt.Errorf("%w after %d restarts (restart strategy %w): %w", ErrJobFailed, res.Restarts, refused, cause)
	}
	res.Restarts++
	var tasks []int
	for _, r := range rs {
		tasks = append(tasks, d.regions[r]...)
	}
	restarted := 0
	for _, t := range tasks {
		if d.finished[t] {
			delete(d.finished, t)
			restarted++
		}
	}
	coord.SourcesRestarted(restarted)
	if err := apply(coord.Suspend(now, fmt.Errorf("restarting %d of %d regions: %w", len(rs), len(d.regions), cause))); err != nil {
		return err
	}
	from := "the start"
	if d.lastMD != nil {
		from = fmt.Sprintf("checkpoint %d", d.lastMD.CheckpointID)
	}
	d.opts.Log.Warn(fmt.Sprintf("a task failed; restarting its region alone (%d of %d regions, %d tasks) from %s", len(rs), len(d.regions), len(tasks), from),
		"restart", res.Restarts, "delay", delay, "err", cause)
	dp := Deployment{Attempt: NewAttemptID(), Restore: d.lastMD, RestoreDir: d.lastDir, Flags: RestoreFlags{Region: true}}
	// From now on what the regions' old tasks report is stale.
	for _, t := range tasks {
		d.attemptOf[t] = dp.Attempt
	}
	d.restarting = true
	rr := d.a.(RegionRestarter)
	go func() {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-d.ctx.Done():
			d.regionDone <- regionRestarted{err: d.ctx.Err()}
			return
		}
		err := rr.RestartTasks(d.ctx, tasks, dp)
		d.regionDone <- regionRestarted{tasks: tasks, attempt: dp.Attempt, err: err}
	}()
	return nil
}

// stop ends the attempt: its tasks, then the housekeeping.
func (d *driver) stop() {
	d.a.Stop()
	d.cancel()
	d.bg.Wait()
}

func (d *driver) run(ctx context.Context, res *Result, firstID int64) error {
	defer d.endCommands()
	e := d.a
	sources := 0
	for _, t := range d.infos {
		if t.Source {
			sources++
		}
	}
	now := time.Now().UnixMilli()
	coord := NewCoordinator(CoordinatorConfig{
		Interval:          d.opts.Interval.Milliseconds(),
		Timeout:           d.opts.Timeout.Milliseconds(),
		MinPause:          d.opts.MinPause.Milliseconds(),
		Tasks:             len(d.infos),
		SourceTasks:       sources,
		TolerableFailures: d.opts.TolerableFailures,
		FirstID:           firstID,
	}, now)
	e.Start()

	tick := d.opts.Interval / 4
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
			d.background(func(ctx context.Context) {
				d.opts.Storage.Abort(ctx, id, false)
				d.opts.Storage.Abort(ctx, id, true)
			})
		}
		for _, id := range a.Abort {
			if err := e.Abort(id); err != nil {
				return err
			}
		}
		if a.Failed != nil {
			res.FailedCheckpoints++
			if a.FailedSavepoint {
				d.opts.Progress.End(SavepointOp(d.stats.id), a.Failed)
			}
			d.stats.failed(a.Failed)
			d.opts.Log.Warn("checkpoint failed", "err", a.Failed)
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
			md, path, err := d.commit(p)
			if err != nil {
				return apply(coord.CommitFailed(now, p.ID, err))
			}
			d.lastMD, d.lastDir = md, path
			d.stats.completed(p, path)
			d.opts.Progress.committed(p)
			if p.Savepoint {
				d.opts.Log.Info("savepoint written", "id", p.ID, "path", path)
				for _, w := range waiting {
					w.Reply <- SavepointResult{Path: path}
				}
				waiting = nil
			} else {
				res.Checkpoints++
				if d.opts.Completed != nil {
					d.opts.Completed(p.ID, path)
				}
				d.opts.Log.Debug("checkpoint complete", "id", p.ID, "path", path, "builds_on", len(chainIDs(p)))
				if d.pruning.CompareAndSwap(false, true) {
					d.background(func(ctx context.Context) {
						defer d.pruning.Store(false)
						if err := d.opts.Storage.Prune(ctx, d.opts.Retained); err != nil {
							d.opts.Log.Warn("pruning old checkpoints", "err", err)
						}
					})
				}
			}
			if err := apply(coord.Committed(now, p.ID)); err != nil {
				return err
			}
		}
		if a.Notify != 0 {
			if err := e.Notify(a.Notify); err != nil {
				return err
			}
		}
		if a.Trigger != nil {
			d.stats.trigger(*a.Trigger)
			if a.Trigger.Savepoint {
				d.opts.Progress.beginSavepoint(a.Trigger.ID, d.g, d.lastMD)
			}
			if err := e.Trigger(*a.Trigger); err != nil {
				return err
			}
		}
		finished = finished || a.Finished
		stopped = stopped || a.Stopped
		return nil
	}

	for !finished && !stopped {
		var err error
		select {
		case ev := <-e.Events():
			now := time.Now().UnixMilli()
			if d.stale(ev) {
				continue
			}
			switch ev.Kind {
			case EventAck:
				err = apply(coord.Ack(now, ev.ID, ev.Task, ack{states: ev.States, alignment: ev.Alignment}))
			case EventDecline:
				err = apply(coord.Decline(now, ev.ID, ev.Err))
			case EventSourceFinished:
				d.finished[ev.Task] = true
				err = apply(coord.SourceFinished(now))
			case EventFailed:
				err = ev.Err
				if rs := d.failedRegions(ev); rs != nil && !d.restarting {
					err = d.restartRegions(now, rs, ev.Err, coord, apply, res)
				}
			case EventExited:
				err = errors.New("every task exited before the job finished")
			}
		case r := <-d.regionDone:
			d.restarting = false
			if err = r.err; err == nil {
				d.opts.Log.Info("region restarted", "tasks", len(r.tasks), "attempt", r.attempt)
				err = apply(coord.Resume(time.Now().UnixMilli()))
			} else {
				err = fmt.Errorf("restarting a region: %w", err)
			}
		case <-ticker.C:
			err = apply(coord.Tick(time.Now().UnixMilli()))
		case req := <-d.opts.Savepoints:
			waiting = append(waiting, req)
			err = apply(coord.RequestSavepoint(time.Now().UnixMilli(), req.Stop))
		case c := <-d.opts.Commands:
			d.command(c, res)
		case <-ctx.Done():
			d.stop()
			return ctx.Err()
		}
		if err != nil {
			d.stop()
			if d.stats.savepoint {
				d.opts.Progress.End(SavepointOp(d.stats.id), err)
			}
			for _, w := range waiting {
				w.Reply <- SavepointResult{Err: err}
			}
			return err
		}
	}
	if stopped {
		res.Stopped = true
		d.stop()
		return nil
	}
	// Finished: tasks exit once told the final checkpoint completed.
	for {
		select {
		case ev := <-e.Events():
			switch ev.Kind {
			case EventFailed:
				d.stop()
				return ev.Err
			case EventExited:
				// Done: let the housekeeping (pruning) finish.
				d.a.Stop()
				d.bg.Wait()
				d.cancel()
				return nil
			}
		case <-ctx.Done():
			d.stop()
			return ctx.Err()
		}
	}
}

// storageTimeout bounds one call to checkpoint storage from the driver, so
// that a storage that hangs (rather than failing) cannot stall the
// coordinator: the checkpoint fails and the job goes on.
func (d *driver) storageTimeout() time.Duration {
	if d.opts.Timeout > 0 {
		return d.opts.Timeout
	}
	return time.Minute
}

// background runs storage housekeeping (aborts, pruning) off the driver
// goroutine, bounded by storageTimeout; the run waits for it before ending.
func (d *driver) background(f func(ctx context.Context)) {
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		ctx, cancel := context.WithTimeout(d.ctx, d.storageTimeout())
		defer cancel()
		f(ctx)
	}()
}

// commit writes the checkpoint's metadata, last.
func (d *driver) commit(p *Pending) (*checkpoint.Metadata, string, error) {
	md := &checkpoint.Metadata{
		Version:        1,
		JobName:        d.g.JobName,
		CheckpointID:   p.ID,
		Savepoint:      p.Savepoint,
		TimestampMs:    time.Now().UnixMilli(),
		MaxParallelism: d.g.MaxParallelism,
		Epoch:          d.opts.Epoch,
	}
	byNode := map[string]*checkpoint.NodeState{}
	var order []string
	for _, payload := range p.Acks {
		for _, s := range payload.(ack).states {
			ns := byNode[s.Node]
			if ns == nil {
				ns = &checkpoint.NodeState{NodeID: s.Node, Parallelism: s.Parallelism}
				byNode[s.Node] = ns
				order = append(order, s.Node)
			}
			ns.Subtasks = append(ns.Subtasks, s.State)
		}
	}
	sort.Strings(order)
	for _, id := range order {
		ns := byNode[id]
		sort.Slice(ns.Subtasks, func(i, j int) bool { return ns.Subtasks[i].Subtask < ns.Subtasks[j].Subtask })
		md.Nodes = append(md.Nodes, *ns)
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.storageTimeout())
	defer cancel()
	if d.opts.Fence != nil {
		if err := d.opts.Fence(ctx); err != nil {
			return nil, "", err
		}
	}
	path, err := d.opts.Storage.Commit(ctx, md)
	return md, path, err
}
