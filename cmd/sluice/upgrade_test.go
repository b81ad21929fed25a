package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

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
