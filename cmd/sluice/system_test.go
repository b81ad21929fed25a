package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/dispatcher"
	"github.com/sluice-stream/sluice/internal/hdfstest"
	"github.com/sluice-stream/sluice/internal/kafkatest"
	"github.com/sluice-stream/sluice/internal/procs"
)

// The whole system end to end (issue #11): the dispatcher keeps its store
// on HDFS (hdfstest), the exactly-once Kafka doubling job reads and writes
// kfake, and the user drives everything with the CLI. During the run the
// job's master dies, the dispatcher is killed and started again, the job
// is rescaled, then cancelled with a savepoint; a last run from that
// savepoint reads the rest of the input. A read_committed reader must see
// every input record's result exactly once.

// systemJob is the doubling job of TestKafkaCrashExactlyOnce, reading
// without end at a bounded rate so that it runs through every step.
const systemJob = `{
  "name": "system", "parallelism": 2, "maxParallelism": 64,
  "checkpoint": {"interval": "200ms", "mode": "exactly-once", "retained": 2},
  "restart": {"strategy": "fixed-delay", "attempts": 20, "delay": "200ms"},
  "nodes": [
    {"id": "src", "type": "kafka", "params": {"brokers": [], "topics": ["in"], "rate": 600,
      "fields": [{"name": "id", "type": "int64"}, {"name": "pad", "type": "string"}]}},
    {"id": "even", "type": "project", "inputs": ["src"], "params": {"fields": [
      {"name": "id", "expr": "id"}, {"name": "double", "expr": "id * 2"}]}},
    {"id": "out", "type": "kafka", "inputs": [{"from": "even", "partition": "rebalance"}],
      "params": {"brokers": [], "topic": "out", "keyField": "id"}}
  ]
}`

type systemEnv struct {
	t      *testing.T
	dir    string
	token  string
	store  string
	kafka  *kafkatest.Cluster
	parts  int32
	n      int64
	job    string // the spec file
	job2   string // its next version: the output gains "version": 2
	drain  string // the next version, bounded and at full speed
	url    string
	disp   *dispatcherProc
	extra  []string // more dispatcher flags (the resource manager's)
	id     string
	status dispatcher.JobStatus
}

type dispatcherProc struct {
	cmd interface{ Signal(os.Signal) error }
	pid int
	log logFile
}

// newSystemEnv starts HDFS and Kafka, writes the input and the specs.
func newSystemEnv(t *testing.T, n int64, edits ...func(job map[string]any)) *systemEnv {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() {
		for _, p := range procs.Live() {
			if bytes.Contains(p.Cmdline, []byte(dir)) {
				_ = syscall.Kill(p.PID, syscall.SIGKILL)
			}
		}
	})
	h, err := hdfstest.Start(filepath.Join(dir, "hdfs"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	t.Setenv("HADOOP_USER_NAME", "sluice")
	e := &systemEnv{t: t, dir: dir, parts: 4, n: n, store: "hdfs://" + h.Addr() + "/sluice"}
	e.kafka = kafkatest.Start(t, 0, e.parts, "in", "out")
	pad := strings.Repeat("p", 100)
	for p := int32(0); p < e.parts; p++ {
		var recs []kafkatest.Record
		for i := int64(p); i < n; i += int64(e.parts) {
			recs = append(recs, kafkatest.Record{Value: fmt.Appendf(nil, `{"id":%d,"pad":%q}`, i, pad)})
		}
		e.kafka.Produce(t, "in", p, recs)
	}
	e.token = filepath.Join(dir, "token")
	if err := os.WriteFile(e.token, []byte("system-test-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	brokers, _ := json.Marshal(e.kafka.Addrs)
	write := func(name string, v2 bool, edit func(src map[string]any)) string {
		var j map[string]any
		if err := json.Unmarshal([]byte(systemJob), &j); err != nil {
			t.Fatal(err)
		}
		nodes := j["nodes"].([]any)
		for _, i := range []int{0, 2} {
			nodes[i].(map[string]any)["params"].(map[string]any)["brokers"] = json.RawMessage(brokers)
		}
		edit(nodes[0].(map[string]any)["params"].(map[string]any))
		if v2 {
			fields := nodes[1].(map[string]any)["params"].(map[string]any)
			fields["fields"] = append(fields["fields"].([]any), map[string]any{"name": "version", "expr": "2"})
		}
		for _, f := range edits {
			f(j)
		}
		b, _ := json.Marshal(j)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	e.job = write("job.json", false, func(map[string]any) {})
	e.job2 = write("job2.json", true, func(map[string]any) {})
	e.drain = write("drain.json", true, func(src map[string]any) {
		delete(src, "rate")
		src["bounded"] = true
	})
	return e
}

// startDispatcher starts (or starts again) the dispatcher on the store.
func (e *systemEnv) startDispatcher() {
	e.t.Helper()
	args := append([]string{"dispatcher", "--listen", "127.0.0.1:0", "--store", e.store, "--work-dir", filepath.Join(e.dir, "work"),
		"--token-file", e.token}, e.extra...)
	cmd, log := startLogged(e.t, context.Background(), e.dir, args...)
	e.t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(time.Minute)
	for {
		if m := listeningRE.FindStringSubmatch(log.String()); m != nil {
			e.url = m[1]
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the dispatcher does not listen after a minute:\n%s", tail(log.String(), 3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.disp = &dispatcherProc{cmd: cmd.Process, pid: cmd.Process.Pid, log: log}
}

// killDispatcher ends it with SIGKILL: nothing of it runs on.
func (e *systemEnv) killDispatcher() {
	e.t.Helper()
	_ = syscall.Kill(e.disp.pid, syscall.SIGKILL)
	for !procs.Exited(e.disp.pid) {
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *systemEnv) cli(args ...string) (string, int) {
	e.t.Helper()
	return dcli(e.t, e.url, e.token, args...)
}

// submit submits a spec (with --savepoint sp when given) and returns its id.
func (e *systemEnv) submit(spec, sp string) string {
	e.t.Helper()
	args := []string{"submit", spec, "--json"}
	if sp != "" {
		args = append(args, "--savepoint", sp)
	}
	out, code := e.cli(args...)
	var sub struct{ ID string }
	if code != 0 || json.Unmarshal([]byte(out), &sub) != nil || sub.ID == "" {
		e.t.Fatalf("submit: exit %d: %q\n%s", code, out, tail(e.disp.log.String(), 3000))
	}
	return sub.ID
}

// wait polls the job until ok holds.
func (e *systemEnv) wait(what string, ok func(dispatcher.JobStatus) bool) dispatcher.JobStatus {
	e.t.Helper()
	defer func(t0 time.Time) { e.t.Logf("%s: %v", what, time.Since(t0).Round(time.Millisecond)) }(time.Now())
	deadline := time.Now().Add(3 * time.Minute)
	for {
		st := dispatcherStatus(e.t, e.url, e.token, e.id)
		if ok(st) {
			e.status = st
			return st
		}
		if st.State == dispatcher.Failed || time.Now().After(deadline) {
			e.t.Fatalf("job %s: not %s: %+v\ndispatcher log:\n%s", e.id, what, st, tail(e.disp.log.String(), 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// newCheckpoint waits for RUNNING with a checkpoint newer than the last
// one seen (the job makes progress in its current shape).
func (e *systemEnv) newCheckpoint(what string) dispatcher.JobStatus {
	e.t.Helper()
	var after int64 = -1
	var run int
	if c := e.status.LatestCheckpoint; c != nil {
		after = c.ID
	}
	run = e.status.Run
	return e.wait(what, func(s dispatcher.JobStatus) bool {
		c := s.LatestCheckpoint
		return s.State == dispatcher.Running && c != nil && (s.Run != run || c.ID > after)
	})
}

// TestSystemLocal runs the whole system with local framework masters.
func TestSystemLocal(t *testing.T) {
	e := newSystemEnv(t, 120_000)
	e.extra = []string{"--resource-manager", "local"}
	e.startDispatcher()
	e.id = e.submit(e.job, "")
	st := e.newCheckpoint("RUNNING with a checkpoint")
	if !strings.HasPrefix(st.LatestCheckpoint.Path, e.store+"/") {
		t.Fatalf("checkpoint %s not on the store's HDFS", st.LatestCheckpoint.Path)
	}

	// The master dies: the dispatcher starts another, which resumes from
	// the checkpoint with the same TaskManagers.
	pid := st.Master.PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st = e.wait("RUNNING on a new master", func(s dispatcher.JobStatus) bool {
		return s.State == dispatcher.Running && s.Master != nil && s.Master.PID != pid && s.MasterRestarts == 1
	})
	e.newCheckpoint("checkpointing on the new master")

	// The dispatcher is killed and started again: it adopts the master.
	pid = e.status.Master.PID
	e.killDispatcher()
	e.startDispatcher()
	st = e.wait("adopted", func(s dispatcher.JobStatus) bool { return s.Master != nil && s.Master.Adopted })
	if st.Master.PID != pid || len(frameworkMasters(st.HADir)) != 1 {
		t.Fatalf("after the dispatcher's restart: master %+v, masters running %v; want pid %d alone", st.Master, frameworkMasters(st.HADir), pid)
	}
	e.newCheckpoint("checkpointing under the new dispatcher")

	// Rescale to 3.
	if out, code := e.cli("rescale", e.id, "3"); code != 0 {
		t.Fatalf("rescale: exit %d: %s\n%s", code, out, tail(e.disp.log.String(), 3000))
	}
	st = e.wait("rescaled", func(s dispatcher.JobStatus) bool {
		return s.State == dispatcher.Running && s.Parallelism == 3 && s.Run == 2 && s.LatestCheckpoint != nil
	})
	e.newCheckpoint("checkpointing at parallelism 3")

	e.upgrade()
	e.finish()
}

// upgrade upgrades the job to its next version with the CLI and waits
// for the new run to checkpoint.
func (e *systemEnv) upgrade() dispatcher.UpgradeReply {
	t := e.t
	t.Helper()
	run := e.status.Run
	out, code := e.cli("upgrade", e.id, e.job2, "--json")
	var r dispatcher.UpgradeReply
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
		t.Fatalf("upgrade: exit %d: %s\n%s", code, out, tail(e.disp.log.String(), 4000))
	}
	if r.Run != run+1 || r.Savepoint == "" {
		t.Fatalf("upgrade: %+v after run %d", r, run)
	}
	t.Logf("upgrade: output stopped for %d ms; the new version's TaskManagers took %d ms", r.DowntimeMs, r.StandbyMs)
	e.wait("RUNNING the new version", func(s dispatcher.JobStatus) bool { return s.State == dispatcher.Running && s.Run == run+1 })
	e.newCheckpoint("the new version checkpointing")
	return r
}

// finish cancels the job with a savepoint, drains the rest of the input
// from it in a last job, and checks the output.
func (e *systemEnv) finish() {
	t := e.t
	t.Helper()
	out, code := e.cli("cancel", e.id, "--savepoint")
	if code != 0 || !strings.Contains(out, "CANCELED") {
		t.Fatalf("cancel --savepoint: exit %d:\n%s\n%s", code, out, tail(e.disp.log.String(), 3000))
	}
	sp := dispatcherStatus(t, e.url, e.token, e.id).LastSavepoint
	if !strings.HasPrefix(sp, e.store+"/") {
		t.Fatalf("savepoint %q not on the store's HDFS", sp)
	}
	// The steps ran on a job still reading: part of the input is left.
	if done := int64(len(e.kafka.ReadCommitted(t, "out", e.parts))); done == 0 || done >= e.n {
		t.Fatalf("%d of %d results committed before the last run: the steps did not run mid-job", done, e.n)
	} else {
		t.Logf("%d of %d results committed before the last run", done, e.n)
	}
	e.id = e.submit(e.drain, sp)
	e.wait("FINISHED", func(s dispatcher.JobStatus) bool { return s.State == dispatcher.Finished })
	checkDoubledOnce(t, e.kafka, e.parts, e.n, "the whole system")
	// Both versions wrote some of it.
	versions := map[int]int{}
	for _, r := range e.kafka.ReadCommitted(t, "out", e.parts) {
		var v struct{ Version int }
		_ = json.Unmarshal(r.Value, &v)
		versions[v.Version]++
	}
	if versions[0] == 0 || versions[2] == 0 {
		t.Fatalf("results by version %v: want some of the first (0) and of the upgraded (2)", versions)
	}
}

// TestSystemMesos runs the whole system on Mesos (mesostest, three
// agents): the dispatcher's framework runs the job's master as a task, the
// master's framework runs the TaskManagers under the job's role, whose
// quota the dispatcher sets. Besides the steps of TestSystemLocal an agent
// that runs a TaskManager is killed.
func TestSystemMesos(t *testing.T) {
	e := newSystemEnv(t, 120_000, func(j map[string]any) {
		j["resources"] = map[string]any{"cpus": 0.5, "mem": 256}
	})
	m, _ := startMesos(t, e.dir, nil)
	e.extra = []string{"--resource-manager", "mesos", "--mesos-master", m.URL(), "--role", "sluice-disp",
		"--master-cpus", "0.5", "--master-mem", "256",
		"--master-args", "--heartbeat-interval 200ms --heartbeat-timeout 2s --refuse-seconds 1s --unreachable-timeout 3s --failover-timeout 1m"}
	e.startDispatcher()
	e.id = e.submit(e.job, "")
	role := "sluice-" + e.id
	st := e.newCheckpoint("RUNNING with a checkpoint")
	if !strings.HasPrefix(st.LatestCheckpoint.Path, e.store+"/") {
		t.Fatalf("checkpoint %s not on the store's HDFS", st.LatestCheckpoint.Path)
	}
	if g, _ := quotaOf(t, m.URL(), role); g["cpus"] != 1 {
		t.Fatalf("role %s's quota guarantee %v, want 1 cpu (2 TaskManagers)", role, g)
	}
	masters, tms := tasksOf(m, "sluice-dispatcher"), tasksOf(m, "sluice system")
	if len(masters) != 1 || len(tms) != 2 {
		t.Fatalf("master tasks %v, TaskManager tasks %v: want 1 and 2", taskIDs(masters), taskIDs(tms))
	}

	// An agent with a TaskManager (and not the master, if one is apart)
	// dies with its processes: its TaskManagers are replaced elsewhere.
	victim := tms[0].AgentID
	for _, tk := range tms {
		if tk.AgentID != masters[0].AgentID {
			victim = tk.AgentID
		}
	}
	if err := m.KillAgent(victim); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("SYSDEBUG") != "" {
		t.Cleanup(func() { _ = exec.Command("cp", "-r", e.dir, "/tmp/syslogs").Run() })
	}
	e.wait("TaskManagers replaced", func(s dispatcher.JobStatus) bool {
		now := tasksOf(m, "sluice system")
		if s.State != dispatcher.Running || len(now) != 2 {
			return false
		}
		for _, tk := range now {
			if tk.AgentID == victim {
				return false
			}
		}
		return true
	})
	e.newCheckpoint("checkpointing after the agent's loss")

	// The master's task dies: another takes the job over.
	masters = tasksOf(m, "sluice-dispatcher")
	if len(masters) != 1 {
		t.Fatalf("master tasks %v", taskIDs(masters))
	}
	epoch := e.status.Master.Epoch
	if err := syscall.Kill(-masters[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e.wait("RUNNING on a new master", func(s dispatcher.JobStatus) bool {
		return s.State == dispatcher.Running && s.Master != nil && s.Master.Epoch > epoch
	})
	e.newCheckpoint("checkpointing on the new master")

	// The dispatcher is killed and started again: it adopts the master.
	masters = tasksOf(m, "sluice-dispatcher")
	e.killDispatcher()
	e.startDispatcher()
	e.wait("adopted", func(s dispatcher.JobStatus) bool { return s.Master != nil && s.Master.Adopted })
	if now := tasksOf(m, "sluice-dispatcher"); len(now) != 1 || now[0].ID != masters[0].ID {
		t.Fatalf("master tasks %v after the dispatcher's restart, want %v", taskIDs(now), taskIDs(masters))
	}
	e.newCheckpoint("checkpointing under the new dispatcher")

	// Rescale to 3: the quota follows.
	if out, code := e.cli("rescale", e.id, "3"); code != 0 {
		t.Fatalf("rescale: exit %d: %s\n%s", code, out, tail(e.disp.log.String(), 3000))
	}
	e.wait("rescaled", func(s dispatcher.JobStatus) bool {
		return s.State == dispatcher.Running && s.Parallelism == 3 && s.Run == 2 && s.LatestCheckpoint != nil
	})
	e.newCheckpoint("checkpointing at parallelism 3")
	if g, _ := quotaOf(t, m.URL(), role); g["cpus"] != 1.5 {
		t.Fatalf("role %s's quota guarantee %v after the rescale, want 1.5 cpus", role, g)
	}

	// Upgrade (back to the spec's parallelism, 2): both versions'
	// TaskManagers fit the role's quota meanwhile; then only the new one's.
	e.upgrade()
	deadline := time.Now().Add(time.Minute)
	for g, _ := quotaOf(t, m.URL(), role); g["cpus"] != 1; g, _ = quotaOf(t, m.URL(), role) {
		if time.Now().After(deadline) {
			t.Fatalf("role %s's quota guarantee %v a minute after the upgrade, want 1 cpu", role, g)
		}
		time.Sleep(100 * time.Millisecond)
	}

	e.finish()
	deadline = time.Now().Add(time.Minute)
	for {
		g, lim := quotaOf(t, m.URL(), role)
		if len(liveTasks(m, "")) == 0 && g == nil && lim == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a minute after the end: tasks %v, role %s's quota %v / %v", taskIDs(liveTasks(m, "")), role, g, lim)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
