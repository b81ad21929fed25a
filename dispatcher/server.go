package dispatcher

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluice-stream/sluice/engine/spec"
)

// route is one route of the API: the server registers these, and the
// OpenAPI test checks docs/dispatcher-openapi.yaml against them.
type route struct {
	method, path string
	open         bool // served without the token
	h            func(d *Dispatcher, w http.ResponseWriter, r *http.Request)
}

var routes = []route{
	{"POST", "/v1/jobs", false, (*Dispatcher).postJob},
	{"GET", "/v1/jobs", false, (*Dispatcher).getJobs},
	{"GET", "/v1/jobs/{id}", false, (*Dispatcher).getJob},
	{"DELETE", "/v1/jobs/{id}", false, (*Dispatcher).deleteJob},
	{"POST", "/v1/jobs/{id}/savepoints", false, (*Dispatcher).postSavepoint},
	{"POST", "/v1/jobs/{id}/rescale", false, (*Dispatcher).postRescale},
	{"POST", "/v1/jobs/{id}/upgrade", false, (*Dispatcher).postUpgrade},
	{"POST", "/v1/jobs/{id}/skip-backlog", false, (*Dispatcher).postSkipBacklog},
	{"GET", "/v1/jobs/{id}/master/{path...}", false, (*Dispatcher).getMaster},
	{"GET", "/v1/jobs/{id}/progress", false, (*Dispatcher).getProgress},
	{"GET", "/healthz", true, (*Dispatcher).healthz},
	{"GET", "/metrics", false, nil}, // promhttp
}

// errorReply is every error's body.
type errorReply struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, errorReply{fmt.Sprintf(format, args...)})
}

// Handler is the dispatcher's HTTP API.
func (d *Dispatcher) Handler() http.Handler {
	mux := http.NewServeMux()
	metricsH := promhttp.HandlerFor(d.cfg.Registry, promhttp.HandlerOpts{})
	for _, rt := range routes {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { metricsH.ServeHTTP(w, r) })
		if rt.h != nil {
			f := rt.h
			h = func(w http.ResponseWriter, r *http.Request) { f(d, w, r) }
		}
		mux.Handle(rt.method+" "+rt.path, d.instrument(rt, h))
	}
	d.handleUI(mux)
	mux.Handle("/", d.instrument(route{path: "unknown"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no route %s %s; see docs/dispatcher.md", r.Method, r.URL.Path)
	})))
	return mux
}

// statusRecorder keeps a response's status for the metrics.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// instrument adds the token check, the body limit and the request metric.
func (d *Dispatcher) instrument(rt route, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			code := rec.code
			if code == 0 {
				code = http.StatusOK
			}
			d.metrics.requests.WithLabelValues(rt.path, r.Method, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
		}()
		if !rt.open && !d.authorized(r) {
			rec.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
			writeError(rec, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		r.Body = http.MaxBytesReader(rec, r.Body, d.cfg.MaxBody)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			// A superseded dispatcher changes nothing (see fence.go).
			if err := d.checkFence(r.Context()); errors.Is(err, errSuperseded) {
				writeError(rec, http.StatusServiceUnavailable, "%v: this dispatcher changes nothing any more; ask the newest one", err)
				return
			}
		}
		h.ServeHTTP(rec, r)
	})
}

// authorized checks the bearer token in constant time (of the digests,
// so that not even the token's length leaks).
func (d *Dispatcher) authorized(r *http.Request) bool {
	if d.cfg.Token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(d.cfg.Token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func (d *Dispatcher) healthz(w http.ResponseWriter, r *http.Request) {
	// Unhealthy once superseded, so that Marathon replaces it. Known from
	// memory (the periodic check): an open route does not touch the store.
	if err := d.superseded(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "superseded", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readBody reads a request body within the limit; false when it answered
// (413) already.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body larger than %d bytes", tooBig.Limit)
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "reading the request body: %v", err)
		return nil, false
	}
	return b, true
}

// submitReply answers POST /v1/jobs.
type submitReply struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	State State  `json:"state"`
}

func (d *Dispatcher) postJob(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	specBytes, name, sp, err := decodeSubmit(body, r.URL.Query().Get("savepoint"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	rec, err := d.submit(r.Context(), name, specBytes, sp)
	if err != nil {
		d.storeError(w, err)
		return
	}
	w.Header().Set("Location", "/v1/jobs/"+rec.ID)
	writeJSON(w, http.StatusCreated, submitReply{ID: rec.ID, Name: rec.Name, State: rec.State})
}

// storeError answers a failure to store: 503 when the store is down.
func (d *Dispatcher) storeError(w http.ResponseWriter, err error) {
	if errors.Is(err, errSuperseded) {
		writeError(w, http.StatusServiceUnavailable, "%v: nothing was changed; ask the newest dispatcher", err)
		return
	}
	if errors.Is(err, ErrStore) {
		d.log.Error("job store", "err", err)
		writeError(w, http.StatusServiceUnavailable, "%v; nothing was changed, try again", err)
		return
	}
	writeError(w, http.StatusInternalServerError, "%v", err)
}

// JobSummary is one job of GET /v1/jobs.
type JobSummary struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	State     State     `json:"state"`
	Run       int       `json:"run"`
	Submitted time.Time `json:"submitted"`
	Updated   time.Time `json:"updated"`
}

func summary(s State, rec Record) JobSummary {
	return JobSummary{ID: rec.ID, Name: rec.Name, State: s, Run: rec.Run, Submitted: rec.Submitted, Updated: rec.Updated}
}

func (d *Dispatcher) getJobs(w http.ResponseWriter, r *http.Request) {
	out := []JobSummary{}
	for _, j := range d.list() {
		s, rec, _ := j.state()
		out = append(out, summary(s, rec))
	}
	writeJSON(w, http.StatusOK, struct {
		Jobs []JobSummary `json:"jobs"`
	}{out})
}

// JobStatus is GET /v1/jobs/{id}.
type JobStatus struct {
	JobSummary
	Reason string `json:"reason,omitempty"`
	// Parallelism is the job's after a rescale (absent: the spec's).
	Parallelism int `json:"parallelism,omitempty"`
	// Restarts: the job's restarts its current master reports.
	Restarts int `json:"restarts"`
	// MasterLaunches and MasterRestarts count the dispatcher's launches of
	// the job's masters, and those that replaced one that died.
	MasterLaunches   int                `json:"masterLaunches"`
	MasterRestarts   int                `json:"masterRestarts"`
	Master           *MasterView        `json:"master,omitempty"`
	TaskManagers     []TaskManager      `json:"taskManagers"`
	LatestCheckpoint *CheckpointPointer `json:"latestCheckpoint,omitempty"`
	LastSavepoint    string             `json:"lastSavepoint,omitempty"`
	RestoredFrom     string             `json:"restoredFrom,omitempty"`
	HADir            string             `json:"haDir"`
	// Upgrade is an upgrade in progress (POST /v1/jobs/{id}/upgrade).
	Upgrade *Upgrade `json:"upgrade,omitempty"`
}

// MasterView is the job's running framework master.
type MasterView struct {
	MasterInfo
	// Process names it for its launcher ("pid 4242").
	Process string `json:"process"`
	Adopted bool   `json:"adopted,omitempty"`
}

func (d *Dispatcher) lookup(w http.ResponseWriter, r *http.Request) *job {
	id := r.PathValue("id")
	j := d.job(id)
	if j == nil {
		writeError(w, http.StatusNotFound, "no job %q", id)
	}
	return j
}

func (d *Dispatcher) getJob(w http.ResponseWriter, r *http.Request) {
	j := d.lookup(w, r)
	if j == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	j.mu.Lock()
	s, rec, m, adopted, restarts := j.live, j.rec, j.master, j.adopted, j.restarts
	j.mu.Unlock()
	ha := d.store.HADir(rec.ID, rec.Run)
	st := JobStatus{JobSummary: summary(s, rec), Reason: rec.Reason, Parallelism: rec.Parallelism, Restarts: restarts,
		MasterLaunches: rec.MasterLaunches, MasterRestarts: rec.MasterRestarts, TaskManagers: []TaskManager{},
		LastSavepoint: rec.LastSavepoint, RestoredFrom: rec.Restore, HADir: ha, Upgrade: rec.Upgrade}
	if cp, err := LatestCheckpoint(ctx, ha); err == nil {
		st.LatestCheckpoint = cp
	}
	if m != nil {
		if info, err := Leader(ctx, ha); err == nil && info != nil {
			st.Master = &MasterView{MasterInfo: *info, Process: m.String(), Adopted: adopted}
			var tms struct {
				TaskManagers []TaskManager `json:"taskManagers"`
			}
			if _, err := callMaster(ctx, d.client, info.HTTP, "GET", "/v1/taskmanagers", &tms); err == nil && tms.TaskManagers != nil {
				st.TaskManagers = tms.TaskManagers
			}
		}
	}
	writeJSON(w, http.StatusOK, st)
}

// masterError answers a failed call to the job's master: its own status
// and error, or 409 when the job has no master that answers.
func masterError(w http.ResponseWriter, what string, err error) {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		writeError(w, ae.code, "%s: %v", what, ae)
	case errors.Is(err, errNoMaster):
		writeError(w, http.StatusConflict, "%s: %v (is the job running? see GET /v1/jobs/{id})", what, err)
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, "%s: %v", what, err)
	default:
		writeError(w, http.StatusBadGateway, "%s: %v", what, err)
	}
}

// cancelReply answers DELETE /v1/jobs/{id}.
type cancelReply struct {
	ID    string `json:"id"`
	State State  `json:"state"`
	// Savepoint is the final savepoint (?savepoint=true).
	Savepoint string `json:"savepoint,omitempty"`
}

func boolParam(w http.ResponseWriter, r *http.Request, name string) (bool, bool) {
	switch v := r.URL.Query().Get(name); v {
	case "", "false":
		return false, true
	case "true":
		return true, true
	default:
		writeError(w, http.StatusBadRequest, "%s=%q: want true or false", name, v)
		return false, false
	}
}

// waitEnd bounds how long DELETE and rescale wait for the job's master to
// end or start before they answer 202.
const waitEnd = 60 * time.Second

func (d *Dispatcher) deleteJob(w http.ResponseWriter, r *http.Request) {
	j := d.lookup(w, r)
	if j == nil {
		return
	}
	withSP, ok := boolParam(w, r, "savepoint")
	if !ok {
		return
	}
	_, rec, m := j.state()
	if rec.State.Terminal() {
		writeError(w, http.StatusConflict, "job %s has ended: %s", rec.ID, rec.State)
		return
	}
	if rec.Rescale != nil {
		writeError(w, http.StatusConflict, "job %s is being rescaled; cancel it when that is done", rec.ID)
		return
	}
	if rec.Upgrade != nil {
		writeError(w, http.StatusConflict, "job %s is being upgraded; cancel it when that is done", rec.ID)
		return
	}
	var path string
	j.beginOp()
	opEnded := false
	endOp := func() {
		if !opEnded {
			opEnded = true
			j.endOp()
		}
	}
	defer endOp()
	if err := j.tryUpdate(r.Context(), func(r *Record) { r.CancelRequested = true }); err != nil {
		d.storeError(w, err)
		return
	}
	switch {
	case m == nil:
		if withSP {
			_ = j.update(context.Background(), func(r *Record) { r.CancelRequested = false })
			writeError(w, http.StatusConflict, "job %s has no running master to take a savepoint", rec.ID)
			return
		}
		select {
		case j.wake <- struct{}{}:
		default:
		}
	case withSP:
		var rep struct {
			Path string `json:"path"`
		}
		if _, err := j.callMaster(r.Context(), "POST", "/v1/cancel?savepoint=true", &rep); err != nil {
			// The job keeps running (as the master's API promises).
			_ = j.update(context.Background(), func(r *Record) { r.CancelRequested = false })
			masterError(w, "cancel with savepoint", err)
			return
		}
		path = rep.Path
		_ = j.update(context.Background(), func(r *Record) { r.LastSavepoint = path })
	default:
		if _, err := j.callMaster(r.Context(), "POST", "/v1/cancel", nil); err != nil {
			// No API (yet): stop the process; its end is CANCELED.
			d.log.Info("cancel: the master's API did not answer, stopping its process", "job", rec.ID, "err", err)
			go func() { _ = m.Stop(context.Background()) }()
		}
	}
	endOp()
	d.log.Info("job cancel requested", "job", rec.ID, "savepoint", path)
	code := http.StatusOK
	if !j.waitFor(r.Context(), waitEnd, func(s State, _ Record, _ Master) bool { return s.Terminal() }) {
		code = http.StatusAccepted
	}
	s, _, _ := j.state()
	writeJSON(w, code, cancelReply{ID: rec.ID, State: s, Savepoint: path})
}

func (d *Dispatcher) postSavepoint(w http.ResponseWriter, r *http.Request) {
	j := d.lookup(w, r)
	if j == nil {
		return
	}
	var rep struct {
		Path string `json:"path"`
	}
	if _, err := j.callMaster(r.Context(), "POST", "/v1/savepoint", &rep); err != nil {
		masterError(w, "savepoint", err)
		return
	}
	_ = j.update(context.Background(), func(r *Record) { r.LastSavepoint = rep.Path })
	writeJSON(w, http.StatusOK, struct {
		ID   string `json:"id"`
		Path string `json:"path"`
	}{j.snapshot().ID, rep.Path})
}

func (d *Dispatcher) postSkipBacklog(w http.ResponseWriter, r *http.Request) {
	j := d.lookup(w, r)
	if j == nil {
		return
	}
	path := "/v1/skip-backlog"
	if n := r.URL.Query().Get("node"); n != "" {
		path += "?node=" + urlQueryEscape(n)
	}
	b, err := j.callMaster(r.Context(), "POST", path, nil)
	var ae *apiError
	if err != nil && !errors.As(err, &ae) {
		masterError(w, "skip-backlog", err)
		return
	}
	// The master's answer as it is: which subtasks skipped, which could not.
	code := http.StatusOK
	if ae != nil {
		code = ae.code
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// RescaleRequest is POST /v1/jobs/{id}/rescale's body.
type RescaleRequest struct {
	Parallelism int `json:"parallelism"`
}

// RescaleReply answers it.
type RescaleReply struct {
	ID          string `json:"id"`
	State       State  `json:"state"`
	Run         int    `json:"run"`
	Parallelism int    `json:"parallelism"`
	Savepoint   string `json:"savepoint"`
}

// decodeRescale reads a rescale request strictly.
func decodeRescale(b []byte) (RescaleRequest, error) {
	var req RescaleRequest
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("rescale request: %w", err)
	}
	if dec.More() {
		return req, errors.New("rescale request: more than one JSON value")
	}
	if req.Parallelism < 1 {
		return req, fmt.Errorf("parallelism: want at least 1, got %d", req.Parallelism)
	}
	return req, nil
}

func (d *Dispatcher) postRescale(w http.ResponseWriter, r *http.Request) {
	j := d.lookup(w, r)
	if j == nil {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	req, err := decodeRescale(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	s, rec, m := j.state()
	if s != Running || m == nil || rec.Rescale != nil || rec.Upgrade != nil || rec.CancelRequested {
		writeError(w, http.StatusConflict, "job %s is %s: only a RUNNING job can be rescaled", rec.ID, s)
		return
	}
	specBytes, err := d.specOf(r.Context(), &rec)
	if err != nil {
		d.storeError(w, err)
		return
	}
	if parsed, err := spec.Parse(specBytes, nil); err == nil && req.Parallelism > parsed.MaxParallelism {
		writeError(w, http.StatusBadRequest, "parallelism: %d is above the job's maxParallelism %d", req.Parallelism, parsed.MaxParallelism)
		return
	}
	j.beginOp()
	opEnded := false
	endOp := func() {
		if !opEnded {
			opEnded = true
			j.endOp()
		}
	}
	defer endOp()
	if err := j.tryUpdate(r.Context(), func(r *Record) { r.Rescale = &Rescale{Parallelism: req.Parallelism} }); err != nil {
		d.storeError(w, err)
		return
	}
	var rep struct {
		Path string `json:"path"`
	}
	if _, err := j.callMaster(r.Context(), "POST", "/v1/savepoint?stop=true", &rep); err != nil {
		_ = j.update(context.Background(), func(r *Record) { r.Rescale = nil })
		masterError(w, "rescale: stop with savepoint", err)
		return
	}
	_ = j.update(context.Background(), func(r *Record) {
		if r.Rescale != nil {
			r.Rescale.Savepoint = rep.Path
		}
		r.LastSavepoint = rep.Path
	})
	endOp()
	d.log.Info("rescale: job stopped with a savepoint", "job", rec.ID, "parallelism", req.Parallelism, "savepoint", rep.Path)
	code := http.StatusOK
	if !j.waitFor(r.Context(), waitEnd, func(s State, r Record, m Master) bool {
		return s.Terminal() || (r.Run > rec.Run && m != nil)
	}) {
		code = http.StatusAccepted
	}
	s, now, _ := j.state()
	writeJSON(w, code, RescaleReply{ID: rec.ID, State: s, Run: now.Run, Parallelism: req.Parallelism, Savepoint: rep.Path})
}
