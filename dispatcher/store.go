package dispatcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/sluice-stream/sluice/engine/fs"
)

// State is a job's state as the API shows it.
type State string

// Job states.
const (
	Pending  State = "PENDING"  // stored, no master launched yet
	Starting State = "STARTING" // a master is launched, its job not running yet
	Running  State = "RUNNING"
	Failing  State = "FAILING" // the job restarts, or its master died and is started again
	Finished State = "FINISHED"
	Failed   State = "FAILED"
	Canceled State = "CANCELED"
)

// Terminal: the job has ended; nothing is started for it again.
func (s State) Terminal() bool { return s == Finished || s == Failed || s == Canceled }

// States lists every state (metrics report each, zeros included).
var States = []State{Pending, Starting, Running, Failing, Finished, Failed, Canceled}

// Record is what the store keeps of a job: enough to start its master
// again after a dispatcher restart.
type Record struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	State     State     `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	Submitted time.Time `json:"submitted"`
	Updated   time.Time `json:"updated"`
	// Run counts the job's runs: a rescale stops the job with a savepoint
	// and starts run+1 from it, with its own HA directory and checkpoints.
	Run int `json:"run"`
	// Parallelism overrides the spec's (a rescale); 0: the spec's.
	Parallelism int `json:"parallelism,omitempty"`
	// Restore is the savepoint the current run starts from; a master
	// started again within the run resumes from the run's latest
	// checkpoint instead, once there is one.
	Restore string `json:"restore,omitempty"`
	// CancelRequested: a cancel was asked for; the master's end is then
	// CANCELED, not a death to recover from.
	CancelRequested bool `json:"cancelRequested,omitempty"`
	// Rescale is a rescale in progress: its savepoint is written (Savepoint
	// set) before the master stops, so that its end starts the next run.
	Rescale        *Rescale `json:"rescale,omitempty"`
	MasterLaunches int      `json:"masterLaunches"`
	MasterRestarts int      `json:"masterRestarts"`
	LastSavepoint  string   `json:"lastSavepoint,omitempty"`
	// Upgrade is an asynchronous upgrade in progress (upgrade.go).
	Upgrade *Upgrade `json:"upgrade,omitempty"`
	// SpecRun is the run whose spec the current run uses: 0 for the spec
	// as submitted (jobs/<id>/spec), else the run an upgrade started
	// (jobs/<id>/runs/<n>/spec).
	SpecRun int `json:"specRun,omitempty"`
}

// Rescale is a rescale in progress.
type Rescale struct {
	Parallelism int    `json:"parallelism"`
	Savepoint   string `json:"savepoint,omitempty"`
}

// Store keeps jobs under a directory of a filesystem (engine/fs):
//
//	jobs/<id>/spec                 the spec as submitted (JSON or YAML)
//	jobs/<id>/job.json             the Record
//	jobs/<id>/runs/<n>/ha          run n's HA directory (the master's)
//	jobs/<id>/runs/<n>/checkpoints run n's checkpoint storage, unless the
//	                               spec names its own
//
// The spec is written before the record, each atomically (fsync, rename):
// a job whose record exists is whole, and a dispatcher that crashes
// between the two leaves a directory without a record, which is ignored.
type Store struct {
	fs  fs.FS
	dir string
	uri string
}

// OpenStore opens the store at uri (file:// or hdfs://, or a local path).
func OpenStore(uri string) (*Store, error) {
	f, dir, err := fs.Open(uri)
	if err != nil {
		return nil, fmt.Errorf("job store %s: %w", uri, err)
	}
	return NewStore(f, dir), nil
}

// NewStore is a store under dir of f.
func NewStore(f fs.FS, dir string) *Store {
	return &Store{fs: f, dir: dir, uri: fs.URI(f, dir)}
}

// URI is the store's URI.
func (s *Store) URI() string { return s.uri }

// ErrStore marks a failure of the store itself (the API answers 503).
var ErrStore = errors.New("job store unavailable")

func storeErr(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrStore, what, err)
}

var idRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// newID is a job id: random, never anything the caller gave, so it is
// safe in a path.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// validID says whether id can be a job id (before it goes into a path).
func validID(id string) bool { return idRE.MatchString(id) }

func (s *Store) jobDir(id string) string { return fs.Join(s.dir, "jobs", id) }

// Create stores a new job: its spec, then its record. It answers once both
// are durable.
func (s *Store) Create(ctx context.Context, rec *Record, spec []byte) error {
	if !validID(rec.ID) {
		return fmt.Errorf("job id %q: not a generated id", rec.ID)
	}
	if err := s.fs.WriteFile(ctx, fs.Join(s.jobDir(rec.ID), "spec"), spec); err != nil {
		return storeErr("writing the job's spec", err)
	}
	return s.Save(ctx, rec)
}

// Save writes rec (atomically replacing the one stored).
func (s *Store) Save(ctx context.Context, rec *Record) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding job %s: %w", rec.ID, err)
	}
	if err := s.fs.WriteFile(ctx, fs.Join(s.jobDir(rec.ID), "job.json"), b); err != nil {
		return storeErr("writing job "+rec.ID, err)
	}
	return nil
}

// Spec is the stored spec of job id.
func (s *Store) Spec(ctx context.Context, id string) ([]byte, error) {
	b, err := s.fs.ReadFile(ctx, fs.Join(s.jobDir(id), "spec"))
	if err != nil {
		return nil, storeErr("reading the spec of job "+id, err)
	}
	return b, nil
}

// Load reads every job's record. A job directory without a record is a
// submission that was never answered: skipped.
func (s *Store) Load(ctx context.Context) ([]*Record, error) {
	es, err := s.fs.List(ctx, fs.Join(s.dir, "jobs"))
	if err != nil {
		return nil, storeErr("listing jobs", err)
	}
	var out []*Record
	for _, e := range es {
		if !e.IsDir || !validID(e.Name) {
			continue
		}
		b, err := s.fs.ReadFile(ctx, fs.Join(s.jobDir(e.Name), "job.json"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, storeErr("reading job "+e.Name, err)
		}
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("job store %s: job %s: %w", s.uri, e.Name, err)
		}
		if r.ID != e.Name {
			return nil, fmt.Errorf("job store %s: jobs/%s holds job %q", s.uri, e.Name, r.ID)
		}
		out = append(out, &r)
	}
	return out, nil
}

// HADir is the URI of run's HA directory.
func (s *Store) HADir(id string, run int) string {
	return fs.URI(s.fs, fs.Join(s.jobDir(id), "runs", strconv.Itoa(run), "ha"))
}

// Checkpoints is the URI of run's checkpoint storage.
func (s *Store) Checkpoints(id string, run int) string {
	return fs.URI(s.fs, fs.Join(s.jobDir(id), "runs", strconv.Itoa(run), "checkpoints"))
}
