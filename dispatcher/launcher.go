package dispatcher

import "context"

// MasterSpec is what a launcher needs to start (or find) a job's framework
// master for one run.
type MasterSpec struct {
	JobID string
	Run   int
	// Spec is the job spec as submitted (JSON or YAML).
	Spec []byte
	// SpecRun says where the store keeps Spec: 0 the submitted spec, n
	// the one an upgrade stored for run n (a master on another host reads
	// it from there).
	SpecRun int
	// HADir is the run's HA directory (URI); the master takes its epoch
	// and publishes its addresses there.
	HADir string
	// Sets are spec overrides, KEY=VALUE (checkpoint storage, parallelism).
	Sets []string
	// Restore is a savepoint or checkpoint path to start from; "" to start
	// fresh, or to resume from the HA directory's latest checkpoint.
	Restore string
	// Standby: the master registers its TaskManagers and deploys the job
	// only when told to (`sluice framework --standby`, POST /v1/start):
	// the new version of an asynchronous upgrade.
	Standby bool
}

// Launcher starts framework masters: local child processes (Local) or,
// later, Mesos tasks of the dispatcher's own framework.
type Launcher interface {
	// Launch starts a master for s.
	Launch(ctx context.Context, s MasterSpec) (Master, error)
	// Find finds a master of s that still runs (started by an earlier
	// dispatcher): nil, nil when there is none.
	Find(ctx context.Context, s MasterSpec) (Master, error)
}

// Master is a framework master a launcher started or found.
type Master interface {
	// Wait blocks until the master ends, or ctx does (then Exit.Code is
	// -1 and Exit.Reason says so).
	Wait(ctx context.Context) Exit
	// Stop asks the master to stop (SIGTERM: it cancels its job and stops
	// its TaskManagers), and kills it when it has not within a grace time.
	Stop(ctx context.Context) error
	// String names it for logs ("pid 4242").
	String() string
}

// Exit is how a master ended.
type Exit struct {
	// Known: Code is the master's exit code (a master found after a
	// dispatcher restart is not its child: its code is unknown).
	Known bool
	// Code: 0 finished (or stopped with a savepoint), 130 cancelled, 2 bad
	// configuration, anything else (or a signal, -1) a failure.
	Code int
	// Reason says why, for FAILED jobs (the end of the master's log).
	Reason string
}

// JobEnder is a Launcher that learns when a job has ended (FINISHED,
// FAILED, CANCELED): the Mesos launcher removes the job's quota then.
type JobEnder interface {
	JobEnded(ctx context.Context, jobID string)
}

// QuotaReporter is a Launcher that sets quota per role (for /metrics).
type QuotaReporter interface {
	Quotas() map[string]Quota
}
