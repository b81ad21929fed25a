package framework

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	goruntime "runtime"
	"strconv"
	"sync"
	"syscall"
)

// ResourceManager gets TaskManagers for a job master: it starts them (they
// register with the master's control address on their own), replaces
// those that are lost, and stops them all at the end. The local one starts
// child processes; the Mesos one launches tasks from resource offers.
type ResourceManager interface {
	// Start brings n TaskManagers up that register with master; lost is
	// called when one of them ends on its own (by its resource id).
	Start(ctx context.Context, master string, n int, lost func(resourceID string, err error)) error
	// Lost tells the resource manager that the master dropped the
	// TaskManager of resourceID (its session ended): it is released if
	// still there, and replaced.
	Lost(resourceID string)
	// Close stops every TaskManager it started.
	Close()
	// Abandon stops managing the TaskManagers without stopping them: the
	// master was superseded and a newer master of the job has adopted
	// them (or will). It replaces nothing after this.
	Abandon()
}

// Local starts TaskManagers as child processes of the master:
// `<Binary> taskmanager --master ADDR --slots S --resource-id local-N`.
type Local struct {
	Binary string // default: this executable
	Slots  int
	// LocalDir is passed on as --local-dir (each TaskManager gets its own
	// subdirectory).
	LocalDir string
	// HADir, when set, is passed as --ha-dir instead of --master: the
	// TaskManagers find the current master there, and find the next one
	// after a master failover.
	HADir string
	// Args are appended to each command line (e.g. --log-level).
	Args []string
	// Procs is each TaskManager's GOMAXPROCS (default: this machine's
	// CPUs divided among the TaskManagers Start asks for; -1: Go's own
	// default). A GOMAXPROCS in the environment wins.
	Procs int
	Log   *slog.Logger

	mu     sync.Mutex
	master string
	procs  map[string]*exec.Cmd
	// released: processes the master dropped (hung, or cut off) and that
	// were replaced; one that comes back is refused by the master and exits.
	released map[string]bool
	ours     map[string]bool // every resource id it started
	next     int
	closed   bool
	lost     func(string, error)
}

func (l *Local) Start(ctx context.Context, master string, n int, lost func(string, error)) error {
	if l.Log == nil {
		l.Log = slog.Default()
	}
	if l.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("local resource manager: %w", err)
		}
		l.Binary = exe
	}
	l.mu.Lock()
	if l.Procs == 0 {
		// The TaskManagers share this machine: a Go runtime each with all
		// its CPUs would put more runnable threads than cores on it, and
		// the kernel's and Go's schedulers take the difference (measured:
		// job (b) of the cluster benchmark, 0.58× → 0.71× of one process
		// on 2 cores with 2 TaskManagers).
		l.Procs = max(1, goruntime.NumCPU()/max(n, 1))
	}
	l.master, l.lost = master, lost
	if l.procs == nil {
		l.procs = map[string]*exec.Cmd{}
	}
	l.mu.Unlock()
	for range n {
		if err := l.startOne(); err != nil {
			return err
		}
	}
	return nil
}

func (l *Local) startOne() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.next++
	id := "local-" + strconv.Itoa(l.next)
	args := []string{"taskmanager", "--master", l.master, "--slots", strconv.Itoa(max(l.Slots, 1)), "--resource-id", id}
	if l.HADir != "" {
		args[1], args[2] = "--ha-dir", l.HADir
	}
	if l.LocalDir != "" {
		args = append(args, "--local-dir", l.LocalDir+"/"+id)
	}
	args = append(args, l.Args...)
	cmd := exec.Command(l.Binary, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && l.Procs > 0 {
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(l.Procs))
	}
	// Its own process group: a Ctrl-C to the master's terminal does not
	// reach it first; the master stops it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("local resource manager: starting %s: %w", id, err)
	}
	l.procs[id] = cmd
	if l.ours == nil {
		l.ours = map[string]bool{}
	}
	l.ours[id] = true
	l.Log.Info("TaskManager process started", "resource", id, "pid", cmd.Process.Pid)
	go func() {
		err := cmd.Wait()
		l.mu.Lock()
		_, mine := l.procs[id]
		delete(l.procs, id)
		released := l.released[id]
		closed, lost := l.closed, l.lost
		l.mu.Unlock()
		if mine && !closed && !released {
			if err == nil {
				err = fmt.Errorf("exited")
			}
			l.Log.Warn("TaskManager process ended", "resource", id, "err", err)
			lost(id, err)
			if err := l.startOne(); err != nil {
				l.Log.Error("replacing a TaskManager", "err", err)
			}
		}
	}()
	return nil
}

// Lost starts a replacement for a TaskManager the master dropped. Its
// process is left alone: if it was only paused it comes back fenced (its
// session is gone, so it cancels its tasks) and the master refuses its new
// registration, so it exits.
func (l *Local) Lost(resourceID string) {
	l.mu.Lock()
	_, ok := l.procs[resourceID]
	if l.released == nil {
		l.released = map[string]bool{}
	}
	// One of ours still running (hung or cut off), or one it never
	// started (adopted from an earlier master): replace it. One of ours
	// that exited was replaced when it did.
	replace := (ok && !l.released[resourceID] || !l.ours[resourceID]) && !l.closed
	l.released[resourceID] = true
	l.mu.Unlock()
	if !replace {
		return
	}
	if err := l.startOne(); err != nil {
		l.Log.Error("replacing a TaskManager", "err", err)
	}
}

// Abandon leaves the TaskManager processes running for the newer master
// (they find it in the HA directory) and starts no more.
func (l *Local) Abandon() {
	l.mu.Lock()
	l.closed = true
	l.procs = nil
	l.mu.Unlock()
}

// Close stops every TaskManager process (SIGTERM; they cancel their tasks;
// one still paused gets it when it resumes).
func (l *Local) Close() {
	l.mu.Lock()
	l.closed = true
	procs := l.procs
	l.procs = nil
	l.mu.Unlock()
	for _, cmd := range procs {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
}
