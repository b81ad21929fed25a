// Package taskmanager is the worker process: it registers with its job's
// master, runs the tasks the master deploys on it with the engine's task
// code (runtime.Host), serves their outputs to other TaskManagers over the
// data plane (taskmanager/dataplane), writes their snapshots to checkpoint
// storage and keeps local-recovery copies.
//
// A TaskManager trusts only its current session: every message carries the
// master's fencing epoch, and one from another epoch is refused. When the
// session ends (the master is gone, or declared this TaskManager lost after
// a pause) it cancels every task it runs — they can no longer acknowledge a
// checkpoint or commit anything — and registers anew as an empty
// TaskManager, or exits when no master answers for ConnectTimeout.
package taskmanager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluice-stream/sluice/engine/plan"
	"github.com/sluice-stream/sluice/engine/row"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
	pb "github.com/sluice-stream/sluice/internal/controlpb"
	"github.com/sluice-stream/sluice/taskmanager/dataplane"
)

// Config configures a TaskManager.
type Config struct {
	// Master is the master's control address (host:port).
	Master string
	// MasterAddress, when set, finds the current master address (a master
	// HA directory); it is asked again at every reconnection. It overrides
	// Master.
	MasterAddress func(ctx context.Context) (string, error)
	Slots         int
	// Data is the data server's listen address (default 127.0.0.1:0);
	// Advertise the address the others dial (default: the listener's).
	Data      string
	Advertise string
	// ResourceID names this process for its resource manager (a local
	// process id, a Mesos task id).
	ResourceID string
	// LocalDir holds local state and local recovery copies.
	LocalDir string
	// ConnectTimeout: with no master to register with for this long, Run
	// returns an error (default 30 s).
	ConnectTimeout time.Duration
	// Metrics, when set, is the address /metrics is served on (metrics.go).
	Metrics string
	Log     *slog.Logger
}

// TaskManager is one worker process.
type TaskManager struct {
	cfg  Config
	log  *slog.Logger
	net  *dataplane.Network
	host string

	mu    sync.Mutex
	hosts map[string]*runtime.Host // by attempt
	// plans caches the planned job per spec.
	planned     []byte
	graph       *runtime.Graph
	opts        runtime.Options
	metrics     map[string]*runtime.NodeMetrics // every attempt's, per node
	epoch       int64                           // the newest master epoch served
	lostPeers   chan string
	registered  chan struct{} // closed at the first registration (tests)
	regOnce     sync.Once
	sessionDone chan struct{}
	// progress counts its subtasks' shares of savepoints and restores,
	// reported to the master (progress.go).
	progress *runtime.Progress
}

// New starts the data server of a TaskManager; Run registers and works.
func New(cfg Config) (*TaskManager, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Slots <= 0 {
		cfg.Slots = 1
	}
	if cfg.Data == "" {
		cfg.Data = "127.0.0.1:0"
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.ResourceID == "" {
		cfg.ResourceID = "pid-" + strconv.Itoa(os.Getpid())
	}
	if cfg.LocalDir == "" {
		// Its own: local recovery copies of two TaskManagers on one
		// machine must not mix.
		cfg.LocalDir = filepath.Join(os.TempDir(), "sluice-local", cfg.ResourceID)
	}
	tm := &TaskManager{cfg: cfg, log: cfg.Log, hosts: map[string]*runtime.Host{}, registered: make(chan struct{}),
		progress: runtime.NewProgress()}
	tm.host, _ = os.Hostname()
	n, err := dataplane.Listen(dataplane.Config{Listen: cfg.Data, Advertise: cfg.Advertise, Receiver: tm, Logger: cfg.Log,
		OnPeerLost: tm.peerLost})
	if err != nil {
		return nil, fmt.Errorf("taskmanager: data server: %w", err)
	}
	tm.net = n
	return tm, nil
}

// DataAddress is the data server's advertised address.
func (tm *TaskManager) DataAddress() string { return tm.net.Addr() }

// Registered is closed once the TaskManager first registered.
func (tm *TaskManager) Registered() <-chan struct{} { return tm.registered }

// Schema implements runtime.Receiver: the channels of the attempts running
// here.
func (tm *TaskManager) Schema(key runtime.ChannelKey) *row.Schema {
	tm.mu.Lock()
	h := tm.hosts[key.Attempt]
	tm.mu.Unlock()
	if h == nil {
		return nil
	}
	return h.Schema(key)
}

// Deliver implements runtime.Receiver.
func (tm *TaskManager) Deliver(key runtime.ChannelKey, m runtime.Message) error {
	tm.mu.Lock()
	h := tm.hosts[key.Attempt]
	tm.mu.Unlock()
	if h == nil {
		return fmt.Errorf("no attempt %s here", key.Attempt)
	}
	return h.Deliver(key, m)
}

// peerLost: a connection to another TaskManager failed. The tasks fed by it
// will get nothing more: fail the attempts that run here (the master
// restarts them).
func (tm *TaskManager) peerLost(addr string, err error) {
	tm.log.Warn("connection to a TaskManager lost", "peer", addr, "err", err)
	tm.mu.Lock()
	hosts := make([]*runtime.Host, 0, len(tm.hosts))
	for _, h := range tm.hosts {
		hosts = append(hosts, h)
	}
	tm.mu.Unlock()
	for _, h := range hosts {
		h.Fail(fmt.Errorf("the data connection to %s failed: %w", addr, err))
	}
}

// Run registers with the master and serves it until ctx ends, the master
// shuts this TaskManager down, or no master answers for ConnectTimeout.
func (tm *TaskManager) Run(ctx context.Context) error {
	defer tm.net.Close()
	if tm.cfg.Metrics != "" {
		stop, err := tm.serveMetrics(ctx)
		if err != nil {
			return err
		}
		defer stop()
	}
	defer tm.stopAll()
	lastOK := time.Now()
	backoff := 100 * time.Millisecond
	for {
		registered, err := tm.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var shut *shutdownError
		if errors.As(err, &shut) {
			tm.log.Info("shut down by the master", "reason", shut.reason)
			return nil
		}
		var refused *refusedError
		if errors.As(err, &refused) {
			return err
		}
		if registered {
			lastOK = time.Now()
			backoff = 100 * time.Millisecond
			tm.log.Warn("session with the master ended; cancelling every task and registering anew", "err", err)
		}
		tm.stopAll()
		if time.Since(lastOK) > tm.cfg.ConnectTimeout {
			return fmt.Errorf("taskmanager: no master to register with for %v: %w", tm.cfg.ConnectTimeout, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

type shutdownError struct{ reason string }

func (e *shutdownError) Error() string { return "shut down by the master: " + e.reason }

type refusedError struct{ master, reason string }

func (e *refusedError) Error() string {
	return fmt.Sprintf("taskmanager: the master at %s refused the registration: %s", e.master, e.reason)
}

// stopAll cancels every attempt running here.
func (tm *TaskManager) stopAll() {
	tm.mu.Lock()
	hosts := tm.hosts
	tm.hosts = map[string]*runtime.Host{}
	tm.mu.Unlock()
	for _, h := range hosts {
		h.Stop()
	}
}

// session runs one registration: it returns when the stream ends, saying
// whether the master accepted the registration.
func (tm *TaskManager) session(ctx context.Context) (registered bool, err error) {
	addr := tm.cfg.Master
	if tm.cfg.MasterAddress != nil {
		if addr, err = tm.cfg.MasterAddress(ctx); err != nil {
			return false, fmt.Errorf("finding the master: %w", err)
		}
	}
	if addr == "" {
		return false, errors.New("no master address")
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return false, fmt.Errorf("master %s: %w", addr, err)
	}
	defer cc.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pb.NewControlClient(cc).Session(sctx, grpc.WaitForReady(false))
	if err != nil {
		return false, fmt.Errorf("master %s: %w", addr, err)
	}
	reg := &pb.Register{Slots: int32(tm.cfg.Slots), DataAddress: tm.net.Addr(), Host: tm.host,
		ResourceId: tm.cfg.ResourceID, Pid: int64(os.Getpid())}
	// The newest epoch it served: a master older than that is stale.
	tm.mu.Lock()
	epoch := tm.epoch
	tm.mu.Unlock()
	if err := stream.Send(&pb.FromTaskManager{Epoch: epoch, Msg: &pb.FromTaskManager_Register{Register: reg}}); err != nil {
		return false, fmt.Errorf("master %s: registering: %w", addr, err)
	}
	first, err := stream.Recv()
	if err != nil {
		return false, fmt.Errorf("master %s: registering: %w", addr, err)
	}
	if r := first.GetRefused(); r != nil {
		return false, &refusedError{master: addr, reason: r.Reason}
	}
	ok := first.GetRegistered()
	if ok == nil {
		return false, fmt.Errorf("master %s: answered the registration with %T", addr, first.Msg)
	}
	s := &session{tm: tm, epoch: first.Epoch, id: ok.TaskmanagerId, out: make(chan *pb.FromTaskManager, 1024),
		ctx: sctx, cancel: cancel, interval: time.Duration(ok.HeartbeatIntervalMs) * time.Millisecond,
		timeout: time.Duration(ok.HeartbeatTimeoutMs) * time.Millisecond}
	tm.mu.Lock()
	tm.epoch = max(tm.epoch, first.Epoch)
	tm.mu.Unlock()
	if err := tm.plan(ok.JobSpec); err != nil {
		return true, err
	}
	tm.log.Info("registered", "master", addr, "id", s.id, "epoch", s.epoch, "slots", tm.cfg.Slots, "data", tm.net.Addr())
	tm.regOnce.Do(func() { close(tm.registered) })
	return true, s.run(stream)
}

// plan plans the job spec the master sent (the same plan every process of
// the job makes, so task indices agree).
func (tm *TaskManager) plan(specJSON []byte) error {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	if tm.graph != nil && string(tm.planned) == string(specJSON) {
		return nil
	}
	j, err := spec.Parse(specJSON, nil)
	if err != nil {
		return fmt.Errorf("the master's job spec: %w", err)
	}
	g, opts, err := plan.Prepare(j)
	if err != nil {
		return fmt.Errorf("planning the master's job spec: %w", err)
	}
	opts.Log = tm.log
	opts.Storage.Log = tm.log
	tm.planned, tm.graph, tm.opts = specJSON, g, opts
	tm.metrics = map[string]*runtime.NodeMetrics{}
	for _, n := range g.Nodes {
		tm.metrics[n.ID] = &runtime.NodeMetrics{}
	}
	return nil
}

// session is one registration with a master.
type session struct {
	tm                *TaskManager
	epoch             int64
	id                string
	out               chan *pb.FromTaskManager
	ctx               context.Context
	cancel            context.CancelFunc
	interval, timeout time.Duration
	mu                sync.Mutex
	lastHeard         time.Time
}

func (s *session) send(m *pb.FromTaskManager) {
	m.Epoch, m.TaskmanagerId = s.epoch, s.id
	select {
	case s.out <- m:
	case <-s.ctx.Done():
	}
}

func (s *session) run(stream pb.Control_SessionClient) error {
	errc := make(chan error, 3)
	go func() { // the one writer of the stream
		for {
			select {
			case m := <-s.out:
				if err := stream.Send(m); err != nil {
					errc <- fmt.Errorf("sending to the master: %w", err)
					return
				}
			case <-s.ctx.Done():
				return
			}
		}
	}()
	s.lastHeard = time.Now()
	go func() { // heartbeats, and the master's silence
		if s.interval <= 0 {
			return
		}
		t := time.NewTicker(s.interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.mu.Lock()
				quiet := time.Since(s.lastHeard)
				s.mu.Unlock()
				if s.timeout > 0 && quiet > s.timeout {
					errc <- fmt.Errorf("no heartbeat from the master for %v", quiet.Round(time.Millisecond))
					return
				}
				s.send(&pb.FromTaskManager{Msg: &pb.FromTaskManager_Heartbeat{Heartbeat: &pb.Heartbeat{SentUnixNanos: time.Now().UnixNano()}}})
				s.send(&pb.FromTaskManager{Msg: &pb.FromTaskManager_Metrics{Metrics: s.tm.report()}})
				s.sendProgress()
			case <-s.ctx.Done():
				return
			}
		}
	}()
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- fmt.Errorf("the master's stream: %w", err)
				return
			}
			if m.Epoch != s.epoch {
				s.tm.log.Warn("refusing a message of another master epoch", "epoch", m.Epoch, "registered", s.epoch, "msg", fmt.Sprintf("%T", m.Msg))
				continue
			}
			s.mu.Lock()
			s.lastHeard = time.Now()
			s.mu.Unlock()
			if err := s.handle(m); err != nil {
				errc <- err
				return
			}
		}
	}()
	err := <-errc
	s.cancel()
	return err
}

func (s *session) handle(m *pb.FromMaster) error {
	tm := s.tm
	switch msg := m.Msg.(type) {
	case *pb.FromMaster_Heartbeat:
		if msg.Heartbeat.EchoUnixNanos == 0 {
			s.send(&pb.FromTaskManager{Msg: &pb.FromTaskManager_Heartbeat{Heartbeat: &pb.Heartbeat{
				SentUnixNanos: time.Now().UnixNano(), EchoUnixNanos: msg.Heartbeat.SentUnixNanos}}})
		}
	case *pb.FromMaster_Deploy:
		go s.deploy(msg.Deploy)
	case *pb.FromMaster_StartTasks:
		if h := tm.attempt(msg.StartTasks.Attempt); h != nil {
			h.Start()
		}
	// Checkpoint messages name the job's attempt; they go to every host
	// here: the job's, and those of regions restarted since (a TaskManager
	// serves one job, and an attempt the master replaced was cancelled).
	case *pb.FromMaster_TriggerCheckpoint:
		for _, h := range tm.all() {
			_ = h.Trigger(msg.TriggerCheckpoint.Trigger())
		}
	case *pb.FromMaster_NotifyCheckpointComplete:
		for _, h := range tm.all() {
			_ = h.Notify(msg.NotifyCheckpointComplete.Id)
		}
	case *pb.FromMaster_AbortCheckpoint:
		for _, h := range tm.all() {
			_ = h.Abort(msg.AbortCheckpoint.Id)
		}
	case *pb.FromMaster_StopTasks:
		req := msg.StopTasks
		tasks := make([]int, len(req.Tasks))
		for i, t := range req.Tasks {
			tasks[i] = int(t)
		}
		hosts := tm.all()
		go func() {
			for _, h := range hosts {
				h.StopTasks(tasks)
			}
			s.send(&pb.FromTaskManager{Msg: &pb.FromTaskManager_TasksStopped{TasksStopped: &pb.TasksStopped{Attempt: req.Attempt, RequestId: req.RequestId}}})
		}()
	case *pb.FromMaster_SkipBacklog:
		req := msg.SkipBacklog
		result := func(subtask string, err error) {
			r := &pb.SkipBacklogResult{Attempt: req.Attempt, RequestId: req.RequestId}
			if err != nil {
				r.Error = err.Error()
				r.Unsupported = []string{subtask}
			} else {
				r.Skipped = []string{subtask}
			}
			s.send(&pb.FromTaskManager{Msg: &pb.FromTaskManager_SkipBacklogResult{SkipBacklogResult: r}})
		}
		h := tm.attempt(req.Attempt)
		if h == nil {
			result(fmt.Sprintf("task %d", req.Task), fmt.Errorf("%w: attempt %s does not run here", runtime.ErrNotRunning, req.Attempt))
		} else if err := h.SkipBacklog(int(req.Task), result); err != nil {
			result(fmt.Sprintf("task %d", req.Task), err)
		}
	case *pb.FromMaster_Cancel:
		tm.mu.Lock()
		h := tm.hosts[msg.Cancel.Attempt]
		delete(tm.hosts, msg.Cancel.Attempt)
		tm.mu.Unlock()
		go func() {
			if h != nil {
				h.Stop()
			}
			s.send(&pb.FromTaskManager{Msg: &pb.FromTaskManager_Metrics{Metrics: tm.report()}})
			s.send(&pb.FromTaskManager{Msg: &pb.FromTaskManager_AttemptEnded{AttemptEnded: &pb.AttemptEnded{Attempt: msg.Cancel.Attempt}}})
		}()
	case *pb.FromMaster_Shutdown:
		return &shutdownError{reason: msg.Shutdown.Reason}
	case *pb.FromMaster_Registered, *pb.FromMaster_Refused:
		return fmt.Errorf("unexpected %T in a running session", msg)
	}
	return nil
}

// all lists the hosts running here.
func (tm *TaskManager) all() []*runtime.Host {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	out := make([]*runtime.Host, 0, len(tm.hosts))
	for _, h := range tm.hosts {
		out = append(out, h)
	}
	return out
}

func (tm *TaskManager) attempt(id string) *runtime.Host {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.hosts[id]
}

// deploy builds and opens the tasks of an attempt, answers Deployed, and
// forwards what they report until they end.
func (s *session) deploy(d *pb.Deploy) {
	tm := s.tm
	reply := func(err error) {
		s.send(&pb.FromTaskManager{Msg: &pb.FromTaskManager_Deployed{Deployed: &pb.Deployed{Attempt: d.Attempt, Error: pb.FromError(err)}}})
	}
	tm.mu.Lock()
	g, opts, metrics := tm.graph, tm.opts, tm.metrics
	tm.mu.Unlock()
	// Savepoint state files go where the master commits their metadata.
	opts.Storage.SetSavepointEpoch(s.epoch)
	locs := map[int]string{}
	for _, l := range d.Locations {
		locs[int(l.Task)] = l.DataAddress
	}
	tasks := make([]int, len(d.Tasks))
	for i, t := range d.Tasks {
		tasks[i] = int(t)
	}
	cfg := runtime.HostConfig{Graph: g, Attempt: d.Attempt, Tasks: tasks, Network: tm.net,
		Locate:  func(t int) string { return locs[t] },
		Storage: opts.Storage, Incremental: d.Incremental, LocalRecovery: d.LocalRecovery,
		LocalStateDir: tm.cfg.LocalDir, Metrics: metrics, RestoreConcurrency: opts.RestoreConcurrency, Log: tm.log.With("attempt", d.Attempt),
		Progress: tm.progress}
	if r := d.Restore; r != nil {
		md, err := opts.Storage.Load(s.ctx, r.Location)
		if err != nil {
			reply(fmt.Errorf("loading checkpoint %s: %w", r.Location, err))
			return
		}
		cfg.Restore, cfg.RestoreDir = md, r.Location
		cfg.RestoreFlags = runtime.RestoreFlags{SkippedNewer: r.SkippedNewer, AllowDuplicates: r.AllowDuplicates, AcceptLoss: r.AcceptLoss, Region: r.Region}
	}
	stats := &runtime.RestoreStats{}
	cfg.RestoreStats = stats
	h, err := runtime.NewHost(s.ctx, cfg)
	if err != nil {
		reply(err)
		return
	}
	if cfg.Restore != nil {
		tm.log.Info("state restored", "attempt", d.Attempt, "checkpoint", cfg.Restore.CheckpointID, "tasks", len(tasks),
			"localBytes", stats.LocalBytes.Load(), "remoteBytes", stats.RemoteBytes.Load())
	}
	tm.mu.Lock()
	if s.ctx.Err() != nil {
		tm.mu.Unlock()
		h.Stop()
		return
	}
	tm.hosts[d.Attempt] = h
	tm.mu.Unlock()
	s.sendProgress() // the restore's last counts before it ends
	reply(nil)
	s.forward(d.Attempt, h)
}

// forward sends an attempt's task events to the master until every task
// exited or the attempt was cancelled.
func (s *session) forward(attempt string, h *runtime.Host) {
	for {
		select {
		case ev := <-h.Events():
			m := &pb.FromTaskManager{}
			switch ev.Kind {
			case runtime.EventAck:
				s.sendProgress() // the savepoint's last counts before its ack
				states, err := pb.FromStates(ev.States)
				if err != nil {
					m.Msg = &pb.FromTaskManager_DeclineCheckpoint{DeclineCheckpoint: &pb.DeclineCheckpoint{Attempt: attempt, Task: int32(ev.Task), Id: ev.ID, Error: pb.FromError(err)}}
				} else {
					m.Msg = &pb.FromTaskManager_AckCheckpoint{AckCheckpoint: &pb.AckCheckpoint{Attempt: attempt, Task: int32(ev.Task), Id: ev.ID, States: states,
						AlignmentNanos: int64(ev.Alignment)}}
				}
			case runtime.EventDecline:
				m.Msg = &pb.FromTaskManager_DeclineCheckpoint{DeclineCheckpoint: &pb.DeclineCheckpoint{Attempt: attempt, Task: int32(ev.Task), Id: ev.ID, Error: pb.FromError(ev.Err)}}
			case runtime.EventSourceFinished:
				m.Msg = &pb.FromTaskManager_SourceFinished{SourceFinished: &pb.SourceFinished{Attempt: attempt, Task: int32(ev.Task)}}
			case runtime.EventFailed:
				m.Msg = &pb.FromTaskManager_TaskState{TaskState: &pb.TaskState{Attempt: attempt, Task: int32(ev.Task), State: pb.TaskState_STATE_FAILED, Error: pb.FromError(ev.Err)}}
			case runtime.EventExited:
				s.tm.mu.Lock()
				if s.tm.hosts[attempt] == h {
					delete(s.tm.hosts, attempt)
				}
				s.tm.mu.Unlock()
				h.Stop()
				// The final counts first: the master takes them before it
				// learns the attempt ended.
				s.send(&pb.FromTaskManager{Msg: &pb.FromTaskManager_Metrics{Metrics: s.tm.report()}})
				s.send(&pb.FromTaskManager{Msg: &pb.FromTaskManager_AttemptEnded{AttemptEnded: &pb.AttemptEnded{Attempt: attempt}}})
				return
			}
			s.send(m)
		case <-h.Done():
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// report is the TaskManager's counters since it started, per node over
// the subtasks it ran (subtask -1) and per subtask.
func (tm *TaskManager) report() *pb.MetricsReport {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	r := &pb.MetricsReport{}
	for id, m := range tm.metrics {
		wm, ok := m.Watermark()
		if !ok {
			wm = runtime.MinWatermark // none: the master leaves it out
		}
		r.Subtasks = append(r.Subtasks, &pb.SubtaskMetrics{Node: id, Subtask: -1, RowsIn: m.RowsIn.Load(), RowsOut: m.RowsOut.Load(),
			BackPressuredMs: m.BackPressuredTotal() / int64(time.Millisecond), Watermark: wm,
			BytesIn: m.BytesIn.Load(), BytesOut: m.BytesOutTotal()})
		// Each subtask it ran, over its attempts (no watermark: the
		// node's is above).
		m.Subtasks(func(i int, c *runtime.SubtaskCounters) {
			r.Subtasks = append(r.Subtasks, withMeasures(&pb.SubtaskMetrics{Node: id, Subtask: int32(i), RowsIn: c.RowsIn.Load(), RowsOut: c.RowsOut.Load(),
				BackPressuredMs: c.BackPressured.Load() / int64(time.Millisecond), Watermark: runtime.MinWatermark,
				BytesIn: c.BytesIn.Load(), BytesOut: c.BytesOut.Load()}, c))
		})
	}
	return r
}
