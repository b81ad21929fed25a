package dispatcher

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/framework"
)

// progressLauncher starts fake masters whose GET /v1/progress the test
// sets, and whose stop-with-savepoint waits for the test.
type progressLauncher struct {
	t       *testing.T
	mu      sync.Mutex
	ops     map[int][]runtime.ProgressOperation // by run
	release chan struct{}                       // closed: a stop-with-savepoint answers
	epoch   int64
}

func (l *progressLauncher) set(run int, ops ...runtime.ProgressOperation) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops[run] = ops
}

func (l *progressLauncher) Find(context.Context, MasterSpec) (Master, error) { return nil, nil }

func (l *progressLauncher) Launch(ctx context.Context, s MasterSpec) (Master, error) {
	m := &fakeMaster{done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"job": "j", "state": "running", "restarts": 0})
	})
	mux.HandleFunc("GET /v1/progress", func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		ops := l.ops[s.Run]
		l.mu.Unlock()
		if ops == nil {
			ops = []runtime.ProgressOperation{}
		}
		writeJSON(w, 200, ProgressReply{Operations: ops})
	})
	mux.HandleFunc("POST /v1/savepoint", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-l.release:
		case <-r.Context().Done():
			return
		}
		writeJSON(w, 200, map[string]any{"path": fmt.Sprintf("file:///sp/run-%d", s.Run), "stopped": true})
		go m.end(0)
	})
	m.srv = httptest.NewServer(mux)
	l.t.Cleanup(m.srv.Close)
	ha, err := framework.OpenHA(s.HADir)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.epoch++
	e := l.epoch
	l.mu.Unlock()
	if err := ha.Publish(ctx, MasterInfo{Epoch: e, HTTP: m.srv.Listener.Addr().String(), PID: 1, Started: time.Now()}); err != nil {
		return nil, err
	}
	return m, nil
}

func progressOp(id, kind, state string, done, total int64) runtime.ProgressOperation {
	return runtime.ProgressOperation{ID: id, Kind: kind, State: state, StartedAt: time.Now().UTC(), BytesDone: done, BytesTotal: total,
		FilesDone: done / 100, FilesTotal: total / 100, EtaMs: -1,
		Subtasks: []runtime.ProgressSubtaskRow{{Vertex: "w", Subtask: 0, BytesDone: done, BytesTotal: total, FilesDone: done / 100, FilesTotal: total / 100}}}
}

// TestRescaleProgress: GET /v1/jobs/{id}/progress shows a rescale in its
// phases — the old run's savepoint, then the new run's restore — with the
// master's operations, and ends it done with bytes == total.
func TestRescaleProgress(t *testing.T) {
	l := &progressLauncher{t: t, ops: map[int][]runtime.ProgressOperation{}, release: make(chan struct{})}
	d, err := New(Config{Store: NewStore(&flakyFS{}, t.TempDir()), Launcher: l, MaxBody: 64 << 10,
		Backoff: time.Millisecond, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(func() { srv.Close(); d.Close() })
	e := &env{t: t, d: d, srv: srv}
	id := e.submit(goodSpec)
	e.waitState(id, Running)

	progress := func() ProgressReply {
		var rep ProgressReply
		if code := e.do("GET", "/v1/jobs/"+id+"/progress", nil, &rep); code != 200 {
			t.Fatalf("GET progress: %d", code)
		}
		return rep
	}
	find := func(rep ProgressReply, kind string) *runtime.ProgressOperation {
		for i := range rep.Operations {
			if rep.Operations[i].Kind == kind {
				return &rep.Operations[i]
			}
		}
		return nil
	}
	waitFor := func(what string, ok func(ProgressReply) bool) ProgressReply {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			rep := progress()
			if ok(rep) {
				return rep
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s after 30s: %+v", what, rep)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if rep := progress(); len(rep.Operations) != 0 {
		t.Fatalf("progress before anything: %+v", rep)
	}

	// The savepoint phase: the old run's master writes it.
	l.set(1, progressOp("sp-7", runtime.ProgressSavepoint, runtime.ProgressRunning, 100, 400))
	rescaled := make(chan int, 1)
	go func() {
		var rep RescaleReply
		rescaled <- e.do("POST", "/v1/jobs/"+id+"/rescale", []byte(`{"parallelism": 3}`), &rep)
	}()
	rep := waitFor("rescale in its savepoint phase", func(r ProgressReply) bool {
		o := find(r, runtime.ProgressRescale)
		return o != nil && o.Phase == PhaseSavepoint && o.BytesDone == 100
	})
	rs, sp := find(rep, runtime.ProgressRescale), find(rep, runtime.ProgressSavepoint)
	if rs.State != runtime.ProgressRunning || rs.BytesTotal != 400 || len(rs.Subtasks) != 1 || rs.ID != "rescale-2" || sp == nil || sp.ID != "sp-7" {
		t.Fatalf("during the savepoint: %+v", rep)
	}

	// The restore phase: the new run's master restores.
	l.set(2, progressOp("restore-a2", runtime.ProgressRestore, runtime.ProgressRunning, 50, 200))
	close(l.release)
	if code := <-rescaled; code != 200 {
		t.Fatalf("rescale: %d", code)
	}
	waitFor("rescale in its restore phase", func(r ProgressReply) bool {
		o := find(r, runtime.ProgressRescale)
		return o != nil && o.Phase == PhaseRestore && o.BytesDone == 50 && o.BytesTotal == 200 && o.State == runtime.ProgressRunning
	})
	l.set(2, progressOp("restore-a2", runtime.ProgressRestore, runtime.ProgressDone, 200, 200))
	rep = waitFor("rescale done", func(r ProgressReply) bool {
		o := find(r, runtime.ProgressRescale)
		return o != nil && o.State == runtime.ProgressDone
	})
	rs = find(rep, runtime.ProgressRescale)
	if rs.BytesDone != 200 || rs.BytesTotal != 200 || rs.EtaMs != 0 || rs.Phase != PhaseRestore {
		t.Fatalf("the rescale ended with %+v", rs)
	}
	// Newest first.
	for i := 1; i < len(rep.Operations); i++ {
		if rep.Operations[i].StartedAt.After(rep.Operations[i-1].StartedAt) {
			t.Fatalf("not newest first: %+v", rep.Operations)
		}
	}

	// A rescale no request saw under way (its savepoint is at once): the
	// dispatcher follows the record since the first request and lists it.
	l.set(3, progressOp("restore-a3", runtime.ProgressRestore, runtime.ProgressRunning, 0, 200))
	e.waitState(id, Running)
	var again RescaleReply
	if code := e.do("POST", "/v1/jobs/"+id+"/rescale", []byte(`{"parallelism": 1}`), &again); code != 200 || again.Run != 3 {
		t.Fatalf("second rescale: %d %+v", code, again)
	}
	waitFor("the second rescale listed", func(r ProgressReply) bool {
		for _, o := range r.Operations {
			if o.ID == "rescale-3" && o.Phase == PhaseRestore && o.State == runtime.ProgressRunning && o.BytesTotal == 200 {
				return true
			}
		}
		return false
	})
	l.set(3, progressOp("restore-a3", runtime.ProgressRestore, runtime.ProgressDone, 200, 200))
	waitFor("the second rescale done", func(r ProgressReply) bool {
		o := find(r, runtime.ProgressRescale) // newest first
		return o != nil && o.ID == "rescale-3" && o.State == runtime.ProgressDone && o.BytesDone == 200
	})
}

// TestUpgradeProgressPhases: an upgrade goes through standby, savepoint
// and restore as its record says, with the numbers of the master doing
// each phase; it ends done once the new version restored, failed when
// rolled back.
func TestUpgradeProgressPhases(t *testing.T) {
	t0 := time.Now().UTC()
	get := func(ops []runtime.ProgressOperation) runtime.ProgressOperation {
		t.Helper()
		for _, o := range ops {
			if o.Kind == runtime.ProgressUpgrade {
				return o
			}
		}
		t.Fatalf("no upgrade in %+v", ops)
		return runtime.ProgressOperation{}
	}
	p := &jobProgress{}
	u := &Upgrade{Run: 2, Requested: t0}
	o := get(p.observe(Record{Run: 1, State: Running, Upgrade: u}, Running, nil, nil, t0.Add(time.Second)))
	if o.ID != "upgrade-2" || o.Phase != PhaseStandby || o.State != runtime.ProgressRunning || o.EtaMs != -1 || !o.StartedAt.Equal(t0) {
		t.Fatalf("standing by: %+v", o)
	}
	u.Stopping = true
	sp := progressOp("sp-4", runtime.ProgressSavepoint, runtime.ProgressRunning, 100, 400)
	sp.EtaMs = 1500
	o = get(p.observe(Record{Run: 1, State: Running, Upgrade: u}, Running, []runtime.ProgressOperation{sp}, nil, t0.Add(2*time.Second)))
	if o.Phase != PhaseSavepoint || o.BytesDone != 100 || o.BytesTotal != 400 || o.EtaMs != 1500 {
		t.Fatalf("stopping: %+v", o)
	}
	u.Savepoint = "file:///sp/4"
	rs := progressOp("restore-b", runtime.ProgressRestore, runtime.ProgressRunning, 10, 50)
	o = get(p.observe(Record{Run: 1, State: Running, Upgrade: u}, Running, nil, []runtime.ProgressOperation{rs}, t0.Add(3*time.Second)))
	if o.Phase != PhaseRestore || o.BytesDone != 10 || o.BytesTotal != 50 {
		t.Fatalf("restoring: %+v", o)
	}
	rs.State, rs.BytesDone = runtime.ProgressDone, 50
	o = get(p.observe(Record{Run: 2, SpecRun: 2, State: Running}, Running, []runtime.ProgressOperation{rs}, nil, t0.Add(4*time.Second)))
	if o.State != runtime.ProgressDone || o.BytesDone != 50 || o.BytesTotal != 50 || o.EtaMs != 0 {
		t.Fatalf("upgraded: %+v", o)
	}

	// Rolled back: the old spec runs again, from the savepoint.
	p = &jobProgress{}
	u = &Upgrade{Run: 2, Requested: t0, Stopping: true, Savepoint: "file:///sp/4"}
	p.observe(Record{Run: 1, State: Running, Upgrade: u}, Running, nil, nil, t0)
	o = get(p.observe(Record{Run: 3, State: Starting, Reason: "its master ended"}, Starting, nil, nil, t0.Add(time.Second)))
	if o.State != runtime.ProgressFailed || !strings.Contains(o.Error, "rolled back") {
		t.Fatalf("rolled back: %+v", o)
	}
}
