package mesostest

import (
	"fmt"
	"sort"
)

// Task describes a task the master knows (running, or terminal and not yet
// acknowledged, or on an unreachable agent).
type Task struct {
	ID, FrameworkID, AgentID string
	State                    string // the latest state sent to the framework
	Sandbox                  string
	PID                      int  // the command's process (group leader); 0 before it starts
	Running                  bool // the process has not exited
}

// Tasks lists the master's tasks, sorted by framework and task ID.
func (m *Master) Tasks() []Task {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Task
	for _, a := range m.agents {
		for _, t := range a.tasks {
			out = append(out, Task{
				ID: t.id, FrameworkID: t.fwID, AgentID: a.id, State: t.state.String(),
				Sandbox: t.sandbox, PID: t.pid, Running: t.started && !t.exited,
			})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].FrameworkID != out[j].FrameworkID {
			return out[i].FrameworkID < out[j].FrameworkID
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Framework describes a registered framework.
type Framework struct {
	ID, Name  string
	Roles     []string
	Connected bool // it has a subscription stream
}

// Frameworks lists the registered frameworks in the order they registered.
func (m *Master) Frameworks() []Framework {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Framework
	for _, id := range m.fwOrder {
		fw := m.frameworks[id]
		out = append(out, Framework{ID: id, Name: fw.info.Name, Roles: append([]string(nil), fw.roles...), Connected: fw.stream != nil})
	}
	return out
}

// FrameworkRemoved reports whether the framework was torn down or its
// failover timeout expired (a SUBSCRIBE with its ID is then refused).
func (m *Master) FrameworkRemoved(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.removed[id]
}

// CloseStream ends a framework's subscription response the way the master
// ends one (zero-length chunk, no event), as if the master dropped it; the
// framework is then disconnected and its failover timeout runs.
func (m *Master) CloseStream(frameworkID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	fw := m.frameworks[frameworkID]
	if fw == nil || fw.stream == nil {
		return fmt.Errorf("mesostest: framework %q has no stream", frameworkID)
	}
	fw.stream.end(nil)
	return nil
}
