package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Dispatcher.
type Config struct {
	Store    *Store
	Launcher Launcher
	// Token, when set, is the bearer token every API call but /healthz
	// must carry.
	Token string
	// MaxBody bounds request bodies (default 1 MiB); larger ones are 413.
	MaxBody int64
	// Backoff is the first wait before a dead master is started again
	// (default 1 s); it doubles on each failure in a row up to MaxBackoff
	// (default 1 min).
	Backoff, MaxBackoff time.Duration
	// MaxFailures: a job whose master fails this many times in a row
	// (default 5) is FAILED. A master that ran StableAfter (default 5 min)
	// starts the count again.
	MaxFailures int
	StableAfter time.Duration
	// PollInterval is how often a running master's state is read (default
	// 1 s).
	PollInterval time.Duration
	// FenceInterval is how often the dispatcher checks that no newer one
	// took the store over (default 5 s); writes, launches, stops and
	// requests that change something check it anyway.
	FenceInterval time.Duration
	// Registerer takes the dispatcher's metrics (default: a registry of
	// its own, served on /metrics).
	Registry *prometheus.Registry
	Log      *slog.Logger
}

// Dispatcher keeps jobs and their masters.
type Dispatcher struct {
	cfg     Config
	log     *slog.Logger
	store   *Store
	client  *http.Client
	metrics *metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	jobs map[string]*job

	// fenceErr is set once a newer dispatcher took the store over.
	fenceOnce sync.Once
	fenceErr  atomic.Pointer[error]
}

// New makes a dispatcher; Start recovers the stored jobs.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Store == nil || cfg.Launcher == nil {
		return nil, errors.New("dispatcher: a store and a launcher are needed")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 5
	}
	if cfg.StableAfter <= 0 {
		cfg.StableAfter = 5 * time.Minute
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.FenceInterval <= 0 {
		cfg.FenceInterval = 5 * time.Second
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	d := &Dispatcher{cfg: cfg, log: cfg.Log, store: cfg.Store, jobs: map[string]*job{},
		client: &http.Client{Timeout: 10 * time.Minute}}
	// Every launch and stop goes through the fence (job.go calls the
	// launcher through d.cfg).
	d.cfg.Launcher = fencedLauncher{d: d, l: cfg.Launcher}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.metrics = newMetrics(cfg.Registry, d)
	return d, nil
}

// Start takes the store over (a new epoch: an older dispatcher still
// running, or paused, is superseded) and recovers every job of the store:
// a job that has not ended gets its master back — the one still running,
// found through its HA directory, or a new one on the same HA directory.
func (d *Dispatcher) Start(ctx context.Context) error {
	f := d.supersede
	d.store.onSuperseded.Store(&f)
	epoch, err := d.store.Takeover(ctx)
	if err != nil {
		return fmt.Errorf("dispatcher: taking the job store over: %w", err)
	}
	d.log.Info("took the job store over", "epoch", epoch, "store", d.store.URI())
	recs, err := d.store.Load(ctx)
	if err != nil {
		return fmt.Errorf("dispatcher: recovering jobs: %w", err)
	}
	for _, r := range recs {
		j := &job{d: d, rec: *r, live: r.State, wake: make(chan struct{}, 1), changed: make(chan struct{})}
		if !r.State.Terminal() {
			m, err := d.cfg.Launcher.Find(ctx, d.masterSpec(r, nil))
			if err != nil {
				d.log.Warn("looking for a running master", "job", r.ID, "err", err)
			}
			if m != nil {
				d.log.Info("adopted the running master of a recovered job", "job", r.ID, "run", r.Run, "master", m.String())
				j.master = m
				j.adopted = true
			} else {
				j.live = Pending // until its master is launched
				d.log.Info("recovered a job without a running master: starting one", "job", r.ID, "run", r.Run, "state", r.State)
			}
		}
		d.mu.Lock()
		d.jobs[r.ID] = j
		d.mu.Unlock()
		if !r.State.Terminal() {
			d.supervise(j)
		}
	}
	d.log.Info("jobs recovered", "jobs", len(recs), "store", d.store.URI())
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.watchFence()
	}()
	return nil
}

// Close stops supervising. The masters keep running: a dispatcher started
// again adopts them.
func (d *Dispatcher) Close() {
	d.cancel()
	d.wg.Wait()
}

func (d *Dispatcher) supervise(j *job) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		j.supervise(d.ctx)
	}()
}

func (d *Dispatcher) job(id string) *job {
	if !validID(id) {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.jobs[id]
}

// list is every job, oldest first.
func (d *Dispatcher) list() []*job {
	d.mu.Lock()
	out := make([]*job, 0, len(d.jobs))
	for _, j := range d.jobs {
		out = append(out, j)
	}
	d.mu.Unlock()
	sort.Slice(out, func(a, b int) bool {
		ra, rb := out[a].snapshot(), out[b].snapshot()
		if !ra.Submitted.Equal(rb.Submitted) {
			return ra.Submitted.Before(rb.Submitted)
		}
		return ra.ID < rb.ID
	})
	return out
}

// submit stores a validated job and starts supervising it. The record is
// durable when it returns without error.
func (d *Dispatcher) submit(ctx context.Context, name string, specBytes []byte, savepoint string) (*Record, error) {
	now := time.Now().UTC()
	rec := &Record{ID: newID(), Name: name, State: Pending, Submitted: now, Updated: now, Run: 1, Restore: savepoint}
	if err := d.store.Create(ctx, rec, specBytes); err != nil {
		return nil, err
	}
	j := &job{d: d, rec: *rec, live: Pending, wake: make(chan struct{}, 1), changed: make(chan struct{})}
	d.mu.Lock()
	d.jobs[rec.ID] = j
	d.mu.Unlock()
	d.log.Info("job submitted", "job", rec.ID, "name", name, "savepoint", savepoint)
	d.supervise(j)
	return rec, nil
}

// masterSpec is what the launcher needs for rec's current run. spec is
// the job's spec (nil when only finding a master).
func (d *Dispatcher) masterSpec(rec *Record, spec []byte) MasterSpec {
	s := MasterSpec{JobID: rec.ID, Run: rec.Run, Spec: spec, SpecRun: rec.SpecRun, HADir: d.store.HADir(rec.ID, rec.Run)}
	return s
}
