package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/internal/procs"
)

// logFile is a process's stderr in a file (as under a supervisor: its
// TaskManagers share it and may outlive it), read as it grows.
type logFile struct{ path string }

func (l logFile) String() string { b, _ := os.ReadFile(l.path); return string(b) }

// startLogged starts sluice with its stderr in a file of dir.
func startLogged(t *testing.T, ctx context.Context, dir string, args ...string) (*exec.Cmd, logFile) {
	t.Helper()
	f, err := os.CreateTemp(dir, "sluice-*.log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	cmd := exec.CommandContext(ctx, sluiceBin, args...)
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, logFile{f.Name()}
}

// waitLog waits until the log holds s at least n times.
func waitLog(t *testing.T, l logFile, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for strings.Count(l.String(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the log does not show %q %d times after 2 minutes:\n%s", s, n, tail(l.String(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// taskManagerChildren lists the `sluice taskmanager` processes whose parent
// is pid, found by their command line as an operator would.
func taskManagerChildren(pid int) []int { return procs.TaskManagers(pid) }

// waitChildren waits until pid has n TaskManager children.
func waitChildren(t *testing.T, pid, n int) []int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if c := taskManagerChildren(pid); len(c) >= n {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the master (pid %d) has not %d TaskManager children after a minute", pid, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var restartsRe = regexp.MustCompile(`msg=finished .*restarts=(\d+)`)

// runClusterCrashTest runs examples/exactly-once.json with `sluice run
// --cluster 3`, kills one TaskManager process with SIGKILL at random
// moments, `kills` times, while the master restarts the job from its
// latest checkpoint each time; then checks every (key, window) result is
// committed exactly once.
func runClusterCrashTest(t *testing.T, kills int, extra ...string) string {
	const rows, keys = 150_000, 100
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	args := exactlyOnceArgs(dir, out, 3, rows, keys, 30000, 100, "--set", "parallelism=3")
	args = append(args, extra...)
	args = append(args, repoFile(t, "examples/exactly-once.json"))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd, stderr := startLogged(t, ctx, dir, args...)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		// Nothing left behind, whatever happened.
		for _, c := range taskManagerChildren(cmd.Process.Pid) {
			_ = syscall.Kill(c, syscall.SIGKILL)
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	killed := 0
	// Candidates are the TaskManagers that were there at the last kill: a
	// process started since is a replacement, and with a spare it is the
	// new idle spare, busy only with starting up — killing it would
	// restart nothing (seen under load).
	known := map[int]bool{}
	for _, p := range waitChildren(t, cmd.Process.Pid, 3) {
		known[p] = true
	}
	for killed < kills {
		// Each kill hits a deployed attempt (not one still starting up,
		// which would restart nothing).
		waitLog(t, stderr, "deploying", killed+1)
		time.Sleep(time.Duration(400+rng.IntN(1200)) * time.Millisecond)
		select {
		case err := <-done:
			t.Fatalf("the job ended after %d of %d kills (%v): make it longer\n%s", killed, kills, err, tail(stderr.String(), 3000))
		default:
		}
		// The busiest: never an idle spare, whose loss restarts nothing.
		var candidates []int
		for _, p := range taskManagerChildren(cmd.Process.Pid) {
			if known[p] {
				candidates = append(candidates, p)
			}
		}
		victim := procs.Busiest(candidates, 300*time.Millisecond)
		if victim == 0 {
			continue
		}
		if err := syscall.Kill(victim, syscall.SIGKILL); err == nil {
			killed++
			t.Logf("kill %d: TaskManager pid %d", killed, victim)
			known = map[int]bool{}
			for _, p := range taskManagerChildren(cmd.Process.Pid) {
				known[p] = p != victim
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("the job failed: %v\n%s", err, tail(stderr.String(), 5000))
	}
	logs := stderr.String()
	m := restartsRe.FindStringSubmatch(logs)
	if m == nil {
		t.Fatalf("no final log line:\n%s", tail(logs, 3000))
	}
	if n, _ := strconv.Atoi(m[1]); n < 1 {
		t.Errorf("restarts = %d after %d kills", n, kills)
	}
	t.Logf("final: %s", m[0])
	compareWindows(t, committedWindows(t, out), expectedWindows(rows, keys, 1))
	return logs
}

func TestClusterKillTaskManager(t *testing.T) {
	runClusterCrashTest(t, 3)
}

func TestClusterKillTaskManagerBadgerIncremental(t *testing.T) {
	logs := runClusterCrashTest(t, 3, "--set", "stateBackend=badger", "--set", "checkpoint.incremental=true", "--log-level", "debug")
	if !incrementalRe.MatchString(logs) {
		t.Error("no checkpoint built on an earlier one: the run was not incremental")
	}
}

// TestClusterHungTaskManager pauses one TaskManager with SIGSTOP: the
// master must find it by heartbeat, move its work to a replacement and
// finish the job exactly once; when the paused one resumes (SIGCONT) it is
// fenced — its session is gone, so it cancels its tasks — and the master
// refuses its new registration, so it exits.
func TestClusterHungTaskManager(t *testing.T) {
	const rows, keys = 150_000, 100
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	args := exactlyOnceArgs(dir, out, 3, rows, keys, 25000, 10,
		"--heartbeat-interval", "200ms", "--heartbeat-timeout", "1s", "--set", "parallelism=3")
	cmd := exec.CommandContext(ctx, sluiceBin, append(args, repoFile(t, "examples/exactly-once.json"))...)
	f, err := os.Create(filepath.Join(dir, "master.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stderr := logFile{f.Name()}
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tms := waitChildren(t, cmd.Process.Pid, 3)
	waitLog(t, stderr, "deploying", 1)
	time.Sleep(1500 * time.Millisecond)
	zombie := tms[1]
	if err := syscall.Kill(zombie, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(zombie, syscall.SIGKILL)
	// Lost by heartbeat, replaced: a fourth process appears.
	waitChildren(t, cmd.Process.Pid, 4)
	time.Sleep(2 * time.Second)
	if err := syscall.Kill(zombie, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The resumed one is refused and exits (while the job runs or after).
	gone := time.Now().Add(time.Minute)
	for !procs.Exited(zombie) {
		if time.Now().After(gone) {
			t.Fatalf("the resumed TaskManager %d is still running a minute later\n%s", zombie, tail(stderr.String(), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatalf("the job failed: %v\n%s", err, tail(stderr.String(), 5000))
	}
	logs := stderr.String()
	for _, want := range []string{"no heartbeat for", "refusing a TaskManager"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log does not show %q", want)
		}
	}
	compareWindows(t, committedWindows(t, out), expectedWindows(rows, keys, 1))
}

// TestTaskManagerBadMaster: a TaskManager with no master, or pointed at a
// port that is not a master, exits with an error that says so.
func TestTaskManagerBadMaster(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free := ln.Addr().String()
	ln.Close()
	// A port that answers with garbage (not gRPC).
	junk, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	go func() {
		for {
			c, err := junk.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.0 400 nope\r\n\r\n"))
			c.Close()
		}
	}()
	for _, master := range []string{free, junk.Addr().String()} {
		cmd := exec.Command(sluiceBin, "taskmanager", "--master", master, "--connect-timeout", "1s")
		outp, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("master %s: the TaskManager exited 0:\n%s", master, outp)
		}
		if !strings.Contains(string(outp), "no master to register with") || !strings.Contains(string(outp), master) {
			t.Errorf("master %s: the error does not say what is wrong:\n%s", master, tail(string(outp), 2000))
		}
	}
	if outp, err := exec.Command(sluiceBin, "taskmanager").CombinedOutput(); err == nil || !strings.Contains(string(outp), "--master") {
		t.Errorf("no --master: %v\n%s", err, outp)
	}
}

// processesWith lists the live TaskManager processes whose command line
// holds s.
func processesWith(s string) []int { return procs.TaskManagersWith(s) }

// haJob prepares examples/exactly-once.json on `sluice run --cluster 2`
// with an HA directory: its directory, output, arguments and a context
// bounding the test; the TaskManagers left are killed at the end.
func haJob(t *testing.T, rows, keys int) (dir, out string, args []string, ctx context.Context) {
	dir = t.TempDir()
	out = filepath.Join(dir, "out")
	ha := "file://" + filepath.Join(dir, "ha")
	args = append(clusterHAArgs(dir, out, ha, rows, keys), repoFile(t, "examples/exactly-once.json"))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(func() {
		cancel()
		for _, p := range processesWith(ha) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	})
	return dir, out, args, ctx
}

func clusterHAArgs(dir, out, ha string, rows, keys int) []string {
	return exactlyOnceArgs(dir, out, 2, rows, keys, 25000, 10, "--ha-dir", ha)
}

// exactlyOnceArgs are the `sluice run --cluster tms` arguments (before the
// job file) that run examples/exactly-once.json into out with rows rows of
// keys keys at rate rows/s, checkpoints in dir every 150 ms and restarts
// fixed-delay of attempts (0: the spec's); extra come last.
func exactlyOnceArgs(dir, out string, tms, rows, keys, rate, attempts int, extra ...string) []string {
	args := []string{"run", "--cluster", strconv.Itoa(tms),
		"--set", "nodes.out.params.path=" + out,
		"--set", "checkpoint.storage=file://" + filepath.Join(dir, "checkpoints"),
		"--set", fmt.Sprintf("nodes.src.params.rows=%d", rows),
		"--set", fmt.Sprintf("nodes.src.params.keys=%d", keys),
		"--set", fmt.Sprintf("nodes.src.params.rate=%d", rate),
		"--set", "checkpoint.interval=150ms",
		"--local-dir", filepath.Join(dir, "local"),
	}
	if attempts > 0 {
		args = append(args, "--set", fmt.Sprintf(`restart={"strategy":"fixed-delay","attempts":%d,"delay":"50ms"}`, attempts))
	}
	return append(args, extra...)
}

// TestClusterMasterRestart kills the job master with SIGKILL and starts it
// again on the same HA directory: the TaskManager processes it started
// find the new master there and register again (no new ones are started),
// the job resumes from its latest checkpoint, and every result is
// committed exactly once.
func TestClusterMasterRestart(t *testing.T) {
	const rows, keys = 150_000, 100
	dir, out, args, ctx := haJob(t, rows, keys)
	// The first master logs to a file, as under a supervisor: its
	// TaskManagers share it and outlive it.
	first, log1 := startLogged(t, ctx, dir, args...)
	tms := waitChildren(t, first.Process.Pid, 2)
	// Some checkpoints, then the master dies.
	waitLog(t, log1, "deploying", 1)
	time.Sleep(1500 * time.Millisecond)
	_ = first.Process.Signal(syscall.SIGKILL)
	_ = first.Wait()
	t.Logf("master killed; TaskManagers %v", tms)

	second := exec.CommandContext(ctx, sluiceBin, args...)
	var log2 bytes.Buffer
	second.Stderr = &log2
	if err := second.Run(); err != nil {
		t.Fatalf("the restarted master failed: %v\n%s", err, tail(log2.String(), 5000))
	}
	logs := log2.String()
	if !strings.Contains(logs, "took the job's fencing epoch") || !strings.Contains(logs, "epoch=2") {
		t.Errorf("the restarted master did not take epoch 2:\n%s", tail(logs, 3000))
	}
	if strings.Contains(logs, "TaskManager process started") {
		t.Errorf("the restarted master started new TaskManagers instead of taking the running ones:\n%s", tail(logs, 3000))
	}
	if n := strings.Count(logs, "TaskManager registered"); n != len(tms) {
		t.Errorf("%d registrations with the new master, want the %d TaskManagers of the first", n, len(tms))
	}
	compareWindows(t, committedWindows(t, out), expectedWindows(rows, keys, 1))
}

// TestClusterPausedMaster pauses the master (SIGSTOP) long enough for its
// TaskManagers to leave it, starts a second master on the HA directory,
// and resumes the first once the second runs the job: the first, a
// zombie, stops for the newer epoch without touching the TaskManagers
// (the second runs the job on them to its end), and every result is
// committed exactly once.
func TestClusterPausedMaster(t *testing.T) {
	const rows, keys = 150_000, 100
	dir, out, args, ctx := haJob(t, rows, keys)
	// With the REST API, whose address each master publishes.
	args = append(args[:len(args)-1:len(args)-1], "--http", "127.0.0.1:0", args[len(args)-1])
	first, log1 := startLogged(t, ctx, dir, args...)
	tms := waitChildren(t, first.Process.Pid, 2)
	waitLog(t, log1, "deploying", 1)
	time.Sleep(1500 * time.Millisecond)
	if b, err := os.ReadFile(filepath.Join(dir, "ha", "masters", fmt.Sprintf("%020d", 1))); err != nil || !strings.Contains(string(b), `"http":"127.0.0.1:`) {
		t.Errorf("the master's published addresses: %s, %v; want its REST address too", b, err)
	}
	if err := first.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	second, log2 := startLogged(t, ctx, dir, args...)
	waitLog(t, log2, "deploying", 1)
	if err := first.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := first.Wait(); err == nil || !strings.Contains(log1.String(), "a newer master leads the job") {
		t.Errorf("the resumed master: %v, want it stopped for the newer one:\n%s", err, tail(log1.String(), 3000))
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("the second master failed: %v\n%s", err, tail(log2.String(), 5000))
	}
	if n := strings.Count(log2.String(), "TaskManager registered"); n < len(tms) {
		t.Errorf("%d registrations with the second master, want the %d TaskManagers of the first", n, len(tms))
	}
	if strings.Contains(log2.String(), "TaskManager lost") {
		t.Errorf("the second master lost a TaskManager (did the zombie stop them?):\n%s", tail(log2.String(), 3000))
	}
	compareWindows(t, committedWindows(t, out), expectedWindows(rows, keys, 1))
}

// TestClusterTwoMasters starts two masters of one job on one HA
// directory at once: the one with the older epoch stops, saying why, and
// the other runs the job; every result is committed exactly once.
func TestClusterTwoMasters(t *testing.T) {
	const rows, keys = 100_000, 100
	dir, out, args, ctx := haJob(t, rows, keys)
	type result struct {
		err error
		log string
	}
	results := make(chan result, 2)
	for i := range 2 {
		logFile, err := os.Create(filepath.Join(dir, fmt.Sprintf("master%d.log", i)))
		if err != nil {
			t.Fatal(err)
		}
		defer logFile.Close()
		cmd := exec.CommandContext(ctx, sluiceBin, args...)
		cmd.Stderr = logFile
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			err := cmd.Wait()
			b, _ := os.ReadFile(logFile.Name())
			results <- result{err, string(b)}
		}()
	}
	var ok, stopped int
	for range 2 {
		r := <-results
		switch {
		case r.err == nil:
			ok++
		case strings.Contains(r.log, "a newer master leads the job"):
			stopped++
		default:
			t.Errorf("a master failed otherwise: %v\n%s", r.err, tail(r.log, 3000))
		}
	}
	if ok != 1 || stopped != 1 {
		t.Fatalf("%d masters ran the job and %d stopped for the newer one; want 1 and 1", ok, stopped)
	}
	compareWindows(t, committedWindows(t, out), expectedWindows(rows, keys, 1))
}

func TestClusterKillTaskManagerWithSpare(t *testing.T) {
	runClusterCrashTest(t, 3, "--spare-taskmanagers", "1")
}

// TestClusterRegionFailover: a job of forward edges only (a router) has
// one pipelined region per subtask. Killing the TaskManager of one region
// restarts that region alone, from the latest checkpoint, on a new
// TaskManager; the other regions are never restarted; every row is
// written exactly once.
func TestClusterRegionFailover(t *testing.T) {
	const rows = 120_000
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	jobFile := filepath.Join(dir, "router.json")
	spec := fmt.Sprintf(`{"name": "router", "parallelism": 3,
		"checkpoint": {"interval": "150ms", "storage": "file://%s"},
		"restart": {"strategy": "fixed-delay", "attempts": 10, "delay": "50ms"},
		"nodes": [
		{"id": "src", "type": "sequence", "params": {"rows": %d, "keys": 100, "rate": 20000}},
		{"id": "keep", "type": "filter", "inputs": ["src"], "params": {"expr": "id >= 0"}},
		{"id": "out", "type": "file", "inputs": ["keep"], "params": {"path": %q}}]}`, filepath.Join(dir, "checkpoints"), rows, out)
	if err := os.WriteFile(jobFile, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	logFile, err := os.Create(filepath.Join(dir, "master.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, sluiceBin, "run", "--cluster", "3", "--local-dir", filepath.Join(dir, "local"), jobFile)
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range taskManagerChildren(cmd.Process.Pid) {
			_ = syscall.Kill(c, syscall.SIGKILL)
		}
	}()
	tms := waitChildren(t, cmd.Process.Pid, 3)
	readLog := func() string { b, _ := os.ReadFile(logFile.Name()); return string(b) }
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(readLog(), "deploying") {
		if time.Now().After(deadline) {
			t.Fatalf("no deployment:\n%s", readLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	if err := syscall.Kill(tms[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the job failed: %v\n%s", err, tail(readLog(), 5000))
	}
	logs := readLog()
	if !strings.Contains(logs, "restarting its region alone (1 of 3 regions") {
		t.Errorf("no region restart in the log:\n%s", tail(logs, 4000))
	}
	if strings.Contains(logs, "job failed; restarting") {
		t.Errorf("the whole job restarted:\n%s", tail(logs, 4000))
	}
	seen := map[int64]int{}
	es, _ := os.ReadDir(out)
	for _, e := range es {
		if !strings.HasPrefix(e.Name(), "part-") {
			continue
		}
		data, _ := os.ReadFile(filepath.Join(out, e.Name()))
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if line == "" {
				continue
			}
			var r struct {
				ID int64 `json:"id"`
			}
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("%s: %q: %v", e.Name(), line, err)
			}
			seen[r.ID]++
		}
	}
	for id := int64(0); id < rows; id++ {
		if seen[id] != 1 {
			t.Fatalf("id %d written %d times", id, seen[id])
		}
	}
}

// TestClusterBackPressure: a slow sink on one TaskManager slows the
// unthrottled source on the other (across the data plane, by credits), and
// the TaskManagers' memory stays bounded.
func TestClusterBackPressure(t *testing.T) {
	dir := t.TempDir()
	jobFile := filepath.Join(dir, "slow.json")
	spec := fmt.Sprintf(`{"name": "slow", "parallelism": 2,
		"checkpoint": {"interval": "500ms", "storage": "file://%s"},
		"restart": {"strategy": "none"},
		"nodes": [
		{"id": "src", "type": "sequence", "params": {"rows": 100000000, "keys": 1000}},
		{"id": "slow", "type": "discard", "inputs": [{"from": "src", "partition": "hash", "keys": ["key"]}], "params": {"rate": 5000}}]}`,
		filepath.Join(dir, "checkpoints"))
	if err := os.WriteFile(jobFile, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd, log := startLogged(t, ctx, dir, "run", "--cluster", "2", "--slots", "1", "--http", addr, jobFile)
	defer func() {
		for _, c := range taskManagerChildren(cmd.Process.Pid) {
			_ = syscall.Kill(c, syscall.SIGKILL)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	waitLog(t, log, "deploying", 1)
	time.Sleep(6 * time.Second)
	var st struct {
		Nodes []struct {
			ID      string `json:"id"`
			RowsIn  int64  `json:"rowsIn"`
			RowsOut int64  `json:"rowsOut"`
		} `json:"nodes"`
	}
	resp, err := http.Get("http://" + addr + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][2]int64{}
	for _, n := range st.Nodes {
		rows[n.ID] = [2]int64{n.RowsIn, n.RowsOut}
	}
	out, in := rows["src"][1], rows["slow"][0]
	t.Logf("after ~6 s: src emitted %d rows, the slow sink took %d", out, in)
	// The sink takes 2 × 5000 rows/s; unthrottled, the source makes
	// millions. What is in flight is bounded by the channels' credits.
	if in == 0 || out > in+200_000 || out > 400_000 {
		t.Errorf("the source is not held back by the slow sink: %d emitted, %d taken", out, in)
	}
	for _, pid := range taskManagerChildren(cmd.Process.Pid) {
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.Atoi(f[1])
				t.Logf("TaskManager %d: RSS %d MiB", pid, kb/1024)
				// The race detector's shadow memory included.
				if kb > 1<<20 {
					t.Errorf("TaskManager %d uses %d MiB", pid, kb/1024)
				}
			}
		}
	}
}

// TestClusterRestoreLatest: `sluice run --cluster 2` killed with all its
// TaskManagers, then started again with --restore latest: every result is
// committed exactly once.
func TestClusterRestoreLatest(t *testing.T) {
	const rows, keys = 100_000, 100
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	args := exactlyOnceArgs(dir, out, 2, rows, keys, 25000, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	first, log := startLogged(t, ctx, dir, append(args, repoFile(t, "examples/exactly-once.json"))...)
	waitLog(t, log, "deploying", 1)
	time.Sleep(1500 * time.Millisecond)
	tms := taskManagerChildren(first.Process.Pid)
	_ = first.Process.Kill()
	for _, p := range tms {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	_ = first.Wait()
	second, log2 := startLogged(t, ctx, dir, append(args, "--restore", "latest", repoFile(t, "examples/exactly-once.json"))...)
	if err := second.Wait(); err != nil {
		t.Fatalf("the restored run failed: %v\n%s", err, tail(log2.String(), 4000))
	}
	if !strings.Contains(log2.String(), "msg=restoring") {
		t.Errorf("the second run did not restore a checkpoint:\n%s", tail(log2.String(), 3000))
	}
	compareWindows(t, committedWindows(t, out), expectedWindows(rows, keys, 1))
}

var savepointPathRe = regexp.MustCompile(`(?m)^savepoint: (\S+)$`)

// TestClusterSavepointRestore stops a job on two TaskManagers with a
// savepoint (SIGTERM with --savepoint-on-stop) and runs it again from the
// savepoint on a new cluster of three (a rescale): the savepoint's state
// files, written by the TaskManagers, and its metadata, committed by the
// master, are one savepoint; every result is committed exactly once.
func TestClusterSavepointRestore(t *testing.T) {
	const rows, keys = 100_000, 100
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	job := repoFile(t, "examples/exactly-once.json")
	first, log := startLogged(t, ctx, dir, append(exactlyOnceArgs(dir, out, 2, rows, keys, 25000, 0, "--savepoint-on-stop"), job)...)
	waitLog(t, log, "deploying", 1)
	time.Sleep(1500 * time.Millisecond)
	_ = first.Process.Signal(syscall.SIGTERM)
	_ = first.Wait()
	m := savepointPathRe.FindStringSubmatch(log.String())
	if m == nil {
		t.Fatalf("no savepoint written on stop:\n%s", tail(log.String(), 4000))
	}
	second, log2 := startLogged(t, ctx, dir, append(exactlyOnceArgs(dir, out, 3, rows, keys, 25000, 0, "--restore", m[1], "--set", "parallelism=3"), job)...)
	if err := second.Wait(); err != nil {
		t.Fatalf("the run from savepoint %s failed: %v\n%s", m[1], err, tail(log2.String(), 4000))
	}
	if !strings.Contains(log2.String(), "msg=restoring") || !strings.Contains(log2.String(), "savepoint=true") {
		t.Errorf("the second run did not restore the savepoint:\n%s", tail(log2.String(), 3000))
	}
	compareWindows(t, committedWindows(t, out), expectedWindows(rows, keys, 1))
}

var localRestoreRe = regexp.MustCompile(`msg="state restored" taskmanager=\S+ .*localBytes=[1-9]`)

// TestClusterLocalRecovery: with checkpoint.localRecovery, after a
// TaskManager is killed the survivors get their pipelines back (placement
// keeps a pipeline where it ran) and restore them from their local copies.
func TestClusterLocalRecovery(t *testing.T) {
	logs := runClusterCrashTest(t, 2, "--set", "checkpoint.localRecovery=true")
	if !localRestoreRe.MatchString(logs) {
		t.Errorf("no TaskManager restored from its local copies:\n%s", tail(logs, 4000))
	}
}
