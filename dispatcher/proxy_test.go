package dispatcher

import (
	"net/http"
	"strings"
	"testing"
)

// TestMasterProxy: GET /v1/jobs/{id}/master/{path...} passes the master's
// read-only routes on, behind the token; nothing else.
func TestMasterProxy(t *testing.T) {
	e := newEnv(t, "tok")
	id := e.submit(goodSpec)
	e.waitState(id, Running)

	var st map[string]any
	if code := e.do("GET", "/v1/jobs/"+id+"/master/v1/status", nil, &st); code != 200 || st["state"] != "running" {
		t.Fatalf("master/v1/status: %d %v", code, st)
	}
	var tms struct{ TaskManagers []TaskManager }
	if code := e.do("GET", "/v1/jobs/"+id+"/master/v1/taskmanagers?x=1", nil, &tms); code != 200 || len(tms.TaskManagers) != 1 {
		t.Fatalf("master/v1/taskmanagers: %d %+v", code, tms)
	}
	// The master's own 404 (a route it lacks) comes through as it is.
	if code := e.do("GET", "/v1/jobs/"+id+"/master/v1/kafka-lag", nil, nil); code != 404 {
		t.Fatalf("master/v1/kafka-lag on a master without it: %d", code)
	}
	var er errorReply
	// Not passed on: the routes that change a job, and anything unknown.
	for _, p := range []string{"v1/savepoint", "v1/cancel", "v1/start", "../v1/status", "v1/status/x", ""} {
		if code := e.do("GET", "/v1/jobs/"+id+"/master/"+p, nil, nil); code != 404 {
			t.Fatalf("master/%s: %d, want 404", p, code)
		}
	}
	if code := e.do("POST", "/v1/jobs/"+id+"/master/v1/savepoint", nil, nil); code == 200 {
		t.Fatalf("POST through the proxy: %d", code)
	}
	if code := e.do("GET", "/v1/jobs/nosuchjob/master/v1/status", nil, &er); code != 404 || !strings.Contains(er.Error, "no job") {
		t.Fatalf("unknown job: %d %+v", code, er)
	}

	// The token is checked.
	resp, err := http.Get(e.srv.URL + "/v1/jobs/" + id + "/master/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without the token: %d", resp.StatusCode)
	}

	// A job whose master ended: 409.
	if code := e.do("DELETE", "/v1/jobs/"+id, nil, nil); code != 200 {
		t.Fatalf("cancel: %d", code)
	}
	if code := e.do("GET", "/v1/jobs/"+id+"/master/v1/status", nil, &er); code != http.StatusConflict {
		t.Fatalf("after cancel: %d %+v, want 409", code, er)
	}
}
