package main

import (
	"github.com/sluice-stream/sluice/internal/mesostest"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// registrations counts the frameworks the Mesos master registered.
func registrations(mlog logFile) int {
	return strings.Count(mlog.String(), `msg="framework registered"`)
}

// TestMesosKillAgent kills an agent that runs a TaskManager (its processes
// die with it): the TaskManager is replaced on the other agents, the job
// restarts from its checkpoint and every result is committed exactly once.
// The binary is the one the framework serves itself (no --binary-uri).
func TestMesosKillAgent(t *testing.T) {
	const rows, keys = 120_000, 100
	dir := t.TempDir()
	m, mlog := startMesos(t, dir, nil)
	j := newMesosJob(t, dir, m, mlog, rows, keys, 20000)
	p := j.start()
	tasks := j.runningTaskManagers(p, 3)
	j.checkpointed(p)
	victim := tasks[0]
	if err := m.KillAgent(victim.AgentID); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed agent %s with task %s", victim.AgentID, victim.ID)
	// A replacement runs on another agent.
	waitFor(t, "a replacement TaskManager on another agent", func() bool {
		n := 0
		for _, tk := range liveTasks(m, "") {
			if tk.AgentID != victim.AgentID && tk.State == "TASK_RUNNING" {
				n++
			}
		}
		return n >= 3
	}, p)
	j.finish(p)
	logs := p.log.String()
	if !strings.Contains(logs, "serving the sluice binary") {
		t.Errorf("the framework did not serve its binary")
	}
	if n := strings.Count(logs, "launching TaskManagers"); n < 2 {
		t.Errorf("%d launches, want the first ones and a replacement", n)
	}
	if n := registrations(mlog); n != 1 {
		t.Errorf("%d frameworks registered, want 1", n)
	}
	checkRestarted(t, logs)
}

// checkRestarted checks the job restarted from a checkpoint at least once.
func checkRestarted(t *testing.T, logs string) {
	t.Helper()
	m := restartsRe.FindStringSubmatch(logs)
	if m == nil {
		t.Fatalf("no final log line:\n%s", tail(logs, 3000))
	}
	if n, _ := strconv.Atoi(m[1]); n < 1 {
		t.Errorf("restarts = %d: the loss restarted nothing", n)
	}
	t.Logf("final: %s", m[0])
}

// hasLine says whether a line of logs holds every part.
func hasLine(logs string, parts ...string) bool {
	for line := range strings.Lines(logs) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// taskWatch records the IDs of every task the Mesos master shows, polled
// until the test ends.
type taskWatch struct {
	mu   sync.Mutex
	seen map[string]bool
}

func watchTasks(t *testing.T, m *mesostest.Master) *taskWatch {
	w := &taskWatch{seen: map[string]bool{}}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			for _, tk := range m.Tasks() {
				w.mu.Lock()
				w.seen[tk.ID] = true
				w.mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return w
}

func (w *taskWatch) ids() map[string]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.seen)
}

// TestMesosMasterRestart kills the framework's process (SIGKILL) and starts
// it again on the same HA directory: it subscribes with the same framework
// ID, reconciles, adopts the running tasks, their TaskManagers register
// with it, and the job resumes from its checkpoint with no new Mesos task.
func TestMesosMasterRestart(t *testing.T) {
	const rows, keys = 150_000, 100
	dir := t.TempDir()
	m, mlog := startMesos(t, dir, nil)
	j := newMesosJob(t, dir, m, mlog, rows, keys, 20000)
	w := watchTasks(t, m)
	first := j.start()
	j.runningTaskManagers(first, 3)
	j.checkpointed(first)
	fid := frameworkIDs(m)[0]
	before := w.ids()
	first.kill()
	if len(before) != 3 {
		t.Logf("first master:\n%s", first.log)
	}
	t.Logf("framework %s: master killed; tasks %v", fid, slices.Sorted(maps.Keys(before)))

	second := j.start()
	j.finish(second)
	logs := second.log.String()
	for _, want := range [][]string{
		{"subscribing with the framework ID kept in the HA directory", "framework=" + fid},
		{`msg="subscribed to Mesos"`, "framework=" + fid, "failover=true"},
		{"taking over the job from an earlier master"},
	} {
		if !hasLine(logs, want...) {
			t.Errorf("the restarted master's log has no line with %q:\n%s", want, tail(logs, 3000))
		}
	}
	if n := strings.Count(logs, "adopted a TaskManager task from before"); n != len(before) {
		t.Errorf("%d tasks adopted, want the %d of the first master", n, len(before))
	}
	if n := strings.Count(logs, "TaskManager registered"); n != len(before) {
		t.Errorf("%d TaskManagers registered with the restarted master, want the %d of the first", n, len(before))
	}
	if strings.Contains(logs, "launching TaskManagers") {
		t.Errorf("the restarted master launched new tasks:\n%s", tail(logs, 3000))
	}
	for id := range w.ids() {
		if !before[id] {
			t.Errorf("a new Mesos task %s after the restart", id)
		}
	}
	if n := registrations(mlog); n != 1 {
		t.Errorf("%d frameworks registered, want 1", n)
	}
}

// TestMesosTeardown tears the framework down on Mesos behind its back (its
// tasks are killed, its ID refused): it registers as a new framework and
// the job resumes from its checkpoint on new TaskManagers, exactly once.
func TestMesosTeardown(t *testing.T) {
	const rows, keys = 150_000, 100
	dir := t.TempDir()
	m, mlog := startMesos(t, dir, nil)
	j := newMesosJob(t, dir, m, mlog, rows, keys, 20000, "--binary-uri", "file://"+sluiceBin)
	p := j.start()
	j.runningTaskManagers(p, 3)
	j.checkpointed(p)
	fid := frameworkIDs(m)[0]
	if err := m.Teardown(fid); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new framework", func() bool { return registrations(mlog) >= 2 }, p)
	j.finish(p)
	logs := p.log.String()
	if !strings.Contains(logs, "Mesos removed the framework") {
		t.Errorf("the log does not show the removal:\n%s", tail(logs, 3000))
	}
	if n := registrations(mlog); n != 2 {
		t.Errorf("%d frameworks registered, want the first and one new", n)
	}
	if !m.FrameworkRemoved(fid) {
		t.Errorf("framework %s not removed", fid)
	}
	checkRestarted(t, logs)
}

// TestMesosPartition partitions an agent that runs a TaskManager (its
// process runs on) and brings it back after the TaskManager was replaced:
// the old task is killed and no result is committed twice.
func TestMesosPartition(t *testing.T) {
	const rows, keys = 200_000, 100
	dir := t.TempDir()
	m, mlog := startMesos(t, dir, nil)
	j := newMesosJob(t, dir, m, mlog, rows, keys, 20000, "--binary-uri", "file://"+sluiceBin)
	p := j.start()
	tasks := j.runningTaskManagers(p, 3)
	j.checkpointed(p)
	victim := tasks[0]
	if err := m.PartitionAgent(victim.AgentID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a replacement of the TaskManager on the partitioned agent", func() bool {
		n := 0
		for _, tk := range liveTasks(m, "") {
			if tk.AgentID != victim.AgentID && tk.State == "TASK_RUNNING" {
				n++
			}
		}
		return n >= 3
	}, p)
	if err := m.RestoreAgent(victim.AgentID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the old task killed", func() bool {
		for _, tk := range m.Tasks() {
			if tk.ID == victim.ID {
				return !tk.Running
			}
		}
		return true
	}, nil)
	j.finish(p)
	logs := p.log.String()
	if !strings.Contains(logs, "replacing a TaskManager on an unreachable agent") {
		t.Errorf("no replacement for the unreachable agent in the log:\n%s", tail(logs, 3000))
	}
	if !hasLine(logs, `msg="killing a TaskManager task"`, "task="+victim.ID) || !hasLine(logs, `msg="TaskManager task KILLED"`, "task="+victim.ID) {
		t.Errorf("the old task %s was not killed:\n%s", victim.ID, tail(logs, 3000))
	}
}
