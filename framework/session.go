package framework

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
	pb "github.com/sluice-stream/sluice/internal/controlpb"
)

// controlServer serves the Control service: one Session per TaskManager.
type controlServer struct {
	pb.UnimplementedControlServer
	m *Master
}

// errSessionEnded is the cause of a session the TaskManager closed.
var errSessionEnded = errors.New("its session ended")

func (s *controlServer) Session(stream pb.Control_SessionServer) error {
	m := s.m
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := first.GetRegister()
	refuse := func(reason string) error {
		m.log.Warn("refusing a TaskManager", "reason", reason)
		_ = stream.Send(m.msg(&pb.FromMaster_Refused{Refused: &pb.Refused{Reason: reason}}))
		return nil
	}
	switch {
	case reg == nil:
		return refuse(fmt.Sprintf("the first message of a session must be Register, not %T", first.Msg))
	case first.Epoch > m.cfg.Epoch:
		// It has served a newer master: this one is stale.
		return refuse(fmt.Sprintf("this master's epoch %d is older than epoch %d the TaskManager has served; this master is stale", m.cfg.Epoch, first.Epoch))
	case reg.Slots <= 0:
		return refuse(fmt.Sprintf("slots %d: must be at least 1", reg.Slots))
	case reg.DataAddress == "":
		return refuse("no data address")
	}
	ctx, drop := context.WithCancelCause(stream.Context())
	defer drop(errSessionEnded)
	m.mu.Lock()
	if reg.ResourceId != "" && m.released[reg.ResourceId] {
		// Dropped (hung, or cut off) and replaced: it comes back fenced.
		m.mu.Unlock()
		return refuse(fmt.Sprintf("resource %s was dropped and replaced; register as a new TaskManager", reg.ResourceId))
	}
	if want := m.cfg.TaskManagers + m.cfg.Spares; len(m.tms) >= want {
		m.mu.Unlock()
		return refuse(fmt.Sprintf("the job has the %d TaskManagers it needs", want))
	}
	m.nextID++
	t := &tmConn{id: fmt.Sprintf("tm-%d", m.nextID), resourceID: reg.ResourceId, data: reg.DataAddress, host: reg.Host,
		slots: int(reg.Slots), out: make(chan *pb.FromMaster, 1024), ctx: ctx, drop: drop, lastHeard: time.Now()}
	m.tms[t.id] = t
	m.notifyChanged()
	m.mu.Unlock()
	m.log.Info("TaskManager registered", "id", t.id, "resource", t.resourceID, "slots", t.slots, "data", t.data, "host", t.host)
	if err := stream.Send(m.msg(&pb.FromMaster_Registered{Registered: &pb.Registered{TaskmanagerId: t.id,
		HeartbeatIntervalMs: m.cfg.HeartbeatInterval.Milliseconds(), HeartbeatTimeoutMs: m.cfg.HeartbeatTimeout.Milliseconds(),
		JobName: m.cfg.Graph.JobName, JobSpec: m.spec}})); err != nil {
		drop(err)
	}

	go func() { // the one writer of the stream
		for {
			select {
			case msg := <-t.out:
				if err := stream.Send(msg); err != nil {
					drop(fmt.Errorf("sending: %w", err))
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { // heartbeats, and the TaskManager's silence
		tick := time.NewTicker(m.cfg.HeartbeatInterval)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				t.mu.Lock()
				quiet := time.Since(t.lastHeard)
				t.mu.Unlock()
				if quiet > m.cfg.HeartbeatTimeout {
					drop(fmt.Errorf("no heartbeat for %v (timeout %v)", quiet.Round(time.Millisecond), m.cfg.HeartbeatTimeout))
					return
				}
				t.send(m.msg(&pb.FromMaster_Heartbeat{Heartbeat: &pb.Heartbeat{SentUnixNanos: time.Now().UnixNano()}}))
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				drop(errSessionEnded)
				return
			}
			if msg.Epoch != m.cfg.Epoch || msg.TaskmanagerId != t.id {
				m.log.Warn("refusing a message of another epoch or TaskManager", "from", t.id, "epoch", msg.Epoch, "id", msg.TaskmanagerId)
				continue
			}
			t.mu.Lock()
			t.lastHeard = time.Now()
			t.mu.Unlock()
			m.handle(t, msg)
		}
	}()
	<-ctx.Done()
	cause := context.Cause(ctx)
	m.mu.Lock()
	delete(m.tms, t.id)
	m.lost++
	m.notifyChanged()
	a := m.current
	closing := m.closing
	m.mu.Unlock()
	if closing {
		return nil
	}
	m.log.Warn("TaskManager lost", "id", t.id, "resource", t.resourceID, "cause", cause)
	if a != nil {
		a.lostTM(t.id, cause)
	}
	if m.cfg.RM != nil && !m.supersededNow() {
		if t.resourceID != "" {
			m.mu.Lock()
			m.released[t.resourceID] = true
			m.mu.Unlock()
		}
		m.cfg.RM.Lost(t.resourceID)
	}
	return nil
}

// Superseded says whether a newer master leads the job (checked in the HA
// directory; false without one).
func (m *Master) Superseded() bool { return m.supersededNow() }

// supersededNow checks the HA directory for a newer master before the
// master replaces a TaskManager: one paused past its successor's takeover
// finds its sessions ended (the TaskManagers moved to the successor) and
// must not start replacements for them.
func (m *Master) supersededNow() bool {
	if m.superseded.Load() {
		return true
	}
	if m.cfg.HA == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.HeartbeatTimeout)
	defer cancel()
	if err := m.cfg.HA.Fence(ctx, m.cfg.Epoch); errors.Is(err, ErrSuperseded) {
		m.superseded.Store(true)
		m.log.Warn("not replacing a lost TaskManager: a newer master leads the job", "cause", err)
		return true
	}
	return false
}

// handle takes one message of TaskManager t.
func (m *Master) handle(t *tmConn, msg *pb.FromTaskManager) {
	attemptOf := func(id string) *attempt {
		a := m.attemptByID(id)
		if a == nil {
			m.log.Debug("refusing a message of an attempt that is not the current one", "from", t.id, "attempt", id, "msg", fmt.Sprintf("%T", msg.Msg))
		}
		return a
	}
	switch x := msg.Msg.(type) {
	case *pb.FromTaskManager_Heartbeat:
		if e := x.Heartbeat.EchoUnixNanos; e != 0 {
			t.mu.Lock()
			t.rtt = time.Since(time.Unix(0, e))
			t.mu.Unlock()
		} else {
			t.send(m.msg(&pb.FromMaster_Heartbeat{Heartbeat: &pb.Heartbeat{SentUnixNanos: time.Now().UnixNano(), EchoUnixNanos: x.Heartbeat.SentUnixNanos}}))
		}
	case *pb.FromTaskManager_Deployed:
		if a := attemptOf(x.Deployed.Attempt); a != nil {
			a.deployedOn(t.id, x.Deployed.Attempt, x.Deployed.Error.Err())
		}
	case *pb.FromTaskManager_AckCheckpoint:
		if a := attemptOf(x.AckCheckpoint.Attempt); a != nil {
			states, err := pb.States(x.AckCheckpoint.States)
			if err != nil {
				a.event(runtime.TaskEvent{Kind: runtime.EventDecline, Attempt: x.AckCheckpoint.Attempt, Task: int(x.AckCheckpoint.Task), ID: x.AckCheckpoint.Id, Err: err})
				return
			}
			a.event(runtime.TaskEvent{Kind: runtime.EventAck, Attempt: x.AckCheckpoint.Attempt, Task: int(x.AckCheckpoint.Task), ID: x.AckCheckpoint.Id, States: states,
				Alignment: time.Duration(x.AckCheckpoint.AlignmentNanos)})
		}
	case *pb.FromTaskManager_DeclineCheckpoint:
		if a := attemptOf(x.DeclineCheckpoint.Attempt); a != nil {
			a.event(runtime.TaskEvent{Kind: runtime.EventDecline, Attempt: x.DeclineCheckpoint.Attempt, Task: int(x.DeclineCheckpoint.Task), ID: x.DeclineCheckpoint.Id, Err: x.DeclineCheckpoint.Error.Err()})
		}
	case *pb.FromTaskManager_SourceFinished:
		if a := attemptOf(x.SourceFinished.Attempt); a != nil {
			a.event(runtime.TaskEvent{Kind: runtime.EventSourceFinished, Attempt: x.SourceFinished.Attempt, Task: int(x.SourceFinished.Task)})
		}
	case *pb.FromTaskManager_TaskState:
		if a := attemptOf(x.TaskState.Attempt); a != nil && x.TaskState.State == pb.TaskState_STATE_FAILED {
			err := x.TaskState.Error.Err()
			if err == nil {
				err = errors.New("failed")
			}
			a.event(runtime.TaskEvent{Kind: runtime.EventFailed, Attempt: x.TaskState.Attempt, Task: int(x.TaskState.Task), Err: fmt.Errorf("on TaskManager %s: %w", t.id, err)})
		}
	case *pb.FromTaskManager_AttemptEnded:
		if a := attemptOf(x.AttemptEnded.Attempt); a != nil {
			a.endedOn(t.id, x.AttemptEnded.Attempt)
		}
	case *pb.FromTaskManager_TasksStopped:
		if a := attemptOf(x.TasksStopped.Attempt); a != nil {
			a.tasksStopped(x.TasksStopped.RequestId)
		}
	case *pb.FromTaskManager_SkipBacklogResult:
		r := x.SkipBacklogResult
		if a := attemptOf(r.Attempt); a != nil {
			a.mu.Lock()
			done := a.skips[r.RequestId]
			delete(a.skips, r.RequestId)
			a.mu.Unlock()
			if done == nil {
				return
			}
			switch {
			case r.Error != "":
				name := ""
				if len(r.Unsupported) > 0 {
					name = r.Unsupported[0]
				}
				done(name, errors.New(r.Error))
			case len(r.Skipped) > 0:
				done(r.Skipped[0], nil)
			}
		}
	case *pb.FromTaskManager_Metrics:
		// Counters per node and subtask: kept for status and /metrics.
		m.recordMetrics(t.id, x.Metrics)
	case *pb.FromTaskManager_Progress:
		m.progress.Merge(x.Progress.Entries())
	case *pb.FromTaskManager_Register:
		m.log.Warn("a second Register on a session; ignored", "from", t.id)
	}
}
