package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer that a running process writes to while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a `sluice run` started in the background.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

func startSluice(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(sluiceBin, args...), stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitFor polls until cond holds; it fails the test when the process exits
// first or after a generous deadline (a hang, not a timing assertion).
func (p *proc) waitFor(what string, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		select {
		case <-p.done:
			if cond() {
				return
			}
			p.t.Fatalf("sluice exited (%v) before %s; stderr:\n%s", p.err, what, p.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out waiting for %s; stderr:\n%s", what, p.stderr.String())
		}
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(3 * time.Minute):
		p.t.Fatalf("sluice did not exit; stderr:\n%s", p.stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatal(p.err)
	}
	return 0
}

func (p *proc) kill() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

var savepointLine = regexp.MustCompile(`(?m)^savepoint: (\S+)$`)

func savepointPaths(stderr string) []string {
	var ps []string
	for _, m := range savepointLine.FindAllStringSubmatch(stderr, -1) {
		ps = append(ps, m[1])
	}
	return ps
}

// completedCheckpoints lists the ids of chk-N directories with metadata.
func completedCheckpoints(t *testing.T, dir string) []int64 {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var ids []int64
	for _, e := range es {
		id, err := strconv.ParseInt(strings.TrimPrefix(e.Name(), "chk-"), 10, 64)
		if err != nil || !strings.HasPrefix(e.Name(), "chk-") {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "_metadata")); err == nil {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// savepointJob is examples/exactly-once.json, small and rate-limited so
// that signals arrive mid-run.
type savepointJob struct {
	dir, out, checkpoints string
	rows, keys            int64
}

func newSavepointJob(t *testing.T) savepointJob {
	dir := t.TempDir()
	return savepointJob{dir: dir, out: filepath.Join(dir, "out"), checkpoints: filepath.Join(dir, "checkpoints"), rows: 60_000, keys: 50}
}

// args builds a `sluice run` command line; rate 0 runs unthrottled.
func (j savepointJob) args(t *testing.T, rate int, extra ...string) []string {
	a := []string{"run",
		"--set", "nodes.out.params.path=" + j.out,
		"--set", "checkpoint.storage=file://" + j.checkpoints,
		"--set", fmt.Sprintf("nodes.src.params.rows=%d", j.rows),
		"--set", fmt.Sprintf("nodes.src.params.keys=%d", j.keys),
		"--set", "checkpoint.interval=100ms",
	}
	if rate > 0 {
		a = append(a, "--set", fmt.Sprintf("nodes.src.params.rate=%d", rate))
	}
	a = append(a, extra...)
	return append(a, repoFile(t, "examples/exactly-once.json"))
}

func (j savepointJob) check(t *testing.T) {
	t.Helper()
	compareWindows(t, committedWindows(t, j.out), expectedWindows(j.rows, j.keys, 1))
}

// TestSavepointOnSIGUSR1: SIGUSR1 writes a savepoint and the job goes on;
// after a SIGKILL, restoring from that savepoint (not from the newer
// checkpoints) still gives exactly-once output.
func TestSavepointOnSIGUSR1(t *testing.T) {
	j := newSavepointJob(t)
	p := startSluice(t, j.args(t, 10_000)...)
	p.waitFor("a first checkpoint", func() bool { return len(completedCheckpoints(t, j.checkpoints)) > 0 })
	if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	p.waitFor("the savepoint path on stderr", func() bool { return len(savepointPaths(p.stderr.String())) > 0 })
	sp := savepointPaths(p.stderr.String())[0]
	// The job goes on: checkpoints after the savepoint commit more windows
	// (several per key: more than the savepoint's own pending files hold,
	// which cover about one checkpoint interval).
	atSavepoint := len(committedWindows(t, j.out))
	p.waitFor("windows committed after the savepoint", func() bool {
		return len(committedWindows(t, j.out)) >= atSavepoint+4*int(j.keys)
	})
	p.kill()
	if len(committedWindows(t, j.out)) >= len(expectedWindows(j.rows, j.keys, 1)) {
		t.Fatal("the job finished before it was killed; the test proves nothing")
	}
	if _, err := os.Stat(filepath.Join(strings.TrimPrefix(sp, "file://"), "_metadata")); err != nil {
		t.Fatalf("savepoint %s: %v", sp, err)
	}

	r := startSluice(t, j.args(t, 0, "--restore", sp)...)
	if code := r.wait(); code != 0 {
		t.Fatalf("restore from %s exited %d:\n%s", sp, code, r.stderr.String())
	}
	if !strings.Contains(r.stderr.String(), "savepoint=true") {
		t.Errorf("restore did not log that it restored a savepoint:\n%s", r.stderr.String())
	}
	j.check(t)
}

// TestSavepointOnStop: with --savepoint-on-stop, SIGTERM writes a savepoint,
// prints its path and exits 0; the job resumes from it with another
// parallelism.
func TestSavepointOnStop(t *testing.T) {
	j := newSavepointJob(t)
	p := startSluice(t, j.args(t, 10_000, "--savepoint-on-stop")...)
	p.waitFor("a first checkpoint", func() bool { return len(completedCheckpoints(t, j.checkpoints)) > 0 })
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(); code != 0 {
		t.Fatalf("stop with savepoint exited %d:\n%s", code, p.stderr.String())
	}
	sps := savepointPaths(p.stderr.String())
	if len(sps) != 1 {
		t.Fatalf("want one savepoint path on stderr, got %q:\n%s", sps, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "stopped with a savepoint") {
		t.Errorf("stderr does not say the job stopped with a savepoint:\n%s", p.stderr.String())
	}
	if got := committedWindows(t, j.out); len(got) >= len(expectedWindows(j.rows, j.keys, 1)) {
		t.Fatalf("the job finished before SIGTERM (%d windows committed); the test proves nothing", len(got))
	}

	r := startSluice(t, j.args(t, 0, "--restore", sps[0], "--set", "parallelism=3")...)
	if code := r.wait(); code != 0 {
		t.Fatalf("restore from %s exited %d:\n%s", sps[0], code, r.stderr.String())
	}
	j.check(t)
}

// TestSIGTERMWithoutSavepoint: SIGTERM without --savepoint-on-stop cancels
// at once with exit code 130 and writes no savepoint.
func TestSIGTERMWithoutSavepoint(t *testing.T) {
	j := newSavepointJob(t)
	p := startSluice(t, j.args(t, 10_000)...)
	p.waitFor("a first checkpoint", func() bool { return len(completedCheckpoints(t, j.checkpoints)) > 0 })
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(); code != 130 {
		t.Fatalf("exit code %d, want 130:\n%s", code, p.stderr.String())
	}
	if sps := savepointPaths(p.stderr.String()); len(sps) > 0 {
		t.Errorf("wrote a savepoint without --savepoint-on-stop: %q", sps)
	}
	// It can still resume from its checkpoints.
	r := startSluice(t, j.args(t, 0, "--restore", "latest")...)
	if code := r.wait(); code != 0 {
		t.Fatalf("restore exited %d:\n%s", code, r.stderr.String())
	}
	j.check(t)
}

// TestRestoreSkipsCorruptCheckpoint corrupts the newest completed
// checkpoint after a crash: --restore latest names it, falls back to the one
// before, and the output is still exactly once.
func TestRestoreSkipsCorruptCheckpoint(t *testing.T) {
	for _, how := range []string{"flip", "truncate"} {
		t.Run(how, func(t *testing.T) {
			j := newSavepointJob(t)
			p := startSluice(t, j.args(t, 10_000, "--set", "checkpoint.retained=3")...)
			// Wait until the newest checkpoint has committed part files, so
			// that falling back to the one before must also take back what
			// the newest one committed.
			p.waitFor("two checkpoints, the newest with committed files", func() bool {
				ids := completedCheckpoints(t, j.checkpoints)
				return len(ids) >= 2 && len(committedBy(t, j, ids[len(ids)-1])) > 0
			})
			p.kill()

			ids := completedCheckpoints(t, j.checkpoints)
			newest := ids[len(ids)-1]
			state := filepath.Join(j.checkpoints, fmt.Sprintf("chk-%d", newest), "win-0")
			data, err := os.ReadFile(state)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) == 0 {
				t.Fatalf("%s is empty", state)
			}
			switch how {
			case "flip":
				data[len(data)/2] ^= 0x40
			case "truncate":
				data = data[:len(data)/2]
			}
			if err := os.WriteFile(state, data, 0o644); err != nil {
				t.Fatal(err)
			}

			t.Logf("corrupted checkpoint %d, which committed %v", newest, committedBy(t, j, newest))

			r := startSluice(t, j.args(t, 0, "--restore", "latest")...)
			if code := r.wait(); code != 0 {
				t.Fatalf("restore exited %d:\n%s", code, r.stderr.String())
			}
			stderr := r.stderr.String()
			want := fmt.Sprintf("checkpoint %d is corrupt", newest)
			if !strings.Contains(stderr, want) || !strings.Contains(stderr, "falling back to checkpoint") {
				t.Errorf("stderr does not say %q … falling back:\n%s", want, stderr)
			}
			j.check(t)
		})
	}
}

var inProgressName = regexp.MustCompile(`\.part-[0-9a-f]+-[0-9]+-[0-9]+\.inprogress`)

// committedBy returns the part files that checkpoint id recorded as pending
// (in the file sink's state) and that have been committed since.
func committedBy(t *testing.T, j savepointJob, id int64) []string {
	t.Helper()
	states, _ := filepath.Glob(filepath.Join(j.checkpoints, fmt.Sprintf("chk-%d", id), "out-*"))
	var names []string
	for _, st := range states {
		data, err := os.ReadFile(st)
		if err != nil {
			continue // pruned meanwhile
		}
		for _, m := range inProgressName.FindAllString(string(data), -1) {
			final := strings.TrimSuffix(strings.TrimPrefix(m, "."), ".inprogress")
			if _, err := os.Stat(filepath.Join(j.out, final)); err == nil {
				names = append(names, final)
			}
		}
	}
	return names
}

// TestValidate: `sluice validate` exits 1 naming the node and the field on
// bad specs, 0 on the examples.
func TestValidate(t *testing.T) {
	examples, err := filepath.Glob(repoFile(t, "examples/*.json"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, ex := range examples {
		out, err := exec.Command(sluiceBin, "validate", ex).CombinedOutput()
		if err != nil {
			t.Errorf("validate %s: %v\n%s", filepath.Base(ex), err, out)
		}
	}

	const src = `{"id": "src", "type": "sequence", "params": {"rows": 10, "keys": 2}}`
	const gen = `{"id": "gen", "type": "datagen", "params": {"rows": 10, "fields": [{"name": "name", "type": "string"}, {"name": "ts", "type": "timestamp"}]}}`
	job := func(nodes ...string) string {
		return `{"name": "bad", "nodes": [` + strings.Join(nodes, ",\n") + `]}`
	}
	cases := []struct {
		name, spec string
		want       []string // substrings of stderr
	}{
		{"unknown type", job(src, `{"id": "w", "type": "windoww", "inputs": ["src"]}`),
			[]string{`node "w"`, "type", `"windoww"`}},
		{"unknown param", job(src, `{"id": "out", "type": "print", "inputs": ["src"], "params": {"prefx": "x"}}`),
			[]string{`node "out"`, "params", `"prefx"`}},
		{"unknown node field", job(src, `{"id": "out", "type": "print", "input": ["src"]}`),
			[]string{`id "out"`, `unknown field "input"`}},
		{"missing input", job(src, `{"id": "out", "type": "print", "inputs": ["srcc"]}`),
			[]string{`node "out"`, `"srcc" does not exist`}},
		{"cycle", job(src,
			`{"id": "a", "type": "union", "inputs": ["src", "b"]}`,
			`{"id": "b", "type": "keyBy", "inputs": ["a"], "params": {"keys": ["key"]}}`,
			`{"id": "out", "type": "print", "inputs": ["b"]}`),
			[]string{"cycle", "a -> b"}},
		{"bad expression", job(src, `{"id": "f", "type": "filter", "inputs": ["src"], "params": {"expr": "idd > 3"}}`, `{"id": "out", "type": "print", "inputs": ["f"]}`),
			[]string{`node "f"`, "params.expr", "idd"}},
		{"non-boolean filter", job(src, `{"id": "f", "type": "filter", "inputs": ["src"], "params": {"expr": "id + 1"}}`, `{"id": "out", "type": "print", "inputs": ["f"]}`),
			[]string{`node "f"`, "params.expr", "boolean"}},
		{"sum of a string", job(gen, `{"id": "w", "type": "window", "inputs": ["gen"], "params": {"keys": ["name"], "type": "tumbling", "size": "1s", "aggregates": [{"name": "s", "fn": "sum", "field": "name"}]}}`, `{"id": "out", "type": "print", "inputs": ["w"]}`),
			[]string{`node "w"`, "aggregates[0]", `"name"`}},
		{"unknown key", job(src, `{"id": "w", "type": "window", "inputs": ["src"], "params": {"keys": ["nokey"], "type": "tumbling", "size": "1s", "aggregates": [{"name": "c", "fn": "count"}]}}`, `{"id": "out", "type": "print", "inputs": ["w"]}`),
			[]string{`node "w"`, "keys", `"nokey"`}},
		{"union schema mismatch", job(src, gen, `{"id": "u", "type": "union", "inputs": ["src", "gen"]}`, `{"id": "out", "type": "print", "inputs": ["u"]}`),
			[]string{`node "u"`, "inputs[1]", "schema"}},
	}
	dir := t.TempDir()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("bad-%d.json", i))
			if err := os.WriteFile(path, []byte(c.spec), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(sluiceBin, "validate", path)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("want exit code 1, got %v; stdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
			}
			for _, w := range c.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}
