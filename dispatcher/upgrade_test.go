package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluice-stream/sluice/framework"
	"github.com/sluice-stream/sluice/internal/kafkatest"
	"github.com/sluice-stream/sluice/internal/procs"
)

// upgradeLauncher is the fake launcher plus masters in standby: they say
// so on GET /v1/status, with their TaskManagers, until POST /v1/start.
type upgradeLauncher struct {
	*fakeLauncher
	// neverReady: standby masters never have their TaskManagers.
	neverReady atomic.Bool
	// failStart: a standby master cannot restore: it ends on POST /v1/start.
	failStart atomic.Bool
	// onReady is called once a standby master first reports itself ready.
	onReady func()
	// adoptOld: Find finds running masters that are not standing by too.
	adoptOld atomic.Bool

	mu       sync.Mutex
	standbys []*standbyMaster
	byHA     map[string]*standbyMaster
}

type standbyMaster struct {
	*fakeMaster
	spec    MasterSpec
	started atomic.Value // the restore path POST /v1/start gave
	stopped atomic.Bool
}

func (m *standbyMaster) Stop(ctx context.Context) error {
	m.stopped.Store(true)
	m.end(130)
	return nil
}

func (l *upgradeLauncher) Launch(ctx context.Context, s MasterSpec) (Master, error) {
	if !s.Standby {
		return l.fakeLauncher.Launch(ctx, s)
	}
	m := &standbyMaster{fakeMaster: &fakeMaster{done: make(chan struct{})}, spec: s}
	var once sync.Once
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		if m.started.Load() != nil {
			writeJSON(w, 200, map[string]any{"job": "j", "state": "running"})
			return
		}
		reg := 2
		if l.neverReady.Load() {
			reg = 1
		} else if l.onReady != nil {
			once.Do(l.onReady)
		}
		writeJSON(w, 200, map[string]any{"job": "j", "state": "standby", "standby": map[string]int{"registered": reg, "wanted": 2}})
	})
	mux.HandleFunc("POST /v1/start", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Restore string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		if m.started.Load() != nil {
			writeJSON(w, 409, map[string]string{"error": framework.ErrNotStandby.Error()})
			return
		}
		m.started.Store(req.Restore)
		if l.failStart.Load() {
			writeJSON(w, 503, map[string]string{"error": "the job ended before its tasks ran"})
			go m.end(1)
			return
		}
		writeJSON(w, 200, map[string]any{"state": "running", "restore": req.Restore})
	})
	mux.HandleFunc("POST /v1/savepoint", func(w http.ResponseWriter, r *http.Request) {
		p := fmt.Sprintf("file:///sp/new-%d", m.sp.Add(1))
		writeJSON(w, 200, map[string]any{"path": p})
		if r.URL.Query().Get("stop") == "true" {
			go m.end(0)
		}
	})
	m.srv = httptest.NewServer(mux)
	l.t.Cleanup(m.srv.Close)
	ha, err := framework.OpenHA(s.HADir)
	if err != nil {
		return nil, err
	}
	if err := ha.Publish(ctx, MasterInfo{Epoch: l.epoch.Add(1), HTTP: m.srv.Listener.Addr().String(), PID: 1, Started: time.Now()}); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.standbys = append(l.standbys, m)
	if l.byHA == nil {
		l.byHA = map[string]*standbyMaster{}
	}
	l.byHA[s.HADir] = m
	l.mu.Unlock()
	return m, nil
}

// Find finds a standby master (started, or not) that has not ended: as a
// dispatcher started again finds the new version's.
func (l *upgradeLauncher) Find(ctx context.Context, s MasterSpec) (Master, error) {
	l.mu.Lock()
	m := l.byHA[s.HADir]
	l.mu.Unlock()
	if m == nil {
		if l.adoptOld.Load() {
			// The newest running master of the run (not standing by).
			f := l.fakeLauncher
			f.mu.Lock()
			defer f.mu.Unlock()
			for i := len(f.launched) - 1; i >= 0; i-- {
				select {
				case <-f.launched[i].done:
				default:
					if f.specs[i].HADir == s.HADir {
						return f.launched[i], nil
					}
				}
			}
		}
		return nil, nil
	}
	select {
	case <-m.done:
		return nil, nil
	default:
		return m, nil
	}
}

func (l *upgradeLauncher) lastStandby() *standbyMaster {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.standbys) == 0 {
		return nil
	}
	return l.standbys[len(l.standbys)-1]
}

func newUpgradeEnv(t *testing.T, store *Store, l *upgradeLauncher) *env {
	t.Helper()
	if store == nil {
		store = NewStore(&flakyFS{}, t.TempDir())
	}
	d, err := New(Config{Store: store, Launcher: l, Backoff: time.Millisecond, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(func() { srv.Close(); d.Close() })
	return &env{t: t, d: d, srv: srv, l: l.fakeLauncher}
}

// upgradedSpec is goodSpec's next version: parallelism 3.
var upgradedSpec = strings.Replace(goodSpec, `"parallelism": 2`, `"parallelism": 3`, 1)

// TestUpgrade: the new version's master is launched in standby with the
// new spec on the next run, the old one stops with a savepoint only once
// the new one has its TaskManagers, and the new one starts from it; the
// answer has the downtime. The old spec stays for the old run, the new
// one is the job's from then on (a rescale after uses it).
func TestUpgrade(t *testing.T) {
	l := &upgradeLauncher{fakeLauncher: &fakeLauncher{t: t}}
	e := newUpgradeEnv(t, nil, l)
	id := e.submit(goodSpec)
	e.waitState(id, Running)
	old, _ := e.l.last()
	var readyWhileOld atomic.Bool
	l.onReady = func() {
		select {
		case <-old.done:
		default:
			readyWhileOld.Store(true)
		}
	}
	var raw map[string]any
	if code := e.do("POST", "/v1/jobs/"+id+"/upgrade", []byte(upgradedSpec), &raw); code != 200 {
		t.Fatalf("upgrade: %d %v", code, raw)
	}
	props := schemaProps(loadOpenAPI(t), "#/components/schemas/UpgradeReply")
	for f := range raw {
		if !props[f] {
			t.Errorf("upgrade reply field %q is not in the OpenAPI schema", f)
		}
	}
	var rep UpgradeReply
	b, _ := json.Marshal(raw)
	_ = json.Unmarshal(b, &rep)
	if rep.Run != 2 || rep.PreviousRun != 1 || rep.Savepoint != "file:///sp/savepoint-1" || rep.DowntimeMs < 0 || rep.TaskManagers != 2 {
		t.Fatalf("upgrade reply: %+v", rep)
	}
	if _, ok := raw["downtimeMs"]; !ok {
		t.Fatal("no downtimeMs in the reply")
	}
	if !readyWhileOld.Load() {
		t.Fatal("the new version was not ready while the old one ran")
	}
	sm := l.lastStandby()
	if sm.spec.Run != 2 || !sm.spec.Standby || string(sm.spec.Spec) != upgradedSpec || sm.spec.Restore != "" {
		t.Fatalf("the new version's master: %+v", sm.spec)
	}
	if got, _ := sm.started.Load().(string); got != rep.Savepoint {
		t.Fatalf("the new version started from %q, want the savepoint %q", got, rep.Savepoint)
	}
	st := e.waitState(id, Running)
	if st.Run != 2 || st.Upgrade != nil || st.RestoredFrom != rep.Savepoint || st.Master == nil || st.Master.HTTP != sm.srv.Listener.Addr().String() {
		t.Fatalf("status after the upgrade: %+v", st)
	}
	if e.l.count() != 1 {
		t.Fatalf("%d masters launched besides the standby one, want only the first", e.l.count())
	}
	ctx := context.Background()
	if b, err := e.d.store.Spec(ctx, id); err != nil || string(b) != goodSpec {
		t.Fatalf("the submitted spec: %v %s", err, b)
	}
	if b, err := e.d.store.RunSpec(ctx, id, 2); err != nil || string(b) != upgradedSpec {
		t.Fatalf("run 2's spec: %v %s", err, b)
	}
	// A rescale now starts run 3 with the upgraded spec.
	var rr RescaleReply
	if code := e.do("POST", "/v1/jobs/"+id+"/rescale", []byte(`{"parallelism": 4}`), &rr); code != 200 || rr.Run != 3 {
		t.Fatalf("rescale after the upgrade: %d %+v", code, rr)
	}
	if _, ms := e.l.last(); ms.Run != 3 || string(ms.Spec) != upgradedSpec {
		t.Fatalf("run 3: %+v", ms)
	}
}

// TestUpgradeRefused: a bad spec is a 400 naming node and field and
// changes nothing; an unknown job is a 404; a job that does not run, 409.
func TestUpgradeRefused(t *testing.T) {
	l := &upgradeLauncher{fakeLauncher: &fakeLauncher{t: t}}
	e := newUpgradeEnv(t, nil, l)
	var er errorReply
	if code := e.do("POST", "/v1/jobs/0123456789abcdef/upgrade", []byte(upgradedSpec), &er); code != 404 {
		t.Fatalf("unknown job: %d %+v", code, er)
	}
	id := e.submit(goodSpec)
	e.waitState(id, Running)
	bad := strings.Replace(upgradedSpec, `"rows": 100`, `"rows": "many"`, 1)
	if code := e.do("POST", "/v1/jobs/"+id+"/upgrade", []byte(bad), &er); code != 400 || !strings.Contains(er.Error, "src") || !strings.Contains(er.Error, "rows") {
		t.Fatalf("bad spec: %d %+v", code, er)
	}
	if code := e.do("POST", "/v1/jobs/"+id+"/upgrade", []byte(`{"savepoint": "file:///x", `+upgradedSpec[1:]), &er); code != 400 || !strings.Contains(er.Error, "savepoint") {
		t.Fatalf("a savepoint field: %d %+v", code, er)
	}
	otherKeys := strings.Replace(upgradedSpec, `"parallelism": 3,`, `"parallelism": 3, "maxParallelism": 256,`, 1)
	if code := e.do("POST", "/v1/jobs/"+id+"/upgrade", []byte(otherKeys), &er); code != 400 || !strings.Contains(er.Error, "maxParallelism") {
		t.Fatalf("another maxParallelism: %d %+v", code, er)
	}
	if code := e.do("POST", "/v1/jobs/"+id+"/upgrade?timeout=soon", []byte(upgradedSpec), &er); code != 400 {
		t.Fatalf("a bad timeout: %d %+v", code, er)
	}
	after := e.d.job(id).snapshot()
	if after.Run != 1 || after.Upgrade != nil || after.SpecRun != 0 || after.MasterLaunches != 1 || l.lastStandby() != nil || e.l.count() != 1 {
		t.Fatalf("a refused upgrade changed the job: %+v", after)
	}
	if _, err := e.d.store.RunSpec(context.Background(), id, 2); err == nil {
		t.Fatal("a refused upgrade stored a spec")
	}
	var c cancelReply
	e.do("DELETE", "/v1/jobs/"+id, nil, &c)
	if code := e.do("POST", "/v1/jobs/"+id+"/upgrade", []byte(upgradedSpec), &er); code != 409 {
		t.Fatalf("upgrade of a cancelled job: %d %+v", code, er)
	}
}

// TestUpgradeNoTaskManagers: the new version never gets its TaskManagers:
// it is stopped after the timeout and the old version runs on untouched.
func TestUpgradeNoTaskManagers(t *testing.T) {
	l := &upgradeLauncher{fakeLauncher: &fakeLauncher{t: t}}
	l.neverReady.Store(true)
	e := newUpgradeEnv(t, nil, l)
	id := e.submit(goodSpec)
	e.waitState(id, Running)
	old, _ := e.l.last()
	var er errorReply
	if code := e.do("POST", "/v1/jobs/"+id+"/upgrade?timeout=300ms", []byte(upgradedSpec), &er); code != 504 || !strings.Contains(er.Error, "1 of 2") {
		t.Fatalf("upgrade without TaskManagers: %d %+v", code, er)
	}
	if sm := l.lastStandby(); sm == nil || !sm.stopped.Load() {
		t.Fatal("the new version's master was not stopped")
	}
	select {
	case <-old.done:
		t.Fatal("the old version was stopped")
	default:
	}
	st := e.waitState(id, Running)
	if st.Run != 1 || st.Upgrade != nil || old.sp.Load() != 0 {
		t.Fatalf("after a failed upgrade: %+v (savepoints %d)", st, old.sp.Load())
	}
}

// TestUpgradeSavepointFails: the old version cannot stop with a
// savepoint: the new version's master is stopped, the job keeps its run.
func TestUpgradeSavepointFails(t *testing.T) {
	l := &upgradeLauncher{fakeLauncher: &fakeLauncher{t: t}}
	e := newUpgradeEnv(t, nil, l)
	id := e.submit(goodSpec)
	e.waitState(id, Running)
	old, _ := e.l.last()
	// Its API goes away once the new version is ready.
	l.onReady = func() { old.srv.CloseClientConnections(); old.srv.Listener.Close() }
	var er errorReply
	if code := e.do("POST", "/v1/jobs/"+id+"/upgrade", []byte(upgradedSpec), &er); code/100 == 2 || !strings.Contains(er.Error, "savepoint") {
		t.Fatalf("upgrade with a failing savepoint: %d %+v", code, er)
	}
	if sm := l.lastStandby(); !sm.stopped.Load() || sm.started.Load() != nil {
		t.Fatal("the new version's master was not stopped, or was started")
	}
	rec := e.d.job(id).snapshot()
	if rec.Run != 1 || rec.Upgrade != nil || rec.SpecRun != 0 {
		t.Fatalf("after a failed upgrade: %+v", rec)
	}
}

// TestUpgradeRollBack: the new version cannot start from the savepoint:
// the job goes back to its old spec from that savepoint, on a new run.
func TestUpgradeRollBack(t *testing.T) {
	l := &upgradeLauncher{fakeLauncher: &fakeLauncher{t: t}}
	l.failStart.Store(true)
	e := newUpgradeEnv(t, nil, l)
	id := e.submit(goodSpec)
	e.waitState(id, Running)
	var er errorReply
	if code := e.do("POST", "/v1/jobs/"+id+"/upgrade", []byte(upgradedSpec), &er); code != 502 || !strings.Contains(er.Error, "previous version") {
		t.Fatalf("upgrade to a version that does not start: %d %+v", code, er)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := e.waitState(id, Running)
		if st.Run == 3 {
			if st.Upgrade != nil || st.RestoredFrom != "file:///sp/savepoint-1" || !strings.Contains(st.Reason, "rolled back") {
				t.Fatalf("after the roll back: %+v", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not rolled back: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, ms := e.l.last(); ms.Run != 3 || string(ms.Spec) != goodSpec || ms.Restore != "file:///sp/savepoint-1" {
		t.Fatalf("the rolled back run: %+v", ms)
	}
}

// TestUpgradeRecovery: a dispatcher that stopped during an upgrade
// finishes it when the old version had stopped with the savepoint, and
// rolls it back when it had not.
func TestUpgradeRecovery(t *testing.T) {
	for _, stopped := range []bool{true, false} {
		t.Run(fmt.Sprintf("stopped=%v", stopped), func(t *testing.T) {
			l := &upgradeLauncher{fakeLauncher: &fakeLauncher{t: t}}
			store := NewStore(&flakyFS{}, t.TempDir())
			e := newUpgradeEnv(t, store, l)
			id := e.submit(goodSpec)
			e.waitState(id, Running)
			old, _ := e.l.last()
			e.d.Close()
			// As the dispatcher left it: the new version stands by, and
			// (stopped) the old one ended with the savepoint.
			ctx := context.Background()
			rec := e.d.job(id).snapshot()
			rec.Upgrade = &Upgrade{Run: 2, Requested: time.Now()}
			if stopped {
				rec.Upgrade.Savepoint = "file:///sp/upgrade"
				old.end(0)
			}
			if err := store.SaveRunSpec(ctx, id, 2, []byte(upgradedSpec)); err != nil {
				t.Fatal(err)
			}
			if err := store.Save(ctx, &rec); err != nil {
				t.Fatal(err)
			}
			ms := e.d.masterSpec(&Record{ID: id, Run: 2}, []byte(upgradedSpec))
			ms.Standby = true
			if _, err := l.Launch(ctx, ms); err != nil {
				t.Fatal(err)
			}
			sm := l.lastStandby()
			e2 := newUpgradeEnv(t, store, l)
			deadline := time.Now().Add(30 * time.Second)
			for {
				s, rec, _ := e2.d.job(id).state()
				done := rec.Upgrade == nil && s == Running
				if stopped {
					done = done && rec.Run == 2
				}
				if done {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("not recovered: %s %+v", s, rec)
				}
				time.Sleep(10 * time.Millisecond)
			}
			rec = e2.d.job(id).snapshot()
			if stopped {
				if got, _ := sm.started.Load().(string); got != "file:///sp/upgrade" || sm.stopped.Load() || rec.SpecRun != 2 {
					t.Fatalf("finished: started from %q, stopped %v, record %+v", got, sm.stopped.Load(), rec)
				}
			} else if !sm.stopped.Load() || sm.started.Load() != nil || rec.Run != 1 || rec.SpecRun != 0 {
				t.Fatalf("rolled back: standby stopped %v started %v, record %+v", sm.stopped.Load(), sm.started.Load(), rec)
			}
		})
	}
}

func loadOpenAPI(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile("../docs/dispatcher-openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

var (
	sluiceOnce sync.Once
	sluiceBin  string
	sluiceErr  error
)

// buildSluice builds the sluice binary once for the tests that run real
// framework masters.
func buildSluice(t *testing.T) string {
	t.Helper()
	sluiceOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-dispatcher-bin")
		if err != nil {
			sluiceErr = err
			return
		}
		sluiceBin = filepath.Join(dir, "sluice")
		out, err := exec.Command("go", "build", "-o", sluiceBin, "../cmd/sluice").CombinedOutput()
		if err != nil {
			sluiceErr = fmt.Errorf("building sluice: %v\n%s", err, out)
		}
	})
	if sluiceErr != nil {
		t.Fatal(sluiceErr)
	}
	return sluiceBin
}

// upgradeJob is the exactly-once example (a sequence, a 1 s tumbling
// window per key, a file sink) at parallelism p, writing to out.
func upgradeJob(out string, p int) string {
	return fmt.Sprintf(`{"name": "upgrade", "parallelism": %d, "maxParallelism": 64,
  "checkpoint": {"interval": "150ms", "mode": "exactly-once", "retained": 2},
  "restart": {"strategy": "none"},
  "nodes": [
    {"id": "src", "type": "sequence", "params": {"rows": %d, "keys": %d, "intervalMs": 1, "rate": 4000}},
    {"id": "win", "type": "window", "inputs": ["src"], "params": {
      "keys": ["key"], "type": "tumbling", "size": "1s",
      "aggregates": [{"name": "count", "fn": "count"}, {"name": "sum", "fn": "sum", "field": "id"}]}},
    {"id": "out", "type": "file", "inputs": ["win"], "params": {"path": %q}}]}`, p, upgradeRows, upgradeKeys, out)
}

const upgradeRows, upgradeKeys = 40000, 20

// TestUpgradeLocal: a job on local framework masters and TaskManager
// processes is upgraded to parallelism 3: the new version's master stood
// by with its TaskManagers while the old one ran, restored the old one's
// final savepoint, runs at the new parallelism, and the job's output —
// windows of count and sum per key — is exactly what the input makes:
// nothing lost, nothing written twice across the upgrade.
func TestUpgradeLocal(t *testing.T) {
	bin := buildSluice(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	store, err := OpenStore("file://" + filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	l := &Local{Binary: bin, WorkDir: filepath.Join(dir, "work"), StopGrace: 10 * time.Second}
	d, err := New(Config{Store: store, Launcher: l, PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	e := &env{t: t, d: d, srv: srv}
	t.Cleanup(func() {
		srv.Close()
		d.Close()
		// Nothing this test started may outlive it.
		for _, p := range procs.Live() {
			if bytes.Contains(p.Cmdline, []byte(dir)) {
				_ = syscall.Kill(p.PID, syscall.SIGKILL)
			}
		}
	})
	id := e.submit(upgradeJob(out, 2))
	e.waitFor(id, "RUNNING with a checkpoint", func(st JobStatus) bool {
		return st.State == Running && st.LatestCheckpoint != nil
	})
	oldHA := store.HADir(id, 1)
	var rep UpgradeReply
	var er errorReply
	body := upgradeJob(out, 3)
	req, _ := http.NewRequest("POST", srv.URL+"/v1/jobs/"+id+"/upgrade", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		_ = json.Unmarshal(b, &er)
		t.Fatalf("upgrade: %d %s\nrun 2's master:\n%s", resp.StatusCode, b, logTail(filepath.Join(l.WorkDir, id, "run-2", "master.log")))
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("upgrade: %s", b)
	if rep.Run != 2 || rep.PreviousRun != 1 || rep.DowntimeMs <= 0 || rep.TaskManagers < 1 {
		t.Fatalf("upgrade reply: %+v", rep)
	}
	if _, err := os.Stat(filepath.Join(strings.TrimPrefix(rep.Savepoint, "file://"), "_metadata")); err != nil {
		t.Fatalf("the savepoint: %v", err)
	}
	st := e.waitFor(id, "RUNNING its new version", func(st JobStatus) bool {
		return st.State == Running && st.Run == 2 && st.Master != nil
	})
	if st.RestoredFrom != rep.Savepoint || st.Upgrade != nil {
		t.Fatalf("after the upgrade: %+v", st)
	}
	// The new version: parallelism 3, restored from the savepoint.
	var vs struct {
		Vertices []struct {
			ID          string `json:"id"`
			Parallelism int    `json:"parallelism"`
		} `json:"vertices"`
	}
	if _, err := callMaster(context.Background(), d.client, st.Master.HTTP, "GET", "/v1/vertices", &vs); err != nil {
		t.Fatal(err)
	}
	for _, v := range vs.Vertices {
		if v.ID == "win" && v.Parallelism != 3 {
			t.Fatalf("the new version's window runs at parallelism %d, want 3", v.Parallelism)
		}
	}
	newLog := filepath.Join(l.WorkDir, id, "run-2", "master.log")
	if lb, _ := os.ReadFile(newLog); !bytes.Contains(lb, []byte("standing by")) ||
		!bytes.Contains(lb, []byte("restoring")) || !bytes.Contains(lb, []byte(rep.Savepoint)) {
		t.Fatalf("run 2's master log does not show the standby and the restore of %s:\n%s", rep.Savepoint, lb)
	}
	if ms := mastersOf(oldHA); len(ms) != 0 {
		t.Fatalf("the old version's master still runs: %v", ms)
	}
	e.waitFor(id, "FINISHED", func(st JobStatus) bool { return st.State.Terminal() })
	if st := e.status(id); st.State != Finished {
		t.Fatalf("the job ended %s: %s\n%s", st.State, st.Reason, logTail(newLog))
	}
	checkWindows(t, out)
}

// checkWindows compares the committed part files under dir with what the
// sequence makes: every (key, 1 s window) once, with its count and sum.
func checkWindows(t *testing.T, dir string) {
	t.Helper()
	type key struct{ k, start int64 }
	type agg struct{ count, sum int64 }
	want := map[key]agg{}
	for id := int64(0); id < upgradeRows; id++ {
		k := key{id % upgradeKeys, id / 1000 * 1000}
		a := want[k]
		a.count++
		a.sum += id
		want[k] = a
	}
	got := map[key]agg{}
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if !strings.HasPrefix(e.Name(), "part-") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if line == "" {
				continue
			}
			var r struct {
				Key         int64 `json:"key"`
				WindowStart int64 `json:"window_start"`
				Count       int64 `json:"count"`
				Sum         int64 `json:"sum"`
			}
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("%s: %q: %v", e.Name(), line, err)
			}
			k := key{r.Key, r.WindowStart}
			if prev, dup := got[k]; dup {
				t.Fatalf("key %d window %d written twice: %+v and %+v", k.k, k.start, prev, r)
			}
			got[k] = agg{r.Count, r.Sum}
		}
	}
	bad := 0
	for k, w := range want {
		if g := got[k]; g != w {
			if bad++; bad <= 5 {
				t.Errorf("key %d window %d: got %+v, want %+v", k.k, k.start, g, w)
			}
		}
	}
	if len(got) != len(want) || bad > 0 {
		t.Fatalf("%d windows written, %d wanted, %d wrong", len(got), len(want), bad)
	}
}

// mastersOf lists the live `sluice framework` processes of haDir.
func mastersOf(haDir string) []int {
	var out []int
	for _, p := range procs.Live() {
		if bytes.Contains(p.Cmdline, []byte("\x00framework\x00")) && bytes.Contains(p.Cmdline, []byte(haDir)) {
			out = append(out, p.PID)
		}
	}
	return out
}

func (e *env) status(id string) JobStatus {
	e.t.Helper()
	var st JobStatus
	e.do("GET", "/v1/jobs/"+id, nil, &st)
	return st
}

// waitFor waits up to 2 minutes for the job's status to satisfy ok.
func (e *env) waitFor(id, what string, ok func(JobStatus) bool) JobStatus {
	e.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st := e.status(id)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s not %s after 2 minutes: %+v", id, what, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestUpgradeRecoveryOldStopping: a dispatcher restarted during an
// upgrade that had asked the old version to stop but not recorded its
// savepoint rolls it back; the old master it adopts, which may have been
// stopping with that savepoint, then exits 0 — which is no finish: its
// run starts again.
func TestUpgradeRecoveryOldStopping(t *testing.T) {
	rollBackWait = 30 * time.Second
	defer func() { rollBackWait = time.Minute }()
	l := &upgradeLauncher{fakeLauncher: &fakeLauncher{t: t}}
	l.adoptOld.Store(true)
	store := NewStore(&flakyFS{}, t.TempDir())
	e := newUpgradeEnv(t, store, l)
	id := e.submit(goodSpec)
	e.waitState(id, Running)
	old, _ := e.l.last()
	e.d.Close()
	ctx := context.Background()
	rec := e.d.job(id).snapshot()
	rec.Upgrade = &Upgrade{Run: 2, Requested: time.Now(), Stopping: true}
	if err := store.SaveRunSpec(ctx, id, 2, []byte(upgradedSpec)); err != nil {
		t.Fatal(err)
	}
	if err := store.Save(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	ms := e.d.masterSpec(&Record{ID: id, Run: 2}, []byte(upgradedSpec))
	ms.Standby = true
	if _, err := l.Launch(ctx, ms); err != nil {
		t.Fatal(err)
	}
	sm := l.lastStandby()
	e2 := newUpgradeEnv(t, store, l)
	e2.waitState(id, Running)
	if _, _, m := e2.d.job(id).state(); unfenced(m) != old {
		t.Fatal("the old master was not adopted")
	}
	deadline := time.Now().Add(30 * time.Second)
	for !sm.stopped.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the new version's master was not stopped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	launched := e.l.count()
	old.end(0) // as after a stop-with-savepoint
	for e.l.count() == launched {
		if s, _, _ := e2.d.job(id).state(); s == Finished {
			t.Fatal("the job was taken for FINISHED")
		}
		if time.Now().After(deadline) {
			t.Fatal("the old run was not started again")
		}
		time.Sleep(5 * time.Millisecond)
	}
	st := e2.waitState(id, Running)
	if st.Run != 1 || st.Upgrade != nil {
		t.Fatalf("after the old master's end: %+v", st)
	}
	if _, ms := e.l.last(); ms.Run != 1 || string(ms.Spec) != goodSpec {
		t.Fatalf("the master started again: %+v", ms)
	}
}

// kafkaUpgradeJob reads ids from Kafka topic "in" and writes them, with
// their double, to "out" exactly once; version 2 adds a field "v": 2 and
// reads at full speed.
func kafkaUpgradeJob(brokers string, version int) string {
	rate, extra := `, "rate": 1500`, ""
	if version > 1 {
		rate, extra = "", `, {"name": "v", "expr": "2"}`
	}
	return fmt.Sprintf(`{"name": "kafka-upgrade", "parallelism": %d, "maxParallelism": 64,
  "checkpoint": {"interval": "150ms", "mode": "exactly-once", "retained": 2},
  "restart": {"strategy": "none"},
  "nodes": [
    {"id": "src", "type": "kafka", "params": {"brokers": %s, "topics": ["in"], "bounded": true%s,
      "fields": [{"name": "id", "type": "int64"}]}},
    {"id": "proj", "type": "project", "inputs": ["src"], "params": {"fields": [
      {"name": "id", "expr": "id"}, {"name": "double", "expr": "id * 2"}%s]}},
    {"id": "out", "type": "kafka", "inputs": [{"from": "proj", "partition": "rebalance"}],
      "params": {"brokers": %s, "topic": "out", "keyField": "id"}}]}`, version+1, brokers, rate, extra, brokers)
}

// TestUpgradeKafkaExactlyOnce: a Kafka-to-Kafka job with a transactional
// sink, on local masters, is upgraded mid-stream to a version that writes
// another field: a read_committed reader sees every input record's result
// exactly once — the old version's up to the savepoint, the new one's
// after it.
func TestUpgradeKafkaExactlyOnce(t *testing.T) {
	bin := buildSluice(t)
	const n, parts = 30000, 4
	c := kafkatest.Start(t, 0, parts, "in", "out")
	for p := int32(0); p < parts; p++ {
		var recs []kafkatest.Record
		for i := int(p); i < n; i += parts {
			recs = append(recs, kafkatest.Record{Value: fmt.Appendf(nil, `{"id":%d}`, i)})
		}
		c.Produce(t, "in", p, recs)
	}
	brokers, _ := json.Marshal(c.Addrs)
	dir := t.TempDir()
	store, err := OpenStore("file://" + filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	l := &Local{Binary: bin, WorkDir: filepath.Join(dir, "work"), StopGrace: 10 * time.Second}
	d, err := New(Config{Store: store, Launcher: l, PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	e := &env{t: t, d: d, srv: srv}
	t.Cleanup(func() {
		srv.Close()
		d.Close()
		for _, p := range procs.Live() {
			if bytes.Contains(p.Cmdline, []byte(dir)) {
				_ = syscall.Kill(p.PID, syscall.SIGKILL)
			}
		}
	})
	id := e.submit(kafkaUpgradeJob(string(brokers), 1))
	e.waitFor(id, "RUNNING with a checkpoint", func(st JobStatus) bool {
		return st.State == Running && st.LatestCheckpoint != nil
	})
	var rep UpgradeReply
	if code := e.do("POST", "/v1/jobs/"+id+"/upgrade", []byte(kafkaUpgradeJob(string(brokers), 2)), &rep); code != 200 {
		t.Fatalf("upgrade: %d %+v\n%s", code, rep, logTail(filepath.Join(l.WorkDir, id, "run-2", "master.log")))
	}
	t.Logf("upgrade: %+v", rep)
	e.waitFor(id, "ended", func(st JobStatus) bool { return st.State.Terminal() })
	if st := e.status(id); st.State != Finished || st.Run != 2 {
		t.Fatalf("the job ended %s on run %d: %s", st.State, st.Run, st.Reason)
	}
	seen := make([]int, n)
	var v1, v2 int
	for _, r := range c.ReadCommitted(t, "out", parts) {
		var v struct{ ID, Double, V int64 }
		if err := json.Unmarshal(r.Value, &v); err != nil || v.ID < 0 || v.ID >= n || v.Double != 2*v.ID {
			t.Fatalf("bad record %q (%v)", r.Value, err)
		}
		seen[v.ID]++
		if v.V == 2 {
			v2++
		} else {
			v1++
		}
	}
	bad := 0
	for id, k := range seen {
		if k != 1 {
			if bad++; bad <= 5 {
				t.Errorf("id %d seen %d times", id, k)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d ids not seen exactly once across the upgrade", bad, n)
	}
	if v1 == 0 || v2 == 0 {
		t.Fatalf("%d records of the old version, %d of the new: want both", v1, v2)
	}
	t.Logf("%d records by the old version, %d by the new", v1, v2)
}

// unfenced is the launcher's master inside the dispatcher's fence.
func unfenced(m Master) Master {
	if f, ok := m.(*fencedMaster); ok {
		return f.Master
	}
	return m
}
