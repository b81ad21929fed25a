package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/internal/mesostest"
)

// The end-to-end tests of `sluice framework --resource-manager mesos` run on
// a mesostest master whose agents start the TaskManager tasks as real
// processes of this machine. Short knobs everywhere: agent loss is noticed
// after a second, status updates are re-sent after half a second.

const mesosRole = "sluice-e2e"

// startMesos starts a master with three agents (distinct hostnames, room
// for two TaskManagers of 1 cpu and 1024 MB each) and its log in a file of
// dir; mutate adjusts the config first.
func startMesos(t *testing.T, dir string, mutate func(*mesostest.Config)) (*mesostest.Master, logFile) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "mesos.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	cfg := mesostest.Config{
		HeartbeatInterval:  500 * time.Millisecond,
		AgentPingTimeout:   time.Second,
		AllocationInterval: 200 * time.Millisecond,
		StatusUpdateRetry:  500 * time.Millisecond,
		KillGracePeriod:    time.Second,
		MaxFailoverTimeout: 2 * time.Minute,
		WorkDir:            filepath.Join(dir, "mesos"),
		Logger:             slog.New(slog.NewTextHandler(f, nil)),
	}
	for i := range 3 {
		cfg.Agents = append(cfg.Agents, mesostest.AgentConfig{
			Hostname: fmt.Sprintf("127.0.0.%d", i+2), CPUs: 2, Mem: 2048, Disk: 4096,
			Attributes: map[string]string{"rack": fmt.Sprintf("r%d", i+1)},
		})
	}
	if mutate != nil {
		mutate(&cfg)
	}
	m, err := mesostest.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, logFile{f.Name()}
}

// mesosJob is examples/exactly-once.json under `sluice framework
// --resource-manager mesos` with three TaskManagers and an HA directory.
type mesosJob struct {
	t          *testing.T
	m          *mesostest.Master
	mlog       logFile
	dir, out   string
	ha         string
	rows, keys int
	args       []string
	ctx        context.Context
}

// newMesosJob prepares the job: rows rows of keys keys at rate rows/s,
// checkpoints every 150 ms, restarts fixed-delay; extra come last.
func newMesosJob(t *testing.T, dir string, m *mesostest.Master, mlog logFile, rows, keys, rate int, extra ...string) *mesosJob {
	j := &mesosJob{t: t, m: m, mlog: mlog, dir: dir, out: filepath.Join(dir, "out"), ha: "file://" + filepath.Join(dir, "ha"), rows: rows, keys: keys}
	j.args = append(mesosArgs(m.URL(), j.ha, repoFile(t, "examples/exactly-once.json")),
		"--set", "nodes.out.params.path="+j.out,
		"--set", "checkpoint.storage=file://"+filepath.Join(dir, "checkpoints"),
		"--set", fmt.Sprintf("nodes.src.params.rows=%d", rows),
		"--set", fmt.Sprintf("nodes.src.params.keys=%d", keys),
		"--set", fmt.Sprintf("nodes.src.params.rate=%d", rate),
		"--set", "checkpoint.interval=150ms",
	)
	j.args = append(j.args, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	j.ctx = ctx
	return j
}

// mesosArgs are the arguments of `sluice framework` that run the job in
// jobFile on the Mesos master at url with three TaskManagers, parallelism
// 3, the HA directory ha, short timeouts and restarts fixed-delay.
func mesosArgs(url, ha, jobFile string) []string {
	return []string{"framework", "--job", jobFile,
		"--resource-manager", "mesos", "--mesos-master", url, "--role", mesosRole,
		"--ha-dir", ha, "--taskmanagers", "3",
		"--heartbeat-interval", "200ms", "--heartbeat-timeout", "2s",
		"--unreachable-timeout", "3s", "--refuse-seconds", "1s", "--failover-timeout", "1m",
		"--set", "parallelism=3",
		"--set", `restart={"strategy":"fixed-delay","attempts":20,"delay":"50ms"}`,
	}
}

// mesosProc is one `sluice framework` process.
type mesosProc struct {
	cmd  *exec.Cmd
	log  logFile
	done chan error
}

func (p *mesosProc) exited() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

// kill ends the process with SIGKILL (nothing torn down on Mesos).
func (p *mesosProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	err := <-p.done
	p.done <- err
}

// start starts a framework process of the job.
func (j *mesosJob) start() *mesosProc {
	j.t.Helper()
	cmd, log := startLogged(j.t, j.ctx, j.dir, j.args...)
	p := &mesosProc{cmd: cmd, log: log, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	j.t.Cleanup(func() {
		if !p.exited() {
			p.kill()
		}
	})
	return p
}

// finish waits for the job to end, and checks it ended well with every
// (key, window) committed exactly once.
func (j *mesosJob) finish(p *mesosProc) {
	j.t.Helper()
	j.ended(p)
	compareWindows(j.t, committedWindows(j.t, j.out), expectedWindows(int64(j.rows), int64(j.keys), 1))
}

// ended waits for the job to end, and checks it ended well.
func (j *mesosJob) ended(p *mesosProc) {
	j.t.Helper()
	var err error
	select {
	case err = <-p.done:
		p.done <- err
	case <-j.ctx.Done():
		j.t.Fatalf("the job did not end in time\n%s", tail(p.log.String(), 6000))
	}
	if err != nil {
		j.t.Fatalf("the framework failed: %v\n%s", err, tail(p.log.String(), 6000))
	}
	if !strings.Contains(p.log.String(), "msg=finished") {
		j.t.Fatalf("no final log line:\n%s", tail(p.log.String(), 3000))
	}
}

// checkpointed waits for a checkpoint recorded in the HA directory (the
// job runs on its TaskManagers).
func (j *mesosJob) checkpointed(p *mesosProc) {
	j.t.Helper()
	path := filepath.Join(strings.TrimPrefix(j.ha, "file://"), "checkpoint.json")
	waitFor(j.t, "a completed checkpoint", func() bool { _, err := os.Stat(path); return err == nil }, p)
}

// waitFor polls cond until it holds; it fails the test after 2 minutes or
// when p (if any) exits meanwhile.
func waitFor(t *testing.T, what string, cond func() bool, p *mesosProc) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if p != nil && p.exited() {
			err := <-p.done
			p.done <- err
			t.Fatalf("the framework exited (%v) while waiting for %s:\n%s", err, what, tail(p.log.String(), 5000))
		}
		if time.Now().After(deadline) {
			msg := ""
			if p != nil {
				msg = tail(p.log.String(), 5000)
			}
			t.Fatalf("no %s after 2 minutes:\n%s", what, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// liveTasks are the master's tasks of framework fw (all frameworks: "")
// whose process runs.
func liveTasks(m *mesostest.Master, fw string) []mesostest.Task {
	var out []mesostest.Task
	for _, tk := range m.Tasks() {
		if tk.Running && (fw == "" || tk.FrameworkID == fw) {
			out = append(out, tk)
		}
	}
	return out
}

// runningTaskManagers waits until n TaskManager tasks run and n
// TaskManagers registered with the job master; it returns the tasks.
func (j *mesosJob) runningTaskManagers(p *mesosProc, n int) []mesostest.Task {
	j.t.Helper()
	var tasks []mesostest.Task
	waitFor(j.t, fmt.Sprintf("%d running TaskManager tasks", n), func() bool {
		tasks = nil
		for _, tk := range j.m.Tasks() {
			if tk.Running && tk.State == "TASK_RUNNING" {
				tasks = append(tasks, tk)
			}
		}
		return len(tasks) >= n
	}, p)
	return tasks
}

// frameworkIDs lists the IDs of the frameworks the master registered.
func frameworkIDs(m *mesostest.Master) []string {
	var ids []string
	for _, f := range m.Frameworks() {
		ids = append(ids, f.ID)
	}
	return ids
}
