// Package webui serves Sluice's web UI: static pages, a script and a
// style sheet embedded in the binary (no CDN, no build step), which read
// the REST API of the process that serves them. The dispatcher serves it
// for all its jobs; a job's master for its one job. See docs/ui.md.
package webui

import (
	"bytes"
	"embed"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// Mode says whose API the pages read.
type Mode string

const (
	// Dispatcher: the jobs list, submit form and every job's pages, the
	// job's master read through GET /v1/jobs/{id}/master/...; the bearer
	// token is asked for when the API answers 401.
	Dispatcher Mode = "dispatcher"
	// Master: the one job of the master that serves the pages, read from
	// its own /v1/... routes.
	Master Mode = "master"
)

// Prefix is where the UI is served.
const Prefix = "/ui/"

// started is the assets' modification time for conditional requests:
// they change only with the binary.
var started = time.Now()

// Handler serves the UI under Prefix (mount it there; it strips the
// prefix itself).
func Handler(mode Mode) http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	index, err := fs.ReadFile(sub, "index.html")
	if err != nil {
		panic(err)
	}
	index = bytes.Replace(index, []byte("{{MODE}}"), []byte(mode), 1)
	files := http.FileServer(http.FS(sub))
	return http.StripPrefix(Prefix, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the UI's pages are read with GET", http.StatusMethodNotAllowed)
			return
		}
		// The pages hold no secret (the token stays in the browser), but
		// must not be framed by another site.
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		if r.URL.Path == "" || r.URL.Path == "index.html" {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeContent(w, r, "index.html", started, bytes.NewReader(index))
			return
		}
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}))
}

// WantsHTML says whether a request for "/" comes from a browser (which
// is sent on to the UI) rather than an API client (which gets the JSON
// 404 listing the routes).
func WantsHTML(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html")
}
