package framework

import (
	"fmt"
	"sort"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
)

// TaskManagerStatus is a registered TaskManager as the master sees it, for
// the REST API and metrics.
type TaskManagerStatus struct {
	ID          string `json:"id"`         // the master's name for this registration
	ResourceID  string `json:"resourceId"` // the resource manager's (stable across re-registrations)
	Host        string `json:"host"`
	DataAddress string `json:"dataAddress"`
	Slots       int    `json:"slots"`
	// HeartbeatRTT is the last heartbeat's round trip (0 before the first).
	HeartbeatRTT time.Duration `json:"-"`
	LastHeard    time.Time     `json:"lastHeard"`
	// Tasks are the current attempt's subtasks it runs, "node#i" per
	// chained node (empty when idle: a spare, or between attempts).
	Tasks []string `json:"tasks"`
}

// TaskManagers lists the registered TaskManagers, by id.
func (m *Master) TaskManagers() []TaskManagerStatus {
	m.mu.Lock()
	tms := make([]*tmConn, 0, len(m.tms))
	for _, t := range m.tms {
		tms = append(tms, t)
	}
	a := m.current
	m.mu.Unlock()
	byTM := map[string][]string{}
	if a != nil {
		a.mu.Lock()
		for task, tm := range a.taskOn {
			if task >= 0 && task < len(m.tasks) {
				ti := m.tasks[task]
				for _, n := range ti.Nodes {
					byTM[tm.tm] = append(byTM[tm.tm], fmt.Sprintf("%s#%d", n, ti.Subtask))
				}
			}
		}
		a.mu.Unlock()
	}
	out := make([]TaskManagerStatus, 0, len(tms))
	for _, t := range tms {
		t.mu.Lock()
		s := TaskManagerStatus{ID: t.id, ResourceID: t.resourceID, Host: t.host, DataAddress: t.data, Slots: t.slots,
			HeartbeatRTT: t.rtt, LastHeard: t.lastHeard, Tasks: byTM[t.id]}
		t.mu.Unlock()
		sort.Strings(s.Tasks)
		if s.Tasks == nil {
			s.Tasks = []string{}
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return tmLess(out[i].ID, out[j].ID) })
	return out
}

// tmLess orders "tm-2" before "tm-10".
func tmLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// Lost is how many TaskManagers the master has lost so far (connection
// closed, heartbeat timeout, process ended).
func (m *Master) Lost() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lost
}

// NodeMetrics are the job's counters per node, summed over every
// TaskManager's reports (they are the run's Result.Metrics).
func (m *Master) NodeMetrics() map[string]*runtime.NodeMetrics { return m.metrics }

// ResourceStatus is what the resource manager says of its TaskManagers
// when it can (the Mesos one: subscribed, waiting for offers and why,
// quota); "" otherwise.
func (m *Master) ResourceStatus() string {
	if st, ok := m.cfg.RM.(interface{ Status() string }); ok {
		return st.Status()
	}
	return ""
}
