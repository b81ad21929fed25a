package dispatcher

// An asynchronous upgrade (Kuaishou's, as their Flink-on-YARN platform
// does it): a job's new version gets its TaskManagers started and
// registered first, while the old version still runs and writes; only
// then does the old version stop with a savepoint, and the new one —
// already holding its TaskManagers — deploys from it at once. Output stops
// for a savepoint and a deployment, not for a resource negotiation and
// TaskManager starts.
//
// The steps and what the job record says at each (a dispatcher that
// crashes finishes or rolls back from there, see resumeUpgrade):
//
//  1. The new spec is stored as run N+1's spec; the record gets Upgrade
//     {Run: N+1}.
//  2. Run N+1's master is launched in standby and waited for until its
//     TaskManagers are registered. Failure or timeout: it is stopped,
//     Upgrade cleared; run N never noticed.
//  3. Upgrade.Stopping is recorded, then run N stops with a savepoint (as
//     rescale does); Upgrade.Savepoint is recorded. Failure: run N+1's
//     master is stopped, Upgrade cleared.
//  4. Run N+1's master is told to start from the savepoint
//     (POST /v1/start); the supervisor makes it the job's master once run
//     N's has ended (switchToUpgrade). Once it runs, Upgrade is cleared.
//     Should it end before that, the job goes back to its old spec from
//     the same savepoint (rollBackUpgrade).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/sluice-stream/sluice/engine/fs"
	"github.com/sluice-stream/sluice/engine/spec"
)

// Upgrade is an asynchronous upgrade in progress, as the job record keeps
// it.
type Upgrade struct {
	// Run is the new version's run; its spec is jobs/<id>/runs/<Run>/spec.
	Run int `json:"run"`
	// Stopping: the old version was (or is about to be) asked to stop
	// with a savepoint; recorded before the request.
	Stopping bool `json:"stopping,omitempty"`
	// Savepoint is set once the old version stopped with it.
	Savepoint string `json:"savepoint,omitempty"`
	// Started: the new version's tasks ran (the upgrade is done once the
	// supervisor has made its master the job's).
	Started   bool      `json:"started,omitempty"`
	Requested time.Time `json:"requested"`
	// PrevSpecRun and PrevParallelism are the old version's (Record's
	// SpecRun and Parallelism), for a roll back.
	PrevSpecRun     int `json:"prevSpecRun,omitempty"`
	PrevParallelism int `json:"prevParallelism,omitempty"`
}

// UpgradeReply answers POST /v1/jobs/{id}/upgrade.
type UpgradeReply struct {
	ID    string `json:"id"`
	State State  `json:"state"`
	// Run is the new version's run, PreviousRun the old one's.
	Run         int    `json:"run"`
	PreviousRun int    `json:"previousRun"`
	Savepoint   string `json:"savepoint"`
	// DowntimeMs: from the old version's stop-with-savepoint request (its
	// sources stop) to the new version's tasks running.
	DowntimeMs int64 `json:"downtimeMs"`
	// StandbyMs: how long the new version's master took to have its
	// TaskManagers registered (while the old one ran on).
	StandbyMs    int64 `json:"standbyMs"`
	TaskManagers int   `json:"taskManagers"`
}

// defaultUpgradeWait bounds the wait for the new version's TaskManagers
// (?timeout= overrides it).
const defaultUpgradeWait = 3 * time.Minute

// rollBackWait bounds how long, after a dispatcher restart, an upgrade
// being rolled back waits for a new version's master still being launched
// (to stop it) and for an adopted old version that may have been stopping
// (a savepoint takes less), before the record forgets it. A variable for
// the tests.
var rollBackWait = time.Minute

// background runs f as part of the dispatcher's supervision: Close waits
// for it. (Called from supervisors, which hold the count above zero.)
func (d *Dispatcher) background(f func()) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f()
	}()
}

// lateStandbyWait bounds how long a roll back after a dispatcher restart
// looks for a new version's master whose launch was under way (it would
// have published itself by then; one that did later gives up by itself
// after its --standby-timeout).
var lateStandbyWait = 15 * time.Second

// inUpgrade says whether an upgrade request is being served.
func (j *job) inUpgrade() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.upgrading
}

// runSpecPath is where an upgrade keeps the spec of the run it started.
func (s *Store) runSpecPath(id string, run int) string {
	return fs.Join(s.jobDir(id), "runs", strconv.Itoa(run), "spec")
}

// SaveRunSpec stores the spec run starts with (an upgrade's): durable when
// it returns. The job's submitted spec stays as it is, for the runs before.
func (s *Store) SaveRunSpec(ctx context.Context, id string, run int, spec []byte) error {
	if err := s.fs.WriteFile(ctx, s.runSpecPath(id, run), spec); err != nil {
		return storeErr("writing the spec of run "+strconv.Itoa(run)+" of job "+id, err)
	}
	return nil
}

// RunSpec is the spec an upgrade stored for run.
func (s *Store) RunSpec(ctx context.Context, id string, run int) ([]byte, error) {
	b, err := s.fs.ReadFile(ctx, s.runSpecPath(id, run))
	if err != nil {
		return nil, storeErr("reading the spec of run "+strconv.Itoa(run)+" of job "+id, err)
	}
	return b, nil
}

// specOf is the spec of rec's current run.
func (d *Dispatcher) specOf(ctx context.Context, rec *Record) ([]byte, error) {
	if rec.SpecRun > 0 {
		return d.store.RunSpec(ctx, rec.ID, rec.SpecRun)
	}
	return d.store.Spec(ctx, rec.ID)
}

// upgradeError is a failed upgrade and the status it answers.
type upgradeError struct {
	code int
	err  error
}

func (e *upgradeError) Error() string { return e.err.Error() }
func (e *upgradeError) Unwrap() error { return e.err }

func upgradeErr(code int, format string, args ...any) error {
	return &upgradeError{code: code, err: fmt.Errorf(format, args...)}
}

func (d *Dispatcher) postUpgrade(w http.ResponseWriter, r *http.Request) {
	j := d.lookup(w, r)
	if j == nil {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	wait := defaultUpgradeWait
	if v := r.URL.Query().Get("timeout"); v != "" {
		t, err := time.ParseDuration(v)
		if err != nil || t <= 0 {
			writeError(w, http.StatusBadRequest, "timeout=%q: want a duration such as 90s or 5m", v)
			return
		}
		wait = t
	}
	specBytes, name, sp, err := decodeSubmit(body, "")
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	if sp != "" {
		writeError(w, http.StatusBadRequest, "savepoint: an upgrade starts the new version from the savepoint it takes of the old one; leave the field out")
		return
	}
	if err := d.restorableBy(r.Context(), j.snapshot(), specBytes); err != nil {
		if errors.Is(err, ErrStore) {
			d.storeError(w, err)
			return
		}
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	j.mu.Lock()
	s, rec, m, busy := j.live, j.rec, j.master, j.upgrading
	ok = s == Running && m != nil && !busy && rec.Rescale == nil && rec.Upgrade == nil && !rec.CancelRequested
	if ok {
		j.upgrading = true
	}
	j.mu.Unlock()
	if !ok {
		what := string(s)
		switch {
		case busy || rec.Upgrade != nil:
			what = "being upgraded"
		case rec.Rescale != nil:
			what = "being rescaled"
		case rec.CancelRequested:
			what = "being cancelled"
		}
		writeError(w, http.StatusConflict, "job %s is %s: only a RUNNING job can be upgraded", rec.ID, what)
		return
	}
	defer func() {
		j.mu.Lock()
		j.upgrading = false
		j.mu.Unlock()
	}()
	// Not the request's context: a client that goes away does not leave
	// the upgrade half done.
	rep, err := j.upgrade(d.ctx, specBytes, name, m, wait)
	if err != nil {
		var ue *upgradeError
		switch {
		case errors.As(err, &ue):
			writeError(w, ue.code, "upgrade: %v", ue.err)
		case errors.Is(err, ErrStore):
			d.storeError(w, err)
		default:
			masterError(w, "upgrade", err)
		}
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// restorableBy checks what would keep the new spec from restoring the old
// version's savepoint, before anything starts: its key groups
// (maxParallelism) cannot change.
func (d *Dispatcher) restorableBy(ctx context.Context, rec Record, specBytes []byte) error {
	oldSpec, err := d.specOf(ctx, &rec)
	if err != nil {
		return err
	}
	was, err := spec.Parse(oldSpec, nil)
	if err != nil {
		return nil // the stored spec is checked where it is used
	}
	now, err := spec.Parse(specBytes, nil)
	if err != nil {
		return fmt.Errorf("invalid job spec: %w", err)
	}
	if now.MaxParallelism != was.MaxParallelism {
		return fmt.Errorf("maxParallelism: %d, the running version's is %d: key groups cannot change across a savepoint, so the new version could not restore the old one's state",
			now.MaxParallelism, was.MaxParallelism)
	}
	return nil
}

// upgrade runs an upgrade of the job, whose master is old, to specBytes.
func (j *job) upgrade(ctx context.Context, specBytes []byte, name string, old Master, wait time.Duration) (UpgradeReply, error) {
	d := j.d
	rec := j.snapshot()
	next := rec.Run + 1
	log := d.log.With("job", rec.ID, "run", next)
	// 1. The new spec, durable before anything starts.
	if err := d.store.SaveRunSpec(ctx, rec.ID, next, specBytes); err != nil {
		return UpgradeReply{}, err
	}
	if err := j.tryUpdate(ctx, func(r *Record) {
		r.Upgrade = &Upgrade{Run: next, Requested: time.Now().UTC(), PrevSpecRun: r.SpecRun, PrevParallelism: r.Parallelism}
	}); err != nil {
		return UpgradeReply{}, err
	}
	log.Info("upgrade: starting the new version's master in standby", "name", name)
	// 2. The new version's master, standing by with its TaskManagers.
	began := time.Now()
	nrec := rec
	nrec.Run, nrec.Parallelism, nrec.Restore = next, 0, ""
	ms, err := d.runSpec(ctx, &nrec, specBytes)
	if err != nil {
		j.abortUpgrade(ctx, nil, err.Error())
		return UpgradeReply{}, upgradeErr(http.StatusInternalServerError, "the new version: %v", err)
	}
	ms.Standby, ms.SpecRun = true, next
	sm, err := d.cfg.Launcher.Launch(ctx, ms)
	if err != nil {
		j.abortUpgrade(ctx, nil, err.Error())
		return UpgradeReply{}, upgradeErr(http.StatusBadGateway, "launching the new version's master: %v; the job runs on unchanged", err)
	}
	d.metrics.masterLaunches.Inc()
	j.mu.Lock()
	j.standby = sm
	j.mu.Unlock()
	_ = j.update(ctx, func(r *Record) { r.MasterLaunches++ })
	addr, st, err := j.awaitStandby(ctx, sm, old, ms.HADir, wait)
	if err != nil {
		j.abortUpgrade(ctx, sm, err.Error())
		return UpgradeReply{}, err
	}
	standbyFor := time.Since(began)
	log.Info("upgrade: the new version stands by with its TaskManagers; stopping the old one with a savepoint",
		"taskmanagers", st.Registered, "took", standbyFor.Round(time.Millisecond))

	// 3. The old version stops with a savepoint: output stops here. The
	// intent is stored first: a dispatcher restart then knows the old
	// master's end may be this stop's (resumeUpgrade).
	if err := j.tryUpdate(ctx, func(r *Record) {
		if r.Upgrade != nil {
			u := *r.Upgrade
			u.Stopping = true
			r.Upgrade = &u
		}
	}); err != nil {
		j.abortUpgrade(ctx, sm, err.Error())
		return UpgradeReply{}, err
	}
	j.beginOp()
	stopped := time.Now()
	var sp struct {
		Path string `json:"path"`
	}
	if _, err := j.callMaster(ctx, "POST", "/v1/savepoint?stop=true", &sp); err != nil {
		j.abortUpgrade(ctx, sm, "stop with savepoint: "+err.Error())
		j.endOp()
		return UpgradeReply{}, fmt.Errorf("stopping the old version with a savepoint (it runs on; the new version was stopped): %w", err)
	}
	_ = j.update(ctx, func(r *Record) {
		if r.Upgrade != nil {
			// A copy: the record in memory is read while this one is stored.
			u := *r.Upgrade
			u.Savepoint = sp.Path
			r.Upgrade = &u
		}
		r.LastSavepoint = sp.Path
	})
	j.endOp()
	log.Info("upgrade: the old version stopped with a savepoint; starting the new one from it", "savepoint", sp.Path)

	// 4. The new version deploys from it on its TaskManagers.
	running, err := startStandby(ctx, d.client, addr, sp.Path)
	if err != nil {
		// It ended (it could not restore?) or does not answer: stopped
		// either way, its end rolls the job back (rollBackUpgrade).
		go func() { _ = sm.Stop(context.WithoutCancel(ctx)) }()
		log.Error("upgrade: the new version did not start from the savepoint", "savepoint", sp.Path, "err", err)
		return UpgradeReply{}, upgradeErr(http.StatusBadGateway,
			"the old version stopped with savepoint %s but the new version did not start from it: %v; the job goes back to its previous version from that savepoint", sp.Path, err)
	}
	downtime := running.Sub(stopped)
	log.Info("upgrade: the new version runs", "savepoint", sp.Path, "downtimeMs", downtime.Milliseconds(), "standbyMs", standbyFor.Milliseconds())
	_ = j.update(ctx, func(r *Record) {
		switch {
		case r.Upgrade == nil:
		case r.Run == r.Upgrade.Run:
			r.Upgrade = nil // the supervisor has switched: done
		default:
			u := *r.Upgrade
			u.Started = true // the supervisor clears it when it switches
			r.Upgrade = &u
		}
	})
	// The answer shows the job as its supervisor sees it: RUNNING once it
	// polled the new master (the downtime is measured already).
	j.waitFor(ctx, waitEnd, func(s State, r Record, _ Master) bool {
		return (r.Run >= next && s == Running) || r.State.Terminal()
	})
	s, now, _ := j.state()
	return UpgradeReply{ID: rec.ID, State: s, Run: now.Run, PreviousRun: rec.Run, Savepoint: sp.Path,
		DowntimeMs: downtime.Milliseconds(), StandbyMs: standbyFor.Milliseconds(), TaskManagers: st.Registered}, nil
}

// standbyStatus is the part of a standing-by master's GET /v1/status the
// upgrade reads.
type standbyStatus struct {
	State   string `json:"state"` // "standby"
	Standby *struct {
		Registered int `json:"registered"`
		Wanted     int `json:"wanted"`
	} `json:"standby"`
}

// awaitStandby waits up to wait for the standby master sm (of HA directory
// ha) to have its TaskManagers registered; it returns its REST address.
// It gives up when sm ends, or when the job's master is no longer old.
func (j *job) awaitStandby(ctx context.Context, sm, old Master, ha string, wait time.Duration) (string, StandbyTaskManagers, error) {
	ended := make(chan Exit, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { ended <- sm.Wait(wctx) }()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last StandbyTaskManagers
	for {
		if info, err := Leader(ctx, ha); err == nil && info != nil && info.HTTP != "" {
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			var st standbyStatus
			_, err := callMaster(cctx, j.d.client, info.HTTP, "GET", "/v1/status", &st)
			ccancel()
			if err == nil && st.State == "standby" && st.Standby != nil {
				last = StandbyTaskManagers{Registered: st.Standby.Registered, Wanted: st.Standby.Wanted}
				if last.Registered >= last.Wanted {
					return info.HTTP, last, nil
				}
			}
		}
		select {
		case e := <-ended:
			if ctx.Err() != nil {
				return "", last, ctx.Err()
			}
			return "", last, upgradeErr(http.StatusBadGateway, "the new version's master ended while standing by (%s); the job runs on unchanged", exitText(e))
		case <-deadline.C:
			return "", last, upgradeErr(http.StatusGatewayTimeout,
				"the new version's TaskManagers were not registered within %v (%d of %d); it was stopped, the job runs on unchanged (a longer ?timeout= waits more)", wait, last.Registered, last.Wanted)
		case <-ctx.Done():
			return "", last, ctx.Err()
		case <-tick.C:
		}
		if _, _, m := j.state(); m != old {
			return "", last, upgradeErr(http.StatusConflict, "the job's master changed while the new version stood by (it failed?); the upgrade was abandoned")
		}
	}
}

// StandbyTaskManagers counts a standby master's TaskManagers.
type StandbyTaskManagers struct {
	Registered int `json:"registered"`
	Wanted     int `json:"wanted"`
}

func exitText(e Exit) string {
	if e.Reason != "" {
		return e.Reason
	}
	return "exit code " + strconv.Itoa(e.Code)
}

// abortUpgrade stops the standby master sm (when there is one) and clears
// the upgrade: the old version runs on.
func (j *job) abortUpgrade(ctx context.Context, sm Master, why string) {
	if sm != nil {
		if err := sm.Stop(context.WithoutCancel(ctx)); err != nil {
			j.d.log.Warn("upgrade: stopping the new version's master", "job", j.snapshot().ID, "err", err)
		}
	}
	j.mu.Lock()
	if j.standby == sm {
		j.standby = nil
	}
	j.mu.Unlock()
	_ = j.update(ctx, func(r *Record) { r.Upgrade = nil })
	j.d.log.Warn("upgrade abandoned: the job runs on its old version", "job", j.snapshot().ID, "why", why)
}

// startStandby tells the master at addr, standing by, to deploy restoring
// sp, and returns when its tasks ran. A master that was started already
// (a second caller) is polled until it runs.
func startStandby(ctx context.Context, c *http.Client, addr, sp string) (time.Time, error) {
	body, _ := json.Marshal(map[string]string{"restore": sp})
	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, "POST", "http://"+addr+"/v1/start", bytes.NewReader(body))
	if err != nil {
		return time.Time{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", errNoMaster, err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	var rep struct {
		State string `json:"state"`
	}
	_ = json.Unmarshal(b, &rep)
	switch {
	case resp.StatusCode == http.StatusOK && rep.State == "running":
		return time.Now(), nil
	case resp.StatusCode/100 == 2, resp.StatusCode == http.StatusConflict:
		// Starting, or started by someone else: its status says when it runs.
	default:
		return time.Time{}, &apiError{code: resp.StatusCode, body: bytes.TrimSpace(b)}
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var st masterStatus
		if _, err := callMaster(cctx, c, addr, "GET", "/v1/status", &st); err == nil && st.State == "running" {
			return time.Now(), nil
		}
		select {
		case <-tick.C:
		case <-cctx.Done():
			return time.Time{}, fmt.Errorf("waiting for the new version to run: %w", cctx.Err())
		}
	}
}

// switchToUpgrade makes the new version's master the job's once the old
// one ended with the upgrade's savepoint: the record moves to the new run
// (its spec, the savepoint to restore); the standby master (or, after a
// dispatcher restart, the one found running) becomes the job's, and is
// told to start unless the upgrade request does so itself. Without one,
// the supervisor launches the new run's master, which restores the
// savepoint by itself.
func (j *job) switchToUpgrade(ctx context.Context) {
	d := j.d
	rec := j.snapshot()
	u := *rec.Upgrade
	j.mu.Lock()
	sm := j.standby
	j.standby = nil
	inRequest := j.upgrading
	j.mu.Unlock()
	adopted := false
	if sm == nil {
		nrec := rec
		nrec.Run = u.Run
		if m, err := d.cfg.Launcher.Find(ctx, d.masterSpec(&nrec, nil)); err == nil && m != nil {
			sm, adopted = m, true
		}
	}
	name := rec.Name
	if b, err := d.store.RunSpec(ctx, rec.ID, u.Run); err == nil {
		if _, n, _, err := decodeSubmit(b, ""); err == nil {
			name = n
		}
	}
	_ = j.update(ctx, func(r *Record) {
		r.Run, r.SpecRun, r.Parallelism, r.Restore, r.Name = u.Run, u.Run, 0, u.Savepoint, name
		r.State = Starting
		if r.Upgrade != nil && (r.Upgrade.Started || sm == nil) {
			r.Upgrade = nil
		}
	})
	j.mu.Lock()
	j.master, j.adopted = sm, adopted
	j.notify()
	j.mu.Unlock()
	d.log.Info("upgrade: the job's next run is the new version", "job", rec.ID, "run", u.Run, "savepoint", u.Savepoint, "standby", sm != nil)
	if sm != nil && !inRequest {
		j.d.background(func() { j.confirmStart(ctx, u) })
	}
}

// confirmStart starts the new version's master found after a dispatcher
// restart (the request that began the upgrade is gone) and ends the
// upgrade once it runs.
func (j *job) confirmStart(ctx context.Context, u Upgrade) {
	d := j.d
	id := j.snapshot().ID
	var addr string
	// A master that never publishes its address ends, or is replaced, by
	// the supervisor's judgement, not here.
	deadline := time.Now().Add(time.Minute)
	for addr == "" {
		if info, err := Leader(ctx, d.store.HADir(id, u.Run)); err == nil && info != nil && info.HTTP != "" {
			addr = info.HTTP
			break
		}
		if time.Now().After(deadline) {
			d.log.Warn("upgrade: the new version's master publishes no address; not starting it", "job", id, "run", u.Run)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, err := startStandby(ctx, d.client, addr, u.Savepoint); err != nil {
		d.log.Warn("upgrade: starting the new version after a dispatcher restart", "job", id, "run", u.Run, "err", err)
		return // its end, if it fails, rolls the upgrade back
	}
	_ = j.update(ctx, func(r *Record) {
		if r.Upgrade != nil && r.Run == r.Upgrade.Run {
			r.Upgrade = nil
		}
	})
	d.log.Info("upgrade: the new version runs (finished after a dispatcher restart)", "job", id, "run", u.Run)
}

// rollBackUpgrade: the new version's master ended before the upgrade was
// done. The job's next run is its previous version again, from the same
// savepoint: the upgrade costs downtime, not the job.
func (j *job) rollBackUpgrade(ctx context.Context, exit Exit) {
	rec := j.snapshot()
	u := *rec.Upgrade
	why := exitText(exit)
	_ = j.update(ctx, func(r *Record) {
		r.Run++
		r.SpecRun, r.Parallelism, r.Restore, r.Upgrade = u.PrevSpecRun, u.PrevParallelism, u.Savepoint, nil
		r.State = Starting
		r.Reason = fmt.Sprintf("the upgrade to run %d was rolled back: its master ended before the job ran (%s)", u.Run, why)
	})
	if b, err := j.d.specOf(ctx, &Record{ID: rec.ID, SpecRun: u.PrevSpecRun}); err == nil {
		if _, n, _, err := decodeSubmit(b, ""); err == nil {
			_ = j.update(ctx, func(r *Record) { r.Name = n })
		}
	}
	j.d.log.Error("upgrade rolled back: the new version ended before it ran; starting the previous version from the savepoint",
		"job", rec.ID, "run", rec.Run+1, "savepoint", u.Savepoint, "reason", why)
}

// finishRollBack stops the new version's master of an upgrade rolled back
// after a dispatcher restart — found, or one that shows up later (its
// launch was under way when the dispatcher stopped) — and then clears the
// upgrade from the record. While it is recorded, the adopted old master's
// end counts as a failure, not a finish (supervise): when the old version
// may have been asked to stop (u.Stopping), that lasts until it ended or
// clearly did not stop.
func (j *job) finishRollBack(ctx context.Context, u Upgrade, found, old Master) {
	d := j.d
	rec := j.snapshot()
	nrec := rec
	nrec.Run = u.Run
	stop := func(m Master) {
		if err := m.Stop(ctx); err != nil {
			d.log.Warn("upgrade: stopping the new version's master", "job", rec.ID, "run", u.Run, "err", err)
		}
	}
	stopped := found != nil
	if stopped {
		stop(found)
	}
	deadline := time.Now().Add(rollBackWait)
	lateBy := time.Now().Add(lateStandbyWait)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if !stopped {
			if m, err := d.cfg.Launcher.Find(ctx, d.masterSpec(&nrec, nil)); err == nil && m != nil {
				stop(m)
				stopped = true
			}
		}
		_, r, m := j.state()
		oldDone := old == nil || !u.Stopping || m != old
		if r.Upgrade == nil || ((stopped || time.Now().After(lateBy)) && oldDone) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	_ = j.update(ctx, func(r *Record) {
		if r.Upgrade != nil && r.Upgrade.Savepoint == "" && r.Run < r.Upgrade.Run {
			r.Upgrade = nil
		}
	})
}

// resumeUpgrade finishes or rolls back, when the supervisor starts (a
// dispatcher restart), an upgrade the job record says was in progress.
func (j *job) resumeUpgrade(ctx context.Context) {
	d := j.d
	rec := j.snapshot()
	u := rec.Upgrade
	if u == nil {
		return
	}
	nrec := rec
	nrec.Run = u.Run
	found, err := d.cfg.Launcher.Find(ctx, d.masterSpec(&nrec, nil))
	if err != nil {
		d.log.Warn("upgrade: looking for the new version's master", "job", rec.ID, "err", err)
	}
	_, _, old := j.state()
	switch {
	case u.Savepoint == "" && rec.Run < u.Run:
		// The old version was not stopped (that we know of): it stays.
		d.log.Warn("upgrade rolled back after a dispatcher restart: the old version runs on", "job", rec.ID, "run", rec.Run)
		j.d.background(func() { j.finishRollBack(ctx, *u, found, old) })
	case rec.Run < u.Run:
		// The old version stopped with the savepoint: the new one takes over.
		j.mu.Lock()
		j.standby = found
		j.mu.Unlock()
		if old == nil {
			j.switchToUpgrade(ctx)
		} // else the supervisor switches when the old master has ended
		d.log.Info("upgrade resumed after a dispatcher restart", "job", rec.ID, "run", u.Run, "savepoint", u.Savepoint)
	default:
		// Switched already; the new version's master is the job's (adopted,
		// or launched with the savepoint to restore).
		if old != nil {
			j.d.background(func() { j.confirmStart(ctx, *u) })
		}
	}
}
