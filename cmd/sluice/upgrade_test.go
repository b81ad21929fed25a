package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/dispatcher"
	"github.com/sluice-stream/sluice/internal/procs"
)

// TestUpgradeCLI: `sluice upgrade ID JOB` against a dispatcher with local
// masters: a table for people, the reply as JSON for scripts, and the
// exit codes of a bad spec (1) and an unknown job (4).
func TestUpgradeCLI(t *testing.T) {
	dir := t.TempDir()
	t.Cleanup(func() {
		for _, p := range procs.Live() {
			if bytes.Contains(p.Cmdline, []byte(dir)) {
				_ = syscall.Kill(p.PID, syscall.SIGKILL)
			}
		}
	})
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("t0ken"), 0o600); err != nil {
		t.Fatal(err)
	}
	job := dispatcherJob(t, dir)
	_, url, log := startDispatcher(t, dir, "file://"+filepath.Join(dir, "store"), token)
	out, code := dcli(t, url, token, "submit", job, "--json")
	var sub struct{ ID string }
	if code != 0 || json.Unmarshal([]byte(out), &sub) != nil {
		t.Fatalf("submit: exit %d %q", code, out)
	}
	id := sub.ID
	waitDispatcherJob(t, url, token, id, func(s dispatcher.JobStatus) bool { return s.State == dispatcher.Running }, "RUNNING")

	b, _ := os.ReadFile(job)
	var j map[string]any
	_ = json.Unmarshal(b, &j)
	j["parallelism"] = 3
	nb, _ := json.Marshal(j)
	v2 := filepath.Join(dir, "job-v2.json")
	if err := os.WriteFile(v2, nb, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.json")
	_ = os.WriteFile(bad, bytes.Replace(nb, []byte(`"window"`), []byte(`"no-such-type"`), 1), 0o644)
	if _, code := dcli(t, url, token, "upgrade", id, bad); code != exitAPIError {
		t.Fatalf("upgrade to a bad spec: exit %d, want %d", code, exitAPIError)
	}
	if _, code := dcli(t, url, token, "upgrade", "0123456789abcdef", v2); code != exitNotFound {
		t.Fatalf("upgrade of an unknown job: exit %d, want %d", code, exitNotFound)
	}
	out, code = dcli(t, url, token, "upgrade", id, v2)
	if code != 0 || !strings.Contains(out, "DOWNTIME") || !strings.Contains(out, "RUN") || !strings.Contains(out, "(was 1)") {
		t.Fatalf("upgrade: exit %d:\n%s\n%s", code, out, tail(log.String(), 3000))
	}
	t.Logf("sluice upgrade:\n%s", out)
	st := waitDispatcherJob(t, url, token, id, func(s dispatcher.JobStatus) bool { return s.State == dispatcher.Running && s.Run == 2 }, "RUNNING run 2")
	if st.Upgrade != nil || st.RestoredFrom == "" {
		t.Fatalf("after the upgrade: %+v", st)
	}
	// Scripts: the reply as JSON, with the downtime.
	out, code = dcli(t, url, token, "upgrade", id, job, "--json")
	var rep dispatcher.UpgradeReply
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Run != 3 || !strings.Contains(out, `"downtimeMs"`) {
		t.Fatalf("upgrade --json: exit %d: %s", code, out)
	}
	if _, code := dcli(t, url, token, "cancel", id); code != 0 {
		t.Fatalf("cancel: exit %d", code)
	}
}

// TestUpgradeDispatcherCrash: the dispatcher is killed during an upgrade
// of the exactly-once job (while the new version stands by, or later); the
// next dispatcher rolls the upgrade back or finishes it — no stray master
// either way — an upgrade then succeeds, and the job's output, once it
// finished, has every window exactly once.
func TestUpgradeDispatcherCrash(t *testing.T) {
	dir := t.TempDir()
	t.Cleanup(func() {
		for _, p := range procs.Live() {
			if bytes.Contains(p.Cmdline, []byte(dir)) {
				_ = syscall.Kill(p.PID, syscall.SIGKILL)
			}
		}
	})
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("t0ken"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A minute at the old version's rate, so that it runs through the
	// crash and the restart; the new version goes faster (the windows
	// depend on the rows only).
	const rows, keys = 240000, 20
	job := dispatcherJob(t, dir)
	b, _ := os.ReadFile(job)
	var j map[string]any
	_ = json.Unmarshal(b, &j)
	src := j["nodes"].([]any)[0].(map[string]any)["params"].(map[string]any)
	src["rows"], src["keys"], src["rate"] = rows, keys, 4000
	b, _ = json.Marshal(j)
	_ = os.WriteFile(job, b, 0o644)
	j["parallelism"] = 3
	src["rate"] = 60000
	src["rate"] = 60000
	nb, _ := json.Marshal(j)
	v2 := filepath.Join(dir, "job-v2.json")
	if err := os.WriteFile(v2, nb, 0o644); err != nil {
		t.Fatal(err)
	}
	store := "file://" + filepath.Join(dir, "store")
	d1, url, log1 := startDispatcher(t, dir, store, token)
	out, code := dcli(t, url, token, "submit", job, "--json")
	var sub struct{ ID string }
	if code != 0 || json.Unmarshal([]byte(out), &sub) != nil {
		t.Fatalf("submit: exit %d %q", code, out)
	}
	id := sub.ID
	waitDispatcherJob(t, url, token, id, func(s dispatcher.JobStatus) bool {
		return s.State == dispatcher.Running && s.LatestCheckpoint != nil
	}, "RUNNING with a checkpoint")

	up := exec.Command(sluiceBin, "upgrade", "--dispatcher", url, "--token-file", token, id, v2)
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	waitLog(t, log1, "upgrade: starting the new version's master in standby", 1)
	if err := d1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = d1.Wait()
	_ = up.Wait() // the dispatcher went away under it

	_, url, log2 := startDispatcher(t, dir, store, token)
	st := waitDispatcherJob(t, url, token, id, func(s dispatcher.JobStatus) bool {
		return s.State == dispatcher.Running && s.Upgrade == nil && s.Master != nil
	}, "RUNNING with no upgrade under way")
	t.Logf("%s after the dispatcher's restart: run %d", time.Now().Format(time.StampMilli), st.Run)
	runs := []string{filepath.Join(dir, "store", "jobs", id, "runs", "1", "ha"), filepath.Join(dir, "store", "jobs", id, "runs", "2", "ha")}
	deadline := time.Now().Add(time.Minute)
	for {
		n := 0
		for _, ha := range runs {
			n += len(frameworkMasters(ha))
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			m2, _ := os.ReadFile(filepath.Join(dir, "work", id, "run-2", "master.log"))
			t.Fatalf("%d framework masters run for the job, want 1\n%s\nrun 2's master:\n%s", n, tail(log2.String(), 3000), tail(string(m2), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%s one master runs", time.Now().Format(time.StampMilli))
	if st.Run == 1 {
		// Rolled back: the upgrade can be asked again.
		if !strings.Contains(log2.String(), "upgrade rolled back after a dispatcher restart") {
			t.Fatalf("run 1, but the log does not tell a roll back:\n%s", tail(log2.String(), 3000))
		}
		if out, code := dcli(t, url, token, "upgrade", id, v2); code != 0 {
			t.Fatalf("upgrade after the roll back: exit %d\n%s\n%s", code, out, tail(log2.String(), 3000))
		}
	}
	waitDispatcherJob(t, url, token, id, func(s dispatcher.JobStatus) bool { return s.Run >= 2 && s.State.Terminal() }, "ended on its new version")
	st = dispatcherStatus(t, url, token, id)
	if st.State != dispatcher.Finished {
		t.Fatalf("the job ended %s: %s", st.State, st.Reason)
	}
	compareWindows(t, committedWindows(t, filepath.Join(dir, "out")), expectedWindows(rows, keys, 1))
}

// TestStandbyMesos: `sluice framework --standby` with the Mesos resource
// manager: its TaskManagers are Mesos tasks, launched and registered while
// it stands by (GET /v1/status says so) and nothing is deployed; POST
// /v1/start deploys the job on them, and it runs to its end exactly once.
func TestStandbyMesos(t *testing.T) {
	const rows, keys = 20_000, 20
	dir := t.TempDir()
	m, mlog := startMesos(t, dir, nil)
	j := newMesosJob(t, dir, m, mlog, rows, keys, 20000, "--binary-uri", "file://"+sluiceBin, "--standby", "--http", "127.0.0.1:0")
	p := j.start()
	var addr string
	waitFor(t, "the master's address in its HA directory", func() bool {
		info, err := dispatcher.Leader(context.Background(), j.ha)
		if err == nil && info != nil {
			addr = info.HTTP
		}
		return addr != ""
	}, p)
	get := func(path string, out any) int {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, out)
		return resp.StatusCode
	}
	var st struct {
		State   string
		Standby *struct{ Registered, Wanted int }
	}
	waitFor(t, "standing by with 3 TaskManagers", func() bool {
		return get("/v1/status", &st) == 200 && st.State == "standby" && st.Standby != nil && st.Standby.Registered == 3 && st.Standby.Wanted == 3
	}, p)
	if n := len(j.runningTaskManagers(p, 3)); n != 3 {
		t.Fatalf("%d TaskManager tasks run", n)
	}
	if _, err := os.Stat(j.out); err == nil {
		t.Fatal("the job wrote output while its master stood by")
	}
	var e struct{ Error string }
	if code := get("/v1/vertices", &e); code != http.StatusConflict || !strings.Contains(e.Error, "stands by") {
		t.Fatalf("vertices while standing by: %d %+v", code, e)
	}
	resp, err := http.Post("http://"+addr+"/v1/start", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"running"`) {
		t.Fatalf("start: %d %s", resp.StatusCode, b)
	}
	resp, err = http.Post("http://"+addr+"/v1/start", "application/json", strings.NewReader(`{}`))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusConflict {
			t.Fatalf("a second start: %d, want 409", resp.StatusCode)
		}
	}
	j.finish(p)
}
