package main

import (
	"strconv"
	"strings"
	"testing"
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
