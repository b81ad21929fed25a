package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/sluice-stream/sluice/engine/spec"
)

// job is one job and the goroutine that supervises its master.
type job struct {
	d *Dispatcher
	// wmu orders the record's writes (update, tryUpdate).
	wmu sync.Mutex

	mu      sync.Mutex
	rec     Record // as stored (or about to be)
	live    State  // what the API shows; rec.State plus what polling sees
	master  Master // the running master, nil between masters
	adopted bool   // master was found, not launched, by this dispatcher
	// ops counts requests in flight that may end the master on purpose
	// (cancel with savepoint, rescale): the supervisor waits for them to
	// record their intent before it judges the master's end.
	ops int
	// wake wakes the supervisor from a backoff (a cancel).
	wake chan struct{}
	// changed is closed and replaced on every change of state or master.
	changed chan struct{}
	// restarts is the job's restart count its master reports.
	restarts int
	addr     masterAddr
	// standby is the next run's master while an upgrade brings it up
	// (upgrade.go); upgrading: an upgrade request is being served.
	standby   Master
	upgrading bool
}

func (j *job) snapshot() Record {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.rec
}

func (j *job) state() (State, Record, Master) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.live, j.rec, j.master
}

// notify: callers hold j.mu.
func (j *job) notify() {
	close(j.changed)
	j.changed = make(chan struct{})
}

// update changes the record and stores it; live follows a record state
// change. The record in memory changes once the write ended, so what the
// API shows (a CANCELED answer) is stored first. A store failure is
// logged: the change is kept in memory and written with the next one.
// The write outlives ctx's cancellation (a dispatcher stopping still
// records what just happened).
func (j *job) update(ctx context.Context, f func(r *Record)) error {
	return j.write(ctx, f, true)
}

// tryUpdate is update for a request: the change is kept only once it is
// stored, so a store that is down accepts nothing (the API answers 503).
func (j *job) tryUpdate(ctx context.Context, f func(r *Record)) error {
	return j.write(ctx, f, false)
}

func (j *job) write(ctx context.Context, f func(r *Record), keepOnError bool) error {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	j.mu.Lock()
	rec := j.rec
	j.mu.Unlock()
	f(&rec)
	rec.Updated = time.Now().UTC()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err := j.d.store.Save(wctx, &rec)
	if err != nil {
		j.d.log.Warn("storing the job's record", "job", rec.ID, "err", err)
		if !keepOnError {
			return err
		}
	}
	j.mu.Lock()
	if rec.State != j.rec.State {
		j.live = rec.State
	}
	j.rec = rec
	j.notify()
	j.mu.Unlock()
	return err
}

func (j *job) setLive(s State) {
	j.mu.Lock()
	if j.rec.State.Terminal() {
		j.mu.Unlock()
		return
	}
	changed := j.live != s
	j.live = s
	if changed {
		j.notify()
	}
	j.mu.Unlock()
	if changed {
		// Best effort: a record that says RUNNING tells an operator
		// reading the store where the job was. Never over an end.
		_ = j.update(context.Background(), func(r *Record) {
			if !r.State.Terminal() {
				r.State = s
			}
		})
	}
}

// supervise runs the job's master until the job ends or the dispatcher
// stops: it launches a master when there is none, waits for its end and
// decides — cancelled, finished, rescaled (start the next run), or dead
// (start it again with backoff, or FAILED after too many failures).
func (j *job) supervise(ctx context.Context) {
	d := j.d
	if e, ok := d.cfg.Launcher.(JobEnder); ok {
		defer func() {
			if rec := j.snapshot(); rec.State.Terminal() {
				e.JobEnded(context.WithoutCancel(ctx), rec.ID)
			}
		}()
	}
	failures := 0
	j.resumeUpgrade(ctx)
	for ctx.Err() == nil {
		_, rec, m := j.state()
		if rec.State.Terminal() {
			return
		}
		if rec.CancelRequested && m == nil {
			_ = j.update(ctx, func(r *Record) { r.State = Canceled })
			d.log.Info("job cancelled", "job", rec.ID)
			return
		}
		if m == nil {
			var err error
			m, err = j.launch(ctx)
			if err != nil {
				failures++
				if !j.failed(ctx, failures, err.Error()) {
					return
				}
				continue
			}
		}
		if j.snapshot().CancelRequested {
			// Cancelled while it was being launched.
			go func() { _ = m.Stop(ctx) }()
		}
		started := time.Now()
		pollCtx, stopPoll := context.WithCancel(ctx)
		polled := make(chan struct{})
		go func() {
			defer close(polled)
			j.poll(pollCtx)
		}()
		exit := m.Wait(ctx)
		stopPoll()
		<-polled // no late RUNNING over what comes next
		if ctx.Err() != nil {
			return // the dispatcher stops; the master runs on
		}
		j.waitOps(ctx)
		j.mu.Lock()
		j.master, j.adopted = nil, false
		rec = j.rec
		j.notify()
		j.mu.Unlock()
		d.log.Info("framework master ended", "job", rec.ID, "run", rec.Run, "master", m.String(), "known", exit.Known, "code", exit.Code)
		switch {
		case rec.CancelRequested:
			_ = j.update(ctx, func(r *Record) { r.State = Canceled })
			d.log.Info("job cancelled", "job", rec.ID)
			return
		case rec.Rescale != nil && rec.Rescale.Savepoint != "":
			sp, p := rec.Rescale.Savepoint, rec.Rescale.Parallelism
			_ = j.update(ctx, func(r *Record) {
				r.Run++
				r.Parallelism, r.Restore, r.Rescale = p, sp, nil
				r.State = Starting
			})
			d.log.Info("job rescaled: starting its next run from the savepoint", "job", rec.ID, "run", rec.Run+1, "parallelism", p, "savepoint", sp)
			failures = 0
			continue
		case rec.Rescale != nil:
			_ = j.update(ctx, func(r *Record) { r.Rescale = nil })
		case rec.Upgrade != nil && rec.Upgrade.Savepoint != "" && rec.Run < rec.Upgrade.Run:
			// The old version stopped with the upgrade's savepoint: the
			// new version's master (standing by) is the job's now.
			j.switchToUpgrade(ctx)
			failures = 0
			continue
		case rec.Upgrade != nil && rec.Upgrade.Stopping && rec.Upgrade.Savepoint == "" && rec.Run < rec.Upgrade.Run && !j.inUpgrade():
			// The old version ended under an upgrade a dispatcher restart
			// rolled back: it may have been stopping with a savepoint the
			// upgrade never recorded, so its end is no finish. Its run
			// starts again from its latest checkpoint.
			_ = j.update(ctx, func(r *Record) { r.Upgrade = nil })
		case rec.Upgrade != nil && rec.Run == rec.Upgrade.Run && !(exit.Known && exit.Code == 0):
			// The new version ended before the upgrade was done (it could
			// not restore the savepoint?): back to the old version.
			j.rollBackUpgrade(ctx, exit)
			failures = 0
			continue
		case exit.Known && exit.Code == 0:
			_ = j.update(ctx, func(r *Record) { r.State = Finished })
			d.log.Info("job finished", "job", rec.ID)
			return
		case exit.Known && exit.Code == 130:
			// Cancelled through the master's own API or a signal.
			_ = j.update(ctx, func(r *Record) { r.State = Canceled; r.Reason = "cancelled at its master" })
			return
		case exit.Known && exit.Code == 2:
			_ = j.update(ctx, func(r *Record) { r.State = Failed; r.Reason = exit.Reason })
			d.log.Error("job failed: its master refused its configuration", "job", rec.ID, "reason", exit.Reason)
			return
		}
		if time.Since(started) >= d.cfg.StableAfter {
			failures = 0
		}
		failures++
		reason := exit.Reason
		if reason == "" {
			reason = "master exited with code " + strconv.Itoa(exit.Code)
		}
		if !j.failed(ctx, failures, reason) {
			return
		}
		d.metrics.masterRestarts.Inc()
		_ = j.update(ctx, func(r *Record) { r.MasterRestarts++ })
	}
}

// failed handles the failures-th failure in a row of the job's master:
// FAILED past the limit (false), else FAILING and a backoff (true: start
// it again).
func (j *job) failed(ctx context.Context, failures int, reason string) bool {
	d := j.d
	id := j.snapshot().ID
	if failures >= d.cfg.MaxFailures {
		_ = j.update(ctx, func(r *Record) {
			r.State = Failed
			r.Reason = fmt.Sprintf("the master failed %d times in a row; last: %s", failures, reason)
		})
		d.log.Error("job failed", "job", id, "failures", failures, "reason", reason)
		return false
	}
	wait := d.cfg.Backoff << (failures - 1)
	if wait > d.cfg.MaxBackoff || wait <= 0 {
		wait = d.cfg.MaxBackoff
	}
	_ = j.update(ctx, func(r *Record) { r.State = Failing; r.Reason = reason })
	d.log.Warn("framework master failed: starting it again", "job", id, "in", wait, "failures", failures, "reason", reason)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-j.wake:
	case <-ctx.Done():
		return false
	}
	return true
}

// launch starts a master for the job's current run.
func (j *job) launch(ctx context.Context) (Master, error) {
	d := j.d
	rec := j.snapshot()
	specBytes, err := d.specOf(ctx, &rec)
	if err != nil {
		return nil, err
	}
	ms, err := d.runSpec(ctx, &rec, specBytes)
	if err != nil {
		return nil, err
	}
	m, err := d.cfg.Launcher.Launch(ctx, ms)
	if err != nil {
		return nil, err
	}
	d.metrics.masterLaunches.Inc()
	j.mu.Lock()
	j.master, j.adopted = m, false
	j.mu.Unlock()
	_ = j.update(ctx, func(r *Record) {
		r.MasterLaunches++
		r.State = Starting
		if r.Upgrade != nil && r.Run == r.Upgrade.Run && r.Upgrade.Savepoint != "" {
			// The new version's standby master was gone: this one
			// restores the savepoint by itself; the upgrade is done.
			r.Upgrade = nil
		}
	})
	return m, nil
}

// runSpec is what the launcher needs for rec's current run with its spec.
func (d *Dispatcher) runSpec(ctx context.Context, rec *Record, specBytes []byte) (MasterSpec, error) {
	ms := d.masterSpec(rec, specBytes)
	parsed, err := spec.Parse(specBytes, nil)
	if err != nil {
		return ms, fmt.Errorf("the stored spec: %w", err)
	}
	// Each run keeps its checkpoints under the store, unless the spec
	// names its own storage.
	if parsed.Checkpoint.Storage == spec.DefaultStorage(parsed.Name) {
		ms.Sets = append(ms.Sets, "checkpoint.storage="+d.store.Checkpoints(rec.ID, rec.Run))
	}
	if rec.Parallelism > 0 {
		ms.Sets = append(ms.Sets, "parallelism="+strconv.Itoa(rec.Parallelism))
	}
	if rec.Restore != "" {
		// Only until the run has a checkpoint of its own: a master
		// started again resumes from that (the HA directory's latest).
		cp, err := LatestCheckpoint(ctx, ms.HADir)
		if err != nil {
			return ms, err
		}
		if cp == nil {
			ms.Restore = rec.Restore
		}
	}
	return ms, nil
}

// waitOps waits for requests that may have ended the master on purpose
// to record what they did.
func (j *job) waitOps(ctx context.Context) {
	for {
		j.mu.Lock()
		n, ch := j.ops, j.changed
		j.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// beginOp and endOp bracket a request that may end the master.
func (j *job) beginOp() {
	j.mu.Lock()
	j.ops++
	j.mu.Unlock()
}

func (j *job) endOp() {
	j.mu.Lock()
	j.ops--
	j.notify()
	j.mu.Unlock()
}

// poll reads the master's state while it runs: RUNNING once its job runs,
// FAILING while it restarts.
func (j *job) poll(ctx context.Context) {
	t := time.NewTicker(j.d.cfg.PollInterval)
	defer t.Stop()
	for {
		j.pollOnce(ctx)
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func (j *job) pollOnce(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var st masterStatus
	if _, err := j.callMaster(cctx, "GET", "/v1/status", &st); err != nil {
		return
	}
	j.mu.Lock()
	j.restarts = st.Restarts
	j.mu.Unlock()
	switch st.State {
	case "running":
		j.setLive(Running)
	case "restarting":
		j.setLive(Failing)
	}
}

// masterAddr is the REST address of the job's running master, "" when
// it has none (yet): from the HA directory, or the last one that answered
// while the master is the same (polling many jobs reads no files).
func (j *job) masterAddr(ctx context.Context) (string, Master) {
	j.mu.Lock()
	rec, m, cached := j.rec, j.master, j.addr
	j.mu.Unlock()
	if m == nil {
		return "", nil
	}
	if cached.master == m && cached.http != "" {
		return cached.http, m
	}
	info, err := Leader(ctx, j.d.store.HADir(rec.ID, rec.Run))
	if err != nil || info == nil {
		return "", nil
	}
	return info.HTTP, m
}

func (j *job) callMaster(ctx context.Context, method, path string, out any) ([]byte, error) {
	addr, m := j.masterAddr(ctx)
	b, err := callMaster(ctx, j.d.client, addr, method, path, out)
	j.mu.Lock()
	switch {
	case errors.Is(err, errNoMaster):
		j.addr = masterAddr{} // read the HA directory again next time
	case m != nil && m == j.master:
		j.addr = masterAddr{master: m, http: addr}
	}
	j.mu.Unlock()
	return b, err
}

// masterAddr caches the REST address of one master.
type masterAddr struct {
	master Master
	http   string
}

// waitEnd waits up to d for the job to reach a terminal state or a state
// that ok accepts.
func (j *job) waitFor(ctx context.Context, d time.Duration, ok func(State, Record, Master) bool) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		j.mu.Lock()
		s, rec, m, ch := j.live, j.rec, j.master, j.changed
		j.mu.Unlock()
		if ok(s, rec, m) {
			return true
		}
		select {
		case <-ch:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

var errConflict = errors.New("conflict")
