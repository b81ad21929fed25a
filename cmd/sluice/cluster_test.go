package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// taskManagerChildren lists the `sluice taskmanager` processes whose parent
// is pid, found by their command line as an operator would.
func taskManagerChildren(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid != pid {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.Contains(cmdline, []byte("\x00taskmanager\x00")) {
			out = append(out, child)
		}
	}
	return out
}

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
	args := []string{"run", "--cluster", "3",
		"--set", "nodes.out.params.path=" + out,
		"--set", "checkpoint.storage=file://" + filepath.Join(dir, "checkpoints"),
		"--set", fmt.Sprintf("nodes.src.params.rows=%d", rows),
		"--set", fmt.Sprintf("nodes.src.params.keys=%d", keys),
		"--set", "nodes.src.params.rate=30000",
		"--set", "parallelism=3",
		"--set", "checkpoint.interval=150ms",
		"--set", `restart={"strategy":"fixed-delay","attempts":100,"delay":"50ms"}`,
		"--local-dir", filepath.Join(dir, "local"),
	}
	args = append(args, extra...)
	args = append(args, repoFile(t, "examples/exactly-once.json"))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sluiceBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
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
	waitChildren(t, cmd.Process.Pid, 3)
	for killed < kills {
		time.Sleep(time.Duration(400+rng.IntN(1200)) * time.Millisecond)
		select {
		case err := <-done:
			t.Fatalf("the job ended after %d of %d kills (%v): make it longer\n%s", killed, kills, err, tail(stderr.String(), 3000))
		default:
		}
		tms := taskManagerChildren(cmd.Process.Pid)
		if len(tms) == 0 {
			continue
		}
		victim := tms[rng.IntN(len(tms))]
		if err := syscall.Kill(victim, syscall.SIGKILL); err == nil {
			killed++
			t.Logf("kill %d: TaskManager pid %d", killed, victim)
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
	cmd := exec.CommandContext(ctx, sluiceBin, "run", "--cluster", "3",
		"--heartbeat-interval", "200ms", "--heartbeat-timeout", "1s",
		"--set", "nodes.out.params.path="+out,
		"--set", "checkpoint.storage=file://"+filepath.Join(dir, "checkpoints"),
		"--set", fmt.Sprintf("nodes.src.params.rows=%d", rows),
		"--set", fmt.Sprintf("nodes.src.params.keys=%d", keys),
		"--set", "nodes.src.params.rate=25000",
		"--set", "parallelism=3",
		"--set", "checkpoint.interval=150ms",
		"--set", `restart={"strategy":"fixed-delay","attempts":10,"delay":"50ms"}`,
		"--local-dir", filepath.Join(dir, "local"),
		repoFile(t, "examples/exactly-once.json"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tms := waitChildren(t, cmd.Process.Pid, 3)
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
	for syscall.Kill(zombie, 0) == nil && !isZombieProc(zombie) {
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

// isZombieProc: pid has exited but was not reaped yet.
func isZombieProc(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	return len(f) > 0 && f[0] == "Z"
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
