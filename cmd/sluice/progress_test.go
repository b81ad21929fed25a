package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
)

func TestRenderBar(t *testing.T) {
	op := func(state string, done, total, files, filesTotal, eta int64) runtime.ProgressOperation {
		return runtime.ProgressOperation{ID: "sp-3", Kind: "savepoint", State: state, BytesDone: done, BytesTotal: total,
			FilesDone: files, FilesTotal: filesTotal, EtaMs: eta}
	}
	for _, c := range []struct {
		name string
		op   runtime.ProgressOperation
		want string
	}{
		{"start", op("running", 0, 4096, 0, 3, -1), "savepoint sp-3 [----------]   0%  0 B/4.0 KiB  0/3 files  ETA ?"},
		{"halfway", op("running", 3<<20, 6<<20, 1, 3, 4200), "savepoint sp-3 [#####-----]  50%  3.0 MiB/6.0 MiB  1/3 files  ETA 4.2s"},
		{"no byte total: by files", op("running", 700, 0, 1, 4, -1), "savepoint sp-3 [##--------]  25%  700 B/?  1/4 files  ETA ?"},
		{"nothing known", op("running", 0, 0, 0, 0, -1), "savepoint sp-3 [----------]   ?%  0 B/?  0/0 files  ETA ?"},
		{"estimate exceeded", op("running", 5000, 4000, 0, 1, 0), "savepoint sp-3 [##########] 100%  4.9 KiB/3.9 KiB  0/1 files  ETA 0s"},
		{"done", op("done", 5<<30, 5<<30, 12, 12, 0), "savepoint sp-3 [##########] 100%  5.0 GiB/5.0 GiB  12/12 files  done"},
		{"minutes", op("running", 1, 100, 0, 2, 125_400), "savepoint sp-3 [----------]   1%  1 B/100 B  0/2 files  ETA 2m5s"},
		{"phase", runtime.ProgressOperation{ID: "rescale-2", Kind: "rescale", Phase: "restore", State: "failed", BytesDone: 10, BytesTotal: 40, EtaMs: 0},
			"rescale rescale-2 (restore) [##--------]  25%  10 B/40 B  0/0 files  failed"},
	} {
		if got := renderBar(c.op, 10); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
	if got, want := plainLine(runtime.ProgressOperation{ID: "sp-3", Kind: "savepoint", State: "failed", BytesDone: 10, BytesTotal: 40, FilesTotal: 2, Error: "w#0: disk full"}),
		"savepoint sp-3: failed 25%, 10 B of 40 B, 0 of 2 files, failed: w#0: disk full"; got != want {
		t.Errorf("plainLine:\n got %q\nwant %q", got, want)
	}
}

// TestSavepointCLIProgress: `sluice savepoint ID` with stderr not a
// terminal writes plain progress lines to stderr while the savepoint is
// written, the last one done, and only the path to stdout.
func TestSavepointCLIProgress(t *testing.T) {
	var mu sync.Mutex
	polls := 0
	polled := make(chan struct{})
	started := time.Now().UTC()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/jobs/j1/progress", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		polls++
		n := int64(min(polls, 4))
		if polls == 3 {
			close(polled)
		}
		mu.Unlock()
		op := runtime.ProgressOperation{ID: "sp-9", Kind: "savepoint", State: "running", StartedAt: started,
			BytesDone: 100 * n, BytesTotal: 400, FilesDone: n - 1, FilesTotal: 4, EtaMs: 1000 * (4 - n), Subtasks: []runtime.ProgressSubtaskRow{}}
		if n == 4 {
			op.State, op.FilesDone, op.EtaMs = "done", 4, 0
		}
		old := op
		old.ID, old.StartedAt = "sp-1", started.Add(-time.Hour) // an earlier one: not shown
		writeJSON(w, 200, map[string]any{"operations": []runtime.ProgressOperation{op, old}})
	})
	mux.HandleFunc("POST /v1/jobs/j1/savepoints", func(w http.ResponseWriter, r *http.Request) {
		<-polled
		mu.Lock()
		polls = 3 // the next poll sees it done
		mu.Unlock()
		writeJSON(w, 200, map[string]any{"path": "file:///sp/savepoint-9"})
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sluiceBin, "savepoint", "--dispatcher", srv.URL, "--token-file", tok, "--progress-every", "5ms", "j1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("sluice savepoint: %v\n%s", err, errb.String())
	}
	if out.String() != "savepoint: file:///sp/savepoint-9\n" {
		t.Errorf("stdout %q; want only the path", out.String())
	}
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	if len(lines) < 3 {
		t.Fatalf("stderr has %d lines, want the progress while it ran and the end:\n%s", len(lines), errb.String())
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "savepoint sp-9: ") || strings.Contains(l, "\r") {
			t.Errorf("not a plain progress line of sp-9: %q", l)
		}
	}
	if !strings.HasPrefix(lines[0], "savepoint sp-9: running 25%, 100 B of 400 B, 0 of 4 files, ETA 3s") {
		t.Errorf("first line %q", lines[0])
	}
	if want := "savepoint sp-9: done 100%, 400 B of 400 B, 4 of 4 files, done"; lines[len(lines)-1] != want {
		t.Errorf("last line %q, want %q", lines[len(lines)-1], want)
	}

	// --json: the answer alone, no progress.
	cmd = exec.Command(sluiceBin, "savepoint", "--dispatcher", srv.URL, "--json", "j1")
	out.Reset()
	errb.Reset()
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("sluice savepoint --json: %v\n%s", err, errb.String())
	}
	var rep struct{ Path string }
	if json.Unmarshal(out.Bytes(), &rep) != nil || rep.Path == "" || errb.Len() != 0 {
		t.Errorf("--json: stdout %q, stderr %q", out.String(), errb.String())
	}
}
