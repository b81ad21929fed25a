package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/dispatcher"
	fmesos "github.com/sluice-stream/sluice/framework/mesos"
	"github.com/sluice-stream/sluice/internal/mesostest"
)

// startMesosDispatcher starts `sluice dispatcher --resource-manager mesos`
// on store against the Mesos master at url; it serves its own binary to
// the agents.
func startMesosDispatcher(t *testing.T, dir, store, token, url string) (*mesosProc, string) {
	t.Helper()
	cmd, log := startLogged(t, context.Background(), dir, "dispatcher", "--listen", "127.0.0.1:0", "--store", store,
		"--resource-manager", "mesos", "--mesos-master", url, "--role", "sluice-disp", "--token-file", token,
		"--master-cpus", "0.5", "--master-mem", "256",
		"--master-args", "--heartbeat-interval 200ms --heartbeat-timeout 2s --refuse-seconds 1s --unreachable-timeout 3s --failover-timeout 1m")
	p := &mesosProc{cmd: cmd, log: log, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if !p.exited() {
			p.kill()
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		if m := listeningRE.FindStringSubmatch(log.String()); m != nil {
			return p, m[1]
		}
		if time.Now().After(deadline) || p.exited() {
			t.Fatalf("the dispatcher does not listen:\n%s", tail(log.String(), 3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mesosDispatcherJob is examples/exactly-once.json, slow and unbounded
// (it runs until cancelled), on two TaskManagers of 0.5 cpu and 256 MB.
func mesosDispatcherJob(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(dispatcherJob(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	var j map[string]any
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	j["resources"] = map[string]any{"cpus": 0.5, "mem": 256}
	j["restart"] = map[string]any{"strategy": "fixed-delay", "attempts": 20, "delay": "50ms"}
	out, _ := json.Marshal(j)
	p := filepath.Join(dir, "job-mesos.json")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// quotaOf is role's quota as the Mesos master's GET_QUOTA shows it; nil
// maps when it has none.
func quotaOf(t *testing.T, url, role string) (guarantee, limit map[string]float64) {
	t.Helper()
	c, err := fmesos.NewClient(url)
	if err != nil {
		t.Fatal(err)
	}
	guarantee, limit, err = c.Quota(context.Background(), role)
	if err != nil {
		t.Fatalf("GET_QUOTA: %v", err)
	}
	return guarantee, limit
}

// tasksOf are the running tasks of the framework named name.
func tasksOf(m *mesostest.Master, name string) []mesostest.Task {
	var out []mesostest.Task
	for _, f := range m.Frameworks() {
		if f.Name == name {
			out = append(out, liveTasks(m, f.ID)...)
		}
	}
	return out
}

func taskIDs(ts []mesostest.Task) []string {
	var out []string
	for _, tk := range ts {
		out = append(out, tk.ID)
	}
	return out
}

// TestDispatcherMesos: `sluice dispatcher --resource-manager mesos` on
// mesostest with three agents. A submitted job's framework master runs as
// a Mesos task of the dispatcher's framework, its TaskManagers as tasks of
// the job's own framework under the job's role, whose quota is set first
// (GET_QUOTA: guarantee and limit) and shown in /metrics. The master's
// task is killed: the dispatcher launches another, which takes the job
// over (same framework, same TaskManagers) and checkpoints again. The
// dispatcher is killed and started again: it subscribes with the same
// framework ID and adopts the running master (no second task). Cancel
// ends the master's and the TaskManagers' tasks and removes the quota.
func TestDispatcherMesos(t *testing.T) {
	dir := t.TempDir()
	m, mlog := startMesos(t, dir, nil)
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("t0ken-for-the-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store := "file://" + filepath.Join(dir, "store")
	job := mesosDispatcherJob(t, dir)
	d1, url := startMesosDispatcher(t, dir, store, token, m.URL())

	out, code := dcli(t, url, token, "submit", job, "--json")
	if code != 0 {
		t.Fatalf("submit: exit %d\n%s", code, tail(d1.log.String(), 3000))
	}
	var sub struct{ ID string }
	if err := json.Unmarshal([]byte(out), &sub); err != nil || sub.ID == "" {
		t.Fatalf("submit --json: %q %v", out, err)
	}
	id := sub.ID
	role := "sluice-" + id
	st := waitDispatcherJob(t, url, token, id, func(s dispatcher.JobStatus) bool {
		return s.State == dispatcher.Running && s.LatestCheckpoint != nil && len(s.TaskManagers) == 2 && s.Master != nil
	}, "RUNNING with a checkpoint")
	masters := tasksOf(m, "sluice-dispatcher")
	tms := tasksOf(m, "sluice exactly-once")
	if len(masters) != 1 || len(tms) != 2 {
		t.Fatalf("master tasks %v, TaskManager tasks %v: want 1 and 2\n%s", taskIDs(masters), taskIDs(tms), tail(d1.log.String(), 3000))
	}
	if !strings.Contains(st.Master.Process, masters[0].ID) {
		t.Fatalf("the job's master is %q, the Mesos task %s", st.Master.Process, masters[0].ID)
	}
	for _, f := range m.Frameworks() {
		if f.Name == "sluice exactly-once" && (len(f.Roles) != 1 || f.Roles[0] != role) {
			t.Fatalf("the job's framework subscribed with roles %v, want %s", f.Roles, role)
		}
	}
	// Two TaskManagers of 0.5 cpu, 256 MB; the limit one TaskManager more.
	// The master's 0.5 cpu, 256 MB are guaranteed to the dispatcher's role.
	g, lim := quotaOf(t, m.URL(), role)
	if g["cpus"] != 1 || g["mem"] != 512 || lim["cpus"] != 1.5 || lim["mem"] != 768 {
		t.Fatalf("role %s's quota: guarantee %v, limit %v", role, g, lim)
	}
	if g, _ := quotaOf(t, m.URL(), "sluice-disp"); g["cpus"] != 0.5 || g["mem"] != 256 {
		t.Fatalf("the dispatcher's role's quota: guarantee %v", g)
	}
	metrics := dispatcherMetrics(t, url, token)
	if !strings.Contains(metrics, `sluice_dispatcher_quota_cpus{role="`+role+`"} 1`) ||
		!strings.Contains(metrics, `sluice_dispatcher_quota_limit_mem{role="`+role+`"} 768`) {
		t.Fatalf("/metrics has no quota of %s:\n%s", role, metrics)
	}

	// The master's process dies: another master task takes the job over.
	if err := syscall.Kill(-masters[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	epoch, cp := st.Master.Epoch, st.LatestCheckpoint.ID
	st = waitDispatcherJob(t, url, token, id, func(s dispatcher.JobStatus) bool {
		return s.State == dispatcher.Running && s.Master != nil && s.Master.Epoch > epoch &&
			s.LatestCheckpoint != nil && s.LatestCheckpoint.Epoch > epoch && s.LatestCheckpoint.ID > cp
	}, "RUNNING on a new master, checkpointing")
	if st.MasterRestarts != 1 || st.MasterLaunches != 2 {
		t.Fatalf("after the master's death: %+v", st)
	}
	masters2 := tasksOf(m, "sluice-dispatcher")
	if len(masters2) != 1 || masters2[0].ID == masters[0].ID {
		t.Fatalf("master tasks %v after the first (%s) died", taskIDs(masters2), masters[0].ID)
	}
	if now := tasksOf(m, "sluice exactly-once"); strings.Join(taskIDs(now), ",") != strings.Join(taskIDs(tms), ",") {
		t.Fatalf("TaskManager tasks %v, before the master died %v: want the same", taskIDs(now), taskIDs(tms))
	}

	// The dispatcher dies and comes back: same framework, same master.
	d1.kill()
	fws := frameworkIDs(m)
	d2, url := startMesosDispatcher(t, dir, store, token, m.URL())
	st = waitDispatcherJob(t, url, token, id, func(s dispatcher.JobStatus) bool {
		return s.State == dispatcher.Running && s.Master != nil && s.Master.Adopted
	}, "RUNNING with its master adopted")
	if st.MasterLaunches != 2 || !strings.Contains(st.Master.Process, masters2[0].ID) {
		t.Fatalf("after the dispatcher's restart: %+v\n%s", st, tail(d2.log.String(), 3000))
	}
	if now := frameworkIDs(m); strings.Join(now, ",") != strings.Join(fws, ",") {
		t.Fatalf("frameworks %v after the dispatcher's restart, before %v", now, fws)
	}
	if n := registrations(mlog); n != 2 {
		t.Fatalf("%d frameworks registered, want 2 (the dispatcher's and the job's)", n)
	}
	if now := tasksOf(m, "sluice-dispatcher"); len(now) != 1 || now[0].ID != masters2[0].ID {
		t.Fatalf("master tasks %v after the dispatcher's restart, want %s", taskIDs(now), masters2[0].ID)
	}

	// Cancel: the tasks end, the quota goes.
	if out, code := dcli(t, url, token, "cancel", id); code != 0 || !strings.Contains(out, "CANCELED") {
		t.Fatalf("cancel: exit %d: %s\n%s", code, out, tail(d2.log.String(), 3000))
	}
	waitFor(t, "no task left and no quota", func() bool {
		g, lim := quotaOf(t, m.URL(), role)
		return len(liveTasks(m, "")) == 0 && g == nil && lim == nil
	}, d2)
}

// dispatcherMetrics reads the dispatcher's /metrics.
func dispatcherMetrics(t *testing.T, url, token string) string {
	t.Helper()
	b, err := os.ReadFile(token)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(b)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// Bad Mesos settings of the dispatcher are usage errors (exit 2) that name
// the flag, before anything connects.
func TestDispatcherMesosFlags(t *testing.T) {
	store := "file://" + filepath.Join(t.TempDir(), "store")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--resource-manager", "mesos"}, "--mesos-master"},
		{[]string{"--resource-manager", "yarn"}, `--resource-manager "yarn"`},
		{[]string{"--resource-manager", "mesos", "--mesos-master", "127.0.0.1:1", "--secret-file", "/nonexistent"}, "--secret-file needs --principal"},
		{[]string{"--resource-manager", "mesos", "--mesos-master", "127.0.0.1:1", "--master-cpus", "0"}, "--master-cpus"},
		{[]string{"--resource-manager", "mesos", "--mesos-master", "ftp://m"}, "--mesos-master"},
	} {
		cmd := exec.Command(sluiceBin, append([]string{"dispatcher", "--store", store}, tc.args...)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: %v, want exit 2 naming %s:\n%s", tc.args, err, tc.want, out)
		}
	}
}
