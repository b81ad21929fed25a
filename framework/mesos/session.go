package mesos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	mesos "github.com/mesos/mesos-go/api/v1/lib"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler/calls"
)

// Texts of the master's ERROR events (07-teardown-and-removed-framework,
// 06-failover).
const (
	errRemoved    = "Framework has been removed"
	errFailedOver = "Framework failed over"
)

// errRegisterAnew: the framework ID was cleared; the next subscription
// registers a new framework at once (no backoff: it cannot be refused as
// removed again).
var errRegisterAnew = errors.New("registering a new framework")

// ErrFrameworkFailedOver: another scheduler subscribed with this
// framework's id (a newer master of the job took it over).
var ErrFrameworkFailedOver = errors.New("another scheduler subscribed with this framework ID (framework failed over)")

// session is one subscription: from SUBSCRIBE to the end of its stream.
type session struct {
	r    *ResourceManager
	ctx  context.Context
	fid  string
	wake chan struct{}
}

// errAbandoned: the resource manager was abandoned to a newer master,
// which owns the framework now.
var errAbandoned = errors.New("abandoned to a newer master")

func (s *session) call(c *scheduler.Call) error {
	s.r.mu.Lock()
	abandoned := s.r.abandoned
	s.r.mu.Unlock()
	if abandoned {
		return fmt.Errorf("%s: %w", c.Type, errAbandoned)
	}
	c = c.With(calls.Framework(s.fid))
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	return s.r.cfg.Client.Call(ctx, c)
}

func (s *session) kill(id, agent string) {
	if err := s.call(calls.Kill(id, agent)); err != nil {
		s.r.log.Warn("killing a TaskManager task", "task", id, "err", err)
		return
	}
	s.r.log.Info("killing a TaskManager task", "task", id, "agent", agent)
}

// run subscribes again and again until ctx ends, with a backoff between
// attempts: a failing loop never subscribes (let alone registers a
// framework) every second. After another scheduler took the framework
// over it waits RetakeAfter first: if that was a newer master of the job,
// this one learns it is superseded meanwhile (HA fencing) and abandons;
// if it was a superseded one, this master takes the framework back.
func (r *ResourceManager) run(ctx context.Context) {
	defer close(r.done)
	backoff := r.cfg.BackoffMin
	for {
		start := time.Now()
		subscribed, err := r.subscribe(ctx)
		r.mu.Lock()
		r.subscribed, r.session = false, nil
		if err != nil && ctx.Err() == nil {
			r.lastErr = err
		}
		failedOver, closed := r.failedOver, r.closed
		r.mu.Unlock()
		if ctx.Err() != nil || closed {
			return // closed: torn down or abandoned, Close cancels the loop
		}
		r.reportStatus()
		if subscribed && time.Since(start) >= r.cfg.StableAfter {
			backoff = r.cfg.BackoffMin
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		if errors.Is(err, errRegisterAnew) {
			continue // at once, and the backoff stays as it was
		}
		if failedOver {
			wait = r.cfg.RetakeAfter
			r.log.Error("Mesos: another scheduler subscribed with this framework ID; subscribing again unless this master is superseded first",
				"framework", r.FrameworkID(), "in", wait)
		} else {
			r.log.Warn("Mesos subscription ended; subscribing again", "err", err, "in", wait.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		r.mu.Lock()
		superseded := r.superseded
		r.mu.Unlock()
		if failedOver && superseded != nil && superseded() {
			// As Abandon, from inside the loop (Abandon waits for it).
			r.log.Warn("Mesos: not taking the framework back: a newer master leads the job; abandoning it to that master", "framework", r.FrameworkID())
			r.mu.Lock()
			r.closed, r.abandoned = true, true
			r.mu.Unlock()
			return
		}
		backoff = min(2*backoff, r.cfg.BackoffMax)
	}
}

// subscribe runs one subscription; subscribed says whether SUBSCRIBED came.
func (r *ResourceManager) subscribe(ctx context.Context) (subscribed bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.Lock()
	fid := r.frameworkID
	suppressed := r.needLocked() <= 0
	r.suppressed = suppressed
	r.mu.Unlock()
	opts := FrameworkOptions{Name: r.cfg.Name, User: r.cfg.User, Role: r.cfg.Role, Principal: r.cfg.Principal, FailoverTimeout: r.cfg.FailoverTimeout}
	// The answer's headers are bounded too: a master that takes the
	// connection and never answers would hold the loop forever.
	hung := time.AfterFunc(r.cfg.SubscribeTimeout, cancel)
	stream, err := r.cfg.Client.Subscribe(sctx, SubscribeCall(opts, fid, suppressed))
	if !hung.Stop() {
		if err == nil {
			stream.Close()
		}
		return false, fmt.Errorf("SUBSCRIBE: no answer from the master within %s", r.cfg.SubscribeTimeout)
	}
	if err != nil {
		return false, err
	}
	defer stream.Close()
	evs, errc := stream.Events(sctx)
	s := &session{r: r, ctx: sctx, fid: fid, wake: make(chan struct{}, 1)}
	// The watchdog: mesos-go has none, and a master that stops sending
	// (network partition, a half-open connection) would hold the stream
	// forever. Before SUBSCRIBED it is the subscribe timeout, then about
	// twice the heartbeat interval.
	quiet := r.cfg.SubscribeTimeout
	watchdog := time.NewTimer(quiet)
	defer watchdog.Stop()
	tick := time.NewTicker(r.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return subscribed, ctx.Err()
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return subscribed, errors.New("the master ended the event stream")
			}
			return subscribed, err
		case <-watchdog.C:
			return subscribed, fmt.Errorf("no event from the master for %s: dropping the subscription", quiet)
		case <-tick.C:
			if subscribed { // no calls before SUBSCRIBED: no stream yet
				r.onTick(s)
			}
		case <-s.wake:
			if subscribed {
				r.adjust(s)
			}
		case e := <-evs:
			if e.Type == scheduler.Event_SUBSCRIBED {
				hb, err := r.onSubscribed(s, e.Subscribed)
				if err != nil {
					return false, err
				}
				subscribed = true
				quiet = 2 * hb
			} else if !subscribed && e.Type != scheduler.Event_ERROR {
				return false, fmt.Errorf("the master sent %s before SUBSCRIBED", e.Type)
			}
			if !watchdog.Stop() {
				select {
				case <-watchdog.C:
				default:
				}
			}
			watchdog.Reset(quiet)
			if err := r.handle(s, e); err != nil {
				return subscribed, err
			}
		}
	}
}

// onSubscribed takes the framework ID, keeps it, and reconciles; it returns
// the heartbeat interval.
func (r *ResourceManager) onSubscribed(s *session, sub *scheduler.Event_Subscribed) (time.Duration, error) {
	if sub == nil || sub.FrameworkID == nil || sub.FrameworkID.Value == "" {
		return 0, errors.New("SUBSCRIBED without a framework ID")
	}
	hb := 15 * time.Second // Mesos's default, when the field is absent
	if sub.HeartbeatIntervalSeconds != nil && *sub.HeartbeatIntervalSeconds > 0 {
		hb = time.Duration(*sub.HeartbeatIntervalSeconds * float64(time.Second))
	}
	id := sub.FrameworkID.Value
	s.fid = id
	r.mu.Lock()
	old := r.frameworkID
	r.frameworkID, r.subscribed, r.session, r.lastErr, r.failedOver = id, true, s, nil, false
	known := map[string]string{}
	for tid, t := range r.tasks {
		known[tid] = t.agent
	}
	r.mu.Unlock()
	r.log.Info("subscribed to Mesos", "framework", id, "master", r.cfg.Client.Leader(), "heartbeat", hb, "failover", old == id)
	if id != old && r.cfg.IDs != nil {
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		err := r.cfg.IDs.Save(ctx, id)
		cancel()
		if err != nil {
			r.log.Error("keeping the framework ID: a restarted master will register a new framework", "err", err)
		}
	}
	// Reconcile: explicitly the tasks it knows (gone ones answer
	// TASK_GONE / UNKNOWN), implicitly all the others (after a restart the
	// running ones are adopted).
	if len(known) > 0 {
		if err := s.call(calls.Reconcile(calls.ReconcileTasks(known))); err != nil {
			r.log.Warn("reconciling tasks", "err", err)
		}
	}
	if err := s.call(calls.Reconcile()); err != nil {
		r.log.Warn("reconciling tasks", "err", err)
	}
	r.adjust(s)
	return hb, nil
}

func (r *ResourceManager) handle(s *session, e *scheduler.Event) error {
	switch e.Type {
	case scheduler.Event_OFFERS:
		if e.Offers != nil {
			r.offers(s, e.Offers.Offers)
		}
	case scheduler.Event_UPDATE:
		if e.Update != nil {
			r.update(s, e.Update.Status)
		}
	case scheduler.Event_ERROR:
		msg := ""
		if e.Error != nil {
			msg = e.Error.Message
		}
		switch {
		case strings.Contains(msg, errRemoved):
			r.removed(s)
			return fmt.Errorf("Mesos: %s: %w", msg, errRegisterAnew)
		case strings.Contains(msg, errFailedOver):
			r.mu.Lock()
			r.failedOver = true
			r.mu.Unlock()
			return ErrFrameworkFailedOver
		}
		return fmt.Errorf("Mesos: %s", msg)
	case scheduler.Event_FAILURE:
		if f := e.Failure; f != nil && f.AgentID != nil {
			if f.ExecutorID != nil {
				r.log.Warn("Mesos: an executor ended", "agent", f.AgentID.Value, "executor", f.ExecutorID.Value)
			} else {
				r.log.Warn("Mesos: an agent was lost", "agent", f.AgentID.Value)
			}
		}
	case scheduler.Event_RESCIND:
		// Offers are answered at once, never held.
	}
	return nil
}

// removed: Mesos removed the framework (torn down behind its back, or
// failover_timeout passed). Its tasks are gone; its ID is stale.
func (r *ResourceManager) removed(s *session) {
	r.mu.Lock()
	old := r.frameworkID
	r.frameworkID = ""
	var lost []string
	for id, t := range r.tasks {
		if t.active() {
			lost = append(lost, id)
		}
		r.ended[id] = true
	}
	r.tasks = map[string]*task{}
	r.revive = true
	report := r.lost
	r.mu.Unlock()
	r.log.Warn("Mesos removed the framework: forgetting its ID and registering a new one", "framework", old, "tasks", len(lost))
	if r.cfg.IDs != nil {
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		if err := r.cfg.IDs.Clear(ctx); err != nil {
			r.log.Error("clearing the stale framework ID", "err", err)
		}
		cancel()
	}
	for _, id := range lost {
		if report != nil {
			report(id, fmt.Errorf("Mesos removed framework %s", old))
		}
	}
}

func (r *ResourceManager) needLocked() int {
	n := 0
	for _, t := range r.tasks {
		if t.active() {
			n++
		}
	}
	return r.want - n
}

// adjust suppresses offers when nothing is needed and revives them when
// something is.
func (r *ResourceManager) adjust(s *session) {
	r.mu.Lock()
	need := r.needLocked()
	var c *scheduler.Call
	switch {
	case r.closed:
	case need > 0 && (r.suppressed || r.revive):
		// Also when it was not suppressed: a REVIVE clears the decline
		// filters, so a replacement need not wait refuse_seconds for the
		// agents it declined.
		r.suppressed, r.revive = false, false
		c = calls.ReviveWith([]string{r.cfg.Role})
	case need <= 0 && !r.suppressed:
		r.suppressed = true
		c = calls.SuppressWith([]string{r.cfg.Role})
	}
	if need <= 0 {
		r.unfit, r.quota = nil, ""
	}
	r.mu.Unlock()
	if c == nil {
		return
	}
	if err := s.call(c); err != nil {
		r.log.Warn("Mesos: "+c.Type.String(), "err", err)
		r.mu.Lock()
		// Try again on the next tick.
		if c.Type == scheduler.Call_REVIVE {
			r.revive = true
		} else {
			r.suppressed = false
		}
		r.mu.Unlock()
		return
	}
	r.log.Info("Mesos: "+strings.ToLower(c.Type.String())+" offers", "need", need)
}

func (r *ResourceManager) onTick(s *session) {
	now := time.Now()
	type loss struct {
		id  string
		err error
	}
	var lost []loss
	r.mu.Lock()
	for id, t := range r.tasks {
		if t.active() && !t.unreachable.IsZero() && now.Sub(t.unreachable) >= r.cfg.UnreachableTimeout {
			t.replaced = true
			r.revive = true
			lost = append(lost, loss{id, fmt.Errorf("its agent has been unreachable for %s", r.cfg.UnreachableTimeout)})
		}
	}
	report := r.lost
	checkQuota := r.subscribed && r.needLocked() > 0 && now.Sub(r.quotaAt) >= 10*time.Second
	if checkQuota {
		r.quotaAt = now
	}
	r.mu.Unlock()
	for _, l := range lost {
		r.log.Warn("replacing a TaskManager on an unreachable agent", "task", l.id, "err", l.err)
		if report != nil {
			report(l.id, l.err)
		}
	}
	if checkQuota {
		go r.checkQuota(s.ctx)
	}
	r.adjust(s)
	r.reportStatus()
}

// checkQuota finds out whether the role's quota limit keeps the offers
// away, for the status.
func (r *ResourceManager) checkQuota(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	limits, err := r.cfg.Client.QuotaLimits(ctx, r.cfg.Role)
	if err != nil {
		r.log.Debug("reading the role's quota", "err", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.quota = ""
	if n := QuotaAllows(limits, r.cfg.Profile); n >= 0 && n < r.want {
		r.quota = fmt.Sprintf("role %s quota limit (%s) allows %d of %d TaskManagers", r.cfg.Role, formatLimits(limits), n, r.want)
	}
}

// quickEnd: a task that ends this soon after it started running counts as
// one that failed to start.
const quickEnd = 10 * time.Second

// Terminal says whether a task in state s has ended.
func Terminal(s mesos.TaskState) bool {
	switch s {
	case mesos.TASK_FINISHED, mesos.TASK_FAILED, mesos.TASK_KILLED, mesos.TASK_ERROR, mesos.TASK_LOST,
		mesos.TASK_DROPPED, mesos.TASK_GONE, mesos.TASK_GONE_BY_OPERATOR, mesos.TASK_UNKNOWN:
		return true
	}
	return false
}

// DescribeStatus says a status update in one line: state, reason, source
// and message ("TASK_FINISHED from SOURCE_EXECUTOR: Command exited with
// status 0").
func DescribeStatus(st mesos.TaskStatus) error {
	var b strings.Builder
	b.WriteString(st.State.String())
	// proto2 optionals: GetReason() of an unset reason reads as a real
	// reason (REASON_COMMAND_EXECUTOR_FAILED), so test presence.
	if st.Reason != nil {
		b.WriteString(" " + st.Reason.String())
	}
	if st.Source != nil {
		b.WriteString(" from " + st.Source.String())
	}
	if st.Message != nil && *st.Message != "" {
		b.WriteString(": " + *st.Message)
	}
	return errors.New(b.String())
}

// update follows a task's status; it acknowledges updates that carry a
// uuid (master-generated ones have none and must not be acked).
func (r *ResourceManager) update(s *session, st mesos.TaskStatus) {
	id, agent := st.TaskID.Value, st.GetAgentID().GetValue()
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	// Once closed the framework is being torn down: no acks (the master
	// answers "Framework cannot be found" to them).
	if len(st.UUID) > 0 && agent != "" && !closed {
		defer func() {
			if err := s.call(calls.Acknowledge(agent, id, st.UUID)); err != nil {
				r.log.Warn("acknowledging a status update", "task", id, "err", err)
			}
		}()
	}
	if st.State == nil {
		r.log.Warn("Mesos: a status update without a state", "task", id)
		return
	}
	state := *st.State
	now := time.Now()
	kill := false
	var lostErr error
	r.mu.Lock()
	t := r.tasks[id]
	switch {
	case t == nil && Terminal(state):
	case t == nil && (r.closed || r.released[id] || r.ended[id]):
		// Not ours to run: the job is over, the master dropped it, or it
		// was reported ended and replaced, yet runs.
		kill = true
	case t == nil:
		// One of this framework's tasks it does not know: started by the
		// master before a restart. It counts from now on.
		t = &task{id: id, agent: agent, state: state, launchedAt: now, everRunning: state == mesos.TASK_RUNNING}
		if state == mesos.TASK_UNREACHABLE {
			t.unreachable = now
		}
		r.tasks[id] = t
		r.want++
		r.log.Info("adopted a TaskManager task from before", "task", id, "state", state)
	default:
		if t.agent == "" {
			t.agent = agent
		}
		t.state = state
		switch {
		case Terminal(state):
			delete(r.tasks, id)
			r.ended[id] = true
			if t.active() {
				r.revive = true
				lostErr = DescribeStatus(st)
				if !t.everRunning || now.Sub(t.runningSince) < quickEnd {
					// It never ran, or ended soon after it started (a
					// binary that cannot start, a TaskManager the job
					// master refuses): hold further launches, doubling,
					// so that such tasks are not launched in a loop. A
					// quiet while resets the streak.
					if now.Sub(r.lastQuickEnd) > 2*time.Minute {
						r.failStreak = 0
					}
					r.failStreak++
					r.lastQuickEnd = now
					r.holdUntil = now.Add(min(r.cfg.LaunchHold<<min(r.failStreak-1, 6), max(time.Minute, r.cfg.LaunchHold)))
				}
			}
		case state == mesos.TASK_UNREACHABLE:
			if t.unreachable.IsZero() {
				t.unreachable = now
			}
		case state == mesos.TASK_RUNNING:
			if !t.everRunning {
				t.runningSince = now
			}
			t.everRunning = true
			if !t.unreachable.IsZero() {
				r.log.Info("a TaskManager's agent is back", "task", id, "after", now.Sub(t.unreachable).Round(time.Millisecond))
				t.unreachable = time.Time{}
			}
			kill = t.replaced || t.killAsked
			t.killAsked = t.killAsked || t.replaced
		}
	}
	report := r.lost
	r.mu.Unlock()
	level := r.log.Info
	if lostErr != nil || state == mesos.TASK_UNREACHABLE {
		level = r.log.Warn
	}
	level("TaskManager task "+strings.TrimPrefix(state.String(), "TASK_"), "task", id, "agent", agent, "status", DescribeStatus(st))
	if kill {
		s.kill(id, agent)
	}
	if lostErr != nil && report != nil {
		report(id, lostErr)
	}
	r.adjust(s)
}

// offers launches what is needed from offers and declines the rest.
func (r *ResourceManager) offers(s *session, offers []mesos.Offer) {
	now := time.Now()
	refuseFor := r.cfg.RefuseSeconds
	r.mu.Lock()
	need := r.needLocked()
	if r.closed {
		need = 0
	}
	if need > 0 && now.Before(r.holdUntil) {
		// Launches are held after failed ones: decline only until the
		// hold ends, so the offers come back then.
		need, refuseFor = 0, min(refuseFor, max(r.holdUntil.Sub(now), time.Second))
	}
	var running []Placement
	for _, t := range r.tasks {
		if t.active() && t.place.Host != "" {
			running = append(running, t.place)
		}
	}
	plan := Match(offers, Request{Role: r.cfg.Role, Profile: r.cfg.Profile, Need: need, Running: running, Constraints: r.cfg.Constraints})
	if need > 0 {
		r.unfit = plan.Unfit
	}
	type launch struct {
		offer mesos.OfferID
		ids   []string
		infos []mesos.TaskInfo
	}
	var launches []launch
	for _, a := range plan.Accept {
		l := launch{offer: a.Offer.ID}
		for _, t := range a.Tasks {
			r.seq++
			id := r.prefix + "-" + strconv.Itoa(r.seq)
			l.ids = append(l.ids, id)
			l.infos = append(l.infos, r.taskInfo(id, a, t))
			r.tasks[id] = &task{id: id, agent: a.Offer.AgentID.Value, place: a.Placement, state: mesos.TASK_STAGING, launchedAt: now}
		}
		launches = append(launches, l)
	}
	r.mu.Unlock()
	refuse := calls.RefuseSeconds(refuseFor)
	for _, l := range launches {
		err := s.call(calls.Accept(calls.OfferOperations{calls.OpLaunch(l.infos...)}.WithOffers(l.offer)).With(refuse))
		if err != nil {
			r.log.Error("launching TaskManagers", "offer", l.offer.Value, "err", err)
			r.mu.Lock()
			for _, id := range l.ids {
				delete(r.tasks, id)
			}
			r.mu.Unlock()
			continue
		}
		r.log.Info("launching TaskManagers", "offer", l.offer.Value, "tasks", l.ids)
	}
	if len(plan.Decline) > 0 {
		if err := s.call(calls.Decline(plan.Decline...).With(refuse)); err != nil {
			r.log.Warn("declining offers", "err", err)
		}
	}
	r.adjust(s)
}

// taskInfo is a TaskManager command task: the sluice binary fetched into
// the sandbox, run as `./sluice taskmanager` with the ports it was given
// (Mesos sets no PORT0: the ports go on the command line).
func (r *ResourceManager) taskInfo(id string, a Accept, t Task) mesos.TaskInfo {
	args := []string{"sluice", "taskmanager"}
	if r.cfg.HADir != "" {
		args = append(args, "--ha-dir", r.cfg.HADir)
	} else {
		args = append(args, "--master", r.master)
	}
	// Local state in the sandbox (the task's working directory): the
	// agent removes it with the sandbox.
	args = append(args, "--slots", strconv.Itoa(max(r.cfg.Slots, 1)), "--resource-id", id, "--local-dir", "local")
	if len(t.Ports) > 0 {
		p := strconv.FormatUint(t.Ports[0], 10)
		args = append(args, "--data", "0.0.0.0:"+p, "--advertise", a.Offer.Hostname+":"+p)
	}
	if len(t.Ports) > 1 {
		args = append(args, "--metrics", "0.0.0.0:"+strconv.FormatUint(t.Ports[1], 10))
	}
	args = append(args, r.cfg.Args...)
	return mesos.TaskInfo{
		Name:      "sluice taskmanager " + id,
		TaskID:    mesos.TaskID{Value: id},
		AgentID:   a.Offer.AgentID,
		Resources: t.Resources,
		Command: &mesos.CommandInfo{
			URIs:      []mesos.CommandInfo_URI{{Value: r.cfg.BinaryURI, Executable: ptr(true), Extract: ptr(false), OutputFile: ptr("sluice")}},
			Shell:     ptr(false),
			Value:     ptr("./sluice"),
			Arguments: args,
		},
	}
}
