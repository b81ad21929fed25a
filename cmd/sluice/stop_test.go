package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestFailedStopWithSavepoint: when the savepoint of a stop fails (its
// directory cannot be created), SIGTERM and POST /v1/savepoint?stop=true
// report it, the job keeps running and committing output, and a later
// SIGTERM still stops it with a savepoint that restores exactly once.
func TestFailedStopWithSavepoint(t *testing.T) {
	j := newSavepointJob(t)
	p := startSluice(t, j.args(t, 5_000, "--savepoint-on-stop", "--http", "127.0.0.1:0")...)
	url := p.apiURL()
	p.waitFor("a first checkpoint", func() bool { return len(completedCheckpoints(t, j.checkpoints)) > 0 })
	// A file where the savepoints' directory should be: writing one fails.
	blocker := filepath.Join(j.checkpoints, "savepoints")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	goesOn := func() {
		t.Helper()
		n := len(committedWindows(t, j.out))
		p.waitFor("windows committed after the failed stop", func() bool {
			return len(committedWindows(t, j.out)) >= n+2*int(j.keys)
		})
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitFor("the failure on stderr", func() bool {
		return strings.Contains(p.stderr.String(), "stop-with-savepoint failed; the job keeps running")
	})
	goesOn()

	var rep savepointReply
	if code := call(t, http.MethodPost, url+"/v1/savepoint?stop=true", &rep); code != http.StatusInternalServerError ||
		!strings.Contains(rep.Error, "stop-with-savepoint failed, the job keeps running") || rep.Stopped {
		t.Fatalf("POST /v1/savepoint?stop=true: %d %+v", code, rep)
	}
	goesOn()
	if code := call(t, http.MethodPost, url+"/v1/savepoint?stop=maybe", &rep); code != http.StatusBadRequest || !strings.Contains(rep.Error, `stop="maybe"`) {
		t.Fatalf("POST /v1/savepoint?stop=maybe: %d %+v", code, rep)
	}

	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(); code != 0 {
		t.Fatalf("second stop exited %d:\n%s", code, p.stderr.String())
	}
	sps := savepointPaths(p.stderr.String())
	if len(sps) != 1 {
		t.Fatalf("want one savepoint path on stderr, got %q:\n%s", sps, p.stderr.String())
	}
	if got := committedWindows(t, j.out); len(got) >= len(expectedWindows(j.rows, j.keys, 1)) {
		t.Fatalf("the job finished before the last SIGTERM (%d windows committed); the test proves nothing", len(got))
	}
	r := startSluice(t, j.args(t, 0, "--restore", sps[0])...)
	if code := r.wait(); code != 0 {
		t.Fatalf("restore from %s exited %d:\n%s", sps[0], code, r.stderr.String())
	}
	j.check(t)
}

// TestStopWithSavepointOverHTTP: POST /v1/savepoint?stop=true answers the
// savepoint's path once it is written, and the job stops (exit 0).
func TestStopWithSavepointOverHTTP(t *testing.T) {
	j := newSavepointJob(t)
	p := startSluice(t, j.args(t, 10_000, "--http", "127.0.0.1:0")...)
	url := p.apiURL()
	p.waitFor("a first checkpoint", func() bool { return len(completedCheckpoints(t, j.checkpoints)) > 0 })
	var rep savepointReply
	if code := call(t, http.MethodPost, url+"/v1/savepoint?stop=true", &rep); code != http.StatusOK || rep.Path == "" || !rep.Stopped || rep.Error != "" {
		t.Fatalf("POST /v1/savepoint?stop=true: %d %+v", code, rep)
	}
	if code := p.wait(); code != 0 {
		t.Fatalf("stop over HTTP exited %d:\n%s", code, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "stopped with a savepoint") {
		t.Errorf("stderr does not say the job stopped with a savepoint:\n%s", p.stderr.String())
	}
	if _, err := os.Stat(filepath.Join(strings.TrimPrefix(rep.Path, "file://"), "_metadata")); err != nil {
		t.Fatalf("savepoint %s: %v", rep.Path, err)
	}
}
