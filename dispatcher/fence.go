package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Fencing: a dispatcher paused at any line (SIGSTOP, a frozen VM) while
// Marathon started another on the same store must not, once it resumes,
// write a record, launch or stop a master, or accept a request. Each
// dispatcher takes an epoch when it starts (Store.Takeover); a newer epoch
// supersedes it. It finds out on its next store write, launch or stop, on
// a request that would change something, or from the periodic check
// (Config.FenceInterval), whichever comes first; from then on it supervises
// nothing (the masters run on: the successor adopts them), refuses every
// change with 503, and fails /healthz so that Marathon replaces it.

// errSuperseded: a newer dispatcher took the store over.
var errSuperseded = errors.New("superseded by a newer dispatcher")

// supersededError says by which epoch.
type supersededError struct{ epoch, newest int64 }

func (e *supersededError) Error() string {
	return fmt.Sprintf("superseded by dispatcher epoch %d (this dispatcher's epoch is %d)", e.newest, e.epoch)
}

func (e *supersededError) Is(target error) bool { return target == errSuperseded }

// supersede stops this dispatcher's supervision for good, once.
func (d *Dispatcher) supersede(err error) {
	d.fenceOnce.Do(func() {
		d.fenceErr.Store(&err)
		d.log.Error("a newer dispatcher took the job store over: this one supervises no job any more and refuses every change",
			"err", err, "store", d.store.URI())
		d.cancel()
	})
}

// superseded is why this dispatcher was superseded, nil while it is not
// known to be.
func (d *Dispatcher) superseded() error {
	if p := d.fenceErr.Load(); p != nil {
		return *p
	}
	return nil
}

// checkFence asks the store whether this dispatcher still leads it: nil
// when it does, an error wrapping errSuperseded when it does not (and the
// dispatcher stops), another error when the store cannot say.
func (d *Dispatcher) checkFence(ctx context.Context) error {
	if err := d.superseded(); err != nil {
		return err
	}
	return d.store.Fence(ctx) // a superseded store calls d.supersede
}

// watchFence checks the epoch every FenceInterval: a dispatcher that
// resumes from a pause and has nothing to write finds out too.
func (d *Dispatcher) watchFence() {
	t := time.NewTicker(d.cfg.FenceInterval)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		if err := d.checkFence(d.ctx); err != nil && !errors.Is(err, errSuperseded) {
			d.log.Warn("checking the dispatcher epoch", "err", err)
		}
	}
}

// fencedLauncher checks the epoch before a master is launched or stopped:
// a superseded dispatcher must not start a second master for a job its
// successor supervises, nor stop one. The check and the launch are two
// steps; a master launched by a dispatcher superseded in between is fenced
// by its job's HA epoch once the successor's master takes the job.
type fencedLauncher struct {
	d *Dispatcher
	l Launcher
}

func (f fencedLauncher) Launch(ctx context.Context, s MasterSpec) (Master, error) {
	if err := f.d.checkFence(ctx); err != nil {
		return nil, fmt.Errorf("not launching a master for job %s: %w", s.JobID, err)
	}
	m, err := f.l.Launch(ctx, s)
	if err != nil {
		return nil, err
	}
	if err := f.d.checkFence(ctx); errors.Is(err, errSuperseded) {
		f.d.log.Warn("superseded while launching a master: the successor's master fences it through the job's HA epoch",
			"job", s.JobID, "run", s.Run, "master", m.String())
	}
	return &fencedMaster{Master: m, d: f.d}, nil
}

func (f fencedLauncher) Find(ctx context.Context, s MasterSpec) (Master, error) {
	m, err := f.l.Find(ctx, s)
	if m == nil || err != nil {
		return m, err
	}
	return &fencedMaster{Master: m, d: f.d}, nil
}

// JobEnded passes the end of a job on to a launcher that wants it (the
// Mesos one removes the job's quota), unless a successor supervises the
// job now: it does that itself.
func (f fencedLauncher) JobEnded(ctx context.Context, jobID string) {
	e, ok := f.l.(JobEnder)
	if !ok {
		return
	}
	if err := f.d.checkFence(ctx); err != nil {
		f.d.log.Warn("not passing on the end of a job", "job", jobID, "err", err)
		return
	}
	e.JobEnded(ctx, jobID)
}

// fencedMaster is a master whose Stop checks the epoch first.
type fencedMaster struct {
	Master
	d *Dispatcher
}

func (m *fencedMaster) Stop(ctx context.Context) error {
	// Checked even when ctx has ended (a stop asked while the dispatcher
	// closes), as the stop itself goes on then.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := m.d.checkFence(fctx); err != nil {
		return fmt.Errorf("not stopping master %s: %w", m, err)
	}
	return m.Master.Stop(ctx)
}
