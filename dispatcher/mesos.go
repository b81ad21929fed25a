package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	mesos "github.com/mesos/mesos-go/api/v1/lib"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler/calls"

	"github.com/sluice-stream/sluice/engine/plan"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/engine/spec"
	"github.com/sluice-stream/sluice/framework"
	fmesos "github.com/sluice-stream/sluice/framework/mesos"
)

// Mesos launches framework masters as Mesos command tasks of the
// dispatcher's own framework (as Spark's MesosClusterDispatcher runs
// drivers): `sluice framework --resource-manager mesos` with the binary
// fetched from BinaryURI, the spec read from the job store, and the job's
// own role, whose quota it sets before each launch and removes when the
// job ends. The framework ID is kept in the store, so a dispatcher
// started again subscribes with it and adopts the masters still running.
type Mesos struct {
	Client *fmesos.Client
	Store  *Store
	// Role the masters' tasks take their offers under (default
	// "sluice-dispatcher"); each job's TaskManagers run under the job's
	// own role.
	Role string
	// Name is the framework's name (default "sluice-dispatcher").
	Name string
	// User the masters run as (default: the current user).
	User string
	// Principal of the dispatcher's framework, and of the masters' with
	// SecretFile, the path of the principal's secret on the agents.
	Principal, SecretFile string
	// FailoverTimeout: how long Mesos keeps the framework and its masters
	// after the dispatcher is gone (default 7 days).
	FailoverTimeout time.Duration
	// BinaryURI is where agents fetch the sluice binary, for the masters
	// and their TaskManagers (required).
	BinaryURI string
	// MasterCPUs and MasterMemMB are what a master's task takes (default
	// 0.5 and 512).
	MasterCPUs, MasterMemMB float64
	// Args are extra flags for every master (e.g. --log-level debug).
	Args []string
	// RefuseSeconds is the decline filter (default 30 s; a launch that
	// waits revives, which clears it).
	RefuseSeconds time.Duration
	// StopGrace is the kill policy's grace period between SIGTERM and
	// SIGKILL (default 15 s).
	StopGrace time.Duration
	// UnreachableTimeout: a master on an agent unreachable this long is
	// taken for dead (default 2 min; a new one fences it if it returns).
	UnreachableTimeout time.Duration
	// SilentTimeout: a master on an unreachable agent that has not
	// answered on its REST API for this long either is taken for dead
	// sooner (default 10 s): a dead agent's master is replaced in seconds,
	// a partitioned master that still answers keeps UnreachableTimeout.
	SilentTimeout time.Duration
	// FindTimeout bounds how long Find waits for the subscription and
	// the reconciliation of a master's task (default 30 s).
	FindTimeout time.Duration
	// OrphanAfter: a running master task that no job claimed (Find) this
	// long after Mesos reported it is killed (default 2 min): its job
	// ended, or runs on a newer master (which fences it anyway).
	OrphanAfter time.Duration
	Log         *slog.Logger

	mu         sync.Mutex
	started    bool
	fid        string
	subscribed bool
	subCh      chan struct{} // closed once subscribed; replaced when the subscription ends
	suppressed bool
	revive     bool
	tasks      map[string]*mesosMaster // by task ID: launched, found or reconciled
	pending    []*mesosMaster          // launches waiting for an offer
	jobQuota   map[string]jobQuota     // by job ID: its share of its role's quota
	wake       chan struct{}
	cancel     context.CancelFunc
	done       chan struct{}

	probeClient   *http.Client
	masterQuota   int        // masters the dispatcher's role's quota was last set for (-1: unknown)
	masterQuotaMu sync.Mutex // serialises syncMasterQuota
}

var (
	_ Launcher      = (*Mesos)(nil)
	_ JobEnder      = (*Mesos)(nil)
	_ QuotaReporter = (*Mesos)(nil)
)

// Quota is a role's quota the dispatcher set: guarantee and limit by
// resource name (cpus, mem, disk).
type Quota struct {
	Guarantee, Limit map[string]float64
}

type jobQuota struct {
	role string
	q    Quota         // the sum over runs
	runs map[int]Quota // by run: two while an upgrade's new version stands by
}

// sumRuns is the quota of all of a job's runs.
func sumRuns(runs map[int]Quota) Quota {
	sum := Quota{Guarantee: map[string]float64{}, Limit: map[string]float64{}}
	for _, q := range runs {
		for k, v := range q.Guarantee {
			sum.Guarantee[k] = round3(sum.Guarantee[k] + v)
		}
		for k, v := range q.Limit {
			sum.Limit[k] = round3(sum.Limit[k] + v)
		}
	}
	return sum
}

const masterTaskPrefix = "sluice-master-"

// Start subscribes the dispatcher's framework (with the ID kept in the
// store) and keeps it subscribed until Close.
func (l *Mesos) Start(ctx context.Context) error {
	if l.Client == nil || l.Store == nil {
		return errors.New("mesos launcher: a client and a store are needed")
	}
	if l.BinaryURI == "" {
		return errors.New("mesos launcher: no binary URI for the masters")
	}
	l.defaults()
	fid, err := l.Store.FrameworkIDs().Load(ctx)
	if err != nil {
		return fmt.Errorf("mesos launcher: %w", err)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.mu.Lock()
	if l.started {
		l.mu.Unlock()
		cancel()
		return errors.New("mesos launcher: started twice")
	}
	l.started, l.fid, l.cancel, l.done = true, fid, cancel, make(chan struct{})
	l.mu.Unlock()
	go l.run(rctx)
	return nil
}

func (l *Mesos) defaults() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Role == "" {
		l.Role = "sluice-dispatcher"
	}
	if l.Name == "" {
		l.Name = "sluice-dispatcher"
	}
	if l.User == "" {
		l.User = fmesos.DefaultUser()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.FailoverTimeout, 7*24*time.Hour)
	def(&l.RefuseSeconds, 30*time.Second)
	def(&l.StopGrace, 15*time.Second)
	def(&l.UnreachableTimeout, 2*time.Minute)
	def(&l.SilentTimeout, 10*time.Second)
	l.probeClient = &http.Client{Timeout: 2 * time.Second}
	def(&l.FindTimeout, 30*time.Second)
	def(&l.OrphanAfter, 2*time.Minute)
	if l.MasterCPUs <= 0 {
		l.MasterCPUs = 0.5
	}
	if l.MasterMemMB <= 0 {
		l.MasterMemMB = 512
	}
	if l.Log == nil {
		l.Log = slog.Default()
	}
	l.subCh = make(chan struct{})
	l.tasks = map[string]*mesosMaster{}
	l.jobQuota = map[string]jobQuota{}
	l.masterQuota = -1
	l.wake = make(chan struct{}, 1)
}

// Close ends the subscription without tearing the framework down: the
// masters keep running, and the next dispatcher adopts them.
func (l *Mesos) Close() {
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// FrameworkID is the dispatcher's framework ID ("" before it registered).
func (l *Mesos) FrameworkID() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fid
}

func (l *Mesos) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// ---- the job's role and quota ----

// jobRole is the role a job's TaskManagers run under: the spec's, or
// sluice-<job id>.
func jobRole(j *spec.Job, jobID string) string {
	if j.Role != "" {
		return j.Role
	}
	return "sluice-" + jobID
}

// round3: Mesos keeps scalars with three decimals.
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// quotaFor is a job's role and quota: guarantee = its TaskManagers (spares
// included; counted as its master counts them); limit = the spec's
// resources.quota.limit or the guarantee plus one TaskManager.
//
// The job's master is not in it: it runs under the dispatcher's role, and
// Mesos holds a role's unused guarantee back from every other role, so
// guaranteeing the master to the job's role held back resources no task
// of that role uses — and kept the master itself (an upgrade's new one,
// TestSystemMesos) from its offer on a full cluster. The masters are
// guaranteed to the dispatcher's role instead (syncMasterQuota).
func quotaFor(j *spec.Job, jobID string) (string, Quota, error) {
	g, err := plan.Build(j)
	if err != nil {
		return "", Quota{}, fmt.Errorf("planning the job: %w", err)
	}
	res := spec.Resources{}
	if j.Resources != nil {
		res = *j.Resources
	}
	slots := max(res.Slots, 1)
	need := framework.Pipelines(runtime.Tasks(g))
	n := max(1, (need+slots-1)/slots) + res.SpareTaskManagers
	cpus, mem, disk := res.CPUs, res.MemMB, res.DiskMB
	if cpus <= 0 {
		cpus = 1
	}
	if mem <= 0 {
		mem = 1024
	}
	q := Quota{Guarantee: map[string]float64{
		"cpus": round3(float64(n) * cpus),
		"mem":  round3(float64(n) * mem),
	}}
	if disk > 0 {
		q.Guarantee["disk"] = round3(float64(n) * disk)
	}
	q.Limit = map[string]float64{}
	if res.Quota != nil && res.Quota.Limit != nil {
		lim := res.Quota.Limit
		for name, v := range map[string]float64{"cpus": lim.CPUs, "mem": lim.MemMB, "disk": lim.DiskMB} {
			if v > 0 {
				q.Limit[name] = round3(v)
			}
		}
		for name, v := range q.Limit {
			if gv := q.Guarantee[name]; gv > v {
				return "", Quota{}, fmt.Errorf("resources.quota.limit.%s %g is below the job's guarantee %g (%d TaskManagers)", name, v, gv, n)
			}
		}
	} else {
		q.Limit["cpus"] = round3(q.Guarantee["cpus"] + cpus)
		q.Limit["mem"] = round3(q.Guarantee["mem"] + mem)
		if disk > 0 {
			q.Limit["disk"] = round3(q.Guarantee["disk"] + disk)
		}
	}
	return jobRole(j, jobID), q, nil
}

// roleQuotaLocked sums the shares of the jobs of role.
func (l *Mesos) roleQuotaLocked(role string) (Quota, bool) {
	sum := Quota{Guarantee: map[string]float64{}, Limit: map[string]float64{}}
	found := false
	for _, jq := range l.jobQuota {
		if jq.role != role {
			continue
		}
		found = true
		for k, v := range jq.q.Guarantee {
			sum.Guarantee[k] = round3(sum.Guarantee[k] + v)
		}
		for k, v := range jq.q.Limit {
			sum.Limit[k] = round3(sum.Limit[k] + v)
		}
	}
	return sum, found
}

// setQuotaLocked records run's share of job's quota: the runs before it
// are over (a rescale, a restart), unless keep (an upgrade's new version
// stands by while the old one runs on; their TaskManagers run at once).
func (l *Mesos) setQuotaLocked(jobID string, run int, role string, q Quota, keep bool) {
	runs := map[int]Quota{run: q}
	if old, ok := l.jobQuota[jobID]; ok && old.role == role {
		for r, oq := range old.runs {
			if r > run || keep && r != run {
				runs[r] = oq
			}
		}
	}
	l.jobQuota[jobID] = jobQuota{role: role, q: sumRuns(runs), runs: runs}
}

// setQuota records run's share of job's quota (setQuotaLocked) and sets
// its role's quota on Mesos.
func (l *Mesos) setQuota(ctx context.Context, jobID string, run int, role string, q Quota, keep bool) error {
	l.mu.Lock()
	old, had := l.jobQuota[jobID]
	l.setQuotaLocked(jobID, run, role, q, keep)
	sum, _ := l.roleQuotaLocked(role)
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := l.Client.UpdateQuota(ctx, role, sum.Guarantee, sum.Limit, false); err != nil {
		l.mu.Lock()
		if had {
			l.jobQuota[jobID] = old
		} else {
			delete(l.jobQuota, jobID)
		}
		l.mu.Unlock()
		return fmt.Errorf("setting the quota of role %s: %w", role, err)
	}
	l.Log.Info("Mesos quota set", "job", jobID, "role", role, "guarantee", formatQuota(sum.Guarantee), "limit", formatQuota(sum.Limit))
	l.syncMasterQuota(ctx)
	return nil
}

// syncMasterQuota sets the dispatcher's role's quota: one master per run
// the dispatcher keeps a share for (two for a job while an upgrade's new
// version stands by), guaranteed; the limit one master more, for a master
// started again while its predecessor's task is still ending.
func (l *Mesos) syncMasterQuota(ctx context.Context) {
	// One update at a time: two computed apart could land in the other
	// order and leave the older count on Mesos.
	l.masterQuotaMu.Lock()
	defer l.masterQuotaMu.Unlock()
	l.mu.Lock()
	n := 0
	for _, jq := range l.jobQuota {
		n += len(jq.runs)
	}
	var g, lim map[string]float64
	if n > 0 {
		g = map[string]float64{"cpus": round3(float64(n) * l.MasterCPUs), "mem": round3(float64(n) * l.MasterMemMB)}
		lim = map[string]float64{"cpus": round3(float64(n+1) * l.MasterCPUs), "mem": round3(float64(n+1) * l.MasterMemMB)}
	}
	if n == l.masterQuota {
		l.mu.Unlock()
		return
	}
	l.masterQuota = n
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := l.Client.UpdateQuota(ctx, l.Role, g, lim, false); err != nil {
		l.Log.Warn("Mesos quota of the dispatcher's role", "role", l.Role, "err", err)
		l.mu.Lock()
		l.masterQuota = -1 // set it again next time
		l.mu.Unlock()
		return
	}
	l.Log.Info("Mesos quota set", "role", l.Role, "masters", n, "guarantee", formatQuota(g), "limit", formatQuota(lim))
}

func formatQuota(m map[string]float64) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+":"+strconv.FormatFloat(v, 'f', -1, 64))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// JobEnded implements JobEnder: the job's share of its role's quota is
// removed (the role's quota reset when no other job of the dispatcher
// uses the role).
func (l *Mesos) JobEnded(ctx context.Context, jobID string) {
	l.mu.Lock()
	jq, ok := l.jobQuota[jobID]
	delete(l.jobQuota, jobID)
	l.mu.Unlock()
	role := jq.role
	if !ok {
		// Not launched or found by this dispatcher: the role from the spec.
		b, err := l.Store.Spec(ctx, jobID)
		if err != nil {
			l.Log.Warn("removing a job's quota: reading its spec", "job", jobID, "err", err)
			return
		}
		j, err := spec.Parse(b, nil)
		if err != nil {
			l.Log.Warn("removing a job's quota: its spec", "job", jobID, "err", err)
			return
		}
		role = jobRole(j, jobID)
	}
	l.mu.Lock()
	sum, others := l.roleQuotaLocked(role)
	l.mu.Unlock()
	if !others {
		sum = Quota{}
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := l.Client.UpdateQuota(ctx, role, sum.Guarantee, sum.Limit, false); err != nil {
		l.Log.Warn("removing a job's quota", "job", jobID, "role", role, "err", err)
		return
	}
	l.Log.Info("Mesos quota removed", "job", jobID, "role", role, "others", others)
	l.syncMasterQuota(ctx)
}

// Quotas implements QuotaReporter: the quota set per role.
func (l *Mesos) Quotas() map[string]Quota {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]Quota{}
	for _, jq := range l.jobQuota {
		if _, ok := out[jq.role]; !ok {
			out[jq.role], _ = l.roleQuotaLocked(jq.role)
		}
	}
	return out
}

// ---- masters ----

// mesosMaster is a master's Mesos task.
type mesosMaster struct {
	l      *Mesos
	id     string
	jobID  string
	run    int
	haDir  string
	floor  int64    // results of epochs above this one are this master's
	args   []string // the command line without the offer's host and ports
	claimd bool     // launched or found for a job (not only reconciled)

	// guarded by l.mu
	agent, host      string
	state            mesos.TaskState
	known            bool // state is known
	unreachableSince time.Time
	answered         time.Time // the master's REST API last answered a probe
	probing          bool
	updates          int           // status updates seen
	firstSeen        time.Time     // of a task reconciled, not launched
	seen             chan struct{} // closed and replaced on each update
	ending           bool
	stopAsked        bool
	done             chan struct{}
	exit             Exit
}

func (m *mesosMaster) String() string {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	if m.host != "" {
		return "mesos task " + m.id + " on " + m.host
	}
	return "mesos task " + m.id
}

func (m *mesosMaster) Wait(ctx context.Context) Exit {
	select {
	case <-m.done:
		return m.exit
	case <-ctx.Done():
		return Exit{Code: -1, Reason: ctx.Err().Error()}
	}
}

// Stop kills the master's task: Mesos sends SIGTERM (the master cancels
// its job and stops its TaskManagers), and SIGKILL after the grace
// period. It waits for the task's end.
func (m *mesosMaster) Stop(ctx context.Context) error {
	l := m.l
	l.mu.Lock()
	for i, p := range l.pending {
		if p == m {
			// Not launched yet: nothing runs.
			l.pending = append(l.pending[:i:i], l.pending[i+1:]...)
			delete(l.tasks, m.id)
			l.mu.Unlock()
			m.finish(Exit{Code: -1, Reason: "stopped before it was launched"})
			return nil
		}
	}
	m.stopAsked = true
	l.mu.Unlock()
	deadline := time.NewTimer(l.StopGrace + 30*time.Second)
	defer deadline.Stop()
	for {
		if err := l.kill(ctx, m); err != nil {
			l.Log.Warn("killing a master's task", "task", m.id, "err", err)
		}
		select {
		case <-m.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("master %s did not end after its kill", m)
		case <-time.After(l.StopGrace + 5*time.Second):
			// Again: the kill (or its status) may have been lost.
		}
	}
}

// finish ends m with exit (once).
func (m *mesosMaster) finish(exit Exit) {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	select {
	case <-m.done:
		return
	default:
	}
	m.exit = exit
	close(m.done)
	if m.claimd {
		go m.l.runEnded(m.jobID, m.run)
	}
}

// runEnded drops the quota share of a run whose master ended while
// another run of its job holds one: the old version after an upgrade,
// or a standby that was stopped. A run alone keeps its share (its master
// is started again, or the job ends: JobEnded).
func (l *Mesos) runEnded(jobID string, run int) {
	l.mu.Lock()
	jq, ok := l.jobQuota[jobID]
	if !ok || len(jq.runs) < 2 {
		l.mu.Unlock()
		return
	}
	if _, ok := jq.runs[run]; !ok {
		l.mu.Unlock()
		return
	}
	runs := map[int]Quota{}
	for r, q := range jq.runs {
		if r != run {
			runs[r] = q
		}
	}
	l.jobQuota[jobID] = jobQuota{role: jq.role, q: sumRuns(runs), runs: runs}
	sum, _ := l.roleQuotaLocked(jq.role)
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := l.Client.UpdateQuota(ctx, jq.role, sum.Guarantee, sum.Limit, false); err != nil {
		l.Log.Warn("Mesos quota: dropping an ended run's share", "job", jobID, "run", run, "err", err)
		return
	}
	l.Log.Info("Mesos quota set", "job", jobID, "role", jq.role, "guarantee", formatQuota(sum.Guarantee), "limit", formatQuota(sum.Limit), "ended_run", run)
	l.syncMasterQuota(ctx)
}

var exitStatusRE = regexp.MustCompile(`exited with status (\d+)`)

// ended works out how the master's task ended: the end its master
// recorded in the HA directory, else the exit status the command
// executor reports, else unknown (killed, lost).
func (m *mesosMaster) ended(st error) {
	exit := Exit{Code: -1, Reason: fmt.Sprintf("master %s ended: %v (its log: the task sandbox's stderr)", m, st)}
	if s := exitStatusRE.FindStringSubmatch(st.Error()); s != nil {
		exit.Known = true
		exit.Code, _ = strconv.Atoi(s[1])
	}
	if r := m.recorded(); r != nil {
		exit.Known, exit.Code = true, r.Code
		if r.Reason != "" && r.Code != 0 && r.Code != 130 {
			exit.Reason = r.Reason
		}
	}
	if exit.Known && (exit.Code == 0 || exit.Code == 130) {
		exit.Reason = ""
	}
	m.finish(exit)
}

// recorded is the end this master recorded in its HA directory.
func (m *mesosMaster) recorded() *framework.Result {
	if m.haDir == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := Leader(ctx, m.haDir)
	if err != nil || info == nil || info.Epoch <= m.floor {
		return nil
	}
	ha, err := framework.OpenHA(m.haDir)
	if err != nil {
		return nil
	}
	r, _ := ha.Result(ctx, info.Epoch)
	return r
}

// masterArgs is a master's command line but for the offer's host and ports.
func (l *Mesos) masterArgs(s MasterSpec, role string) []string {
	args := []string{"sluice", "framework", "--job", l.Store.SpecURIOf(s.JobID, s.SpecRun),
		"--resource-manager", "mesos", "--mesos-master", strings.Join(l.Client.Masters, ","),
		"--role", role, "--ha-dir", s.HADir, "--binary-uri", l.BinaryURI,
		"--mesos-user", l.User, "--local-dir", "local"}
	if l.Principal != "" {
		args = append(args, "--principal", l.Principal)
		if l.SecretFile != "" {
			args = append(args, "--secret-file", l.SecretFile)
		}
	}
	for _, kv := range s.Sets {
		args = append(args, "--set", kv)
	}
	if s.Restore != "" {
		args = append(args, "--restore", s.Restore)
	}
	if s.Standby {
		args = append(args, "--standby")
	}
	return append(args, l.Args...)
}

// Launch implements Launcher: it sets the job role's quota, records the
// task's ID in the store and queues the task for the next fitting offer.
func (l *Mesos) Launch(ctx context.Context, s MasterSpec) (Master, error) {
	if !validID(s.JobID) {
		return nil, fmt.Errorf("mesos launcher: job id %q: not a generated id", s.JobID)
	}
	l.mu.Lock()
	started := l.started
	l.mu.Unlock()
	if !started {
		return nil, errors.New("mesos launcher: not started")
	}
	j, err := spec.Parse(s.Spec, s.Sets)
	if err != nil {
		return nil, fmt.Errorf("mesos launcher: the job's spec: %w", err)
	}
	role, q, err := quotaFor(j, s.JobID)
	if err != nil {
		return nil, fmt.Errorf("mesos launcher: the quota of job %s: %w", s.JobID, err)
	}
	if err := l.setQuota(ctx, s.JobID, s.Run, role, q, s.Standby); err != nil {
		return nil, fmt.Errorf("mesos launcher: %w", err)
	}
	var floor int64
	if info, err := Leader(ctx, s.HADir); err != nil {
		return nil, fmt.Errorf("mesos launcher: %w", err)
	} else if info != nil {
		floor = info.Epoch
	}
	id := masterTaskPrefix + s.JobID + "-" + strconv.Itoa(s.Run) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := l.Store.saveMasterTask(ctx, s.JobID, s.Run, id); err != nil {
		return nil, fmt.Errorf("mesos launcher: %w", err)
	}
	m := &mesosMaster{l: l, id: id, jobID: s.JobID, run: s.Run, haDir: s.HADir, floor: floor, claimd: true,
		args: l.masterArgs(s, role), seen: make(chan struct{}), done: make(chan struct{})}
	l.mu.Lock()
	l.tasks[id] = m
	l.pending = append(l.pending, m)
	l.revive = true
	l.mu.Unlock()
	l.poke()
	l.Log.Info("framework master queued for a Mesos offer", "job", s.JobID, "run", s.Run, "task", id, "role", role)
	return m, nil
}

// Find implements Launcher: the run's newest master task (recorded in the
// store) if Mesos reports it running. The task is what counts, not the
// HA directory: a master launched just before the dispatcher stopped may
// not have published itself yet, and starting another would only make
// one of them fence the other.
func (l *Mesos) Find(ctx context.Context, s MasterSpec) (Master, error) {
	info, err := Leader(ctx, s.HADir)
	if err != nil {
		return nil, err
	}
	var floor int64
	if info != nil {
		// Its master published this epoch, or will take a newer one.
		floor = info.Epoch - 1
	}
	id, err := l.Store.masterTask(ctx, s.JobID, s.Run)
	if err != nil || id == "" {
		return nil, err
	}
	fctx, cancel := context.WithTimeout(ctx, l.FindTimeout)
	defer cancel()
	if err := l.waitSubscribed(fctx); err != nil {
		return nil, fmt.Errorf("mesos launcher: finding master task %s: %w", id, err)
	}
	l.mu.Lock()
	m := l.tasks[id]
	if m == nil {
		m = &mesosMaster{l: l, id: id, seen: make(chan struct{}), done: make(chan struct{})}
		l.tasks[id] = m
	}
	m.jobID, m.run, m.haDir, m.floor, m.claimd = s.JobID, s.Run, s.HADir, floor, true
	agent, n, seen := m.agent, m.updates, m.seen
	l.mu.Unlock()
	// Ask Mesos for the task's state and wait for the answer.
	if err := l.call(fctx, calls.Reconcile(calls.ReconcileTasks(map[string]string{id: agent}))); err != nil {
		return nil, fmt.Errorf("mesos launcher: reconciling master task %s: %w", id, err)
	}
	var state mesos.TaskState
	for {
		l.mu.Lock()
		got, ended := m.updates > n, m.ending
		state, seen = m.state, m.seen
		l.mu.Unlock()
		if ended {
			return nil, nil
		}
		if got {
			if fmesos.Terminal(state) {
				return nil, nil
			}
			break
		}
		select {
		case <-seen:
		case <-fctx.Done():
			return nil, fmt.Errorf("mesos launcher: no answer to the reconciliation of master task %s: %w", id, fctx.Err())
		}
	}
	// Its share of the role's quota, for the metrics and for the
	// role's other jobs (the run's parallelism may differ from the spec's).
	if b, err := l.Store.Spec(ctx, s.JobID); err == nil {
		if j, err := spec.Parse(b, nil); err == nil {
			if role, q, err := quotaFor(j, s.JobID); err == nil {
				l.mu.Lock()
				l.setQuotaLocked(s.JobID, s.Run, role, q, true)
				l.mu.Unlock()
				l.syncMasterQuota(ctx)
			}
		}
	}
	l.Log.Info("found the running master task", "job", s.JobID, "run", s.Run, "task", id, "state", state)
	return m, nil
}

func (l *Mesos) waitSubscribed(ctx context.Context) error {
	for {
		l.mu.Lock()
		ok, ch := l.subscribed, l.subCh
		l.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("not subscribed to Mesos: %w", ctx.Err())
		}
	}
}

// ---- the subscription ----

func (l *Mesos) call(ctx context.Context, c *scheduler.Call) error {
	l.mu.Lock()
	fid, ok := l.fid, l.subscribed
	l.mu.Unlock()
	if !ok {
		return fmt.Errorf("%s: not subscribed to Mesos", c.Type)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return l.Client.Call(ctx, c.With(calls.Framework(fid)))
}

func (l *Mesos) kill(ctx context.Context, m *mesosMaster) error {
	if err := l.waitSubscribed(ctx); err != nil {
		return err
	}
	l.mu.Lock()
	agent := m.agent
	l.mu.Unlock()
	c := calls.Kill(m.id, agent)
	c.Kill.KillPolicy = l.killPolicy()
	return l.call(ctx, c)
}

func (l *Mesos) killPolicy() *mesos.KillPolicy {
	return &mesos.KillPolicy{GracePeriod: &mesos.DurationInfo{Nanoseconds: l.StopGrace.Nanoseconds()}}
}

// run subscribes again and again until Close, with a backoff.
func (l *Mesos) run(ctx context.Context) {
	defer close(l.done)
	backoff := time.Second
	for {
		start := time.Now()
		err := l.session(ctx)
		l.mu.Lock()
		if l.subscribed {
			l.subscribed = false
			l.subCh = make(chan struct{})
		}
		l.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		l.Log.Warn("dispatcher's Mesos subscription ended; subscribing again", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// errRemoved: Mesos removed the framework; the next subscription
// registers a new one.
var errRemoved = errors.New("Mesos removed the dispatcher's framework")

func (l *Mesos) session(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l.mu.Lock()
	fid := l.fid
	suppressed := len(l.pending) == 0
	l.suppressed, l.revive = suppressed, false
	l.mu.Unlock()
	opts := fmesos.FrameworkOptions{Name: l.Name, User: l.User, Role: l.Role, Principal: l.Principal, FailoverTimeout: l.FailoverTimeout}
	hung := time.AfterFunc(30*time.Second, cancel)
	stream, err := l.Client.Subscribe(sctx, fmesos.SubscribeCall(opts, fid, suppressed))
	if !hung.Stop() {
		if err == nil {
			stream.Close()
		}
		return errors.New("SUBSCRIBE: no answer within 30s")
	}
	if err != nil {
		return err
	}
	defer stream.Close()
	evs, errc := stream.Events(sctx)
	quiet := 30 * time.Second
	watchdog := time.NewTimer(quiet)
	defer watchdog.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	subscribed := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return errors.New("the master ended the event stream")
			}
			return err
		case <-watchdog.C:
			return fmt.Errorf("no event from the master for %s", quiet)
		case <-tick.C:
			if subscribed {
				l.onTick(sctx)
			}
		case <-l.wake:
			if subscribed {
				l.adjust(sctx)
			}
		case e := <-evs:
			watchdog.Reset(quiet)
			switch e.Type {
			case scheduler.Event_SUBSCRIBED:
				hb, err := l.onSubscribed(sctx, e.Subscribed)
				if err != nil {
					return err
				}
				subscribed = true
				quiet = 2 * hb
				watchdog.Reset(quiet)
			case scheduler.Event_OFFERS:
				if subscribed && e.Offers != nil {
					l.offers(sctx, e.Offers.Offers)
				}
			case scheduler.Event_UPDATE:
				if subscribed && e.Update != nil {
					l.update(sctx, e.Update.Status)
				}
			case scheduler.Event_ERROR:
				msg := ""
				if e.Error != nil {
					msg = e.Error.Message
				}
				if strings.Contains(msg, "Framework has been removed") {
					l.removed(sctx)
					return fmt.Errorf("%s: %w", msg, errRemoved)
				}
				return fmt.Errorf("Mesos: %s", msg)
			}
		}
	}
}

func (l *Mesos) onSubscribed(ctx context.Context, sub *scheduler.Event_Subscribed) (time.Duration, error) {
	if sub == nil || sub.FrameworkID == nil || sub.FrameworkID.Value == "" {
		return 0, errors.New("SUBSCRIBED without a framework ID")
	}
	hb := 15 * time.Second
	if sub.HeartbeatIntervalSeconds != nil && *sub.HeartbeatIntervalSeconds > 0 {
		hb = time.Duration(*sub.HeartbeatIntervalSeconds * float64(time.Second))
	}
	id := sub.FrameworkID.Value
	l.mu.Lock()
	old := l.fid
	l.fid, l.subscribed = id, true
	close(l.subCh)
	known := map[string]string{}
	for tid, m := range l.tasks {
		if m.agent != "" {
			known[tid] = m.agent
		}
	}
	l.mu.Unlock()
	l.Log.Info("dispatcher subscribed to Mesos", "framework", id, "role", l.Role, "master", l.Client.Leader(), "failover", old == id)
	if id != old {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := l.Store.FrameworkIDs().Save(wctx, id)
		cancel()
		if err != nil {
			l.Log.Error("keeping the dispatcher's framework ID: a restarted dispatcher will register a new framework", "err", err)
		}
	}
	if len(known) > 0 {
		if err := l.call(ctx, calls.Reconcile(calls.ReconcileTasks(known))); err != nil {
			l.Log.Warn("reconciling master tasks", "err", err)
		}
	}
	if err := l.call(ctx, calls.Reconcile()); err != nil {
		l.Log.Warn("reconciling master tasks", "err", err)
	}
	l.adjust(ctx)
	return hb, nil
}

// removed: Mesos removed the framework (its failover timeout passed, or
// an operator tore it down): its masters are gone.
func (l *Mesos) removed(ctx context.Context) {
	l.mu.Lock()
	old := l.fid
	l.fid = ""
	var gone []*mesosMaster
	for id, m := range l.tasks {
		if !isPending(l.pending, m) {
			gone = append(gone, m)
			delete(l.tasks, id)
		}
	}
	l.mu.Unlock()
	l.Log.Warn("Mesos removed the dispatcher's framework: registering a new one", "framework", old, "masters", len(gone))
	if err := l.Store.FrameworkIDs().Clear(ctx); err != nil {
		l.Log.Error("clearing the stale framework ID", "err", err)
	}
	for _, m := range gone {
		m.finish(Exit{Code: -1, Reason: "Mesos removed the dispatcher's framework " + old})
	}
}

func isPending(p []*mesosMaster, m *mesosMaster) bool {
	for _, q := range p {
		if q == m {
			return true
		}
	}
	return false
}

// adjust suppresses offers when no launch waits and revives them when one
// does.
func (l *Mesos) adjust(ctx context.Context) {
	l.mu.Lock()
	need := len(l.pending)
	var c *scheduler.Call
	switch {
	case need > 0 && (l.suppressed || l.revive):
		l.suppressed, l.revive = false, false
		c = calls.ReviveWith([]string{l.Role})
	case need == 0 && !l.suppressed:
		l.suppressed = true
		c = calls.SuppressWith([]string{l.Role})
	}
	l.mu.Unlock()
	if c == nil {
		return
	}
	if err := l.call(ctx, c); err != nil {
		l.Log.Warn("Mesos: "+c.Type.String(), "err", err)
		l.mu.Lock()
		if c.Type == scheduler.Call_REVIVE {
			l.revive = true
		} else {
			l.suppressed = false
		}
		l.mu.Unlock()
	}
}

func (l *Mesos) onTick(ctx context.Context) {
	now := time.Now()
	var lost, silent, orphans []*mesosMaster
	l.mu.Lock()
	for _, m := range l.tasks {
		switch {
		case m.claimd && !m.ending && !m.unreachableSince.IsZero() && now.Sub(m.unreachableSince) >= l.UnreachableTimeout:
			m.ending = true
			lost = append(lost, m)
		case m.claimd && !m.ending && !m.unreachableSince.IsZero() && now.Sub(m.unreachableSince) >= l.SilentTimeout &&
			now.Sub(m.answered) >= l.SilentTimeout:
			m.ending = true
			silent = append(silent, m)
		case m.claimd && !m.ending && !m.unreachableSince.IsZero() && !m.probing:
			m.probing = true
			go l.probe(ctx, m)
		case !m.claimd && !m.ending && !m.firstSeen.IsZero() && now.Sub(m.firstSeen) >= l.OrphanAfter:
			m.ending = true
			orphans = append(orphans, m)
		}
	}
	l.mu.Unlock()
	for _, m := range orphans {
		l.Log.Warn("killing a framework master task no job claims", "task", m.id, "after", l.OrphanAfter)
		go func() { _ = l.kill(ctx, m) }()
	}
	for _, m := range lost {
		l.Log.Warn("a master's agent has been unreachable too long: taking the master for dead", "task", m.id, "job", m.jobID)
		// Should it come back, it is killed; a new master fences it anyway.
		go func() { _ = l.kill(ctx, m) }()
		m.finish(Exit{Code: -1, Reason: fmt.Sprintf("master %s: its agent has been unreachable for %s", m, l.UnreachableTimeout)})
	}
	for _, m := range silent {
		l.Log.Warn("a master's agent is unreachable and the master does not answer: taking it for dead", "task", m.id, "job", m.jobID, "after", l.SilentTimeout)
		go func() { _ = l.kill(ctx, m) }()
		m.finish(Exit{Code: -1, Reason: fmt.Sprintf("master %s: its agent is unreachable and it has not answered for %s", m, l.SilentTimeout)})
	}
	l.adjust(ctx)
}

// probe asks an unreachable agent's master for its status on its REST
// API (its address is in the run's HA directory): an answer means it
// lives, partitioned from Mesos only.
func (l *Mesos) probe(ctx context.Context, m *mesosMaster) {
	defer func() {
		l.mu.Lock()
		m.probing = false
		l.mu.Unlock()
	}()
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := Leader(pctx, m.haDir)
	if err != nil || info == nil || info.HTTP == "" {
		return
	}
	req, err := http.NewRequestWithContext(pctx, http.MethodGet, "http://"+info.HTTP+"/v1/status", nil)
	if err != nil {
		return
	}
	resp, err := l.probeClient.Do(req)
	if err != nil {
		return
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		l.mu.Lock()
		m.answered = time.Now()
		l.mu.Unlock()
	}
}

// update follows a master task's status and acknowledges it.
func (l *Mesos) update(ctx context.Context, st mesos.TaskStatus) {
	id, agent := st.TaskID.Value, st.GetAgentID().GetValue()
	if len(st.UUID) > 0 && agent != "" {
		defer func() {
			if err := l.call(ctx, calls.Acknowledge(agent, id, st.UUID)); err != nil {
				l.Log.Warn("acknowledging a status update", "task", id, "err", err)
			}
		}()
	}
	if st.State == nil {
		return
	}
	state := *st.State
	l.mu.Lock()
	m := l.tasks[id]
	if m == nil {
		if fmesos.Terminal(state) || !strings.HasPrefix(id, masterTaskPrefix) {
			l.mu.Unlock()
			return
		}
		// A master from before this dispatcher: Find claims it (or
		// onTick kills it as an orphan).
		m = &mesosMaster{l: l, id: id, seen: make(chan struct{}), done: make(chan struct{}), firstSeen: time.Now()}
		l.tasks[id] = m
	}
	if agent != "" {
		m.agent = agent
	}
	m.state, m.known = state, true
	m.updates++
	close(m.seen)
	m.seen = make(chan struct{})
	switch {
	case state == mesos.TASK_UNREACHABLE:
		if m.unreachableSince.IsZero() {
			m.unreachableSince = time.Now()
		}
	case !fmesos.Terminal(state):
		m.unreachableSince = time.Time{}
	}
	end := fmesos.Terminal(state) && !m.ending
	kill := !fmesos.Terminal(state) && m.ending // taken for dead, yet back
	if fmesos.Terminal(state) {
		m.ending = true
		delete(l.tasks, id)
	}
	claimed, job := m.claimd, m.jobID
	l.mu.Unlock()
	level := l.Log.Info
	if fmesos.Terminal(state) && state != mesos.TASK_FINISHED {
		level = l.Log.Warn
	}
	if claimed || fmesos.Terminal(state) {
		level("framework master task "+strings.TrimPrefix(state.String(), "TASK_"), "task", id, "job", job, "status", fmesos.DescribeStatus(st))
	}
	if kill {
		go func() { _ = l.kill(ctx, m) }()
	}
	if end {
		// The HA directory is read outside the event loop.
		go m.ended(fmesos.DescribeStatus(st))
	}
}

// offers launches the waiting masters on offers that fit and declines
// the rest.
func (l *Mesos) offers(ctx context.Context, offers []mesos.Offer) {
	prof := fmesos.Profile{CPUs: l.MasterCPUs, MemMB: l.MasterMemMB, Ports: 2}
	l.mu.Lock()
	plan := fmesos.Match(offers, fmesos.Request{Role: l.Role, Profile: prof, Need: len(l.pending)})
	type launch struct {
		offer   mesos.OfferID
		masters []*mesosMaster
		infos   []mesos.TaskInfo
	}
	var launches []launch
	for _, a := range plan.Accept {
		ln := launch{offer: a.Offer.ID}
		for _, t := range a.Tasks {
			if len(l.pending) == 0 {
				break
			}
			m := l.pending[0]
			l.pending = l.pending[1:]
			m.agent, m.host = a.Offer.AgentID.Value, a.Offer.Hostname
			m.state, m.known = mesos.TASK_STAGING, true
			ln.masters = append(ln.masters, m)
			ln.infos = append(ln.infos, l.taskInfo(m, a, t))
		}
		launches = append(launches, ln)
	}
	l.mu.Unlock()
	refuse := calls.RefuseSeconds(l.RefuseSeconds)
	for _, ln := range launches {
		if len(ln.infos) == 0 {
			plan.Decline = append(plan.Decline, ln.offer)
			continue
		}
		err := l.call(ctx, calls.Accept(calls.OfferOperations{calls.OpLaunch(ln.infos...)}.WithOffers(ln.offer)).With(refuse))
		if err != nil {
			l.Log.Error("launching framework masters", "offer", ln.offer.Value, "err", err)
			l.mu.Lock()
			for _, m := range ln.masters {
				m.agent, m.host, m.known = "", "", false
				l.pending = append(l.pending, m)
			}
			l.revive = true
			l.mu.Unlock()
			continue
		}
		for _, m := range ln.masters {
			l.Log.Info("launching a framework master", "job", m.jobID, "run", m.run, "task", m.id, "agent", m.host)
		}
	}
	if len(plan.Decline) > 0 {
		if err := l.call(ctx, calls.Decline(plan.Decline...).With(refuse)); err != nil {
			l.Log.Warn("declining offers", "err", err)
		}
	}
	l.adjust(ctx)
}

// taskInfo is a master's command task: the sluice binary fetched into the
// sandbox and run with arguments (no shell); its control and REST ports
// are the offer's.
func (l *Mesos) taskInfo(m *mesosMaster, a fmesos.Accept, t fmesos.Task) mesos.TaskInfo {
	host := a.Offer.Hostname
	args := append([]string(nil), m.args...)
	args = append(args, "--control", host+":"+strconv.FormatUint(t.Ports[0], 10),
		"--http", host+":"+strconv.FormatUint(t.Ports[1], 10))
	yes, no := true, false
	out, cmd := "sluice", "./sluice"
	name := "sluice master " + m.jobID + " run " + strconv.Itoa(m.run)
	return mesos.TaskInfo{
		Name:      name,
		TaskID:    mesos.TaskID{Value: m.id},
		AgentID:   a.Offer.AgentID,
		Resources: t.Resources,
		Command: &mesos.CommandInfo{
			URIs:      []mesos.CommandInfo_URI{{Value: l.BinaryURI, Executable: &yes, Extract: &no, OutputFile: &out}},
			Shell:     &no,
			Value:     &cmd,
			Arguments: args,
		},
		KillPolicy: l.killPolicy(),
		Labels: &mesos.Labels{Labels: []mesos.Label{
			{Key: "sluice-job", Value: &m.jobID},
		}},
	}
}
