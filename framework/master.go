// Package framework is the per-job master: it keeps TaskManagers (through a
// ResourceManager: local child processes here, Mesos tasks next), places
// the job's tasks on their slots, deploys and cancels attempts over the
// control plane (internal/controlpb), and drives checkpoints, restores and
// restarts with the engine's own driver (runtime.RunOn): the master is the
// runtime.Deployer whose attempts run on TaskManagers.
//
// Fencing: the master has an epoch; every message it sends carries it and
// every message it takes must carry it too, plus the attempt it is about.
// A message of another epoch or of an attempt that is no longer the
// current one (a TaskManager that was paused while the job moved on) is
// refused: it can acknowledge no checkpoint and start no commit.
package framework

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
	pb "github.com/sluice-stream/sluice/internal/controlpb"
)

// Config configures a Master.
type Config struct {
	Job   *spec.Job
	Graph *runtime.Graph
	// Listen is the control address (default 127.0.0.1:0).
	Listen string
	// Epoch is the master's fencing epoch (default 1; the HA store gives a
	// restarted master a higher one).
	Epoch             int64
	HeartbeatInterval time.Duration // default 1 s
	HeartbeatTimeout  time.Duration // default 4 s
	// TaskManagers is how many the master keeps (besides Spares), each
	// with Slots slots.
	TaskManagers int
	Slots        int
	Spares       int
	RM           ResourceManager
	// SlotWait bounds how long a deployment waits for enough slots
	// (default 2 min).
	SlotWait time.Duration
	// HA, when set, is the job's HA directory: the master takes its epoch
	// there (Epoch is ignored), publishes its address, keeps the job and
	// its latest checkpoint, and stops when a newer master appears.
	HA *HA
	// HTTP is the master's REST address, published in the HA directory.
	HTTP string
	// Standby: Run gets and registers the TaskManagers, then waits for
	// Start before it deploys anything — the new version of an
	// asynchronous upgrade, ready while the old one still runs.
	Standby bool
	// StandbyTimeout: a master in standby that has had every TaskManager
	// this long without a Start gives up (its upgrade was abandoned, and
	// whoever started it is gone); 0 waits for ever.
	StandbyTimeout time.Duration
	Log            *slog.Logger
}

// Master is a job master.
type Master struct {
	cfg        Config
	log        *slog.Logger
	spec       []byte
	tasks      []runtime.TaskInfo
	lis        net.Listener
	srv        *grpc.Server
	superseded atomic.Bool // a newer master took the job
	// tookOver: the takeover is recorded in the HA directory (Deploy,
	// which the driver calls from one goroutine).
	tookOver bool

	mu  sync.Mutex
	tms map[string]*tmConn
	// released: resource ids of TaskManagers it dropped and had replaced,
	// or that the resource manager reported ended; one that comes back
	// (it was only paused, or cut off on a partitioned agent) is refused.
	released map[string]bool
	nextID   int
	changed  chan struct{} // closed and replaced when tms changes
	current  *attempt
	prev     Placement
	lost     int // TaskManagers lost so far
	// metrics sums the TaskManagers' counters (reports, per TaskManager,
	// the lost ones' last ones included) into the run's NodeMetrics.
	metrics map[string]*runtime.NodeMetrics
	reports map[string]*pb.MetricsReport
	closing bool

	standby *standby
	// progress is the job's savepoints' and restores' progress, the
	// TaskManagers' reports merged in (progress.go).
	progress *runtime.Progress
}

// tmConn is a registered TaskManager.
type tmConn struct {
	id, resourceID, data, host string
	slots                      int
	out                        chan *pb.FromMaster
	ctx                        context.Context
	drop                       context.CancelCauseFunc // ends the session
	mu                         sync.Mutex
	lastHeard                  time.Time
	rtt                        time.Duration
}

func (t *tmConn) send(m *pb.FromMaster) {
	select {
	case t.out <- m:
	case <-t.ctx.Done():
	}
}

// New plans nothing: cfg.Graph is the planned cfg.Job. It starts the
// control server.
func New(cfg Config) (*Master, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Epoch == 0 {
		cfg.Epoch = 1
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.HeartbeatTimeout <= 0 {
		cfg.HeartbeatTimeout = 4 * time.Second
	}
	if cfg.SlotWait <= 0 {
		cfg.SlotWait = 2 * time.Minute
	}
	specJSON, err := json.Marshal(cfg.Job)
	if err != nil {
		return nil, fmt.Errorf("framework: encoding the job spec: %w", err)
	}
	tasks := runtime.Tasks(cfg.Graph)
	if cfg.Slots <= 0 {
		cfg.Slots = 1
	}
	if cfg.TaskManagers <= 0 {
		cfg.TaskManagers = (Pipelines(tasks) + cfg.Slots - 1) / cfg.Slots
	}
	if need := Pipelines(tasks); cfg.TaskManagers*cfg.Slots < need {
		return nil, fmt.Errorf("framework: the job needs %d slots (its highest parallelism); %d TaskManagers × %d slots are %d",
			need, cfg.TaskManagers, cfg.Slots, cfg.TaskManagers*cfg.Slots)
	}
	host, _ := os.Hostname()
	if cfg.HA != nil {
		e, err := cfg.HA.Claim(context.Background(), MasterInfo{Host: host, PID: os.Getpid(), Started: time.Now()})
		if err != nil {
			return nil, fmt.Errorf("framework: %w", err)
		}
		cfg.Epoch = e
		cfg.Log.Info("took the job's fencing epoch", "epoch", e, "ha", cfg.HA.URI())
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("framework: control server: %w", err)
	}
	if cfg.HA != nil {
		info := MasterInfo{Epoch: cfg.Epoch, Control: lis.Addr().String(), HTTP: cfg.HTTP, Host: host, PID: os.Getpid(), Started: time.Now()}
		if err := cfg.HA.Publish(context.Background(), info); err != nil {
			lis.Close()
			return nil, fmt.Errorf("framework: %w", err)
		}
	}
	m := &Master{cfg: cfg, log: cfg.Log, spec: specJSON, tasks: tasks, lis: lis, tms: map[string]*tmConn{}, released: map[string]bool{}, changed: make(chan struct{}),
		metrics: map[string]*runtime.NodeMetrics{}, reports: map[string]*pb.MetricsReport{}, standby: newStandby(cfg.Standby),
		progress: runtime.NewProgress()}
	for _, n := range cfg.Graph.Nodes {
		m.metrics[n.ID] = &runtime.NodeMetrics{}
	}
	m.srv = grpc.NewServer()
	pb.RegisterControlServer(m.srv, &controlServer{m: m})
	go m.srv.Serve(lis)
	return m, nil
}

// Addr is the control address TaskManagers register with.
func (m *Master) Addr() string { return m.lis.Addr().String() }

// Close stops the control server, shutting every TaskManager down, and
// the resource manager's processes.
func (m *Master) Close() {
	m.mu.Lock()
	m.closing = true
	m.mu.Unlock()
	if m.cfg.RM != nil {
		// First: no replacement for what stops now. A superseded master
		// leaves the TaskManagers to the newer one, which runs the job on
		// them.
		if m.superseded.Load() {
			m.cfg.RM.Abandon()
		} else {
			m.cfg.RM.Close()
		}
	}
	m.mu.Lock()
	for _, t := range m.tms {
		t.send(&pb.FromMaster{Epoch: m.cfg.Epoch, Msg: &pb.FromMaster_Shutdown{Shutdown: &pb.Shutdown{Reason: "the job master is stopping"}}})
	}
	m.mu.Unlock()
	time.Sleep(50 * time.Millisecond) // let the shutdowns out
	m.srv.Stop()
}

// Run runs the job on the TaskManagers: the engine's driver with this
// master as its Deployer.
func (m *Master) Run(ctx context.Context, opts runtime.Options) (*runtime.Result, error) {
	want := m.cfg.TaskManagers + m.cfg.Spares
	if ha := m.cfg.HA; ha != nil {
		kept, err := ha.SaveJob(ctx, m.spec)
		if err != nil {
			return nil, fmt.Errorf("framework: %w", err)
		}
		if string(kept) != string(m.spec) {
			m.log.Warn("the HA directory keeps another version of the job spec; running the one given", "ha", ha.URI())
		}
		epoch := m.cfg.Epoch
		if epoch > 1 && opts.Restore == "" {
			// A master of this job ran before: go on from the latest
			// checkpoint (none: from the start). It is resolved when the
			// first attempt deploys, after the wait for the TaskManagers
			// below, so a commit the old master had in flight lands first.
			cp, err := ha.Checkpoint(ctx)
			if err != nil {
				return nil, fmt.Errorf("framework: %w", err)
			}
			if cp != nil {
				m.log.Info("taking over the job from an earlier master: restoring the latest checkpoint", "recorded", cp.ID, "of_epoch", cp.Epoch)
			}
			opts.Restore = "latest"
		}
		opts.Fence = func(ctx context.Context) error { return ha.Fence(ctx, epoch) }
		opts.Epoch = epoch
		// Restores skip what a superseded master committed after this
		// one (or a later one) took over: see Deploy.
		opts.Storage.SetLineage(ha.Lineage)
		opts.Completed = func(id int64, path string) {
			// Best effort: the checkpoint storage has it anyway.
			cctx, cancel := context.WithTimeout(context.Background(), m.cfg.HeartbeatTimeout)
			defer cancel()
			if err := ha.SaveCheckpoint(cctx, CheckpointPointer{Epoch: epoch, ID: id, Path: path}); err != nil {
				m.log.Warn("recording the latest checkpoint in the HA directory", "err", err)
			}
		}
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		go m.watchEpoch(ctx, cancel)
		if epoch > 1 {
			// The TaskManagers of the master before may still run: they
			// find this one in the HA directory and register again. Only
			// the shortfall is started anew.
			want -= m.waitRegistrations(ctx, want, 2*m.cfg.HeartbeatTimeout)
		}
		defer func() {
			if c := context.Cause(ctx); errors.Is(c, ErrSuperseded) {
				m.log.Error("stopping: a newer master leads the job", "cause", c)
			}
		}()
	}
	if m.cfg.RM != nil {
		if err := m.cfg.RM.Start(ctx, m.Addr(), max(want, 0), m.lostByRM); err != nil {
			return nil, fmt.Errorf("framework: starting TaskManagers: %w", err)
		}
	}
	if m.cfg.Standby {
		restore, err := m.awaitStart(ctx)
		if err != nil {
			return nil, fmt.Errorf("framework: standing by: %w", err)
		}
		if restore != "" {
			opts.Restore = restore
		}
	}
	opts.Metrics = m.metrics
	opts.Progress = m.progress
	// Its savepoints' metadata goes where the TaskManagers write their
	// state files (they name the directory the same way).
	opts.Storage.SetSavepointEpoch(m.cfg.Epoch)
	res, err := runtime.RunOn(ctx, m.cfg.Graph, opts, m)
	if c := context.Cause(ctx); errors.Is(c, ErrSuperseded) {
		err = fmt.Errorf("framework: %w", c)
	}
	if errors.Is(err, ErrSuperseded) {
		m.superseded.Store(true)
	}
	return res, err
}

// RecordEnd records in the HA directory (when there is one) how the run
// ended — code is the process's exit code — so that a supervisor that
// adopted this master, and so is not its parent, learns it.
func (m *Master) RecordEnd(code int, reason string) {
	if m.cfg.HA == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.cfg.HA.SaveResult(ctx, Result{Epoch: m.cfg.Epoch, Code: code, Reason: reason}); err != nil {
		m.log.Warn("recording the run's end in the HA directory", "err", err)
	}
}

// watchEpoch stops the run when a newer master takes the job.
func (m *Master) watchEpoch(ctx context.Context, stop context.CancelCauseFunc) {
	t := time.NewTicker(m.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := m.cfg.HA.Fence(ctx, m.cfg.Epoch); errors.Is(err, ErrSuperseded) {
				m.superseded.Store(true)
				stop(err)
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// waitRegistrations waits up to d for n TaskManagers to register; it
// returns how many did.
func (m *Master) waitRegistrations(ctx context.Context, n int, d time.Duration) int {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		have, changed := len(m.tms), m.changed
		m.mu.Unlock()
		if have >= n {
			return have
		}
		select {
		case <-changed:
		case <-deadline.C:
			m.log.Info("TaskManagers of the earlier master registered again", "count", have, "of", n)
			return have
		case <-ctx.Done():
			return have
		}
	}
}

// recordMetrics takes a TaskManager's counters.
func (m *Master) recordMetrics(tm string, r *pb.MetricsReport) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reports[tm] = r
	in, out := map[string]int64{}, map[string]int64{}
	bin := map[string]int64{}
	// Per subtask, over the TaskManagers that ran it (a subtask moves
	// when a TaskManager is lost).
	type key struct {
		node    string
		subtask int
	}
	subs := map[key]*pb.SubtaskMetrics{}
	for _, r := range m.reports {
		for _, s := range r.Subtasks {
			if s.Subtask >= 0 {
				k := key{s.Node, int(s.Subtask)}
				t := subs[k]
				if t == nil {
					t = &pb.SubtaskMetrics{}
					subs[k] = t
				}
				t.RowsIn += s.RowsIn
				t.RowsOut += s.RowsOut
				t.BytesIn += s.BytesIn
				t.BytesOut += s.BytesOut
				t.BackPressuredMs += s.BackPressuredMs
				continue
			}
			in[s.Node] += s.RowsIn
			out[s.Node] += s.RowsOut
			bin[s.Node] += s.BytesIn
		}
	}
	for k, t := range subs {
		nm := m.metrics[k.node]
		if nm == nil {
			continue
		}
		c := nm.Subtask(k.subtask)
		c.RowsIn.Store(t.RowsIn)
		c.RowsOut.Store(t.RowsOut)
		c.BytesIn.Store(t.BytesIn)
		c.BytesOut.Store(t.BytesOut)
		c.BackPressured.Store(t.BackPressuredMs * int64(time.Millisecond))
	}
	// A node's watermark: the lowest the registered TaskManagers report
	// (a lost one's last report holds no event time back).
	wms := map[string]map[int]int64{}
	i := 0
	for id, r := range m.reports {
		if _, live := m.tms[id]; !live {
			continue
		}
		i++
		for _, s := range r.Subtasks {
			if s.Watermark != runtime.MinWatermark && s.Watermark != runtime.MaxWatermark {
				if wms[s.Node] == nil {
					wms[s.Node] = map[int]int64{}
				}
				wms[s.Node][i] = s.Watermark
			}
		}
	}
	for id, nm := range m.metrics {
		nm.RowsIn.Store(in[id])
		nm.RowsOut.Store(out[id])
		nm.BytesIn.Store(bin[id])
		// Bytes out and back-pressure are the subtasks' (stored above):
		// BytesOutTotal and BackPressuredTotal add them up.
		nm.ReplaceWatermarks(wms[id])
	}
	m.recordMeasures()
}

// lostByRM: the resource manager saw a TaskManager's process or task end.
func (m *Master) lostByRM(resourceID string, err error) {
	m.mu.Lock()
	// Replaced: its TaskManager, if it runs on (a partitioned agent's),
	// must not take its replacement's place.
	m.released[resourceID] = true
	var t *tmConn
	for _, c := range m.tms {
		if c.resourceID == resourceID {
			t = c
		}
	}
	m.mu.Unlock()
	if t != nil {
		t.drop(fmt.Errorf("its resource %s ended: %w", resourceID, err))
	}
}

func (m *Master) notifyChanged() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// workers lists the registered TaskManagers (sorted by id).
func (m *Master) workers() []Worker {
	ws := make([]Worker, 0, len(m.tms))
	for _, t := range m.tms {
		ws = append(ws, Worker{ID: t.id, Slots: t.slots})
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].ID < ws[j].ID })
	return ws
}

func (m *Master) msg(x any) *pb.FromMaster {
	out := &pb.FromMaster{Epoch: m.cfg.Epoch}
	switch v := x.(type) {
	case *pb.FromMaster_Deploy:
		out.Msg = v
	case *pb.FromMaster_StartTasks:
		out.Msg = v
	case *pb.FromMaster_Cancel:
		out.Msg = v
	case *pb.FromMaster_TriggerCheckpoint:
		out.Msg = v
	case *pb.FromMaster_NotifyCheckpointComplete:
		out.Msg = v
	case *pb.FromMaster_AbortCheckpoint:
		out.Msg = v
	case *pb.FromMaster_SkipBacklog:
		out.Msg = v
	case *pb.FromMaster_Heartbeat:
		out.Msg = v
	case *pb.FromMaster_Shutdown:
		out.Msg = v
	case *pb.FromMaster_Registered:
		out.Msg = v
	case *pb.FromMaster_Refused:
		out.Msg = v
	case *pb.FromMaster_StopTasks:
		out.Msg = v
	default:
		panic(fmt.Sprintf("framework: no FromMaster for %T", x))
	}
	return out
}

// attemptByID is the current attempt if its id is id, else nil: messages
// about any other attempt are refused.
func (m *Master) attemptByID(id string) *attempt {
	m.mu.Lock()
	a := m.current
	m.mu.Unlock()
	if a != nil && a.has(id) {
		return a
	}
	return nil
}
