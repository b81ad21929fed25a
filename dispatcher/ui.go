package dispatcher

import (
	"net/http"

	"github.com/sluice-stream/sluice/internal/webui"
)

// handleUI serves the web UI (internal/webui, docs/ui.md) at /ui/ and sends
// a browser asking for / there. The pages are open: they hold no data,
// and ask for the bearer token that the API routes they read want. An API
// client asking for / still gets the JSON 404 that lists the routes.
func (d *Dispatcher) handleUI(mux *http.ServeMux) {
	ui := webui.Handler(webui.Dispatcher)
	mux.Handle("GET "+webui.Prefix, d.instrument(route{path: webui.Prefix, open: true}, ui))
	mux.Handle("GET /ui", http.RedirectHandler(webui.Prefix, http.StatusMovedPermanently))
	mux.Handle("GET /{$}", d.instrument(route{path: "/", open: true}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if webui.WantsHTML(r) {
			http.Redirect(w, r, webui.Prefix, http.StatusFound)
			return
		}
		writeError(w, http.StatusNotFound, "no route %s %s; see docs/dispatcher.md (the web UI is at %s)", r.Method, r.URL.Path, webui.Prefix)
	})))
}
