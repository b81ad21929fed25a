package mesostest

import (
	"encoding/base64"
	"fmt"
	"sort"
	"time"

	mesos "github.com/mesos/mesos-go/api/v1/lib"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
)

// The master's state machine for frameworks, offers and calls. Every
// method ending in Locked runs with Master.mu held; events go to a
// framework's stream queue and are written by the stream's goroutine.

type framework struct {
	id             string
	info           mesos.FrameworkInfo
	roles          []string
	multiRole      bool
	partitionAware bool
	killingState   bool
	checkpoint     bool
	stream         *stream
	suppressed     map[string]bool
	filters        []filterEntry
	failoverTimer  *time.Timer
	tasks          map[string]*task // non-terminal or terminal-but-unacked tasks
	unreachable    map[string]*task // tasks on unreachable agents
}

type filterEntry struct {
	agentID string
	res     Resources
	until   time.Time
}

func (fw *framework) send(ev *scheduler.Event) {
	if fw.stream != nil {
		fw.stream.send(ev)
	}
}

func (fw *framework) setInfo(info mesos.FrameworkInfo) {
	fw.info = info
	fw.roles = nil
	fw.multiRole, fw.partitionAware, fw.killingState = false, false, false
	for _, c := range info.Capabilities {
		switch c.Type {
		case mesos.FrameworkInfo_Capability_MULTI_ROLE:
			fw.multiRole = true
		case mesos.FrameworkInfo_Capability_PARTITION_AWARE:
			fw.partitionAware = true
		case mesos.FrameworkInfo_Capability_TASK_KILLING_STATE:
			fw.killingState = true
		}
	}
	if fw.multiRole {
		fw.roles = append(fw.roles, info.Roles...)
	} else {
		role := "*"
		if info.Role != nil && *info.Role != "" {
			role = *info.Role
		}
		fw.roles = []string{role}
	}
	fw.checkpoint = info.Checkpoint != nil && *info.Checkpoint
}

// allocRole is the role written into allocation_info (MULTI_ROLE only).
func (fw *framework) allocRole(role string) string {
	if fw.multiRole {
		return role
	}
	return ""
}

func (fw *framework) lostState() mesos.TaskState {
	if fw.partitionAware {
		return mesos.TASK_UNREACHABLE
	}
	return mesos.TASK_LOST
}

func errorEvent(msg string) *scheduler.Event {
	return &scheduler.Event{Type: scheduler.Event_ERROR, Error: &scheduler.Event_Error{Message: msg}}
}

// subscribe registers or fails over a framework and returns its stream.
func (m *Master) subscribe(call *scheduler.Call, protobuf bool) *stream {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	info := call.Subscribe.FrameworkInfo
	var fid string
	if call.FrameworkID != nil {
		fid = call.FrameworkID.Value
	}
	if fid != "" && m.removed[fid] {
		s := newStream(fid, protobuf)
		s.end(errorEvent("Framework has been removed"))
		return s
	}
	multi := false
	for _, c := range info.Capabilities {
		if c.Type == mesos.FrameworkInfo_Capability_MULTI_ROLE {
			multi = true
		}
	}
	if len(info.Roles) > 0 && !multi {
		s := newStream(fid, protobuf)
		s.end(errorEvent("'FrameworkInfo.roles' must not be set when the framework is not MULTI_ROLE capable"))
		return s
	}
	fw := m.frameworks[fid]
	if fw != nil {
		if fw.failoverTimer != nil {
			fw.failoverTimer.Stop()
			fw.failoverTimer = nil
		}
		if fw.stream != nil {
			fw.stream.end(errorEvent("Framework failed over"))
			m.log.Info("framework failed over", "framework", fid)
		}
		m.dropOffersLocked(fw, false)
		fw.filters = nil
	} else {
		if fid == "" {
			fid = fmt.Sprintf("%s-%04d", m.id, m.nextFw)
			m.nextFw++
		}
		fw = &framework{id: fid, suppressed: map[string]bool{}, tasks: map[string]*task{}, unreachable: map[string]*task{}}
		m.frameworks[fid] = fw
		m.fwOrder = append(m.fwOrder, fid)
		m.log.Info("framework registered", "framework", fid, "name", info.Name)
	}
	info.ID = &mesos.FrameworkID{Value: fid}
	fw.setInfo(*info)
	// The subscription says which roles are suppressed (none by default).
	fw.suppressed = map[string]bool{}
	for _, r := range call.Subscribe.SuppressedRoles {
		if hasRole(fw.roles, r) {
			fw.suppressed[r] = true
		}
	}
	s := newStream(fid, protobuf)
	fw.stream = s
	s.send(&scheduler.Event{Type: scheduler.Event_SUBSCRIBED, Subscribed: &scheduler.Event_Subscribed{
		FrameworkID:              &mesos.FrameworkID{Value: fid},
		HeartbeatIntervalSeconds: ptr(m.cfg.HeartbeatInterval.Seconds()),
		MasterInfo:               m.masterInfo(),
	}})
	s.send(heartbeat)
	m.triggerAllocation()
	return s
}

// streamClosed runs when a SUBSCRIBE response ends or its connection drops.
func (m *Master) streamClosed(s *stream) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fw := m.frameworks[s.fwID]
	if fw == nil || fw.stream != s || m.closed {
		return
	}
	fw.stream = nil
	m.log.Info("framework disconnected", "framework", fw.id)
	m.dropOffersLocked(fw, false)
	fw.filters = nil
	timeout := time.Duration(0)
	if fw.info.FailoverTimeout != nil {
		timeout = time.Duration(*fw.info.FailoverTimeout * float64(time.Second))
	}
	if m.cfg.MaxFailoverTimeout > 0 && timeout > m.cfg.MaxFailoverTimeout {
		timeout = m.cfg.MaxFailoverTimeout
	}
	id := fw.id
	fw.failoverTimer = time.AfterFunc(timeout, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		f := m.frameworks[id]
		if f == nil || f.stream != nil || m.closed {
			return
		}
		m.log.Info("framework failover timeout expired", "framework", id)
		m.removeFrameworkLocked(f)
	})
}

// removeFrameworkLocked tears a framework down: its stream ends without an
// event, its tasks are killed without updates, and its ID is refused later.
func (m *Master) removeFrameworkLocked(fw *framework) {
	if fw.failoverTimer != nil {
		fw.failoverTimer.Stop()
	}
	if fw.stream != nil {
		fw.stream.end(nil)
		fw.stream = nil
	}
	m.dropOffersLocked(fw, false)
	for _, t := range fw.tasks {
		m.discardTaskLocked(t, true)
	}
	for _, t := range fw.unreachable {
		m.discardTaskLocked(t, true)
	}
	delete(m.frameworks, fw.id)
	for i, id := range m.fwOrder {
		if id == fw.id {
			m.fwOrder = append(m.fwOrder[:i], m.fwOrder[i+1:]...)
			break
		}
	}
	m.removed[fw.id] = true
	m.completed = append(m.completed, fw.info)
}

// dropOffersLocked removes a framework's outstanding offers; rescind sends RESCIND.
func (m *Master) dropOffersLocked(fw *framework, rescind bool) {
	for id, o := range m.offers {
		if o.fwID != fw.id {
			continue
		}
		delete(m.offers, id)
		if rescind {
			fw.send(rescindEvent(id))
		}
	}
}

func rescindEvent(offerID string) *scheduler.Event {
	return &scheduler.Event{Type: scheduler.Event_RESCIND, Rescind: &scheduler.Event_Rescind{OfferID: mesos.OfferID{Value: offerID}}}
}

func (m *Master) dispatchLocked(fw *framework, c *scheduler.Call) {
	switch c.Type {
	case scheduler.Call_TEARDOWN:
		m.log.Info("framework teardown", "framework", fw.id)
		m.removeFrameworkLocked(fw)
	case scheduler.Call_ACCEPT:
		m.acceptLocked(fw, c.Accept)
	case scheduler.Call_DECLINE:
		m.declineLocked(fw, c.Decline.OfferIDs, c.Decline.Filters)
	case scheduler.Call_REVIVE:
		var roles []string
		if c.Revive != nil {
			roles = c.Revive.Roles
		}
		if len(roles) == 0 {
			roles = fw.roles
			fw.filters = nil
		}
		for _, r := range roles {
			if !hasRole(fw.roles, r) {
				m.log.Warn(fmt.Sprintf("Dropping REVIVE call from framework %s (%s): revive role '%s' is not one of the frameworks's subscribed roles", fw.id, fw.info.Name, r))
				return
			}
		}
		for _, r := range roles {
			delete(fw.suppressed, r)
		}
		fw.filters = nil
		m.triggerAllocation()
	case scheduler.Call_SUPPRESS:
		var roles []string
		if c.Suppress != nil {
			roles = c.Suppress.Roles
		}
		if len(roles) == 0 {
			roles = fw.roles
		}
		for _, r := range roles {
			if !hasRole(fw.roles, r) {
				m.log.Warn(fmt.Sprintf("Dropping SUPPRESS call from framework %s (%s): suppression role '%s' is not one of the frameworks's subscribed roles", fw.id, fw.info.Name, r))
				return
			}
		}
		for _, r := range roles {
			fw.suppressed[r] = true
		}
	case scheduler.Call_KILL:
		m.killLocked(fw, c.Kill)
	case scheduler.Call_ACKNOWLEDGE:
		m.acknowledgeLocked(fw, c.Acknowledge)
	case scheduler.Call_RECONCILE:
		m.reconcileLocked(fw, c.Reconcile.Tasks)
	case scheduler.Call_UPDATE_FRAMEWORK:
		u := c.UpdateFramework
		fw.setInfo(u.FrameworkInfo)
		fw.suppressed = map[string]bool{}
		for _, r := range u.SuppressedRoles {
			if hasRole(fw.roles, r) {
				fw.suppressed[r] = true
			}
		}
		// Offers for roles the framework left are rescinded.
		var ids []string
		for id, o := range m.offers {
			if o.fwID == fw.id && !hasRole(fw.roles, o.role) {
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		for _, id := range ids {
			delete(m.offers, id)
			fw.send(rescindEvent(id))
		}
		m.triggerAllocation()
	case scheduler.Call_SHUTDOWN, scheduler.Call_MESSAGE, scheduler.Call_REQUEST:
		// Custom executors are not emulated; the master accepts and drops these.
	default:
		m.log.Warn("unsupported call", "type", c.Type.String(), "framework", fw.id)
	}
}

// ---- offers ----

type offer struct {
	id, fwID, agentID, role string
	res                     Resources
}

func (m *Master) filterLocked(fw *framework, agentID string, res Resources, f *mesos.Filters) {
	refuse := 5.0
	if f != nil && f.RefuseSeconds != nil {
		refuse = *f.RefuseSeconds
	}
	if refuse <= 0 || res.Empty() {
		return
	}
	fw.filters = append(fw.filters, filterEntry{agentID: agentID, res: res, until: time.Now().Add(time.Duration(refuse * float64(time.Second)))})
}

func (m *Master) declineLocked(fw *framework, ids []mesos.OfferID, f *mesos.Filters) {
	for _, id := range ids {
		o := m.offers[id.Value]
		if o == nil || o.fwID != fw.id {
			m.log.Warn("Ignoring decline of offer " + id.Value + " since it is no longer valid")
			continue
		}
		delete(m.offers, id.Value)
		m.filterLocked(fw, o.agentID, o.res, f)
	}
}

func (m *Master) allocateLocked() {
	now := time.Now()
	in := allocInput{Quotas: map[string]roleQuota{}, Consumed: map[string]map[string]int64{}}
	offered := map[string]Resources{}
	for _, o := range m.offers {
		if _, ok := offered[o.agentID]; !ok {
			offered[o.agentID] = newResources()
		}
		offered[o.agentID] = offered[o.agentID].Add(o.res)
		addConsumed(in.Consumed, o.role, o.res)
	}
	fwCPUs := map[string]int64{}
	for _, o := range m.offers {
		fwCPUs[o.fwID] += o.res.Scalars["cpus"]
	}
	for _, a := range m.agents {
		for _, t := range a.tasks {
			if !t.freed {
				addConsumed(in.Consumed, t.role, t.res)
				fwCPUs[t.fwID] += t.res.Scalars["cpus"]
			}
		}
		if a.state != agentActive {
			continue
		}
		avail := a.available()
		if o, ok := offered[a.id]; ok {
			avail = avail.Sub(o)
		}
		in.Agents = append(in.Agents, allocAgent{ID: a.id, Available: avail})
	}
	for _, id := range m.fwOrder {
		fw := m.frameworks[id]
		if fw.stream == nil {
			continue
		}
		af := allocFramework{ID: fw.id, CPUs: fwCPUs[fw.id]}
		for _, r := range fw.roles {
			if !fw.suppressed[r] {
				af.Roles = append(af.Roles, r)
			}
		}
		kept := fw.filters[:0]
		for _, f := range fw.filters {
			if f.until.After(now) {
				kept = append(kept, f)
				af.Filters = append(af.Filters, allocFilter{AgentID: f.agentID, Resources: f.res})
			}
		}
		fw.filters = kept
		if len(af.Roles) > 0 {
			in.Frameworks = append(in.Frameworks, af)
		}
	}
	for role, q := range m.quotas {
		in.Quotas[role] = roleQuota{Guarantees: q.guarantees, Limits: q.limits}
	}
	allocs := allocate(in)
	byFw := map[string][]mesos.Offer{}
	var fwSeen []string
	for _, al := range allocs {
		fw := m.frameworks[al.FrameworkID]
		a := m.agentByID[al.AgentID]
		o := &offer{id: fmt.Sprintf("%s-O%d", m.id, m.nextOffer), fwID: fw.id, agentID: a.id, role: al.Role, res: al.Resources}
		m.nextOffer++
		m.offers[o.id] = o
		po := mesos.Offer{
			ID:          mesos.OfferID{Value: o.id},
			FrameworkID: mesos.FrameworkID{Value: fw.id},
			AgentID:     mesos.AgentID{Value: a.id},
			Hostname:    a.hostname,
			URL: &mesos.URL{Scheme: "http", Address: mesos.Address{Hostname: ptr(a.hostname), IP: ptr("127.0.0.1"), Port: int32(a.port)},
				Path: ptr("/slave(1)")},
			Resources:  o.res.toProto(fw.allocRole(o.role)),
			Attributes: a.attributes,
		}
		if fw.multiRole {
			po.AllocationInfo = &mesos.Resource_AllocationInfo{Role: ptr(o.role)}
		}
		if _, ok := byFw[fw.id]; !ok {
			fwSeen = append(fwSeen, fw.id)
		}
		byFw[fw.id] = append(byFw[fw.id], po)
	}
	for _, id := range fwSeen {
		m.frameworks[id].send(&scheduler.Event{Type: scheduler.Event_OFFERS, Offers: &scheduler.Event_Offers{Offers: byFw[id]}})
	}
}

func addConsumed(c map[string]map[string]int64, role string, r Resources) {
	if c[role] == nil {
		c[role] = map[string]int64{}
	}
	for n, v := range r.Scalars {
		c[role][n] += v
	}
}

func masterUpdate(taskID string, state mesos.TaskState, reason mesos.TaskStatus_Reason, msg string, agentID string) *mesos.TaskStatus {
	st := &mesos.TaskStatus{
		TaskID:    mesos.TaskID{Value: taskID},
		State:     state.Enum(),
		Message:   ptr(msg),
		Source:    mesos.SOURCE_MASTER.Enum(),
		Reason:    reason.Enum(),
		Timestamp: ptr(nowSeconds()),
	}
	if agentID != "" {
		st.AgentID = &mesos.AgentID{Value: agentID}
	}
	return st
}

func updateEvent(st *mesos.TaskStatus) *scheduler.Event {
	return &scheduler.Event{Type: scheduler.Event_UPDATE, Update: &scheduler.Event_Update{Status: *st}}
}

func (m *Master) acceptLocked(fw *framework, acc *scheduler.Call_Accept) {
	// Every offer must be valid, or no task launches.
	var offers []*offer
	var invalid string
	for _, id := range acc.OfferIDs {
		o := m.offers[id.Value]
		if o == nil || o.fwID != fw.id {
			invalid = id.Value
			m.log.Warn("Ignoring accept of offer " + id.Value + " since it is no longer valid")
			continue
		}
		offers = append(offers, o)
	}
	if invalid == "" && len(offers) > 1 {
		for _, o := range offers[1:] {
			if o.agentID != offers[0].agentID {
				invalid = o.id
			}
		}
	}
	if invalid != "" || len(offers) == 0 {
		for _, o := range offers {
			delete(m.offers, o.id)
		}
		lost := mesos.TASK_LOST
		if fw.partitionAware {
			lost = mesos.TASK_DROPPED
		}
		msg := "Task launched with invalid offers: Offer " + invalid + " is no longer valid"
		for _, op := range acc.Operations {
			for _, ti := range launchTasks(op) {
				fw.send(updateEvent(masterUpdate(ti.TaskID.Value, lost, mesos.REASON_INVALID_OFFERS, msg, ti.AgentID.Value)))
			}
		}
		return
	}
	a := m.agentByID[offers[0].agentID]
	role := offers[0].role
	remaining := newResources()
	for _, o := range offers {
		delete(m.offers, o.id)
		remaining = remaining.Add(o.res)
	}
	for _, op := range acc.Operations {
		if op.Type == mesos.Offer_Operation_LAUNCH_GROUP {
			for _, ti := range launchTasks(op) {
				fw.send(updateEvent(masterUpdate(ti.TaskID.Value, mesos.TASK_ERROR, mesos.REASON_TASK_INVALID,
					"LAUNCH_GROUP is not supported by mesostest", a.id)))
			}
			continue
		}
		for _, ti := range launchTasks(op) {
			need, roles := fromProto(ti.Resources)
			if len(roles) == 0 {
				roles = []string{role}
			}
			needRole := roles[0]
			var errMsg string
			switch {
			case fw.tasks[ti.TaskID.Value] != nil || fw.unreachable[ti.TaskID.Value] != nil:
				errMsg = "Task has duplicate ID: " + ti.TaskID.Value
			case ti.AgentID.Value != a.id:
				errMsg = fmt.Sprintf("Task uses invalid agent: %s", ti.AgentID.Value)
			case ti.Command == nil:
				errMsg = "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present"
			case needRole != role || len(roles) > 1 || !remaining.Contains(need):
				errMsg = fmt.Sprintf("Total resources %s required by task and its executor is more than available %s",
					formatMesos(need, needRole), formatMesos(remaining, role))
			}
			if errMsg != "" {
				fw.send(updateEvent(masterUpdate(ti.TaskID.Value, mesos.TASK_ERROR, mesos.REASON_TASK_INVALID, errMsg, a.id)))
				continue
			}
			remaining = remaining.Sub(need)
			m.launchLocked(fw, a, ti, role, need)
		}
	}
	m.filterLocked(fw, a.id, remaining, acc.Filters)
}

func launchTasks(op mesos.Offer_Operation) []mesos.TaskInfo {
	switch {
	case op.Launch != nil:
		return op.Launch.TaskInfos
	case op.LaunchGroup != nil:
		return op.LaunchGroup.TaskGroup.Tasks
	}
	return nil
}

func (m *Master) killLocked(fw *framework, k *scheduler.Call_Kill) {
	t := fw.tasks[k.TaskID.Value]
	if t == nil || t.agent.state == agentUnreachable {
		var agentID string
		if k.AgentID != nil {
			agentID = k.AgentID.Value
		}
		m.reconcileOneLocked(fw, k.TaskID.Value, agentID)
		return
	}
	m.killTaskLocked(t)
}

func (m *Master) acknowledgeLocked(fw *framework, ack *scheduler.Call_Acknowledge) {
	t := fw.tasks[ack.TaskID.Value]
	if t == nil || len(t.updates) == 0 || string(t.updates[0].UUID) != string(ack.UUID) {
		m.log.Debug("acknowledgement for an unknown update", "task", ack.TaskID.Value, "uuid", base64.StdEncoding.EncodeToString(ack.UUID))
		return
	}
	m.ackedLocked(t)
}

func (m *Master) reconcileLocked(fw *framework, tasks []scheduler.Call_Reconcile_Task) {
	if len(tasks) == 0 {
		for _, id := range sortedTaskIDs(fw.tasks) {
			t := fw.tasks[id]
			if t.agent.state == agentUnreachable {
				continue
			}
			fw.send(updateEvent(t.reconcileStatus()))
		}
		return
	}
	for _, rt := range tasks {
		var agentID string
		if rt.AgentID != nil {
			agentID = rt.AgentID.Value
		}
		m.reconcileOneLocked(fw, rt.TaskID.Value, agentID)
	}
}

func (m *Master) reconcileOneLocked(fw *framework, taskID, agentID string) {
	if t := fw.unreachable[taskID]; t != nil {
		st := masterUpdate(taskID, fw.lostState(), mesos.REASON_RECONCILIATION, "Reconciliation: Task is unreachable", t.agent.id)
		st.UnreachableTime = &mesos.TimeInfo{Nanoseconds: t.unreachableNanos}
		fw.send(updateEvent(st))
		return
	}
	if t := fw.tasks[taskID]; t != nil {
		fw.send(updateEvent(t.reconcileStatus()))
		return
	}
	unknown := mesos.TASK_LOST
	gone := mesos.TASK_LOST
	if fw.partitionAware {
		unknown, gone = mesos.TASK_UNKNOWN, mesos.TASK_GONE
	}
	if agentID != "" {
		if a := m.agentByID[agentID]; a != nil && a.state != agentUnreachable {
			fw.send(updateEvent(masterUpdate(taskID, gone, mesos.REASON_RECONCILIATION, "Reconciliation: Task is unknown to the agent", agentID)))
			return
		}
	}
	fw.send(updateEvent(masterUpdate(taskID, unknown, mesos.REASON_RECONCILIATION, "Reconciliation: Task is unknown", agentID)))
}
