package framework

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
	pb "github.com/sluice-stream/sluice/internal/controlpb"
)

// partKey is one part of an attempt: the tasks one TaskManager runs of
// one deployment (the job's, or a region's after a region restart).
type partKey struct{ tm, attempt string }

// attempt is an attempt deployed on TaskManagers, as the driver sees it:
// the job's deployment plus those of the regions restarted since.
type attempt struct {
	m      *Master
	id     string
	events chan runtime.TaskEvent
	done   chan struct{} // closed by Stop

	mu       sync.Mutex
	ids      map[string]bool // the job's deployment and its regions'
	parts    map[partKey]*tmConn
	taskOn   map[int]partKey // where each task runs now
	deployed map[partKey]chan error
	ended    map[partKey]bool
	endedCh  chan struct{} // set by Stop: closed when every part ended
	stopped  bool
	exited   bool
	skips    map[string]func(string, error)
	stops    map[string]*stopReq
	nextReq  int
}

// stopReq is a StopTasks awaiting TasksStopped.
type stopReq struct {
	tm   string
	done chan struct{}
}

func newAttempt(m *Master, id string) *attempt {
	return &attempt{m: m, id: id, events: make(chan runtime.TaskEvent, 1024), done: make(chan struct{}),
		ids: map[string]bool{id: true}, parts: map[partKey]*tmConn{}, taskOn: map[int]partKey{},
		deployed: map[partKey]chan error{}, ended: map[partKey]bool{}, skips: map[string]func(string, error){},
		stops: map[string]*stopReq{}}
}

// Deploy implements runtime.Deployer: place the tasks, deploy them on
// their TaskManagers, and wait until every one is open.
func (m *Master) Deploy(ctx context.Context, d runtime.Deployment) (runtime.Attempt, error) {
	all := make([]int, Pipelines(m.tasks))
	for i := range all {
		all[i] = i
	}
	place, err := m.placeWait(ctx, all)
	if err != nil {
		return nil, err
	}
	if ha := m.cfg.HA; ha != nil && !m.tookOver {
		// Before any task of this master runs: from here on, a checkpoint
		// an older master commits past the one restored is not the job's.
		var restored int64
		if d.Restore != nil {
			restored = d.Restore.CheckpointID
		}
		if err := ha.RecordTakeover(ctx, m.cfg.Epoch, restored); err != nil {
			return nil, fmt.Errorf("framework: %w", err)
		}
		m.tookOver = true
	}
	a := newAttempt(m, d.Attempt)
	m.mu.Lock()
	m.current = a
	m.prev = place
	m.mu.Unlock()
	byTM := map[string][]int{}
	for _, t := range m.tasks {
		byTM[place[t.Subtask]] = append(byTM[place[t.Subtask]], t.Index)
	}
	m.log.Info("deploying", "attempt", a.id, "taskmanagers", len(byTM), "tasks", len(m.tasks))
	if err := a.deployParts(ctx, d, byTM); err != nil {
		a.Stop()
		return nil, err
	}
	return a, nil
}

// placeWait places pipelines (subtask indices) on free slots, the others
// staying where they are, waiting up to SlotWait for TaskManagers.
func (m *Master) placeWait(ctx context.Context, pipelines []int) (Placement, error) {
	wait, cancel := context.WithTimeout(ctx, m.cfg.SlotWait)
	defer cancel()
	moving := map[int]bool{}
	for _, p := range pipelines {
		moving[p] = true
	}
	for {
		m.mu.Lock()
		workers := m.workers()
		used := map[string]int{}
		for p, id := range m.prev {
			if !moving[p] {
				used[id]++
			}
		}
		for i := range workers {
			workers[i].Slots -= used[workers[i].ID]
		}
		p, err := PlaceSome(pipelines, workers, m.prev)
		changed := m.changed
		m.mu.Unlock()
		if err == nil {
			return p, nil
		}
		select {
		case <-changed:
		case <-wait.Done():
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("waiting for TaskManagers: %w (after %v)", err, m.cfg.SlotWait)
		}
	}
}

// deployParts deploys d's tasks (byTM: TaskManager → task indices) and
// waits until every TaskManager answered Deployed; the first error is
// returned (the caller stops what did deploy).
func (a *attempt) deployParts(ctx context.Context, d runtime.Deployment, byTM map[string][]int) error {
	m := a.m
	var locs []*pb.TaskLocation
	var waits []chan error
	a.mu.Lock()
	a.ids[d.Attempt] = true
	m.mu.Lock()
	for id, ts := range byTM {
		t := m.tms[id]
		if t == nil {
			m.mu.Unlock()
			a.mu.Unlock()
			return fmt.Errorf("TaskManager %s is gone", id)
		}
		k := partKey{id, d.Attempt}
		a.parts[k] = t
		ch := make(chan error, 1)
		a.deployed[k] = ch
		waits = append(waits, ch)
		for _, i := range ts {
			a.taskOn[i] = k
			locs = append(locs, &pb.TaskLocation{Task: int32(i), DataAddress: t.data})
		}
	}
	m.mu.Unlock()
	a.mu.Unlock()
	var restore *pb.Restore
	if d.Restore != nil {
		restore = &pb.Restore{CheckpointId: d.Restore.CheckpointID, Location: d.RestoreDir, SkippedNewer: d.Flags.SkippedNewer,
			AllowDuplicates: d.Flags.AllowDuplicates, AcceptLoss: d.Flags.AcceptLoss, Region: d.Flags.Region}
	}
	for id, ts := range byTM {
		tasks := make([]int32, len(ts))
		for i, x := range ts {
			tasks[i] = int32(x)
		}
		a.part(partKey{id, d.Attempt}).send(m.msg(&pb.FromMaster_Deploy{Deploy: &pb.Deploy{Attempt: d.Attempt, Tasks: tasks, Locations: locs, Restore: restore,
			Incremental: m.cfg.Job.Checkpoint.Incremental, LocalRecovery: m.cfg.Job.Checkpoint.LocalRecovery}}))
	}
	var first error
	for _, ch := range waits {
		select {
		case err := <-ch:
			if err != nil && first == nil {
				first = err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return first
}

func (a *attempt) part(k partKey) *tmConn {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.parts[k]
}

func (a *attempt) has(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ids[id]
}

func (a *attempt) ID() string                       { return a.id }
func (a *attempt) Events() <-chan runtime.TaskEvent { return a.events }

func (a *attempt) event(ev runtime.TaskEvent) {
	select {
	case a.events <- ev:
	case <-a.done:
	}
}

// tms lists the TaskManagers running parts (of the deployment attempt, or
// of any when attempt is "").
func (a *attempt) tms(attempt string) []*tmConn {
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := map[string]bool{}
	var out []*tmConn
	for k, t := range a.parts {
		if (attempt == "" || k.attempt == attempt) && !seen[k.tm] && !a.ended[k] {
			seen[k.tm] = true
			out = append(out, t)
		}
	}
	return out
}

func (a *attempt) all(x any) {
	for _, t := range a.tms("") {
		t.send(a.m.msg(x))
	}
}

func (a *attempt) Start() {
	for _, t := range a.tms(a.id) {
		t.send(a.m.msg(&pb.FromMaster_StartTasks{StartTasks: &pb.StartTasks{Attempt: a.id}}))
	}
	a.m.standby.running()
}

// The TaskManager hands a trigger, a notification or an abort to every
// attempt of the job it runs: the message names the job's attempt.
func (a *attempt) Trigger(tr runtime.Trigger) error {
	a.all(&pb.FromMaster_TriggerCheckpoint{TriggerCheckpoint: pb.FromTrigger(a.id, tr)})
	return nil
}

func (a *attempt) Notify(id int64) error {
	a.all(&pb.FromMaster_NotifyCheckpointComplete{NotifyCheckpointComplete: &pb.NotifyCheckpointComplete{Attempt: a.id, Id: id}})
	return nil
}

func (a *attempt) Abort(id int64) error {
	a.all(&pb.FromMaster_AbortCheckpoint{AbortCheckpoint: &pb.AbortCheckpoint{Attempt: a.id, Id: id}})
	return nil
}

func (a *attempt) SkipBacklog(task int, done func(string, error)) error {
	a.mu.Lock()
	k, ok := a.taskOn[task]
	t := a.parts[k]
	a.nextReq++
	req := strconv.Itoa(a.nextReq)
	a.skips[req] = done
	a.mu.Unlock()
	if !ok || t == nil {
		return fmt.Errorf("%w: task %d is not deployed", runtime.ErrNotRunning, task)
	}
	t.send(a.m.msg(&pb.FromMaster_SkipBacklog{SkipBacklog: &pb.SkipBacklog{Attempt: k.attempt, RequestId: req, Task: int32(task)}}))
	return nil
}

// RestartTasks implements runtime.RegionRestarter: the tasks (whole
// pipelined regions) stop on their TaskManagers, and run anew as
// deployment d — on the same TaskManagers when they are still there (their
// local recovery copies are), else on free slots — while the others go on.
func (a *attempt) RestartTasks(ctx context.Context, tasks []int, d runtime.Deployment) error {
	m := a.m
	// 1. Stop them where they run.
	var reqs []*stopReq
	a.mu.Lock()
	byTM := map[string][]int32{}
	for _, t := range tasks {
		if k, ok := a.taskOn[t]; ok && !a.ended[k] {
			byTM[k.tm] = append(byTM[k.tm], int32(t))
		}
	}
	sendTo := map[*tmConn]*pb.StopTasks{}
	for tm, ts := range byTM {
		t := a.partOnTM(tm)
		if t == nil {
			continue
		}
		a.nextReq++
		r := &stopReq{tm: tm, done: make(chan struct{})}
		id := "stop-" + strconv.Itoa(a.nextReq)
		a.stops[id] = r
		reqs = append(reqs, r)
		sendTo[t] = &pb.StopTasks{Attempt: a.id, Tasks: ts, RequestId: id}
	}
	a.mu.Unlock()
	for t, st := range sendTo {
		t.send(m.msg(&pb.FromMaster_StopTasks{StopTasks: st}))
	}
	for _, r := range reqs {
		select {
		case <-r.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// 2. Place their pipelines.
	seen := map[int]bool{}
	var pipes []int
	for _, t := range tasks {
		if s := m.tasks[t].Subtask; !seen[s] {
			seen[s] = true
			pipes = append(pipes, s)
		}
	}
	sort.Ints(pipes)
	place, err := m.placeWait(ctx, pipes)
	if err != nil {
		return err
	}
	m.mu.Lock()
	for _, p := range pipes {
		m.prev[p] = place[p]
	}
	m.mu.Unlock()
	deploy := map[string][]int{}
	for _, t := range tasks {
		id := place[m.tasks[t].Subtask]
		deploy[id] = append(deploy[id], t)
	}
	m.log.Info("deploying a region", "attempt", d.Attempt, "tasks", len(tasks), "taskmanagers", len(deploy))
	// 3. Deploy and start them.
	if err := a.deployParts(ctx, d, deploy); err != nil {
		return err
	}
	for _, t := range a.tms(d.Attempt) {
		t.send(m.msg(&pb.FromMaster_StartTasks{StartTasks: &pb.StartTasks{Attempt: d.Attempt}}))
	}
	return nil
}

// partOnTM is a TaskManager running any part; a.mu held.
func (a *attempt) partOnTM(tm string) *tmConn {
	for k, t := range a.parts {
		if k.tm == tm {
			return t
		}
	}
	return nil
}

// stopped answers a StopTasks.
func (a *attempt) tasksStopped(req string) {
	a.mu.Lock()
	r := a.stops[req]
	delete(a.stops, req)
	a.mu.Unlock()
	if r != nil {
		close(r.done)
	}
}

// Stop cancels every part on its TaskManager and waits until each ended
// or is gone (bounded: a TaskManager that does not answer is dropped).
func (a *attempt) Stop() {
	a.mu.Lock()
	if a.stopped {
		a.mu.Unlock()
		return
	}
	a.stopped = true
	close(a.done)
	a.endedCh = make(chan struct{})
	var open []partKey
	for k := range a.parts {
		if !a.ended[k] {
			open = append(open, k)
		}
	}
	if len(open) == 0 {
		close(a.endedCh)
	}
	ended := a.endedCh
	parts := map[partKey]*tmConn{}
	for _, k := range open {
		parts[k] = a.parts[k]
	}
	a.mu.Unlock()
	for k, t := range parts {
		t.send(a.m.msg(&pb.FromMaster_Cancel{Cancel: &pb.Cancel{Attempt: k.attempt, Reason: "the attempt is stopped"}}))
	}
	select {
	case <-ended:
	case <-time.After(a.m.cfg.HeartbeatTimeout + 5*time.Second):
		for k, t := range parts {
			a.mu.Lock()
			done := a.ended[k]
			a.mu.Unlock()
			if !done {
				t.drop(errors.New("it did not end a cancelled attempt in time"))
			}
		}
	}
	a.m.mu.Lock()
	if a.m.current == a {
		a.m.current = nil
	}
	a.m.mu.Unlock()
}

// endedOn records that a part ended (or its TaskManager was lost); the
// attempt has exited once every part has. a.mu held.
func (a *attempt) endedLocked(k partKey) {
	if _, ok := a.parts[k]; !ok || a.ended[k] {
		return
	}
	a.ended[k] = true
	if len(a.ended) < len(a.parts) {
		return
	}
	if a.stopped {
		if a.endedCh != nil {
			close(a.endedCh)
		}
		return
	}
	if !a.exited {
		a.exited = true
		go a.event(runtime.TaskEvent{Kind: runtime.EventExited})
	}
}

func (a *attempt) endedOn(tm, attempt string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.endedLocked(partKey{tm, attempt})
}

// lostTM: a TaskManager of this attempt is gone: its parts end, those
// deploying fail, and its tasks fail (the driver restarts their regions,
// or the job).
func (a *attempt) lostTM(id string, cause error) {
	a.mu.Lock()
	var tasks []int
	for t, k := range a.taskOn {
		if k.tm == id && !a.ended[k] {
			tasks = append(tasks, t)
		}
	}
	mine := false
	for k := range a.parts {
		if k.tm != id {
			continue
		}
		mine = true
		if ch := a.deployed[k]; ch != nil {
			delete(a.deployed, k)
			ch <- fmt.Errorf("TaskManager %s was lost while deploying: %w", id, cause)
		}
		a.endedLocked(k)
	}
	for req, r := range a.stops {
		if r.tm == id {
			delete(a.stops, req)
			close(r.done)
		}
	}
	a.mu.Unlock()
	if !mine {
		return
	}
	sort.Ints(tasks)
	if len(tasks) > 0 {
		a.event(runtime.TaskEvent{Kind: runtime.EventFailed, Task: -1, Tasks: tasks, Err: fmt.Errorf("TaskManager %s lost: %w", id, cause)})
	}
}

func (a *attempt) deployedOn(tm, attempt string, err error) {
	a.mu.Lock()
	k := partKey{tm, attempt}
	ch := a.deployed[k]
	delete(a.deployed, k)
	a.mu.Unlock()
	if ch != nil {
		ch <- err
	}
}
