package main

import (
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
)

// TestProgressREST: the master's GET /v1/progress, in one process and
// with the tasks on two TaskManager processes (their counts come over the
// control plane): a savepoint ends done with bytes == total, over every
// stateful subtask; a run restored from it shows its restore done the
// same way.
func TestProgressREST(t *testing.T) {
	for _, c := range []struct {
		name  string
		extra []string
	}{{"embedded", nil}, {"cluster", []string{"--cluster", "2"}}} {
		t.Run(c.name, func(t *testing.T) {
			began := time.Now()
			j := newSavepointJob(t)
			j.rows = 2_000_000
			p := startSluice(t, j.args(t, 20_000, append([]string{"--http", "127.0.0.1:0"}, c.extra...)...)...)
			api := p.apiURL()
			p.waitFor("a first checkpoint", func() bool { return len(completedCheckpoints(t, j.checkpoints)) > 0 })
			var sp savepointReply
			if code := call(t, "POST", api+"/v1/savepoint?stop=true", &sp); code != 200 || sp.Path == "" {
				t.Fatalf("savepoint: HTTP %d %+v", code, sp)
			}
			var rep progressReply
			if code := call(t, "GET", api+"/v1/progress", &rep); code != 200 {
				t.Fatalf("progress: HTTP %d", code)
			}
			checkDone(t, rep, runtime.ProgressSavepoint)
			if code := p.wait(); code != 0 {
				t.Fatalf("stop with savepoint: exit %d", code)
			}

			p = startSluice(t, j.args(t, 20_000, append([]string{"--http", "127.0.0.1:0", "--restore", sp.Path}, c.extra...)...)...)
			api = p.apiURL()
			p.waitFor("the restore done", func() bool {
				rep = progressReply{}
				call(t, "GET", api+"/v1/progress", &rep)
				return len(rep.Operations) > 0 && rep.Operations[0].State == runtime.ProgressDone
			})
			checkDone(t, rep, runtime.ProgressRestore)
			var cancelled map[string]any
			call(t, "POST", api+"/v1/cancel", &cancelled)
			p.wait()
			t.Log("took", time.Since(began))
		})
	}
}

func checkDone(t *testing.T, rep progressReply, kind string) {
	t.Helper()
	if len(rep.Operations) != 1 {
		t.Fatalf("operations %+v; want the one %s", rep.Operations, kind)
	}
	o := rep.Operations[0]
	if o.Kind != kind || o.State != runtime.ProgressDone || o.BytesDone <= 0 || o.BytesDone != o.BytesTotal ||
		o.FilesDone <= 0 || o.FilesDone != o.FilesTotal || o.EtaMs != 0 || o.StartedAt.IsZero() {
		t.Fatalf("%s ended with %+v; want done, bytes == total > 0, files == total > 0", kind, o)
	}
	var sum int64
	vertices := map[string]int{}
	for _, s := range o.Subtasks {
		sum += s.BytesDone
		vertices[s.Vertex]++
		if s.BytesDone != s.BytesTotal || s.FilesDone != s.FilesTotal {
			t.Errorf("subtask %+v not done", s)
		}
	}
	if sum != o.BytesDone || vertices["win"] != 2 {
		t.Errorf("subtasks %+v: want both of the window's (win), summing to %d bytes", o.Subtasks, o.BytesDone)
	}
}
