package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/dispatcher"
	"github.com/sluice-stream/sluice/internal/procs"
)

// TestDispatcherFence: a dispatcher paused (SIGSTOP) while a new one takes
// its store over, and whose master dies meanwhile, resumes (SIGCONT): it
// launches no master and writes no record; its API refuses changes with
// 503 and its /healthz fails. The new one adopted the master and starts
// the one replacement.
func TestDispatcherFence(t *testing.T) {
	dir := t.TempDir()
	t.Cleanup(func() {
		for _, p := range procs.Live() {
			if bytes.Contains(p.Cmdline, []byte(dir)) {
				_ = syscall.Kill(p.PID, syscall.SIGKILL)
			}
		}
	})
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("fence-t0ken"), 0o600); err != nil {
		t.Fatal(err)
	}
	store := "file://" + filepath.Join(dir, "store")
	job := dispatcherJob(t, dir)
	d1, url1, log1 := startDispatcher(t, dir, store, token)
	out, code := dcli(t, url1, token, "submit", job)
	id, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(out), "job "), " ")
	if code != 0 || len(id) != 16 {
		t.Fatalf("submit: exit %d: %q\n%s", code, out, tail(log1.String(), 3000))
	}
	st := waitDispatcherJob(t, url1, token, id, func(s dispatcher.JobStatus) bool {
		return s.State == dispatcher.Running && s.Master != nil
	}, "RUNNING")
	oldMaster := st.Master.PID

	// The first dispatcher pauses; Marathon starts another on the store.
	if err := d1.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	_, url2, log2 := startDispatcher(t, dir, store, token)
	st = waitDispatcherJob(t, url2, token, id, func(s dispatcher.JobStatus) bool {
		return s.State == dispatcher.Running && s.Master != nil && s.Master.Adopted
	}, "RUNNING, its master adopted")
	if st.Master.PID != oldMaster {
		t.Fatalf("the new dispatcher runs master %d, not the running %d", st.Master.PID, oldMaster)
	}
	// The master dies while the first is paused: on resuming, the first
	// (its parent) sees its child end.
	if err := syscall.Kill(oldMaster, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := d1.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitLog(t, log1, "a newer dispatcher took the job store over", 1)

	st = waitDispatcherJob(t, url2, token, id, func(s dispatcher.JobStatus) bool {
		return s.State == dispatcher.Running && s.Master != nil && s.Master.PID != oldMaster
	}, "RUNNING on a new master")
	if st.MasterLaunches != 2 || st.MasterRestarts != 1 {
		t.Fatalf("at the new dispatcher: %d launches, %d restarts; want 2 and 1", st.MasterLaunches, st.MasterRestarts)
	}
	if ms := frameworkMasters(st.HADir); len(ms) != 1 || ms[0] != st.Master.PID {
		t.Fatalf("framework masters of the job: %v, want only %d\n%s", ms, st.Master.PID, tail(log1.String(), 3000))
	}
	if n := strings.Count(log1.String(), "framework master started"); n != 1 {
		t.Fatalf("the superseded dispatcher launched %d masters:\n%s", n, tail(log1.String(), 3000))
	}

	// Only the new dispatcher's records directory is in the store.
	es, err := os.ReadDir(filepath.Join(dir, "store", "dispatcher", "records"))
	if err != nil || len(es) != 1 || es[0].Name() != "00000000000000000002" {
		t.Fatalf("records directories: %v %v", es, err)
	}

	// The first refuses changes and fails its health check.
	if _, code := dcli(t, url1, token, "cancel", id); code != exitUnavailable {
		t.Fatalf("cancel at the superseded dispatcher: exit %d, want %d", code, exitUnavailable)
	}
	body, _ := os.ReadFile(job)
	req, _ := http.NewRequest("POST", url1+"/v1/jobs", bytes.NewReader(body))
	tok, _ := os.ReadFile(token)
	req.Header.Set("Authorization", "Bearer "+string(tok))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(b), "superseded by dispatcher epoch 2") {
		t.Fatalf("submit at the superseded dispatcher: %d %s", resp.StatusCode, b)
	}
	resp, err = http.Get(url1 + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("healthz of the superseded dispatcher: %d", resp.StatusCode)
	}
	if resp, err := http.Get(url2 + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz of the new dispatcher: %v %v", resp, err)
	}

	// The new one still runs the job, and ends it.
	if out, code := dcli(t, url2, token, "cancel", id); code != 0 || !strings.Contains(out, "CANCELED") {
		t.Fatalf("cancel at the new dispatcher: exit %d: %s\n%s", code, out, tail(log2.String(), 3000))
	}
	deadline := time.Now().Add(time.Minute)
	for len(frameworkMasters(st.HADir)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("masters %v still run after the cancel", frameworkMasters(st.HADir))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
