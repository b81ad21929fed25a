package dispatcher

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestUIServed: the dispatcher serves the UI without the token (its pages
// ask for it); a browser asking for / goes there, an API client gets JSON.
func TestUIServed(t *testing.T) {
	e := newEnv(t, "tok")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path, accept string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get("/ui/", "")
	if resp.StatusCode != 200 || !strings.Contains(body, `content="dispatcher"`) {
		t.Fatalf("/ui/: %d %s", resp.StatusCode, body)
	}
	resp, _ = get("/", "text/html,*/*")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("/ from a browser: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body = get("/", "application/json")
	if resp.StatusCode != 404 || !strings.Contains(resp.Header.Get("Content-Type"), "json") || !strings.Contains(body, "no route") {
		t.Fatalf("/ from an API client: %d %s", resp.StatusCode, body)
	}
	// The API itself still wants the token.
	if resp, _ = get("/v1/jobs", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/v1/jobs without the token: %d", resp.StatusCode)
	}
}
