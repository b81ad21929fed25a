package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// proxyPaths are the master's read-only routes that
// GET /v1/jobs/{id}/master/{path...} passes on: the web UI reads a job's
// vertices, checkpoints and TaskManagers through the dispatcher (whose
// token guards them) instead of from the master's own address, which a
// browser outside the cluster cannot reach. Nothing that changes a job
// goes through here: those have their own routes.
var proxyPaths = []string{"v1/status", "v1/vertices", "v1/checkpoints", "v1/taskmanagers", "v1/kafka-lag", "v1/progress", "metrics"}

// proxyTimeout bounds one proxied call: a master that hangs must not
// hold the UI's poll.
const proxyTimeout = 10 * time.Second

// getMaster answers GET /v1/jobs/{id}/master/{path...} with the job's
// running master's answer to GET /{path} (its status, content type and
// body as they are); 404 for a path not passed on, 409 when the job has
// no master that answers.
func (d *Dispatcher) getMaster(w http.ResponseWriter, r *http.Request) {
	j := d.lookup(w, r)
	if j == nil {
		return
	}
	path := r.PathValue("path")
	if !slices.Contains(proxyPaths, path) {
		writeError(w, http.StatusNotFound, "GET /v1/jobs/{id}/master/%s: not passed on; the master's read-only routes are %s", path, strings.Join(proxyPaths, ", "))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), proxyTimeout)
	defer cancel()
	addr, _ := j.masterAddr(ctx)
	if addr == "" {
		masterError(w, "master "+path, errNoMaster)
		return
	}
	target := "http://" + addr + "/" + path
	if q := r.URL.RawQuery; q != "" {
		target += "?" + q
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		writeError(w, http.StatusBadRequest, "master %s: %v", path, err)
		return
	}
	if a := r.Header.Get("Accept"); a != "" {
		req.Header.Set("Accept", a)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			masterError(w, "master "+path, err)
			return
		}
		masterError(w, "master "+path, fmt.Errorf("%w: %w", errNoMaster, err))
		return
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	// Bounded like the dispatcher's own calls to masters.
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 4<<20))
}
