package runtime

import (
	"errors"
	"fmt"
)

// CoordinatorConfig configures checkpoint timing. Times are milliseconds of
// the clock the driver passes in (logical in tests).
type CoordinatorConfig struct {
	Interval          int64 // 0: no periodic checkpoints
	Timeout           int64
	MinPause          int64
	Tasks             int // tasks that must acknowledge each checkpoint
	SourceTasks       int
	TolerableFailures int
	FirstID           int64
}

// Trigger asks every source task to inject a barrier.
type Trigger struct {
	ID        int64
	Savepoint bool
	// Final is the last checkpoint of a bounded job: every source has ended.
	Final bool
	// Stop ends the job after this savepoint (stop-with-savepoint).
	Stop bool
}

// Pending is a checkpoint waiting for acknowledgements.
type Pending struct {
	Trigger
	Started int64
	Acks    map[int]any // task index → payload (its state handles)
}

// Actions is what the driver must do after a step, in this order: abort,
// commit (write metadata, then call Committed), notify, trigger.
type Actions struct {
	Abort    []int64
	Commit   *Pending
	Notify   int64 // checkpoint id whose completion tasks must be told, 0 = none
	Trigger  *Trigger
	Finished bool  // final checkpoint done: the job has ended
	Stopped  bool  // stop-with-savepoint done
	Fail     error // too many consecutive checkpoint failures
	// Completed and Failed report outcomes for logs and metrics.
	Completed *Pending
	Failed    error
	// FailedSavepoint: the checkpoint that failed was a savepoint.
	FailedSavepoint bool
}

// Coordinator decides when checkpoints start, complete and fail. It does no
// I/O: the driver feeds it events with the current time and carries out the
// returned Actions. Not goroutine-safe.
type Coordinator struct {
	cfg           CoordinatorConfig
	nextID        int64
	pending       *Pending
	committing    *Pending
	lastEnd       int64 // when the last checkpoint ended (for MinPause)
	nextPeriodic  int64
	failures      int
	sourcesDone   int
	finalDone     bool
	wantSavepoint bool
	wantStop      bool
	started       bool
	// suspended: a region of the job is restarting; no checkpoint starts
	// until Resume (its tasks could not acknowledge).
	suspended bool
}

// NewCoordinator starts counting checkpoints at cfg.FirstID (≥1).
func NewCoordinator(cfg CoordinatorConfig, now int64) *Coordinator {
	if cfg.FirstID < 1 {
		cfg.FirstID = 1
	}
	return &Coordinator{cfg: cfg, nextID: cfg.FirstID, nextPeriodic: now + cfg.Interval, lastEnd: now - cfg.MinPause}
}

// Pending returns the checkpoint in flight, if any.
func (c *Coordinator) Pending() *Pending { return c.pending }

// Tick advances time: periodic triggers and timeouts.
func (c *Coordinator) Tick(now int64) Actions {
	var a Actions
	if p := c.pending; p != nil && c.cfg.Timeout > 0 && now-p.Started >= c.cfg.Timeout {
		a = c.fail(now, p, fmt.Errorf("checkpoint %d expired after %d ms before every task acknowledged (%d of %d)", p.ID, c.cfg.Timeout, len(p.Acks), c.cfg.Tasks))
	}
	c.maybeTrigger(now, &a)
	return a
}

// RequestSavepoint asks for a savepoint as soon as no checkpoint is in flight.
func (c *Coordinator) RequestSavepoint(now int64, stop bool) Actions {
	c.wantSavepoint = true
	c.wantStop = c.wantStop || stop
	var a Actions
	c.maybeTrigger(now, &a)
	return a
}

// SourceFinished records that one source task has emitted everything.
func (c *Coordinator) SourceFinished(now int64) Actions {
	c.sourcesDone++
	var a Actions
	c.maybeTrigger(now, &a)
	return a
}

// Ack records a task's acknowledgement with its state payload.
func (c *Coordinator) Ack(now int64, id int64, task int, payload any) Actions {
	var a Actions
	p := c.pending
	if p == nil || p.ID != id {
		return a // late ack of an aborted checkpoint: its files are removed with it
	}
	p.Acks[task] = payload
	if len(p.Acks) == c.cfg.Tasks {
		c.pending = nil
		c.committing = p
		a.Commit = p
	}
	return a
}

// Decline fails the checkpoint in flight (a task could not snapshot or upload).
func (c *Coordinator) Decline(now int64, id int64, err error) Actions {
	var a Actions
	if p := c.pending; p != nil && p.ID == id {
		a = c.fail(now, p, fmt.Errorf("checkpoint %d declined: %w", id, err))
		c.maybeTrigger(now, &a)
	}
	return a
}

// Committed records that the metadata of a checkpoint is durable.
func (c *Coordinator) Committed(now int64, id int64) Actions {
	var a Actions
	p := c.committing
	if p == nil || p.ID != id {
		return a
	}
	c.committing = nil
	c.lastEnd = now
	c.failures = 0
	a.Notify = id
	a.Completed = p
	if p.Final {
		c.finalDone = true
		a.Finished = true
		return a
	}
	if p.Stop {
		a.Stopped = true
		return a
	}
	c.maybeTrigger(now, &a)
	return a
}

// CommitFailed records that writing the metadata failed.
func (c *Coordinator) CommitFailed(now int64, id int64, err error) Actions {
	var a Actions
	if p := c.committing; p != nil && p.ID == id {
		c.committing = nil
		a = c.fail(now, p, fmt.Errorf("checkpoint %d could not be committed: %w", id, err))
		c.maybeTrigger(now, &a)
	}
	return a
}

func (c *Coordinator) fail(now int64, p *Pending, err error) Actions {
	var a Actions
	if c.pending == p {
		c.pending = nil
	}
	c.lastEnd = now
	a.Abort = append(a.Abort, p.ID)
	a.Failed = err
	a.FailedSavepoint = p.Savepoint
	if p.Savepoint && !p.Final {
		// A failed savepoint is reported, not retried; the job goes on.
		if p.Stop {
			c.wantStop = false
		}
		return a
	}
	c.failures++
	if c.failures > c.cfg.TolerableFailures {
		a.Fail = fmt.Errorf("%d consecutive checkpoint failures (tolerable: %d): %w", c.failures, c.cfg.TolerableFailures, err)
	}
	if p.Final {
		// The final checkpoint must happen: try again.
		c.finalDone = false
	}
	return a
}

// Suspend aborts the checkpoint in flight, if any (without counting it as
// a failure: a region of the job failed, not the checkpoint) and starts no
// other until Resume. A savepoint in flight is reported failed.
func (c *Coordinator) Suspend(now int64, reason error) Actions {
	var a Actions
	c.suspended = true
	if p := c.pending; p != nil {
		c.pending = nil
		c.lastEnd = now
		a.Abort = []int64{p.ID}
		a.Failed = fmt.Errorf("checkpoint %d aborted: %w", p.ID, reason)
		a.FailedSavepoint = p.Savepoint
		if p.Stop {
			c.wantStop = false
		}
		if p.Final {
			c.finalDone = false
		}
	}
	return a
}

// Resume lets checkpoints start again after Suspend.
func (c *Coordinator) Resume(now int64) Actions {
	c.suspended = false
	var a Actions
	c.maybeTrigger(now, &a)
	return a
}

// SourcesRestarted takes back n SourceFinished: those source tasks were
// restarted (with their region) and will emit again.
func (c *Coordinator) SourcesRestarted(n int) {
	c.sourcesDone = max(0, c.sourcesDone-n)
}

func (c *Coordinator) maybeTrigger(now int64, a *Actions) {
	if c.pending != nil || c.committing != nil || c.finalDone || a.Fail != nil || c.suspended {
		return
	}
	allDone := c.cfg.SourceTasks > 0 && c.sourcesDone >= c.cfg.SourceTasks
	var t *Trigger
	switch {
	case c.wantSavepoint:
		t = &Trigger{Savepoint: true, Stop: c.wantStop, Final: allDone && !c.wantStop}
		c.wantSavepoint, c.wantStop = false, false
	case allDone:
		t = &Trigger{Final: true}
	case c.cfg.Interval > 0 && now >= c.nextPeriodic && now-c.lastEnd >= c.cfg.MinPause:
		t = &Trigger{}
	default:
		return
	}
	if !t.Final && !t.Savepoint && c.cfg.Interval > 0 {
		c.nextPeriodic = now + c.cfg.Interval
	}
	t.ID = c.nextID
	c.nextID++
	c.pending = &Pending{Trigger: *t, Started: now, Acks: make(map[int]any, c.cfg.Tasks)}
	a.Trigger = &c.pending.Trigger
}

// ErrJobFailed wraps the reason a job gave up.
var ErrJobFailed = errors.New("job failed")
