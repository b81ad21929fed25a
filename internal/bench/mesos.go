package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-stream/sluice/internal/mesostest"
)

// The Mesos benchmarks (issue #10): `sluice framework --resource-manager
// mesos` against mesostest started in this process, whose agents run the
// TaskManager tasks as real processes of the built binary.
var (
	mesosTMs   = flag.Int("mesos-taskmanagers", 10, "mesos: TaskManagers for the start → all registered measurement (0: skip it)")
	mesosModes = flag.String("mesos-recovery", "kill,freeze", "mesos: which losses to recover from: kill (KillAgent), freeze (SIGSTOP and PartitionAgent)")
	mesosKills = flag.Int("mesos-kills", 10, "mesos: losses per recovery run (runs without a spare and with one, per -mesos-recovery mode and ping timeout)")
	mesosLog   = flag.String("mesos-log", "", "mesos: append the framework masters' stderr to this file (each line after the harness's read time)")
	mesosArgs  = flag.String("mesos-framework-args", "", "mesos: more arguments for `sluice framework`, space-separated (e.g. \"--heartbeat-interval 500ms --heartbeat-timeout 2s\")")
	mesosPing  = flag.String("mesos-ping-timeouts", "2s", "mesos: the master's AgentPingTimeout (agent_ping_timeout × max_agent_ping_timeouts) for the recovery runs; comma-separated: a set of runs each")
)

const mesosRole = "sluice-bench"

// mesosMaster starts mesostest with n agents of one TaskManager each
// (1 cpu, 1024 MB: the framework's default profile), each with its own
// port range, all on this machine.
func mesosMaster(n int, ping time.Duration) *mesostest.Master {
	ranges := freePortRanges(n)
	agents := make([]mesostest.AgentConfig, n)
	for i := range agents {
		agents[i] = mesostest.AgentConfig{CPUs: 1, Mem: 1024, Disk: 4096, Ports: ranges[i : i+1]}
	}
	m, err := mesostest.Start(context.Background(), mesostest.Config{
		Agents:           agents,
		AgentPingTimeout: ping,
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fail(fmt.Errorf("mesos: starting mesostest: %w", err))
	}
	return m
}

// freePortRanges: n ranges of 10 ports that can be bound now, below the
// ephemeral range (32768 on Linux) and apart from mesostest's default
// ranges (31000 up), which the tests of other sessions on a shared
// machine use: a TaskManager whose data port is taken exits at once, and
// the launch hold after such failures would be measured instead.
func freePortRanges(n int) []mesostest.Range {
	var out []mesostest.Range
	for p := 20000 + 10*rand.IntN(500); len(out) < n; p += 10 {
		if p+10 > 31000 {
			p = 20000
		}
		ok := true
		for q := p; q < p+10 && ok; q++ {
			l, err := net.Listen("tcp", ":"+strconv.Itoa(q))
			if err != nil {
				ok = false
				continue
			}
			l.Close()
		}
		if ok {
			out = append(out, mesostest.Range{Begin: uint64(p), End: uint64(p + 9)})
		}
	}
	return out
}

// mesosEvent is a line of the framework master's stderr or an output row
// from a TaskManager's sandbox stdout, and when the harness read it.
type mesosEvent struct {
	at        time.Time
	line      string // a master's line ("" for a row)
	row       bool
	windowEnd int64
	agent     string // the row's TaskManager's agent
}

// mesosJob follows one `sluice framework` process: its stderr, and the
// stdout files of its tasks' sandboxes (where the print sink's rows go:
// each TaskManager's stdout is its sandbox's stdout file), polled.
type mesosJob struct {
	m     *mesostest.Master
	cmd   *exec.Cmd
	start time.Time // just before the process started
	lines chan recLine
	files map[string]*tailFile
	// From what was read so far:
	live      int
	maxWindow int64
	lastRow   map[string]time.Time // per agent
}

type tailFile struct {
	agent string
	off   int64
	rest  []byte
}

func startMesosJob(m *mesostest.Master, dir string, taskManagers, spares int, sets ...string) *mesosJob {
	specFile := filepath.Join(dir, "job.json")
	if err := os.WriteFile(specFile, []byte(specRecovery), 0o644); err != nil {
		fail(err)
	}
	args := []string{"framework", "--job", specFile, "--resource-manager", "mesos", "--mesos-master", m.URL(), "--role", mesosRole,
		"--taskmanagers", strconv.Itoa(taskManagers), "--slots", "1", "--spare-taskmanagers", strconv.Itoa(spares),
		"--local-dir", filepath.Join(dir, "local"), "--set", "checkpoint.storage=file://" + filepath.Join(dir, "checkpoints")}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	args = append(args, strings.Fields(*mesosArgs)...)
	cmd := exec.Command(binary(), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		fail(err)
	}
	j := &mesosJob{m: m, cmd: cmd, lines: make(chan recLine, 4096), files: map[string]*tailFile{}, lastRow: map[string]time.Time{}}
	j.start = time.Now()
	if err := cmd.Start(); err != nil {
		fail(err)
	}
	go func() {
		defer close(j.lines)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var logf *os.File
		if *mesosLog != "" {
			if logf, err = os.OpenFile(*mesosLog, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				defer logf.Close()
			}
		}
		for sc.Scan() {
			l := recLine{at: time.Now(), s: sc.Text()}
			if logf != nil {
				fmt.Fprintf(logf, "%s %s\n", l.at.Format("15:04:05.000"), l.s)
			}
			j.lines <- l
		}
	}()
	return j
}

// fail stops the framework process first: left behind, it would try to
// subscribe to a master that is gone for good.
func (j *mesosJob) fail(err error) {
	_ = j.cmd.Process.Kill()
	fail(err)
}

// stop ends the framework (SIGTERM: it kills its tasks and tears the
// framework down) and waits, bounded, until none of its tasks runs.
func (j *mesosJob) stop() {
	_ = j.cmd.Process.Signal(syscall.SIGTERM)
	go func() {
		for range j.lines {
		}
	}()
	done := make(chan struct{})
	go func() { _ = j.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "bench mesos: the framework did not stop 30 s after SIGTERM; killing it")
		_ = j.cmd.Process.Kill()
		<-done
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		running := 0
		for _, t := range j.m.Tasks() {
			if t.Running {
				running++
			}
		}
		if running == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "bench mesos: tasks still running 30 s after the framework stopped")
}

// poll reads what the tasks' stdout files gained since the last poll.
func (j *mesosJob) poll(emit func(mesosEvent)) {
	now := time.Now()
	for _, t := range j.m.Tasks() {
		if t.Sandbox == "" {
			continue
		}
		p := filepath.Join(t.Sandbox, "stdout")
		f := j.files[p]
		if f == nil {
			f = &tailFile{agent: t.AgentID}
			j.files[p] = f
		}
		fh, err := os.Open(p)
		if err != nil {
			continue // not created yet
		}
		b, _ := io.ReadAll(io.NewSectionReader(fh, f.off, 1<<40))
		fh.Close()
		f.off += int64(len(b))
		b = append(f.rest, b...)
		i := bytes.LastIndexByte(b, '\n')
		if i < 0 {
			f.rest = b
			continue
		}
		f.rest = append([]byte(nil), b[i+1:]...)
		for _, line := range strings.Split(string(b[:i]), "\n") {
			if !strings.HasPrefix(line, "ROW ") {
				continue
			}
			var r struct {
				WindowEnd *int64 `json:"window_end"`
			}
			if json.Unmarshal([]byte(line[4:]), &r) != nil || r.WindowEnd == nil {
				continue
			}
			j.maxWindow = max(j.maxWindow, *r.WindowEnd)
			j.lastRow[f.agent] = now
			emit(mesosEvent{at: now, row: true, windowEnd: *r.WindowEnd, agent: f.agent})
		}
	}
}

// until feeds the master's lines and the rows to f, in the order read,
// until f says so (true) or the deadline passes (false). The files are
// polled every 10 ms (f may poll at once itself, after a line that must
// divide the rows before it from those after).
func (j *mesosJob) until(deadline time.Time, f func(e mesosEvent) (done bool)) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	done := false
	emit := func(e mesosEvent) {
		if !done && f(e) {
			done = true
		}
	}
	for !done {
		select {
		case l, ok := <-j.lines:
			if !ok {
				j.fail(fmt.Errorf("mesos: the framework process ended"))
			}
			switch {
			case strings.Contains(l.s, `msg="TaskManager registered"`):
				j.live++
			case strings.Contains(l.s, `msg="TaskManager lost"`):
				j.live--
			}
			emit(mesosEvent{at: l.at, line: l.s})
		case <-tick.C:
			j.poll(emit)
		case <-timer.C:
			return false
		}
	}
	return true
}

// runMesosStart: `sluice framework` start → every TaskManager registered.
type mesosStart struct {
	subscribed, launched, registered time.Duration
}

func runMesosStart(m *mesostest.Master, tms int) mesosStart {
	dir, err := os.MkdirTemp("", "sluice-bench-mesos")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	j := startMesosJob(m, dir, tms, 0)
	defer j.stop()
	var r mesosStart
	ok := j.until(time.Now().Add(2*time.Minute), func(e mesosEvent) bool {
		switch {
		case strings.Contains(e.line, `msg="subscribed to Mesos"`) && r.subscribed == 0:
			r.subscribed = e.at.Sub(j.start)
		case strings.Contains(e.line, `msg="launching TaskManagers"`) && r.launched == 0:
			r.launched = e.at.Sub(j.start)
		}
		if j.live >= tms {
			r.registered = e.at.Sub(j.start)
			return true
		}
		return false
	})
	if !ok {
		j.fail(fmt.Errorf("mesos: %d of %d TaskManagers registered 2 minutes after the start", j.live, tms))
	}
	return r
}

// runMesosRecovery runs the recovery job on 2 TaskManagers (plus spares)
// on Mesos, kills the agent of a TaskManager that writes output n times,
// and times each recovery as the local recovery scenario does.
//
// freeze: instead of KillAgent, the TaskManager's processes are stopped
// (SIGSTOP) and its agent partitioned: a machine that hangs or drops off
// the network, whose connections are not closed, so the job master learns
// of the loss from its heartbeat timeout and Mesos from the agent ping
// timeout.
func runMesosRecovery(m *mesostest.Master, spares, n int, freeze bool, tag string) []recovery {
	dir, err := os.MkdirTemp("", "sluice-bench-mesos")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	j := startMesosJob(m, dir, 2, spares)
	defer j.stop()
	want := 2 + spares
	up := func(what string) {
		if !j.until(time.Now().Add(2*time.Minute), func(mesosEvent) bool { return j.live >= want }) {
			j.fail(fmt.Errorf("mesos recovery: %s: %d of %d TaskManagers registered after 2 minutes", what, j.live, want))
		}
	}
	up("start")
	if !j.until(time.Now().Add(time.Minute), func(e mesosEvent) bool { return e.row }) {
		j.fail(fmt.Errorf("mesos recovery: no output a minute after the start"))
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 10))
	var out []recovery
	for len(out) < n {
		j.until(time.Now().Add(time.Duration(1500+rng.IntN(1000))*time.Millisecond), func(mesosEvent) bool { return false })
		// The victim: the agent of a running TaskManager that wrote rows
		// in the last 300 ms (it runs a sink subtask; the spare writes
		// none).
		victim, pid, latest := "", 0, time.Time{}
		for _, t := range m.Tasks() {
			if at, ok := j.lastRow[t.AgentID]; ok && t.Running && t.State == "TASK_RUNNING" && time.Since(at) < 300*time.Millisecond && at.After(latest) {
				victim, pid, latest = t.AgentID, t.PID, at
			}
		}
		if victim == "" {
			j.fail(fmt.Errorf("mesos recovery: no TaskManager wrote output in the last 300 ms"))
		}
		killed := time.Now()
		if freeze {
			// The task's process group: the TaskManager is its leader.
			if err := syscall.Kill(-pid, syscall.SIGSTOP); err != nil {
				j.fail(fmt.Errorf("mesos recovery: SIGSTOP %d: %w", pid, err))
			}
			if err := m.PartitionAgent(victim); err != nil {
				j.fail(fmt.Errorf("mesos recovery: %w", err))
			}
			// Mesostest ends the group when it closes; SIGKILL ends a
			// stopped process too.
			defer syscall.Kill(-pid, syscall.SIGKILL)
		} else if err := m.KillAgent(victim); err != nil {
			j.fail(fmt.Errorf("mesos recovery: %w", err))
		}
		delete(j.lastRow, victim)
		var r recovery
		var deployedAt time.Time
		var before int64
		ok := j.until(killed.Add(2*time.Minute), func(e mesosEvent) bool {
			switch {
			case strings.Contains(e.line, "job failed; restarting") && !r.restarted:
				r.failed, r.restarted = e.at.Sub(killed), true
			case strings.Contains(e.line, "msg=deploying") && r.restarted && deployedAt.IsZero():
				// Rows of the old attempt read after this line were
				// written before it: drain them first.
				deployedAt, r.deployed = e.at, e.at.Sub(killed)
				j.poll(func(mesosEvent) {})
				before = j.maxWindow
			case e.row && !deployedAt.IsZero():
				if r.firstRow == 0 {
					r.firstRow = e.at.Sub(killed)
				}
				if e.windowEnd > before {
					r.progress = e.at.Sub(killed)
					return true
				}
			}
			return false
		})
		if !ok {
			j.fail(fmt.Errorf("mesos recovery: kill %d (agent %s): no new output 2 minutes later (failed after %v, deployed after %v)", len(out)+1, victim, r.failed, r.deployed))
		}
		out = append(out, r)
		fmt.Fprintf(os.Stderr, "bench mesos recovery, %s: kill %d (agent %s): failed %v, deploying %v, first row %v, past the kill %v\n",
			tag, len(out), victim, r.failed.Round(time.Millisecond), r.deployed.Round(time.Millisecond), r.firstRow.Round(time.Millisecond), r.progress.Round(time.Millisecond))
		up(fmt.Sprintf("after kill %d", len(out)))
	}
	return out
}

// scenarioMesos: start → all registered with -mesos-taskmanagers, then
// -mesos-kills losses of a TaskManager without and with a spare, for each
// -mesos-recovery mode and -mesos-ping-timeouts value.
func scenarioMesos() {
	col := func(ds []time.Duration) string {
		med, mx := medianMax(ds)
		return fmt.Sprintf("median %v, max %v", med, mx)
	}
	if *mesosTMs > 0 {
		mesosStartTimes(col)
	}
	modes := "," + *mesosModes + ","
	for _, ps := range strings.Split(*mesosPing, ",") {
		ping, err := time.ParseDuration(strings.TrimSpace(ps))
		if err != nil {
			fail(fmt.Errorf("-mesos-ping-timeouts %q: %w", ps, err))
		}
		for _, run := range []struct {
			spares int
			freeze bool
		}{{0, false}, {1, false}, {0, true}, {1, true}} {
			if !strings.Contains(modes, map[bool]string{false: ",kill,", true: ",freeze,"}[run.freeze]) {
				continue
			}
			spares := run.spares
			// Each kill takes an agent for good: one per kill, the job's,
			// and a margin.
			m := mesosMaster(2+spares+*mesosKills+3, ping)
			tag := fmt.Sprintf("%d spare, agent ping timeout %v", spares, ping)
			how := "agent kills (KillAgent)"
			if run.freeze {
				tag = "SIGSTOP + partition, " + tag
				how = "SIGSTOP of its processes and PartitionAgent"
			}
			if *mesosArgs != "" {
				tag += ", " + *mesosArgs
			}
			rs := runMesosRecovery(m, spares, *mesosKills, run.freeze, tag)
			m.Close()
			c := func(f func(recovery) time.Duration) string {
				var ds []time.Duration
				for _, r := range rs {
					ds = append(ds, f(r))
				}
				return col(ds)
			}
			scen := "Mesos recovery, " + tag
			what := fmt.Sprintf("%d × %s of a TaskManager running tasks, 2 × 1 slot", len(rs), how)
			add(scen, what+": kill → first output row of the new attempt", "", "", c(func(r recovery) time.Duration { return r.firstRow }), "", "")
			add(scen, what+": kill → first row past the output before the kill", "", "", c(func(r recovery) time.Duration { return r.progress }), "", "")
			add(scen, what+": kill → job failed / → new attempt deploying", "", "", c(func(r recovery) time.Duration { return r.failed })+" / "+c(func(r recovery) time.Duration { return r.deployed }), "", "")
		}
	}
}

// mesosStartTimes: `sluice framework` start → all registered, -reps times.
func mesosStartTimes(col func([]time.Duration) string) {
	// One agent per TaskManager and two more.
	m := mesosMaster(*mesosTMs+2, 0)
	defer m.Close()
	var starts []mesosStart
	for i := 0; i < *reps; i++ {
		r := runMesosStart(m, *mesosTMs)
		fmt.Fprintf(os.Stderr, "bench mesos start, %d TaskManagers: subscribed %v, first launch %v, all registered %v\n",
			*mesosTMs, r.subscribed.Round(time.Millisecond), r.launched.Round(time.Millisecond), r.registered.Round(time.Millisecond))
		starts = append(starts, r)
	}
	var sub, launch, reg []time.Duration
	for _, s := range starts {
		sub, launch, reg = append(sub, s.subscribed), append(launch, s.launched), append(reg, s.registered)
	}
	scen := fmt.Sprintf("Mesos start, %d TaskManagers", *mesosTMs)
	add(scen, fmt.Sprintf("%d runs: `sluice framework` start → all registered", len(starts)), "", "", col(reg), "", "")
	add(scen, "start → subscribed / → first ACCEPT (launching)", "", "", col(sub)+" / "+col(launch), "", "")
}
