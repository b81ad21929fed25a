package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/framework"
)

// The REST API of a job's master (`sluice run --http ADDR`, also with
// --cluster, and `sluice framework --http ADDR`): a small control surface
// over the runtime's command and savepoint channels, and what the master
// observes. Every answer but /metrics is JSON; errors are {"error": "..."}.
// docs/rest-api.md documents each route.
//
//	GET  /v1/status                  job, attempt, restarts, checkpoints, nodes
//	GET  /v1/vertices                vertices: parallelism, state, rows, where subtasks run
//	GET  /v1/checkpoints[?limit=N]   counts, the latest, and the last N (≤ 50) checkpoints
//	GET  /v1/taskmanagers            TaskManagers: slots, addresses, heartbeat RTT, tasks
//	POST /v1/skip-backlog[?node=ID]  sources seek to their newest data
//	POST /v1/savepoint[?stop=true]   write a savepoint (as SIGUSR1), answer its path;
//	                                 with stop, the job then stops (Flink's stop-with-savepoint)
//	POST /v1/cancel[?savepoint=true] cancel the job (as SIGTERM); with savepoint, after one
//	POST /v1/start                   a master in standby (sluice framework --standby) deploys
//	                                 the job, restoring {"restore": PATH}; answers once it runs
//	GET  /v1/progress                savepoints' and restores' progress (http_progress.go)
//	GET  /v1/kafka-lag               Kafka sources' partitions: offset, high watermark, lag
//	GET  /metrics                    Prometheus metrics (text exposition format)
//	GET  /ui/                        the web UI for this job (docs/ui.md)

// skipBacklogReply is the body of POST /v1/skip-backlog, for the server and
// the `sluice skip-backlog` client.
type skipBacklogReply struct {
	Skipped     []string `json:"skipped"`
	Unsupported []string `json:"unsupported,omitempty"`
	Error       string   `json:"error,omitempty"`
}

type savepointReply struct {
	Path string `json:"path,omitempty"`
	// Stopped: the job stops now that the savepoint is written.
	Stopped bool   `json:"stopped,omitempty"`
	Error   string `json:"error,omitempty"`
}

type errorReply struct {
	Error string `json:"error"`
}

// jobAPI serves the running job's REST API.
type jobAPI struct {
	cmds       chan<- runtime.Command
	savepoints chan<- runtime.SavepointRequest
	obs        *jobObserver
	// cancel cancels the job (POST /v1/cancel without a savepoint).
	cancel func()
	log    *slog.Logger

	// progress: savepoints' and restores' progress (http_progress.go).
	progress *runtime.Progress
}

// skipTimeout bounds a skip-backlog request: a source that cannot reach its
// brokers must not hold the request forever.
const skipTimeout = 5 * time.Minute

func (a *jobAPI) handler() http.Handler {
	mux := http.NewServeMux()
	route := func(path, method string, h http.HandlerFunc) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if r.Method != method {
				w.Header().Set("Allow", method)
				writeJSON(w, http.StatusMethodNotAllowed, errorReply{fmt.Sprintf("%s %s: use %s", r.Method, path, method)})
				return
			}
			h(w, r)
		})
	}
	route("/v1/skip-backlog", http.MethodPost, a.skipBacklog)
	route("/v1/status", http.MethodGet, a.status)
	route("/v1/savepoint", http.MethodPost, a.savepoint)
	route("/v1/vertices", http.MethodGet, a.vertices)
	route("/v1/checkpoints", http.MethodGet, a.checkpoints)
	route("/v1/taskmanagers", http.MethodGet, a.taskManagers)
	route("/v1/cancel", http.MethodPost, a.cancelJob)
	route("/v1/start", http.MethodPost, a.start)
	route("/v1/progress", http.MethodGet, a.progressOps)
	route("/v1/kafka-lag", http.MethodGet, a.kafkaLag)
	metrics := a.obs.handler()
	route("/metrics", http.MethodGet, metrics.ServeHTTP)
	route("/ui/", http.MethodGet, a.ui)
	mux.HandleFunc("GET /{$}", a.root)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorReply{fmt.Sprintf("no endpoint %s; see docs/rest-api.md: /v1/status, /v1/vertices, /v1/checkpoints, /v1/taskmanagers, /v1/skip-backlog, /v1/savepoint, /v1/cancel, /v1/start, /v1/progress, /v1/kafka-lag, /metrics, /ui/", r.URL.Path)})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// errorCode maps a command's error to an HTTP status.
func errorCode(err error) int {
	switch {
	case errors.Is(err, runtime.ErrBadCommand):
		return http.StatusBadRequest
	case errors.Is(err, runtime.ErrNotRunning):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable // the job ended
	}
	return http.StatusInternalServerError
}

func (a *jobAPI) skipBacklog(w http.ResponseWriter, r *http.Request) {
	if a.notStandingBy(w, "skip-backlog") {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), skipTimeout)
	defer cancel()
	node := r.URL.Query().Get("node")
	res := runtime.RequestSkipBacklog(ctx, a.cmds, node)
	rep := skipBacklogReply{Skipped: res.Skipped, Unsupported: res.Unsupported}
	if rep.Skipped == nil {
		rep.Skipped = []string{}
	}
	if res.Err != nil {
		a.log.Warn("skip-backlog request failed", "node", node, "err", res.Err)
		rep.Error = res.Err.Error()
		writeJSON(w, errorCode(res.Err), rep)
		return
	}
	a.log.Info("backlog skipped on request", "node", node, "subtasks", res.Skipped, "unsupported", res.Unsupported)
	writeJSON(w, http.StatusOK, rep)
}

func (a *jobAPI) status(w http.ResponseWriter, r *http.Request) {
	if sb, ok := a.standby(); ok {
		// No job runs yet to ask: the master answers for it.
		writeJSON(w, http.StatusOK, statusReply{Status: runtime.Status{Job: a.obs.g.JobName, State: "standby", Nodes: []runtime.NodeStatus{}},
			Standby: &sb, Resources: a.obs.master.ResourceStatus()})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	st, err := runtime.RequestStatus(ctx, a.cmds)
	if err != nil {
		writeJSON(w, errorCode(err), errorReply{"status: " + err.Error()})
		return
	}
	reply := statusReply{Status: st}
	if m := a.obs.master; m != nil {
		reply.Resources = m.ResourceStatus()
	}
	writeJSON(w, http.StatusOK, reply)
}

// statusReply is GET /v1/status: the job's status and, on a cluster, what
// its resource manager says (e.g. why it waits for Mesos offers).
type statusReply struct {
	runtime.Status
	// Standby: the master stands by (state "standby") with these
	// TaskManagers registered; POST /v1/start deploys the job.
	Standby   *framework.StandbyStatus `json:"standby,omitempty"`
	Resources string                   `json:"resources,omitempty"`
}

// standby says whether the job's master stands by (sluice framework
// --standby, before POST /v1/start), and its TaskManagers.
func (a *jobAPI) standby() (framework.StandbyStatus, bool) {
	if a.obs.master == nil {
		return framework.StandbyStatus{}, false
	}
	return a.obs.master.Standby()
}

// notStandingBy answers 409 to what needs a running job while the master
// stands by; true when it answered.
func (a *jobAPI) notStandingBy(w http.ResponseWriter, what string) bool {
	if _, ok := a.standby(); !ok {
		return false
	}
	writeJSON(w, http.StatusConflict, errorReply{what + ": the master stands by; no job runs until POST /v1/start"})
	return true
}

// startRequest is POST /v1/start's body.
type startRequest struct {
	// Restore is the savepoint or checkpoint to start from; "" starts as
	// the master's flags say (--restore, or empty).
	Restore string `json:"restore"`
}

// startReply answers it.
type startReply struct {
	// State is "running" once the job's tasks were started, "starting"
	// when the wait for that ended first (GET /v1/status tells the rest).
	State   string    `json:"state"`
	Restore string    `json:"restore,omitempty"`
	Running time.Time `json:"running,omitzero"`
	Error   string    `json:"error,omitempty"`
}

// startWait bounds how long POST /v1/start waits for the tasks to run.
const startWait = 2 * time.Minute

// start ends a standby: the job deploys, restoring the given savepoint,
// and the answer comes once its tasks run (the downtime of an upgrade ends
// there).
func (a *jobAPI) start(w http.ResponseWriter, r *http.Request) {
	m := a.obs.master
	if m == nil {
		writeJSON(w, http.StatusConflict, startReply{Error: "not a job master: nothing stands by"})
		return
	}
	var req startRequest
	if r.ContentLength != 0 {
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			writeJSON(w, http.StatusBadRequest, startReply{Error: "start request: " + err.Error()})
			return
		}
	}
	if err := m.Start(req.Restore); err != nil {
		writeJSON(w, http.StatusConflict, startReply{Error: err.Error()})
		return
	}
	a.log.Info("started on request after standing by", "restore", req.Restore)
	t := time.NewTimer(startWait)
	defer t.Stop()
	select {
	case <-m.Running():
		writeJSON(w, http.StatusOK, startReply{State: "running", Restore: req.Restore, Running: m.RunningSince()})
	case <-t.C:
		writeJSON(w, http.StatusAccepted, startReply{State: "starting", Restore: req.Restore})
	case <-r.Context().Done():
		// The job ended (it could not restore?) before its tasks ran.
		writeJSON(w, http.StatusServiceUnavailable, startReply{Error: "the job ended before its tasks ran; see the master's log"})
	}
}

func (a *jobAPI) savepoint(w http.ResponseWriter, r *http.Request) {
	if a.notStandingBy(w, "savepoint") {
		return
	}
	ctx := r.Context()
	var stop bool
	switch v := r.URL.Query().Get("stop"); v {
	case "", "false":
	case "true":
		stop = true
	default:
		writeJSON(w, http.StatusBadRequest, savepointReply{Error: fmt.Sprintf("stop=%q: want true or false", v)})
		return
	}
	res, code, err := a.askSavepoint(ctx, stop)
	switch {
	case err != nil:
		writeJSON(w, code, savepointReply{Error: err.Error()})
	case res.Err != nil && stop:
		writeJSON(w, http.StatusInternalServerError, savepointReply{Error: "stop-with-savepoint failed, the job keeps running: " + res.Err.Error()})
	case res.Err != nil:
		writeJSON(w, http.StatusInternalServerError, savepointReply{Error: "savepoint failed: " + res.Err.Error()})
	default:
		writeJSON(w, http.StatusOK, savepointReply{Path: res.Path, Stopped: stop})
	}
}

// askSavepoint hands the job a savepoint request and waits for its
// result; err (with its HTTP status) is set when the job did not take the
// request or the wait ended first.
func (a *jobAPI) askSavepoint(ctx context.Context, stop bool) (runtime.SavepointResult, int, error) {
	reply := make(chan runtime.SavepointResult, 1)
	// Writing may take up to the checkpoint timeout, but a job that is
	// restarting does not even take the request: say so instead of hanging.
	take := time.NewTimer(30 * time.Second)
	defer take.Stop()
	select {
	case a.savepoints <- runtime.SavepointRequest{Stop: stop, Reply: reply}:
	case <-take.C:
		return runtime.SavepointResult{}, http.StatusServiceUnavailable, errors.New("the job did not take the savepoint request within 30s (restarting?); ask again")
	case <-ctx.Done():
		return runtime.SavepointResult{}, http.StatusServiceUnavailable, errors.New("the job did not take the savepoint request: " + ctx.Err().Error())
	}
	select {
	case res := <-reply:
		return res, 0, nil
	case <-ctx.Done():
		// A stop ends the job, and with it ctx, right after the reply.
		select {
		case res := <-reply:
			return res, 0, nil
		default:
			return runtime.SavepointResult{}, errorCode(ctx.Err()), errors.New("waiting for the savepoint: " + ctx.Err().Error())
		}
	}
}

// vertexReply is one vertex of GET /v1/vertices.
type vertexReply struct {
	ID          string `json:"id"`
	Type        string `json:"type"`
	Parallelism int    `json:"parallelism"`
	Source      bool   `json:"source,omitempty"`
	// State is "running", "restarting", or (a cluster) "deploying" while
	// some subtask has no TaskManager.
	State   string `json:"state"`
	RowsIn  int64  `json:"rowsIn"`
	RowsOut int64  `json:"rowsOut"`
	// BackPressuredMs is how long the vertex's subtasks (summed) waited for
	// credits to send downstream: their consumers were behind.
	BackPressuredMs int64 `json:"backPressuredMs"`
	// Subtasks: each subtask's counters and (a cluster) where it runs.
	Subtasks []subtaskReply `json:"subtasks"`
	// Inputs are the vertex's input edges (none for a source): the web
	// UI draws the job's graph from them.
	Inputs []inputReply `json:"inputs"`
	// WatermarkLagMs is wall-clock time minus the vertex's event-time
	// watermark; absent before its first watermark.
	WatermarkLagMs *float64 `json:"watermarkLagMs,omitempty"`
}

// inputReply is one input edge of a vertex.
type inputReply struct {
	From      string `json:"from"`
	Output    string `json:"output,omitempty"` // a side output of From
	Partition string `json:"partition"`        // forward, rebalance, hash, broadcast
}

type subtaskReply struct {
	Subtask     int    `json:"subtask"`
	TaskManager string `json:"taskManager,omitempty"` // a cluster; "" while not deployed
	// Rows over every attempt (and TaskManager) that ran the subtask; for
	// a cluster, as of the TaskManagers' last reports.
	RowsIn          int64 `json:"rowsIn"`
	RowsOut         int64 `json:"rowsOut"`
	BackPressuredMs int64 `json:"backPressuredMs"`
}

func (a *jobAPI) vertices(w http.ResponseWriter, r *http.Request) {
	if a.notStandingBy(w, "vertices") {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	st, err := runtime.RequestStatus(ctx, a.cmds)
	if err != nil {
		writeJSON(w, errorCode(err), errorReply{"vertices: " + err.Error()})
		return
	}
	bp := a.obs.backPressured()
	where := map[string]string{} // "node#i" → TaskManager id
	if m := a.obs.master; m != nil {
		for _, t := range m.TaskManagers() {
			for _, s := range t.Tasks {
				where[s] = t.ID
			}
		}
	}
	vs := make([]vertexReply, 0, len(st.Nodes))
	for _, n := range st.Nodes {
		v := vertexReply{ID: n.ID, Type: n.Type, Parallelism: n.Parallelism, Source: n.Source, State: st.State, RowsIn: n.RowsIn, RowsOut: n.RowsOut,
			BackPressuredMs: bp[n.ID].Milliseconds()}
		v.Inputs = inputsOf(a.obs.g, n.ID)
		counters := map[int]*runtime.SubtaskCounters{}
		if m := a.obs.nodes[n.ID]; m != nil {
			m.Subtasks(func(i int, c *runtime.SubtaskCounters) { counters[i] = c })
			if wm, ok := m.Watermark(); ok {
				lag := float64(time.Since(time.UnixMilli(wm)).Microseconds()) / 1000
				v.WatermarkLagMs = &lag
			}
		}
		for i := range n.Parallelism {
			sr := subtaskReply{Subtask: i}
			if c := counters[i]; c != nil {
				sr.RowsIn, sr.RowsOut = c.RowsIn.Load(), c.RowsOut.Load()
				sr.BackPressuredMs = time.Duration(c.BackPressured.Load()).Milliseconds()
			}
			if a.obs.master != nil {
				sr.TaskManager = where[fmt.Sprintf("%s#%d", n.ID, i)]
				if sr.TaskManager == "" && v.State == "running" {
					v.State = "deploying"
				}
			}
			v.Subtasks = append(v.Subtasks, sr)
		}
		vs = append(vs, v)
	}
	writeJSON(w, http.StatusOK, struct {
		Job      string        `json:"job"`
		Vertices []vertexReply `json:"vertices"`
	}{st.Job, vs})
}

// inputsOf lists node id's input edges in g.
func inputsOf(g *runtime.Graph, id string) []inputReply {
	out := []inputReply{}
	for _, n := range g.Nodes {
		if n.ID != id {
			continue
		}
		for _, e := range n.Inputs {
			out = append(out, inputReply{From: e.From, Output: e.Output, Partition: e.Partition.String()})
		}
	}
	return out
}

// checkpointReply is one checkpoint of GET /v1/checkpoints.
type checkpointReply struct {
	runtime.CheckpointStats
	DurationMs float64 `json:"durationMs"`
	// AlignmentMs: the longest any task held its inputs for the barriers.
	AlignmentMs float64 `json:"alignmentMs"`
}

type checkpointsReply struct {
	Completed  int64 `json:"completed"`  // checkpoints
	Savepoints int64 `json:"savepoints"` // savepoints completed
	Failed     int64 `json:"failed"`     // checkpoints and savepoints
	Restarts   int64 `json:"restarts"`
	// Latest is the last completed checkpoint (not savepoint) of this run.
	Latest *checkpointReply `json:"latest,omitempty"`
	// History is the last checkpoints and savepoints that ended, newest first.
	History []checkpointReply `json:"history"`
}

func checkpointOf(s runtime.CheckpointStats) checkpointReply {
	return checkpointReply{CheckpointStats: s, DurationMs: float64(s.Duration.Microseconds()) / 1000,
		AlignmentMs: float64(s.Alignment.Microseconds()) / 1000}
}

func (a *jobAPI) checkpoints(w http.ResponseWriter, r *http.Request) {
	limit := historyLen
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > historyLen {
			writeJSON(w, http.StatusBadRequest, errorReply{fmt.Sprintf("limit=%q: want a number from 1 to %d", v, historyLen)})
			return
		}
		limit = n
	}
	o := a.obs
	o.mu.Lock()
	rep := checkpointsReply{Completed: o.completed, Savepoints: o.savepoints, Failed: o.failed, Restarts: o.restarts, History: []checkpointReply{}}
	if o.last != nil {
		l := checkpointOf(*o.last)
		rep.Latest = &l
	}
	for i := len(o.history) - 1; i >= 0 && len(rep.History) < limit; i-- {
		rep.History = append(rep.History, checkpointOf(o.history[i]))
	}
	o.mu.Unlock()
	writeJSON(w, http.StatusOK, rep)
}

// taskManagerReply is one TaskManager of GET /v1/taskmanagers.
type taskManagerReply struct {
	framework.TaskManagerStatus
	HeartbeatRTTMs float64 `json:"heartbeatRttMs"` // 0 before the first round trip
}

func (a *jobAPI) taskManagers(w http.ResponseWriter, r *http.Request) {
	rep := struct {
		// Mode is "cluster" (a job master with TaskManagers) or "embedded"
		// (sluice run without --cluster: no TaskManagers).
		Mode         string             `json:"mode"`
		Registered   int                `json:"registered"`
		Lost         int                `json:"lost"`
		TaskManagers []taskManagerReply `json:"taskManagers"`
	}{Mode: "embedded", TaskManagers: []taskManagerReply{}}
	if m := a.obs.master; m != nil {
		rep.Mode = "cluster"
		for _, t := range m.TaskManagers() {
			rep.TaskManagers = append(rep.TaskManagers, taskManagerReply{TaskManagerStatus: t, HeartbeatRTTMs: float64(t.HeartbeatRTT.Microseconds()) / 1000})
		}
		rep.Registered, rep.Lost = len(rep.TaskManagers), m.Lost()
	}
	writeJSON(w, http.StatusOK, rep)
}

type cancelReply struct {
	Cancelled bool `json:"cancelled"`
	// Path is the savepoint written first (?savepoint=true).
	Path  string `json:"path,omitempty"`
	Error string `json:"error,omitempty"`
}

// cancelJob cancels the job: at once (as SIGTERM without
// --savepoint-on-stop), or with ?savepoint=true after writing a savepoint
// (stop-with-savepoint; when it fails the job keeps running).
func (a *jobAPI) cancelJob(w http.ResponseWriter, r *http.Request) {
	var sp bool
	switch v := r.URL.Query().Get("savepoint"); v {
	case "", "false":
	case "true":
		sp = true
	default:
		writeJSON(w, http.StatusBadRequest, cancelReply{Error: fmt.Sprintf("savepoint=%q: want true or false", v)})
		return
	}
	if sp && a.notStandingBy(w, "cancel with a savepoint") {
		return
	}
	if !sp {
		a.log.Info("cancelling the job on request")
		writeJSON(w, http.StatusOK, cancelReply{Cancelled: true})
		_ = http.NewResponseController(w).Flush() // the answer goes out before the job ends
		a.cancel()
		return
	}
	res, code, err := a.askSavepoint(r.Context(), true)
	switch {
	case err != nil:
		writeJSON(w, code, cancelReply{Error: err.Error()})
	case res.Err != nil:
		writeJSON(w, http.StatusInternalServerError, cancelReply{Error: "the savepoint failed, the job keeps running: " + res.Err.Error()})
	default:
		a.log.Info("cancelling the job on request, after a savepoint", "path", res.Path)
		writeJSON(w, http.StatusOK, cancelReply{Cancelled: true, Path: res.Path})
	}
}

// listenAPI listens on the --http address: before the job master starts,
// so that it can publish the address in the HA directory.
func listenAPI(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http: %w", err)
	}
	return ln, nil
}

// serveAPI serves the API on ln until ctx ends; requests' contexts end
// with ctx too, so nothing waits on a job that is gone.
func serveAPI(ctx context.Context, ln net.Listener, api *jobAPI) (stop func()) {
	srv := &http.Server{
		Handler:           api.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	api.log.Info("http API listening", "addr", "http://"+ln.Addr().String())
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			api.log.Error("http API stopped", "err", err)
		}
	}()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-served
	}
}
