package main

import (
	"fmt"
	"net/http"

	"github.com/sluice-stream/sluice/internal/webui"
)

// The master serves the web UI (docs/ui.md) for its one job at /ui/, from
// the assets in the binary; its pages read this API's /v1/... routes.
var masterUI = webui.Handler(webui.Master)

func (a *jobAPI) ui(w http.ResponseWriter, r *http.Request) { masterUI.ServeHTTP(w, r) }

// root sends a browser asking for / to the UI; an API client gets the
// JSON 404 that lists the routes.
func (a *jobAPI) root(w http.ResponseWriter, r *http.Request) {
	if webui.WantsHTML(r) {
		http.Redirect(w, r, webui.Prefix, http.StatusFound)
		return
	}
	writeJSON(w, http.StatusNotFound, errorReply{fmt.Sprintf("no endpoint %s; see docs/rest-api.md (the web UI is at %s)", r.URL.Path, webui.Prefix)})
}
