package dispatcher

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
)

// GET /v1/jobs/{id}/progress: the job's master's operations (its
// savepoints and restores, GET /v1/progress of the master) and the
// dispatcher's own rescales and upgrades, each in phases:
//
//	rescale: savepoint (the old run stops with a savepoint) → restore (the
//	         new run's master restores it at the new parallelism)
//	upgrade: standby (the new version's master and TaskManagers start) →
//	         savepoint (the old version stops with one) → restore (the new
//	         version restores it)
//
// A dispatcher operation's bytes, files and time left are its current
// phase's (the savepoint's, then the restore's); the phase names which. What the
// dispatcher knows of them it reads from the job record when asked, so a
// rescale or upgrade is listed from the first request that sees it under
// way until it ends (kept a while after, as the masters keep theirs).

// ProgressReply is GET /v1/jobs/{id}/progress's answer, newest first.
type ProgressReply struct {
	Operations []runtime.ProgressOperation `json:"operations"`
}

// Phases of the dispatcher's operations.
const (
	PhaseStandby   = "standby"
	PhaseSavepoint = "savepoint"
	PhaseRestore   = "restore"
)

// progressMemo is what the dispatcher remembers of a job's rescales and
// upgrades between requests, by job.
var progressMemo sync.Map // *job → *jobProgress

type jobProgress struct {
	watch sync.Once
	mu    sync.Mutex
	ops   []*dispatcherOp // oldest first
}

type dispatcherOp struct {
	view runtime.ProgressOperation
	run  int // the run it leads to
}

// progressTimeout bounds each call to a master for its progress.
const progressTimeout = 5 * time.Second

func (d *Dispatcher) getProgress(w http.ResponseWriter, r *http.Request) {
	j := d.lookup(w, r)
	if j == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), progressTimeout)
	defer cancel()
	rec, m := j.recordCopy()
	var master []runtime.ProgressOperation
	if m != nil {
		var rep ProgressReply
		// A master that is gone or older than /v1/progress has nothing
		// to add: its operations are left out, not an error.
		if _, err := j.callMaster(ctx, "GET", "/v1/progress", &rep); err == nil {
			master = rep.Operations
		}
	}
	var next []runtime.ProgressOperation // an upgrade's new version, standing by
	if u := rec.Upgrade; u != nil && rec.Run < u.Run {
		if info, err := Leader(ctx, d.store.HADir(rec.ID, u.Run)); err == nil && info != nil {
			var rep ProgressReply
			if _, err := callMaster(ctx, d.client, info.HTTP, "GET", "/v1/progress", &rep); err == nil {
				next = rep.Operations
			}
		}
	}
	v, _ := progressMemo.LoadOrStore(j, &jobProgress{})
	jp := v.(*jobProgress)
	jp.watch.Do(func() { d.watchRecord(j, jp) })
	ops := jp.observe(rec, j.liveState(), master, next, time.Now())
	ops = append(ops, master...)
	ops = append(ops, next...)
	slices.SortStableFunc(ops, func(a, b runtime.ProgressOperation) int { return b.StartedAt.Compare(a.StartedAt) })
	writeJSON(w, http.StatusOK, ProgressReply{Operations: ops})
}

// watchRecord follows the job's record from the first progress request
// on, so that a rescale or upgrade is listed even when no request came
// while its record showed it (a savepoint of a second): a client asks
// once before it starts one, and later requests find it.
func (d *Dispatcher) watchRecord(j *job, p *jobProgress) {
	go func() { // ends with the job or the dispatcher
		for {
			j.mu.Lock()
			changed := j.changed // before the record: no change is missed
			j.mu.Unlock()
			rec, _ := j.recordCopy()
			p.mu.Lock()
			p.fromRecord(rec, time.Now())
			p.mu.Unlock()
			if rec.State.Terminal() {
				return
			}
			select {
			case <-changed:
			case <-d.ctx.Done():
				return
			}
		}
	}()
}

// recordCopy is the job's record with its own copies of Rescale and
// Upgrade (an update's function changes those in place: it runs under
// j.wmu, not j.mu), and its master.
func (j *job) recordCopy() (Record, Master) {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	rec := j.rec
	if rec.Rescale != nil {
		rs := *rec.Rescale
		rec.Rescale = &rs
	}
	if rec.Upgrade != nil {
		u := *rec.Upgrade
		rec.Upgrade = &u
	}
	return rec, j.master
}

func (j *job) liveState() State {
	s, _, _ := j.state()
	return s
}

// observe updates the job's rescale and upgrade from its record and the
// masters' operations (master: the job's current master; next: an
// upgrade's new version), and lists them.
func (p *jobProgress) observe(rec Record, live State, master, next []runtime.ProgressOperation, now time.Time) []runtime.ProgressOperation {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fromRecord(rec, now)
	if rs := rec.Rescale; rs != nil {
		o := p.find(runtime.ProgressRescale, rec.Run+1, now, now)
		if rs.Savepoint == "" {
			o.phase(PhaseSavepoint, newest(master, runtime.ProgressSavepoint, o.view.StartedAt))
		} else {
			o.phase(PhaseRestore, nil)
		}
	}
	if u := rec.Upgrade; u != nil {
		o := p.find(runtime.ProgressUpgrade, u.Run, u.Requested, now)
		switch {
		case !u.Stopping:
			o.phase(PhaseStandby, nil)
		case u.Savepoint == "" && rec.Run < u.Run:
			o.phase(PhaseSavepoint, newest(master, runtime.ProgressSavepoint, o.view.StartedAt))
		case rec.Run < u.Run:
			o.phase(PhaseRestore, newest(next, runtime.ProgressRestore, o.view.StartedAt))
		default:
			o.phase(PhaseRestore, newest(master, runtime.ProgressRestore, o.view.StartedAt))
		}
	}
	// Those no longer in the record have ended: done once the run they
	// lead to restored (or runs), failed when the job went back.
	for _, o := range p.ops {
		if o.view.State != runtime.ProgressRunning {
			continue
		}
		inRecord := (o.view.Kind == runtime.ProgressRescale && rec.Rescale != nil) ||
			(o.view.Kind == runtime.ProgressUpgrade && rec.Upgrade != nil && rec.Upgrade.Run == o.run)
		switch {
		case inRecord && !rec.State.Terminal():
		case rec.Run < o.run || rec.State.Terminal() && rec.State != Finished ||
			o.view.Kind == runtime.ProgressUpgrade && rec.SpecRun != o.run: // rolled back
			msg := "the job went back to its previous run"
			if o.view.Kind == runtime.ProgressUpgrade && rec.Run > o.run {
				msg = "the upgrade was rolled back: " + rec.Reason
			}
			if rec.State.Terminal() {
				msg = "the job ended: " + string(rec.State)
			}
			o.end(runtime.ProgressFailed, msg)
		default:
			rs := newest(master, runtime.ProgressRestore, o.view.StartedAt)
			o.phase(PhaseRestore, rs)
			switch {
			case rs != nil && rs.State == runtime.ProgressFailed:
				o.end(runtime.ProgressFailed, rs.Error)
			case rs != nil && rs.State == runtime.ProgressDone, rs == nil && live == Running:
				o.end(runtime.ProgressDone, "")
			}
		}
	}
	if len(p.ops) > 10 {
		p.ops = slices.Delete(p.ops, 0, len(p.ops)-10)
	}
	out := make([]runtime.ProgressOperation, 0, len(p.ops))
	for _, o := range p.ops {
		v := o.view
		v.Subtasks = slices.Clone(v.Subtasks)
		out = append(out, v)
	}
	return out
}

// fromRecord begins the operations the record shows under way, and
// moves them to the phase it says (numbers come from the masters, in
// observe).
func (p *jobProgress) fromRecord(rec Record, now time.Time) {
	if rs := rec.Rescale; rs != nil {
		o := p.find(runtime.ProgressRescale, rec.Run+1, now, now)
		if rs.Savepoint != "" {
			o.phase(PhaseRestore, nil)
		} else if o.view.Phase == "" {
			o.phase(PhaseSavepoint, nil)
		}
	}
	if u := rec.Upgrade; u != nil {
		o := p.find(runtime.ProgressUpgrade, u.Run, u.Requested, now)
		switch {
		case !u.Stopping:
			o.phase(PhaseStandby, nil)
		case u.Savepoint == "" && rec.Run < u.Run:
			o.phase(PhaseSavepoint, nil)
		default:
			o.phase(PhaseRestore, nil)
		}
	}
}

// find returns the running operation of kind leading to run, begun now
// when there is none.
func (p *jobProgress) find(kind string, run int, started, now time.Time) *dispatcherOp {
	for _, o := range p.ops {
		if o.view.Kind == kind && o.run == run {
			return o
		}
	}
	if started.IsZero() || started.After(now) {
		started = now
	}
	o := &dispatcherOp{run: run, view: runtime.ProgressOperation{ID: kind + "-" + strconv.Itoa(run), Kind: kind,
		State: runtime.ProgressRunning, StartedAt: started.UTC(), EtaMs: -1, Subtasks: []runtime.ProgressSubtaskRow{}}}
	p.ops = append(p.ops, o)
	return o
}

// phase moves o to phase, with the numbers of the master's operation
// that does it (nil: not seen yet; a new phase starts at zero).
func (o *dispatcherOp) phase(phase string, m *runtime.ProgressOperation) {
	if o.view.State != runtime.ProgressRunning {
		return
	}
	if o.view.Phase != phase {
		o.view.Phase, o.view.EtaMs = phase, -1
		o.view.BytesDone, o.view.BytesTotal, o.view.FilesDone, o.view.FilesTotal = 0, 0, 0, 0
		o.view.Subtasks = []runtime.ProgressSubtaskRow{}
	}
	if m != nil {
		o.view.EtaMs = m.EtaMs // the phase's own, at its rate
		o.view.BytesDone, o.view.BytesTotal, o.view.FilesDone, o.view.FilesTotal = m.BytesDone, m.BytesTotal, m.FilesDone, m.FilesTotal
		o.view.Subtasks = slices.Clone(m.Subtasks)
	}
}

func (o *dispatcherOp) end(state, msg string) {
	o.view.State, o.view.Error, o.view.EtaMs = state, msg, 0
	if state == runtime.ProgressDone {
		o.view.BytesTotal, o.view.FilesTotal = o.view.BytesDone, o.view.FilesDone
	}
}

// newest is the newest of ops of kind that started no earlier than a
// second before since (another machine's clock), or nil.
func newest(ops []runtime.ProgressOperation, kind string, since time.Time) *runtime.ProgressOperation {
	for i := range ops { // newest first
		if ops[i].Kind == kind && !ops[i].StartedAt.Before(since.Add(-time.Second)) {
			return &ops[i]
		}
	}
	return nil
}
