package runtime

import (
	"errors"
	"testing"
)

func TestCoordinatorPeriodicCheckpoint(t *testing.T) {
	c := NewCoordinator(CoordinatorConfig{Interval: 100, Timeout: 1000, Tasks: 2, SourceTasks: 1}, 0)
	if a := c.Tick(50); a.Trigger != nil {
		t.Fatalf("triggered before the interval: %+v", a.Trigger)
	}
	a := c.Tick(100)
	if a.Trigger == nil || a.Trigger.ID != 1 {
		t.Fatalf("want checkpoint 1 at t=100, got %+v", a.Trigger)
	}
	if a := c.Tick(250); a.Trigger != nil {
		t.Fatal("a second checkpoint started while one is in flight")
	}
	if a := c.Ack(260, 1, 0, "a"); a.Commit != nil {
		t.Fatal("committed with one of two acks")
	}
	a = c.Ack(270, 1, 1, "b")
	if a.Commit == nil || len(a.Commit.Acks) != 2 {
		t.Fatalf("want commit with 2 acks, got %+v", a)
	}
	a = c.Committed(280, 1)
	if a.Notify != 1 || a.Completed == nil {
		t.Fatalf("want notify 1, got %+v", a)
	}
	// Overdue: the next one starts at once.
	if a.Trigger == nil || a.Trigger.ID != 2 {
		t.Fatalf("want checkpoint 2 right after 1 (interval passed), got %+v", a.Trigger)
	}
}

func TestCoordinatorTimeoutAndTolerableFailures(t *testing.T) {
	c := NewCoordinator(CoordinatorConfig{Interval: 10, Timeout: 100, Tasks: 1, SourceTasks: 1, TolerableFailures: 1}, 0)
	a := c.Tick(10)
	id := a.Trigger.ID
	a = c.Tick(110)
	if len(a.Abort) != 1 || a.Abort[0] != id || a.Failed == nil || a.Fail != nil {
		t.Fatalf("want checkpoint %d aborted, job alive: %+v", id, a)
	}
	if a.Trigger == nil {
		t.Fatal("want a new checkpoint after the expired one")
	}
	a = c.Decline(120, a.Trigger.ID, errors.New("disk full"))
	if a.Fail == nil {
		t.Fatalf("second consecutive failure with tolerance 1 must fail the job: %+v", a)
	}
}

func TestCoordinatorLateAckIgnored(t *testing.T) {
	c := NewCoordinator(CoordinatorConfig{Interval: 10, Timeout: 50, Tasks: 1, SourceTasks: 1, TolerableFailures: 5}, 0)
	first := c.Tick(10).Trigger.ID
	a := c.Tick(60) // expires first, starts second
	second := a.Trigger.ID
	if a := c.Ack(61, first, 0, nil); a.Commit != nil {
		t.Fatal("a late ack of an aborted checkpoint committed it")
	}
	if a := c.Ack(62, second, 0, nil); a.Commit == nil || a.Commit.ID != second {
		t.Fatalf("want commit of %d, got %+v", second, a)
	}
}

func TestCoordinatorFinalCheckpointAfterSourcesEnd(t *testing.T) {
	c := NewCoordinator(CoordinatorConfig{Interval: 0, Timeout: 100, Tasks: 3, SourceTasks: 2, FirstID: 7}, 0)
	if a := c.SourceFinished(5); a.Trigger != nil {
		t.Fatal("final checkpoint before every source ended")
	}
	a := c.SourceFinished(6)
	if a.Trigger == nil || !a.Trigger.Final || a.Trigger.ID != 7 {
		t.Fatalf("want final checkpoint 7, got %+v", a.Trigger)
	}
	for i := range 3 {
		a = c.Ack(7, 7, i, nil)
	}
	if a.Commit == nil {
		t.Fatal("no commit")
	}
	a = c.Committed(8, 7)
	if !a.Finished || a.Notify != 7 {
		t.Fatalf("want finished after the final checkpoint, got %+v", a)
	}
	if a := c.Tick(1000); a.Trigger != nil {
		t.Fatal("checkpoint after the job finished")
	}
}

func TestCoordinatorSavepointWaitsAndStops(t *testing.T) {
	c := NewCoordinator(CoordinatorConfig{Interval: 10, Timeout: 100, Tasks: 1, SourceTasks: 1}, 0)
	cp := c.Tick(10).Trigger.ID
	if a := c.RequestSavepoint(11, true); a.Trigger != nil {
		t.Fatal("savepoint started while a checkpoint is in flight")
	}
	c.Ack(12, cp, 0, nil)
	a := c.Committed(13, cp)
	if a.Trigger == nil || !a.Trigger.Savepoint || !a.Trigger.Stop {
		t.Fatalf("want the stop-savepoint next, got %+v", a.Trigger)
	}
	sp := a.Trigger.ID
	c.Ack(14, sp, 0, nil)
	if a := c.Committed(15, sp); !a.Stopped {
		t.Fatalf("want stopped, got %+v", a)
	}
}

// TestCoordinatorFailedStopGoesOn: a stop-with-savepoint whose savepoint
// fails is aborted and reported, does not count against the tolerable
// failures, and the job goes on: periodic checkpoints resume and a second
// stop can be asked.
func TestCoordinatorFailedStopGoesOn(t *testing.T) {
	c := NewCoordinator(CoordinatorConfig{Interval: 10, Timeout: 1000, Tasks: 1, SourceTasks: 1}, 0)
	a := c.RequestSavepoint(1, true)
	if a.Trigger == nil || !a.Trigger.Stop {
		t.Fatalf("want a stop savepoint, got %+v", a.Trigger)
	}
	sp := a.Trigger.ID
	a = c.Decline(2, sp, errors.New("snapshot failed"))
	if len(a.Abort) != 1 || a.Abort[0] != sp || a.Failed == nil || !a.FailedSavepoint || a.Fail != nil || a.Stopped {
		t.Fatalf("want savepoint %d aborted and reported, job alive: %+v", sp, a)
	}
	a = c.Tick(20)
	if a.Trigger == nil || a.Trigger.Savepoint || a.Trigger.Stop {
		t.Fatalf("want a periodic checkpoint after the failed stop, got %+v", a.Trigger)
	}
	c.Ack(21, a.Trigger.ID, 0, nil)
	c.Committed(22, a.Trigger.ID)
	if a := c.RequestSavepoint(23, true); a.Trigger == nil || !a.Trigger.Stop {
		t.Fatalf("want a second stop savepoint, got %+v", a.Trigger)
	}
}

// TestCoordinatorSuspend: a region restart aborts the checkpoint in flight
// without counting a failure, starts none while suspended, and takes back
// the restarted sources' end.
func TestCoordinatorSuspend(t *testing.T) {
	c := NewCoordinator(CoordinatorConfig{Interval: 10, Timeout: 1000, Tasks: 2, SourceTasks: 2, TolerableFailures: 0}, 0)
	a := c.Tick(10)
	if a.Trigger == nil {
		t.Fatal("no trigger")
	}
	a = c.Suspend(20, errors.New("region 1 restarts"))
	if len(a.Abort) != 1 || a.Fail != nil {
		t.Fatalf("suspend: %+v, want the pending one aborted and no job failure", a)
	}
	if a := c.Tick(100); a.Trigger != nil {
		t.Fatal("a checkpoint started while suspended")
	}
	c.SourceFinished(110)
	c.SourcesRestarted(1)
	c.SourceFinished(120) // the other source: 1 of 2 again, not both
	a = c.Resume(130)
	if a.Trigger == nil || a.Trigger.Final {
		t.Fatalf("resume: %+v, want a periodic checkpoint (one source still runs)", a.Trigger)
	}
}
