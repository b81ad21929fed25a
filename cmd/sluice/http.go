package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
)

// The REST API of a job run by `sluice run --http ADDR`: a small control
// surface over the runtime's command and savepoint channels. Every answer
// is JSON; errors are {"error": "..."}.
//
//	POST /v1/skip-backlog[?node=ID]  sources seek to their newest data
//	GET  /v1/status                  job, attempt, restarts, checkpoints, nodes
//	POST /v1/savepoint[?stop=true]   write a savepoint (as SIGUSR1), answer its path;
//	                                 with stop, the job then stops (Flink's stop-with-savepoint)

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
	log        *slog.Logger
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
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorReply{fmt.Sprintf("no endpoint %s; see /v1/status, /v1/skip-backlog, /v1/savepoint", r.URL.Path)})
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
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	st, err := runtime.RequestStatus(ctx, a.cmds)
	if err != nil {
		writeJSON(w, errorCode(err), errorReply{"status: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *jobAPI) savepoint(w http.ResponseWriter, r *http.Request) {
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
	reply := make(chan runtime.SavepointResult, 1)
	// Writing may take up to the checkpoint timeout, but a job that is
	// restarting does not even take the request: say so instead of hanging.
	take := time.NewTimer(30 * time.Second)
	defer take.Stop()
	select {
	case a.savepoints <- runtime.SavepointRequest{Stop: stop, Reply: reply}:
	case <-take.C:
		writeJSON(w, http.StatusServiceUnavailable, savepointReply{Error: "the job did not take the savepoint request within 30s (restarting?); ask again"})
		return
	case <-ctx.Done():
		writeJSON(w, http.StatusServiceUnavailable, savepointReply{Error: "the job did not take the savepoint request: " + ctx.Err().Error()})
		return
	}
	answer := func(res runtime.SavepointResult) {
		switch {
		case res.Err != nil && stop:
			writeJSON(w, http.StatusInternalServerError, savepointReply{Error: "stop-with-savepoint failed, the job keeps running: " + res.Err.Error()})
		case res.Err != nil:
			writeJSON(w, http.StatusInternalServerError, savepointReply{Error: "savepoint failed: " + res.Err.Error()})
		default:
			writeJSON(w, http.StatusOK, savepointReply{Path: res.Path, Stopped: stop})
		}
	}
	select {
	case res := <-reply:
		answer(res)
	case <-ctx.Done():
		// A stop ends the job, and with it ctx, right after the reply.
		select {
		case res := <-reply:
			answer(res)
		default:
			writeJSON(w, errorCode(ctx.Err()), savepointReply{Error: "waiting for the savepoint: " + ctx.Err().Error()})
		}
	}
}

// serveAPI listens on addr and serves the API until ctx ends; requests'
// contexts end with ctx too, so nothing waits on a job that is gone.
func serveAPI(ctx context.Context, addr string, api *jobAPI) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http: %w", err)
	}
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
	}, nil
}
