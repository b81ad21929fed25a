package mesos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	mesos "github.com/mesos/mesos-go/api/v1/lib"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"

	"github.com/sluice-stream/sluice/framework"
)

var _ framework.ResourceManager = (*ResourceManager)(nil)

// Config configures the Mesos resource manager.
type Config struct {
	Client *Client
	Role   string
	// Name is the framework's name (default "sluice").
	Name string
	// User the tasks run as (default: the current user).
	User            string
	Principal       string        // FrameworkInfo.principal (the client authenticates)
	FailoverTimeout time.Duration // default 7 days
	// UnreachableTimeout: how long a TaskManager on an unreachable agent is
	// waited for before it is replaced (default 2 minutes).
	UnreachableTimeout time.Duration
	// RefuseSeconds is the decline filter (default 30 s; a REVIVE clears
	// it when more TaskManagers are needed).
	RefuseSeconds time.Duration

	Profile     Profile // default 1 cpu, 1024 MB, 256 MB disk, 1 port
	Constraints []Constraint
	Slots       int
	// BinaryURI is where agents fetch the sluice binary (default: this
	// executable as a file:// URI, for agents that share the filesystem).
	BinaryURI string
	// HADir: TaskManagers find the master there (--ha-dir) instead of at
	// the address Start gets.
	HADir string
	// Args are appended to each TaskManager's command line.
	Args []string
	// IDs keeps the framework ID (nil: kept in memory only).
	IDs IDStore

	// Registration backoff: between subscription attempts, doubling from
	// BackoffMin to BackoffMax (defaults 1 s, 60 s); reset after a
	// subscription that lasted StableAfter (default 30 s).
	BackoffMin, BackoffMax, StableAfter time.Duration
	// SubscribeTimeout bounds the wait for SUBSCRIBED (default 30 s).
	SubscribeTimeout time.Duration
	// RetakeAfter: after another scheduler subscribed with the framework's
	// ID, subscribe again after this long (default 30 s; far longer than
	// the job master takes to learn it was superseded).
	RetakeAfter time.Duration
	// LaunchHold: after a task failed to start (or ended within 10 s of
	// starting) launches wait this long, doubling with each such failure
	// up to a minute (default 1 s).
	LaunchHold time.Duration
	// Tick is how often timers are checked (unreachable agents, launch
	// holds, quota; default 1 s).
	Tick time.Duration

	// OnStatus, when set, gets Status each time it changes (checked every
	// Tick), e.g. for the job's status or its log.
	OnStatus func(string)

	Log *slog.Logger
}

// ResourceManager runs a job master's TaskManagers as Mesos command tasks;
// it implements framework.ResourceManager. The resource id of a
// TaskManager is its Mesos task id.
type ResourceManager struct {
	cfg Config
	log *slog.Logger

	mu          sync.Mutex
	master      string
	lost        func(string, error)
	want        int // TaskManagers to keep
	tasks       map[string]*task
	released    map[string]bool // ids the master dropped that were never ours to track: kill on sight
	ended       map[string]bool // tasks it tracked that ended (and were replaced then)
	revive      bool            // more are needed since the last REVIVE: clear the decline filters
	frameworkID string
	subscribed  bool
	suppressed  bool
	failedOver  bool // another scheduler took the framework over, and it was not taken back since
	// superseded, when set (SetSuperseded), says whether the job master
	// lost its leadership (HA fencing).
	superseded   func() bool
	lastErr      error
	unfit        map[string]int
	quota        string // why offers stay away, from the role's quota
	quotaAt      time.Time
	holdUntil    time.Time // no launches before (after launches failed)
	failStreak   int
	lastQuickEnd time.Time
	seq          int
	prefix       string
	started      bool
	closed       bool
	abandoned    bool // a newer master owns the tasks: send nothing more

	session *session // the current subscription, nil between them

	statusMu   sync.Mutex
	lastStatus string

	cancel context.CancelFunc
	done   chan struct{}
}

type task struct {
	id, agent    string
	place        Placement
	state        mesos.TaskState
	everRunning  bool
	killAsked    bool      // we killed it: its end is no loss
	replaced     bool      // not counted any more: a replacement runs (kill it if it shows up)
	unreachable  time.Time // since when its agent is unreachable
	launchedAt   time.Time
	runningSince time.Time
}

func (t *task) active() bool { return !t.replaced && !t.killAsked }

// DefaultUser is the user tasks run as when none is configured: the
// process's own, as Mesos' schedulers default it (root if unknown).
func DefaultUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "root"
}

// New makes a resource manager; nothing happens before Start.
func New(cfg Config) (*ResourceManager, error) {
	if cfg.Client == nil {
		return nil, errors.New("mesos resource manager: no client")
	}
	if cfg.Role == "" {
		return nil, errors.New("mesos resource manager: no role (--role)")
	}
	if cfg.Name == "" {
		cfg.Name = "sluice"
	}
	if cfg.User == "" {
		cfg.User = DefaultUser()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.FailoverTimeout, 7*24*time.Hour)
	def(&cfg.UnreachableTimeout, 2*time.Minute)
	def(&cfg.RefuseSeconds, 30*time.Second)
	def(&cfg.BackoffMin, time.Second)
	def(&cfg.BackoffMax, time.Minute)
	def(&cfg.StableAfter, 30*time.Second)
	def(&cfg.SubscribeTimeout, 30*time.Second)
	def(&cfg.RetakeAfter, 30*time.Second)
	def(&cfg.LaunchHold, time.Second)
	def(&cfg.Tick, time.Second)
	if cfg.Profile == (Profile{}) {
		cfg.Profile = Profile{CPUs: 1, MemMB: 1024, DiskMB: 256, Ports: 1}
	}
	if cfg.Profile.Ports < 1 {
		cfg.Profile.Ports = 1 // the data port
	}
	if cfg.BinaryURI == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("mesos resource manager: no --binary-uri and %w", err)
		}
		if abs, err := filepath.Abs(exe); err == nil {
			exe = abs
		}
		cfg.BinaryURI = (&url.URL{Scheme: "file", Path: exe}).String()
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &ResourceManager{cfg: cfg, log: cfg.Log.With("role", cfg.Role), tasks: map[string]*task{}, released: map[string]bool{}, ended: map[string]bool{},
		prefix: "sluice-tm-" + strconv.FormatInt(time.Now().UnixNano(), 36)}, nil
}

// Start subscribes (once) and asks for n more TaskManagers that register
// with master. It does not wait for offers: they may take long (quota),
// and the job master waits for registrations anyway.
func (r *ResourceManager) Start(ctx context.Context, master string, n int, lost func(string, error)) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return errors.New("mesos resource manager: closed")
	}
	r.master, r.lost = master, lost
	r.want += n
	first := !r.started
	r.started = true
	r.mu.Unlock()
	if !first {
		r.poke()
		return nil
	}
	if r.cfg.IDs != nil {
		id, err := r.cfg.IDs.Load(ctx)
		if err != nil {
			return fmt.Errorf("mesos resource manager: %w", err)
		}
		r.mu.Lock()
		r.frameworkID = id
		r.mu.Unlock()
		if id != "" {
			r.log.Info("subscribing with the framework ID kept in the HA directory", "framework", id)
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		cancel()
		return errors.New("mesos resource manager: closed")
	}
	r.cancel, r.done = cancel, make(chan struct{})
	go r.run(runCtx)
	return nil
}

// poke makes the running session re-check what it needs now.
func (r *ResourceManager) poke() {
	r.mu.Lock()
	s := r.session
	r.mu.Unlock()
	if s != nil {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// FrameworkID is the framework's id on Mesos ("" before the first
// subscription).
func (r *ResourceManager) FrameworkID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.frameworkID
}

// Tasks are the ids of the TaskManager tasks counted now.
func (r *ResourceManager) Tasks() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id, t := range r.tasks {
		if t.active() {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Status says what the resource manager is doing, for the job's status:
// connecting, waiting for offers (and why), or running.
func (r *ResourceManager) Status() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failedOver {
		return fmt.Sprintf("taken over: another scheduler subscribed with framework ID %s (a newer master of the job?); subscribing again after %s unless this master is superseded", r.frameworkID, r.cfg.RetakeAfter)
	}
	if !r.subscribed {
		s := "connecting to the Mesos master " + r.cfg.Client.Leader()
		if r.lastErr != nil {
			s += ": " + r.lastErr.Error()
		}
		return s
	}
	active, running := 0, 0
	for _, t := range r.tasks {
		if t.active() {
			active++
			if t.state == mesos.TASK_RUNNING {
				running++
			}
		}
	}
	if active < r.want {
		s := fmt.Sprintf("waiting for offers: %d of %d TaskManagers launched (role %s", active, r.want, r.cfg.Role)
		if len(r.unfit) > 0 {
			var why []string
			for k, v := range r.unfit {
				why = append(why, fmt.Sprintf("%d short of %s", v, k))
			}
			sort.Strings(why)
			s += "; declined offers: " + strings.Join(why, ", ")
		}
		s += ")"
		if r.quota != "" {
			s += "; " + r.quota
		}
		return s
	}
	return fmt.Sprintf("%d of %d TaskManagers running on Mesos (framework %s, role %s)", running, r.want, r.frameworkID, r.cfg.Role)
}

// reportStatus hands a changed Status to OnStatus.
func (r *ResourceManager) reportStatus() {
	if r.cfg.OnStatus == nil {
		return
	}
	st := r.Status()
	r.statusMu.Lock()
	defer r.statusMu.Unlock()
	if st != r.lastStatus {
		r.lastStatus = st
		r.cfg.OnStatus(st)
	}
}

// Lost: the master dropped the TaskManager of resourceID. Its task is
// killed (it may be hung or cut off) and replaced.
func (r *ResourceManager) Lost(resourceID string) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	t := r.tasks[resourceID]
	var kill *task
	switch {
	case t != nil && t.active():
		t.replaced = true
		kill = t
	case t == nil && r.ended[resourceID]:
		// Its task ended and was replaced then (the master hears of it
		// after the lost callback, or by its own heartbeat timeout).
	case t == nil:
		// Not tracked (an earlier master's task reconciliation has not
		// reported): replace it, and kill it if it shows up.
		r.released[resourceID] = true
		r.want++
		r.revive = true
	}
	if kill != nil {
		r.revive = true
	}
	s := r.session
	r.mu.Unlock()
	r.log.Info("the master dropped a TaskManager: replacing it", "task", resourceID)
	if kill != nil && s != nil {
		s.kill(kill.id, kill.agent)
	}
	r.poke()
}

// Abandon stops the scheduler loop and leaves everything else as it is:
// a newer master of the job subscribes with the same framework ID (kept in
// the HA directory) and owns the tasks. No KILL, no TEARDOWN, and the ID
// stays where the newer master finds it.
func (r *ResourceManager) Abandon() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed, r.abandoned = true, true
	cancel, done := r.cancel, r.done
	r.mu.Unlock()
	r.log.Info("abandoning the TaskManager tasks to a newer master of the job", "framework", r.FrameworkID())
	if cancel != nil {
		cancel()
		<-done
	}
}

// Close kills the TaskManager tasks and tears the framework down (the job
// is over), then forgets the framework ID. When another scheduler took
// the framework over (a newer master of the job), it abandons instead:
// the tasks and the framework are that master's now.
func (r *ResourceManager) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	if r.failedOver {
		r.mu.Unlock()
		r.log.Warn("not tearing the framework down: another scheduler took it over", "err", ErrFrameworkFailedOver)
		r.Abandon()
		return
	}
	r.closed = true
	s := r.session
	var ids [][2]string
	for _, t := range r.tasks {
		ids = append(ids, [2]string{t.id, t.agent})
		t.killAsked = true
	}
	fid := r.frameworkID
	cancel, done := r.cancel, r.done
	r.mu.Unlock()
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	if s != nil {
		for _, id := range ids {
			s.kill(id[0], id[1])
		}
	}
	if fid != "" {
		var err error
		if s != nil {
			err = r.cfg.Client.Call(ctx, TeardownCall(fid))
		} else {
			// Not subscribed now (the master was away): TEARDOWN needs a
			// current stream id, so subscribe once for it. The loop stops
			// first so that it does not subscribe at the same time.
			if cancel != nil {
				cancel()
				<-done
				cancel = nil
			}
			err = r.teardownOnce(ctx, fid)
		}
		if err != nil {
			r.log.Warn("tearing the framework down: Mesos keeps it until its failover timeout", "framework", fid, "err", err)
		} else {
			r.log.Info("framework torn down", "framework", fid)
		}
		if r.cfg.IDs != nil {
			if err := r.cfg.IDs.Clear(ctx); err != nil {
				r.log.Warn("forgetting the framework ID", "err", err)
			}
		}
	}
	if cancel != nil {
		cancel()
		<-done
	}
}

// teardownOnce subscribes as framework fid and tears it down.
func (r *ResourceManager) teardownOnce(ctx context.Context, fid string) error {
	opts := FrameworkOptions{Name: r.cfg.Name, User: r.cfg.User, Role: r.cfg.Role, Principal: r.cfg.Principal, FailoverTimeout: r.cfg.FailoverTimeout}
	stream, err := r.cfg.Client.Subscribe(ctx, SubscribeCall(opts, fid, true))
	if err != nil {
		return err
	}
	defer stream.Close()
	e, err := stream.Next() // ctx ends the request, and with it this read
	if err != nil {
		return err
	}
	if e.Type != scheduler.Event_SUBSCRIBED {
		if e.Error != nil && strings.Contains(e.Error.Message, errRemoved) {
			return nil // gone already
		}
		return fmt.Errorf("subscribing to tear down: the master sent %s", e.Type)
	}
	return r.cfg.Client.Call(ctx, TeardownCall(fid))
}

// SetSuperseded gives the resource manager the job master's fencing check:
// after another scheduler took the framework over, it is asked before
// subscribing again, so that a superseded master (paused past its
// successor's takeover) abandons the framework instead of taking it back.
func (r *ResourceManager) SetSuperseded(f func() bool) {
	r.mu.Lock()
	r.superseded = f
	r.mu.Unlock()
}
