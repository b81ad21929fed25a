package main

import (
	"net/http"

	"github.com/sluice-stream/sluice/engine/runtime"
)

// progressReply is GET /v1/progress: the job's savepoints and restores,
// running and the last finished ones, newest first (docs/rest-api.md).
type progressReply struct {
	Operations []runtime.ProgressOperation `json:"operations"`
}

func (a *jobAPI) progressOps(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, progressReply{Operations: a.progress.Operations()})
}
