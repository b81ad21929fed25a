package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/fs"
)

const goodSpec = `{"name": "t", "parallelism": 2,
 "nodes": [{"id": "src", "type": "sequence", "params": {"rows": 100}},
           {"id": "out", "type": "file", "inputs": ["src"], "params": {"path": "/tmp/sluice-dispatcher-test/out"}}]}`

const goodYAML = `name: t
parallelism: 1
savepoint: file:///sp/earlier
nodes:
  - id: src
    type: sequence
    params: {rows: 100}
  - id: out
    type: file
    inputs: [src]
    params: {path: /tmp/sluice-dispatcher-test/out}
`

type env struct {
	t   *testing.T
	d   *Dispatcher
	srv *httptest.Server
	l   *fakeLauncher
	fs  *flakyFS
	tok string
}

// flakyFS is a store filesystem that can be taken down.
type flakyFS struct {
	fs.Local
	down atomic.Bool
}

var errDown = errors.New("namenode unreachable")

func (f *flakyFS) WriteFile(ctx context.Context, p string, b []byte) error {
	if f.down.Load() {
		return errDown
	}
	return f.Local.WriteFile(ctx, p, b)
}

func (f *flakyFS) ReadFile(ctx context.Context, p string) ([]byte, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.Local.ReadFile(ctx, p)
}

func (f *flakyFS) List(ctx context.Context, p string) ([]fs.Entry, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.Local.List(ctx, p)
}

func newEnv(t *testing.T, token string) *env {
	t.Helper()
	dir := t.TempDir()
	ffs := &flakyFS{}
	l := &fakeLauncher{t: t}
	d, err := New(Config{Store: NewStore(ffs, dir), Launcher: l, Token: token, MaxBody: 64 << 10,
		Backoff: time.Millisecond, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(func() { srv.Close(); d.Close() })
	return &env{t: t, d: d, srv: srv, l: l, fs: ffs, tok: token}
}

func (e *env) do(method, path string, body []byte, out any) int {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if e.tok != "" {
		req.Header.Set("Authorization", "Bearer "+e.tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

func (e *env) waitState(id string, want State) JobStatus {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st JobStatus
		e.do("GET", "/v1/jobs/"+id, nil, &st)
		if st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s is %s, not %s, after 30s: %+v", id, st.State, want, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) submit(body string) string {
	e.t.Helper()
	var rep submitReply
	if code := e.do("POST", "/v1/jobs", []byte(body), &rep); code != 201 {
		e.t.Fatalf("submit: %d %+v", code, rep)
	}
	return rep.ID
}

func TestSubmitRunCancel(t *testing.T) {
	e := newEnv(t, "")
	id := e.submit(goodSpec)
	st := e.waitState(id, Running)
	if st.Master == nil || len(st.TaskManagers) != 1 || st.MasterLaunches != 1 {
		t.Fatalf("status: %+v", st)
	}
	_, ms := e.l.last()
	if !strings.Contains(strings.Join(ms.Sets, " "), "checkpoint.storage="+e.d.store.Checkpoints(id, 1)) {
		t.Fatalf("the master's checkpoints are not under the store: %v", ms.Sets)
	}
	var list struct{ Jobs []JobSummary }
	if e.do("GET", "/v1/jobs", nil, &list); len(list.Jobs) != 1 || list.Jobs[0].ID != id {
		t.Fatalf("list: %+v", list)
	}
	var sp struct{ Path string }
	if code := e.do("POST", "/v1/jobs/"+id+"/savepoints", nil, &sp); code != 200 || sp.Path == "" {
		t.Fatalf("savepoint: %d %+v", code, sp)
	}
	var c cancelReply
	if code := e.do("DELETE", "/v1/jobs/"+id+"?savepoint=true", nil, &c); code != 200 || c.State != Canceled || c.Savepoint != "file:///sp/final" {
		t.Fatalf("cancel: %d %+v", code, c)
	}
	if code := e.do("DELETE", "/v1/jobs/"+id, nil, nil); code != http.StatusConflict {
		t.Fatalf("cancel of a cancelled job: %d, want 409", code)
	}
}

func TestSubmitYAMLWithSavepoint(t *testing.T) {
	e := newEnv(t, "")
	id := e.submit(goodYAML)
	e.waitState(id, Running)
	_, ms := e.l.last()
	if ms.Restore != "file:///sp/earlier" {
		t.Fatalf("restore %q, want the savepoint field", ms.Restore)
	}
	if bytes.Contains(ms.Spec, []byte("savepoint")) {
		t.Fatalf("the savepoint field went to the master's spec:\n%s", ms.Spec)
	}
}

// A master that dies is started again on the same HA directory; a job
// whose master keeps failing ends FAILED with the reason.
func TestMasterRestartAndFailed(t *testing.T) {
	e := newEnv(t, "")
	id := e.submit(goodSpec)
	e.waitState(id, Running)
	m, first := e.l.last()
	m.end(137)
	deadline := time.Now().Add(30 * time.Second)
	for e.l.count() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the dead master was not started again")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, second := e.l.last()
	if second.HADir != first.HADir {
		t.Fatalf("restarted on %s, not the same HA directory %s", second.HADir, first.HADir)
	}
	st := e.waitState(id, Running)
	if st.MasterRestarts != 1 {
		t.Fatalf("masterRestarts %d, want 1", st.MasterRestarts)
	}
	// Each new master fails at once.
	for n := e.l.count(); ; n++ {
		m, _ := e.l.last()
		m.end(1)
		for e.l.count() == n {
			if s, _, _ := e.d.job(id).state(); s == Failed {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no new master and not FAILED")
			}
			time.Sleep(time.Millisecond)
		}
		if s, _, _ := e.d.job(id).state(); s == Failed {
			break
		}
	}
	st = e.waitState(id, Failed)
	if !strings.Contains(st.Reason, "fake exit 1") {
		t.Fatalf("reason %q", st.Reason)
	}
}

func TestRescale(t *testing.T) {
	e := newEnv(t, "")
	id := e.submit(goodSpec)
	e.waitState(id, Running)
	var rep RescaleReply
	if code := e.do("POST", "/v1/jobs/"+id+"/rescale", []byte(`{"parallelism": 3}`), &rep); code != 200 || rep.Run != 2 {
		t.Fatalf("rescale: %d %+v", code, rep)
	}
	_, ms := e.l.last()
	if ms.Run != 2 || ms.Restore != rep.Savepoint || !strings.Contains(strings.Join(ms.Sets, " "), "parallelism=3") {
		t.Fatalf("the next run: %+v (savepoint %s)", ms, rep.Savepoint)
	}
	st := e.waitState(id, Running)
	if st.Parallelism != 3 || st.Run != 2 {
		t.Fatalf("status after rescale: %+v", st)
	}
	var er errorReply
	if code := e.do("POST", "/v1/jobs/"+id+"/rescale", []byte(`{"parallelism": 0}`), &er); code != 400 || !strings.Contains(er.Error, "parallelism") {
		t.Fatalf("rescale to 0: %d %+v", code, er)
	}
	if code := e.do("POST", "/v1/jobs/"+id+"/rescale", []byte(`{"parallelism": 100000}`), &er); code != 400 || !strings.Contains(er.Error, "maxParallelism") {
		t.Fatalf("rescale above maxParallelism: %d %+v", code, er)
	}
}

// The dispatcher restarts: it recovers the job from the store.
func TestRecover(t *testing.T) {
	e := newEnv(t, "")
	id := e.submit(goodSpec)
	e.waitState(id, Running)
	done := e.submit(goodSpec)
	e.waitState(done, Running)
	e.do("DELETE", "/v1/jobs/"+done, nil, nil)
	e.d.Close()
	l := &fakeLauncher{t: t}
	d2, err := New(Config{Store: e.d.store, Launcher: l, Backoff: time.Millisecond, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := d2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if s, rec, _ := d2.job(done).state(); s != Canceled || rec.State != Canceled {
		t.Fatalf("the cancelled job came back %s", s)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if s, _, _ := d2.job(id).state(); s == Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the recovered job is not running again")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if l.count() != 1 {
		t.Fatalf("%d masters launched for the one running job", l.count())
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, "s3cret")
	var er errorReply
	// Invalid spec: 400 naming node and field; nothing stored.
	bad := strings.Replace(goodSpec, `"rows": 100`, `"rowz": 100`, 1)
	if code := e.do("POST", "/v1/jobs", []byte(bad), &er); code != 400 || !strings.Contains(er.Error, `node "src"`) || !strings.Contains(er.Error, "rowz") {
		t.Fatalf("invalid spec: %d %+v", code, er)
	}
	bad = strings.Replace(goodSpec, `"parallelism": 2`, `"parallelism": "two"`, 1)
	if code := e.do("POST", "/v1/jobs", []byte(bad), &er); code != 400 || !strings.Contains(er.Error, "parallelism") {
		t.Fatalf("invalid spec: %d %+v", code, er)
	}
	var list struct{ Jobs []JobSummary }
	if e.do("GET", "/v1/jobs", nil, &list); len(list.Jobs) != 0 {
		t.Fatalf("a bad spec was kept: %+v", list)
	}
	if recs, _ := e.d.store.Load(context.Background()); len(recs) != 0 || e.l.count() != 0 {
		t.Fatalf("a bad spec was stored (%d) or started (%d)", len(recs), e.l.count())
	}
	// Wrong or missing token: 401; /healthz is open.
	e.tok = "wrong"
	if code := e.do("GET", "/v1/jobs", nil, &er); code != 401 {
		t.Fatalf("wrong token: %d", code)
	}
	e.tok = ""
	if code := e.do("GET", "/v1/jobs", nil, nil); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	if code := e.do("GET", "/healthz", nil, nil); code != 200 {
		t.Fatalf("healthz without a token: %d", code)
	}
	e.tok = "s3cret"
	// Unknown job: 404, also for ids that are no ids.
	for _, id := range []string{"0123456789abcdef", "..%2F..%2Fetc", "x"} {
		if code := e.do("GET", "/v1/jobs/"+id, nil, nil); code != 404 {
			t.Fatalf("unknown job %s: %d", id, code)
		}
		if code := e.do("DELETE", "/v1/jobs/"+id, nil, nil); code != 404 {
			t.Fatalf("cancel of unknown job %s: %d", id, code)
		}
	}
	// Too large: 413.
	big := `{"name": "t", "x": "` + strings.Repeat("a", 70<<10) + `"}`
	if code := e.do("POST", "/v1/jobs", []byte(big), &er); code != 413 {
		t.Fatalf("large body: %d %+v", code, er)
	}
	// Store down: 503, nothing accepted.
	e.fs.down.Store(true)
	if code := e.do("POST", "/v1/jobs", []byte(goodSpec), &er); code != 503 {
		t.Fatalf("store down: %d %+v", code, er)
	}
	e.fs.down.Store(false)
	if e.do("GET", "/v1/jobs", nil, &list); len(list.Jobs) != 0 || e.l.count() != 0 {
		t.Fatalf("a job not stored was accepted: %+v", list)
	}
	// A cancel while the store is down is refused too, and not done.
	id := e.submit(goodSpec)
	e.waitState(id, Running)
	e.fs.down.Store(true)
	if code := e.do("DELETE", "/v1/jobs/"+id, nil, &er); code != 503 {
		t.Fatalf("cancel with the store down: %d %+v", code, er)
	}
	e.fs.down.Store(false)
	if s, rec, _ := e.d.job(id).state(); s != Running || rec.CancelRequested {
		t.Fatalf("a cancel not stored took effect: %s %+v", s, rec)
	}
	// The token never comes back in an answer or the metrics.
	req, _ := http.NewRequest("GET", e.srv.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), "s3cret") || !strings.Contains(string(b), `sluice_dispatcher_jobs{state="RUNNING"} 1`) ||
		!strings.Contains(string(b), "sluice_dispatcher_master_launches_total 1") || !strings.Contains(string(b), "sluice_dispatcher_request_duration_seconds") {
		t.Fatalf("metrics:\n%s", b)
	}
	// skip-backlog passes the master's answer on as it is.
	if code := e.do("POST", "/v1/jobs/"+id+"/skip-backlog", nil, &er); code != 400 || er.Error != "no source can skip its backlog" {
		t.Fatalf("skip-backlog: %d %+v", code, er)
	}
}

// A job whose master has no API yet is cancelled by stopping the master's
// process; a savepoint cannot be asked of it.
func TestCancelStarting(t *testing.T) {
	e := newEnv(t, "")
	e.l.noAPI.Store(true)
	id := e.submit(goodSpec)
	e.waitState(id, Starting)
	var er errorReply
	if code := e.do("DELETE", "/v1/jobs/"+id+"?savepoint=true", nil, &er); code != http.StatusConflict {
		t.Fatalf("cancel with savepoint of a starting job: %d %+v", code, er)
	}
	if s, rec, _ := e.d.job(id).state(); s != Starting || rec.CancelRequested {
		t.Fatalf("a refused cancel took effect: %s %+v", s, rec)
	}
	var c cancelReply
	if code := e.do("DELETE", "/v1/jobs/"+id, nil, &c); code != 200 || c.State != Canceled {
		t.Fatalf("cancel of a starting job: %d %+v", code, c)
	}
	if m, _ := e.l.last(); m.exit.Code != 130 {
		t.Fatalf("the master was not stopped: %+v", m.exit)
	}
}
