package webui

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string) (*http.Response, string) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(Prefix, h)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	resp := rec.Result()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestHandler: the pages come from the binary, the index names its mode,
// each asset has its content type, and nothing but GET is served.
func TestHandler(t *testing.T) {
	for _, mode := range []Mode{Dispatcher, Master} {
		h := Handler(mode)
		resp, body := get(t, h, "GET", "/ui/")
		if resp.StatusCode != 200 || !strings.Contains(body, `<meta name="sluice-mode" content="`+string(mode)+`">`) {
			t.Fatalf("%s: /ui/: %d\n%s", mode, resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Fatalf("index: Content-Type %q", ct)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Fatalf("index: CSP %q", csp)
		}
	}
	h := Handler(Dispatcher)
	for path, ct := range map[string]string{"/ui/app.js": "javascript", "/ui/style.css": "text/css", "/ui/index.html": "text/html"} {
		resp, body := get(t, h, "GET", path)
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), ct) || len(body) == 0 {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if resp, _ := get(t, h, "GET", "/ui/nope.js"); resp.StatusCode != 404 {
		t.Fatalf("a missing asset: %d", resp.StatusCode)
	}
	if resp, _ := get(t, h, "POST", "/ui/"); resp.StatusCode != 405 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}

// TestAssetsSelfContained: no page loads anything from another host (the
// UI works without a network), and the script builds the DOM without
// parsing HTML strings.
func TestAssetsSelfContained(t *testing.T) {
	for _, f := range []string{"index.html", "app.js", "style.css"} {
		b, err := assets.ReadFile("assets/" + f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, bad := range []string{"http://", "https://", "//cdn", "@import"} {
			if strings.Contains(strings.ReplaceAll(s, "http://www.w3.org/2000/svg", ""), bad) {
				t.Errorf("%s holds %q", f, bad)
			}
		}
		if f == "app.js" && (strings.Contains(s, "innerHTML") || strings.Contains(s, "insertAdjacentHTML")) {
			t.Errorf("app.js parses HTML strings")
		}
	}
}

func TestWantsHTML(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	if !WantsHTML(r) {
		t.Fatal("a browser's Accept")
	}
	r.Header.Set("Accept", "application/json")
	if WantsHTML(r) {
		t.Fatal("an API client's Accept")
	}
}
