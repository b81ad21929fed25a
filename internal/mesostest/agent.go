package mesostest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	mesos "github.com/mesos/mesos-go/api/v1/lib"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
)

type agentState int

const (
	agentActive       agentState = iota
	agentDisconnected            // its connection dropped; not yet unreachable
	agentUnreachable             // marked unreachable after the ping timeout
)

type agent struct {
	m          *Master
	id         string
	hostname   string
	port       int
	attributes []mesos.Attribute
	total      Resources
	state      agentState
	// partitioned: the master cannot reach it but its processes run on.
	partitioned bool
	// dead: the agent process and its tasks were killed.
	dead      bool
	pingTimer *time.Timer
	tasks     map[string]*task // key: framework/task
}

// canTalk reports whether updates from the agent reach the master.
func (a *agent) canTalk() bool { return a.state == agentActive && !a.partitioned && !a.dead }

// available is what the agent has that no task holds.
func (a *agent) available() Resources {
	r := a.total.Clone()
	for _, t := range a.tasks {
		if !t.freed {
			r = r.Sub(t.res)
		}
	}
	return r
}

type task struct {
	fwID, id    string
	agent       *agent
	role        string
	res         Resources
	info        mesos.TaskInfo
	checkpoint  bool
	state       mesos.TaskState // the latest state the master forwarded
	containerID string
	sandbox     string
	pid         int
	started     bool
	exited      bool
	killing     bool
	discarded   bool
	freed       bool                // its resources went back to the agent
	updates     []*mesos.TaskStatus // the agent's status update stream; [0] awaits its ack
	retry       *time.Timer
	// unreachableNanos is when its agent was marked unreachable.
	unreachableNanos int64
}

func (t *task) key() string { return t.fwID + "/" + t.id }

func (t *task) containerStatus() *mesos.ContainerStatus {
	if !t.started {
		return nil
	}
	cs := &mesos.ContainerStatus{
		ContainerID: &mesos.ContainerID{Value: t.containerID},
		NetworkInfos: []mesos.NetworkInfo{{IPAddresses: []mesos.NetworkInfo_IPAddress{{
			Protocol: mesos.IPv4.Enum(), IPAddress: ptr("127.0.0.1"),
		}}}},
	}
	if t.pid > 0 {
		cs.ExecutorPID = ptr(uint32(t.pid))
	}
	return cs
}

// reconcileStatus is the master's answer to a reconciliation for a known task.
func (t *task) reconcileStatus() *mesos.TaskStatus {
	st := masterUpdate(t.id, t.state, mesos.REASON_RECONCILIATION, "Reconciliation: Latest task state", t.agent.id)
	st.ContainerStatus = t.containerStatus()
	return st
}

// agentLatest is the newest state the agent knows of.
func (t *task) agentLatest() mesos.TaskState {
	if n := len(t.updates); n > 0 {
		return *t.updates[n-1].State
	}
	return t.state
}

func isTerminal(s mesos.TaskState) bool {
	switch s {
	case mesos.TASK_FINISHED, mesos.TASK_FAILED, mesos.TASK_KILLED, mesos.TASK_ERROR,
		mesos.TASK_LOST, mesos.TASK_DROPPED, mesos.TASK_GONE, mesos.TASK_GONE_BY_OPERATOR:
		return true
	}
	return false
}

func sortedTaskIDs(m map[string]*task) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (m *Master) launchLocked(fw *framework, a *agent, ti mesos.TaskInfo, role string, need Resources) {
	t := &task{
		fwID: fw.id, id: ti.TaskID.Value, agent: a, role: role, res: need, info: ti,
		checkpoint: fw.checkpoint, state: mesos.TASK_STAGING, containerID: newUUID(),
	}
	t.sandbox = filepath.Join(m.cfg.WorkDir, "slaves", a.id, "frameworks", fw.id, "executors", t.id, "runs", t.containerID)
	fw.tasks[t.id] = t
	a.tasks[t.key()] = t
	m.log.Info("launching task", "task", t.id, "framework", fw.id, "agent", a.id, "resources", formatMesos(need, ""))
	m.procs.Add(1)
	go m.runTask(t)
}

// agentUpdateLocked queues an update on the agent's status update stream.
func (m *Master) agentUpdateLocked(t *task, state mesos.TaskState, source mesos.TaskStatus_Source, reason *mesos.TaskStatus_Reason, msg string) {
	if t.discarded {
		return
	}
	st := &mesos.TaskStatus{
		TaskID:     mesos.TaskID{Value: t.id},
		State:      state.Enum(),
		Source:     source.Enum(),
		Reason:     reason,
		AgentID:    &mesos.AgentID{Value: t.agent.id},
		ExecutorID: &mesos.ExecutorID{Value: t.id},
		Timestamp:  ptr(nowSeconds()),
		UUID:       newUUIDBytes(),
	}
	if msg != "" {
		st.Message = ptr(msg)
	}
	if source == mesos.SOURCE_EXECUTOR {
		st.ContainerStatus = t.containerStatus()
	}
	t.updates = append(t.updates, st)
	if len(t.updates) == 1 {
		m.forwardLocked(t)
	}
}

// forwardLocked sends the head of the task's update stream to the master,
// which forwards it, and arms the agent's retry.
func (m *Master) forwardLocked(t *task) {
	if len(t.updates) == 0 || t.discarded || !t.agent.canTalk() || m.closed {
		return
	}
	st := t.updates[0]
	t.state = *st.State
	if isTerminal(t.state) {
		t.freed = true
	}
	if fw := m.frameworks[t.fwID]; fw != nil {
		fw.send(updateEvent(st))
	}
	if t.retry != nil {
		t.retry.Stop()
	}
	t.retry = time.AfterFunc(m.cfg.StatusUpdateRetry, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if len(t.updates) > 0 && t.updates[0] == st {
			m.forwardLocked(t)
		}
	})
}

func (m *Master) ackedLocked(t *task) {
	if t.retry != nil {
		t.retry.Stop()
		t.retry = nil
	}
	head := t.updates[0]
	t.updates = t.updates[1:]
	if isTerminal(*head.State) {
		m.completeLocked(t)
		return
	}
	m.forwardLocked(t)
}

// completeLocked forgets a task whose terminal update was acknowledged.
func (m *Master) completeLocked(t *task) {
	t.discarded = true
	if t.retry != nil {
		t.retry.Stop()
	}
	delete(t.agent.tasks, t.key())
	if fw := m.frameworks[t.fwID]; fw != nil {
		if fw.tasks[t.id] == t {
			delete(fw.tasks, t.id)
		}
		if fw.unreachable[t.id] == t {
			delete(fw.unreachable, t.id)
		}
	}
}

// discardTaskLocked drops a task without telling its framework (teardown,
// agent loss); kill ends its processes.
func (m *Master) discardTaskLocked(t *task, kill bool) {
	m.completeLocked(t)
	t.freed = true
	if kill && t.pid > 0 && !t.exited {
		m.signalLocked(t, syscall.SIGTERM)
		pid := t.pid
		time.AfterFunc(m.cfg.KillGracePeriod, func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			if !t.exited {
				syscall.Kill(-pid, syscall.SIGKILL)
			}
		})
	}
}

func (m *Master) signalLocked(t *task, sig syscall.Signal) {
	if t.pid > 0 && !t.exited {
		syscall.Kill(-t.pid, sig)
	}
}

func (m *Master) killTaskLocked(t *task) {
	if t.killing || t.exited || !t.agent.canTalk() {
		return
	}
	t.killing = true
	if !t.started {
		return // runTask sees the flag
	}
	fw := m.frameworks[t.fwID]
	if fw != nil && fw.killingState {
		m.agentUpdateLocked(t, mesos.TASK_KILLING, mesos.SOURCE_EXECUTOR, nil, "")
	}
	m.signalLocked(t, syscall.SIGTERM)
	time.AfterFunc(m.cfg.KillGracePeriod, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.signalLocked(t, syscall.SIGKILL)
	})
}

func signalName(s syscall.Signal) string {
	n := s.String()
	if n == "" {
		return strconv.Itoa(int(s))
	}
	return strings.ToUpper(n[:1]) + n[1:]
}

// runTask is the agent and command executor for one task: sandbox, fetcher,
// process, and the updates that follow.
func (m *Master) runTask(t *task) {
	defer m.procs.Done()
	fail := func(reason mesos.TaskStatus_Reason, msg string) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if !t.discarded && !t.agent.dead {
			m.agentUpdateLocked(t, mesos.TASK_FAILED, mesos.SOURCE_AGENT, reason.Enum(), msg)
		}
		t.exited = true
	}
	if err := os.MkdirAll(t.sandbox, 0o750); err != nil {
		fail(mesos.REASON_CONTAINER_LAUNCH_FAILED, "Failed to launch container: "+err.Error())
		return
	}
	os.Chmod(t.sandbox, 0o750)
	latest := filepath.Join(filepath.Dir(t.sandbox), "latest")
	os.Remove(latest)
	os.Symlink(t.sandbox, latest)
	stdout, err1 := os.Create(filepath.Join(t.sandbox, "stdout"))
	stderr, err2 := os.Create(filepath.Join(t.sandbox, "stderr"))
	if err1 != nil || err2 != nil {
		fail(mesos.REASON_CONTAINER_LAUNCH_FAILED, "Failed to launch container: cannot create stdout/stderr")
		return
	}
	defer stdout.Close()
	defer stderr.Close()
	cmdInfo := t.info.Command
	if err := m.fetch(cmdInfo.URIs, t.sandbox, stderr); err != nil {
		fail(mesos.REASON_CONTAINER_LAUNCH_FAILED,
			fmt.Sprintf("Failed to launch container: Failed to fetch all URIs for container '%s': exited with status 1", t.containerID))
		return
	}

	var cmd *exec.Cmd
	if cmdInfo.Shell == nil || *cmdInfo.Shell {
		cmd = exec.Command("/bin/sh", "-c", cmdInfo.GetValue())
	} else {
		cmd = &exec.Cmd{Path: cmdInfo.GetValue(), Args: cmdInfo.Arguments}
		if len(cmd.Args) == 0 {
			cmd.Args = []string{cmdInfo.GetValue()}
		}
		if !strings.Contains(cmd.Path, "/") {
			if p, err := exec.LookPath(cmd.Path); err == nil {
				cmd.Path = p
			}
		}
	}
	cmd.Dir = t.sandbox
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.Env = m.taskEnv(t)
	cmd.SysProcAttr = sysProcAttr()

	m.mu.Lock()
	if t.discarded || t.agent.dead || m.closed {
		t.exited = true
		m.mu.Unlock()
		return
	}
	if err := cmd.Start(); err != nil {
		t.exited = true
		m.agentUpdateLocked(t, mesos.TASK_FAILED, mesos.SOURCE_EXECUTOR, nil, "Failed to launch command: "+err.Error())
		m.mu.Unlock()
		return
	}
	t.pid = cmd.Process.Pid
	t.started = true
	m.running[t] = struct{}{}
	m.agentUpdateLocked(t, mesos.TASK_STARTING, mesos.SOURCE_EXECUTOR, nil, "")
	m.agentUpdateLocked(t, mesos.TASK_RUNNING, mesos.SOURCE_EXECUTOR, nil, "")
	if t.killing {
		t.killing = false
		m.killTaskLocked(t)
	}
	m.mu.Unlock()

	err := cmd.Wait()

	m.mu.Lock()
	defer m.mu.Unlock()
	t.exited = true
	delete(m.running, t)
	if t.discarded || t.agent.dead || m.closed {
		return
	}
	state := mesos.TASK_FINISHED
	var msg string
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ok && ws.Signaled():
		msg = "Command terminated with signal " + signalName(ws.Signal())
		state = mesos.TASK_FAILED
	case ok:
		msg = fmt.Sprintf("Command exited with status %d", ws.ExitStatus())
		if ws.ExitStatus() != 0 {
			state = mesos.TASK_FAILED
		}
	default:
		msg = fmt.Sprintf("Command exited: %v", err)
		state = mesos.TASK_FAILED
	}
	if t.killing {
		state = mesos.TASK_KILLED
	}
	m.agentUpdateLocked(t, state, mesos.SOURCE_EXECUTOR, nil, msg)
}

func (m *Master) taskEnv(t *task) []string {
	a := t.agent
	ckpt := "0"
	if t.checkpoint {
		ckpt = "1"
	}
	env := map[string]string{
		"LIBPROCESS_IP":                        "127.0.0.1",
		"LIBPROCESS_PORT":                      "0",
		"MESOS_AGENT_ENDPOINT":                 fmt.Sprintf("127.0.0.1:%d", a.port),
		"MESOS_ALLOCATION_ROLE":                t.role,
		"MESOS_CHECKPOINT":                     ckpt,
		"MESOS_DIRECTORY":                      t.sandbox,
		"MESOS_EXECUTOR_ID":                    t.id,
		"MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "5secs",
		"MESOS_FRAMEWORK_ID":                   t.fwID,
		"MESOS_HTTP_COMMAND_EXECUTOR":          "0",
		"MESOS_SANDBOX":                        t.sandbox,
		"MESOS_SLAVE_ID":                       a.id,
		"MESOS_SLAVE_PID":                      fmt.Sprintf("slave(1)@127.0.0.1:%d", a.port),
		"PATH":                                 "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	}
	if t.checkpoint {
		env["MESOS_RECOVERY_TIMEOUT"] = "15mins"
		env["MESOS_SUBSCRIPTION_BACKOFF_MAX"] = "2secs"
	}
	for k, v := range m.cfg.ExecutorEnvironment {
		env[k] = v
	}
	if e := t.info.Command.Environment; e != nil {
		for _, v := range e.Variables {
			env[v.Name] = v.GetValue()
		}
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// ---- test controls ----

func (m *Master) agentLocked(id string) (*agent, error) {
	if m.closed {
		return nil, fmt.Errorf("mesostest: master closed")
	}
	a := m.agentByID[id]
	if a == nil {
		return nil, fmt.Errorf("mesostest: no agent %q", id)
	}
	return a, nil
}

// AgentIDs lists the agents' IDs in the order of Config.Agents.
func (m *Master) AgentIDs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := make([]string, len(m.agents))
	for i, a := range m.agents {
		ids[i] = a.id
	}
	return ids
}

// KillAgent kills an agent and its task processes (SIGKILL). The master
// rescinds the agent's offers at once and reports its tasks lost
// (TASK_LOST, REASON_AGENT_DISCONNECTED) to frameworks that do not
// checkpoint; after AgentPingTimeout it marks the agent unreachable:
// TASK_UNREACHABLE (PARTITION_AWARE) or TASK_LOST, REASON_AGENT_REMOVED,
// then FAILURE to every framework.
func (m *Master) KillAgent(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, err := m.agentLocked(id)
	if err != nil {
		return err
	}
	if a.dead {
		return fmt.Errorf("mesostest: agent %s is already dead", id)
	}
	a.dead = true
	for _, t := range a.tasks {
		if t.retry != nil {
			t.retry.Stop()
		}
		if t.pid > 0 && !t.exited {
			syscall.Kill(-t.pid, syscall.SIGKILL)
		}
	}
	m.log.Info("agent killed", "agent", id)
	if a.state == agentActive {
		m.disconnectAgentLocked(a)
		m.startPingTimerLocked(a)
	}
	return nil
}

// CrashAgent kills the agent process but not the checkpointed tasks, as in
// 16-agent-sigkill-partition-aware.txt: the master rescinds the agent's
// offers at once, tasks of frameworks that do not checkpoint are lost
// (TASK_LOST, REASON_AGENT_DISCONNECTED) and killed, the others run on; after
// AgentPingTimeout the agent is unreachable, and RestoreAgent brings the
// running tasks back as TASK_RUNNING.
func (m *Master) CrashAgent(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, err := m.agentLocked(id)
	if err != nil {
		return err
	}
	if !a.canTalk() {
		return fmt.Errorf("mesostest: agent %s is down", id)
	}
	m.log.Info("agent crashed", "agent", id)
	m.disconnectAgentLocked(a)
	a.partitioned = true // it cannot send updates until it is back
	for _, t := range a.tasks {
		if t.retry != nil {
			t.retry.Stop()
		}
	}
	m.startPingTimerLocked(a)
	return nil
}

// PartitionAgent cuts an agent off the master: its processes keep running,
// its updates are held, and after AgentPingTimeout the master marks it
// unreachable as for KillAgent.
func (m *Master) PartitionAgent(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, err := m.agentLocked(id)
	if err != nil {
		return err
	}
	a.partitioned = true
	for _, t := range a.tasks {
		if t.retry != nil {
			t.retry.Stop()
		}
	}
	m.log.Info("agent partitioned", "agent", id)
	if a.state == agentActive {
		m.startPingTimerLocked(a)
	}
	return nil
}

// RestoreAgent brings a killed (restarted with its work dir) or partitioned
// agent back. If the master had marked it unreachable, every task it still
// has is reported with its current state and REASON_AGENT_REREGISTERED
// ("Unreachable agent re-reregistered"): TASK_RUNNING when the process ran
// on (partition), TASK_FAILED when it died with the agent, followed then by
// the agent's own TASK_FAILED "Executor terminated". Tasks of frameworks
// removed meanwhile are killed.
func (m *Master) RestoreAgent(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, err := m.agentLocked(id)
	if err != nil {
		return err
	}
	if !a.dead && !a.partitioned && a.state == agentActive {
		return fmt.Errorf("mesostest: agent %s is not down", id)
	}
	if a.pingTimer != nil {
		a.pingTimer.Stop()
		a.pingTimer = nil
	}
	wasUnreachable := a.state == agentUnreachable
	wasDead := a.dead
	keys := make([]string, 0, len(a.tasks))
	for k := range a.tasks {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t := a.tasks[k]
		fw := m.frameworks[t.fwID]
		if fw == nil {
			m.discardTaskLocked(t, true)
			continue
		}
		if wasDead && !isTerminal(t.agentLatest()) {
			// The recovered agent finds the executor gone.
			t.updates = append(t.updates, &mesos.TaskStatus{
				TaskID: mesos.TaskID{Value: t.id}, State: mesos.TASK_FAILED.Enum(),
				Message: ptr("Executor terminated"), Source: mesos.SOURCE_AGENT.Enum(),
				Reason: mesos.REASON_EXECUTOR_TERMINATED.Enum(), AgentID: &mesos.AgentID{Value: a.id},
				ExecutorID: &mesos.ExecutorID{Value: t.id}, Timestamp: ptr(nowSeconds()), UUID: newUUIDBytes(),
			})
		}
		if wasUnreachable {
			delete(fw.unreachable, t.id)
			fw.tasks[t.id] = t
			latest := t.agentLatest()
			st := masterUpdate(t.id, latest, mesos.REASON_AGENT_REREGISTERED, "Unreachable agent re-reregistered", a.id)
			st.ContainerStatus = t.containerStatus()
			fw.send(updateEvent(st))
			t.state = latest
			t.freed = isTerminal(latest)
			t.unreachableNanos = 0
		}
	}
	a.dead = false
	a.partitioned = false
	a.state = agentActive
	for _, k := range keys {
		if t := a.tasks[k]; t != nil {
			m.forwardLocked(t)
		}
	}
	m.log.Info("agent restored", "agent", id, "was_unreachable", wasUnreachable)
	m.triggerAllocation()
	return nil
}

// RestartAgent restarts an agent process quickly (before the ping timeout):
// its offers are rescinded, tasks of frameworks that do not checkpoint are
// lost (TASK_LOST, REASON_AGENT_DISCONNECTED) and killed, and checkpointed
// tasks keep running.
func (m *Master) RestartAgent(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, err := m.agentLocked(id)
	if err != nil {
		return err
	}
	if !a.canTalk() {
		return fmt.Errorf("mesostest: agent %s is down", id)
	}
	m.disconnectAgentLocked(a)
	a.state = agentActive
	for _, t := range a.tasks {
		m.forwardLocked(t)
	}
	m.triggerAllocation()
	return nil
}

// disconnectAgentLocked is the master noticing the agent's socket close.
func (m *Master) disconnectAgentLocked(a *agent) {
	a.state = agentDisconnected
	m.rescindAgentOffersLocked(a)
	keys := make([]string, 0, len(a.tasks))
	for k := range a.tasks {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t := a.tasks[k]
		if t.checkpoint {
			continue
		}
		if fw := m.frameworks[t.fwID]; fw != nil {
			fw.send(updateEvent(masterUpdate(t.id, mesos.TASK_LOST, mesos.REASON_AGENT_DISCONNECTED,
				"Agent "+a.hostname+" disconnected", a.id)))
		}
		m.discardTaskLocked(t, true)
	}
}

func (m *Master) rescindAgentOffersLocked(a *agent) {
	var ids []string
	for id, o := range m.offers {
		if o.agentID == a.id {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		o := m.offers[id]
		delete(m.offers, id)
		if fw := m.frameworks[o.fwID]; fw != nil {
			fw.send(rescindEvent(id))
		}
	}
}

func (m *Master) startPingTimerLocked(a *agent) {
	if a.pingTimer != nil {
		return
	}
	a.pingTimer = time.AfterFunc(m.cfg.AgentPingTimeout, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		a.pingTimer = nil
		if m.closed || a.canTalk() || a.state == agentUnreachable {
			return
		}
		m.markUnreachableLocked(a)
	})
}

func (m *Master) markUnreachableLocked(a *agent) {
	m.log.Info("marking agent unreachable: health check timed out", "agent", a.id)
	a.state = agentUnreachable
	now := time.Now().UnixNano()
	m.rescindAgentOffersLocked(a)
	keys := make([]string, 0, len(a.tasks))
	for k := range a.tasks {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t := a.tasks[k]
		if t.retry != nil {
			t.retry.Stop()
		}
		fw := m.frameworks[t.fwID]
		if fw == nil {
			continue
		}
		if fw.tasks[t.id] == t {
			delete(fw.tasks, t.id)
		}
		fw.unreachable[t.id] = t
		t.unreachableNanos = now
		t.freed = true
		st := masterUpdate(t.id, fw.lostState(), mesos.REASON_AGENT_REMOVED, "health check timed out", a.id)
		st.UnreachableTime = &mesos.TimeInfo{Nanoseconds: now}
		fw.send(updateEvent(st))
	}
	for _, id := range m.fwOrder {
		fw := m.frameworks[id]
		kept := fw.filters[:0]
		for _, f := range fw.filters {
			if f.agentID != a.id {
				kept = append(kept, f)
			}
		}
		fw.filters = kept
		fw.send(&scheduler.Event{Type: scheduler.Event_FAILURE, Failure: &scheduler.Event_Failure{AgentID: &mesos.AgentID{Value: a.id}}})
	}
}
