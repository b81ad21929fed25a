package dispatcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluice-stream/sluice/engine/fs"
	"github.com/sluice-stream/sluice/framework"
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
//	dispatcher/epochs/<epoch>            one file per dispatcher that took the
//	                                     store over (framework.HA's epochs)
//	dispatcher/records/<epoch>/<id>.json the Records, in the directory of the
//	                                     dispatcher that leads the store
//	dispatcher/staging/<epoch>/          records being written
//	jobs/<id>/spec                       the spec as submitted (JSON or YAML)
//	jobs/<id>/runs/<n>/ha                run n's HA directory (the master's)
//	jobs/<id>/runs/<n>/checkpoints       run n's checkpoint storage, unless
//	                                     the spec names its own
//
// The spec is written before the record, each atomically (fsync, rename):
// a job whose record exists is whole, and a dispatcher that crashes
// between the two leaves a spec without a record, which is ignored.
//
// A Store is one dispatcher's hold on the store: Takeover gives it an epoch,
// and its writes are refused (errSuperseded) once a newer one took over;
// see Takeover for why no write can land after that.
type Store struct {
	fs  fs.FS
	dir string
	uri string
	ha  *framework.HA // dispatcher/: the epochs
	// haErr: the filesystem cannot hold epochs (no exclusive create).
	haErr error
	epoch atomic.Int64 // taken by Takeover; 0 before
	// onSuperseded is told when the store refuses this dispatcher.
	onSuperseded atomic.Pointer[func(error)]
	// hookBeforeCommit and hookAfterClaim let tests pause a write between
	// its epoch check and its rename, and a takeover between its epoch and
	// its rename.
	hookBeforeCommit, hookAfterClaim func()
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
	s := &Store{fs: f, dir: dir, uri: fs.URI(f, dir)}
	s.ha, s.haErr = framework.NewHA(f, fs.Join(dir, "dispatcher"))
	return s
}

// URI is the store's URI.
func (s *Store) URI() string { return s.uri }

// Epoch is the epoch Takeover took, 0 before.
func (s *Store) Epoch() int64 { return s.epoch.Load() }

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

func epochName(e int64) string { return fmt.Sprintf("%020d", e) }

func (s *Store) recordsDir(e int64) string {
	return fs.Join(s.dir, "dispatcher", "records", epochName(e))
}

func (s *Store) stagingDir(e int64) string {
	return fs.Join(s.dir, "dispatcher", "staging", epochName(e))
}

// Takeover makes this dispatcher the store's leader. A dispatcher paused
// (SIGSTOP, a frozen VM) while Marathon starts another must not write a
// record once the new one took over, and checking the epoch before each
// write is not enough: the writer can pause between the check and the
// write. So the records live in a directory named after the leader's
// epoch, and the takeover has two steps:
//
//  1. take the next epoch, by exclusive create (framework.HA.Claim);
//  2. rename the newest records directory, the predecessor's, to this
//     epoch's name (a new store: create it, with the records of a store
//     written before epochs).
//
// A record is written to a staging file, then renamed into
// records/<own epoch>/; a rename creates no directory. So once a successor
// renamed the directory away, an old dispatcher's rename fails and nothing
// lands: a write either lands before the successor's rename — it moved
// with the directory, and the successor reads the records only after its
// rename — or not at all, and Save says which (nil or errSuperseded).
//
// The window left: between a successor's epoch and its rename, the old
// dispatcher may still land a write it checked before the successor's
// epoch was taken. The successor reads it (nothing accepted is lost or
// hidden). Launches and stops of masters are checked against the epoch
// just before (fencedLauncher); a master launched in that window is
// fenced by its job's own HA epoch once the successor's master takes over.
func (s *Store) Takeover(ctx context.Context) (int64, error) {
	if s.haErr != nil {
		return 0, fmt.Errorf("job store %s: %w", s.uri, s.haErr)
	}
	host, _ := os.Hostname()
	e, err := s.ha.Claim(ctx, framework.MasterInfo{Host: host, PID: os.Getpid(), Started: time.Now().UTC()})
	if err != nil {
		return 0, storeErr("taking a dispatcher epoch", err)
	}
	if s.hookAfterClaim != nil {
		s.hookAfterClaim()
	}
	records := fs.Join(s.dir, "dispatcher", "records")
	for tries := 0; ; tries++ {
		if tries == 100 {
			return 0, fmt.Errorf("%w: job store %s: could not take the records over after 100 tries", ErrStore, s.uri)
		}
		dirs, err := s.epochDirs(ctx, records)
		if err != nil {
			return 0, storeErr("listing the records", err)
		}
		var prev int64
		if len(dirs) > 0 {
			prev = dirs[len(dirs)-1]
		}
		if prev > e {
			err := &supersededError{epoch: e, newest: prev}
			s.superseded(err)
			return 0, err
		}
		if prev == e {
			break // a rename that failed to answer took effect
		}
		if prev == 0 {
			err = s.createRecords(ctx, e)
		} else {
			err = s.fs.Rename(ctx, s.recordsDir(prev), s.recordsDir(e))
		}
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrExist) {
			return 0, storeErr("taking the records over", err)
		}
		// Another dispatcher moved them first: look again.
	}
	s.epoch.Store(e)
	if err := s.Fence(ctx); err != nil {
		return 0, err
	}
	// Leftovers of earlier epochs: a records directory made by a
	// dispatcher that raced this one on a new store (superseded before it
	// wrote anything), staged records whose rename failed.
	for _, sub := range []string{"records", "staging"} {
		p := fs.Join(s.dir, "dispatcher", sub)
		dirs, _ := s.epochDirs(ctx, p)
		for _, d := range dirs {
			if d < e {
				_ = s.fs.RemoveAll(ctx, fs.Join(p, epochName(d)))
			}
		}
	}
	return e, nil
}

// epochDirs lists the epoch-named entries of dir, ascending.
func (s *Store) epochDirs(ctx context.Context, dir string) ([]int64, error) {
	es, err := s.fs.List(ctx, dir)
	if err != nil {
		return nil, err
	}
	var out []int64
	for _, e := range es {
		if n, err := strconv.ParseInt(e.Name, 10, 64); err == nil && n > 0 && e.Name == epochName(n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// createRecords makes the first records directory, records/<e>: staged
// whole, with the records of a store written before epochs
// (jobs/<id>/job.json), then renamed into place.
func (s *Store) createRecords(ctx context.Context, e int64) error {
	stage := fs.Join(s.stagingDir(e), "import")
	if err := s.fs.RemoveAll(ctx, stage); err != nil {
		return err
	}
	if err := s.fs.MkdirAll(ctx, stage); err != nil {
		return err
	}
	es, err := s.fs.List(ctx, fs.Join(s.dir, "jobs"))
	if err != nil {
		return err
	}
	for _, en := range es {
		if !en.IsDir || !validID(en.Name) {
			continue
		}
		b, err := s.fs.ReadFile(ctx, fs.Join(s.jobDir(en.Name), "job.json"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := s.fs.WriteFile(ctx, fs.Join(stage, en.Name+".json"), b); err != nil {
			return err
		}
	}
	if err := s.fs.MkdirAll(ctx, fs.Join(s.dir, "dispatcher", "records")); err != nil {
		return err
	}
	return s.fs.Rename(ctx, stage, s.recordsDir(e))
}

// Fence fails with an error wrapping errSuperseded when a newer dispatcher
// took the store over, with ErrStore when the store cannot say.
func (s *Store) Fence(ctx context.Context) error {
	e := s.epoch.Load()
	if e == 0 {
		return fmt.Errorf("job store %s: not taken over (Takeover first)", s.uri)
	}
	n, err := s.ha.Newest(ctx)
	if err != nil {
		return storeErr("reading the dispatcher epochs", err)
	}
	if n > e {
		err := &supersededError{epoch: e, newest: n}
		s.superseded(err)
		return err
	}
	return nil
}

func (s *Store) superseded(err error) {
	if f := s.onSuperseded.Load(); f != nil {
		(*f)(err)
	}
}

// Create stores a new job: its spec, then its record. It answers once both
// are durable.
func (s *Store) Create(ctx context.Context, rec *Record, spec []byte) error {
	if !validID(rec.ID) {
		return fmt.Errorf("job id %q: not a generated id", rec.ID)
	}
	// A spec alone is not a job (no record names it): only checked, not
	// fenced, so that nothing is written when the check says no.
	if err := s.Fence(ctx); err != nil {
		return err
	}
	if err := s.fs.WriteFile(ctx, fs.Join(s.jobDir(rec.ID), "spec"), spec); err != nil {
		return storeErr("writing the job's spec", err)
	}
	return s.Save(ctx, rec)
}

// Save writes rec (atomically replacing the one stored), unless a newer
// dispatcher took the store over: then nothing is written and the error
// wraps errSuperseded. nil means the record is stored where the leading
// dispatcher, this one or its successor, reads it.
func (s *Store) Save(ctx context.Context, rec *Record) error {
	if !validID(rec.ID) {
		return fmt.Errorf("job id %q: not a generated id", rec.ID)
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding job %s: %w", rec.ID, err)
	}
	if err := s.Fence(ctx); err != nil {
		return err
	}
	e := s.epoch.Load()
	stage := fs.Join(s.stagingDir(e), rec.ID+"-"+newID()+".json")
	if err := s.fs.WriteFile(ctx, stage, b); err != nil {
		return storeErr("writing job "+rec.ID, err)
	}
	if s.hookBeforeCommit != nil {
		s.hookBeforeCommit()
	}
	// The rename lands only while records/<e> is this dispatcher's: a
	// successor's takeover renamed it away otherwise (see Takeover).
	err = s.fs.Rename(ctx, stage, fs.Join(s.recordsDir(e), rec.ID+".json"))
	if err == nil {
		return nil
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	_ = s.fs.RemoveAll(rctx, stage) // garbage otherwise; the next takeover removes it too
	cancel()
	if ferr := s.Fence(ctx); errors.Is(ferr, errSuperseded) {
		return ferr
	}
	return storeErr("writing job "+rec.ID, err)
}

// Spec is the stored spec of job id.
func (s *Store) Spec(ctx context.Context, id string) ([]byte, error) {
	b, err := s.fs.ReadFile(ctx, fs.Join(s.jobDir(id), "spec"))
	if err != nil {
		return nil, storeErr("reading the spec of job "+id, err)
	}
	return b, nil
}

// Load reads every job's record, from this dispatcher's records directory
// (after Takeover). Anything else there (a staged file a failed rename
// moved along) is skipped.
func (s *Store) Load(ctx context.Context) ([]*Record, error) {
	e := s.epoch.Load()
	if e == 0 {
		return nil, fmt.Errorf("job store %s: not taken over (Takeover first)", s.uri)
	}
	es, err := s.fs.List(ctx, s.recordsDir(e))
	if err != nil {
		return nil, storeErr("listing jobs", err)
	}
	var out []*Record
	for _, en := range es {
		id, ok := strings.CutSuffix(en.Name, ".json")
		if en.IsDir || !ok || !validID(id) {
			continue
		}
		b, err := s.fs.ReadFile(ctx, fs.Join(s.recordsDir(e), en.Name))
		if err != nil {
			return nil, storeErr("reading job "+id, err)
		}
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("job store %s: job %s: %w", s.uri, id, err)
		}
		if r.ID != id {
			return nil, fmt.Errorf("job store %s: record %s holds job %q", s.uri, en.Name, r.ID)
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
