package dispatcher

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	sfs "github.com/sluice-stream/sluice/engine/fs"
	"github.com/sluice-stream/sluice/engine/spec"
	"github.com/sluice-stream/sluice/framework"
	fmesos "github.com/sluice-stream/sluice/framework/mesos"
	"github.com/sluice-stream/sluice/internal/mesostest"
)

// The Mesos launcher's tests run a mesostest master whose agents start
// this test binary as the masters' command (fetched like the sluice
// binary): with DISPATCHER_TEST_MESOS_MASTER set, it plays a framework
// master (fakeMesosMaster) instead of running the tests.
func init() {
	if os.Getenv("DISPATCHER_TEST_MESOS_MASTER") == "1" {
		os.Exit(fakeMesosMaster(os.Args[1:]))
	}
}

// fakeMesosMaster reads the job spec from its --job URI, takes an epoch in
// its --ha-dir and publishes its --control and --http addresses, answers
// GET /v1/status, and records its end as a framework master does: 130
// on SIGTERM; 0 after a second when the job is named "finishes".
func fakeMesosMaster(args []string) int {
	flag := func(name string) string {
		for i := 0; i+1 < len(args); i++ {
			if args[i] == name {
				return args[i+1]
			}
		}
		return ""
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "fake master:", err)
		return 2
	}
	ctx := context.Background()
	f, p, err := sfs.Open(flag("--job"))
	if err != nil {
		return fail(err)
	}
	b, err := f.ReadFile(ctx, p)
	if err != nil {
		return fail(err)
	}
	var j struct{ Name string }
	if err := json.Unmarshal(b, &j); err != nil {
		return fail(err)
	}
	ha, err := framework.OpenHA(flag("--ha-dir"))
	if err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", flag("--http"))
	if err != nil {
		return fail(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"job":"j","state":"running","restarts":0}`)
	}))
	host, _ := os.Hostname()
	info := MasterInfo{Control: flag("--control"), HTTP: ln.Addr().String(), Host: host, PID: os.Getpid(), Started: time.Now()}
	if info.Epoch, err = ha.Claim(ctx, info); err != nil {
		return fail(err)
	}
	if err := ha.Publish(ctx, info); err != nil {
		return fail(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	code, reason := 130, "cancelled"
	if j.Name == "finishes" {
		select {
		case <-sig:
		case <-time.After(time.Second):
			code, reason = 0, "finished"
		}
	} else {
		<-sig
	}
	_ = ha.SaveResult(ctx, framework.Result{Epoch: info.Epoch, Code: code, Reason: reason})
	return code
}

func startTestMesos(t *testing.T, dir string) *mesostest.Master {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "mesos.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	cfg := mesostest.Config{
		HeartbeatInterval:   500 * time.Millisecond,
		AgentPingTimeout:    time.Second,
		AllocationInterval:  100 * time.Millisecond,
		StatusUpdateRetry:   500 * time.Millisecond,
		KillGracePeriod:     time.Second,
		MaxFailoverTimeout:  time.Minute,
		WorkDir:             filepath.Join(dir, "mesos"),
		ExecutorEnvironment: map[string]string{"DISPATCHER_TEST_MESOS_MASTER": "1"},
		Logger:              slog.New(slog.NewTextHandler(f, nil)),
	}
	for i := range 3 {
		cfg.Agents = append(cfg.Agents, mesostest.AgentConfig{Hostname: fmt.Sprintf("127.0.0.%d", i+2), CPUs: 2, Mem: 2048})
	}
	m, err := mesostest.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// quotaSpec is a job of parallelism 2 on TaskManagers of 0.25 cpu and 128
// MB with one slot and one spare: 3 TaskManagers.
func quotaSpec(name string, extra string) []byte {
	return []byte(`{"name": "` + name + `", "parallelism": 2,
 "resources": {"cpus": 0.25, "mem": 128, "slots": 1, "spareTaskManagers": 1` + extra + `},
 "nodes": [{"id": "src", "type": "sequence", "params": {"rows": 10}},
           {"id": "out", "type": "discard", "inputs": ["src"]}]}`)
}

func newMesosLauncher(t *testing.T, m *mesostest.Master, store *Store, log *slog.Logger) *Mesos {
	t.Helper()
	client, err := fmesos.NewClient(m.URL())
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Fetched as "sluice" (the task's output_file), whatever its name.
	l := &Mesos{Client: client, Store: store, BinaryURI: "file://" + exe, StopGrace: time.Second, RefuseSeconds: time.Second,
		UnreachableTimeout: 3 * time.Second, FindTimeout: 20 * time.Second, Log: log}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

// roleQuota is role's quota as the Mesos master's GET_QUOTA shows it (nil
// maps: none).
func roleQuota(t *testing.T, c *fmesos.Client, role string) (guarantee, limit map[string]float64) {
	t.Helper()
	guarantee, limit, err := c.Quota(context.Background(), role)
	if err != nil {
		t.Fatalf("GET_QUOTA: %v", err)
	}
	return guarantee, limit
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after a minute", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// masterTasks are the live tasks of framework fw.
func masterTasks(m *mesostest.Master, fw string) []mesostest.Task {
	var out []mesostest.Task
	for _, tk := range m.Tasks() {
		if tk.FrameworkID == fw && tk.Running {
			out = append(out, tk)
		}
	}
	return out
}

// TestMesosLauncher: a master launched as a Mesos task of the dispatcher's
// framework, with its job role's quota set first; a second launcher on the
// same store (a restarted dispatcher) subscribes with the same framework
// ID and finds the running master; Stop kills the task, whose end the
// master recorded (130); the quota is removed when the job ends; a master
// that finishes ends with code 0; one whose process is killed ends with an
// unknown code and is not found again.
func TestMesosLauncher(t *testing.T) {
	dir := t.TempDir()
	m := startTestMesos(t, dir)
	store, err := OpenStore("file://" + filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	lf, err := os.Create(filepath.Join(dir, "dispatcher.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	log := slog.New(slog.NewTextHandler(lf, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := store.Takeover(ctx); err != nil {
		t.Fatal(err)
	}
	create := func(name, extra string) MasterSpec {
		rec := &Record{ID: newID(), Name: name, State: Pending, Run: 1}
		sp := quotaSpec(name, extra)
		if err := store.Create(ctx, rec, sp); err != nil {
			t.Fatal(err)
		}
		return MasterSpec{JobID: rec.ID, Run: 1, Spec: sp, HADir: store.HADir(rec.ID, 1)}
	}

	l1 := newMesosLauncher(t, m, store, log)
	s := create("runs", "")
	m1, err := l1.Launch(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	role := "sluice-" + s.JobID
	// 3 TaskManagers of 0.25 cpu, 128 MB; the limit one TaskManager more.
	// The master's 0.5 cpu, 512 MB are the dispatcher's role's.
	g, lim := roleQuota(t, l1.Client, role)
	if g["cpus"] != 0.75 || g["mem"] != 384 || lim["cpus"] != 1 || lim["mem"] != 512 {
		t.Fatalf("role %s's quota: guarantee %v, limit %v", role, g, lim)
	}
	if g, lim := roleQuota(t, l1.Client, l1.Role); g["cpus"] != 0.5 || g["mem"] != 512 || lim["cpus"] != 1 || lim["mem"] != 1024 {
		t.Fatalf("the dispatcher's role %s's quota: guarantee %v, limit %v", l1.Role, g, lim)
	}
	if q := l1.Quotas()[role]; q.Guarantee["cpus"] != 0.75 || q.Limit["mem"] != 512 {
		t.Fatalf("Quotas: %+v", l1.Quotas())
	}
	waitUntil(t, "a published master", func() bool { info, _ := Leader(ctx, s.HADir); return info != nil })
	fw := l1.FrameworkID()
	if tasks := masterTasks(m, fw); len(tasks) != 1 || tasks[0].State != "TASK_RUNNING" {
		t.Fatalf("tasks of the dispatcher's framework: %+v", tasks)
	}
	if got, _ := store.FrameworkIDs().Load(ctx); got != fw {
		t.Fatalf("stored framework ID %q, subscribed as %q", got, fw)
	}
	if !strings.HasPrefix(m1.String(), "mesos task "+masterTaskPrefix+s.JobID) {
		t.Fatalf("master %s", m1)
	}

	// A restarted dispatcher: the same framework, the same master task.
	l1.Close()
	l2 := newMesosLauncher(t, m, store, log)
	m2, err := l2.Find(ctx, s)
	if err != nil || m2 == nil {
		t.Fatalf("Find after a restart: %v %v", m2, err)
	}
	if l2.FrameworkID() != fw {
		t.Fatalf("subscribed again as %q, was %q", l2.FrameworkID(), fw)
	}
	if n := len(m.Frameworks()); n != 1 {
		t.Fatalf("%d frameworks registered, want 1", n)
	}
	if err := m2.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if exit := m2.Wait(ctx); !exit.Known || exit.Code != 130 {
		t.Fatalf("a stopped master's end: %+v", exit)
	}
	if tasks := masterTasks(m, fw); len(tasks) != 0 {
		t.Fatalf("the stopped master's task runs: %+v", tasks)
	}
	if m3, err := l2.Find(ctx, s); m3 != nil || err != nil {
		t.Fatalf("found a stopped master: %v %v", m3, err)
	}
	l2.JobEnded(ctx, s.JobID)
	if g, lim := roleQuota(t, l2.Client, role); g != nil || lim != nil {
		t.Fatalf("role %s's quota after the job ended: %v %v", role, g, lim)
	}

	// A job that finishes, with its own role and quota limit.
	s = create("finishes", `, "quota": {"limit": {"cpus": 3}}`)
	s.Spec = append([]byte(nil), s.Spec...)
	fin, err := l2.Launch(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, lim := roleQuota(t, l2.Client, "sluice-"+s.JobID); lim["cpus"] != 3 || len(lim) != 1 {
		t.Fatalf("the spec's limit: %v", lim)
	}
	if exit := fin.Wait(ctx); !exit.Known || exit.Code != 0 {
		t.Fatalf("a master that finished: %+v", exit)
	}

	// A limit below the guarantee is refused before anything is launched.
	s = create("low", `, "quota": {"limit": {"cpus": 0.5}}`)
	if _, err := l2.Launch(ctx, s); err == nil || !strings.Contains(err.Error(), "below the job's guarantee") {
		t.Fatalf("a limit below the guarantee: %v", err)
	}

	// A master whose process dies.
	s = create("dies", "")
	dies, err := l2.Launch(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	var victim mesostest.Task
	waitUntil(t, "the master's process", func() bool {
		info, _ := Leader(ctx, s.HADir)
		for _, tk := range masterTasks(m, fw) {
			if strings.Contains(tk.ID, s.JobID) && tk.PID > 0 {
				victim = tk
			}
		}
		return info != nil && victim.PID > 0
	})
	if err := syscall.Kill(-victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exit := dies.Wait(ctx)
	if exit.Known || !strings.Contains(exit.Reason, "TASK_FAILED") {
		t.Fatalf("a killed master's end: %+v", exit)
	}
	if m4, err := l2.Find(ctx, s); m4 != nil || err != nil {
		t.Fatalf("found a dead master: %v %v", m4, err)
	}

	// A dispatcher that claims no master (its job ended while it was
	// away): the task is killed after OrphanAfter.
	s = create("orphan", "")
	if _, err := l2.Launch(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a published master", func() bool { info, _ := Leader(ctx, s.HADir); return info != nil })
	l2.Close()
	l3 := newMesosLauncher(t, m, store, log)
	l3.mu.Lock()
	l3.OrphanAfter = time.Second
	l3.mu.Unlock()
	waitUntil(t, "the orphan killed", func() bool { return len(masterTasks(m, fw)) == 0 })
	l2 = l3

	// A master whose agent is lost: taken for dead once the agent has
	// been unreachable for UnreachableTimeout.
	s = create("lost", "")
	lost, err := l2.Launch(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	victim = mesostest.Task{}
	waitUntil(t, "the master's process", func() bool {
		info, _ := Leader(ctx, s.HADir)
		for _, tk := range masterTasks(m, fw) {
			if strings.Contains(tk.ID, s.JobID) && tk.PID > 0 {
				victim = tk
			}
		}
		return info != nil && victim.PID > 0
	})
	if err := m.KillAgent(victim.AgentID); err != nil {
		t.Fatal(err)
	}
	if exit := lost.Wait(ctx); exit.Known || !strings.Contains(exit.Reason, "unreachable") {
		t.Fatalf("a lost master's end: %+v", exit)
	}
}

// The dispatcher tells the Mesos launcher when a job ended: the job's
// role loses its quota once the job FINISHED.
func TestMesosQuotaRemovedAtEnd(t *testing.T) {
	dir := t.TempDir()
	m := startTestMesos(t, dir)
	store, err := OpenStore("file://" + filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	l := newMesosLauncher(t, m, store, log)
	d, err := New(Config{Store: store, Launcher: l, Backoff: 10 * time.Millisecond, PollInterval: 50 * time.Millisecond, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rec, err := d.submit(ctx, "finishes", quotaSpec("finishes", ""), "")
	if err != nil {
		t.Fatal(err)
	}
	role := "sluice-" + rec.ID
	j := d.job(rec.ID)
	if !j.waitFor(ctx, time.Minute, func(s State, _ Record, _ Master) bool { return s.Terminal() }) {
		t.Fatal("the job did not end")
	}
	if st, r, _ := j.state(); st != Finished {
		t.Fatalf("the job ended %s: %s", st, r.Reason)
	}
	waitUntil(t, "the quota removed", func() bool { g, lim := roleQuota(t, l.Client, role); return g == nil && lim == nil })
	// It was set before: the master's log has both updates.
	b, err := os.ReadFile(filepath.Join(dir, "mesos.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), `msg="updated quota" component=mesostest role=`+role); n != 2 {
		t.Fatalf("%d quota updates of %s, want 2 (set, removed):\n%s", n, role, b)
	}
}

// The quota of a job: guarantee = its TaskManagers (as its master counts
// them, spares included); limit = the spec's or one TaskManager more. (Its
// master is guaranteed to the dispatcher's role, where it runs.)
func TestQuotaFor(t *testing.T) {
	j := mustParseSpec(t, quotaSpec("q", ""))
	role, q, err := quotaFor(j, "0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	if role != "sluice-0123456789abcdef" || q.Guarantee["cpus"] != 0.75 || q.Guarantee["mem"] != 384 ||
		q.Limit["cpus"] != 1 || q.Limit["mem"] != 512 || len(q.Guarantee) != 2 {
		t.Fatalf("quota: %s %+v", role, q)
	}
	j = mustParseSpec(t, []byte(`{"name": "r", "role": "streaming", "nodes": [{"id": "src", "type": "sequence", "params": {"rows": 10}},
		{"id": "out", "type": "discard", "inputs": ["src"]}]}`))
	role, q, err = quotaFor(j, "0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	// Defaults: one TaskManager of 1 cpu and 1024 MB.
	if role != "streaming" || q.Guarantee["cpus"] != 1 || q.Guarantee["mem"] != 1024 || q.Limit["cpus"] != 2 || q.Limit["mem"] != 2048 {
		t.Fatalf("quota: %s %+v", role, q)
	}
}

func mustParseSpec(t *testing.T, b []byte) *spec.Job {
	t.Helper()
	j, err := spec.Parse(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// TestMesosSilentMaster: with a long UnreachableTimeout, a master whose
// agent is partitioned but that still answers on its REST API is kept;
// one whose agent died (and so does not answer) is taken for dead once its
// agent has been unreachable and it silent for SilentTimeout. Before, a
// dead agent's master was waited for the whole UnreachableTimeout (2 min
// by default, after Mesos' own agent timeout), its job stopped meanwhile.
func TestMesosSilentMaster(t *testing.T) {
	dir := t.TempDir()
	m := startTestMesos(t, dir)
	store, err := OpenStore("file://" + filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := store.Takeover(ctx); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	l := newMesosLauncher(t, m, store, log)
	l.mu.Lock()
	l.UnreachableTimeout, l.SilentTimeout = 10*time.Minute, 2*time.Second
	l.mu.Unlock()
	launch := func(name string) (Master, mesostest.Task) {
		rec := &Record{ID: newID(), Name: name, State: Pending, Run: 1}
		sp := quotaSpec(name, "")
		if err := store.Create(ctx, rec, sp); err != nil {
			t.Fatal(err)
		}
		s := MasterSpec{JobID: rec.ID, Run: 1, Spec: sp, HADir: store.HADir(rec.ID, 1)}
		ms, err := l.Launch(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		var task mesostest.Task
		waitUntil(t, "the master published", func() bool {
			info, _ := Leader(ctx, s.HADir)
			for _, tk := range masterTasks(m, l.FrameworkID()) {
				if strings.Contains(tk.ID, s.JobID) && tk.PID > 0 {
					task = tk
				}
			}
			return info != nil && info.HTTP != "" && task.PID > 0
		})
		return ms, task
	}
	ended := func(ms Master, within time.Duration) (Exit, bool) {
		wctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		e := ms.Wait(wctx)
		return e, wctx.Err() == nil
	}

	kept, task := launch("partitioned")
	keptAgent := task.AgentID
	if err := m.PartitionAgent(task.AgentID); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the master's task unreachable", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		mm := l.tasks[task.ID]
		return mm != nil && !mm.unreachableSince.IsZero()
	})
	if e, ok := ended(kept, 4*l.SilentTimeout); ok {
		t.Fatalf("a partitioned master that answers was taken for dead: %+v", e)
	}
	if err := m.RestoreAgent(task.AgentID); err != nil {
		t.Fatal(err)
	}

	dead, task := launch("dead")
	if err := m.KillAgent(task.AgentID); err != nil {
		t.Fatal(err)
	}
	e, ok := ended(dead, time.Minute)
	if !ok || e.Known || !strings.Contains(e.Reason, "has not answered") {
		t.Fatalf("a dead agent's master: ended %v, %+v", ok, e)
	}
	if e, ok := ended(kept, time.Millisecond); ok && task.AgentID != keptAgent {
		t.Fatalf("the partitioned master ended: %+v", e)
	}
}
