package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-stream/sluice/internal/procs"
)

var kills = flag.Int("kills", 20, "recovery: TaskManager SIGKILLs per run (one run without a spare, one with)")

// specRecovery: an unbounded keyed window job whose output comes as it
// goes. 5000 rows/s of 1 ms event time each, so event time runs 5× wall
// time and a 100 ms window of each of the 10 keys fires every 20 ms of
// wall time; the print sink writes on every watermark. Its rows reach the
// master's stderr: the local resource manager gives each TaskManager the
// master's stderr as its stdout.
const specRecovery = `{"name": "bench-recovery", "parallelism": 2,
 "checkpoint": {"interval": "500ms"},
 "restart": {"strategy": "fixed-delay", "attempts": 1000, "delay": "50ms"},
 "nodes": [
  {"id": "src", "type": "sequence", "params": {"keys": 10, "intervalMs": 1, "rate": 5000}},
  {"id": "win", "type": "window", "inputs": ["src"], "params": {"keys": ["key"], "type": "tumbling", "size": "100ms",
     "aggregates": [{"name": "count", "fn": "count"}]}},
  {"id": "out", "type": "print", "inputs": ["win"], "params": {"prefix": "ROW "}}]}`

// recLine is a line of the master's stderr and when the harness read it.
type recLine struct {
	at time.Time
	s  string
}

// recovery is one kill and what followed it, as offsets from the kill.
type recovery struct {
	failed    time.Duration // the driver's "job failed; restarting" line
	deployed  time.Duration // the master's "deploying" line of the new attempt
	firstRow  time.Duration // the first output row read after that line
	progress  time.Duration // the first output row of a window past every one output before
	restarted bool
}

// recoveryJob follows one `sluice run --cluster 2` of specRecovery.
type recoveryJob struct {
	cmd   *exec.Cmd
	lines chan recLine
	// From the lines read so far:
	live      int   // TaskManagers registered and not lost
	maxWindow int64 // the latest window_end output
}

func (j *recoveryJob) take(l recLine) (row bool, windowEnd int64) {
	s := l.s
	switch {
	case strings.Contains(s, `msg="TaskManager registered"`):
		j.live++
	case strings.Contains(s, `msg="TaskManager lost"`):
		j.live--
	case strings.HasPrefix(s, "ROW "):
		var r struct {
			WindowEnd *int64 `json:"window_end"`
		}
		// A line cut by another process's write is not counted.
		if json.Unmarshal([]byte(s[4:]), &r) == nil && r.WindowEnd != nil {
			return true, *r.WindowEnd
		}
	}
	return false, 0
}

// until reads lines until f says so or the deadline passes (false).
func (j *recoveryJob) until(deadline time.Time, f func(l recLine, row bool, windowEnd int64) bool) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		select {
		case l, ok := <-j.lines:
			if !ok {
				fail(fmt.Errorf("recovery: the job ended"))
			}
			row, we := j.take(l)
			if row {
				j.maxWindow = max(j.maxWindow, we)
			}
			if f(l, row, we) {
				return true
			}
		case <-timer.C:
			return false
		}
	}
}

// busiest is the TaskManager child that used the most CPU over 300 ms:
// one running tasks, not the idle spare.
func busiest(master int) int {
	for range 10 {
		if p := procs.Busiest(taskManagers(master), 300*time.Millisecond); p != 0 {
			return p
		}
	}
	return 0
}

// runRecovery runs the job on 2 TaskManagers (plus spares), kills one
// that runs tasks n times, and times each recovery.
func runRecovery(spares, n int) []recovery {
	dir, err := os.MkdirTemp("", "sluice-bench-recovery")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	specFile := filepath.Join(dir, "job.json")
	if err := os.WriteFile(specFile, []byte(specRecovery), 0o644); err != nil {
		fail(err)
	}
	cmd := exec.Command(binary(), "run", "--cluster", "2", "--slots", "1", "--spare-taskmanagers", fmt.Sprint(spares),
		"--local-dir", filepath.Join(dir, "local"), "--set", "checkpoint.storage=file://"+filepath.Join(dir, "checkpoints"), specFile)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		fail(err)
	}
	if err := cmd.Start(); err != nil {
		fail(err)
	}
	j := &recoveryJob{cmd: cmd, lines: make(chan recLine, 4096)}
	go func() {
		defer close(j.lines)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			j.lines <- recLine{at: time.Now(), s: sc.Text()}
		}
	}()
	w := watchTaskManagers(cmd.Process.Pid)
	defer func() {
		// Stop the job (SIGTERM: the master stops its TaskManagers), then
		// make sure none is left.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		go func() {
			for range j.lines {
			}
		}()
		_ = cmd.Wait()
		w.finish()
	}()
	want := 2 + spares
	up := func(what string) {
		if !j.until(time.Now().Add(time.Minute), func(recLine, bool, int64) bool { return j.live >= want }) {
			fail(fmt.Errorf("recovery: %s: %d of %d TaskManagers registered after a minute", what, j.live, want))
		}
	}
	up("start")
	if !j.until(time.Now().Add(time.Minute), func(_ recLine, row bool, _ int64) bool { return row }) {
		fail(fmt.Errorf("recovery: no output a minute after the start"))
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	var out []recovery
	for len(out) < n {
		// Let the job run (and complete a checkpoint or more) between kills.
		j.until(time.Now().Add(time.Duration(1500+rng.IntN(1000))*time.Millisecond), func(recLine, bool, int64) bool { return false })
		victim := busiest(cmd.Process.Pid)
		if victim == 0 {
			fail(fmt.Errorf("recovery: no busy TaskManager to kill"))
		}
		killed := time.Now()
		if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
			fail(fmt.Errorf("recovery: kill %d: %w", victim, err))
		}
		var r recovery
		restarted := j.until(killed.Add(10*time.Second), func(l recLine, _ bool, _ int64) bool {
			if strings.Contains(l.s, "job failed; restarting") {
				r.failed, r.restarted = l.at.Sub(killed), true
			}
			return r.restarted
		})
		if !restarted {
			// The busiest process was the idle spare after all: the job
			// ran on. Not a recovery; the next kill tries again.
			fmt.Fprintf(os.Stderr, "bench recovery, %d spare: the kill of pid %d restarted nothing in 10 s; not counted\n", spares, victim)
			up("after a kill that restarted nothing")
			continue
		}
		var deployedAt time.Time
		var before int64
		ok := j.until(killed.Add(time.Minute), func(l recLine, row bool, we int64) bool {
			switch {
			case strings.Contains(l.s, "msg=deploying") && deployedAt.IsZero():
				deployedAt, r.deployed = l.at, l.at.Sub(killed)
				before = j.maxWindow
			case row && !deployedAt.IsZero():
				// The old attempt ended on every TaskManager before the
				// new one was deployed: a row now is the new attempt's.
				if r.firstRow == 0 {
					r.firstRow = l.at.Sub(killed)
				}
				if we > before {
					r.progress = l.at.Sub(killed)
					return true
				}
			}
			return false
		})
		if !ok {
			fail(fmt.Errorf("recovery: kill %d (pid %d): no new output a minute later (failed after %v, deployed after %v)", len(out)+1, victim, r.failed, r.deployed))
		}
		out = append(out, r)
		fmt.Fprintf(os.Stderr, "bench recovery, %d spare: kill %d (pid %d): failed %v, deploying %v, first row %v, past the kill %v\n",
			spares, len(out), victim, r.failed.Round(time.Millisecond), r.deployed.Round(time.Millisecond), r.firstRow.Round(time.Millisecond), r.progress.Round(time.Millisecond))
		up(fmt.Sprintf("after kill %d", len(out)))
	}
	return out
}

func medianMax(ds []time.Duration) (time.Duration, time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return med.Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond)
}

// scenarioRecovery: SIGKILL of a TaskManager that runs tasks, -kills
// times, without and with a spare TaskManager: time from the kill to the
// first output row of the new attempt, and to the first row of a window
// later than any output before the kill.
func scenarioRecovery() {
	for _, spares := range []int{0, 1} {
		rs := runRecovery(spares, *kills)
		col := func(f func(recovery) time.Duration) string {
			var ds []time.Duration
			for _, r := range rs {
				ds = append(ds, f(r))
			}
			med, mx := medianMax(ds)
			return fmt.Sprintf("median %v, max %v", med, mx)
		}
		scen := fmt.Sprintf("recovery from SIGKILL, %d spare", spares)
		what := fmt.Sprintf("%d kills of a TaskManager running tasks, 2 × 1 slot", len(rs))
		add(scen, what+": kill → first output row of the new attempt", "", "", col(func(r recovery) time.Duration { return r.firstRow }), "", "")
		add(scen, what+": kill → first row past the output before the kill", "", "", col(func(r recovery) time.Duration { return r.progress }), "", "")
		add(scen, what+": kill → job failed / → new attempt deploying", "", "", col(func(r recovery) time.Duration { return r.failed })+" / "+col(func(r recovery) time.Duration { return r.deployed }), "", "")
	}
}
