package dispatcher

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/framework"
)

// fakeLauncher starts fake masters: an HTTP server that answers the
// master's REST API and publishes itself in the run's HA directory as a
// framework master does.
type fakeLauncher struct {
	t        *testing.T
	mu       sync.Mutex
	launched []*fakeMaster
	specs    []MasterSpec
	epoch    atomic.Int64
	// noAPI: masters never publish their REST address (still starting).
	noAPI atomic.Bool
}

type fakeMaster struct {
	srv  *httptest.Server
	done chan struct{}
	once sync.Once
	exit Exit
	sp   atomic.Int64
}

func (m *fakeMaster) end(code int) {
	m.once.Do(func() {
		m.exit = Exit{Known: true, Code: code, Reason: fmt.Sprintf("fake exit %d", code)}
		close(m.done)
	})
}

func (m *fakeMaster) Wait(ctx context.Context) Exit {
	select {
	case <-m.done:
		return m.exit
	case <-ctx.Done():
		return Exit{Code: -1}
	}
}

func (m *fakeMaster) Stop(ctx context.Context) error { m.end(130); return nil }
func (m *fakeMaster) String() string                 { return "fake " + m.srv.URL }

func (l *fakeLauncher) Launch(ctx context.Context, s MasterSpec) (Master, error) {
	m := &fakeMaster{done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"job": "j", "state": "running", "restarts": 0})
	})
	mux.HandleFunc("GET /v1/taskmanagers", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"mode": "cluster", "taskManagers": []TaskManager{{ID: "tm-1", ResourceID: "local-1", Slots: 2}}})
	})
	mux.HandleFunc("POST /v1/savepoint", func(w http.ResponseWriter, r *http.Request) {
		p := fmt.Sprintf("file:///sp/savepoint-%d", m.sp.Add(1))
		writeJSON(w, 200, map[string]any{"path": p, "stopped": r.URL.Query().Get("stop") == "true"})
		if r.URL.Query().Get("stop") == "true" {
			go m.end(0)
		}
	})
	mux.HandleFunc("POST /v1/cancel", func(w http.ResponseWriter, r *http.Request) {
		rep := map[string]any{"cancelled": true}
		code := 130
		if r.URL.Query().Get("savepoint") == "true" {
			rep["path"] = "file:///sp/final"
			code = 0
		}
		writeJSON(w, 200, rep)
		go m.end(code)
	})
	mux.HandleFunc("POST /v1/skip-backlog", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 400, map[string]any{"skipped": []string{}, "error": "no source can skip its backlog"})
	})
	m.srv = httptest.NewServer(mux)
	l.t.Cleanup(m.srv.Close)
	e := l.epoch.Add(1)
	if l.noAPI.Load() {
		l.mu.Lock()
		l.launched = append(l.launched, m)
		l.specs = append(l.specs, s)
		l.mu.Unlock()
		return m, nil
	}
	ha, err := framework.OpenHA(s.HADir)
	if err != nil {
		return nil, err
	}
	if err := ha.Publish(ctx, MasterInfo{Epoch: e, HTTP: m.srv.Listener.Addr().String(), PID: 1, Started: time.Now()}); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.launched = append(l.launched, m)
	l.specs = append(l.specs, s)
	l.mu.Unlock()
	return m, nil
}

func (l *fakeLauncher) Find(ctx context.Context, s MasterSpec) (Master, error) { return nil, nil }

func (l *fakeLauncher) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.launched)
}

func (l *fakeLauncher) last() (*fakeMaster, MasterSpec) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.launched[len(l.launched)-1], l.specs[len(l.specs)-1]
}
