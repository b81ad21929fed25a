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
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-stream/sluice/internal/mesostest"
	"github.com/sluice-stream/sluice/internal/procs"
)

// The dispatcher's benchmarks (issue #11): `sluice dispatcher` of the
// built binary, driven over its REST API as a user's scripts would.
var (
	dispReps  = flag.Int("dispatcher-reps", 5, "dispatcher: submissions timed one at a time")
	dispJobs  = flag.Int("dispatcher-jobs", 100, "dispatcher: jobs submitted at once for the many-jobs run (0: skip it)")
	dispMArgs = flag.String("dispatcher-master-args", "", "dispatcher: --master-args for every framework master (e.g. \"--heartbeat-timeout 30s\" for many jobs on a small machine)")
	dispModes = flag.String("dispatcher-modes", "local,mesos", "dispatcher: where the masters run: local (child processes), mesos (tasks on mesostest started in the harness)")
)

// dispJobV2 is dispJob's next version for the upgrades: parallelism 2.
var dispJobV2 = strings.Replace(dispJob, `"parallelism": 1`, `"parallelism": 2`, 1)

// dispJob runs until cancelled: a slow sequence into discard, one
// TaskManager of one slot.
const dispJob = `{
  "name": "bench-dispatcher", "parallelism": 1,
  "checkpoint": {"interval": "2s"},
  "nodes": [
    {"id": "src", "type": "sequence", "params": {"rate": 100}},
    {"id": "out", "type": "discard", "inputs": ["src"]}
  ]
}`

type benchDispatcher struct {
	cmd  *exec.Cmd
	url  string
	dir  string
	logs *bytes.Buffer
}

var listenRe = regexp.MustCompile(`msg="dispatcher listening" addr=(\S+)`)

// startBenchDispatcher starts `sluice dispatcher` with extra args on a
// store of its own and waits for its address.
func startBenchDispatcher(args ...string) *benchDispatcher {
	dir, err := os.MkdirTemp("", "sluice-bench-dispatcher")
	if err != nil {
		fail(err)
	}
	a := append([]string{"dispatcher", "--listen", "127.0.0.1:0", "--store", "file://" + filepath.Join(dir, "store"),
		"--work-dir", filepath.Join(dir, "work")}, args...)
	cmd := exec.Command(binary(), a...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		fail(err)
	}
	d := &benchDispatcher{cmd: cmd, dir: dir, logs: &bytes.Buffer{}}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if m := listenRe.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
			if d.logs.Len() < 1<<20 {
				d.logs.WriteString(line + "\n")
			}
		}
	}()
	select {
	case d.url = <-found:
	case <-time.After(30 * time.Second):
		fail(fmt.Errorf("dispatcher: no listening line"))
	}
	return d
}

// stop cancels every job it still has, then stops it (the masters would
// outlive it otherwise).
func (d *benchDispatcher) stop() {
	var jobs []struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := d.call("GET", "/v1/jobs", nil, &jobs); err == nil {
		for _, j := range jobs {
			_ = d.call("DELETE", "/v1/jobs/"+j.ID, nil, nil)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) && d.live() > 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
	_ = d.cmd.Wait()
	// Masters run in process groups of their own, to outlive their
	// dispatcher: whatever a cancel left behind goes now, so that it does
	// not load the next measurement.
	left := 0
	for _, p := range procs.Live() {
		if bytes.Contains(p.Cmdline, []byte(d.dir)) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
			left++
		}
	}
	if left > 0 {
		fmt.Fprintf(os.Stderr, "bench dispatcher: killed %d processes the cancels left\n", left)
	}
	os.RemoveAll(d.dir)
}

// live counts the jobs that have not ended.
func (d *benchDispatcher) live() int {
	var jobs []struct {
		State string `json:"state"`
	}
	if err := d.call("GET", "/v1/jobs", nil, &jobs); err != nil {
		return -1
	}
	n := 0
	for _, j := range jobs {
		switch j.State {
		case "FINISHED", "FAILED", "CANCELED":
		default:
			n++
		}
	}
	return n
}

func (d *benchDispatcher) call(method, path string, body []byte, out any) error {
	req, err := http.NewRequest(method, d.url+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (d *benchDispatcher) submit(spec string) string {
	var r struct {
		ID string `json:"id"`
	}
	if err := d.call("POST", "/v1/jobs", []byte(spec), &r); err != nil {
		fail(err)
	}
	return r.ID
}

func (d *benchDispatcher) state(id string) string {
	var s struct {
		State  string `json:"state"`
		Reason string `json:"reason"`
	}
	if err := d.call("GET", "/v1/jobs/"+id, nil, &s); err != nil {
		return "?"
	}
	if s.State == "FAILED" {
		fail(fmt.Errorf("job %s failed: %s\ndispatcher log:\n%s", id, s.Reason, tail(d.logs.String(), 3000)))
	}
	return s.State
}

// waitRunning waits until every id is RUNNING.
func (d *benchDispatcher) waitRunning(ids ...string) {
	deadline := time.Now().Add(10 * time.Minute)
	left := append([]string(nil), ids...)
	for len(left) > 0 {
		if time.Now().After(deadline) {
			fail(fmt.Errorf("dispatcher: %d jobs not RUNNING after 10 min (first %s: %s)", len(left), left[0], d.state(left[0])))
		}
		var still []string
		for _, id := range left {
			if d.state(id) != "RUNNING" {
				still = append(still, id)
			}
		}
		left = still
		if len(left) > 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// rss is a process's resident and peak resident memory (VmRSS, VmHWM).
func rss(pid int) (cur, peak int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			cur = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return cur, peak
}

// dispatcherSubmitToRunning submits dispJob -dispatcher-reps times, one
// at a time, and times each from the POST to RUNNING (its master started,
// its TaskManager registered, its tasks deployed).
func dispatcherSubmitToRunning(d *benchDispatcher, what string) {
	var took []time.Duration
	for i := 0; i < *dispReps; i++ {
		t0 := time.Now()
		id := d.submit(dispJob)
		d.waitRunning(id)
		took = append(took, time.Since(t0))
		_ = d.call("DELETE", "/v1/jobs/"+id, nil, nil)
	}
	med, mx := medianMax(took)
	fmt.Fprintf(os.Stderr, "bench dispatcher %s: submit → RUNNING %v\n", what, took)
	add("dispatcher", fmt.Sprintf("submit → RUNNING, %s: median %v, max %v of %d", what, med, mx, len(took)), "", "", "", "", "")
}

// dispatcherManyJobs submits -dispatcher-jobs jobs at once and measures
// the time until all are RUNNING, and the dispatcher's CPU and memory.
func dispatcherManyJobs(d *benchDispatcher, what string) {
	n := *dispJobs
	if n <= 0 {
		return
	}
	pid := d.cmd.Process.Pid
	cpu0, _ := procCPU(pid)
	t0 := time.Now()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = d.submit(dispJob)
	}
	submitted := time.Since(t0)
	d.waitRunning(ids...)
	all := time.Since(t0)
	cpu1, _ := procCPU(pid)
	cur, peak := rss(pid)
	// A minute of keeping them: the dispatcher polls every master.
	time.Sleep(30 * time.Second)
	cpu2, _ := procCPU(pid)
	fmt.Fprintf(os.Stderr, "bench dispatcher %s: %d jobs submitted in %v, all RUNNING after %v; dispatcher CPU %v until then, %v over the next 30 s; RSS %d MB (peak %d MB)\n",
		what, n, submitted.Round(time.Millisecond), all.Round(time.Millisecond), (cpu1 - cpu0).Round(time.Millisecond), (cpu2 - cpu1).Round(time.Millisecond), cur>>20, peak>>20)
	add("dispatcher", fmt.Sprintf("%d jobs, %s: all RUNNING after %v (submitted in %v); dispatcher CPU %v, then %.1f%% of a core while they run; RSS %d MB, peak %d MB",
		n, what, all.Round(time.Millisecond), submitted.Round(time.Millisecond), (cpu1-cpu0).Round(time.Millisecond),
		100*(cpu2-cpu1).Seconds()/30, cur>>20, peak>>20), "", "", "", "", "")
}

// dispatcherUpgrades upgrades one running job -dispatcher-reps times,
// alternating parallelism 1 and 2, and reports the downtime the API
// answers (the old version's stop-with-savepoint request → the new
// version's tasks running) and how long the new version's TaskManagers
// took to register first.
func dispatcherUpgrades(d *benchDispatcher, what string) {
	id := d.submit(dispJob)
	d.waitRunning(id)
	var down, standby []time.Duration
	for i := 0; i < *dispReps; i++ {
		spec := dispJobV2
		if i%2 == 1 {
			spec = dispJob
		}
		var r struct {
			DowntimeMs int64 `json:"downtimeMs"`
			StandbyMs  int64 `json:"standbyMs"`
		}
		if err := d.call("POST", "/v1/jobs/"+id+"/upgrade", []byte(spec), &r); err != nil {
			fail(fmt.Errorf("upgrade %d: %w\ndispatcher log:\n%s", i+1, err, tail(d.logs.String(), 3000)))
		}
		down = append(down, time.Duration(r.DowntimeMs)*time.Millisecond)
		standby = append(standby, time.Duration(r.StandbyMs)*time.Millisecond)
		d.waitRunning(id)
		time.Sleep(3 * time.Second) // a checkpoint of the new version's own
	}
	_ = d.call("DELETE", "/v1/jobs/"+id, nil, nil)
	med, mx := medianMax(down)
	smed, smx := medianMax(standby)
	fmt.Fprintf(os.Stderr, "bench dispatcher %s: upgrade downtime %v, standby %v\n", what, down, standby)
	add("dispatcher", fmt.Sprintf("upgrade, %s: output stopped median %v, max %v of %d (new TaskManagers registered first: median %v, max %v)",
		what, med, mx, len(down), smed, smx), "", "", "", "", "")
}

// scenarioDispatcher: submit → RUNNING one job at a time, upgrades, and
// many jobs at once, with local masters and with masters as Mesos tasks.
func scenarioDispatcher() {
	modes := "," + *dispModes + ","
	if strings.Contains(modes, ",local,") {
		d := startBenchDispatcher("--resource-manager", "local")
		dispatcherSubmitToRunning(d, "local masters")
		dispatcherUpgrades(d, "local masters")
		dispatcherManyJobs(d, "local masters")
		d.stop()
	}
	if strings.Contains(modes, ",mesos,") {
		m := dispatcherMesos(*dispJobs)
		defer m.Close()
		d := startBenchDispatcher("--resource-manager", "mesos", "--mesos-master", m.URL(), "--role", "sluice-dispatcher",
			"--master-cpus", "0.25", "--master-mem", "128", "--master-args", *dispMArgs)
		dispatcherSubmitToRunning(d, "masters and TaskManagers as Mesos tasks")
		dispatcherUpgrades(d, "masters and TaskManagers as Mesos tasks")
		dispatcherManyJobs(d, "masters and TaskManagers as Mesos tasks")
		d.stop()
	}
}

// dispatcherMesos starts mesostest with room for jobs jobs of a master
// (0.25 cpu, 128 MB, 2 ports) and a TaskManager (1 cpu, 1024 MB, 1 port)
// each, over four agents.
func dispatcherMesos(jobs int) *mesostest.Master {
	const agents = 4
	per := max(jobs, 4)/agents + 2
	// Twice the ports the jobs need: the masters (2 ports each) may pack
	// onto some agents, and a job whose TaskManager finds no agent with
	// a port left waits for good (a 40-job run stuck at 26 TaskManagers
	// with exactly enough ports in all).
	ranges := freePortRanges(agents * ((6*per + 9) / 10))
	cfgs := make([]mesostest.AgentConfig, agents)
	for i := range cfgs {
		k := len(ranges) / agents
		// A job: master 0.25 cpu, 128 MB and TaskManager 1 cpu, 1024 MB,
		// each with its command executor's 0.1 cpu, 32 MB, as Mesos adds.
		cfgs[i] = mesostest.AgentConfig{Hostname: fmt.Sprintf("127.0.0.%d", i+2), CPUs: 1.6 * float64(per), Mem: 1300 * float64(per),
			Disk: 512 * float64(per), Ports: ranges[i*k : (i+1)*k]}
	}
	m, err := mesostest.Start(context.Background(), mesostest.Config{
		Agents: cfgs, AllocationInterval: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fail(fmt.Errorf("dispatcher: starting mesostest: %w", err))
	}
	return m
}
