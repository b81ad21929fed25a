package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/internal/kafkatest"
	"github.com/sluice-stream/sluice/internal/mesostest"
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

// terminalTaskState says whether a Mesos task state is a final one.
func terminalTaskState(s string) bool {
	switch s {
	case "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN":
		return true
	}
	return false
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
	first.kill()
	// Every task so far, and those that run on (a TaskManager lost
	// before the kill was replaced: its task ended).
	before := w.ids()
	var live []string
	for _, tk := range m.Tasks() {
		if !terminalTaskState(tk.State) {
			live = append(live, tk.ID)
		}
	}
	t.Logf("framework %s: master killed; tasks %v, running %v", fid, slices.Sorted(maps.Keys(before)), live)

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
	if n := strings.Count(logs, "adopted a TaskManager task from before"); n != len(live) {
		t.Errorf("%d tasks adopted, want the %d of the first master", n, len(live))
	}
	if n := strings.Count(logs, "TaskManager registered"); n != len(live) {
		t.Errorf("%d TaskManagers registered with the restarted master, want the %d of the first", n, len(live))
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
	// Still cut off, the old TaskManager must not come back to the job
	// master: its resource was reported lost. The job runs on the
	// replacements.
	waitFor(t, "the job redeployed", func() bool { return strings.Count(p.log.String(), "msg=deploying") >= 2 }, p)
	if n := strings.Count(p.log.String(), "resource="+victim.ID+" "); n != 2 {
		t.Errorf("the TaskManager of %s on the partitioned agent shows %d times (registered and lost, want 2):\n%s", victim.ID, n, tail(p.log.String(), 4000))
	}
	if err := m.RestoreAgent(victim.AgentID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the old task ended", func() bool {
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
	// The old TaskManager ends either way: refused by the job master (it
	// exits), or killed when its agent is back.
	refused := hasLine(logs, `msg="refusing a TaskManager"`, victim.ID)
	killed := hasLine(logs, `msg="killing a TaskManager task"`, "task="+victim.ID)
	if !refused && !killed {
		t.Errorf("the old task %s was neither refused nor killed:\n%s", victim.ID, tail(logs, 3000))
	}
	t.Logf("the old TaskManager: refused %v, killed %v", refused, killed)
}

// updateQuota sets the role's quota limit through the operator API.
func updateQuota(t *testing.T, m *mesostest.Master, cpus, mem float64) {
	t.Helper()
	body := fmt.Sprintf(`{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":%q,"limits":{"cpus":{"value":%g},"mem":{"value":%g}}}]}}`, mesosRole, cpus, mem)
	resp, err := http.Post(m.URL()+"/api/v1", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("UPDATE_QUOTA: %s: %s", resp.Status, b)
	}
}

// TestMesosQuota: the role's quota limit allows two of the three
// TaskManagers the job needs. The job waits, and its status says why; it
// starts when the limit is raised, and finishes exactly once.
func TestMesosQuota(t *testing.T) {
	const rows, keys = 60_000, 100
	dir := t.TempDir()
	m, mlog := startMesos(t, dir, nil)
	updateQuota(t, m, 2, 2048)
	j := newMesosJob(t, dir, m, mlog, rows, keys, 30000, "--binary-uri", "file://"+sluiceBin)
	p := j.start()
	const why = "quota limit (cpus:2 mem:2048) allows 2 of 3 TaskManagers"
	waitFor(t, "the quota in the status", func() bool {
		return hasLine(p.log.String(), `msg="Mesos: waiting for offers: 2 of 3 TaskManagers launched`, why)
	}, p)
	j.runningTaskManagers(p, 2)
	active := 0
	for _, tk := range m.Tasks() {
		if !terminalTaskState(tk.State) {
			active++
		}
	}
	if n := active; n != 2 || strings.Contains(p.log.String(), "deploying") {
		t.Fatalf("%d tasks within a quota for 2, the job deployed: %v\n%s", n, strings.Contains(p.log.String(), "deploying"), tail(p.log.String(), 3000))
	}
	updateQuota(t, m, 3, 3072)
	j.finish(p)
	if !hasLine(p.log.String(), `msg="Mesos: 3 of 3 TaskManagers running on Mesos`) {
		t.Errorf("the status never showed the three TaskManagers running:\n%s", tail(p.log.String(), 3000))
	}
}

// subscribeRetries are the waits the framework logged between failed
// subscriptions.
func subscribeRetries(t *testing.T, logs string) []time.Duration {
	var out []time.Duration
	for _, m := range retryRe.FindAllStringSubmatch(logs, -1) {
		d, err := time.ParseDuration(m[1])
		if err != nil {
			t.Fatalf("%q: %v", m[0], err)
		}
		out = append(out, d)
	}
	return out
}

var statusRe = regexp.MustCompile(`msg="Mesos: [^\n]*`)

var retryRe = regexp.MustCompile(`msg="Mesos subscription ended; subscribing again" .* in=(\S+)`)

// checkBackoff waits for three failed subscriptions and checks the waits
// between them grew, the framework is still up, and the status names the
// cause.
func checkBackoff(t *testing.T, p *mesosProc, cause string) {
	t.Helper()
	waitFor(t, "three failed subscriptions", func() bool { return len(subscribeRetries(t, p.log.String())) >= 3 }, p)
	logs := p.log.String()
	waits := subscribeRetries(t, logs)
	if waits[2] <= waits[0] || waits[1] < waits[0] || waits[2] < waits[1] {
		t.Errorf("the waits between subscriptions do not grow: %v", waits)
	}
	if !hasLine(logs, `msg="Mesos: connecting to the Mesos master`, cause) {
		t.Errorf("the status does not say %q:\n%s", cause, tail(logs, 3000))
	}
	if m := statusRe.FindAllString(logs, -1); len(m) > 0 {
		t.Logf("status: %s; waits %v", m[len(m)-1], waits)
	}
	if strings.Contains(logs, "panic") || strings.Contains(logs, "deploying") {
		t.Errorf("unexpected:\n%s", tail(logs, 3000))
	}
}

// TestMesosBadMaster: a wrong master URL, a wrong secret, a master that
// answers garbage, a master that keeps closing the event stream. Each is a
// clear error in the status and the log; subscriptions are retried with a
// growing backoff; no new framework is registered on the way.
func TestMesosBadMaster(t *testing.T) {
	job := func(t *testing.T, master string, extra ...string) *mesosProc {
		dir := t.TempDir()
		// A stub: the job needs no Mesos master of its own.
		j := &mesosJob{t: t, dir: dir, out: filepath.Join(dir, "out"), ha: "file://" + filepath.Join(dir, "ha"), rows: 1000, keys: 10}
		j.args = append([]string{"framework", "--job", repoFile(t, "examples/exactly-once.json"),
			"--resource-manager", "mesos", "--mesos-master", master, "--role", mesosRole, "--ha-dir", j.ha,
			"--taskmanagers", "3", "--binary-uri", "file://" + sluiceBin,
			"--set", "nodes.out.params.path=" + j.out, "--set", "checkpoint.storage=file://" + filepath.Join(dir, "checkpoints")}, extra...)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		t.Cleanup(cancel)
		j.ctx = ctx
		return j.start()
	}
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		p := job(t, "http://"+addr)
		checkBackoff(t, p, "connection refused")
	})
	t.Run("wrong-secret", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		m, mlog := startMesos(t, dir, func(c *mesostest.Config) { c.Credentials = map[string]string{"sluice": "right"} })
		secret := filepath.Join(dir, "secret")
		if err := os.WriteFile(secret, []byte("wrong\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		p := job(t, m.URL(), "--principal", "sluice", "--secret-file", secret)
		checkBackoff(t, p, "401")
		if n := registrations(mlog); n != 0 {
			t.Errorf("%d frameworks registered with a wrong secret", n)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		t.Parallel()
		var calls atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.Header().Set("Content-Type", "application/x-protobuf")
			w.Header().Set("Mesos-Stream-Id", "garbage")
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("<html>\x00\xff not a record</html>\n"))
		}))
		defer srv.Close()
		p := job(t, srv.URL)
		checkBackoff(t, p, "mesos event stream")
		if n := calls.Load(); n < 3 {
			t.Errorf("%d calls to the master", n)
		}
	})
	t.Run("stream-closed", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		// Agents too small for a TaskManager: the framework just waits.
		m, mlog := startMesos(t, dir, func(c *mesostest.Config) {
			for i := range c.Agents {
				c.Agents[i].CPUs = 0.5
			}
		})
		p := job(t, m.URL())
		subscribed := func() int { return strings.Count(p.log.String(), `msg="subscribed to Mesos"`) }
		for i := 1; i <= 3; i++ {
			waitFor(t, fmt.Sprintf("subscription %d", i), func() bool {
				f := m.Frameworks()
				return subscribed() >= i && len(f) == 1 && f[0].Connected
			}, p)
			if i == 1 {
				waitFor(t, "the status", func() bool {
					return hasLine(p.log.String(), `msg="Mesos: waiting for offers: 0 of 3 TaskManagers launched`, "short of cpus")
				}, p)
			}
			if err := m.CloseStream(frameworkIDs(m)[0]); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "subscription 4", func() bool { return subscribed() >= 4 }, p)
		logs := p.log.String()
		if n := registrations(mlog); n != 1 {
			t.Errorf("%d frameworks registered, want 1 subscribed again and again", n)
		}
		if n := strings.Count(logs, "failover=true"); n < 3 {
			t.Errorf("%d subscriptions with the same framework ID, want 3", n)
		}
		if n := strings.Count(logs, "the master ended the event stream"); n < 3 {
			t.Errorf("the log does not say the master ended the stream (%d times):\n%s", n, tail(logs, 3000))
		}
		if w := subscribeRetries(t, logs); len(w) < 3 || w[2] <= w[0] {
			t.Errorf("the waits between subscriptions do not grow: %v", w)
		}
	})
}

// TestMesosKafkaKillAgent runs a Kafka-to-Kafka exactly-once job on kfake
// under the Mesos resource manager and kills an agent that runs a
// TaskManager mid-job: a read_committed reader of the output sees every
// input record's result exactly once.
func TestMesosKafkaKillAgent(t *testing.T) {
	const n, parts = 60_000, 3
	c := kafkatest.Start(t, 0, parts, "in", "out")
	for p := 0; p < parts; p++ {
		var recs []kafkatest.Record
		for i := p; i < n; i += parts {
			recs = append(recs, kafkatest.Record{Value: fmt.Appendf(nil, `{"id":%d,"pad":"x"}`, i)})
		}
		c.Produce(t, "in", int32(p), recs)
	}
	dir := t.TempDir()
	spec := filepath.Join(dir, "job.json")
	if err := os.WriteFile(spec, []byte(kafkaCrashJob), 0o644); err != nil {
		t.Fatal(err)
	}
	m, mlog := startMesos(t, dir, nil)
	brokers, _ := json.Marshal(c.Addrs)
	j := &mesosJob{t: t, m: m, mlog: mlog, dir: dir, ha: "file://" + filepath.Join(dir, "ha")}
	j.args = append(mesosArgs(m.URL(), j.ha, spec), "--binary-uri", "file://"+sluiceBin,
		"--set", "nodes.src.params.brokers="+string(brokers),
		"--set", "nodes.out.params.brokers="+string(brokers),
		"--set", "nodes.src.params.rate=6000",
		"--set", "checkpoint.storage=file://"+filepath.Join(dir, "checkpoints"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	j.ctx = ctx
	p := j.start()
	tasks := j.runningTaskManagers(p, 3)
	j.checkpointed(p)
	if err := m.KillAgent(tasks[0].AgentID); err != nil {
		t.Fatal(err)
	}
	if p.exited() {
		t.Fatalf("the job ended before the agent was killed: make it longer\n%s", tail(p.log.String(), 3000))
	}
	j.ended(p)
	checkRestarted(t, p.log.String())
	checkDoubledOnce(t, c, parts, n, "an agent killed")
}
