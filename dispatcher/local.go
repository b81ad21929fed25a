package dispatcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-stream/sluice/framework"
	"github.com/sluice-stream/sluice/internal/procs"
)

// Local launches framework masters as child processes `sluice framework
// --resource-manager local …` on this host; their TaskManagers are their
// own children. Masters run in their own process group, so a signal to
// the dispatcher's group (Ctrl-C) leaves them running: a dispatcher
// restart adopts them.
type Local struct {
	// Binary is the sluice binary (default: this executable).
	Binary string
	// WorkDir holds each run's spec copy, its master's log and its local
	// state (default: <temp>/sluice-dispatcher).
	WorkDir string
	// Args are extra flags for every master (e.g. --log-level debug).
	Args []string
	// StopGrace is how long Stop waits after SIGTERM before SIGKILL
	// (default 15 s).
	StopGrace time.Duration
	Log       *slog.Logger
}

func (l *Local) binary() (string, error) {
	if l.Binary != "" {
		return l.Binary, nil
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("local launcher: finding the sluice binary: %w", err)
	}
	return p, nil
}

func (l *Local) runDir(s MasterSpec) string {
	wd := l.WorkDir
	if wd == "" {
		wd = filepath.Join(os.TempDir(), "sluice-dispatcher")
	}
	// JobID is a generated id (validID), safe in a path.
	return filepath.Join(wd, s.JobID, "run-"+strconv.Itoa(s.Run))
}

// Launch implements Launcher.
func (l *Local) Launch(ctx context.Context, s MasterSpec) (Master, error) {
	if !validID(s.JobID) {
		return nil, fmt.Errorf("local launcher: job id %q: not a generated id", s.JobID)
	}
	bin, err := l.binary()
	if err != nil {
		return nil, err
	}
	dir := l.runDir(s)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("local launcher: %w", err)
	}
	specPath := filepath.Join(dir, "job.spec")
	if err := os.WriteFile(specPath, s.Spec, 0o600); err != nil {
		return nil, fmt.Errorf("local launcher: writing the job spec: %w", err)
	}
	logPath := filepath.Join(dir, "master.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("local launcher: %w", err)
	}
	defer logf.Close() // the child has its own descriptor
	args := []string{"framework", "--job", specPath, "--resource-manager", "local",
		"--ha-dir", s.HADir, "--http", "127.0.0.1:0", "--local-dir", filepath.Join(dir, "local")}
	for _, kv := range s.Sets {
		args = append(args, "--set", kv)
	}
	if s.Restore != "" {
		args = append(args, "--restore", s.Restore)
	}
	if s.Standby {
		args = append(args, "--standby")
	}
	args = append(args, l.Args...)
	// Not CommandContext: the master outlives a request's context, and
	// the dispatcher itself.
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	cmd.Env = masterEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("local launcher: starting the master: %w", err)
	}
	m := &localMaster{pid: cmd.Process.Pid, log: logPath, grace: l.grace(), done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		code := cmd.ProcessState.ExitCode()
		m.exit = Exit{Known: true, Code: code}
		if code != 0 && code != 130 {
			m.exit.Reason = fmt.Sprintf("master %s ended (%v): %s", m, err, logTail(logPath))
		}
		close(m.done)
	}()
	if l.Log != nil {
		l.Log.Info("framework master started", "job", s.JobID, "run", s.Run, "pid", m.pid, "log", logPath)
	}
	return m, nil
}

func (l *Local) grace() time.Duration {
	if l.StopGrace > 0 {
		return l.StopGrace
	}
	return 15 * time.Second
}

// Find implements Launcher: the newest master published in the run's HA
// directory, if it is on this host and its process still runs with that
// HA directory on its command line (not a reused pid).
func (l *Local) Find(ctx context.Context, s MasterSpec) (Master, error) {
	info, err := Leader(ctx, s.HADir)
	if err != nil || info == nil {
		return nil, err
	}
	host, _ := os.Hostname()
	if info.PID <= 0 || (info.Host != "" && info.Host != host) {
		return nil, nil
	}
	if !processRuns(info.PID, s.HADir) {
		return nil, nil
	}
	m := &localMaster{pid: info.PID, adopted: true, log: filepath.Join(l.runDir(s), "master.log"), grace: l.grace(), done: make(chan struct{}),
		haDir: s.HADir, epoch: info.Epoch}
	go m.watch()
	return m, nil
}

// processRuns says whether pid is a live `sluice framework` of haDir.
func processRuns(pid int, haDir string) bool {
	if exited(pid) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		// No /proc (not Linux): the pid's liveness is all we know.
		return !errors.Is(err, os.ErrNotExist) || !procMounted()
	}
	args := strings.Split(string(cmdline), "\x00")
	return len(args) > 1 && args[1] == "framework" && containsArg(args, haDir)
}

// exited says whether pid is gone, or has exited and waits to be reaped:
// an adopted master's parent is whatever adopted the orphan, which may
// never reap it (pid 1 of a container).
func exited(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return true
	}
	return procMounted() && procs.Exited(pid)
}

func procMounted() bool {
	_, err := os.Stat("/proc/self/cmdline")
	return err == nil
}

func containsArg(args []string, v string) bool {
	for _, a := range args {
		if a == v {
			return true
		}
	}
	return false
}

// localMaster is a master process: a child (Wait reaps it) or adopted
// (polled).
type localMaster struct {
	pid     int
	adopted bool
	log     string
	grace   time.Duration
	done    chan struct{}
	exit    Exit // set before done closes
	// haDir and epoch of an adopted master: where it records how it ended.
	haDir string
	epoch int64
}

func (m *localMaster) String() string { return "pid " + strconv.Itoa(m.pid) }

// watch polls an adopted master until its process is gone: it is not our
// child, so neither its end nor its exit code reaches us otherwise.
func (m *localMaster) watch() {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for range t.C {
		if exited(m.pid) {
			m.exit = Exit{Code: -1, Reason: fmt.Sprintf("adopted master %s ended (exit code unknown): %s", m, logTail(m.log))}
			if r := m.recorded(); r != nil {
				m.exit = Exit{Known: true, Code: r.Code, Reason: r.Reason}
			}
			close(m.done)
			return
		}
	}
}

// recorded is the end the adopted master recorded in its HA directory
// (framework.Master.RecordEnd), nil when none (it was killed).
func (m *localMaster) recorded() *framework.Result {
	ha, err := framework.OpenHA(m.haDir)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, _ := ha.Result(ctx, m.epoch)
	return r
}

func (m *localMaster) Wait(ctx context.Context) Exit {
	select {
	case <-m.done:
		return m.exit
	case <-ctx.Done():
		return Exit{Code: -1, Reason: ctx.Err().Error()}
	}
}

func (m *localMaster) Stop(ctx context.Context) error {
	select {
	case <-m.done:
		return nil
	default:
	}
	if err := syscall.Kill(m.pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stopping master %s: %w", m, err)
	}
	t := time.NewTimer(m.grace)
	defer t.Stop()
	select {
	case <-m.done:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	if err := syscall.Kill(m.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing master %s: %w", m, err)
	}
	return nil
}

// masterEnv is the dispatcher's environment without its SLUICE_…
// variables: a master is configured by its flags alone (the dispatcher's
// SLUICE_RESTORE or SLUICE_HTTP must not reach every master), while the
// rest (HADOOP_USER_NAME, a Kafka password variable) passes on.
func masterEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "SLUICE_") {
			out = append(out, kv)
		}
	}
	return out
}

// logTail is the last lines of a master's log, for a FAILED job's reason.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	s := string(bytes.TrimSpace([]byte(strings.Join(lines, " | "))))
	if len(s) > 1000 {
		s = "…" + s[len(s)-1000:]
	}
	return s
}
